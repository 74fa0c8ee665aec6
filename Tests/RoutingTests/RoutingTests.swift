import ArbiterModels
import ArbiterStore
import ArbiterTestSupport
import ArbiterTraining
import Foundation
import PropertyBased
import Routing
import Testing

/// The `routing` kind: eligibility and its reason codes against an independent reference, values against a
/// hand computation, arms and exploration, what it refuses, and what `arbiter-train` makes of generated data.
@Suite struct RoutingTests {
    static let schema = RoutingData.schema
    static let lenderCount = 12

    /// A hand-made version over the lenders of a generated world: a p(approve) factorization machine for
    /// every applicant, an amount machine for new applicants and an amount tree ensemble for returning ones.
    static func handMade(shares: [Float]? = nil, epsilon: Double = 0, maxProducts: Int = 0, salt: UInt64 = 3,
                         baseline: RoutingLayout.Baseline = .priority, value: RoutingLayout.Value = .revenue) -> RoutingVersion {
        let world = RoutingWorld(seed: 5, lenders: lenderCount)
        var r = SplitMix64(seed: 21)
        func randoms(_ n: Int, _ scale: Double) -> [Float] { (0..<n).map { _ in Float(r.normal() * scale) } }
        let fields = RoutingLayout.headFields(schema, lenders: lenderCount)
        let dimension = FieldEncoding(fields: fields).dimension
        // Means and inverse deviations of the numeric fields (categorical ones: 0, 1).
        var norm = [Float](repeating: 0, count: 2 * fields.count)
        for j in fields.indices { norm[2 * j + 1] = 1 }
        for (name, mean, sd) in [("credit_score", 650, 75), ("income", 4000, 2000), ("requested_amount", 5000, 4000),
                                 ("employment_years", 5, 5), ("debt_ratio", 0.3, 0.15), ("capacity", 100, 100), ("load", 0.5, 0.3)] as [(String, Float, Float)] {
            let j = fields.firstIndex { $0.name == name }!
            norm[2 * j] = mean
            norm[2 * j + 1] = 1 / sd
        }
        let approve = FMParameters(bias: -0.3, linear: randoms(dimension, 0.5), factors: randoms(dimension * 2, 0.2), factorCount: 2)
        let amount = FMParameters(bias: 0.1, linear: randoms(dimension, 0.4), factors: randoms(dimension * 2, 0.2), factorCount: 2)
        // Left when x < threshold: by credit score (3), then by lender row (last field).
        let tree = ImportedForest.Tree(nodes: [
            .split(feature: 3, threshold: 640, missingRight: false, left: 1, right: 2),
            .split(feature: fields.count - 1, threshold: 5.5, missingRight: false, left: 3, right: 4),
            .leaf(5200), .leaf(1800), .leaf(2600),
        ])
        let forest = ImportedForest(trees: [tree], featureNames: fields.map(\.name), baseMargin: 300, transform: .identity,
                                    sigmoidScale: 1, source: "hand-made")
        let averages = Dictionary(uniqueKeysWithValues: world.lenders.map { ($0.id, Float(1000 + ($0.id % 7) * 500)) })
        var v = RoutingVersion(features: schema, channelFeature: "channel", returningFeature: "returning", capacityFeature: "capacity",
                               lenders: world.lenders, averageAmounts: averages,
                               heads: [.init(role: .approve, model: .linear(approve, norm: norm)),
                                       .init(role: .amount, population: .new, model: .linear(amount, norm: norm, scale: 3000, offset: 4000)),
                                       .init(role: .amount, population: .returning, model: .trees(forest))],
                               value: value, baseline: baseline, shares: shares ?? (0..<RoutingWorld.channels).map { Float($0 % 5) / 4 },
                               epsilon: epsilon, maxProducts: maxProducts, salt: salt)
        v.exploreSalt = 99
        return v
    }

