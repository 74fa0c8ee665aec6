import ArbiterClient
import ArbiterModels
@testable import ArbiterServer
import ArbiterStore
import ArbiterTestSupport
import ArbiterWire
import Foundation
import NIOCore
import Testing

/// Kind `scale`: context `c`, one candidate feature `x`; score = w·x + c with `w` the version's one-float
/// tensor, and a code column `grade` (0 when the score is at least 1, else 1). Each version's golden case
/// is what its `w` gives, unless a test records a wrong one.
final class ScaleModel: ScoringModel, Sendable {
    static let kind = "scale"
    static let schema = FeatureSchema(context: [.numeric("c")], candidate: [.numeric("x")],
                                      outputs: [OutputColumn(name: "grade", kind: .code, labels: ["hi", "lo"])])
    let version: LoadedVersion
    let manifest: ModelManifest
    let w: Float

    init(version: LoadedVersion, manifest: ModelManifest) throws {
        self.version = version
        self.manifest = manifest
        w = try version.tensor("w", shape: [1])[0]
    }

    func score(_ batch: ScoreBatch, into output: ScoreOutput) -> RowOrder {
        for i in 0..<batch.candidateCount {
            let s = w * batch.candidates[i] + batch.context[0]
            output.scores[i] = s
            output.codeColumns[i] = s >= 1 ? 0 : 1
        }
        return .requestOrder
    }

    static func expected(w: Float, c: Float, x: Float) -> (score: Float, grade: UInt8) {
        let s = w * x + c
        return (s, s >= 1 ? 0 : 1)
    }

    static var registry: ModelRegistry {
        var r = ModelRegistry()
        r.register(kind: kind) { v, m in try ScaleModel(version: v, manifest: m) }
        return r
    }

    /// Publishes a version with weight `w`; `goldenW` (default `w`) is what its golden case was computed with.
    @discardableResult
    /// `table`: also a 20 MiB tensor `table` (unused by scoring, loaded and checked as any) filled from that seed.
    static func publish(_ catalog: Catalog, model: String = "scale", w: Float, goldenW: Float? = nil, activate: Bool = true,
                        table: Float? = nil) throws -> UInt64 {
        let g = goldenW ?? w
        let xs: [Float] = [0.5, 2]
        let golden = GoldenCase(context: [0.25], candidates: xs, candidateCount: 2,
                                scores: xs.map { expected(w: g, c: 0.25, x: $0).score }, floatColumns: [],
                                codeColumns: xs.map { expected(w: g, c: 0.25, x: $0).grade })
        let manifest = ModelManifest(kind: kind, schema: schema, parameters: [:], golden: [golden])
        return try catalog.publish(model: model, kind: kind, manifest: manifest.encoded(),
                                   tensors: [TensorData(name: "w", shape: [1], values: [w])]
                                       + (table.map { t in [TensorData(name: "table", shape: [tableCount], values: (0..<tableCount).map { Float($0 % 1013) + t })] } ?? []),
                                   metrics: [:], activate: activate)
    }

    static let tableCount = 5 << 20

    static func request(key: UInt64, version: UInt64 = 0, xs: [Float] = [0.5, 1, 2], c: Float = 0.25) -> ScoreRequest {
        ScoreRequest(model: "scale", version: version, routingKey: key, context: [c], candidateIDs: xs.indices.map { UInt64($0) },
                     candidateFeatureCount: 1, candidateFeatures: xs)
    }
}

/// Retained versions and pins, splits, promotion, rejected versions, RELOAD, shadow scoring, and the old
/// snapshot's release — through a real server and store.
@Suite struct HotSwapTests {
    struct Setup {
        let path: String
        let environment: StoreEnvironment
        var catalog: Catalog { Catalog(environment: environment) }
        var config: ServerConfiguration {
            var c = Fixture.config(store: path)
            c.offloadCandidates = 0
            return c
        }
    }

    static func setup(_ tag: String) throws -> Setup {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("arbiter-swap-\(tag)-\(getpid())").path
        try? FileManager.default.removeItem(atPath: path)
        let env = try StoreEnvironment.open(path: path, configuration: StoreConfiguration(mapSize: 1 << 30, create: true))
        return Setup(path: path, environment: env)
    }

