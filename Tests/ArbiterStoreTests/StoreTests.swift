import ArbiterStore
import Foundation
import Testing

func temporaryStorePath(_ tag: String) -> String {
    FileManager.default.temporaryDirectory.appendingPathComponent("arbiter-\(tag)-\(UUID().uuidString)").path
}

/// The catalog and the zero-copy tensor views.
@Suite struct StoreTests {
    static let small = StoreConfiguration(mapSize: 1 << 30, create: true)

    @Test func publishLoadAndList() throws {
        let path = temporaryStorePath("store")
        defer { try? FileManager.default.removeItem(atPath: path) }
        let env = try StoreEnvironment.open(path: path, configuration: Self.small)
        let catalog = Catalog(environment: env)
        #expect(try catalog.generation() == 0)
        let big = (0..<100_000).map { Float($0) * 0.5 }
        let v1 = try catalog.publish(model: "m1", kind: "k", manifest: Array("{}".utf8),
                                     tensors: [TensorData(name: "big", shape: [1000, 100], values: big),
                                               TensorData(name: "tiny", shape: [3], values: [1, 2, 3])],
                                     metrics: ["auc": 0.75])
        #expect(v1 == 1)
        #expect(try catalog.generation() == 1)
        let v2 = try catalog.publish(model: "m1", kind: "k", manifest: Array("{}".utf8), tensors: [], metrics: [:], activate: false)
        #expect(v2 == 2)
        #expect(try catalog.activeVersion(model: "m1") == 1)
        #expect(try catalog.models() == ["m1"])
        let list = try catalog.versions(model: "m1")
        #expect(list.map(\.meta.version) == [1, 2])
        #expect(list.map(\.isActive) == [true, false])
        #expect(list[0].meta.metrics["auc"] == 0.75)

        let loaded = try LoadedVersion(environment: env, model: "m1")
        #expect(loaded.version == 1)
        let t = try loaded.tensor("big", shape: [1000, 100])
        #expect(t.isMapped, "a large tensor must be a view into the map, not a copy")
        #expect(Int(bitPattern: t.pointer) % 4 == 0)
        #expect(Array(t.buffer) == big)
        #expect(Array(try loaded.tensor("tiny", shape: [3]).buffer) == [1, 2, 3])
        #expect(throws: StoreError.self) { try loaded.tensor("big", shape: [100, 1000]) }
        #expect(throws: StoreError.self) { try loaded.tensor("nope", shape: [1]) }

        // A pinned snapshot keeps seeing its version while others publish and activate.
        try catalog.activate(model: "m1", version: 2)
        _ = try catalog.publish(model: "m1", kind: "k", manifest: Array("{}".utf8), tensors: [], metrics: [:])
        #expect(Array(t.buffer) == big)
        #expect(try catalog.activeVersion(model: "m1") == 3)
        #expect(try catalog.generation() == 4)
    }

    @Test func badNamesAndMissingThingsAreClearErrors() throws {
        let path = temporaryStorePath("errors")
        defer { try? FileManager.default.removeItem(atPath: path) }
        #expect(throws: StoreError.missingStore(path: path + "-absent")) {
            try StoreEnvironment.open(path: path + "-absent", configuration: StoreConfiguration(mapSize: 1 << 30))
        }
        let env = try StoreEnvironment.open(path: path, configuration: Self.small)
        let catalog = Catalog(environment: env)
        for bad in ["", "A", "a/b", "has space", String(repeating: "x", count: 65)] {
            #expect(throws: StoreError.invalidModelName(bad)) {
                try catalog.publish(model: bad, kind: "k", manifest: [], tensors: [], metrics: [:])
            }
        }
        #expect(throws: StoreError.self) {
            try catalog.publish(model: "m", kind: "k", manifest: [], tensors: [TensorData(name: "t", shape: [2], values: [1])], metrics: [:])
        }
        #expect(throws: StoreError.unknownModel("m")) { try LoadedVersion(environment: env, model: "m") }
        #expect(throws: StoreError.unknownVersion(model: "m", version: 5)) { try catalog.activate(model: "m", version: 5) }
        #expect(try catalog.generation() == 0, "failed publishes must leave nothing behind")
    }

    @Test func corruptionIsDetectedAtLoad() throws {
        let path = temporaryStorePath("corrupt")
        defer { try? FileManager.default.removeItem(atPath: path) }
        let env = try StoreEnvironment.open(path: path, configuration: Self.small)
        let catalog = Catalog(environment: env)
        try catalog.publish(model: "m", kind: "k", manifest: Array("{\"a\":1}".utf8),
                            tensors: [TensorData(name: "w", shape: [4], values: [1, 2, 3, 4])], metrics: [:])
        // Overwrite the tensor behind the catalog's back, as a disk error would.
        try env.write { txn in try txn.put(StoreKeys.tensor("m", 1, "w"), [Float(1), 2, 3, 5].withUnsafeBytes { Array($0) }) }
        #expect(throws: StoreError.checksumMismatch(model: "m", version: 1, item: "tensor w")) {
            try LoadedVersion(environment: env, model: "m")
        }
        try env.write { txn in try txn.put(StoreKeys.manifest("m", 1), Array("{\"a\":2}".utf8)) }
        #expect(throws: StoreError.checksumMismatch(model: "m", version: 1, item: "manifest")) {
            try LoadedVersion(environment: env, model: "m")
        }
    }

    @Test func checksumIsXXH3() {
        // XXH3-64 of the empty input, a published constant of the algorithm.
        #expect(Checksum.hex(UnsafeRawBufferPointer(start: nil, count: 0)) == "2d06800538d394c2")
    }
}
