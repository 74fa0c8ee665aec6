import ArbiterClient
import ArbiterModels
import ArbiterServer
import ArbiterStore
import ArbiterTestSupport
import ArbiterTraining
import ArbiterWire
import Foundation
import Ranking
import Testing

/// A ranking trained by `arbiter-train`, served, and asked for a user's best items over the wire: the
/// answer is the model's own order and numbers; a request without its subject is refused and the
/// connection carries on.
@Suite struct RankingServingTests {
    @Test func aTrainedRankingIsServedInItsOwnOrder() async throws {
        let dir = temporaryPath("ranking-serving")
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let csv = dir + "/impressions.csv", store = dir + "/store"
        _ = try await offPool {
            try OtherProcess.run(OtherProcess.trainer, ["gen-data", "--kind", "ranking", "--users", "300", "--items", "200",
                                                        "--per-user", "20", "--seed", "4", "--out", csv])
        }
        let trained = try await offPool {
            try OtherProcess.run(OtherProcess.trainer, ["train", "--kind", "ranking", "--data", csv, "--store", store, "--model", "feed",
                                                        "--max-epochs", "4", "--diversity-feature", "category", "--diversity-max", "1"])
        }
        #expect(trained.contains("published feed v1"), "\(trained)")
        let rows = try RankingData.readCSV(URL(fileURLWithPath: csv))
        let user = rows[0].user
        let mine = rows.filter { $0.user == user }
        let env = try StoreEnvironment.open(path: store)
        let loaded = try LoadedVersion(environment: env, model: "feed")
        let reference = try RankingModel(version: loaded, manifest: ModelManifest.decode(loaded.manifest))
        #expect(reference.users.isMapped && reference.items.isMapped, "the embedding tables are views into the map")
        let want = try reference.score(context: mine[0].userFeatures, candidates: mine.flatMap(\.itemFeatures), candidateCount: mine.count,
                                       ids: mine.map(\.item), subject: user, topK: 6)

        try await Fixture.withServer(Fixture.config(store: store)) { _, port in
            let client = try await ArbiterClient.connect(port: port)
            let schema = try await client.modelInfo("feed")
            #expect(schema.kind == "ranking")
            #expect(schema.outputs.map(\.name) == RankingTrainer.headNames + ["dot", "rank_before"])
            var request = ScoreRequest(model: "feed", topK: 6, subject: user, context: mine[0].userFeatures, candidateIDs: mine.map(\.item),
                                       candidateFeatureCount: 3, candidateFeatures: mine.flatMap(\.itemFeatures))
            let r = try await client.score(request)
            #expect(r.sorted)
            #expect(r.ids == want.rows.map { mine[$0].item })
            #expect(r.scores == want.rows.map { want.scores[$0] })
            // One item per category in the answer (the version's diversity rule), when the user saw enough categories.
            let categories = want.rows.map { mine[$0].itemFeatures[0] }
            if Set(mine.map { $0.itemFeatures[0] }).count >= 6 { #expect(Set(categories).count == categories.count) }
            guard case .float32(let ranks) = r.columns.last?.values else { Issue.record("no rank_before column"); return }
            #expect(ranks == want.rows.map { want.floatColumns[(schema.outputs.count - 1) * mine.count + $0] })

            request.subject = nil
            await #expect {
                _ = try await client.score(request)
            } throws: { error in
                guard case ClientError.server(let status, let message) = error else { return false }
                return status == .invalidRequest && message.contains("SUBJECT")
            }
            // The connection carries on.
            request.subject = 0
            #expect(try await client.score(request).ids.count == 6)
            try await client.close()
        }
    }
}
