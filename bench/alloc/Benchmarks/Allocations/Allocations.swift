@_spi(Benchmarks) import ArbiterServer
import ArbiterModels
import ArbiterStore
import ArbiterTraining
import ArbiterWire
import Benchmark
import Foundation
import Gbdt
import LeadGrading
import NIOCore
import Ranking
import Routing

/// Allocation counts of the hot paths. Each path is measured at 10 and at 1,000 candidates: a count that
/// grows with the candidates is an allocation per candidate. The thresholds in Thresholds/ are the counts
/// measured when they were written (zero on every path); `swift package benchmark thresholds check` fails
/// when one changes.
let benchmarks: @Sendable () -> Void = {
    Benchmark.defaultConfiguration = .init(metrics: [.mallocCountTotal], warmupIterations: 3, scalingFactor: .one,
                                           maxDuration: .seconds(1), maxIterations: 200)
    let models = Models.shared

    for n in [10, 1_000] {
        let rows = Models.gbdtRows(n)
        Benchmark("gbdt-kernel-\(n)-candidates") { benchmark in
            rows.withUnsafeBufferPointer { input in
                Scratch.withOutputs(n) { out in
                    let batch = ScoreBatch(context: UnsafeBufferPointer(start: nil, count: 0), candidates: input, candidateCount: n)
                    _ = try? models.gbdt.score(batch, into: out)  // this thread's scratch grows once
                    benchmark.startMeasurement()
                    for _ in benchmark.scaledIterations { _ = try? models.gbdt.score(batch, into: out) }
                    benchmark.stopMeasurement()
                }
            }
        }
        // Three of the twelve features are the request's context: rows are assembled per block.
        let candidates = Models.gbdtCandidates(rows, n)
        Benchmark("gbdt-kernel-with-context-\(n)-candidates") { benchmark in
            Models.gbdtContext.withUnsafeBufferPointer { ctx in
                candidates.withUnsafeBufferPointer { input in
                    Scratch.withOutputs(n) { out in
                        let batch = ScoreBatch(context: ctx, candidates: input, candidateCount: n)
                        _ = try? models.gbdtWithContext.score(batch, into: out)
                        benchmark.startMeasurement()
                        for _ in benchmark.scaledIterations { _ = try? models.gbdtWithContext.score(batch, into: out) }
                        benchmark.stopMeasurement()
                    }
                }
            }
        }
        let leads = Models.leadRows(n)
        Benchmark("lead-grading-\(n)-candidates") { benchmark in
            Models.leadContext.withUnsafeBufferPointer { ctx in
                leads.withUnsafeBufferPointer { input in
                    Scratch.withOutputs(n) { out in
                        benchmark.startMeasurement()
                        for _ in benchmark.scaledIterations {
                            _ = try? models.leads.score(ScoreBatch(context: ctx, candidates: input, candidateCount: n), into: out)
                        }
                        benchmark.stopMeasurement()
                    }
                }
            }
        }
        // A ranking: embeddings looked up by id, a linear and a tree head, fusion, the order and the diversity
        // rerank, top 20.
        let items = Models.rankingItems(n)
        let ids = (0..<n).map { UInt64($0 % 300 + 1) }
        Benchmark("ranking-\(n)-candidates-top-20") { benchmark in
            Models.rankingContext.withUnsafeBufferPointer { ctx in
                items.withUnsafeBufferPointer { input in
                    ids.withUnsafeBufferPointer { idp in
                        Scratch.withOutputs(n) { out in
                            let batch = ScoreBatch(context: ctx, candidates: input, candidateCount: n, ids: idp, subject: 7, topK: 20)
                            // This thread's scratch grows once; and the model really ranks (an error would cost nothing).
                            guard case .ranked(min(20, n)) = try! models.ranking.score(batch, into: out) else { fatalError("ranking did not rank") }
                            benchmark.startMeasurement()
                            for _ in benchmark.scaledIterations { _ = try? models.ranking.score(batch, into: out) }
                            benchmark.stopMeasurement()
                        }
                    }
                }
            }
        }
        var rankFrame = ByteBuffer()
        Frame(requestID: 1, message: .score(ScoreRequest(model: "feed", topK: 20, subject: 7, context: Models.rankingContext,
                                                          candidateIDs: ids, candidateFeatureCount: 3,
                                                          candidateFeatures: items))).encode(into: &rankFrame)
        let rankRequest = rankFrame
        Benchmark("score-frame-through-codec-ranking-\(n)-candidates-top-20") { benchmark in
            var path = ScorePath(name: "feed", model: models.ranking)
            var warm = rankRequest
            blackHole(try path.answer(&warm))
            benchmark.startMeasurement()
            for _ in benchmark.scaledIterations {
                var input = rankRequest
                blackHole(try path.answer(&input))
            }
            benchmark.stopMeasurement()
        }
        // A routing: lender lookups, eligibility rules, a linear approve head and a tree amount head, the value,
        // the order, exploration, top 5. Lenders repeat past the table's 12, and one id in seven is unknown.
        let lenders = Models.routingLenders(n)
        let lenderIDs = (0..<n).map { $0 % 7 == 6 ? UInt64(1) : models.routingIDs[$0 % models.routingIDs.count] }
        Benchmark("routing-\(n)-candidates-top-5") { benchmark in
            Models.routingApplicant.withUnsafeBufferPointer { ctx in
                lenders.withUnsafeBufferPointer { input in
                    lenderIDs.withUnsafeBufferPointer { idp in
                        Scratch.withOutputs(n) { out in
                            let batch = ScoreBatch(context: ctx, candidates: input, candidateCount: n, ids: idp, routingKey: 77, topK: 5)
                            guard case .ranked(let k) = try! models.routing.score(batch, into: out), k > 0 else { fatalError("routing did not rank") }
                            benchmark.startMeasurement()
                            for _ in benchmark.scaledIterations { _ = try? models.routing.score(batch, into: out) }
                            benchmark.stopMeasurement()
                        }
                    }
                }
            }
        }
        var routeFrame = ByteBuffer()
        Frame(requestID: 1, message: .score(ScoreRequest(model: "route", routingKey: 77, topK: 5, context: Models.routingApplicant,
                                                          candidateIDs: lenderIDs, candidateFeatureCount: 2,
                                                          candidateFeatures: lenders))).encode(into: &routeFrame)
        let routeRequest = routeFrame
        Benchmark("score-frame-through-codec-routing-\(n)-candidates-top-5") { benchmark in
            var path = ScorePath(name: "route", model: models.routing)
            var warm = routeRequest
            blackHole(try path.answer(&warm))
            benchmark.startMeasurement()
            for _ in benchmark.scaledIterations {
                var input = routeRequest
                blackHole(try path.answer(&input))
            }
            benchmark.stopMeasurement()
        }
        // A whole SCORE frame through the server's codec: decode, check, score, top-k, encode the RESULT.
        var frame = ByteBuffer()
        Frame(requestID: 1, message: .score(ScoreRequest(model: "leads", topK: 5, context: Models.leadContext,
                                                          candidateIDs: (0..<n).map { UInt64($0) }, candidateFeatureCount: 6,
                                                          candidateFeatures: leads))).encode(into: &frame)
        let request = frame
        Benchmark("score-frame-through-codec-lead-grading-\(n)-candidates-top-5") { benchmark in
            var path = ScorePath(name: "leads", model: models.leads)
            var warm = request
            blackHole(try path.answer(&warm))  // the scratch buffers grow to this size once
            benchmark.startMeasurement()
            for _ in benchmark.scaledIterations {
                var input = request
                blackHole(try path.answer(&input))
            }
            benchmark.stopMeasurement()
        }
    }
}

