import ArbiterClient
import ArbiterModels
@testable import ArbiterServer
import ArbiterStore
import ArbiterTestSupport
import ArbiterTraining
import ArbiterWire
import Foundation
import NIOConcurrencyHelpers
import Testing

/// Steady load over several connections while versions are published under it — 20 good ones, one whose
/// tensor bytes no longer match their checksums, one whose golden outputs do not match its parameters, and a
/// trainer SIGKILLed inside its publishing transaction: no request fails, the bad versions never serve,
/// every answer's scores are what the version it names computes, and no reader slot is leaked.
@Suite struct SwapUnderLoadTests {
    struct Answer: Sendable {
        let request: Int
        let version: UInt64
        let scores: [Float]
    }

    static func requests() -> [ScoreRequest] {
        (0..<4).map { k in
            ScoreRequest(model: "leads", routingKey: UInt64(k), context: [Float(k % 3), 3000 + 500 * Float(k)],
                         candidateIDs: (0..<8).map { UInt64(100 * k + $0) }, candidateFeatureCount: 6,
                         candidateFeatures: (0..<8).flatMap { Fixture.lead($0 + 5 * k) })
        }
    }

    @Test func publishesUnderLoadFailNoRequestAndBadVersionsNeverServe() async throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("arbiter-swap-load-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let store = dir.appendingPathComponent("store").path
        let csv = dir.appendingPathComponent("leads.csv").path
        try LeadData.writeCSV(LeadData.generate(rows: 2000, seed: 21), to: URL(fileURLWithPath: csv))

        // Two different models, published alternately, so that consecutive versions answer differently.
        var o = FMTrainingOptions()
        o.maxEpochs = 3
        let options = o
        let models = try await offPool {
            [try LeadGradingTrainer.train(rows: LeadData.generate(rows: 2000, seed: 31), options: options),
             try LeadGradingTrainer.train(rows: LeadData.generate(rows: 2000, seed: 32), options: options)]
        }
        let env = try StoreEnvironment.open(path: store, configuration: StoreConfiguration(mapSize: 1 << 30, create: true))
        let catalog = Catalog(environment: env)
        try LeadGradingTrainer.publish(models[0], model: "leads", catalog: catalog)

        var config = Fixture.config(store: store)
        config.pollIntervalMillis = 20
        config.retainedVersions = 2
        let server = try ArbiterServer(configuration: config, registry: Fixture.registry)
        try await server.start()
        let port = server.port!

        // The load: 4 connections, each a request at a time, until told to stop.
        let stop = NIOLockedValueBox(false)
        let requests = Self.requests()
        let loaders = (0..<4).map { c in
            Task { () -> (answers: [Answer], failures: [String]) in
                var answers: [Answer] = [], failures: [String] = []
                let client = try await ArbiterClient.connect(port: port)
                var i = c
                while !stop.withLockedValue({ $0 }) {
                    let k = i % requests.count
                    do {
                        let r = try await client.score(requests[k])
                        answers.append(Answer(request: k, version: r.version, scores: r.scores))
                    } catch {
                        failures.append("\(error)")
                    }
                    i += 1
                }
                try await client.close()
                return (answers, failures)
            }
        }

        var bad: Set<UInt64> = []
        var good: Set<UInt64> = [1]
        var killed = false
        for round in 1...20 {
            try await Task.sleep(for: .milliseconds(60))
            let v = try LeadGradingTrainer.publish(models[round % 2], model: "leads", catalog: catalog)
            good.insert(v)
            switch round {
            case 6:
                bad.insert(try Self.publishFlipped(from: v, catalog: catalog))
            case 11:
                bad.insert(try Self.publishMismatchedGolden(tensorsOf: v, goldenOf: v - 1, catalog: catalog))
            case 15:
                // A trainer killed while it holds the write transaction: nothing of its version is visible.
                killed = try await Self.killTrainerMidPublish(csv: csv, store: store)
            default:
                break
            }
            // A bad version is looked at by the server (at its poll) before the next publish supersedes it:
            // under the sanitizers a poll can come after the next publish, and the version is then never loaded.
            for b in bad {
                try await waitUntil("the server rejected v\(b)") { server.status().first?.rejected.contains { $0.version == b } ?? false }
            }
        }
        try await Task.sleep(for: .milliseconds(300))
        let latest = try #require(try catalog.deployment(model: "leads").latest)
        try await waitUntil("the server serves the newest good version") { server.served.first?.version == latest }
        stop.withLockedValue { $0 = true }
        var answers: [Answer] = [], failures: [String] = []
        for t in loaders {
            let (a, f) = try await t.value
            answers += a
            failures += f
        }

        #expect(killed, "the trainer was killed inside its transaction")
        #expect(failures.isEmpty, "\(failures.count) requests failed: \(failures.prefix(3))")
        #expect(answers.count > 200, "\(answers.count) answers")
        let served = Set(answers.map(\.version))
        #expect(served.isDisjoint(with: bad), "a bad version served: \(served.intersection(bad))")
        #expect(served.isSubset(of: good))
        #expect(served.count >= 5, "answers came from \(served.sorted())")
        print("swap under load: \(answers.count) answers from versions \(served.sorted()); bad versions \(bad.sorted()) never served; \(failures.count) failures")
        // Every answer is what the version it names computes (offline, from the store).
        for v in served.sorted() {
            let model = try Fixture.registry.load(LoadedVersion(environment: env, model: "leads", version: v))
            let expected = try requests.map { r in
                try model.score(context: r.context, candidates: r.candidateFeatures, candidateCount: r.candidateIDs.count).scores
            }
            for a in answers where a.version == v {
                #expect(a.scores == expected[a.request], "v\(v) request \(a.request)")
            }
        }
        // The bad versions are recorded as rejected, with why.
        server.waitForStoreRecords()
        let listing = try catalog.versions(model: "leads")
        for v in bad {
            let verdict = listing.first { $0.meta.version == v }?.validation
            #expect(verdict?.outcome == .rejected, "v\(v): \(String(describing: verdict))")
        }
        let status = try #require(await Self.status(port).first)
        #expect(Set(status.rejected.map(\.version)) == bad)

        // One reader slot per loaded version, no more: every version let go gave its slot back.
        try await waitUntil("the old versions' slots are given back") {
            server.readerSlotsHeld() == server.loadedVersions(of: "leads").count
        }
        #expect(server.loadedVersions(of: "leads").count == 3)
        try await server.shutdown()
        // Debian's mdb_stat: no reader slot of this process holds a snapshot of the store.
        // (mdb_stat -r exits 1 after printing the table: it takes fputs's count for an error code.)
        let readers = try OtherProcess.capture("/usr/bin/mdb_stat", ["-r", store]).output
        #expect(readers.contains("Reader Table Status"), "\(readers)")
        let mine = readers.split(separator: "\n").filter { line in
            let f = line.split(separator: " ")
            return f.count == 3 && f[0] == "\(getpid())" && f[2] != "-"
        }
        #expect(mine.isEmpty, "\(readers)")
    }