    static func withServer<T>(_ config: ServerConfiguration, _ body: (ArbiterServer, ArbiterClient) async throws -> T) async throws -> T {
        let server = try ArbiterServer(configuration: config, registry: ScaleModel.registry)
        try await server.start()
        do {
            let client = try await ArbiterClient.connect(host: "127.0.0.1", port: server.port!)
            let r = try await body(server, client)
            try await client.close()
            try await server.shutdown()
            return r
        } catch {
            try? await server.shutdown()
            throw error
        }
    }

    static func wireError(_ body: () async throws -> Void) async -> (status: Status, message: String)? {
        do {
            try await body()
            return nil
        } catch let ClientError.server(status, message) {
            return (status, message)
        } catch {
            Issue.record("unexpected error \(error)")
            return nil
        }
    }

    @Test func anyRetainedVersionMayBePinnedAndTheOthersAreNamed() async throws {
        let s = try Self.setup("pins")
        defer { try? FileManager.default.removeItem(atPath: s.path) }
        for i in 1...5 { try ScaleModel.publish(s.catalog, w: Float(i)) }
        try await Self.withServer(s.config) { server, client in
            // Start-up loads the active version only; the retained ones follow at once.
            try await waitUntil("v3 and v4 are retained") { server.loadedVersions(of: "scale") == [3, 4, 5] }
            for v: UInt64 in [0, 3, 4, 5] {
                let r = try await client.score(ScaleModel.request(key: 1, version: v))
                let w = Float(v == 0 ? 5 : v)
                #expect(r.version == (v == 0 ? 5 : v))
                #expect(r.scores == [0.5, 1, 2].map { ScaleModel.expected(w: w, c: 0.25, x: $0).score })
            }
            let old = await Self.wireError { _ = try await client.score(ScaleModel.request(key: 1, version: 2)) }
            #expect(old?.status == .unknownVersion)
            #expect(old?.message.contains("version 2 of 'scale' is not retained by this server; it has 3, 4, 5 loaded (5 active)") == true, "\(old?.message ?? "")")
            let never = await Self.wireError { _ = try await client.score(ScaleModel.request(key: 1, version: 9)) }
            #expect(never?.message.contains("has no version 9 (the newest is 5)") == true, "\(never?.message ?? "")")
            // MODEL_INFO pins the same way.
            #expect(try await client.modelInfo("scale", version: 3).version == 3)
            // The store knows what is retained, so gc keeps it.
            server.waitForStoreRecords()
            #expect(try s.catalog.deployment(model: "scale").retained?.versions == [3, 4, 5])
            #expect(try s.catalog.gc(model: "scale", keep: 0).kept == [3, 4, 5])
            // A new version: the oldest retained one is let go, and RELOAD says so.
            try ScaleModel.publish(s.catalog, w: 6)
            let report = try await client.reload()
            #expect(report.events.contains(ReloadEvent(model: "scale", version: 6, outcome: .loaded, detail: "validated")))
            #expect(report.events.contains { $0.version == 3 && $0.outcome == .unloaded })
            #expect(report.generation == (try s.catalog.generation()))
            #expect(server.loadedVersions(of: "scale") == [4, 5, 6])
        }
    }

