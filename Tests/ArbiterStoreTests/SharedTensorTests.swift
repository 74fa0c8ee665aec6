import ArbiterStore
import Foundation
import Testing

/// A tensor published unchanged is stored once: later versions point at it, a loader that has the earlier
/// version loaded does not read it again, gc keeps it while any kept version reads it, and its pages stay
/// mapped while any version that keeps them mapped is loaded.
@Suite struct SharedTensorTests {
    static let table = 5 << 20   // floats: 20 MiB, above the release threshold

    static func tensors(table seed: Float, head: Float) -> [TensorData] {
        [TensorData(name: "table", shape: [table], values: (0..<table).map { Float($0 % 1009) + seed }),
         TensorData(name: "head", shape: [3], values: [head, head + 1, head + 2])]
    }

    static func publish(_ catalog: Catalog, table: Float, head: Float, share: Bool = true) throws -> UInt64 {
        try catalog.publish(model: "m", kind: "k", manifest: Array("{\"head\": \(head)}".utf8),
                            tensors: tensors(table: table, head: head), metrics: [:], share: share)
    }

    /// A new store (its path, for the caller to remove).
    static func store(_ tag: String) throws -> (StoreEnvironment, Catalog, String) {
        let path = temporaryStorePath(tag)
        let env = try StoreEnvironment.open(path: path, configuration: StoreConfiguration(mapSize: 1 << 30, create: true))
        return (env, Catalog(environment: env), path)
    }

    static func meta(_ catalog: Catalog, _ v: UInt64) throws -> VersionMeta {
        try #require(try catalog.versions(model: "m").first { $0.meta.version == v }?.meta)
    }

    @Test func anUnchangedTensorIsStoredOnceAndReadFromWhereItIs() throws {
        let (env, catalog, path) = try Self.store("shared")
        defer { try? FileManager.default.removeItem(atPath: path) }
        let v1 = try Self.publish(catalog, table: 0, head: 1)
        let pagesAfterOne = env.pageStatistics().pagesUsed
        let v2 = try Self.publish(catalog, table: 0, head: 2)
        let v3 = try Self.publish(catalog, table: 0, head: 3)
        let stats = env.pageStatistics()
        // Two more versions, and the store holds one table: a few pages more, not 40 MiB.
        #expect((stats.pagesUsed - pagesAfterOne) * stats.pageSize < 1 << 20, "\(pagesAfterOne) → \(stats.pagesUsed) pages")

        let m1 = try Self.meta(catalog, v1), m2 = try Self.meta(catalog, v2), m3 = try Self.meta(catalog, v3)
        #expect(m1.format == 1 && m1.tensors.allSatisfy { $0.storedIn == nil })
        // The table points at v1's (never at v2, which only points too); the changed head is v2's and v3's own.
        #expect(m2.format == 3 && m2.tensors.first { $0.name == "table" }?.storedIn == v1)
        #expect(m3.tensors.first { $0.name == "table" }?.storedIn == v1)
        #expect(m2.tensors.first { $0.name == "head" }?.storedIn == nil && m3.tensors.first { $0.name == "head" }?.storedIn == nil)

        // Each version reads its own values; the table is the same mapped bytes.
        let l1 = try LoadedVersion(environment: env, model: "m", version: v1)
        let l3 = try LoadedVersion(environment: env, model: "m", version: v3)
        #expect(Array(try l3.tensor("head", shape: [3]).buffer) == [3, 4, 5])
        let t1 = try l1.tensor("table", shape: [Self.table]), t3 = try l3.tensor("table", shape: [Self.table])
        #expect(t1.isMapped && t3.isMapped && t1.pointer == t3.pointer)
        #expect(t3[Self.table - 1] == Float((Self.table - 1) % 1009))

        // A loader that has v1 loaded does not read the table again; one that has not, reads it.
        #expect(l3.sharedBytes == 0)
        let again = try LoadedVersion(environment: env, model: "m", version: v3, verified: [l1])
        #expect(again.sharedBytes == Self.table * 4)
        #expect(again.tensors["table"]?.firstNonFinite == nil)
        #expect(again.tensors["table"]?.reused == true && again.tensors["head"]?.reused == false && l3.tensors["table"]?.reused == false)

        // A changed table is written; `share: false` writes its own copy even when unchanged.
        let v4 = try Self.publish(catalog, table: 1, head: 4)
        let v5 = try Self.publish(catalog, table: 1, head: 5, share: false)
        #expect(try Self.meta(catalog, v4).tensors.allSatisfy { $0.storedIn == nil })
        #expect(try Self.meta(catalog, v5).tensors.allSatisfy { $0.storedIn == nil } && Self.meta(catalog, v5).format == 1)
    }

