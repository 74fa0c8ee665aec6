import ArbiterStore
import ArbiterTestSupport
import Foundation
import Testing

/// The store records its map size, every process adopts it, a flag only raises it, and a store grown by
/// another process never moves memory that a loaded version points into.
@Suite struct MapSizeTests {
    static let mib = 1 << 20

    @Test func theStoreRecordsItsMapSizeAndAFlagOnlyRaisesIt() throws {
        let path = temporaryStorePath("mapsize")
        defer { try? FileManager.default.removeItem(atPath: path) }
        func open(_ size: Int?, _ body: (StoreEnvironment) throws -> Void) throws {
            let env = try StoreEnvironment.open(path: path, configuration: StoreConfiguration(mapSize: size, create: true))
            try body(env)
        }
        try open(48 * Self.mib) { env in
            #expect(env.mapSize == 48 * Self.mib)
            try Catalog(environment: env).publish(model: "m", kind: "k", manifest: [], tensors: [], metrics: [:])
        }
        // No flag: the recorded size. A smaller flag: still the recorded size (a map never shrinks).
        try open(nil) { env in #expect(env.mapSize == 48 * Self.mib) }
        try open(16 * Self.mib) { env in #expect(env.mapSize == 48 * Self.mib) }
        // A larger flag raises it; the next commit records it for everyone.
        try open(96 * Self.mib) { env in
            #expect(env.recordedMapSize == 48 * Self.mib)
            #expect(env.mapSize == 96 * Self.mib)
            try Catalog(environment: env).activate(model: "m", version: 1)
        }
        try open(nil) { env in #expect(env.mapSize == 96 * Self.mib) }
        // A new store without a flag gets the documented default.
        let fresh = temporaryStorePath("mapsize-new")
        defer { try? FileManager.default.removeItem(atPath: fresh) }
        let env = try StoreEnvironment.open(path: fresh, configuration: StoreConfiguration(create: true))
        #expect(env.mapSize == StoreConfiguration.defaultMapSize)
    }

    /// The crash the soundness review reproduced: another process commits more than this process's map
    /// holds, with a larger map. The old code remapped on `MDB_MAP_RESIZED` while a loaded version pointed
    /// into the old map.
    @Test func aStoreGrownByAnotherProcessNeverMovesPinnedMemory() throws {
        let path = temporaryStorePath("grow")
        defer { try? FileManager.default.removeItem(atPath: path) }
        let env = try StoreEnvironment.open(path: path, configuration: StoreConfiguration(mapSize: 16 * Self.mib, create: true))
        let catalog = Catalog(environment: env)
        let big = (0..<100_000).map { Float($0) * 0.25 }
        try catalog.publish(model: "m", kind: "k", manifest: [], tensors: [TensorData(name: "big", shape: [100_000], values: big)], metrics: [:])

        do {
            let loaded = try LoadedVersion(environment: env, model: "m")
            let t = try loaded.tensor("big", shape: [100_000])
            let at = t.pointer
            try OtherProcess.grow(store: path, mapSize: 64 * Self.mib, mebibytes: 24)

            // While the version is loaded the map cannot move: new transactions are refused with a typed error.
            let refusal = Result { () throws(StoreError) in try env.snapshot() }
            #expect(throws: StoreError.mapOutgrown(path: path, mapSize: 16 * Self.mib, openTransactions: 1)) { try refusal.get() }
            #expect(throws: StoreError.self) {
                try catalog.publish(model: "m", kind: "k", manifest: [], tensors: [], metrics: [:])
            }
            #expect(env.mapSize == 16 * Self.mib)
            #expect(t.pointer == at)
            #expect(t.buffer.elementsEqual(big), "the loaded version reads what it loaded")
        }

        // Nothing pinned any more: the next transaction adopts the larger map and sees everything.
        #expect(env.openTransactions == 0)
        #expect(try catalog.generation() == 1)
        #expect(env.mapSize == 64 * Self.mib)
        let again = try LoadedVersion(environment: env, model: "m")
        #expect(try again.tensor("big", shape: [100_000]).buffer.elementsEqual(big))
        #expect(try env.snapshot().keys(prefix: "x/ballast/").count == 24)
    }

    @Test func aWriteThatDoesNotFitSaysHowToRaiseTheMap() throws {
        let path = temporaryStorePath("full")
        defer { try? FileManager.default.removeItem(atPath: path) }
        let env = try StoreEnvironment.open(path: path, configuration: StoreConfiguration(mapSize: 4 * Self.mib, create: true))
        let catalog = Catalog(environment: env)
        do {
            try catalog.publish(model: "m", kind: "k", manifest: [],
                                tensors: [TensorData(name: "big", shape: [2_000_000], values: [Float](repeating: 1, count: 2_000_000))],
                                metrics: [:])
            Issue.record("an 8 MB tensor fit in a 4 MiB map")
        } catch let e as StoreError {
            guard case .mapFull = e else { Issue.record("expected mapFull, got \(e)"); return }
            #expect("\(e)".contains("--map-size-gib"))
        }
        #expect(try catalog.generation() == 0, "nothing was written")
    }
}