/// The models, loaded from a store like the server's.
final class Models: Sendable {
    let gbdt: any ScoringModel
    let gbdtWithContext: any ScoringModel
    let leads: any ScoringModel
    let ranking: any ScoringModel
    let routing: any ScoringModel
    /// The routing model's lender ids.
    let routingIDs: [UInt64]

    /// A routing applicant (RoutingData's schema): channel, returning, region, credit score, income, amount
    /// requested, years employed, debt ratio.
    static let routingApplicant: [Float] = [2, 1, 3, 690, 4200, 6000, 5, 0.25]

    /// Lender states: capacity (none for one in ten), load.
    static func routingLenders(_ n: Int) -> [Float] {
        var out: [Float] = []
        for i in 0..<n {
            let capacity: Float = i % 10 == 9 ? 0 : Float(5 + i % 40)
            out += [capacity, Float(i % 9) / 10]
        }
        return out
    }

    /// Ranking requests: the generated feed's user features, and item features (category, price, quality).
    static let rankingContext: [Float] = [1.5, 2]

    static func rankingItems(_ n: Int) -> [Float] {
        var out: [Float] = []
        for i in 0..<n {
            let category = Float(i % 12), price = Float(20 + i % 50), quality = Float(i % 7) / 3 - 1
            out += [category, price, quality]
        }
        return out
    }

