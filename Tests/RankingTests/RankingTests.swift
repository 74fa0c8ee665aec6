import ArbiterModels
import ArbiterStore
import ArbiterTestSupport
import ArbiterTraining
import Foundation
import Ranking
import Testing

/// The `ranking` kind: served scores against an independent reference, the order and its diversity rule,
/// what it refuses, and the quality of what `arbiter-train` makes of generated data.
@Suite struct RankingTests {
    /// A small hand-made version: 2 user and 1 item features, dimension 3, a logistic head, an FM head and a
    /// tree head over the dot product, log-product fusion, at most 2 items per category.
    static func handMade(diversity: (String, Int)? = ("category", 2), fusion: RankingLayout.Fusion = .logProduct) -> RankingVersion {
        var r = SplitMix64(seed: 11)
        func randoms(_ n: Int, _ scale: Double = 1) -> [Float] { (0..<n).map { _ in Float(r.normal() * scale) } }
        let features = FeatureSchema(context: [.numeric("age"), .categorical("segment", 3)],
                                     candidate: [.categorical("category", 4), .numeric("price", allowsMissing: true)], outputs: [])
        let d = 3
        let users = RankingVersion.Table(ids: [7, 8, 9], dimension: d, vectors: randoms(9), defaultRow: [0.1, 0.2, 0.3])
        let items = RankingVersion.Table(ids: (100..<120).map { UInt64($0) }, dimension: d, vectors: randoms(60), defaultRow: [0, 0, 1])
        let fields = RankingLayout.headFields(features)
        let dimension = FieldEncoding(fields: fields).dimension
        let norm: [Float] = [40, 0.1, 0, 1, 0, 1, 20, 0.05, 0, 0.5]
        let logistic = FMParameters(bias: -0.2, linear: randoms(dimension, 0.5), factors: [], factorCount: 0)
        let fm = FMParameters(bias: 0.3, linear: randoms(dimension, 0.5), factors: randoms(dimension * 2, 0.3), factorCount: 2)
        // Left when x < threshold; feature 4 is the dot product, 3 the price (missing goes right).
        let tree = ImportedForest.Tree(nodes: [
            .split(feature: 4, threshold: 0, missingRight: false, left: 1, right: 2),
            .split(feature: 3, threshold: 25, missingRight: true, left: 3, right: 4),
            .leaf(0.8), .leaf(-0.5), .leaf(0.1),
        ])
        let forest = ImportedForest(trees: [tree, ImportedForest.Tree(nodes: [.leaf(0.05)])], featureNames: fields.map(\.name),
                                    baseMargin: -0.1, transform: .logistic, sigmoidScale: 1, source: "hand-made")
        return RankingVersion(features: features, users: users, items: items,
                              heads: [.init(name: "p_a", weight: 0.7, model: .linear(logistic, norm: norm)),
                                      .init(name: "p_b", weight: 1.3, model: .linear(fm, norm: norm)),
                                      .init(name: "p_c", weight: 0.5, model: .trees(forest))],
                              fusion: fusion, diversity: diversity.map { (feature: $0.0, max: $0.1) })
    }

    /// The reference: every head's probability, the dot product and the fused score, computed from the
    /// version's arrays in Double, one candidate at a time.
    static func reference(_ v: RankingVersion, context: [Float], candidate: [Float], user: UInt64, item: UInt64)
        -> (heads: [Double], dot: Double, fused: Double) {
        func vector(_ t: RankingVersion.Table, _ id: UInt64) -> [Float] {
            guard let row = t.ids.firstIndex(of: id) else { return t.defaultRow }
            return Array(t.vectors[(row * t.dimension)..<((row + 1) * t.dimension)])
        }
        let u = vector(v.users, user), w = vector(v.items, item)
        let dot = zip(u, w).reduce(0.0) { $0 + Double($1.0) * Double($1.1) }
        let row = context + candidate + [Float(dot)]
        let fields = RankingLayout.headFields(v.features)
        var heads: [Double] = []
        for head in v.heads {
            switch head.model {
            case .linear(let fm, let norm):
                let y = referenceFactorizationMachine(bias: fm.bias, linear: fm.linear, factors: fm.factors, factorCount: fm.factorCount,
                                                      fields: fields, norm: norm, row: row)
                heads.append(1 / (1 + Foundation.exp(-y)))
            case .trees(let forest):
                heads.append(forest.predict(row))
            }
        }
        var fused = 0.0
        for (k, head) in v.heads.enumerated() {
            let floor = Double(RankingLayout.probabilityFloor)
            fused += Double(head.weight) * (v.fusion == .logProduct ? Foundation.log(min(max(heads[k], floor), 1 - floor)) : heads[k])
        }
        return (heads, dot, fused)
    }

