import ArbiterClient
import ArbiterModels
import ArbiterServer
import ArbiterStore
import ArbiterTestSupport
import ArbiterTraining
import ArbiterWire
import Foundation
import Routing
import Testing

/// A routing version trained by `arbiter-train` from generated data, served, and asked for an applicant's
/// lenders over the wire: the answer is the model's own order, reasons and arm; a channel code outside the
/// schema is refused by name; a version whose lender rules name a feature the schema lacks never serves.
@Suite struct RoutingServingTests {
    @Test func aTrainedRoutingIsServedAndABadTableNeverServes() async throws {
        let dir = temporaryPath("routing-serving")
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let csv = dir + "/submissions.csv", lenders = dir + "/lenders.csv", store = dir + "/store"
        _ = try await offPool {
            try OtherProcess.run(OtherProcess.trainer, ["gen-data", "--kind", "routing", "--applicants", "3000", "--lenders", "20",
                                                        "--seed", "4", "--out", csv, "--lenders-out", lenders])
        }
        let trained = try await offPool {
            try OtherProcess.run(OtherProcess.trainer, ["train", "--kind", "routing", "--data", csv, "--lenders", lenders, "--store", store,
                                                        "--model", "route", "--max-epochs", "4", "--share", "0.5", "--epsilon", "0.1"])
        }
        #expect(trained.contains("published route v1"), "\(trained)")
        let env = try StoreEnvironment.open(path: store)
        let loaded = try LoadedVersion(environment: env, model: "route")
        let reference = try RoutingModel(version: loaded, manifest: ModelManifest.decode(loaded.manifest))
        let table = try RoutingData.readLenders(URL(fileURLWithPath: lenders)).map(\.id).sorted()
        // Every lender, one with no capacity, and an id the table lacks.
        let ids = table + [1]
        let states: [Float] = ids.indices.flatMap { [Float($0 == 2 ? 0 : 30), 0.4] as [Float] }
        let applicant: [Float] = [2, 0, 3, 690, 4200, 6000, 5, 0.25]

        try await Fixture.withServer(Fixture.config(store: store)) { server, port in
            let client = try await ArbiterClient.connect(port: port)
            let schema = try await client.modelInfo("route")
            #expect(schema.kind == "routing")
            #expect(schema.outputs.map(\.name) == ["p_approve", "amount", "reason", "arm", "explored"])
            for (key, topK) in [(UInt64(11), UInt32(0)), (12, 3), (13, 3), (14, 5)] {
                let want = try reference.score(context: applicant, candidates: states, candidateCount: ids.count, ids: ids,
                                               routingKey: key, topK: Int(topK))
                let r = try await client.score(ScoreRequest(model: "route", routingKey: key, topK: topK, context: applicant,
                                                            candidateIDs: ids, candidateFeatureCount: 2, candidateFeatures: states))
                #expect(r.sorted)
                #expect(r.ids == want.rows.map { ids[$0] })
                #expect(r.scores == want.rows.map { want.scores[$0] })
                guard case .code(let reasons) = r.columns[2].values else { Issue.record("no reason column"); return }
                #expect(reasons == want.rows.map { want.codeColumns[$0] })
                let labels = r.columns[2].labels
                if topK > 0 {
                    #expect(reasons.allSatisfy { labels[Int($0)] == "eligible" })
                } else {
                    #expect(labels[Int(reasons[ids.count - 1])] == "unknown_lender" || reasons.contains { labels[Int($0)] == "unknown_lender" })
                    #expect(r.ids.contains(1) && r.ids.count == ids.count)
                }
            }
            // A channel code outside the schema (24 channels: 0...23) is refused by name; the connection carries on.
            var bad = applicant
            bad[0] = 24
            await #expect {
                _ = try await client.score(ScoreRequest(model: "route", routingKey: 1, context: bad, candidateIDs: ids,
                                                        candidateFeatureCount: 2, candidateFeatures: states))
            } throws: { error in
                guard case ClientError.server(let status, let message) = error else { return false }
                return status == .invalidFeature && message.contains("channel")
            }
            #expect(try await client.score(ScoreRequest(model: "route", routingKey: 1, topK: 2, context: applicant, candidateIDs: ids,
                                                        candidateFeatureCount: 2, candidateFeatures: states)).ids.count == 2)

            // v2's lender table has a rule on 'fico', which the schema lacks: refused at load; v1 keeps serving.
            var manifest = try ModelManifest.decode(loaded.manifest)
            let column = manifest.parameters.removeValue(forKey: "range.credit_score")!
            manifest.parameters["range.fico"] = column
            let tensors = loaded.tensors.values.map { TensorData(name: $0.name, shape: $0.shape, dtype: $0.dtype, bytes: Array($0.bytes)) }
            let catalog = Catalog(environment: env)
            try catalog.publish(model: "route", kind: RoutingLayout.kind, manifest: manifest.encoded(), tensors: tensors, metrics: [:])
            try await server.reload()
            #expect(try await client.score(ScoreRequest(model: "route", routingKey: 1, topK: 2, context: applicant, candidateIDs: ids,
                                                        candidateFeatureCount: 2, candidateFeatures: states)).version == 1)
            server.waitForStoreRecords()
            let rejection = try #require(try catalog.validation(model: "route", version: 2))
            #expect(rejection.outcome == .rejected)
            #expect(rejection.reason?.contains("'fico'") == true, "\(rejection.reason ?? "")")
            try await client.close()
        }
    }
}