    static let gbdtContext: [Float] = [0.5, .nan, -1]

    /// The candidate part (features 3...11) of `rows`.
    static func gbdtCandidates(_ rows: [Float], _ n: Int) -> [Float] {
        var out: [Float] = []
        for i in 0..<n { out += rows[(i * 12 + 3)..<(i * 12 + 12)] }
        return out
    }

    static let shared = Models()

    static let leadContext: [Float] = [3, 4200]

    static func leadRows(_ n: Int) -> [Float] {
        var out: [Float] = []
        for i in 0..<n {
            let row: [Float] = [Float(i % 5), Float(i % 12), Float(3 + i % 40), Float(0.05) * Float(i % 3), Float(i % 30), Float(i % 10)]
            out += row
        }
        return out
    }

    static func gbdtRows(_ n: Int) -> [Float] {
        var out: [Float] = []
        for i in 0..<n {
            for j in 0..<12 {
                let v: Float = (i + j) % 7 == 0 ? .nan : Float((i * 31 + j * 17) % 100) / 25 - 2
                out.append(v)
            }
        }
        return out
    }

    init() {
        let store = FileManager.default.temporaryDirectory.appendingPathComponent("arbiter-alloc-\(getpid())").path
        let env = try! StoreEnvironment.open(path: store, configuration: StoreConfiguration(mapSize: 256 << 20, create: true))
        let catalog = Catalog(environment: env)
        var registry = ModelRegistry()
        registry.register(kind: GbdtLayout.kind, factory: GbdtModel.factory)
        registry.register(kind: LeadGradingLayout.kind, factory: LeadGradingModel.factory)

        let fixture = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("Tests/ArbiterTrainingTests/Fixtures/gbdt/xgboost-binary.json").path
        let forest = try! ImportedForest.read(.xgboostJSON, file: fixture)
        let schema = try! GbdtImport.schema(for: forest, options: GbdtImportOptions(), file: fixture)
        try! GbdtImport.publish(forest, schema: schema, golden: GbdtImport.goldenCases(forest, schema: schema, rows: []),
                                model: "gbdt", catalog: catalog)
        gbdt = try! registry.load(LoadedVersion(environment: env, model: "gbdt"))
        var withContext = GbdtImportOptions()
        withContext.contextFeatures = 3
        let schema3 = try! GbdtImport.schema(for: forest, options: withContext, file: fixture)
        try! GbdtImport.publish(forest, schema: schema3, golden: GbdtImport.goldenCases(forest, schema: schema3, rows: []),
                                model: "gbdt3", catalog: catalog)
        gbdtWithContext = try! registry.load(LoadedVersion(environment: env, model: "gbdt3"))

        var o = FMTrainingOptions()
        o.maxEpochs = 2
        let trained = try! LeadGradingTrainer.train(rows: LeadData.generate(rows: 2000, seed: 1), options: o)
        try! LeadGradingTrainer.publish(trained, model: "leads", catalog: catalog)
        leads = try! registry.load(LoadedVersion(environment: env, model: "leads"))

        // A small trained ranking (linear heads), then its reply head swapped for a tree head: both kinds.
        registry.register(kind: RankingLayout.kind, factory: RankingModel.factory)
        var ro = RankingTrainingOptions()
        ro.headEpochs = 2
        ro.mfEpochs = 2
        ro.cemIterations = 2
        ro.diversity = (feature: "category", max: 2)
        let trainedRanking = try! RankingTrainer.train(rows: RankingData.generate(users: 300, items: 300, perUser: 10, seed: 1), options: ro)
        var version = trainedRanking.version
        let fields = RankingLayout.headFields(RankingData.schema)
        var r = SplitMix64(seed: 5)
        func tree(_ depth: Int, _ nodes: inout [ImportedForest.Node]) -> Int {
            let index = nodes.count
            nodes.append(.leaf(Float(r.normal() * 0.1)))
            guard depth < 5 else { return index }
            let feature = Int(r.next() % UInt64(fields.count))
            let left = tree(depth + 1, &nodes), right = tree(depth + 1, &nodes)
            nodes[index] = .split(feature: feature, threshold: Float(r.normal()), missingRight: false, left: left, right: right)
            return index
        }
        let trees = (0..<40).map { _ in
            var nodes: [ImportedForest.Node] = []
            _ = tree(0, &nodes)
            return ImportedForest.Tree(nodes: nodes)
        }
        version.heads[2].model = .trees(ImportedForest(trees: trees, featureNames: fields.map(\.name), baseMargin: 0,
                                                       transform: .logistic, sigmoidScale: 1, source: "random trees"))
        try! version.publish(model: "feed", golden: version.goldenCases(trainedRanking.goldenRequests), catalog: catalog)
        ranking = try! registry.load(LoadedVersion(environment: env, model: "feed"))

        // A small trained routing (linear heads), its amount head swapped for a tree head; every applicant on
        // the model arm, exploring half the time.
        registry.register(kind: RoutingLayout.kind, factory: RoutingModel.factory)
        let world = RoutingWorld(seed: 1, lenders: 12)
        var so = RoutingTrainingOptions()
        so.maxEpochs = 2
        so.share = 1
        so.epsilon = 0.5
        let trainedRouting = try! RoutingTrainer.train(rows: world.submissions(applicants: 1500, stream: 1), lenders: world.lenders, options: so)
        var route = trainedRouting.version
        let routeFields = RoutingLayout.headFields(RoutingData.schema, lenders: 12)
        let amountTrees = (0..<40).map { _ in
            var nodes: [ImportedForest.Node] = []
            func grow(_ depth: Int) -> Int {
                let index = nodes.count
                nodes.append(.leaf(Float(3000 + 500 * r.normal())))
                guard depth < 5 else { return index }
                let feature = Int(r.next() % UInt64(routeFields.count))
                let left = grow(depth + 1), right = grow(depth + 1)
                nodes[index] = .split(feature: feature, threshold: Float(r.uniform() * 10), missingRight: false, left: left, right: right)
                return index
            }
            _ = grow(0)
            return ImportedForest.Tree(nodes: nodes)
        }
        let amountIndex = route.heads.firstIndex { $0.role == .amount }!
        route.heads[amountIndex].model = .trees(ImportedForest(trees: amountTrees, featureNames: routeFields.map(\.name), baseMargin: 0,
                                                               transform: .identity, sigmoidScale: 1, source: "random trees"))
        try! route.publish(model: "route", golden: route.goldenCases(trainedRouting.goldenRequests), catalog: catalog)
        routing = try! registry.load(LoadedVersion(environment: env, model: "route"))
        routingIDs = world.lenders.map(\.id)
    }
}

/// Output buffers, allocated before measuring.
enum Scratch {
    static func withOutputs(_ n: Int, _ body: (ScoreOutput) -> Void) {
        let scores = UnsafeMutablePointer<Float>.allocate(capacity: n)
        let floats = UnsafeMutablePointer<Float>.allocate(capacity: 5 * n)
        let codes = UnsafeMutablePointer<UInt8>.allocate(capacity: 5 * n)
        let order = UnsafeMutablePointer<Int32>.allocate(capacity: n)
        defer { scores.deallocate(); floats.deallocate(); codes.deallocate(); order.deallocate() }
        body(ScoreOutput(scores: scores, floatColumns: floats, codeColumns: codes, candidateCount: n, order: order))
    }
}