    /// A trainer that retrained only the heads names the table as unchanged: no bytes, the same result.
    @Test func unchangedTensorsAreTakenFromTheActiveVersionByName() throws {
        let (env, catalog, path) = try Self.store("shared-named")
        defer { try? FileManager.default.removeItem(atPath: path) }
        let head = { (h: Float) in TensorData(name: "head", shape: [3], values: [h, h + 1, h + 2]) }
        #expect(throws: StoreError.self) {
            try catalog.publish(model: "m", kind: "k", manifest: [], tensors: [head(0)], unchanged: ["table"], metrics: [:])
        }
        let v1 = try Self.publish(catalog, table: 0, head: 1)
        let v2 = try catalog.publish(model: "m", kind: "k", manifest: Array("{}".utf8), tensors: [head(2)], unchanged: ["table"], metrics: [:])
        let v3 = try catalog.publish(model: "m", kind: "k", manifest: Array("{}".utf8), tensors: [head(3)], unchanged: ["table"], metrics: [:])
        #expect(try Self.meta(catalog, v3).tensors.first { $0.name == "table" }?.storedIn == v1, "points where the bytes are, not at v2")
        let l3 = try LoadedVersion(environment: env, model: "m", version: v3)
        #expect(try l3.tensor("table", shape: [Self.table])[1008] == 1008 && l3.tensor("head", shape: [3])[0] == 3)
        _ = v2
        // Refused: a name the active version lacks, a name also given with bytes.
        #expect { try catalog.publish(model: "m", kind: "k", manifest: [], tensors: [head(4)], unchanged: ["tabel"], metrics: [:]) }
            throws: { "\($0)".contains("has no tensor 'tabel'") }
        #expect { try catalog.publish(model: "m", kind: "k", manifest: [], tensors: [head(4)], unchanged: ["head"], metrics: [:]) }
            throws: { "\($0)".contains("both as unchanged and with its bytes") }
    }

    @Test func gcKeepsASharedTensorWhileAKeptVersionReadsIt() throws {
        let (env, catalog, path) = try Self.store("shared-gc")
        defer { try? FileManager.default.removeItem(atPath: path) }
        let v1 = try Self.publish(catalog, table: 0, head: 1)
        _ = try Self.publish(catalog, table: 0, head: 2)
        let v3 = try Self.publish(catalog, table: 0, head: 3)
        // Only v3 is kept; v1's record goes, its table stays (v3 reads it).
        let first = try catalog.gc(model: "m", keep: 0)
        #expect(first.versions == [1, 2] && first.kept == [v3])
        #expect(first.bytes < 1 << 20, "the table is not freed: \(first.bytes)")
        let l3 = try LoadedVersion(environment: env, model: "m", version: v3)
        #expect(try l3.tensor("table", shape: [Self.table])[7] == 7)
        #expect(try env.snapshot().bytes(StoreKeys.meta("m", v1)) == nil)
        #expect(try env.snapshot().bytes(StoreKeys.tensor("m", v1, "table")) != nil)

        // A new table: once v3 goes too, nothing reads v1's table and gc frees it.
        let v4 = try Self.publish(catalog, table: 1, head: 4)
        let second = try catalog.gc(model: "m", keep: 0)
        #expect(second.versions == [v3] && second.kept == [v4])
        #expect(second.bytes >= Self.table * 4, "v1's table is freed: \(second.bytes)")
        #expect(try env.snapshot().keys(prefix: StoreKeys.version("m", v1)).isEmpty)
        #expect(try env.snapshot().keys(prefix: StoreKeys.version("m", v3)).isEmpty)
        // v3, loaded before the gc, still reads its table: its snapshot holds the pages.
        #expect(try l3.tensor("table", shape: [Self.table])[Self.table - 1] == Float((Self.table - 1) % 1009))
    }

    @Test func aSharedTensorIsCheckedAgainstTheRecordThatNamesIt() throws {
        let (env, catalog, path) = try Self.store("shared-bad")
        defer { try? FileManager.default.removeItem(atPath: path) }
        let v1 = try Self.publish(catalog, table: 0, head: 1)
        let v2 = try Self.publish(catalog, table: 0, head: 2)
        let l1 = try LoadedVersion(environment: env, model: "m", version: v1)
        let original = try Self.meta(catalog, v2)
        var meta = original
        let i = try #require(meta.tensors.firstIndex { $0.name == "table" })
        func rewrite(_ meta: VersionMeta) throws {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys]
            try env.write { txn in try txn.put(StoreKeys.meta("m", v2), Array(try encoder.encode(meta))) }
        }
        // A record whose checksum for the shared table is not the stored table's: refused even by a loader that
        // has the stored table verified (it compares the checksum the record names).
        meta.tensors[i].checksum = "0123456789abcdef"
        try rewrite(meta)
        #expect(throws: StoreError.checksumMismatch(model: "m", version: v2, item: "tensor table")) {
            try LoadedVersion(environment: env, model: "m", version: v2, verified: [l1])
        }
        // The same bytes under another shape are not the tensor that was verified (a check of its shape may
        // differ): read again.
        meta = original
        meta.tensors[i].shape = [Self.table / 4, 4]
        try rewrite(meta)
        let reshaped = try LoadedVersion(environment: env, model: "m", version: v2, verified: [l1])
        #expect(reshaped.sharedBytes == 0 && reshaped.tensors["table"]?.reused == false)
        // Pointing at a version that does not hold it, or at a later one, or in a format without sharing.
        meta = original
        meta.tensors[i].storedIn = 7
        try rewrite(meta)
        #expect(throws: (any Error).self) { try LoadedVersion(environment: env, model: "m", version: v2) }
        meta.tensors[i].storedIn = v2 + 1
        try rewrite(meta)
        do {
            _ = try LoadedVersion(environment: env, model: "m", version: v2)
            Issue.record("a tensor stored in a later version loaded")
        } catch {
            #expect("\(error)".contains("stored in v\(v2 + 1)"), "\(error)")
        }
        meta.tensors[i].storedIn = v1
        meta.format = 2
        try rewrite(meta)
        do {
            _ = try LoadedVersion(environment: env, model: "m", version: v2)
            Issue.record("format 2 with a shared tensor loaded")
        } catch {
            #expect("\(error)".contains("store format 2 does not allow"), "\(error)")
        }
    }

    @Test func sharedPagesStayMappedWhileAVersionKeepsThem() throws {
        let (env, catalog, path) = try Self.store("shared-pages")
        defer { try? FileManager.default.removeItem(atPath: path) }
        let v1 = try Self.publish(catalog, table: 0, head: 1)
        let v2 = try Self.publish(catalog, table: 0, head: 2)
        let l1 = try LoadedVersion(environment: env, model: "m", version: v1)
        let l2 = try LoadedVersion(environment: env, model: "m", version: v2, verified: [l1])
        let t = try l2.tensor("table", shape: [Self.table])
        let tableKB = Self.table * 4 / 1024
        l1.prefaultResidentPages()
        l2.prefaultResidentPages()
        // The old version lets go (a swap): the table stays mapped, for the new one serves from it.
        #expect(l1.releaseResidentPages() == 0)
        #expect(try ResidentPagesTests.residentKB(of: t.pointer) >= tableKB - 8)
        #expect(l1.releaseResidentPages() == 0, "nor when it is released again")
        // The last holder lets go: the pages are given back.
        #expect(l2.releaseResidentPages() > 0)
        #expect(try ResidentPagesTests.residentKB(of: t.pointer) < 1024)
        // A version that never held them gives them back only if no version holds them.
        l2.prefaultResidentPages()
        let l3 = try LoadedVersion(environment: env, model: "m", version: v2, verified: [l2])
        #expect(l3.releaseResidentPages() == 0)
        #expect(try ResidentPagesTests.residentKB(of: t.pointer) >= tableKB - 8)
        l2.releaseResidentPages()
    }
}
