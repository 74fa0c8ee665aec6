import ArbiterModels
import ArbiterStore
import ArbiterTestSupport
import ArbiterTraining
import Foundation
import Gbdt
import Testing

/// XGBoost and LightGBM models served exactly: the fixtures (made by Fixtures/gbdt/make_fixtures.py with
/// the libraries, kept in the repo) hold models, 10,000 rows with missing values, and each library's own
/// predictions for them. Arbiter's served predictions must match within 1e-5 on every row.
@Suite struct GbdtImportTests {
    static let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Fixtures/gbdt")
    static func path(_ name: String) -> String { fixtures.appendingPathComponent(name).path }

    static let rows: [[Float]] = try! GbdtImport.readRows(path("rows.csv"), featureCount: 12)

    static let models: [(file: String, format: ForestFormat, predictions: String)] = [
        ("xgboost-binary.json", .xgboostJSON, "xgboost-binary.predictions"),
        ("xgboost-regression.json", .xgboostJSON, "xgboost-regression.predictions"),
        ("lightgbm-binary.txt", .lightgbmText, "lightgbm-binary.predictions"),
        ("lightgbm-regression.txt", .lightgbmText, "lightgbm-regression.predictions"),
    ]

    static var registry: ModelRegistry {
        var r = ModelRegistry()
        r.register(kind: GbdtLayout.kind, factory: GbdtModel.factory)
        return r
    }

    @Test func theFixtureRowsHaveMissingValues() {
        #expect(Self.rows.count == 10_000)
        let missing = Self.rows.filter { $0.contains { $0.isNaN } }.count
        #expect(missing > 5_000, "\(missing) rows with a missing value")
    }

    /// The served model (imported, published, loaded through the registry, scored in SCORE-sized batches
    /// with context and candidate features split) against the library's own predictions.
    @Test(arguments: GbdtImportTests.models.indices)
    func servedPredictionsMatchTheLibrary(_ which: Int) throws {
        let m = Self.models[which]
        let forest = try ImportedForest.read(m.format, file: Self.path(m.file))
        let expected = try GbdtImport.readPredictions(Self.path(m.predictions))
        #expect(expected.count == Self.rows.count)
        // The reference walk first, then the served kernel.
        #expect(try GbdtImport.check(forest, rows: Self.rows, expected: expected, file: m.predictions) <= GbdtImport.tolerance)

        var options = GbdtImportOptions()
        options.contextFeatures = 3
        let schema = try GbdtImport.schema(for: forest, options: options, file: m.file)
        let store = temporaryPath("gbdt-\(which)")
        defer { try? FileManager.default.removeItem(atPath: store) }
        let env = try StoreEnvironment.open(path: store, configuration: StoreConfiguration(mapSize: 256 << 20, create: true))
        try GbdtImport.publish(forest, schema: schema, golden: GbdtImport.goldenCases(forest, schema: schema, rows: []),
                               model: "m", catalog: Catalog(environment: env))
        let model = try Self.registry.load(LoadedVersion(environment: env, model: "m"))

        // One request per "context": rows grouped in batches of 200 that share their first three features.
        var worst = 0.0
        var start = 0
        while start < Self.rows.count {
            let batch = Self.rows[start..<min(start + 200, Self.rows.count)]
            let context = Array(batch.first!.prefix(3))
            let candidates = batch.flatMap { $0.dropFirst(3) }
            let served = try model.score(context: context, candidates: candidates, candidateCount: batch.count).scores
            for (k, row) in batch.enumerated() {
                // The library's prediction for the row as the request sends it (the batch's context).
                let sent = context + Array(row.dropFirst(3))
                let want = sent == row ? expected[start + k] : forest.predict(sent)
                let d = abs(Double(served[k]) - want)
                worst = max(worst, d)
                if d > GbdtImport.tolerance { Issue.record("row \(start + k): served \(served[k]), expected \(want)"); return }
            }
            start += batch.count
        }
        // Whole rows, context included, against the library directly.
        let whole = try model.score(context: [], candidates: [], candidateCount: 0)
        #expect(whole.scores.isEmpty)
        var options0 = GbdtImportOptions()
        options0.contextFeatures = 0
        let schema0 = try GbdtImport.schema(for: forest, options: options0, file: m.file)
        try GbdtImport.publish(forest, schema: schema0, golden: GbdtImport.goldenCases(forest, schema: schema0, rows: Array(Self.rows.prefix(16))),
                               model: "whole", catalog: Catalog(environment: env))
        let wholeModel = try Self.registry.load(LoadedVersion(environment: env, model: "whole"))
        let served = try wholeModel.score(context: [], candidates: Self.rows.flatMap { $0 }, candidateCount: Self.rows.count).scores
        for i in 0..<Self.rows.count {
            let d = abs(Double(served[i]) - expected[i])
            worst = max(worst, d)
            if d > GbdtImport.tolerance { Issue.record("row \(i): served \(served[i]), library \(expected[i])"); return }
        }
        print("\(m.file): \(forest.trees.count) trees, depth \(forest.maxDepth), largest difference from the library \(worst)")
    }

