import ArbiterStore
import ArbiterTestSupport
import Foundation
import Testing

/// A loaded version gives back the pages its load read (checksums), keeps its map, and a read faults back
/// in only what it touches: large tensors cost the process what requests read, not their size.
@Suite struct ResidentPagesTests {
    static func residentKB(of address: UnsafeRawPointer) throws -> Int {
        ProcessMemory.residentKB(of: address)
    }

    @Test func releasedPagesComeBackOnlyWhereTheyAreRead() throws {
        let path = temporaryStorePath("resident")
        defer { try? FileManager.default.removeItem(atPath: path) }
        let env = try StoreEnvironment.open(path: path, configuration: StoreConfiguration(mapSize: 1 << 30, create: true))
        let n = 6 << 20   // 24 MiB of floats
        let tableKB = 24 * 1024, tableBytes = tableKB * 1024
        let values = (0..<n).map { Float($0 % 977) }
        try Catalog(environment: env).publish(model: "m", kind: "k", manifest: Array("{}".utf8),
                                              tensors: [TensorData(name: "table", shape: [n], values: values),
                                                        TensorData(name: "small", shape: [4], values: [1, 2, 3, 4])], metrics: [:])
        let loaded = try LoadedVersion(environment: env, model: "m")
        let t = try loaded.tensor("table", shape: [n])
        #expect(t.isMapped)
        let afterLoad = try Self.residentKB(of: t.pointer)
        #expect(afterLoad >= tableKB, "loading verified the checksum, reading every page (\(afterLoad) kB)")
        // What the memory budget leaves out of the process's size: the store's mapping as smaps counts it.
        let mappedAfterLoad = env.residentMapBytes()
        #expect(mappedAfterLoad >= tableBytes && mappedAfterLoad < tableBytes + (4 << 20), "\(mappedAfterLoad) bytes of the store mapped")

        let released = loaded.releaseResidentPages()
        let lowest = tableBytes - 2 * 4096
        #expect(released >= lowest && released <= tableBytes)
        let afterRelease = try Self.residentKB(of: t.pointer)
        #expect(afterRelease >= 0 && afterRelease < 1024, "\(afterRelease) kB still resident")
        #expect(env.residentMapBytes() < 4 << 20, "\(env.residentMapBytes()) bytes of the store still mapped")

        // The view still reads the right values. Each read maps what the kernel maps per fault: a page and its
        // neighbours (64 KiB by default), or the page cache's whole folio — 2 MiB here (Linux 6.18, ext4 with
        // large folios). Two reads, 12 MiB apart, bring back at most two folios.
        #expect(t[0] == 0 && t[n / 2] == Float((n / 2) % 977))
        let afterTwoReads = try Self.residentKB(of: t.pointer)
        #expect(afterTwoReads <= afterRelease + 2 * 2048 + 64, "\(afterTwoReads) kB after reading two values")
        #expect(t.buffer.elementsEqual(values))
        let afterAll = try Self.residentKB(of: t.pointer)
        #expect(afterAll >= tableKB)
        // Small tensors are left alone, and a detached version has nothing to give back.
        #expect(loaded.releaseResidentPages(minimumBytes: 1 << 30) == 0)
        let detached = try LoadedVersion(detachedModel: "d", kind: "k", manifest: [], tensors: [TensorData(name: "x", shape: [1], values: [1])])
        #expect(detached.releaseResidentPages(minimumBytes: 0) == 0)

        // Before it serves again (a retained version promoted), its pages are mapped again in one call: requests
        // after the swap find them mapped instead of faulting them in folio by folio.
        loaded.releaseResidentPages()
        #expect(try Self.residentKB(of: t.pointer) < 1024)
        let populated = loaded.prefaultResidentPages()
        #expect(populated >= lowest && populated <= tableBytes)
        let afterPrefault = try Self.residentKB(of: t.pointer)
        #expect(afterPrefault >= tableKB - 8, "\(afterPrefault) kB mapped after the prefault")
    }
}

/// The smaps reading picks the store's mapping by inode and name, and adds up its Rss lines only.
@Suite struct SmapsParsingTests {
    @Test func onlyTheStoreMappingsRssCounts() {
        let text = """
        55880df22000-55880df24000 r--p 00000000 fe:00 253911                     /usr/bin/cat
        Size:                  8 kB
        Rss:                   8 kB
        7fdd58000000-7fe558000000 r--s 00000000 fe:00 16351403                   /tmp/a store/data.mdb
        Size:           33554432 kB
        Rss:                  64 kB
        Pss:                  64 kB
        7fe558000000-7fe558001000 r--s 00000000 fe:00 16351403                   /tmp/a store/data.mdb
        Rss:                   4 kB
        7fe600000000-7fe600001000 r--s 00000000 fe:00 99                         /tmp/other/data.mdb
        Rss:                1000 kB
        7fe700000000-7fe700001000 rw-p 00000000 00:00 0
        Rss:                 500 kB
        """
        let bytes = Array(text.utf8)
        #expect(StoreEnvironment.mappedResidentBytes(smaps: bytes, inode: 16351403, fileName: "data.mdb") == 68 * 1024)
        #expect(StoreEnvironment.mappedResidentBytes(smaps: bytes, inode: 99, fileName: "data.mdb") == 1000 * 1024)
        #expect(StoreEnvironment.mappedResidentBytes(smaps: bytes, inode: 253911, fileName: "data.mdb") == 0)
        #expect(StoreEnvironment.mappedResidentBytes(smaps: [], inode: 1, fileName: "data.mdb") == 0)
    }
}