    /// The reason the reference gives a candidate: the first failing rule in the version's order (allowed
    /// values by feature name, then ranges by feature name), then capacity — written from the rules' meaning,
    /// not from the plugin.
    static func expectedReason(_ v: RoutingVersion, lender: LenderSpec?, applicant: [Float], capacity: Float) -> String {
        guard let lender else { return RoutingLayout.unknownLender }
        let context = v.features.context
        for name in Set(v.lenders.flatMap { $0.allowed.keys }).sorted() {
            guard let codes = lender.allowed[name] else { continue }
            let j = context.firstIndex { $0.name == name }!
            let x = applicant[j]
            if x.isNaN ? codes.count < context[j].cardinality : !codes.contains(Int(x)) { return name }
        }
        for name in Set(v.lenders.flatMap { $0.ranges.keys }).sorted() {
            guard let range = lender.ranges[name] else { continue }
            let x = applicant[context.firstIndex { $0.name == name }!]
            if x.isNaN ? (range.min != -.infinity || range.max != .infinity) : (x < range.min || x > range.max) { return "out_of_range:\(name)" }
        }
        return capacity > 0 ? RoutingLayout.eligible : RoutingLayout.noCapacity
    }

    /// An applicant from eight uniform numbers: every categorical code and the whole range of each numeric
    /// feature, with edges (the rules' bounds are round numbers, so round values land on them).
    static func applicant(_ u: [Float]) -> [Float] {
        [Float(Int(u[0] * 24) % 24), u[1] < 0.3 ? 1 : 0, Float(Int(u[2] * 8) % 8), (300 + u[3] * 550).rounded(),
         (500 + u[4] * 6000).rounded(), ((u[5] * 32_000) / 1000).rounded() * 1000, (u[6] * 30).rounded(), (u[7] * 100).rounded() / 100]
    }

    struct Answer {
        var out: ScoredArrays
        var n: Int
        var reasonLabels: [String]
        func reason(_ i: Int) -> String { reasonLabels[Int(out.codeColumns[i])] }
        func arm(_ i: Int) -> UInt8 { out.codeColumns[n + i] }
        func explored(_ i: Int) -> Bool { out.codeColumns[2 * n + i] == 1 }
        func p(_ i: Int) -> Float { out.floatColumns[i] }
        func amount(_ i: Int) -> Float { out.floatColumns[n + i] }
    }

    static func score(_ m: RoutingModel, _ applicant: [Float], ids: [UInt64], states: [Float], key: UInt64, topK: Int) throws -> Answer {
        let out = try m.score(context: applicant, candidates: states, candidateCount: ids.count, ids: ids, routingKey: key, topK: topK)
        return Answer(out: out, n: ids.count, reasonLabels: m.schema.outputs[2].labels)
    }

    @Test func eligibilityNeverLeaksAndEveryReasonIsTheRightOne() async throws {
        let v = Self.handMade(epsilon: 0.3)
        let m = try v.model()
        let table = v.sortedLenders
        var checked = 0, excluded: [String: Int] = [:]
        await propertyCheck(count: 3000, input: Gen.float(in: 0...1).array(of: 8), Gen.int(in: 0...3).array(of: Self.lenderCount),
                            Gen.int(in: 0...Int.max), Gen.int(in: -1...(Self.lenderCount - 1))) { u, capacity, key, unknownAt in
            let a = Self.applicant(u)
            // Lenders in a shuffled order, one of them (sometimes) replaced by an id the table lacks; capacity 0
            // for about a quarter.
            var ids = table.map(\.id)
            var g = SplitMix64(seed: UInt64(key))
            ids.shuffle(using: &g)
            if unknownAt >= 0 { ids[unknownAt] = 999_999 }
            let states: [Float] = ids.indices.flatMap { [Float(capacity[$0] == 0 ? 0 : capacity[$0] * 10), 0.5] as [Float] }
            let topK = key % 9
            let answer = try Self.score(m, a, ids: ids, states: states, key: UInt64(key), topK: topK)
            let expected = ids.indices.map { i in Self.expectedReason(v, lender: table.first { $0.id == ids[i] }, applicant: a, capacity: states[2 * i]) }
            for i in ids.indices {
                #expect(answer.reason(i) == expected[i], "candidate \(i) (lender \(ids[i])) of \(a)")
                if expected[i] != RoutingLayout.eligible { excluded[expected[i].split(separator: ":").first.map(String.init) ?? "", default: 0] += 1 }
            }
            let eligible = ids.indices.filter { expected[$0] == RoutingLayout.eligible }
            if topK > 0 {
                // Top-k: eligible lenders only, as many as there are up to k.
                #expect(answer.out.rows.count == min(topK, eligible.count))
                #expect(answer.out.rows.allSatisfy { expected[$0] == RoutingLayout.eligible })
            } else {
                // Every candidate: the eligible first, then the rest in request order.
                #expect(answer.out.rows.count == ids.count)
                #expect(Set(answer.out.rows.prefix(eligible.count)) == Set(eligible))
                #expect(Array(answer.out.rows.dropFirst(eligible.count)) == ids.indices.filter { expected[$0] != RoutingLayout.eligible })
            }
            for i in ids.indices where expected[i] != RoutingLayout.eligible {
                #expect(answer.out.scores[i] == RoutingLayout.ineligibleScore)
            }
            checked += 1
        }
        #expect(checked == 3000)
        // The generated applicants exercised every kind of exclusion.
        for kind in ["unknown_lender", "no_capacity", "out_of_range", "region", "channel"] {
            #expect((excluded[kind] ?? 0) > 50, "\(kind): \(excluded[kind] ?? 0) exclusions")
        }
    }

