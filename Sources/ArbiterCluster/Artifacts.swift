import ArbiterStore
import Foundation
import NIOCore
import NIOPosix

/// A pushed version's description, stored at ``ArtifactKeys/manifest(model:version:)`` and written after its
/// object: a manifest present means the object is whole. Replicas read it, download the object it names, and
/// check each size and SHA-256 before anything is imported.
///
/// Format 2 (written since 2026-12-04) keys the object by the SHA-256 of the store file it decompresses to
/// (``ArtifactKeys/object(model:storeSHA256:)``), known before the first byte is compressed, so the object is
/// compressed and uploaded in one pass; format 1 keyed it by its own SHA-256 (``ArtifactKeys/object(model:sha256:)``),
/// known only once it was compressed whole. Both are read.
public struct ArtifactManifest: Codable, Equatable, Sendable {
    public static let currentFormat = 2
    public static let readableFormats = 1...2

    public var format: Int
    public var model: String
    public var version: UInt64
    /// The plugin kind that serves the version.
    public var kind: String
    /// The compressed object: its key (content-addressed: a SHA-256 is in it, see the formats above), size and
    /// SHA-256 (checked by every replica as it downloads).
    public var object: Blob
    /// The store file the object decompresses to (a compacted `data.mdb` holding this version alone).
    public var store: Blob
    /// SHA-256 of the version's manifest record — its feature schema, parameters and golden cases with their
    /// expected outputs — so every replica can tell it validated against the same golden outputs.
    public var goldenDigest: String
    /// The version's tensor and manifest bytes.
    public var payloadBytes: Int
    public var pushedBy: String
    public var pushedUnixMillis: Int64

    public struct Blob: Codable, Equatable, Sendable {
        public var key: String?
        public var bytes: Int
        public var sha256: String
        /// `zstd` for the object; absent for the store file.
        public var encoding: String?
    }

    /// Parses and checks a manifest read from the bucket; the error names what is wrong.
    public static func decode(_ bytes: [UInt8], key: String) throws(ClusterError) -> ArtifactManifest {
        let m: ArtifactManifest
        do {
            m = try JSONDecoder().decode(ArtifactManifest.self, from: Data(bytes))
        } catch {
            throw ClusterError.corruptArtifact("\(key) is not a valid artifact manifest: \(error)")
        }
        guard readableFormats.contains(m.format) else {
            throw ClusterError.corruptArtifact("\(key) has artifact format \(m.format); this build reads formats \(readableFormats.lowerBound)...\(readableFormats.upperBound)")
        }
        let hex = Set("0123456789abcdef".utf8)
        for (name, blob) in [("object", m.object), ("store", m.store)] {
            guard blob.bytes >= 0, blob.sha256.utf8.count == 64, blob.sha256.utf8.allSatisfy(hex.contains) else {
                throw ClusterError.corruptArtifact("\(key): the \(name)'s size or sha256 is malformed")
            }
        }
        let expectedKey = m.format == 1 ? ArtifactKeys.object(model: m.model, sha256: m.object.sha256)
                                        : ArtifactKeys.object(model: m.model, storeSHA256: m.store.sha256)
        guard m.object.encoding == "zstd", let objectKey = m.object.key, objectKey == expectedKey else {
            throw ClusterError.corruptArtifact("\(key): the object must be zstd at \(expectedKey) (format \(m.format) names it by the \(m.format == 1 ? "object's" : "store file's") SHA-256), not \(m.object.key ?? "nowhere")")
        }
        guard key == ArtifactKeys.manifest(model: m.model, version: m.version) else {
            throw ClusterError.corruptArtifact("\(key) describes \(m.model) v\(m.version), which belongs at another key")
        }
        return m
    }

    func encoded() -> [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .prettyPrinted]
        return Array(try! encoder.encode(self))
    }
}

