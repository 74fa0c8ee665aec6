import ArbiterClient
import ArbiterServer
import ArbiterStore
import ArbiterTestSupport
import ArbiterTraining
import ArbiterWire
import Foundation
import Testing

/// A LightGBM model imported with `arbiter-train import`, served by the server, scored by the client with
/// missing values: the answers are LightGBM's own predictions.
@Suite struct GbdtServingTests {
    static let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("ArbiterTrainingTests/Fixtures/gbdt")

    @Test func anImportedModelIsServedWithTheLibrarysNumbers() async throws {
        let dir = temporaryPath("gbdt-serving")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let file = Self.fixtures.appendingPathComponent("lightgbm-binary.txt").path
        let rowsFile = Self.fixtures.appendingPathComponent("rows.csv").path
        let predictionsFile = Self.fixtures.appendingPathComponent("lightgbm-binary.predictions").path
        let out = try OtherProcess.run(OtherProcess.trainer, ["import", "--format", "lightgbm-text", "--file", file, "--store", dir,
                                                              "--model", "approvals", "--context-features", "2",
                                                              "--check-rows", rowsFile, "--check-predictions", predictionsFile])
        #expect(out.contains("checked 10000 rows"))
        let rows = try GbdtImport.readRows(rowsFile, featureCount: 12)
        let expected = try GbdtImport.readPredictions(predictionsFile)
        var config = Fixture.config(store: dir)
        config.limits = Limits(maxFrameBytes: 1 << 20, maxCandidates: 1_000, maxInFlight: 64)
        try await Fixture.withServer(config) { _, port in
            let client = try await ArbiterClient.connect(port: port)
            let schema = try await client.modelInfo("approvals")
            #expect(schema.kind == "gbdt")
            #expect(schema.contextFeatures.map(\.name) == ["x0", "x1"])
            #expect(schema.candidateFeatures.count == 10)
            #expect(schema.candidateFeatures.allSatisfy { $0.allowsMissing })
            // Requests of rows that share their context (the first two features, missing ones included).
            var sent = 0
            for (i, row) in rows.prefix(400).enumerated() {
                let r = try await client.score(ScoreRequest(model: "approvals", context: Array(row.prefix(2)), candidateIDs: [UInt64(i)],
                                                            candidateFeatureCount: 10, candidateFeatures: Array(row.dropFirst(2))))
                #expect(abs(Double(r.scores[0]) - expected[i]) <= 1e-5, "row \(i): served \(r.scores[0]), LightGBM \(expected[i])")
                sent += 1
            }
            #expect(sent == 400)
            try await client.close()
        }
    }
}
