import ArbiterModels
import ArbiterStore
import Foundation
import Testing

/// Embedding tables published into a real store and read back from the map.
@Suite struct EmbeddingTableTests {
    /// Publishes `tensors` as version 1 of model "m" in a new store; returns the loaded version.
    static func publish(_ tensors: [TensorData]) throws -> (LoadedVersion, String) {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("arbiter-embeddings-\(UUID())").path
        let env = try StoreEnvironment.open(path: path, configuration: StoreConfiguration(mapSize: 256 << 20, create: true))
        let schema = FeatureSchema(context: [], candidate: [.numeric("x")], outputs: [])
        let golden = [GoldenCase(context: [], candidates: [2], candidateCount: 1, scores: [2], floatColumns: [], codeColumns: [])]
        let manifest = ModelManifest(kind: "echo", schema: schema, parameters: [:], golden: golden)
        try Catalog(environment: env).publish(model: "m", kind: "echo", manifest: manifest.encoded(), tensors: tensors, metrics: [:])
        return (try LoadedVersion(environment: env, model: "m"), path)
    }

    @Test func idsFindTheirRowsAndUnknownIdsTheDefaultRowCounted() throws {
        var rng = SystemRandomNumberGenerator()
        let n = 50_000, d = 8
        // Random ids, 0 and UInt64.max among them (no value is reserved).
        var ids = Set<UInt64>([0, .max])
        while ids.count < n { ids.insert(UInt64.random(in: 0 ... .max, using: &rng)) }
        let list = Array(ids)
        let vectors = (0..<n * d).map { Float($0 / d) + Float($0 % d) / 100 }
        let tensors = try EmbeddingTable.tensors(name: "items", ids: list, dimension: d, vectors: vectors, defaultRow: [Float](repeating: -1, count: d))
        let (version, path) = try Self.publish(tensors)
        defer { try? FileManager.default.removeItem(atPath: path) }
        let table = try EmbeddingTable(version: version, name: "items")
        #expect(table.rowCount == n && table.dimension == d)
        #expect(table.isMapped)
        for (row, id) in list.enumerated() {
            let v = table.vector(of: id)
            if v[0] != Float(row) || v[d - 1] != Float(row) + Float(d - 1) / 100 {
                Issue.record("id \(id) gave \(v[0]), expected row \(row)")
                break
            }
        }
        #expect(table.unknownLookups == 0)
        var unknown = 0
        for _ in 0..<1_000 {
            let id = UInt64.random(in: 0 ... .max, using: &rng)
            guard !ids.contains(id) else { continue }
            unknown += 1
            #expect(table.vector(of: id)[0] == -1)
        }
        #expect(table.unknownLookups == unknown)
    }

    @Test func aBadTableIsRefusedWhenMadeAndWhenLoaded() throws {
        #expect { try EmbeddingTable.tensors(name: "t", ids: [1, 2, 1], dimension: 1, vectors: [0, 1, 2], defaultRow: [0]) }
            throws: { "\($0)".contains("id 1 is listed twice") }
        #expect { try EmbeddingTable.tensors(name: "t", ids: [1, 2], dimension: 2, vectors: [0, 1, 2], defaultRow: [0, 0]) }
            throws: { "\($0)".contains("3 values for 2 ids of dimension 2") }
        #expect { try EmbeddingTable.tensors(name: "t", ids: [1], dimension: 1, vectors: [.nan], defaultRow: [0]) }
            throws: { "\($0)".contains("nan") }

        // A damaged index: a slot naming a row that does not exist, an id moved away from where its hash
        // leads (a lookup would miss it), and too few slots (no empty one to end a lookup).
        var tensors = try EmbeddingTable.tensors(name: "t", ids: [10, 20, 30], dimension: 1, vectors: [1, 2, 3], defaultRow: [0])
        func damaged(_ change: (inout [UInt64]) -> Void) throws -> String {
            var slots = tensors[1].bytes.withUnsafeBytes { Array($0.bindMemory(to: UInt64.self)) }
            change(&slots)
            var t = tensors
            t[1] = TensorData(name: "t.slots", shape: [slots.count / 2, 2], elements: slots)
            let (version, path) = try Self.publish(t)
            defer { try? FileManager.default.removeItem(atPath: path) }
            do {
                _ = try EmbeddingTable(version: version, name: "t")
                return "loaded"
            } catch {
                return "\(error)"
            }
        }
        let used = { (slots: [UInt64]) in (0..<slots.count / 2).filter { slots[2 * $0 + 1] != 0 } }
        #expect(try damaged { s in s[2 * used(s)[0] + 1] = 9 }.contains("out of range or named twice"))
        #expect(try damaged { s in
            // Move the first held id to an empty slot just before its own (wrapping): not reachable.
            let from = used(s)[0]
            let empty = (0..<s.count / 2).first { s[2 * $0 + 1] == 0 && $0 != from }!
            s[2 * empty] = s[2 * from]; s[2 * empty + 1] = s[2 * from + 1]
            s[2 * from] = 0; s[2 * from + 1] = 0
        }.contains("is not found from its first slot"))
        #expect(try damaged { s in s = Array(s.prefix(4)) }.contains("at least twice as many"))
        // A non-finite value in a stored table (found by the load's scan, not by a second pass): named by row.
        tensors[0] = TensorData(name: "t.vectors", shape: [4, 1], values: [1, 2, .infinity, 0])
        #expect(try damaged { _ in }.contains("row 2 holds inf"))
        tensors[0] = TensorData(name: "t.vectors", shape: [4], values: [1, 2, 3, 0])
        #expect(try damaged { _ in }.contains("expected [rows + 1, dimension]"))
    }

    /// The registry refuses a version with a NaN or infinity in any float32 tensor, naming it and where.
    @Test func theRegistryRefusesNonFiniteParameters() throws {
        let tensors = [TensorData(name: "w", shape: [70_000], values: (0..<70_000).map { $0 == 65_537 ? -.infinity : Float($0) })]
        let (version, path) = try Self.publish(tensors)
        defer { try? FileManager.default.removeItem(atPath: path) }
        var registry = ModelRegistry()
        registry.register(kind: "echo") { _, _ in Issue.record("the factory ran"); throw ModelError.invalidParameters("no") }
        #expect { try registry.load(version) } throws: { "\($0)".contains("tensor 'w' holds -inf at index 65537") }
    }
}
