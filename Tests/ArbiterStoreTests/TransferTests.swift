import ArbiterStore
import Foundation
import Testing

/// One version out of a store and into another under its own number: what a replica gets from `push`.
@Suite struct TransferTests {
    static func tensors(table seed: Float, head: Float) -> [TensorData] {
        [TensorData(name: "table", shape: [1 << 18], values: (0..<(1 << 18)).map { Float($0 % 1009) + seed }),
         TensorData(name: "head", shape: [3], values: [head, head + 1, head + 2])]
    }

    static func publish(_ catalog: Catalog, table: Float, head: Float) throws -> UInt64 {
        try catalog.publish(model: "m", kind: "k", manifest: Array("{\"head\": \(head)}".utf8),
                            tensors: tensors(table: table, head: head), metrics: ["auc": 0.7])
    }

    static func store(_ tag: String) throws -> (Catalog, String) {
        let path = temporaryStorePath(tag)
        let env = try StoreEnvironment.open(path: path, configuration: StoreConfiguration(mapSize: 256 << 20, create: true))
        return (Catalog(environment: env), path)
    }

    static func tensorBytes(_ catalog: Catalog, _ version: UInt64, _ name: String) throws -> [UInt8]? {
        let meta = try #require(try catalog.versions(model: "m").first { $0.meta.version == version }?.meta)
        let entry = try #require(meta.tensors.first { $0.name == name })
        return try catalog.environment.snapshot().bytes(StoreKeys.tensor("m", entry.home(in: version), name))
    }

    @Test func exportResolvesSharedTensorsAndImportKeepsTheNumberWithoutActivating() throws {
        let (source, sourcePath) = try Self.store("export-src")
        let (replica, replicaPath) = try Self.store("export-dst")
        let artifactPath = temporaryStorePath("export-artifact")
        let compactDir = temporaryStorePath("export-compact")
        defer { for p in [sourcePath, replicaPath, artifactPath, compactDir] { try? FileManager.default.removeItem(atPath: p) } }

        _ = try Self.publish(source, table: 0, head: 1)
        let v2 = try Self.publish(source, table: 0, head: 2)      // shares v1's table
        #expect(try source.versions(model: "m").last?.meta.tensors.first { $0.name == "table" }?.storedIn == 1)

        let exported = try source.exportVersion(model: "m", version: v2, to: artifactPath)
        #expect(exported.meta.tensors.allSatisfy { $0.storedIn == nil })
        #expect(exported.meta.format == 1)
        #expect(exported.payloadBytes == (1 << 18) * 4 + 12 + Array("{\"head\": 2.0}".utf8).count)
        // The artifact is a store like any other: its one version is active.
        let artifactEnv = try StoreEnvironment.open(path: artifactPath, configuration: StoreConfiguration(readOnly: true))
        let artifact = Catalog(environment: artifactEnv)
        #expect(try artifact.activeVersion(model: "m") == v2)
        #expect(try artifact.versions(model: "m").map(\.meta.version) == [v2])

        // Its compacted copy holds the same version, in a file of its own.
        try FileManager.default.createDirectory(atPath: compactDir, withIntermediateDirectories: true)
        let bytes = try artifactEnv.copyCompacted(toFile: compactDir + "/data.mdb")
        #expect(bytes > (1 << 20) && bytes < (1 << 21))
        #expect(throws: StoreError.self) { try artifactEnv.copyCompacted(toFile: compactDir + "/data.mdb") }  // never overwrites
        let compact = Catalog(environment: try StoreEnvironment.open(path: compactDir, configuration: StoreConfiguration(readOnly: true)))
        #expect(try Self.tensorBytes(compact, v2, "table") == Self.tensorBytes(source, v2, "table"))

        // Into an empty replica: v2 keeps its number, latest follows, nothing is active, the generation moves.
        let generation = try replica.generation()
        #expect(try replica.importVersion(from: compact.environment, model: "m", version: v2) == .imported(sharedBytes: 0))
        #expect(try replica.activeVersion(model: "m") == nil)
        #expect(try replica.versions(model: "m").map(\.meta.version) == [v2])
        #expect(try replica.generation() == generation + 1)
        #expect(try Self.tensorBytes(replica, v2, "table") == Self.tensorBytes(source, v2, "table"))
        #expect(try Self.tensorBytes(replica, v2, "head") == Self.tensorBytes(source, v2, "head"))
        // The same version again writes nothing.
        #expect(try replica.importVersion(from: compact.environment, model: "m", version: v2) == .alreadyPresent)
        #expect(try replica.generation() == generation + 1)
        // Asking for a version the artifact does not hold names it.
        #expect(throws: StoreError.self) { try replica.importVersion(from: compact.environment, model: "m", version: 7) }
    }

    @Test func importSharesEqualTensorsWithTheReplicasVersionsAndRefusesADifferentVersionOfTheSameNumber() throws {
        let (source, sourcePath) = try Self.store("import-src")
        let (replica, replicaPath) = try Self.store("import-dst")
        let a3 = temporaryStorePath("import-a3"), a4 = temporaryStorePath("import-a4"), other = temporaryStorePath("import-other")
        let (stranger, strangerPath) = try Self.store("import-stranger")
        defer { for p in [sourcePath, replicaPath, a3, a4, other, strangerPath] { try? FileManager.default.removeItem(atPath: p) } }

        for h in 1...4 { _ = try Self.publish(source, table: 0, head: Float(h)) }
        _ = try source.exportVersion(model: "m", version: 3, to: a3)
        _ = try source.exportVersion(model: "m", version: 4, to: a4)
        let env3 = try StoreEnvironment.open(path: a3, configuration: StoreConfiguration(readOnly: true))
        let env4 = try StoreEnvironment.open(path: a4, configuration: StoreConfiguration(readOnly: true))
        #expect(try replica.importVersion(from: env3, model: "m", version: 3) == .imported(sharedBytes: 0))
        try replica.activate(model: "m", version: 3)
        // v4's table equals v3's: stored once on the replica.
        #expect(try replica.importVersion(from: env4, model: "m", version: 4) == .imported(sharedBytes: (1 << 18) * 4))
        let meta4 = try #require(try replica.versions(model: "m").first { $0.meta.version == 4 }?.meta)
        #expect(meta4.tensors.first { $0.name == "table" }?.storedIn == 3)
        #expect(meta4.format == 3)
        #expect(try replica.activeVersion(model: "m") == 3)

        // Another store's v4 (other bytes) cannot replace the replica's.
        for h in 10...13 { _ = try Self.publish(stranger, table: 5, head: Float(h)) }
        _ = try stranger.exportVersion(model: "m", version: 4, to: other)
        let otherEnv = try StoreEnvironment.open(path: other, configuration: StoreConfiguration(readOnly: true))
        #expect(throws: StoreError.self) { try replica.importVersion(from: otherEnv, model: "m", version: 4) }
        #expect(try Self.tensorBytes(replica, 4, "head") == Self.tensorBytes(source, 4, "head"))
        // Export never writes over a store.
        #expect(throws: StoreError.self) { try source.exportVersion(model: "m", version: 2, to: a3) }
    }
}
