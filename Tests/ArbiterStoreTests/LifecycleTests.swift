import ArbiterStore
import Foundation
import Testing

/// The operator's side of a model's versions: rollback to the last validated one, and garbage collection
/// that keeps what must stay, never disturbs a loaded version, and lets the store stop growing.
@Suite struct LifecycleTests {
    static let small = StoreConfiguration(mapSize: 1 << 30, create: true)

    static func publish(_ catalog: Catalog, _ model: String = "m", values: Int = 1000, seed: Float = 0, activate: Bool = true) throws -> UInt64 {
        try catalog.publish(model: model, kind: "k", manifest: Array("{\"seed\": \(seed)}".utf8),
                            tensors: [TensorData(name: "w", shape: [values], values: (0..<values).map { Float($0) + seed })],
                            metrics: [:], activate: activate)
    }

    @Test func rollbackGoesToTheNewestOlderVersionAServerValidated() throws {
        let path = temporaryStorePath("rollback")
        defer { try? FileManager.default.removeItem(atPath: path) }
        let catalog = Catalog(environment: try StoreEnvironment.open(path: path, configuration: Self.small))
        for i in 1...4 { _ = try Self.publish(catalog, seed: Float(i)) }
        try catalog.recordValidation(model: "m", version: 1, ValidationRecord(outcome: .passed, by: "test"))
        try catalog.recordValidation(model: "m", version: 2, ValidationRecord(outcome: .passed, by: "test"))
        try catalog.recordValidation(model: "m", version: 3, ValidationRecord(outcome: .rejected, reason: "golden", by: "test"))
        let generation = try catalog.generation()
        // v4 is active (never loaded); v3 was rejected: the rollback goes to v2, then v1, then nowhere.
        #expect(try catalog.rollback(model: "m") == 2)
        #expect(try catalog.activeVersion(model: "m") == 2)
        #expect(try catalog.generation() == generation + 1, "servers notice a rollback as they notice an activation")
        #expect(try catalog.rollback(model: "m") == 1)
        #expect(throws: StoreError.noRollbackTarget(model: "m", active: 1)) { try catalog.rollback(model: "m") }
        #expect(try catalog.activeVersion(model: "m") == 1)
        #expect(throws: StoreError.unknownModel("nope")) { try catalog.rollback(model: "nope") }
    }

    @Test func gcKeepsTheActiveAndTheNewestAndNeverDisturbsALoadedVersion() throws {
        let path = temporaryStorePath("gc")
        defer { try? FileManager.default.removeItem(atPath: path) }
        let env = try StoreEnvironment.open(path: path, configuration: Self.small)
        let catalog = Catalog(environment: env)
        for i in 1...6 { _ = try Self.publish(catalog, values: 50_000, seed: Float(i)) }
        _ = try Self.publish(catalog, "other", seed: 9)
        try catalog.activate(model: "m", version: 3)
        // A server has v1 loaded: its pages must stay as they are through the gc and the writes after it.
        let loaded = try LoadedVersion(environment: env, model: "m", version: 1)
        let view = try loaded.tensor("w", shape: [50_000])
        let generation = try catalog.generation()

        let collected = try catalog.gc(model: "m", keep: 2)
        #expect(collected.versions == [1, 2, 4])
        #expect(collected.kept == [3, 5, 6])
        #expect(collected.bytes == 3 * (50_000 * 4 + "{\"seed\": 1.0}".utf8.count))
        #expect(try catalog.versions(model: "m").map(\.meta.version) == [3, 5, 6])
        #expect(try catalog.activeVersion(model: "m") == 3)
        #expect(try catalog.generation() == generation, "a gc changes nothing a server serves")
        #expect(throws: StoreError.unknownVersion(model: "m", version: 4)) { try LoadedVersion(environment: env, model: "m", version: 4) }
        #expect(try LoadedVersion(environment: env, model: "m", version: 5).version == 5)
        #expect(try catalog.versions(model: "other").count == 1, "another model's versions are untouched")
        // Numbers are never reused; new writes may reuse the freed pages, but not those v1's reader still holds.
        #expect(try Self.publish(catalog, values: 50_000, seed: 7, activate: false) == 7)
        for i in 0..<20 { _ = try Self.publish(catalog, "other", values: 50_000, seed: Float(100 + i)) }
        #expect((0..<50_000).allSatisfy { view[$0] == Float($0) + 1 }, "the loaded v1 reads what it read before")
        // keep 0: only the active one stays.
        #expect(try catalog.gc(model: "m", keep: 0).kept == [3])
    }

    /// Publishing and collecting in a loop: the store's file stops growing (LMDB reuses the freed pages).
    @Test func aPublishGcLoopStopsGrowingTheStore() throws {
        let path = temporaryStorePath("gc-loop")
        defer { try? FileManager.default.removeItem(atPath: path) }
        let env = try StoreEnvironment.open(path: path, configuration: Self.small)
        let catalog = Catalog(environment: env)
        var pages: [Int] = []
        for i in 0..<60 {
            _ = try Self.publish(catalog, values: 250_000, seed: Float(i))  // 1 MB each
            try catalog.gc(model: "m", keep: 1)
            pages.append(env.pageStatistics().pagesUsed)
        }
        let stats = env.pageStatistics()
        #expect(stats.pageSize > 0 && stats.fileBytes >= stats.pagesUsed * stats.pageSize)
        // After a few rounds the high-water mark holds: every later publish fits in freed pages.
        #expect(pages[59] == pages[15], "pages in use by round: \(pages)")
        #expect(pages[59] * stats.pageSize < 8 << 20, "two or three versions' worth, not sixty: \(pages[59]) pages")
    }
}
