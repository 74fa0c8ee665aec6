import ArbiterStore
import Foundation
import Testing

/// A store written through its map (StoreConfiguration.writeMap, a cluster replica's): what is written reads
/// back, survives reopening, imports work, disk is reserved ahead of the last page, and a data file cut short
/// is refused before LMDB sizes the file to the map (which would hide the cut behind zeros).
@Suite struct WriteMapTests {
    static func configuration(create: Bool = true) -> StoreConfiguration {
        var c = StoreConfiguration(mapSize: 512 << 20, create: create)
        c.writeMap = true
        return c
    }

    static func fileStat(_ path: String) -> stat {
        var st = stat()
        _ = stat(path + "/data.mdb", &st)
        return st
    }

    @Test func writesReadBackSurviveReopeningAndReserveDiskAhead() throws {
        let path = temporaryStorePath("writemap")
        let sourcePath = temporaryStorePath("writemap-source")
        let artifactPath = temporaryStorePath("writemap-artifact")
        defer { for p in [path, sourcePath, artifactPath] { try? FileManager.default.removeItem(atPath: p) } }
        let table = TransferTests.tensors(table: 3, head: 1)
        do {
            let env = try StoreEnvironment.open(path: path, configuration: Self.configuration())
            #expect(env.writesThroughMap)
            let catalog = Catalog(environment: env)
            let v1 = try catalog.publish(model: "m", kind: "k", manifest: Array("{}".utf8), tensors: table, metrics: [:])
            #expect(try TransferTests.tensorBytes(catalog, v1, "table") == table[0].bytes)

            // An import (what a replica does with a pushed version) goes through the map too.
            let source = Catalog(environment: try StoreEnvironment.open(path: sourcePath, configuration: StoreConfiguration(mapSize: 256 << 20, create: true)))
            _ = try TransferTests.publish(source, table: 7, head: 2)
            let v2 = try TransferTests.publish(source, table: 9, head: 3)
            _ = try source.exportVersion(model: "m", version: v2, to: artifactPath)
            let artifact = try StoreEnvironment.open(path: artifactPath, configuration: StoreConfiguration(readOnly: true))
            #expect(try catalog.importVersion(from: artifact, model: "m", version: 2) == .imported(sharedBytes: 0))
            #expect(try TransferTests.tensorBytes(catalog, 2, "table") == TransferTests.tensors(table: 9, head: 3)[0].bytes)

            // LMDB sized the file to the map; the disk holds the pages written and the reservation ahead of them.
            let st = Self.fileStat(path)
            #expect(Int(st.st_size) == env.mapSize)
            let pages = env.pageStatistics()
            let used = pages.pagesUsed * pages.pageSize
            #expect(pages.fileBytes < env.mapSize)
            #expect(pages.fileBytes >= used + StoreConfiguration.writeMapSlack / 2, "\(pages.fileBytes) on disk, \(used) used")
        }
        // Closed and opened again (through the map, then not): every byte is there.
        for writeMap in [true, false] {
            var c = StoreConfiguration()
            c.writeMap = writeMap
            let env = try StoreEnvironment.open(path: path, configuration: c)
            #expect(env.writesThroughMap == writeMap)
            let catalog = Catalog(environment: env)
            #expect(try TransferTests.tensorBytes(catalog, 1, "table") == table[0].bytes)
            #expect(try TransferTests.tensorBytes(catalog, 2, "table") == TransferTests.tensors(table: 9, head: 3)[0].bytes)
        }
        // Read-only: not through the map, whatever is asked.
        var readOnly = StoreConfiguration(readOnly: true)
        readOnly.writeMap = true
        #expect(try StoreEnvironment.open(path: path, configuration: readOnly).writesThroughMap == false)
    }

    @Test func aDataFileCutShortIsRefusedBeforeItIsSizedToTheMap() throws {
        let path = temporaryStorePath("writemap-cut")
        defer { try? FileManager.default.removeItem(atPath: path) }
        do {
            let catalog = Catalog(environment: try StoreEnvironment.open(path: path, configuration: StoreConfiguration(mapSize: 256 << 20, create: true)))
            _ = try TransferTests.publish(catalog, table: 1, head: 1)
        }
        let size = Int(Self.fileStat(path).st_size)
        #expect(truncate(path + "/data.mdb", off_t(size / 2)) == 0)
        #expect {
            try StoreEnvironment.open(path: path, configuration: Self.configuration(create: false))
        } throws: { error in
            guard case StoreError.corrupt(let why) = error else { return false }
            return why.contains("cut short")
        }
        // Left as it was found: not extended to the map.
        #expect(Int(Self.fileStat(path).st_size) == size / 2)
    }
}