    static let context: [Float] = [35, 2]
    static let ids: [UInt64] = [100, 101, 102, 103, 104, 105, 999, 106]
    static let candidates: [Float] = [0, 10, 0, 30, 0, .nan, 1, 20, 0, 22, 2, 40, 3, 15, 0, 28]

    @Test func servedScoresMatchTheReferenceAndTheOrderKeepsTheDiversityRule() throws {
        for fusion in [RankingLayout.Fusion.logProduct, .weightedSum] {
            let v = Self.handMade(fusion: fusion)
            let model = try v.model()
            let n = Self.ids.count
            let out = try model.score(context: Self.context, candidates: Self.candidates, candidateCount: n, ids: Self.ids,
                                      subject: 8, topK: 5)
            var fused: [Double] = []
            for i in 0..<n {
                let want = Self.reference(v, context: Self.context, candidate: Array(Self.candidates[(2 * i)..<(2 * i + 2)]), user: 8, item: Self.ids[i])
                for k in 0..<3 { #expect(abs(Double(out.floatColumns[k * n + i]) - want.heads[k]) < 2e-6, "head \(k) of candidate \(i)") }
                #expect(abs(Double(out.floatColumns[3 * n + i]) - want.dot) < 1e-5)
                #expect(abs(Double(out.scores[i]) - want.fused) < 2e-5 * max(1, abs(want.fused)))
                fused.append(Double(out.scores[i]))
            }
            // Rank before the rerank: by fused score, ties to the lower position.
            let byScore = (0..<n).sorted { fused[$0] > fused[$1] || (fused[$0] == fused[$1] && $0 < $1) }
            for (r, i) in byScore.enumerated() { #expect(out.floatColumns[4 * n + i] == Float(r + 1)) }
            // The answer: best first, at most 2 per category, 5 rows; passed-over rows only where nothing else is left.
            var taken: [Int] = [], count: [Float: Int] = [:]
            for i in byScore where taken.count < 5 {
                let category = Self.candidates[2 * i]
                if count[category, default: 0] < 2 {
                    count[category, default: 0] += 1
                    taken.append(i)
                }
            }
            for i in byScore where taken.count < 5 && !taken.contains(i) { taken.append(i) }
            #expect(out.rows == taken)
            #expect(Dictionary(grouping: out.rows.prefix(5), by: { Self.candidates[2 * $0] }).values.allSatisfy { $0.count <= 2 }
                    || out.rows.count == 5)
        }
    }

    @Test func withoutADiversityRuleTheAnswerIsTheBestKByScore() throws {
        let model = try Self.handMade(diversity: nil).model()
        let n = Self.ids.count
        let out = try model.score(context: Self.context, candidates: Self.candidates, candidateCount: n, ids: Self.ids, subject: 7, topK: 3)
        let byScore = (0..<n).sorted { out.scores[$0] > out.scores[$1] || (out.scores[$0] == out.scores[$1] && $0 < $1) }
        #expect(out.rows == Array(byScore.prefix(3)))
    }

    @Test func whenTheRuleCannotFillKThePassedOverRowsFillItBestFirst() throws {
        let model = try Self.handMade(diversity: ("category", 1)).model()
        let n = Self.ids.count
        let out = try model.score(context: Self.context, candidates: Self.candidates, candidateCount: n, ids: Self.ids, subject: 9, topK: 0)
        let byScore = (0..<n).sorted { out.scores[$0] > out.scores[$1] || (out.scores[$0] == out.scores[$1] && $0 < $1) }
        // One per category first (the candidates hold categories 0, 1, 2 and 3), then the rest by score.
        var first: [Int] = [], seen = Set<Float>()
        for i in byScore where seen.insert(Self.candidates[2 * i]).inserted { first.append(i) }
        #expect(first.count == 4)
        #expect(out.rows == first + byScore.filter { !first.contains($0) })
    }

    @Test func topKLargerThanTheCandidatesAnswersEveryCandidateBestFirst() throws {
        let model = try Self.handMade(diversity: nil).model()
        let n = Self.ids.count
        let out = try model.score(context: Self.context, candidates: Self.candidates, candidateCount: n, ids: Self.ids, subject: 7, topK: 50)
        #expect(out.rows.count == n)
        #expect(Set(out.rows) == Set(0..<n))
        #expect(zip(out.rows, out.rows.dropFirst()).allSatisfy { out.scores[$0.0] >= out.scores[$0.1] })
        // top_k 0 is every row too, in the model's order.
        let all = try model.score(context: Self.context, candidates: Self.candidates, candidateCount: n, ids: Self.ids, subject: 7, topK: 0)
        #expect(all.rows == out.rows)
    }

    @Test func unknownSubjectsAndItemsAreScoredWithTheDefaultRowAndCounted() throws {
        let v = Self.handMade()
        let model = try v.model()
        #expect(model.unknownSubjects == 0 && model.unknownItems == 0)
        let n = Self.ids.count
        let out = try model.score(context: Self.context, candidates: Self.candidates, candidateCount: n, ids: Self.ids, subject: 424242, topK: 0)
        #expect(model.unknownSubjects == 1)
        #expect(model.unknownItems == 1, "item 999 is not in the table")
        for i in 0..<n {
            let want = Self.reference(v, context: Self.context, candidate: Array(Self.candidates[(2 * i)..<(2 * i + 2)]), user: 424242, item: Self.ids[i])
            #expect(abs(Double(out.floatColumns[3 * n + i]) - want.dot) < 1e-6, "the default user row · item \(Self.ids[i])")
        }
        #expect(model.users.isMapped == false, "a detached version copies; a stored one maps (see the store test)")
    }

    @Test func aRequestWithoutASubjectIsRefusedWithAMessage() throws {
        let model = try Self.handMade().model()
        #expect {
            try model.score(context: Self.context, candidates: Self.candidates, candidateCount: Self.ids.count, ids: Self.ids)
        } throws: { error in
            guard let e = error as? ScoringError else { return false }
            return e.kind == .invalidRequest && e.message.contains("SUBJECT")
        }
    }

