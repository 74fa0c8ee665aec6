import ArbiterClient
import ArbiterModels
import ArbiterServer
import ArbiterStore
import ArbiterTraining
import Foundation
import Testing

/// A trainer killed with SIGKILL at any instant leaves the store as it was: it opens, lists the earlier
/// versions, every listed version validates, the server serves the active one, and Debian's mdb_stat
/// reads it.
@Suite struct CrashSafetyTests {
    static var binDir: URL {
        URL(fileURLWithPath: (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0])
            .deletingLastPathComponent()
    }

    static func run(_ args: [String]) throws -> Process {
        let p = Process()
        p.executableURL = binDir.appendingPathComponent("arbiter-train")
        p.arguments = args
        p.standardOutput = FileHandle.nullDevice
        p.standardError = FileHandle.nullDevice
        try p.run()
        return p
    }

    @Test func killedPublishesLeaveTheStoreIntact() async throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("arbiter-kill-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let store = dir.appendingPathComponent("store").path
        let csv = dir.appendingPathComponent("leads.csv").path
        try LeadData.writeCSV(LeadData.generate(rows: 6000, seed: 5), to: URL(fileURLWithPath: csv))
        let train = ["train", "--kind", "lead-grading", "--data", csv, "--store", store, "--model", "leads",
                     "--max-epochs", "3", "--map-size-gib", "1"]

        // One complete run: the first version, and how long a run takes.
        let clock = ContinuousClock()
        let start = clock.now
        let first = try Self.run(train)
        first.waitUntilExit()
        #expect(first.terminationStatus == 0)
        let full = clock.now - start

        var rng = SystemRandomNumberGenerator()
        let kills = 8
        for i in 0..<kills {
            // Spread the kill points over the whole run, the last ones near its end (the publish).
            let fraction = (Double(i) + Double.random(in: 0..<1, using: &rng)) / Double(kills)
            let p = try Self.run(train)
            try await Task.sleep(for: full * fraction)
            kill(p.processIdentifier, SIGKILL)
            p.waitUntilExit()

            let env = try StoreEnvironment.open(path: store, configuration: StoreConfiguration(mapSize: 1 << 30))
            let catalog = Catalog(environment: env)
            let versions = try catalog.versions(model: "leads")
            #expect(versions.count >= 1, "earlier versions must still be listed")
            #expect(versions.map(\.meta.version) == Array(1...UInt64(versions.count)), "versions are contiguous, none half-written")
            #expect(try catalog.generation() == UInt64(versions.count))
            for v in versions {
                _ = try BuiltinPlugins.registry().load(LoadedVersion(environment: env, model: "leads", version: v.meta.version))
            }
            let active = try #require(try catalog.activeVersion(model: "leads"))
            var config = Fixture.config(store: store)
            config.store = StoreConfiguration(mapSize: 1 << 30)
            try await Fixture.withServer(config) { _, port in
                let client = try await ArbiterClient.connect(port: port)
                #expect(try await client.score(Fixture.scoreRequest(n: 2)).version == active)
                try await client.close()
            }
        }

        // Still writable after all those deaths.
        let last = try Self.run(train)
        last.waitUntilExit()
        #expect(last.terminationStatus == 0)

        // Debian's lmdb-utils reads the environment.
        let stat = Process()
        stat.executableURL = URL(fileURLWithPath: "/usr/bin/mdb_stat")
        stat.arguments = ["-e", store]
        let out = Pipe()
        stat.standardOutput = out
        try stat.run()
        let text = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        stat.waitUntilExit()
        #expect(stat.terminationStatus == 0)
        #expect(text.contains("Environment Info"))
        #expect(text.contains("Entries:"))
    }
}
