import Foundation
import Logging

/// A replica that starts with no store at all (a new machine, a lost volume) begins from a pushed artifact
/// rather than importing into an empty store: an artifact is itself a store whose active version is the one it
/// holds (``Catalog/exportVersion(model:version:to:)``), so the largest committed version, downloaded and
/// checked, becomes the store file before the server opens it — one copy of a large version written, not two,
/// and no import to wait for. The server then validates and loads it as any store's active version at start;
/// the other committed models are staged and activated as on any replica, and the replica is ready only once
/// it serves them all.
public enum StoreSeed {
    /// What seeding did.
    public enum Outcome: Sendable, Equatable {
        /// `storeDirectory` already holds a store: nothing was done.
        case storeExists
        /// Nothing is committed yet (or nothing of a kind this server serves).
        case nothingCommitted
        /// The store is the artifact of this version.
        case seeded(model: String, version: UInt64, bytes: Int, timings: [StageTiming])
    }

    /// Seeds `storeDirectory` (which must not hold a `data.mdb`) with the committed version of the largest
    /// store among the models `serves` accepts the kind of. The file is written beside the store's, flushed,
    /// checked, and renamed into place: a failure at any point leaves no store, and the replica starts empty.
    public static func seed(storeDirectory: String, plane: ControlPlane, fetcher: ArtifactFetcher,
                            background: BackgroundWork?, slots: DownloadSlots? = nil, serves: (String) -> Bool,
                            logger: Logger) async throws -> Outcome {
        let storeFile = storeDirectory + "/data.mdb"
        if FileManager.default.fileExists(atPath: storeFile) { return .storeExists }
        var committed: [(model: String, version: UInt64)] = []
        for kv in try await plane.etcd.range(plane.keys.models, prefix: true).kvs {
            guard let (model, kind) = plane.keys.parseModelKey(kv.key), kind == "active" else { continue }
            committed.append((model, try Records.decode(VersionPointer.self, kv.value, key: kv.key).version))
        }
        var largest: ArtifactManifest?
        for (model, version) in committed.sorted(by: { $0.model < $1.model }) {
            guard let manifest = try await fetcher.manifest(model: model, version: version), serves(manifest.kind) else { continue }
            if manifest.store.bytes > largest?.store.bytes ?? -1 { largest = manifest }
        }
        guard let manifest = largest else { return .nothingCommitted }
        try FileManager.default.createDirectory(atPath: storeDirectory, withIntermediateDirectories: true)
        let scratch = storeDirectory + "/.seed-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: scratch) }
        logger.info("the store is empty: seeding it with \(manifest.model) v\(manifest.version), the largest committed version (\(manifest.store.bytes >> 20) MiB)")
        // Held through the flush as well, the seeding's counterpart of staging's import.
        let slot = try await slots?.acquire(logger: logger)
        defer { slot?.release() }
        let timings = try await fetcher.fetch(manifest, into: scratch, background: background)
        let file = try PosixFile(reading: scratch + "/data.mdb")
        try file.sync()
        guard rename(scratch + "/data.mdb", storeFile) == 0 else {
            throw ClusterError.io("cannot move the seeded store into \(storeFile): \(String(cString: strerror(errno)))")
        }
        let directory = try PosixFile(reading: storeDirectory)
        try directory.sync()
        return .seeded(model: manifest.model, version: manifest.version, bytes: manifest.store.bytes, timings: timings)
    }
}