    @Test func publishingRefusesADiversityFeatureTheSchemaLacksOrThatIsNumeric() throws {
        #expect {
            _ = try Self.handMade(diversity: ("seller", 2)).build(golden: [])
        } throws: { "\($0)".contains("'seller' is not a candidate feature") && "\($0)".contains("category, price") }
        #expect {
            _ = try Self.handMade(diversity: ("price", 2)).build(golden: [])
        } throws: { "\($0)".contains("'price' is numeric") }
        #expect {
            _ = try Self.handMade(diversity: ("category", 0)).build(golden: [])
        } throws: { "\($0)".contains("at least 1") }
    }

    @Test func aHeadWhoseFeatureCountDoesNotMatchIsRefusedAtPublishAndAtLoad() throws {
        var v = Self.handMade()
        guard case .trees(var forest) = v.heads[2].model else { Issue.record("head 2 is the tree head"); return }
        forest.featureNames.removeLast()
        v.heads[2].model = .trees(forest)
        #expect {
            _ = try v.build(golden: [])
        } throws: { "\($0)".contains("head 'p_c' takes 4 features; a ranking head's row has 5") }

        // A linear head fitted for another encoding.
        var w = Self.handMade()
        guard case .linear(var fm, let norm) = w.heads[0].model else { Issue.record("head 0 is linear"); return }
        fm.linear.removeLast()
        w.heads[0].model = .linear(fm, norm: norm)
        #expect { _ = try w.build(golden: []) } throws: { "\($0)".contains("head 'p_a' was fitted for") }

        // A stored version whose tree head splits on a feature the row lacks: refused at load, naming the head.
        let (manifest, tensors) = try Self.handMade().build(golden: [])
        var bad = tensors
        let i = try #require(bad.firstIndex { $0.name == "head2.split" })
        var splits = bad[i].bytes.withUnsafeBytes { Array($0.bindMemory(to: UInt32.self)) }
        splits[0] = 7
        bad[i] = TensorData(name: "head2.split", shape: bad[i].shape, elements: splits)
        let version = try LoadedVersion(detachedModel: "x", kind: RankingLayout.kind, manifest: manifest.encoded(), tensors: bad)
        #expect {
            _ = try RankingModel(version: version, manifest: manifest)
        } throws: { "\($0)".contains("a split (head2) uses feature 7; the model has 5") }
    }

    @Test func goldenCasesCarryTheRequestAndTheRowsAnswered() throws {
        let v = Self.handMade()
        let golden = try v.goldenCases([(Self.context, Self.ids, Self.candidates, 8, 4)])
        #expect(golden[0].subject == 8 && golden[0].topK == 4 && golden[0].ids == Self.ids && golden[0].rows?.count == 4)
        let (manifest, tensors) = try v.build(golden: golden)
        let model = try RankingModel(version: LoadedVersion(detachedModel: "x", kind: RankingLayout.kind, manifest: manifest.encoded(), tensors: tensors),
                                     manifest: manifest)
        try model.checkGolden()
        // A recorded order that differs is caught.
        var wrong = manifest
        wrong.golden[0].rows = golden[0].rows.map { Array($0.reversed()) }
        let other = try RankingModel(version: LoadedVersion(detachedModel: "x", kind: RankingLayout.kind, manifest: wrong.encoded(), tensors: tensors),
                                     manifest: wrong)
        #expect { try other.checkGolden() } throws: { "\($0)".contains("rows answered") }
    }

    @Test func aTrainedRankingBeatsPopularityEachHeadAloneAndEqualWeights() async throws {
        // Seconds of training (a minute under the sanitizers): off the threads every test's awaits share.
        let trained = try await offPool {
            let rows = RankingData.generate(users: 1200, items: 600, perUser: 30, seed: 3)
            var o = RankingTrainingOptions()
            o.cemIterations = 8
            o.mfEpochs = 8
            o.headEpochs = 8
            return try RankingTrainer.train(rows: rows, options: o)
        }
        let q = trained.test
        #expect(q.users > 300)
        #expect(q.fused > q.popularity + 0.03, "\(q)")
        for (name, v) in q.heads { #expect(q.fused > v, "fused \(q.fused) vs \(name) \(v)") }
        #expect(q.fused > q.equalWeights, "\(q)")
        // Its golden cases are scored by the serving code and replay.
        let golden = try trained.version.goldenCases(trained.goldenRequests)
        #expect(golden.count == 3)
        let (manifest, tensors) = try trained.version.build(golden: golden)
        try RankingModel(version: LoadedVersion(detachedModel: "feed", kind: RankingLayout.kind, manifest: manifest.encoded(), tensors: tensors),
                         manifest: manifest).checkGolden()
    }

    static let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Fixtures")

    /// A head trained with LightGBM on the head rows of generated data (Fixtures/make_fixtures.sh) replaces the
    /// native p(reply | chat) head: the import reproduces LightGBM's predictions, and the served head column is
    /// the forest's prediction for each candidate's served head row (the request's features and its dot).
    @Test func aLightGBMHeadReplacesANativeOneAndServesTheLibrarysNumbers() async throws {
        let file = Self.fixtures.appendingPathComponent("lightgbm-head.txt").path
        let forest = try ImportedForest.read(.lightgbmText, file: file)
        #expect(forest.featureCount == 6 && forest.transform == .logistic)
        let checkRows = try GbdtImport.readRows(Self.fixtures.appendingPathComponent("lightgbm-head-check.csv").path, featureCount: 6)
        let predictions = try GbdtImport.readPredictions(Self.fixtures.appendingPathComponent("lightgbm-head-check.predictions").path)
        #expect(checkRows.count >= 1000)
        #expect(try GbdtImport.check(forest, rows: checkRows, expected: predictions, file: "check") <= 1e-5)

        var o = RankingTrainingOptions()
        o.headEpochs = 4
        o.cemIterations = 4
        o.importedHeads = ["p_reply_given_chat": forest]
        let data = RankingData.generate(users: 400, items: 200, perUser: 25, seed: 4)
        let options = o
        let trained = try await offPool { try RankingTrainer.train(rows: data, options: options) }
        guard case .trees = trained.version.heads[2].model else { Issue.record("the reply head is not the imported one"); return }
        let model = try trained.version.model()
        let user = data[0].user
        let mine = data.filter { $0.user == user }
        let n = mine.count
        let out = try model.score(context: mine[0].userFeatures, candidates: mine.flatMap(\.itemFeatures), candidateCount: n,
                                  ids: mine.map(\.item), subject: user, topK: 0)
        for i in 0..<n {
            let row = mine[i].userFeatures + mine[i].itemFeatures + [out.floatColumns[3 * n + i]]
            #expect(abs(Double(out.floatColumns[2 * n + i]) - forest.predict(row)) <= 1e-6)
        }
        // The version records where the head came from, and its golden cases replay.
        let golden = try trained.version.goldenCases(trained.goldenRequests)
        let (manifest, _) = try trained.version.build(golden: golden)
        #expect(manifest.training["head p_reply_given_chat"]?.contains("lightgbm") == true)

        // A model for another row, or for a head that does not exist, is refused before anything is fitted.
        var wrong = forest
        wrong.featureNames.append("extra")
        o.importedHeads = ["p_reply_given_chat": wrong]
        #expect { try RankingTrainer.train(rows: data, options: o) } throws: { "\($0)".contains("takes 7 features; a ranking head's row has 6") }
        o.importedHeads = ["p_click": forest]
        #expect { try RankingTrainer.train(rows: data, options: o) } throws: { "\($0)".contains("there is no head 'p_click'") }
    }

    @Test func theCSVRoundTripsAndBadRowsAreNamed() throws {
        let rows = RankingData.generate(users: 5, items: 20, perUser: 4, seed: 1)
        let dir = temporaryPath("ranking-csv")
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let url = URL(fileURLWithPath: dir + "/imp.csv")
        try RankingData.writeCSV(rows, to: url)
        #expect(try RankingData.readCSV(url) == rows)
        var text = try String(contentsOf: url, encoding: .utf8)
        text += "1,2,1.0,9,0,10,0,0,0,0\n"
        try text.write(to: url, atomically: true, encoding: .utf8)
        #expect { try RankingData.readCSV(url) } throws: { "\($0)".contains("line \(rows.count + 2): u_segment 9.0 is not a code in 0..<4") }
    }
}
