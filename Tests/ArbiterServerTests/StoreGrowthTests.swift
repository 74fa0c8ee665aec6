import ArbiterClient
import ArbiterServer
import ArbiterStore
import ArbiterTestSupport
import ArbiterTraining
import ArbiterWire
import Foundation
import Testing

/// The crash from the soundness review, end to end: a server maps the store, another process raises the
/// map size and commits more than the server's map holds, then publishes a version. The server used to
/// remap under its loaded versions and crash on the next SCORE; now it keeps serving what it loaded,
/// reports the problem, and a restart serves the new version.
@Suite struct StoreGrowthTests {
    static let mib = 1 << 20

    @Test func aStoreThatOutgrowsTheServersMapKeepsServingAndARestartLoadsTheNewVersion() async throws {
        let dir = temporaryPath("growth")
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let store = dir + "/store"
        let csv = dir + "/leads.csv"
        try LeadData.writeCSV(LeadData.generate(rows: 1500, seed: 8), to: URL(fileURLWithPath: csv))
        // The first version, in a store created with a 32 MiB map (small, so that outgrowing it is quick).
        do {
            let env = try StoreEnvironment.open(path: store, configuration: StoreConfiguration(mapSize: 32 * Self.mib, create: true))
            var o = FMTrainingOptions()
            o.maxEpochs = 2
            let trained = try LeadGradingTrainer.train(rows: LeadData.generate(rows: 1500, seed: 8), options: o)
            try LeadGradingTrainer.publish(trained, model: "leads", catalog: Catalog(environment: env))
        }
        let request = Fixture.scoreRequest(n: 5)
        var config = Fixture.config(store: store)
        config.store = StoreConfiguration()  // the store's own recorded size

        var before: ScoreResult?
        do {
            let server = try ArbiterServer(configuration: config, registry: Fixture.registry)
            try await server.start()
            let client = try await ArbiterClient.connect(port: server.port!)
            let first = try await client.score(request)
            #expect(first.version == 1)
            before = first

            // Another process grows the store past this server's map, with a larger map.
            let env = try StoreEnvironment.open(path: store)
            let serverMap = env.mapSize
            #expect(serverMap == 32 * Self.mib)
            try OtherProcess.grow(store: store, mapSize: 96 * Self.mib, mebibytes: 40)
            try await expectOutgrownAndStillServing(server, client, request, first)
            #expect(env.mapSize == serverMap)

            // It then publishes v2: still nothing moves until a restart.
            try OtherProcess.run(OtherProcess.trainer, ["train", "--kind", "lead-grading", "--data", csv, "--store", store,
                                                        "--model", "leads", "--max-epochs", "2", "--seed", "2"])
            try await expectOutgrownAndStillServing(server, client, request, first)
            #expect(env.mapSize == serverMap)
            try await client.close()
            try await server.shutdown()
        }

        // A restart (here: a new server once the old one's versions are released) maps the grown store and
        // serves v2.
        try await Fixture.withServer(config) { _, port in
            let client = try await ArbiterClient.connect(port: port)
            let r = try await client.score(request)
            #expect(r.version == 2)
            #expect(r.ids == before?.ids)
            try await client.close()
        }
        #expect(try StoreEnvironment.open(path: store).mapSize == 96 * Self.mib)
    }

    /// A reload reports why it cannot read the store and what to do, and scoring goes on from v1 with the
    /// very same numbers (the old code remapped here, and the next SCORE read unmapped memory).
    func expectOutgrownAndStillServing(_ server: ArbiterServer, _ client: ArbiterClient, _ request: ScoreRequest,
                                       _ first: ScoreResult) async throws {
        do {
            try await server.reload()
            Issue.record("reload succeeded although the store outgrew the server's map")
        } catch let e as StoreError {
            guard case .mapOutgrown = e else { Issue.record("expected mapOutgrown, got \(e)"); throw e }
            #expect("\(e)".contains("restart"))
        }
        for _ in 0..<20 {
            let r = try await client.score(request)
            #expect(r.version == 1)
            #expect(r.scores == first.scores)
        }
    }
}
