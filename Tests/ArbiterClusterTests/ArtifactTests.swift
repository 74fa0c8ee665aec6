import ArbiterStore
import ArbiterTestSupport
import AsyncHTTPClient
import Foundation
import NIOPosix
import Testing
@testable import ArbiterCluster

/// Compression of store files, and push and fetch against a real S3 server (SeaweedFS) that checks every
/// request's SigV4 signature.
@Suite struct ArtifactTests {
    static func temporary(_ tag: String) -> String {
        FileManager.default.temporaryDirectory.appendingPathComponent("arbiter-\(tag)-\(UUID().uuidString)").path
    }

    /// A file's bytes, read in order (what the push reads from its compaction pipe).
    final class FileBytes: ByteSource {
        let bytes: [UInt8]
        let name: String
        var offset = 0

        init(_ path: String) throws {
            bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: path)))
            name = path
        }

        func read(into buffer: UnsafeMutableRawBufferPointer) throws(ClusterError) -> Int {
            let n = min(buffer.count, bytes.count - offset)
            bytes[offset..<(offset + n)].withUnsafeBytes { buffer.copyMemory(from: $0) }
            offset += n
            return n
        }
    }

    static func compressor(_ path: String, partSize: Int) throws -> ZstdPartCompressor {
        let source = try FileBytes(path)
        return try ZstdPartCompressor(source: source, rawBytes: source.bytes.count, partSize: partSize)
    }

    /// A file's SHA-256 and size.
    static func sha256(file path: String) throws -> (String, Int) {
        let data = try Data(contentsOf: URL(fileURLWithPath: path))
        return (Digests.sha256Hex(data), data.count)
    }

    /// Bytes that compress a little (a repeating pattern) and bytes that do not (a random stream).
    static func sampleFile(_ path: String, random: Int, pattern: Int) throws {
        var g = SystemRandomNumberGenerator()
        var bytes = (0..<random).map { _ in UInt8.random(in: 0...255, using: &g) }
        bytes += (0..<pattern).map { UInt8($0 % 251) }
        try Data(bytes).write(to: URL(fileURLWithPath: path))
    }

    @Test func compressionRoundTripsAndRefusesDamage() throws {
        let dir = Self.temporary("zstd")
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try Self.sampleFile(dir + "/in", random: 3 << 20, pattern: 5 << 20)
        let original = try Data(contentsOf: URL(fileURLWithPath: dir + "/in"))
        let originalHash = Digests.sha256Hex(original)
        // Parts of 1 MiB (the random third barely shrinks, so there are several): each full but the last, and
        // together one frame.
        let compressor = try Self.compressor(dir + "/in", partSize: 1 << 20)
        var parts: [[UInt8]] = []
        while let part = try compressor.nextPart() { parts.append(part) }
        #expect(compressor.isFinished)
        #expect(try compressor.nextPart() == nil)
        #expect(parts.count >= 3)
        #expect(parts.dropLast().allSatisfy { $0.count == 1 << 20 } && parts.last!.count <= 1 << 20 && !parts.last!.isEmpty)
        let compressed = parts.flatMap { $0 }
        #expect(compressor.rawBytes == original.count)
        #expect(compressor.compressed.byteCount == compressed.count && compressor.compressed.hex() == Digests.sha256Hex(compressed))
        #expect(compressed.count < original.count / 2)

        // Fed in uneven pieces, it decompresses to the original.
        let decoder = try ZstdFileDecoder(writingTo: dir + "/out", expectedBytes: original.count)
        var offset = 0, piece = 1
        while offset < compressed.count {
            let n = min(piece, compressed.count - offset)
            try compressed[offset..<(offset + n)].withUnsafeBytes { try decoder.feed($0) }
            offset += n
            piece = piece * 3 + 7
        }
        try decoder.finish()
        #expect(decoder.raw.hex() == originalHash && decoder.compressed.hex() == compressor.compressed.hex())
        #expect(try Data(contentsOf: URL(fileURLWithPath: dir + "/out")) == original)

        // A flipped byte inside the frame fails zstd's checksum or its parse; a cut stream never finishes;
        // a limit below the content refuses before writing past it.
        var flipped = compressed
        flipped[flipped.count / 2] ^= 0x40
        let bad = try ZstdFileDecoder(writingTo: dir + "/bad", expectedBytes: original.count)
        #expect(throws: ClusterError.self) {
            try flipped.withUnsafeBytes { try bad.feed($0) }
            try bad.finish()
        }
        let cut = try ZstdFileDecoder(writingTo: dir + "/cut", expectedBytes: original.count)
        try compressed[0..<(compressed.count - 10)].withUnsafeBytes { try cut.feed($0) }
        #expect(throws: ClusterError.self) { try cut.finish() }
        let small = try ZstdFileDecoder(writingTo: dir + "/small", expectedBytes: original.count - 1)
        #expect(throws: ClusterError.self) { try compressed.withUnsafeBytes { try small.feed($0) } }
        #expect(small.outputBytes <= original.count - 1)

        // A part larger than the whole object: one part, the frame complete. An empty file: one small frame.
        let whole = try Self.compressor(dir + "/in", partSize: 16 << 20)
        #expect(try whole.nextPart() == compressed)
        #expect(whole.isFinished)
        #expect(FileManager.default.createFile(atPath: dir + "/empty", contents: Data()))
        let empty = try Self.compressor(dir + "/empty", partSize: 1 << 20)
        let frame = try #require(try empty.nextPart())
        #expect(empty.isFinished && !frame.isEmpty)
        let emptyOut = try ZstdFileDecoder(writingTo: dir + "/empty.out", expectedBytes: 0)
        try frame.withUnsafeBytes { try emptyOut.feed($0) }
        try emptyOut.finish()
        #expect(emptyOut.outputBytes == 0)
    }

    /// The compacted copy read from a pipe is the one `copyCompacted(toFile:)` writes; read twice it is the same;
    /// given up after a few bytes, the writer is not left blocked.
    @Test func compactionStreamsAreTheCompactedFile() throws {
        let dir = Self.temporary("compaction")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let env = try StoreEnvironment.open(path: dir + "/store", configuration: StoreConfiguration(mapSize: 64 << 20, create: true))
        var g = SystemRandomNumberGenerator()
        for h in 1...3 {   // three commits leave free pages (B-tree pages copied on write) for compaction to drop
            try Catalog(environment: env).publish(model: "m", kind: "k", manifest: Array("{\"h\": \(h)}".utf8),
                tensors: [TensorData(name: "t", shape: [1 << 20], values: (0..<(1 << 20)).map { _ in Float.random(in: -1...1, using: &g) })],
                metrics: [:])
        }
        let fileBytes = try env.copyCompacted(toFile: dir + "/compact.mdb", sync: false)
        let (fileHash, _) = try Self.sha256(file: dir + "/compact.mdb")
        let first = try CompactedStore.hash(env)
        let second = try CompactedStore.hash(env)
        #expect(first.bytes == fileBytes && first.hex == fileHash)
        #expect(second.hex == first.hex && second.xxh3 == first.xxh3)
        // Compressed from the stream: the parts decompress to the compacted file, and its XXH3 is the first pass's.
        let compressor = try ZstdPartCompressor(source: try CompactionStream(environment: env), rawBytes: first.bytes, partSize: 1 << 20)
        var parts: [UInt8] = []
        while let part = try compressor.nextPart() { parts += part }
        #expect(compressor.rawChecksum.digest == first.xxh3)
        let decoder = try ZstdFileDecoder(writingTo: dir + "/out.mdb", expectedBytes: first.bytes)
        try parts.withUnsafeBytes { try decoder.feed($0) }
        try decoder.finish(sync: false)
        #expect(decoder.raw.hex() == first.hex)
        // Abandoned after a few bytes (an upload failed): finishing reads the rest away; so does letting go.
        let early = try CompactionStream(environment: env)
        var few = [UInt8](repeating: 0, count: 100)
        #expect(try few.withUnsafeMutableBytes { try early.read(into: $0) } == 100)
        try early.finish()
        do {
            let dropped = try CompactionStream(environment: env)
            #expect(try few.withUnsafeMutableBytes { try dropped.read(into: $0) } == 100)
        }
        #expect(try CompactedStore.hash(env).hex == first.hex)
    }

    @Test func manifestsAreCheckedWhenRead() throws {
        let sha = String(repeating: "ab", count: 32)
        let storeSha = String(repeating: "cd", count: 32)
        let good = ArtifactManifest(format: 2, model: "m", version: 3, kind: "k",
                                    object: .init(key: ArtifactKeys.object(model: "m", storeSHA256: storeSha), bytes: 10, sha256: sha, encoding: "zstd"),
                                    store: .init(key: nil, bytes: 20, sha256: storeSha, encoding: nil),
                                    goldenDigest: sha, payloadBytes: 5, pushedBy: "t", pushedUnixMillis: 0)
        #expect(good.object.key == "models/m/stores/\(storeSha).mdb.zst")
        let key = ArtifactKeys.manifest(model: "m", version: 3)
        #expect(key == "models/m/versions/000000000003.json")
        #expect(try ArtifactManifest.decode(good.encoded(), key: key) == good)
        #expect(throws: ClusterError.self) { try ArtifactManifest.decode(good.encoded(), key: ArtifactKeys.manifest(model: "m", version: 4)) }
        #expect(throws: ClusterError.self) { try ArtifactManifest.decode(Array("{}".utf8), key: key) }
        var wrongKey = good
        wrongKey.object.key = "models/m/objects/other.mdb.zst"
        #expect(throws: ClusterError.self) { try ArtifactManifest.decode(wrongKey.encoded(), key: key) }
        var badSha = good
        badSha.store.sha256 = "xyz"
        #expect(throws: ClusterError.self) { try ArtifactManifest.decode(badSha.encoded(), key: key) }
        var future = good
        future.format = 3
        #expect(throws: ClusterError.self) { try ArtifactManifest.decode(future.encoded(), key: key) }
        // Format 1 (pushed before 2026-12-04) named the object by its own SHA-256: still read, and each format
        // holds its own rule.
        var formatOne = good
        formatOne.format = 1
        #expect(throws: ClusterError.self) { try ArtifactManifest.decode(formatOne.encoded(), key: key) }
        formatOne.object.key = ArtifactKeys.object(model: "m", sha256: sha)
        #expect(formatOne.object.key == "models/m/objects/\(sha).mdb.zst")
        #expect(try ArtifactManifest.decode(formatOne.encoded(), key: key) == formatOne)
        var formatTwoWithOldKey = formatOne
        formatTwoWithOldKey.format = 2
        #expect(throws: ClusterError.self) { try ArtifactManifest.decode(formatTwoWithOldKey.encoded(), key: key) }
    }

    /// Push a version whose table is shared in the trainer's store, fetch it as a replica would, import it;
    /// push again (a no-op), push other bytes under the same number (refused), damage the object (refused on
    /// fetch), and sign with a wrong secret (refused by the server).
    @Test(.timeLimit(.minutes(3))) func pushFetchImportAgainstARealS3Server() async throws {
        let s3Server = try LocalS3()
        defer { s3Server.stop() }
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let http = S3Client.makeHTTPClient(eventLoopGroup: group)
        let work = Self.temporary("push")
        defer { try? FileManager.default.removeItem(atPath: work) }
        do {
            let location = try S3Location(endpoint: s3Server.endpoint + "/", bucket: "arbiter-models")
            let s3 = S3Client(location: location, credentials: S3Credentials(accessKeyID: s3Server.accessKey, secretAccessKey: s3Server.secretKey), http: http)
            try await s3.createBucket()
            try await s3.createBucket()   // already ours: fine

            // The trainer's store: v2 shares v1's 12 MiB table (random floats: zstd cannot shrink them much).
            let trainerPath = work + "/trainer"
            let trainer = Catalog(environment: try StoreEnvironment.open(path: trainerPath, configuration: StoreConfiguration(mapSize: 256 << 20, create: true)))
            var g = SystemRandomNumberGenerator()
            let table = TensorData(name: "table", shape: [3 << 20], values: (0..<(3 << 20)).map { _ in Float.random(in: -1...1, using: &g) })
            for h in 1...2 {
                try trainer.publish(model: "leads", kind: "k", manifest: Array("{\"golden\": \(h)}".utf8),
                                    tensors: [table, TensorData(name: "head", shape: [2], values: [Float(h), 1])], metrics: [:])
            }
            let pusher = ArtifactPusher(s3: s3, partSize: 5 << 20, concurrency: 2)
            let report = try await pusher.push(catalog: trainer, model: "leads", version: 2, workDirectory: work + "/push", pushedBy: "test")
            #expect(!report.alreadyPushed)
            #expect(report.stages.map(\.name) == ["export", "compact and hash", "compress and upload"])
            #expect(report.manifest.format == 2 && report.manifest.object.key == ArtifactKeys.object(model: "leads", storeSHA256: report.manifest.store.sha256))
            #expect(report.manifest.object.bytes > 10 << 20)   // three parts of 5 MiB at most
            #expect(!FileManager.default.fileExists(atPath: work + "/push"))
            let fetcher = ArtifactFetcher(s3: s3)
            #expect(try await fetcher.pushedVersions(model: "leads") == [2])
            let manifest = try #require(try await fetcher.manifest(model: "leads", version: 2))
            #expect(manifest == report.manifest)
            #expect(try await fetcher.manifest(model: "leads", version: 1) == nil)
            #expect(manifest.goldenDigest == Digests.sha256Hex(Array("{\"golden\": 2}".utf8)))

            // The replica: fetch, check, import under v2, inactive; the bytes are the trainer's.
            let stage = work + "/stage"
            _ = try await fetcher.fetch(manifest, into: stage)
            // The object's key names the store file it decompresses to.
            #expect(try Self.sha256(file: stage + "/data.mdb") == (manifest.store.sha256, manifest.store.bytes))
            let replicaPath = work + "/replica"
            let replica = Catalog(environment: try StoreEnvironment.open(path: replicaPath, configuration: StoreConfiguration(mapSize: 256 << 20, create: true)))
            let artifact = try StoreEnvironment.open(path: stage, configuration: StoreConfiguration(readOnly: true))
            #expect(try replica.importVersion(from: artifact, model: "leads", version: 2) == .imported(sharedBytes: 0))
            let trainerTable = try trainer.environment.snapshot().bytes(StoreKeys.tensor("leads", 1, "table"))
            #expect(try replica.environment.snapshot().bytes(StoreKeys.tensor("leads", 2, "table")) == trainerTable)
            #expect(try replica.activeVersion(model: "leads") == nil)

            // A second compacted copy that differs from the one hashed (here: a wrong XXH3 for it) is refused
            // before the multipart upload completes: nothing appears under the key.
            do {
                let exported = work + "/export-check"
                _ = try trainer.exportVersion(model: "leads", version: 2, to: exported, scratch: true)
                let env = try StoreEnvironment.open(path: exported, configuration: StoreConfiguration(readOnly: true))
                var hashed = try CompactedStore.hash(env)
                hashed.xxh3 &+= 1
                let worker = NIOThreadPool(numberOfThreads: 1)
                worker.start()
                let key = "models/leads/stores/check.mdb.zst"
                await #expect(throws: ClusterError.self) {
                    _ = try await pusher.compressAndUpload(compactionOf: env, as: hashed, key: key, worker: worker)
                }
                try await worker.shutdownGracefully()
                #expect(try await s3.head(key) == nil)
            }

            // Pushed again: nothing written. Another store's v2: refused.
            let again = try await pusher.push(catalog: trainer, model: "leads", version: 2, workDirectory: work + "/push", pushedBy: "test")
            #expect(again.alreadyPushed)
            let otherPath = work + "/other"
            let other = Catalog(environment: try StoreEnvironment.open(path: otherPath, configuration: StoreConfiguration(mapSize: 64 << 20, create: true)))
            for h in 1...2 {
                try other.publish(model: "leads", kind: "k", manifest: Array("{\"other\": \(h)}".utf8),
                                  tensors: [TensorData(name: "head", shape: [2], values: [Float(h), 2])], metrics: [:])
            }
            await #expect(throws: ClusterError.self) {
                _ = try await pusher.push(catalog: other, model: "leads", version: 2, workDirectory: work + "/push2", pushedBy: "test")
            }

            // The object damaged in the bucket (same size, one byte changed): the fetch refuses it and leaves no file.
            var damaged = try #require(try await s3.get(manifest.object.key!, limit: 64 << 20))
            damaged[damaged.count - 100] ^= 1
            try await s3.put(manifest.object.key!, bytes: damaged)
            let badStage = work + "/stage-bad"
            await #expect(throws: ClusterError.self) { _ = try await fetcher.fetch(manifest, into: badStage) }
            #expect(!FileManager.default.fileExists(atPath: badStage + "/data.mdb"))

            // A push that stopped after its object and before its manifest (the manifest deleted here, the object
            // left damaged): pushed again, the object is written again, whole.
            try await s3.delete(ArtifactKeys.manifest(model: "leads", version: 2))
            #expect(try await fetcher.manifest(model: "leads", version: 2) == nil)
            let repushed = try await pusher.push(catalog: trainer, model: "leads", version: 2, workDirectory: work + "/push3", pushedBy: "test")
            #expect(!repushed.alreadyPushed && repushed.manifest.object == manifest.object)
            _ = try await fetcher.fetch(repushed.manifest, into: work + "/stage-again")

            // A wrong secret: the server refuses the signature, and the error says so.
            let forged = S3Client(location: location, credentials: S3Credentials(accessKeyID: s3Server.accessKey, secretAccessKey: "wrong"), http: http)
            var status = 0
            do {
                _ = try await forged.head(manifest.object.key!)
            } catch {
                if case .s3(_, _, let s, _, _) = error { status = s }
            }
            #expect(status == 403)
        } catch {
            try? await http.shutdown()
            try? await group.shutdownGracefully()
            throw error
        }
        try await http.shutdown()
        try await group.shutdownGracefully()
    }
}
