import ArbiterClient
import ArbiterServer
import ArbiterStore
import ArbiterTestSupport
import ArbiterTraining
import Foundation
import Testing

/// Stores that are damaged, absent or not writable: each gets a clear error or is served as it allows,
/// never a signal and never a store created by mistake.
@Suite struct StoreFaultTests {
    /// A store at `path` with one trained lead-grading version (its environment closed again).
    static func makeStore(_ path: String, seed: UInt64 = 5) throws {
        let env = try StoreEnvironment.open(path: path, configuration: StoreConfiguration(mapSize: 64 << 20, create: true))
        var o = FMTrainingOptions()
        o.maxEpochs = 1
        let trained = try LeadGradingTrainer.train(rows: LeadData.generate(rows: 800, seed: seed), options: o)
        try LeadGradingTrainer.publish(trained, model: "leads", catalog: Catalog(environment: env))
    }

    static var arbiterd: String { OtherProcess.binDir.appendingPathComponent("arbiterd").path }

    @Test func aTruncatedStoreIsRefusedWithAMessageNotASignal() async throws {
        let dir = temporaryPath("truncated")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try Self.makeStore(dir)
        let data = dir + "/data.mdb"
        let size = try FileManager.default.attributesOfItem(atPath: data)[.size] as! Int
        let h = try FileHandle(forWritingTo: URL(fileURLWithPath: data))
        try h.truncate(atOffset: UInt64(size / 2))
        try h.close()

        #expect {
            try StoreEnvironment.open(path: dir)
        } throws: { error in
            guard case StoreError.corrupt(let why) = error else { return false }
            return why.contains("cut short") && why.contains("\(size / 2) bytes")
        }
        // The server, as an operator starts it: a message and exit status 1 (a signal would be 128 + n).
        let (status, output) = try await offPool { try OtherProcess.capture(Self.arbiterd, ["--store", dir, "--listen", "127.0.0.1:0"]) }
        #expect(status == 1, "\(output)")
        #expect(output.contains("cut short"), "\(output)")
    }

    @Test func aDirectoryWithoutAStoreIsRefusedUnlessCreateIsAskedFor() async throws {
        let dir = temporaryPath("empty")
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        #expect(throws: StoreError.missingStore(path: dir)) { try StoreEnvironment.open(path: dir) }
        let (status, output) = try await offPool { try OtherProcess.capture(Self.arbiterd, ["--store", dir, "--listen", "127.0.0.1:0"]) }
        #expect(status == 1, "\(output)")
        #expect(output.contains("no store at \(dir)") && output.contains("--create"), "\(output)")
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir).isEmpty, "nothing may be created without --create")

        // With create, the server starts on a new, empty store and waits for a publish.
        var config = Fixture.config(store: dir)
        config.store.create = true
        try await Fixture.withServer(config) { server, _ in
            #expect(server.served.isEmpty)
        }
        #expect(FileManager.default.fileExists(atPath: dir + "/data.mdb"))
    }

    @Test func aReadOnlyStoreIsServedAndNewVersionsArePickedUp() async throws {
        let dir = temporaryPath("readonly")
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let store = dir + "/store", csv = dir + "/leads.csv"
        try Self.makeStore(store)
        try LeadData.writeCSV(LeadData.generate(rows: 800, seed: 6), to: URL(fileURLWithPath: csv))

        var config = Fixture.config(store: store)
        config.store.readOnly = true
        try await Fixture.withServer(config) { server, port in
            let client = try await ArbiterClient.connect(port: port)
            #expect(try await client.score(Fixture.scoreRequest(n: 3)).version == 1)
            // This process's environment is the server's, read-only: writes are refused, nothing changes.
            let env = try StoreEnvironment.open(path: store)
            #expect(env.readOnly)
            #expect(throws: StoreError.readOnly(path: store)) { try Catalog(environment: env).activate(model: "leads", version: 1) }

            // A trainer (another process, with write access) publishes v2: the read-only server loads it.
            let trainer = OtherProcess.trainer
            _ = try await offPool {
                try OtherProcess.run(trainer, ["train", "--kind", "lead-grading", "--data", csv, "--store", store,
                                               "--model", "leads", "--max-epochs", "1", "--seed", "2"])
            }
            try await server.reload()
            #expect(try await client.score(Fixture.scoreRequest(n: 3)).version == 2)
            // A read-only server cannot record its verdict; it only logs it.
            server.waitForStoreRecords()
            #expect(try Catalog(environment: env).validation(model: "leads", version: 2) == nil)
            try await client.close()
        }
    }
}
