import ArbiterModels
import ArbiterStore
import ArbiterTraining
import ArbiterTestSupport
import Foundation
import LeadGrading
import Testing

@Suite struct LeadGradingTests {
    static let trained: TrainedLeadModel = {
        var o = FMTrainingOptions()
        o.maxEpochs = 6
        return try! LeadGradingTrainer.train(rows: LeadData.generate(rows: 6000, seed: 21), options: o)
    }()

    @Test func trainingLearnsThePlantedStructure() {
        let m = Self.trained
        #expect(m.metrics.map(\.stage) == ["contact", "interview", "hire"])
        for s in m.metrics { #expect(s.auc > 0.6, "\(s.stage) AUC \(s.auc) is no better than chance") }
        #expect(m.thresholds[0] > m.thresholds[1] && m.thresholds[1] > m.thresholds[2])
        #expect(!m.golden.isEmpty)
    }

    /// The thresholds are the held-out quantiles of p_hire for grade shares 10/20/30/40%, so fresh leads
    /// from the same distribution, each scored with its own job posting, fall into the grades in about
    /// those shares.
    @Test func gradesFollowTheHeldOutQuantiles() {
        let m = Self.trained
        let rows = LeadData.generate(rows: 6000, seed: 99)
        var counts = [0, 0, 0, 0]
        for row in rows {
            let r = LeadGradingTrainer.score(m, context: row.context, candidates: row.candidate, count: 1)
            counts[Int(r.codes[0])] += 1
            #expect(r.floats[0] >= r.floats[1] && r.floats[1] >= r.floats[2], "chained probabilities must not increase")
            #expect(r.scores[0] == r.floats[2])
        }
        let shares = counts.map { Double($0) / Double(rows.count) }
        for (share, target) in zip(shares, [0.10, 0.20, 0.30, 0.40]) {
            #expect(abs(share - target) < 0.03, "grade shares \(shares), expected about 10/20/30/40%")
        }
    }

    /// The served arithmetic against a reference written from the FM's pairwise definition, on fixed
    /// parameters (not trained ones), through the store and the registry like any version.
    @Test func servedScoresMatchAnIndependentReferenceOnFixedParameters() throws {
        let schema = LeadGradingLayout.defaultSchema
        let fields = schema.context + schema.candidate
        let d = fields.reduce(0) { $0 + ($1.kind == .categorical ? $1.cardinality : 1) }
        let k = 3
        // Fixed parameters from a small deterministic generator, spread over [-0.5, 0.5).
        var state: UInt64 = 0x9E37_79B9_7F4A_7C15
        func next() -> Float {
            state = state &* 6364136223846793005 &+ 1442695040888963407
            return Float(state >> 40) / Float(1 << 24) - 0.5
        }
        var stages: [ReferenceLeadGrading.Stage] = []
        for _ in 0..<3 {
            stages.append(.init(bias: next() - 1, linear: (0..<d).map { _ in next() }, factors: (0..<(d * k)).map { _ in next() }))
        }
        // Means and inverse standard deviations: (0, 1) for categorical fields.
        let numeric: [String: (Float, Float)] = ["job_salary": (4000, 1 / 1500), "distance_km": (12, 0.1), "salary_gap": (0, 2),
                                                 "activity": (10, 0.2), "experience_years": (5, 0.25)]
        let norm = fields.flatMap { f -> [Float] in f.kind == .categorical ? [0, 1] : [numeric[f.name]!.0, numeric[f.name]!.1] }
        let thresholds: [Float] = [0.05, 0.03, 0.015]
        let reference = ReferenceLeadGrading(schema: schema, norm: norm, stages: stages, k: k, thresholds: thresholds)

        func lead(_ i: Int) -> (context: [Float], candidate: [Float]) {
            ([Float(i % 8), 2500 + Float(i * 37 % 4000)],
             [Float(i % 5), Float(i * 7 % 12), Float(i % 40) * 0.75, Float(i % 9) * 0.05 - 0.2, Float(i % 25), Float(i % 15)])
        }
        // Golden cases recorded from the reference: the version only loads if serving reproduces them.
        let golden = (0..<4).map { i -> GoldenCase in
            let l = lead(i)
            let r = reference.score(context: l.context, candidate: l.candidate)
            return GoldenCase(context: l.context, candidates: l.candidate, candidateCount: 1, scores: [Float(r.pHire)],
                              floatColumns: [Float(r.pContact), Float(r.pInterview), Float(r.pHire)], codeColumns: [r.grade])
        }
        let manifest = ModelManifest(kind: "lead-grading", schema: schema, parameters: ["factors": Double(k)], golden: golden)
        var tensors = [TensorData(name: "norm", shape: [fields.count, 2], values: norm),
                       TensorData(name: "thresholds", shape: [3], values: thresholds)]
        for (s, name) in ["contact", "interview", "hire"].enumerated() {
            tensors += [TensorData(name: "\(name).bias", shape: [1], values: [stages[s].bias]),
                        TensorData(name: "\(name).linear", shape: [d], values: stages[s].linear),
                        TensorData(name: "\(name).factors", shape: [d, k], values: stages[s].factors)]
        }
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("arbiter-lg-fixed-\(UUID())").path
        defer { try? FileManager.default.removeItem(atPath: path) }
        let env = try StoreEnvironment.open(path: path, configuration: StoreConfiguration(mapSize: 16 << 20, create: true))
        try Catalog(environment: env).publish(model: "fixed", kind: "lead-grading", manifest: manifest.encoded(), tensors: tensors, metrics: [:])
        var registry = ModelRegistry()
        registry.register(kind: LeadGradingLayout.kind, factory: LeadGradingModel.factory)
        let model = try registry.load(LoadedVersion(environment: env, model: "fixed"))

        // 300 leads under one posting (the server's batched path), and each under its own.
        var grades = Set<UInt8>()
        let batch = (0..<300).map(lead)
        let served = try model.score(context: batch[0].context, candidates: batch.flatMap(\.candidate), candidateCount: 300)
        for i in 0..<300 {
            let want = reference.score(context: batch[0].context, candidate: batch[i].candidate)
            #expect(abs(Double(served.floatColumns[i]) - want.pContact) < 1e-5)
            #expect(abs(Double(served.floatColumns[300 + i]) - want.pInterview) < 1e-5)
            #expect(abs(Double(served.floatColumns[600 + i]) - want.pHire) < 1e-5)
            #expect(served.scores[i] == served.floatColumns[600 + i])
            if !reference.nearThreshold(want.pHire) { #expect(served.codeColumns[i] == want.grade) }
            let alone = try model.score(context: batch[i].context, candidates: batch[i].candidate, candidateCount: 1)
            let wantAlone = reference.score(context: batch[i].context, candidate: batch[i].candidate)
            #expect(abs(Double(alone.scores[0]) - wantAlone.pHire) < 1e-5)
            grades.insert(wantAlone.grade)
        }
        #expect(grades.count == 4, "the fixed parameters should exercise every grade, got \(grades.sorted())")
    }

    @Test func publishedVersionLoadsValidatesAndScoresLikeTheTrainer() throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("arbiter-lg-\(UUID())").path
        defer { try? FileManager.default.removeItem(atPath: path) }
        let env = try StoreEnvironment.open(path: path, configuration: StoreConfiguration(mapSize: 1 << 30, create: true))
        let v = try LeadGradingTrainer.publish(Self.trained, model: "leads", catalog: Catalog(environment: env))
        var registry = ModelRegistry()
        registry.register(kind: LeadGradingLayout.kind, factory: LeadGradingModel.factory)
        let model = try registry.load(LoadedVersion(environment: env, model: "leads"))
        #expect(model.version.version == v)
        let g = Self.trained.golden[0]
        let served = try model.score(context: g.context, candidates: g.candidates, candidateCount: g.candidateCount)
        #expect(served.scores == g.scores)
        #expect(served.codeColumns == g.codeColumns)
        let m = try ModelManifest.decode(model.version.manifest)
        #expect(m.schema == LeadGradingLayout.defaultSchema)
    }

    @Test func aManifestOfAnUnknownKindIsRefused() throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("arbiter-kind-\(UUID())").path
        defer { try? FileManager.default.removeItem(atPath: path) }
        let env = try StoreEnvironment.open(path: path, configuration: StoreConfiguration(mapSize: 1 << 30, create: true))
        let manifest = ModelManifest(kind: "mystery", schema: LeadGradingLayout.defaultSchema, parameters: [:], golden: [])
        try Catalog(environment: env).publish(model: "x", kind: "mystery", manifest: manifest.encoded(), tensors: [], metrics: [:])
        var registry = ModelRegistry()
        registry.register(kind: LeadGradingLayout.kind, factory: LeadGradingModel.factory)
        #expect(throws: ModelError.unknownKind("mystery", known: ["lead-grading"])) {
            try registry.load(LoadedVersion(environment: env, model: "x"))
        }
    }

    /// A store written by the build before typed tensors (store format 1) loads, validates its golden
    /// cases against today's serving code, and adopts the map size it recorded.
    @Test func aStoreWrittenByTheEarlierFormatStillLoadsAndValidates() throws {
        let fixture = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Fixtures/format1-store/data.mdb")
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("arbiter-format1-\(UUID())").path
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: path) }
        try FileManager.default.copyItem(atPath: fixture.path, toPath: path + "/data.mdb")
        let env = try StoreEnvironment.open(path: path)
        #expect(env.mapSize == 1 << 30)
        let version = try LoadedVersion(environment: env, model: "leads")
        #expect(version.meta.format == 1)
        var registry = ModelRegistry()
        registry.register(kind: LeadGradingLayout.kind, factory: LeadGradingModel.factory)
        let model = try registry.load(version)
        let reference = try ReferenceLeadGrading(version: version)
        let g = try #require(model.manifest.golden.first)
        let r = reference.score(context: g.context, candidate: Array(g.candidates.prefix(6)))
        #expect(abs(Double(g.scores[0]) - r.pHire) < 1e-5)
    }
}