    /// Both layouts give the reference's numbers: a forest deeper than the perfect layout's limit uses the
    /// general one.
    @Test func bothLayoutsAgreeWithTheReference() throws {
        // A chain 14 splits deep on feature 0 (node 2k splits; its left child is a leaf, its right the next
        // split), and a small balanced tree on features 1 and 2.
        var nodes: [ImportedForest.Node] = []
        for k in 0..<14 {
            nodes.append(.split(feature: 0, threshold: Float(k), missingRight: k % 2 == 0, left: 2 * k + 1, right: 2 * k + 2))
            nodes.append(.leaf(Float(k) * 0.1))
        }
        nodes.append(.leaf(-1))
        let small = ImportedForest.Tree(nodes: [
            .split(feature: 1, threshold: 0.5, missingRight: true, left: 1, right: 2),
            .leaf(0.25),
            .split(feature: 2, threshold: -1, missingRight: false, left: 3, right: 4),
            .leaf(-0.5), .leaf(0.75),
        ])
        let deep = ImportedForest(trees: [ImportedForest.Tree(nodes: nodes), small, small], featureNames: ["a", "b", "c"],
                                  baseMargin: 0.1, transform: .logistic, sigmoidScale: 1, source: "test")
        let shallow = ImportedForest(trees: [small, small, small, small, small], featureNames: ["a", "b", "c"],
                                     baseMargin: -0.2, transform: .identity, sigmoidScale: 1, source: "test")
        #expect(deep.layout().parameters[GbdtLayout.depthParameter] == 0)
        #expect(shallow.layout().parameters[GbdtLayout.depthParameter] == 2)
        var rng = SplitMix64(seed: 9)
        let rows: [[Float]] = (0..<500).map { _ in
            (0..<3).map { _ in rng.uniform() < 0.2 ? .nan : Float(Int(rng.next() % 32)) / 2 - 1 }
        }
        let store = temporaryPath("gbdt-layouts")
        defer { try? FileManager.default.removeItem(atPath: store) }
        let env = try StoreEnvironment.open(path: store, configuration: StoreConfiguration(mapSize: 64 << 20, create: true))
        for (name, forest) in [("deep", deep), ("shallow", shallow)] {
            var o = GbdtImportOptions()
            o.contextFeatures = 1
            let schema = try GbdtImport.schema(for: forest, options: o, file: name)
            try GbdtImport.publish(forest, schema: schema, golden: GbdtImport.goldenCases(forest, schema: schema, rows: []),
                                   model: name, catalog: Catalog(environment: env))
            let model = try Self.registry.load(LoadedVersion(environment: env, model: name))
            for row in rows {
                let served = try model.score(context: [row[0]], candidates: Array(row.dropFirst()), candidateCount: 1).scores[0]
                #expect(abs(Double(served) - forest.predict(row)) < 1e-6, "\(name) \(row)")
            }
        }
    }

    /// LightGBM's `x <= t` (t a double) becomes `x < t'` exactly, for floats on, just below and just above t.
    @Test func lightGBMThresholdsAreExactAtTheBoundary() throws {
        let forest = try ImportedForest.read(.lightgbmText, file: Self.path("lightgbm-binary.txt"))
        let text = try String(contentsOfFile: Self.path("lightgbm-binary.txt"), encoding: .utf8)
        let line = try #require(text.split(separator: "\n").first { $0.hasPrefix("threshold=") })
        let t = try #require(Double(line.dropFirst("threshold=".count).split(separator: " ")[0]))
        guard case .split(_, let strict, _, _, _) = forest.trees[0].nodes[0] else { Issue.record("tree 0 has no root split"); return }
        for x in [Float(t), Float(t).nextDown, Float(t).nextUp, Float(t).nextDown.nextDown] {
            #expect((Double(x) <= t) == (x < strict), "x = \(x), t = \(t)")
        }
    }
}
