import ArbiterStore
import ArbiterTestSupport
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
        #expect(t.buffer.elementsEqual(big))
        #expect(Array(try loaded.tensor("tiny", shape: [3]).buffer) == [1, 2, 3])
        #expect(throws: StoreError.self) { try loaded.tensor("big", shape: [100, 1000]) }
        #expect(throws: StoreError.self) { try loaded.tensor("nope", shape: [1]) }

        try catalog.activate(model: "m1", version: 2)
        _ = try catalog.publish(model: "m1", kind: "k", manifest: Array("{}".utf8), tensors: [], metrics: [:])
        #expect(try catalog.activeVersion(model: "m1") == 3)
        #expect(try catalog.generation() == 4)
    }

    /// A loaded version's snapshot keeps its pages: LMDB hands pages freed by later commits to new writes
    /// only once no reader needs them, so without the pin the tensor below would be overwritten in place.
    @Test func aLoadedVersionKeepsItsPagesWhileWritersReuseFreedOnes() throws {
        let path = temporaryStorePath("pin")
        defer { try? FileManager.default.removeItem(atPath: path) }
        let env = try StoreEnvironment.open(path: path, configuration: Self.small)
        let catalog = Catalog(environment: env)
        let big = (0..<100_000).map { Float($0) * 0.5 }
        try catalog.publish(model: "m1", kind: "k", manifest: Array("{}".utf8),
                            tensors: [TensorData(name: "big", shape: [100_000], values: big)], metrics: [:])
        let loaded = try LoadedVersion(environment: env, model: "m1")
        let t = try loaded.tensor("big", shape: [100_000])
        #expect(t.isMapped)
        // Rewrite the tensor's key again and again (as a future garbage collection of old versions would free
        // them): every commit frees the previous copy's overflow pages, and later commits reuse freed runs.
        for round in 0..<8 {
            let other = [Float](repeating: Float(1000 + round), count: 100_000)
            try env.write { txn in try other.withUnsafeBytes { try txn.put(StoreKeys.tensor("m1", 1, "big"), $0) } }
        }
        let fresh = try env.snapshot().withValue(StoreKeys.tensor("m1", 1, "big")) { $0.loadUnaligned(as: Float.self) }
        #expect(fresh == 1007, "the store holds the last rewrite")
        #expect(t.buffer.elementsEqual(big), "the pinned version must still read what it loaded")
        withExtendedLifetime(loaded) {}
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

    /// The load pass: the block-wise checksum equals the one-shot one, and the first NaN or infinity is found
    /// wherever it is — in a 16-value block, in the tail, across the hashing blocks, at any alignment.
    @Test func theLoadScanHashesAsOneShotAndFindsTheFirstNonFiniteValue() {
        let n = 300_001   // more than four hashing blocks of 256 KiB, and a tail
        var values = (0..<n).map { Float($0 % 4093) - 2000.5 }
        values[17] = -.greatestFiniteMagnitude
        values[18] = .leastNonzeroMagnitude
        values.withUnsafeBytes { b in
            let scan = Checksum.scan(b, float32: true)
            #expect(scan.checksum == Checksum.xxh3(b) && scan.firstNonFinite == nil)
            #expect(Checksum.scan(b, float32: false).firstNonFinite == nil)
            // One byte off: not aligned for floats.
            let shifted = UnsafeRawBufferPointer(rebasing: b[1...])
            #expect(Checksum.scan(shifted, float32: false).checksum == Checksum.xxh3(shifted))
        }
        for (i, bad) in [(0, Float.nan), (15, .infinity), (16, -.infinity), (65_535, .nan), (65_536, .infinity),
                         (131_071, -.nan), (n - 1, .infinity), (n - 2, .signalingNaN)] {
            var v = values
            v[i] = bad
            if i + 5 < n { v[i + 5] = .nan }   // only the first is reported
            v.withUnsafeBytes { b in
                let scan = Checksum.scan(b, float32: true)
                #expect(scan.firstNonFinite == i, "\(bad) at \(i)")
                #expect(scan.checksum == Checksum.xxh3(b))
                #expect(Checksum.scan(b, float32: false).firstNonFinite == nil)
            }
            // At an odd address: the bytes from the second float on, copied one byte past an aligned start.
            var bytes = [UInt8](repeating: 0, count: 1)
            v.withUnsafeBytes { bytes.append(contentsOf: $0) }
            bytes.withUnsafeBytes { b in
                #expect(Checksum.firstNonFinite(UnsafeRawBufferPointer(rebasing: b[1...])) == i)
            }
        }
    }
}