/// Where artifacts live in the bucket.
public enum ArtifactKeys {
    /// `models/<model>/versions/<version, 12 digits>.json`: key order is version order.
    public static func manifest(model: String, version: UInt64) -> String {
        let s = String(version)
        return "models/\(model)/versions/" + String(repeating: "0", count: max(0, 12 - s.count)) + s + ".json"
    }

    public static func manifestPrefix(model: String) -> String { "models/\(model)/versions/" }

    /// `models/<model>/stores/<sha256 of the store file>.mdb.zst` (artifact format 2): the same store pushed
    /// twice is stored once.
    public static func object(model: String, storeSHA256: String) -> String { "models/\(model)/stores/\(storeSHA256).mdb.zst" }

    /// `models/<model>/objects/<sha256 of the object>.mdb.zst` (artifact format 1, still read).
    public static func object(model: String, sha256: String) -> String { "models/\(model)/objects/\(sha256).mdb.zst" }
}

/// How long each stage of a transfer took, for the MiB/s an operator reads.
public struct StageTiming: Sendable, Equatable, CustomStringConvertible {
    public var name: String
    public var bytes: Int
    public var seconds: Double

    public var mebibytesPerSecond: Double { seconds > 0 ? Double(bytes) / 1_048_576 / seconds : 0 }

    public var description: String {
        let mib = Double(bytes) / 1_048_576
        return "\(name): \(Self.fixed(mib, 1)) MiB in \(Self.fixed(seconds, 2)) s (\(Self.fixed(mebibytesPerSecond, 0)) MiB/s)"
    }

    static func fixed(_ v: Double, _ digits: Int) -> String { String(format: "%.\(digits)f", v) }
}

func measure<T>(_ name: String, bytes: (T) -> Int, _ body: () async throws -> T) async rethrows -> (T, StageTiming) {
    let start = ContinuousClock.now
    let value = try await body()
    return (value, StageTiming(name: name, bytes: bytes(value), seconds: (ContinuousClock.now - start).seconds))
}

extension Duration {
    /// In seconds, with the fraction.
    var seconds: Double { Double(components.seconds) + Double(components.attoseconds) / 1e18 }
    /// In whole milliseconds (rounded toward zero).
    var wholeMilliseconds: Int64 { components.seconds * 1000 + components.attoseconds / 1_000_000_000_000_000 }
    /// In whole microseconds (rounded toward zero).
    var wholeMicroseconds: Int64 { components.seconds * 1_000_000 + components.attoseconds / 1_000_000_000_000 }
}

/// `arbiter-train push`: one version, from a store to a bucket.
public struct ArtifactPusher: Sendable {
    public var s3: S3Client
    /// Multipart part size (S3's minimum is 5 MiB for every part but the last).
    public var partSize: Int
    /// Parts being uploaded at once; each holds one part's bytes, and one more part is being compressed.
    public var concurrency: Int

    public init(s3: S3Client, partSize: Int = 16 << 20, concurrency: Int = 4) {
        self.s3 = s3
        self.partSize = max(5 << 20, partSize)
        self.concurrency = max(1, concurrency)
    }

    public struct Report: Sendable {
        public var manifest: ArtifactManifest
        public var stages: [StageTiming]
        /// This very version was pushed before: nothing was written.
        public var alreadyPushed: Bool
    }

    /// Exports `model` v`version` from `catalog` into a new store in `workDirectory`, then reads its compacted
    /// copy twice as LMDB makes it (``CompactionStream``: no file holds it): once to hash it — its SHA-256 names
    /// the object — and once to compress it into parts, each uploaded while the next is compressed; the two
    /// copies' XXH3 must agree before the upload completes. The manifest is written last. A version already
    /// pushed with the same store bytes is a success that writes nothing; a different version already pushed
    /// under that number is refused. `workDirectory` is removed at the end.
    public func push(catalog: Catalog, model: String, version: UInt64, workDirectory: String, pushedBy: String) async throws -> Report {
        let manifestKey = ArtifactKeys.manifest(model: model, version: version)
        try FileManager.default.createDirectory(atPath: workDirectory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: workDirectory) }
        let exportDir = workDirectory + "/export"