    static func status(_ port: Int) async throws -> [ModelStatus] {
        let client = try await ArbiterClient.connect(port: port)
        defer { Task { try? await client.close() } }
        return try await client.status(model: "leads")
    }

    /// A copy of `version` as a new active version whose first tensor has one byte flipped after its
    /// checksum was taken — as a disk fault or a bad copy would leave it. One write transaction, written as
    /// `Catalog.publish` writes, so a server sees it complete or not at all.
    static func publishFlipped(from version: UInt64, catalog: Catalog) throws -> UInt64 {
        let env = catalog.environment
        let source = try LoadedVersion(environment: env, model: "leads", version: version)
        var meta = try #require(try catalog.versions(model: "leads").first { $0.meta.version == version }?.meta)
        let first = try #require(meta.tensors.first?.name)
        // Every tensor under the new version's own keys (a published copy would share the source's).
        for i in meta.tensors.indices { meta.tensors[i].storedIn = nil }
        meta.format = VersionMeta.format(for: meta.tensors)
        return try env.write { txn in
            let v = (try txn.getUInt64(StoreKeys.latest("leads")) ?? 0) + 1
            for (name, t) in source.tensors {
                var bytes = Array(t.bytes)
                if name == first { bytes[bytes.count / 2] ^= 0x01 }
                try txn.put(StoreKeys.tensor("leads", v, name), bytes)
            }
            try txn.put(StoreKeys.manifest("leads", v), Array(source.manifest))
            meta.version = v
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys]
            try txn.put(StoreKeys.meta("leads", v), Array(try encoder.encode(meta)))
            try txn.put(StoreKeys.latest("leads"), uint64: v)
            try txn.put(StoreKeys.active("leads"), uint64: v)
            try txn.put(StoreKeys.generation, uint64: (try txn.getUInt64(StoreKeys.generation) ?? 0) + 1)
            return v
        }
    }

    /// A new active version with `tensorsOf`'s parameters and `goldenOf`'s manifest (its golden cases): every
    /// checksum holds, the golden outputs do not.
    static func publishMismatchedGolden(tensorsOf: UInt64, goldenOf: UInt64, catalog: Catalog) throws -> UInt64 {
        let env = catalog.environment
        let params = try LoadedVersion(environment: env, model: "leads", version: tensorsOf)
        let other = try LoadedVersion(environment: env, model: "leads", version: goldenOf)
        let tensors = params.tensors.map { name, t in
            TensorData(name: name, shape: t.shape, dtype: t.dtype, bytes: Array(t.bytes))
        }
        return try catalog.publish(model: "leads", kind: params.kind, manifest: Array(other.manifest), tensors: tensors, metrics: [:])
    }

    /// Runs `arbiter-train train`, which pauses inside its write transaction, and SIGKILLs it there.
    static func killTrainerMidPublish(csv: String, store: String) async throws -> Bool {
        let t = try CrashSafetyTests.Trainer(["train", "--kind", "lead-grading", "--data", csv, "--store", store, "--model", "leads",
                                              "--max-epochs", "2"], pauseInTransactionMillis: 10_000)
        return try await offPool { () -> Bool in
            let inside = t.waitForBlocking(CrashSafetyTests.insideMarker)
            usleep(UInt32.random(in: 0...20_000))
            t.killAndWait()
            return inside && t.wasKilled
        }
    }
}