    /// A retrained head beside an unchanged table: the store holds the table once, the server does not read it
    /// again, and its pages stay mapped through the swap (the old version lets go, the new one holds them); a
    /// new table is read in full, and the old one's pages are given back when nothing holds them.
    @Test func aTableSharedByTheNextVersionIsNeitherReadAgainNorUnmappedAtTheSwap() async throws {
        let s = try Self.setup("shared")
        defer { try? FileManager.default.removeItem(atPath: s.path) }
        try ScaleModel.publish(s.catalog, w: 1, table: 3)
        var config = s.config
        config.retainedVersions = 1   // v1 stays loaded for pins after the swap, without its hold on the table
        try await Self.withServer(config) { server, client in
            func active() throws -> LoadedVersion { try #require(server.state.table.models["scale"]).active.model.version }
            let tableBytes = ScaleModel.tableCount * 4
            // (The test keeps no version alive: only the address, to look at the mapping.)
            let pointer = try { () throws -> UnsafePointer<Float> in
                let first = try active()
                #expect(first.sharedBytes == 0)
                return try first.tensor("table", shape: [ScaleModel.tableCount]).pointer
            }()
            #expect(ProcessMemory.mappedBytes(pointer, count: tableBytes) >= tableBytes - 8192)

            let populatedBefore = s.environment.prefaultedBytes
            try ScaleModel.publish(s.catalog, w: 2, table: 3)
            var report = try await client.reload()
            // The table v2 shares was not walked in again (the new version takes its hold before the old lets go).
            #expect(s.environment.prefaultedBytes == populatedBefore, "\(s.environment.prefaultedBytes - populatedBefore) bytes pre-faulted again")
            #expect(report.events.contains(ReloadEvent(model: "scale", version: 2, outcome: .loaded, detail: "validated")))
            #expect(!report.events.contains { $0.outcome == .unloaded }, "v1 stays loaded for pins")
            #expect(server.loadedVersions(of: "scale") == [1, 2])
            try { () throws in
                let second = try active()
                #expect(second.version == 2 && second.sharedBytes == ScaleModel.tableCount * 4, "\(second.sharedBytes)")
                #expect(try second.tensor("table", shape: [ScaleModel.tableCount]).pointer == pointer)
            }()
            #expect(try await client.score(ScaleModel.request(key: 1)).version == 2)
            // v1 no longer serves and lets go of its hold; the table it shares stays mapped for v2.
            #expect(ProcessMemory.mappedBytes(pointer, count: tableBytes) >= tableBytes - 8192, "the shared table stays mapped through the swap")

            // A new table: read in full; v1 is unloaded and v2, kept for pins, lets go of its hold: nothing holds
            // the old table and its pages go back.
            try ScaleModel.publish(s.catalog, w: 3, table: 4)
            report = try await client.reload()
            #expect(report.events.contains { $0.version == 1 && $0.outcome == .unloaded })
            #expect(s.environment.prefaultedBytes > populatedBefore, "the new table is mapped ahead of requests")
            let newTable = try { () throws -> UnsafePointer<Float> in
                let third = try active()
                #expect(third.version == 3 && third.sharedBytes == 0)
                return try third.tensor("table", shape: [ScaleModel.tableCount]).pointer
            }()
            try await waitUntil("v1's snapshot is released") { server.readerSlotsHeld() == 2 }
            #expect(ProcessMemory.mappedBytes(pointer, count: tableBytes) < 1 << 20, "\(ProcessMemory.mappedBytes(pointer, count: tableBytes)) bytes of the old table")
            #expect(ProcessMemory.mappedBytes(newTable, count: tableBytes) >= tableBytes - 8192)
        }
    }

    @Test func aSplitIsStickyByRoutingKeyAndPromoteEndsIt() async throws {
        let s = try Self.setup("split")
        defer { try? FileManager.default.removeItem(atPath: s.path) }
        try ScaleModel.publish(s.catalog, w: 1)
        try ScaleModel.publish(s.catalog, w: 2, activate: false)
        var config = s.config
        config.retainedVersions = 0
        try await Self.withServer(config) { server, client in
            let split = try TrafficSplit(parsing: "1=0.9,2=0.1")
            try s.catalog.split(model: "scale", split)
            _ = try await client.reload()
            #expect(server.loadedVersions(of: "scale") == [1, 2], "both versions of the split are loaded with --retain 0")
            var onSmall = 0
            var seen: [UInt64: UInt64] = [:]
            for key in 0..<2000 as Range<UInt64> {
                let r = try await client.score(ScaleModel.request(key: key * 7919))
                let expected = split.shares[split.index(forKey: key * 7919, model: "scale")].version
                #expect(r.version == expected)
                #expect(r.scores[2] == ScaleModel.expected(w: Float(r.version), c: 0.25, x: 2).score, "the version named is the one that scored")
                if r.version == 2 { onSmall += 1 }
                if key < 50 { seen[key] = r.version }
            }
            #expect((140...260).contains(onSmall), "\(onSmall) of 2000 on the 10% side")
            for (key, v) in seen { #expect(try await client.score(ScaleModel.request(key: key * 7919)).version == v, "key \(key) stays") }
            // A pin still goes to the version named.
            #expect(try await client.score(ScaleModel.request(key: 5, version: 1)).version == 1)
            let status = try #require(try await client.status(model: "scale").first)
            #expect(status.versions == [VersionStatus(version: 1, roles: [.active, .split], splitWeight: 0.9),
                                        VersionStatus(version: 2, roles: [.split], splitWeight: 0.1)])
            try s.catalog.promote(model: "scale", version: 2)
            _ = try await client.reload()
            for key in 0..<50 as Range<UInt64> { #expect(try await client.score(ScaleModel.request(key: key * 7919)).version == 2) }
            #expect(server.loadedVersions(of: "scale") == [2])
        }
    }

    /// A version whose golden outputs do not match, and one whose tensor was changed after it was published,
    /// never serve; the active one keeps serving; the rejection is in MODEL_STATUS, RELOAD's answer and the store.
    @Test func rejectedVersionsNeverServeAndAreShown() async throws {
        let s = try Self.setup("rejected")
        defer { try? FileManager.default.removeItem(atPath: s.path) }
        try ScaleModel.publish(s.catalog, w: 1)
        try await Self.withServer(s.config) { server, client in
            try ScaleModel.publish(s.catalog, w: 2, goldenW: 3)
            var report = try await client.reload()
            let golden = try #require(report.events.first { $0.version == 2 })
            #expect(golden.outcome == .rejected && golden.detail.contains("golden"), "\(golden)")
            #expect(try await client.score(ScaleModel.request(key: 1)).version == 1)

            let v3 = try ScaleModel.publish(s.catalog, w: 4)
            // A byte of its tensor flipped after the publish (a disk fault, a bad copy).
            try s.environment.write { txn in
                try txn.put(StoreKeys.tensor("scale", v3, "w"), withUnsafeBytes(of: Float(4.5)) { Array($0) })
            }
            report = try await client.reload()
            let flipped = try #require(report.events.first { $0.version == 3 })
            #expect(flipped.outcome == .rejected && flipped.detail.contains("checksum mismatch"), "\(flipped)")
            #expect(try await client.score(ScaleModel.request(key: 1)).version == 1)
            let pinned = await Self.wireError { _ = try await client.score(ScaleModel.request(key: 1, version: 3)) }
            #expect(pinned?.status == .unknownVersion)

            let status = try #require(try await client.status(model: "scale").first)
            #expect(status.active == 1 && status.latest == 3)
            #expect(status.rejected.map(\.version) == [2, 3])
            #expect(status.failure.contains("v3 failed validation"), "\(status.failure)")
            server.waitForStoreRecords()
            let listing = try s.catalog.versions(model: "scale")
            #expect(listing.map { $0.validation?.outcome } == [.passed, .rejected, .rejected])
            // Rejections are final: the next reload does not load them again.
            report = try await client.reload()
            #expect(report.events.isEmpty, "\(report.events)")
            #expect(server.served.first?.version == 1)
            let unknown = await Self.wireError { _ = try await client.status(model: "nope") }
            #expect(unknown?.status == .unknownModel)
        }
    }

    @Test func reloadIsForLoopbackAndAdmins() async throws {
        #expect(ConnectionHandlerProbe.isLoopback("127.0.0.1"))
        #expect(ConnectionHandlerProbe.isLoopback("127.3.2.1"))
        #expect(ConnectionHandlerProbe.isLoopback("::1"))
        #expect(!ConnectionHandlerProbe.isLoopback("10.0.0.7"))
        #expect(!ConnectionHandlerProbe.isLoopback("::2"))
        let s = try Self.setup("reload-rights")
        defer { try? FileManager.default.removeItem(atPath: s.path) }
        try ScaleModel.publish(s.catalog, w: 1)
        let scorer = TokenTable.newToken(), admin = TokenTable.newToken()
        let tokens = s.path + "/tokens"
        try "\(scorer.hashHex) score,info scorer\n\(admin.hashHex) admin ops\n".write(toFile: tokens, atomically: true, encoding: .utf8)
        var config = s.config
        config.tokenFile = tokens
        let server = try ArbiterServer(configuration: config, registry: ScaleModel.registry)
        try await server.start()
        defer { Task { try? await server.shutdown() } }
        let port = server.port!
        var cc = ClientConfiguration()
        cc.token = scorer.token
        let plain = try await ArbiterClient.connect(host: "127.0.0.1", port: port, configuration: cc)
        let refused = await Self.wireError { _ = try await plain.reload() }
        #expect(refused?.status == .forbidden)
        // MODEL_STATUS needs only the info right.
        #expect(try await plain.status().map(\.name) == ["scale"])
        try await plain.close()
        cc.token = admin.token
        let ops = try await ArbiterClient.connect(host: "127.0.0.1", port: port, configuration: cc)
        try ScaleModel.publish(s.catalog, w: 2)
        #expect(try await ops.reload().events.map(\.version) == [2])
        try await ops.close()
        try await server.shutdown()
    }

    /// The shadow of a copy of the active version differs by exactly nothing; a retrained one's recorded
    /// differences are the ones computed offline on the same requests. The store keeps them per version.
    @Test func shadowScoringRecordsHowAVersionWouldDiffer() async throws {
        let s = try Self.setup("shadow")
        defer { try? FileManager.default.removeItem(atPath: s.path) }
        try ScaleModel.publish(s.catalog, w: 1)
        let copy = try ScaleModel.publish(s.catalog, w: 1, activate: false)
        let retrained = try ScaleModel.publish(s.catalog, w: 1.5, activate: false)
        try await Self.withServer(s.config) { server, client in
            func run(_ version: UInt64, requests: [ScoreRequest]) async throws -> ShadowStatus.Comparison {
                try s.catalog.setShadow(model: "scale", try ShadowConfig(version: version, sample: 1))
                _ = try await client.reload()
                for r in requests { #expect(try await client.score(r).version == 1, "the shadow never answers") }
                try await waitUntil("the shadow compared every request") {
                    let c = server.shadowComparisons(of: "scale").first
                    return (c?.requests ?? 0) + (c?.dropped ?? 0) == UInt64(requests.count)
                }
                return try #require(try await client.status(model: "scale").first?.shadow?.comparisons.first)
            }
            var requests: [ScoreRequest] = []
            for i in 0..<40 {
                let xs: [Float] = (0..<8).map { (j: Int) -> Float in Float((j * 7 + i) % 11) / 4 }
                requests.append(ScaleModel.request(key: UInt64(i), xs: xs))
            }
            let same = try await run(copy, requests: requests)
            #expect(same.served == 1 && same.requests + same.dropped == 40)
            #expect(same.meanAbsDifference == 0 && same.maxAbsDifference == 0)
            #expect(same.changedCodes == 0 && same.codeRows == same.rows && same.codeColumn == "grade")
            #expect(same.meanRankCorrelation == 1)

            let other = try await run(retrained, requests: requests)
            // Offline: both versions over the requests compared (none dropped: 40 fit the queue).
            #expect(other.dropped == 0)
            var sum = 0.0, maxd = 0.0, changed = 0, rows = 0
            for r in requests {
                for x in r.candidateFeatures {
                    let a = ScaleModel.expected(w: 1, c: 0.25, x: x), b = ScaleModel.expected(w: 1.5, c: 0.25, x: x)
                    let d = Double(abs(a.score - b.score))
                    sum += d
                    maxd = max(maxd, d)
                    if a.grade != b.grade { changed += 1 }
                    rows += 1
                }
            }
            #expect(other.rows == UInt64(rows) && other.requests == 40)
            #expect(abs(other.meanAbsDifference - sum / Double(rows)) < 1e-12)
            #expect(other.maxAbsDifference == maxd)
            #expect(other.changedCodes == UInt64(changed) && changed > 0)
            #expect(other.meanRankCorrelation > 0.99, "w·x + c keeps the order of x")
            // Pinned requests are not sampled.
            _ = try await client.score(ScaleModel.request(key: 9, version: 1))
            #expect(server.shadowComparisons(of: "scale").first?.requests == 40)
        }
        // Written to the store (at the latest on shutdown), kept per version.
        let record = try #require(try s.catalog.shadowRecord(model: "scale", version: retrained))
        #expect(record.comparisons.map(\.requests) == [40])
        #expect(try s.catalog.shadowRecord(model: "scale", version: copy)?.comparisons.first?.maxAbsDifference == 0)
    }

    /// A sample of 5%: about 5% of unpinned requests are compared.
    @Test func theShadowSamplesItsShare() async throws {
        let s = try Self.setup("sample")
        defer { try? FileManager.default.removeItem(atPath: s.path) }
        try ScaleModel.publish(s.catalog, w: 1)
        let v2 = try ScaleModel.publish(s.catalog, w: 2, activate: false)
        try s.catalog.setShadow(model: "scale", try ShadowConfig(version: v2, sample: 0.05))
        try await Self.withServer(s.config) { server, client in
            for i in 0..<4000 { _ = try await client.score(ScaleModel.request(key: UInt64(i))) }
            try await waitUntil("the shadow caught up") {
                let c = server.shadowComparisons(of: "scale").first
                return server.shadowPending(of: "scale") == 0 && c != nil
            }
            let c = try #require(server.shadowComparisons(of: "scale").first)
            let sampled = c.requests + c.dropped
            #expect((120...280).contains(sampled), "\(sampled) of 4000 sampled at 5%")
        }
    }

    /// The old version's snapshot (its LMDB reader slot) is released when its last request finishes, not
    /// before and not never.
    @Test func theOldSnapshotIsReleasedWhenItsLastRequestEnds() async throws {
        let s = try Self.setup("slots")
        defer { try? FileManager.default.removeItem(atPath: s.path) }
        let gate = Gate()
        try GateModel.publish(store: s.path)
        var config = s.config
        config.offloadCandidates = 1  // scored on the pool, so the loop stays free while a request waits at the gate
        config.retainedVersions = 0
        let server = try ArbiterServer(configuration: config, registry: GateModel.registry(gate))
        try await server.start()
        let env = try StoreEnvironment.open(path: s.path, configuration: StoreConfiguration(mapSize: 1 << 30))
        let client = try await ArbiterClient.connect(host: "127.0.0.1", port: server.port!)
        let slots = server.readerSlotsHeld()
        #expect(slots >= 1, "the loaded version holds a slot")
        let held = Task {
            try await client.score(ScoreRequest(model: "gate", context: [1], candidateIDs: [1], candidateFeatureCount: 1, candidateFeatures: [0.5]))
        }
        try await waitUntil("a request waits at the gate") { gate.waiting == 1 }
        try GateModel.publish(store: s.path)
        try await server.reload()
        #expect(server.served.first?.version == 2)
        #expect(server.readerSlotsHeld() == slots + 1, "v1 is still held by its request")
        gate.open()
        #expect(try await held.value.version == 1, "the request finished on the version it started on")
        try await waitUntil("v1's slot is given back") { server.readerSlotsHeld() == slots }
        #expect(try await client.score(ScoreRequest(model: "gate", context: [0], candidateIDs: [1], candidateFeatureCount: 1, candidateFeatures: [0.5])).version == 2)
        try await client.close()
        try await server.shutdown()
        _ = env
    }
}

/// The loopback rule, on addresses written as text.
enum ConnectionHandlerProbe {
    static func isLoopback(_ ip: String) -> Bool {
        ConnectionHandler.isLoopback(try? SocketAddress(ipAddress: ip, port: 1))
    }
}

/// A switch to a version already loaded (what a cluster replica does on a commit): at once, without the
/// loader; a reload that read the store before the switch does not undo it, one that read it after agrees.
@Suite struct SwitchToLoadedTests {
    @Test func aLoadedVersionIsServedAtOnceAndReloadsKeepIt() async throws {
        let s = try HotSwapTests.setup("switch-loaded")
        defer { try? FileManager.default.removeItem(atPath: s.path) }
        try ScaleModel.publish(s.catalog, w: 1)
        try ScaleModel.publish(s.catalog, w: 2, activate: false)
        try await HotSwapTests.withServer(s.config) { server, client in
            try await server.reload()   // v2 loads as a retained version
            #expect(server.loadedVersions(of: "scale") == [1, 2])
            // Not loaded: nothing changes.
            #expect(try await server.switchToLoaded(model: "scale", version: 9, storeGeneration: 0) == false)
            #expect(try await server.switchToLoaded(model: "other", version: 1, storeGeneration: 0) == false)

            // A reload that read the store before the activation (simulated: the switch says the store names v2
            // from a generation the reload has not reached) keeps v2.
            let generationBefore = try s.catalog.generation()
            #expect(try await server.switchToLoaded(model: "scale", version: 2, storeGeneration: generationBefore + 1))
            #expect(server.served.first?.version == 2)
            #expect(try await client.score(ScaleModel.request(key: 1)).version == 2)
            try await server.reload()
            #expect(server.served.first?.version == 2, "a reload of an older store undid the switch")
            #expect(try await client.score(ScaleModel.request(key: 1)).version == 2)

            // Once the store names v2 too, reloads read it there (and the switch is forgotten): rolling back to v1
            // in the store is then what a reload serves.
            try s.catalog.activate(model: "scale", version: 2)
            try await server.reload()
            #expect(server.served.first?.version == 2)
            try s.catalog.activate(model: "scale", version: 1)
            try await server.reload()
            #expect(server.served.first?.version == 1)
            #expect(try await client.score(ScaleModel.request(key: 1)).version == 1)
        }
    }
}