    /// The reference value of an eligible lender: the heads computed by hand from the version's arrays.
    static func referenceValue(_ v: RoutingVersion, applicant: [Float], state: [Float], lender: Int) -> (p: Double, amount: Double) {
        let fields = RoutingLayout.headFields(v.features, lenders: v.lenders.count)
        let row = applicant + state + [Float(lender)]
        func machine(_ fm: FMParameters, _ norm: [Float]) -> Double {
            referenceFactorizationMachine(bias: fm.bias, linear: fm.linear, factors: fm.factors, factorCount: fm.factorCount,
                                          fields: fields, norm: norm, row: row)
        }
        let returning = applicant[1] >= 0.5
        var p = 0.0, amount = 0.0
        for head in v.heads where head.population == .all || (head.population == .returning) == returning {
            switch (head.role, head.model) {
            case (.approve, .linear(let fm, let norm, _, _)): p = 1 / (1 + exp(-machine(fm, norm)))
            case (.amount, .linear(let fm, let norm, let scale, let offset)): amount = Double(offset) + Double(scale) * machine(fm, norm)
            case (.amount, .trees(let forest)): amount = forest.predict(row)
            default: Issue.record("unexpected head")
            }
        }
        return (p, max(0, amount))
    }

    @Test func valuesMatchTheHeadsComputedByHandAndTheModelArmOrdersByThem() throws {
        let v = Self.handMade(shares: [Float](repeating: 1, count: 24))
        let m = try v.model()
        let table = v.sortedLenders
        var g = SplitMix64(seed: 8)
        var compared = 0
        for k in 0..<300 {
            let a = Self.applicant((0..<8).map { _ in Float(g.uniform()) })
            let states: [Float] = table.indices.flatMap { _ in [Float(1 + Int(g.uniform() * 50)), Float(g.uniform())] as [Float] }
            let answer = try Self.score(m, a, ids: table.map(\.id), states: states, key: UInt64(k), topK: 0)
            for (l, lender) in table.enumerated() where answer.reason(l) == RoutingLayout.eligible {
                let ref = Self.referenceValue(v, applicant: a, state: Array(states[(2 * l)..<(2 * l + 2)]), lender: l)
                let value = ref.p * ref.amount * Double(lender.takeRate)
                #expect(abs(Double(answer.p(l)) - ref.p) < 1e-5)
                #expect(abs(Double(answer.amount(l)) - ref.amount) < 1e-3 * max(1, ref.amount))
                #expect(abs(Double(answer.out.scores[l]) - value) < 1e-3 * max(1, value))
                #expect(answer.arm(l) == 0)
                compared += 1
            }
            // Model arm, no exploration: eligible rows by value, best first.
            let values = answer.out.rows.prefix { answer.reason($0) == RoutingLayout.eligible }.map { answer.out.scores[$0] }
            #expect(values == values.sorted(by: >))
        }
        #expect(compared > 400)
    }

    @Test func theBaselineArmFollowsThePriorityListOrTheRule() throws {
        for baseline in [RoutingLayout.Baseline.priority, .staticValue] {
            let v = Self.handMade(shares: [Float](repeating: 0, count: 24), baseline: baseline)
            let m = try v.model()
            let table = v.sortedLenders
            let a: [Float] = [3, 0, 2, 720, 5000, 4000, 6, 0.2]
            let answer = try Self.score(m, a, ids: table.map(\.id), states: table.flatMap { _ in [10, 0.5] as [Float] }, key: 42, topK: 0)
            let eligible = answer.out.rows.prefix { answer.reason($0) == RoutingLayout.eligible }
            #expect(eligible.count >= 3)
            let keys = eligible.map { i -> Float in
                baseline == .priority ? -Float(table[i].priority) : v.averageAmounts[table[i].id]! * table[i].takeRate
            }
            #expect(keys == keys.sorted(by: >))
            #expect(eligible.allSatisfy { answer.arm($0) == 1 && !answer.explored($0) })
        }
    }