        // Asked first: a wrong endpoint or credential fails here, before minutes of export and compression.
        let existing = try await s3.get(manifestKey)
        // Hashing and compression are seconds of CPU: on a thread of their own, not the concurrency pool's.
        let worker = NIOThreadPool(numberOfThreads: 1)
        worker.start()
        do {
            let report = try await push(catalog: catalog, model: model, version: version, exportDir: exportDir,
                                        manifestKey: manifestKey, existing: existing, pushedBy: pushedBy, worker: worker)
            try await worker.shutdownGracefully()
            return report
        } catch {
            try? await worker.shutdownGracefully()
            throw error
        }
    }

    func push(catalog: Catalog, model: String, version: UInt64, exportDir: String, manifestKey: String,
              existing: [UInt8]?, pushedBy: String, worker: NIOThreadPool) async throws -> Report {
        var stages: [StageTiming] = []
        let (export, exportTiming) = try await measure("export", bytes: { (e: ExportedVersion) in e.payloadBytes }) {
            try catalog.exportVersion(model: model, version: version, to: exportDir, scratch: true)
        }
        stages.append(exportTiming)
        let exported = try StoreEnvironment.open(path: exportDir, configuration: StoreConfiguration(readOnly: true))
        let (store, hashTiming) = try await measure("compact and hash", bytes: { (h: CompactedStore) in h.bytes }) {
            try await worker.runIfActive { try CompactedStore.hash(exported) }
        }
        stages.append(hashTiming)

        // A version is pushed once: the same store again is a no-op, another under its number is refused.
        if let existing {
            let earlier = try ArtifactManifest.decode(existing, key: manifestKey)
            guard earlier.store.sha256 == store.hex else {
                throw ClusterError.configuration("\(model) v\(version) was already pushed with other contents (s3://\(s3.location.bucket)/\(manifestKey)): a version never changes once pushed")
            }
            return Report(manifest: earlier, stages: stages, alreadyPushed: true)
        }
        // The store names the object, and the store holds the model and version in its keys: an object at that
        // key can only be left by a push of this version that stopped before its manifest. Its compressed bytes
        // were never vouched for by a manifest; they are written again.
        let objectKey = ArtifactKeys.object(model: model, storeSHA256: store.hex)
        let (object, uploadTiming) = try await measure("compress and upload", bytes: { (b: ArtifactManifest.Blob) in b.bytes }) {
            try await compressAndUpload(compactionOf: exported, as: store, key: objectKey, worker: worker)
        }
        stages.append(uploadTiming)
        let goldenDigest = try catalog.environment.snapshot().bytes(StoreKeys.manifest(model, version)).map { Digests.sha256Hex($0) } ?? ""
        let manifest = ArtifactManifest(
            format: ArtifactManifest.currentFormat, model: model, version: version, kind: export.meta.kind, object: object,
            store: .init(key: nil, bytes: store.bytes, sha256: store.hex, encoding: nil),
            goldenDigest: goldenDigest, payloadBytes: export.payloadBytes, pushedBy: pushedBy,
            pushedUnixMillis: Int64(Date().timeIntervalSince1970 * 1000))
        try await s3.put(manifestKey, bytes: manifest.encoded(), contentType: "application/json")
        return Report(manifest: manifest, stages: stages, alreadyPushed: false)
    }

    /// Compresses a second compacted copy of `environment` into `partSize` parts on `worker` and uploads each as
    /// it is made, `concurrency` at a time (one PUT when the whole object fits in one part). The copy must be
    /// the one `store` describes (its size and XXH3) before the upload completes; a multipart upload that fails
    /// is aborted so no parts linger in the bucket. Returns the object's size and SHA-256.
    func compressAndUpload(compactionOf environment: StoreEnvironment, as store: CompactedStore, key: String,
                           worker: NIOThreadPool) async throws -> ArtifactManifest.Blob {
        let stream = try CompactionStream(environment: environment)
        let compressor = try ZstdPartCompressor(source: stream, rawBytes: store.bytes, partSize: partSize)
        let next: @Sendable () async throws -> [UInt8]? = { try await worker.runIfActive { try compressor.nextPart() } }
        // Before anything becomes visible in the bucket: the copy compressed is the copy hashed.
        let check: @Sendable () async throws -> Void = {
            try await worker.runIfActive { try stream.finish() }
            guard compressor.rawChecksum.digest == store.xxh3 else {
                throw ClusterError.io("\(stream.name) differed between its two passes (XXH3 \(Checksum.hex(store.xxh3)), then \(Checksum.hex(compressor.rawChecksum.digest))): nothing was uploaded under \(key)")
            }
        }
        guard let first = try await next() else { throw ClusterError.compression("compressing \(stream.name) produced nothing") }
        if compressor.isFinished {
            try await check()
            try await s3.put(key, bytes: first)
        } else {
            let uploadID = try await s3.createMultipartUpload(key)
            do {
                var etags: [(number: Int, eTag: String)] = []
                try await withThrowingTaskGroup(of: (Int, String).self) { group in
                    var pending: [UInt8]? = first
                    var number = 0
                    var inFlight = 0
                    while let bytes = pending {
                        number += 1
                        guard number <= 10_000 else {
                            throw ClusterError.configuration("\(stream.name) needs more than S3's 10,000 parts of \(partSize >> 20) MiB: push with larger parts (--part-mib)")
                        }
                        let partNumber = number
                        group.addTask { [s3] in
                            (partNumber, try await s3.uploadPart(key, uploadID: uploadID, partNumber: partNumber, bytes: bytes))
                        }
                        inFlight += 1
                        pending = nil
                        // The next part is compressed while this one and the others travel.
                        let following = try await next()
                        while inFlight >= concurrency, let done = try await group.next() {
                            etags.append(done)
                            inFlight -= 1
                        }
                        pending = following
                    }
                    while let done = try await group.next() { etags.append(done) }
                }
                try await check()
                try await s3.completeMultipartUpload(key, uploadID: uploadID, parts: etags)
            } catch {
                try? await s3.abortMultipartUpload(key, uploadID: uploadID)
                throw error
            }
        }
        return .init(key: key, bytes: compressor.compressed.byteCount, sha256: compressor.compressed.hex(), encoding: "zstd")
    }
}

