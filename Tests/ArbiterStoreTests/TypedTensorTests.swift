import ArbiterStore
import ArbiterTestSupport
import Foundation
import Testing

/// Tensors of every element type: published, checksummed, loaded in place when aligned (copied once when
/// not), refused when their type or record is wrong; float32-only versions keep the old store format.
@Suite struct TypedTensorTests {
    static let config = StoreConfiguration(mapSize: 64 << 20, create: true)

    @Test func everyElementTypeRoundTripsMappedAndCopied() throws {
        let path = temporaryStorePath("typed")
        defer { try? FileManager.default.removeItem(atPath: path) }
        let env = try StoreEnvironment.open(path: path, configuration: Self.config)
        let catalog = Catalog(environment: env)
        let ids = (0..<50_000).map { UInt64($0) &* 0x9E37_79B9_7F4A_7C15 }
        let codes = (0..<3_000).map { UInt8(truncatingIfNeeded: $0 * 7) }
        let small: [Int32] = [-3, 7, Int32.max, Int32.min]
        let nodes: [UInt32] = [0, 1, UInt32.max]
        let tiny: [UInt64] = [42]
        try catalog.publish(model: "t", kind: "k", manifest: [], tensors: [
            TensorData(name: "ids", shape: [50_000], elements: ids),
            TensorData(name: "codes", shape: [1_000, 3], elements: codes),
            TensorData(name: "small", shape: [2, 2], elements: small),
            TensorData(name: "nodes", shape: [3], elements: nodes),
            TensorData(name: "tiny", shape: [1], elements: tiny),
            TensorData(name: "weights", shape: [2], values: [0.5, -1]),
        ], metrics: [:])
        let v = try LoadedVersion(environment: env, model: "t")
        #expect(v.meta.format == 2)

        let t = try v.tensor("ids", shape: [50_000], as: UInt64.self)
        #expect(t.isMapped, "a large u64 tensor is read in place")
        #expect(Int(bitPattern: t.pointer) % 8 == 0)
        #expect(t.buffer.elementsEqual(ids))
        #expect(try v.tensor("codes", shape: [1_000, 3], as: UInt8.self).buffer.elementsEqual(codes))
        #expect(Array(try v.tensor("small", shape: [2, 2], as: Int32.self).buffer) == small)
        #expect(Array(try v.tensor("nodes", shape: [3], as: UInt32.self).buffer) == nodes)
        let one = try v.tensor("tiny", shape: [1], as: UInt64.self)
        #expect(Int(bitPattern: one.pointer) % 8 == 0, "mapped only where aligned, else copied to aligned memory")
        #expect(one[0] == 42)
        #expect(Array(try v.tensor("weights", shape: [2]).buffer) == [0.5, -1])

        // The wrong element type or shape is a clear error.
        #expect(throws: StoreError.invalidTensor("t v1 tensor 'codes' holds u8, expected f32")) {
            try v.tensor("codes", shape: [1_000, 3])
        }
        #expect(throws: StoreError.invalidTensor("t v1 tensor 'ids' holds u64, expected i32")) {
            try v.tensor("ids", shape: [50_000], as: Int32.self)
        }
        #expect(throws: StoreError.self) { try v.tensor("ids", shape: [25_000, 2], as: UInt64.self) }

        // A version of float32 tensors only keeps format 1, which earlier builds read.
        try catalog.publish(model: "f", kind: "k", manifest: [], tensors: [TensorData(name: "w", shape: [1], values: [1])], metrics: [:])
        #expect(try LoadedVersion(environment: env, model: "f").meta.format == 1)
    }

    @Test func wrongCountsCorruptionAndUnknownTypesAreRefused() throws {
        let path = temporaryStorePath("typed-bad")
        defer { try? FileManager.default.removeItem(atPath: path) }
        let env = try StoreEnvironment.open(path: path, configuration: Self.config)
        let catalog = Catalog(environment: env)
        var bad = TensorData(name: "x", shape: [3], elements: [UInt32(1), 2, 3])
        bad.shape = [4]
        #expect(throws: StoreError.invalidTensor("'x' has 3 u32 values for shape [4]")) {
            try catalog.publish(model: "m", kind: "k", manifest: [], tensors: [bad], metrics: [:])
        }
        try catalog.publish(model: "m", kind: "k", manifest: [],
                            tensors: [TensorData(name: "ids", shape: [4], elements: [UInt64(1), 2, 3, 4])], metrics: [:])

        // A flipped bit in the stored bytes.
        try env.write { txn in try txn.put(StoreKeys.tensor("m", 1, "ids"), [UInt64(1), 2, 3, 5].withUnsafeBytes { Array($0) }) }
        #expect(throws: StoreError.checksumMismatch(model: "m", version: 1, item: "tensor ids")) {
            try LoadedVersion(environment: env, model: "m")
        }

        // Records this build cannot read: an unknown element type, a typed tensor in format 1, a later format.
        func rewriteMeta(_ change: (inout VersionMeta) -> Void) throws {
            try env.write { txn in
                var meta = try JSONDecoder().decode(VersionMeta.self, from: Data(try #require(try txn.get(StoreKeys.meta("m", 1)))))
                change(&meta)
                try txn.put(StoreKeys.meta("m", 1), Array(try JSONEncoder().encode(meta)))
            }
        }
        try rewriteMeta { $0.tensors[0].dtype = "f16" }
        #expect(throws: StoreError.corrupt("m v1 tensor ids has dtype 'f16', which store format 2 does not define")) {
            try LoadedVersion(environment: env, model: "m")
        }
        try rewriteMeta { $0.tensors[0].dtype = "u64"; $0.format = 1 }
        #expect(throws: StoreError.corrupt("m v1 tensor ids has dtype 'u64', which store format 1 does not define")) {
            try LoadedVersion(environment: env, model: "m")
        }
        try rewriteMeta { $0.format = 4 }
        #expect(throws: StoreError.corrupt("m v1 has store format 4; this build reads formats 1...3")) {
            try LoadedVersion(environment: env, model: "m")
        }
    }
}