    @Test func sharesHoldPerChannelKeysStickAndAChangedShareMovesOnlyItsChannel() throws {
        let shares: [Float] = (0..<24).map { [0.1, 0.25, 0.5, 0.3][$0 % 4] }
        // The arm function over 100k keys per channel: the share within one percentage point.
        for (c, share) in shares.enumerated() {
            var onModel = 0
            for key in 0..<100_000 { if RoutingLayout.onModelArm(key: UInt64(key) &* 0x2545_F491_4F6C_DD1D &+ UInt64(c), salt: 3, share: share) { onModel += 1 } }
            #expect(abs(Double(onModel) / 100_000 - Double(share)) < 0.01, "channel \(c): \(onModel) of 100000 at share \(share)")
        }
        // The served model over 100k keys (channels in turn): its arm is the function's, a second call gives the
        // same answer, and a version that changes channel 5's share moves keys of channel 5 only, one way.
        var changed = shares
        changed[5] = 0.45
        let before = try Self.handMade(shares: shares, epsilon: 0.2).model()
        let again = try Self.handMade(shares: shares, epsilon: 0.2).model()
        let after = try Self.handMade(shares: changed, epsilon: 0.2).model()
        let ids: [UInt64] = RoutingWorld(seed: 5, lenders: Self.lenderCount).lenders.map(\.id)
        let states: [Float] = ids.flatMap { _ in [10, 0.5] as [Float] }
        var perChannel = [Int](repeating: 0, count: 24), movedInto5 = 0
        for k in 0..<100_000 {
            let key = UInt64(k) &* 0x9E37_79B9_7F4A_7C15
            let c = k % 24
            let a: [Float] = [Float(c), 0, 1, 700, 4000, 3000, 4, 0.2]
            let x = try Self.score(before, a, ids: ids, states: states, key: key, topK: 3)
            let y = try Self.score(again, a, ids: ids, states: states, key: key, topK: 3)
            let z = try Self.score(after, a, ids: ids, states: states, key: key, topK: 3)
            #expect(x.out == y.out)
            let onModel = x.arm(0) == 0
            #expect(onModel == RoutingLayout.onModelArm(key: key, salt: 3, share: shares[c]))
            if onModel { perChannel[c] += 1 }
            if c != 5 {
                #expect(x.out == z.out)
            } else if x.arm(0) != z.arm(0) {
                #expect(x.arm(0) == 1 && z.arm(0) == 0)
                movedInto5 += 1
            }
        }
        // Channel 5 goes from 0.25 to 0.45: about a fifth of its keys move.
        #expect(abs(Double(movedInto5) / (100_000 / 24) - 0.2) < 0.03)
        for c in 0..<24 {
            #expect(abs(Double(perChannel[c]) / (100_000 / 24) - Double(shares[c])) < 0.035, "channel \(c)")
        }
    }

    @Test func explorationPromotesOneEligibleLenderReproducibly() throws {
        let always = try Self.handMade(shares: [Float](repeating: 1, count: 24), epsilon: 1).model()
        let never = try Self.handMade(shares: [Float](repeating: 1, count: 24), epsilon: 0).model()
        let table = Self.handMade().sortedLenders
        let a: [Float] = [3, 0, 2, 720, 5000, 4000, 6, 0.2]
        let states: [Float] = table.flatMap { _ in [10, 0.5] as [Float] }
        var promotedFrom: Set<Int> = []
        for key in UInt64(1)...400 {
            let x = try Self.score(always, a, ids: table.map(\.id), states: states, key: key, topK: 0)
            let plain = try Self.score(never, a, ids: table.map(\.id), states: states, key: key, topK: 0)
            #expect(try Self.score(always, a, ids: table.map(\.id), states: states, key: key, topK: 0).out == x.out)
            let top = x.out.rows[0]
            #expect(x.explored(top) && x.reason(top) == RoutingLayout.eligible)
            #expect(x.out.rows.filter { x.explored($0) }.count == 1)
            // The rest keep the model's order; the promoted one came from below the top.
            let position = plain.out.rows.firstIndex(of: top)!
            #expect(position > 0)
            promotedFrom.insert(position)
            #expect(Array(x.out.rows.dropFirst()) == plain.out.rows.filter { $0 != top })
            #expect(!plain.out.rows.contains { plain.explored($0) })
        }
        #expect(promotedFrom.count >= 4)
    }