/// A store's compacted copy as `push` hashed it: its SHA-256 (which names the object), size and XXH3 (which the
/// second copy, the one compressed, must match).
struct CompactedStore: Sendable {
    var hex: String
    var bytes: Int
    var xxh3: UInt64

    /// Reads one compacted copy of `environment` through, hashing it.
    static func hash(_ environment: StoreEnvironment) throws(ClusterError) -> CompactedStore {
        let stream = try CompactionStream(environment: environment)
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 4 << 20, alignment: 64)
        defer { buffer.deallocate() }
        var sha = StreamingSHA256()
        let xxh = StreamingXXH3()
        while true {
            let n = try stream.read(into: buffer)
            if n == 0 { break }
            let bytes = UnsafeRawBufferPointer(rebasing: buffer[0..<n])
            sha.update(bytes)
            xxh.update(bytes)
        }
        try stream.finish()
        return CompactedStore(hex: sha.hex(), bytes: sha.byteCount, xxh3: xxh.digest)
    }
}

/// The replica's side: a pushed version, from the bucket to a local store file, checked.
public struct ArtifactFetcher: Sendable {
    public var s3: S3Client

    public init(s3: S3Client) { self.s3 = s3 }

    /// The manifest of `model` v`version`, or nil when it has not been pushed (or not finished pushing).
    public func manifest(model: String, version: UInt64) async throws -> ArtifactManifest? {
        let key = ArtifactKeys.manifest(model: model, version: version)
        guard let bytes = try await s3.get(key, limit: 1 << 20) else { return nil }
        return try ArtifactManifest.decode(bytes, key: key)
    }

