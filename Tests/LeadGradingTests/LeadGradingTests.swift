import ArbiterModels
import ArbiterStore
import ArbiterTraining
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

    @Test func gradesFollowTheHeldOutQuantiles() {
        let m = Self.trained
        let rows = LeadData.generate(rows: 4000, seed: 99)
        let r = LeadGradingTrainer.score(m, context: [3, 4000], candidates: rows.flatMap(\.candidate), count: rows.count)
        var counts = [0, 0, 0, 0]
        for g in r.codes { counts[Int(g)] += 1 }
        // Roughly 10/20/30/40 (the context is fixed here, so only loosely).
        #expect(counts.allSatisfy { $0 > 0 })
        for i in 0..<rows.count {
            #expect(r.floats[i] >= r.floats[rows.count + i] && r.floats[rows.count + i] >= r.floats[2 * rows.count + i])
            #expect(r.scores[i] == r.floats[2 * rows.count + i])
        }
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
        let served = model.score(context: g.context, candidates: g.candidates, candidateCount: g.candidateCount)
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
}