    @Test func withdrawalModeCapsTheAnswerAtNEligibleProducts() throws {
        let m = try Self.handMade(shares: [Float](repeating: 1, count: 24), maxProducts: 2).model()
        let table = Self.handMade().sortedLenders
        let a: [Float] = [3, 0, 2, 720, 5000, 4000, 6, 0.2]
        let states: [Float] = table.flatMap { _ in [10, 0.5] as [Float] }
        for topK in [0, 1, 5] {
            let x = try Self.score(m, a, ids: table.map(\.id), states: states, key: 7, topK: topK)
            #expect(x.out.rows.count == (topK == 1 ? 1 : 2))
            #expect(x.out.rows.allSatisfy { x.reason($0) == RoutingLayout.eligible })
        }
    }

    @Test func aVersionWhoseRulesNameAMissingFeatureIsRefusedAtLoadWithItsName() throws {
        let (manifest, tensors) = try Self.handMade().build(golden: [])
        var bad = manifest
        let offset = bad.parameters.removeValue(forKey: "range.credit_score")!
        bad.parameters["range.fico"] = offset
        let loaded = try LoadedVersion(detachedModel: "r", kind: RoutingLayout.kind, manifest: bad.encoded(), tensors: tensors)
        #expect(throws: ModelError.invalidSchema("the lender table has a range rule on 'fico', which is not an applicant (context) feature of this schema (channel, returning, region, credit_score, income, requested_amount, employment_years, debt_ratio)")) {
            try RoutingModel(version: loaded, manifest: bad)
        }
        // The trainer's side refuses the same before anything is published.
        var v = Self.handMade()
        v.lenders[0].ranges["fico"] = .init(min: 600)
        #expect(throws: DataError("a lender rule names 'fico', which is not an applicant feature (channel, returning, region, credit_score, income, requested_amount, employment_years, debt_ratio)")) {
            try v.build(golden: [])
        }
        // A lender file naming it is refused with its column.
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("lenders-\(UUID()).csv")
        defer { try? FileManager.default.removeItem(at: url) }
        try "lender_id,take_rate,priority,daily_capacity,min:fico\n1,0.05,1,100,600\n".write(to: url, atomically: true, encoding: .utf8)
        #expect(throws: DataError("\(url.path): column 'min:fico' names 'fico', which is not an applicant feature (channel, returning, region, credit_score, income, requested_amount, employment_years, debt_ratio)")) {
            try RoutingData.readLenders(url)
        }
    }

    @Test func badTablesAndHeadsAreRefusedAtLoad() throws {
        let (manifest, tensors) = try Self.handMade().build(golden: [])
        func load(_ m: ModelManifest, _ t: [TensorData] = tensors) throws {
            let loaded = try LoadedVersion(detachedModel: "r", kind: RoutingLayout.kind, manifest: m.encoded(), tensors: t)
            _ = try RoutingModel(version: loaded, manifest: m)
        }
        // Unsorted ids.
        var t = tensors
        let i = t.firstIndex { $0.name == RoutingLayout.lenderID }!
        var ids = RoutingWorld(seed: 5, lenders: Self.lenderCount).lenders.map(\.id).sorted()
        ids.swapAt(0, 1)
        t[i] = TensorData(name: RoutingLayout.lenderID, shape: [ids.count], elements: ids)
        #expect(throws: ModelError.self) { try load(manifest, t) }
        // A share above 1.
        t = tensors
        let s = t.firstIndex { $0.name == RoutingLayout.channelShare }!
        t[s] = TensorData(name: RoutingLayout.channelShare, shape: [24], values: [Float](repeating: 1.5, count: 24))
        #expect(throws: ModelError.invalidParameters("channel 0's model share is 1.5; shares are in 0...1")) { try load(manifest, t) }
        // No approve head.
        var m = manifest
        m.parameters["head0.role"] = 1
        #expect(throws: ModelError.self) { try load(m) }
        // Reason labels that do not match the rules.
        m = manifest
        m.schema.outputs[2].labels.removeLast()
        #expect(throws: ModelError.self) { try load(m) }
        // A channel feature that is numeric.
        m = manifest
        m.parameters[RoutingLayout.channelFeatureParameter] = 3
        #expect(throws: ModelError.invalidSchema("the channel feature must be a categorical applicant (context) feature; feature 3 of [\"channel\", \"returning\", \"region\", \"credit_score\", \"income\", \"requested_amount\", \"employment_years\", \"debt_ratio\"] is not")) { try load(m) }
    }

    @Test func goldenCasesRoundTripThroughTheStore() throws {
        let v = Self.handMade(epsilon: 0.5)
        let table = v.sortedLenders
        let request = RoutingRequest(applicant: 1, features: [3, 1, 2, 720, 5000, 4000, 6, 0.2], lenders: table.map(\.id) + [5],
                                     lenderFeatures: table.indices.flatMap { [Float($0 % 4 == 0 ? 0 : 10), 0.5] as [Float] } + [10, 0.5])
        let golden = try v.goldenCases([(request, 1, 0), (request, 2, 3), (request, 77, 5)])
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("routing-\(UUID())")
        defer { try? FileManager.default.removeItem(at: dir) }
        let env = try StoreEnvironment.open(path: dir.path, configuration: StoreConfiguration(mapSize: 1 << 30, create: true))
        let catalog = Catalog(environment: env)
        try v.publish(model: "route", golden: golden, catalog: catalog)
        let loaded = try LoadedVersion(environment: env, model: "route")
        let manifest = try ModelManifest.decode(loaded.manifest)
        // As the server loads it: the registry's checks (every f32 tensor finite, the golden cases) and the plugin's.
        var registry = ModelRegistry()
        registry.register(kind: RoutingLayout.kind, factory: RoutingModel.factory)
        #expect(try registry.load(loaded) is RoutingModel)
        #expect(manifest.golden.count == 3 && manifest.golden.allSatisfy { $0.rows != nil && $0.routingKey != nil })
    }

    /// Generated data, trained natively, replayed on fresh applicants of the same world: the model's order
    /// earns more funded amount and revenue per applicant than the baseline and the rules-only router.
    @Test func aTrainedRoutingBeatsTheBaselineAndTheRulesOnlyRouter() async throws {
        let (trained, replay) = try await offPool {
            let world = RoutingWorld(seed: 3, lenders: 20)
            let rows = world.submissions(applicants: 6000, stream: 3)
            var o = RoutingTrainingOptions()
            o.maxEpochs = 8
            let trained = try RoutingTrainer.train(rows: rows, lenders: world.lenders, options: o)
            let replay = try RoutingReplay.run(model: try trained.version.model(), seed: 3, applicants: 4000)
            return (trained, replay)
        }
        let v = replay.values
        #expect(trained.test.approveAUC > 0.7)
        #expect(trained.test.amountRMSE < trained.test.lenderAverageRMSE)
        #expect(v["model"]!.fundedAmount > 1.05 * v["baseline"]!.fundedAmount, "\(replay.report)")
        #expect(v["model"]!.fundedAmount > 1.03 * v["rules"]!.fundedAmount, "\(replay.report)")
        #expect(v["model"]!.revenue > v["baseline"]!.revenue && v["model"]!.revenue > v["rules"]!.revenue, "\(replay.report)")
        #expect(v["oracle"]!.revenue >= v["model"]!.revenue)
        // Replaying another seed's world is refused (the same ids, other lenders).
        #expect(throws: DataError.self) { try RoutingReplay.run(model: try trained.version.model(), seed: 4, applicants: 10) }
        // Separate heads for new and returning applicants: two of each role, and the version loads.
        let split = try await offPool {
            let world = RoutingWorld(seed: 3, lenders: 20)
            var o = RoutingTrainingOptions()
            o.maxEpochs = 2
            o.splitReturning = true
            return try RoutingTrainer.train(rows: world.submissions(applicants: 1500, stream: 3), lenders: world.lenders, options: o)
        }
        #expect(split.version.heads.map { "\($0.role)/\($0.population)" } == ["approve/new", "approve/returning", "amount/new", "amount/returning"])
        _ = try split.version.model()
        // The golden cases the trainer chose cover both arms and an explored answer.
        let golden = try trained.version.goldenCases(trained.goldenRequests)
        let arms = Set(golden.map { g in g.codeColumns[g.candidateCount] })
        #expect(arms == [0, 1])
        #expect(golden.contains { g in g.codeColumns[(2 * g.candidateCount)...].contains(1) })
    }

    @Test func theCSVsRoundTripAndBadRowsAreNamed() throws {
        let world = RoutingWorld(seed: 9, lenders: 6)
        let rows = world.submissions(applicants: 50, stream: 9)
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("routing-csv-\(UUID())")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let data = dir.appendingPathComponent("d.csv"), lenders = dir.appendingPathComponent("l.csv")
        try RoutingData.writeCSV(rows, to: data)
        try RoutingData.writeLenders(world.lenders, to: lenders)
        #expect(try RoutingData.readCSV(data) == rows)
        #expect(try RoutingData.readLenders(lenders) == world.lenders)
        var text = try String(contentsOf: data, encoding: .utf8)
        let lines = text.split(separator: "\n")
        var cells = lines[1].split(separator: ",").map(String.init)
        cells[1] = "24"
        text = ([String(lines[0]), cells.joined(separator: ",")]).joined(separator: "\n") + "\n"
        try text.write(to: data, atomically: true, encoding: .utf8)
        #expect(throws: DataError("\(data.path) line 2: channel 24.0 is not a code in 0..<24")) { try RoutingData.readCSV(data) }
        try "lender_id,take_rate,priority,daily_capacity,allow:credit_score\n1,0.05,1,100,1\n".write(to: lenders, atomically: true, encoding: .utf8)
        #expect(throws: DataError("\(lenders.path): column 'allow:credit_score': allowed values apply to categorical features; 'credit_score' is numeric")) {
            try RoutingData.readLenders(lenders)
        }
    }

    static let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Fixtures")

    /// A p(approve) head trained with XGBoost on the head rows of generated data (Fixtures/make_fixtures.sh)
    /// replaces the native one; the served p_approve of held-out submissions is XGBoost's own prediction, and
    /// the version passes the server's load (the registry's checks and its golden cases).
    @Test func anXGBoostApproveHeadIsServedWithTheLibrarysNumbers() async throws {
        let forest = try ImportedForest.read(.xgboostJSON, file: Self.fixtures.appendingPathComponent("xgboost-approve.json").path)
        let rows = try GbdtImport.readRows(Self.fixtures.appendingPathComponent("xgboost-approve-check.csv").path, featureCount: forest.featureCount)
        let expected = try GbdtImport.readPredictions(Self.fixtures.appendingPathComponent("xgboost-approve-check.predictions").path)
        #expect(rows.count == 500 && expected.count == 500)
        let trained = try await offPool {
            let world = RoutingWorld(seed: 2, lenders: 12)
            var o = RoutingTrainingOptions()
            o.maxEpochs = 2
            o.importedHeads[.approve] = forest
            return try RoutingTrainer.train(rows: world.submissions(applicants: 3000, stream: 2), lenders: world.lenders, options: o)
        }
        let m = try trained.version.model()
        let table = trained.version.sortedLenders
        var worst = 0.0, eligible = 0
        for (row, want) in zip(rows, expected) {
            let out = try m.score(context: Array(row[0..<8]), candidates: Array(row[8..<10]), candidateCount: 1, ids: [table[Int(row[10])].id])
            if out.codeColumns[0] == 0 { eligible += 1 }
            worst = max(worst, abs(Double(out.floatColumns[0]) - want))
        }
        #expect(eligible == rows.count, "logged submissions went to eligible lenders with capacity")
        #expect(worst < 1e-6, "largest difference from XGBoost's predictions: \(worst)")
        // As the server loads it.
        let (manifest, tensors) = try trained.version.build(golden: try trained.version.goldenCases(trained.goldenRequests))
        let loaded = try LoadedVersion(detachedModel: "route", kind: RoutingLayout.kind, manifest: manifest.encoded(), tensors: tensors)
        var registry = ModelRegistry()
        registry.register(kind: RoutingLayout.kind, factory: RoutingModel.factory)
        #expect(try registry.load(loaded) is RoutingModel)
    }

}