    /// The versions of `model` pushed so far, in order.
    public func pushedVersions(model: String) async throws -> [UInt64] {
        let prefix = ArtifactKeys.manifestPrefix(model: model)
        return try await s3.list(prefix: prefix).compactMap { key in
            guard key.hasPrefix(prefix), key.hasSuffix(".json") else { return nil }
            return UInt64(key.dropFirst(prefix.count).dropLast(5))
        }.sorted()
    }

    /// Downloads the object `manifest` names and decompresses it as it arrives into `directory/data.mdb`
    /// (`directory` new or empty), checking the object's size and SHA-256 and zstd's checksum of the content;
    /// the store's own checksums of every tensor are checked again when the server validates the version.
    /// The hashing and decompression run on `background` when given (seconds of CPU for a large version, which
    /// a serving replica gives at idle priority), two megabytes at a time, else here; while one batch is
    /// decompressed the next arrives (the received buffers are handed over as they are, not copied), and no more
    /// than two batches are held. Nothing is written twice:
    /// no copy of the compressed object is kept, and the scratch file is not flushed to disk (it is imported
    /// and removed at once). A connection broken mid-object is resumed; anything that does not match is
    /// refused with what differed, and the file removed.
    public func fetch(_ manifest: ArtifactManifest, into directory: String, background: BackgroundWork? = nil) async throws -> [StageTiming] {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let path = directory + "/data.mdb"
        // The batch being decompressed, if any: awaited before the next starts (the decoder takes its input in
        // order, one batch at a time) and before the decoder or the file is let go.
        var inFlight: Task<Void, any Error>?
        do {
            let decoder = try ZstdFileDecoder(writingTo: path, expectedBytes: manifest.store.bytes, hashesOutput: false)
            var batch: [ByteBuffer] = []
            var batchBytes = 0
            func hand() async throws {
                if let previous = inFlight {
                    inFlight = nil
                    try await previous.value
                }
                guard batchBytes > 0 else { return }
                let pieces = batch
                batch = []
                batchBytes = 0
                let feed: @Sendable () throws -> Void = {
                    for piece in pieces { try piece.withUnsafeReadableBytes { b throws(ClusterError) in try decoder.feed(b) } }
                }
                if let background {
                    inFlight = Task { try await background.run(feed) }
                } else {
                    try feed()
                }
            }
            let (_, timing) = try await measure("download and decompress", bytes: { (_: Int) in manifest.object.bytes }) {
                let n = try await s3.download(manifest.object.key!, expectedSize: manifest.object.bytes) { chunk in
                    batch.append(chunk)
                    batchBytes += chunk.readableBytes
                    if batchBytes >= 2 << 20 { try await hand() }
                }
                try await hand()
                try await hand()  // waits for the last batch
                return n
            }
            try decoder.finish(sync: false)
            guard decoder.compressed.hex() == manifest.object.sha256 else {
                throw ClusterError.corruptArtifact("s3://\(s3.location.bucket)/\(manifest.object.key!) has SHA-256 \(decoder.compressed.hex()); its manifest says \(manifest.object.sha256)")
            }
            guard decoder.outputBytes == manifest.store.bytes else {
                throw ClusterError.corruptArtifact("\(manifest.model) v\(manifest.version)'s store file is \(decoder.outputBytes) bytes; its manifest says \(manifest.store.bytes)")
            }
            return [timing]
        } catch {
            if let inFlight { _ = try? await inFlight.value }
            try? FileManager.default.removeItem(atPath: path)
            throw error
        }
    }
}
