import CLMDB
import Foundation

/// What ``Catalog/exportVersion(model:version:to:)`` wrote.
public struct ExportedVersion: Sendable, Equatable {
    public var meta: VersionMeta
    /// The version's tensor bytes and manifest bytes.
    public var payloadBytes: Int
}

/// What ``Catalog/importVersion(from:model:version:)`` did.
public enum ImportOutcome: Sendable, Equatable {
    /// Written, as the model's retained (not active) version; `sharedBytes` of its tensors were equal to a
    /// local version's and are read from there.
    case imported(sharedBytes: Int)
    /// The store already holds this very version (same manifest and tensor checksums): nothing was written.
    case alreadyPresent
}

extension Catalog {
    /// Writes version `version` of `model`, alone, into a new store at `directory` (which must not hold one;
    /// `scratch`: committed without a flush to disk and written through the map, for a store thrown away after
    /// use):
    /// every tensor under the version's own key (shared tensors are resolved), its manifest, its meta, and
    /// `latest` and `active` naming it. The result is a store like any other — `arbiterd --store` serves it,
    /// `mdb_dump` reads it — and what ``importVersion(from:model:version:)`` takes on another machine.
    /// One write transaction: a failure leaves a store with nothing in it.
    public func exportVersion(model: String, version: UInt64, to directory: String, scratch: Bool = false) throws -> ExportedVersion {
        try StoreKeys.validate(model: model)
        let snapshot = try environment.snapshot()
        guard let metaBytes = try snapshot.bytes(StoreKeys.meta(model, version)) else {
            throw StoreError.unknownVersion(model: model, version: version)
        }
        var meta = try decodeMeta(Data(metaBytes), key: StoreKeys.meta(model, version))
        guard let manifest = try snapshot.bytes(StoreKeys.manifest(model, version)) else {
            throw StoreError.corrupt("\(StoreKeys.manifest(model, version)) is missing")
        }
        let payload = meta.tensors.reduce(manifest.count) { $0 + $1.byteCount }
        if FileManager.default.fileExists(atPath: directory + "/data.mdb") {
            throw StoreError.invalidRequest("\(directory) already holds a store; export writes a new one")
        }
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        // Room for the values, their page headers and the B-tree: a quarter again, and 64 MiB.
        let pageRound = 1 << 20
        let mapSize = ((payload + payload / 4 + (64 << 20)) + pageRound - 1) / pageRound * pageRound
        var configuration = StoreConfiguration(mapSize: mapSize, create: true)
        configuration.scratch = scratch
        // Thrown away after use: written through the map, it touches the version's size in memory once, not twice.
        configuration.writeMap = scratch
        let destination = try StoreEnvironment.open(path: directory, configuration: configuration)
        try destination.write { txn in
            for i in meta.tensors.indices {
                let e = meta.tensors[i]
                let key = StoreKeys.tensor(model, e.home(in: version), e.name)
                let found = try snapshot.withValue(key) { bytes throws -> Bool in
                    guard bytes.count == e.byteCount else {
                        throw StoreError.corrupt("\(key) holds \(bytes.count) bytes; the meta of v\(version) says \(e.byteCount)")
                    }
                    try txn.put(StoreKeys.tensor(model, version, e.name), bytes)
                    return true
                }
                guard found == true else { throw StoreError.corrupt("\(key) is missing") }
                meta.tensors[i].storedIn = nil
            }
            meta.format = VersionMeta.format(for: meta.tensors)
            try txn.put(StoreKeys.manifest(model, version), manifest)
            try txn.put(StoreKeys.meta(model, version), try encodeRecord(meta))
            try txn.put(StoreKeys.latest(model), uint64: version)
            try txn.put(StoreKeys.active(model), uint64: version)
            try txn.put(StoreKeys.generation, uint64: 1)
        }
        return ExportedVersion(meta: meta, payloadBytes: payload)
    }

    /// Imports version `version` of `model` from `artifact` (a store such as ``exportVersion(model:version:to:)``
    /// writes) into this store under the same version number, in one write transaction: tensors, manifest,
    /// meta, `latest` raised to it if lower, the generation bumped — but `active` left alone. Servers load it
    /// as a retained version and validate it; an activation makes it serve. A tensor equal to one of the
    /// model's latest or active version here is shared, not written again.
    ///
    /// The artifact is checked for what the import relies on — its meta names this model and version, its
    /// tensors are its own and have the sizes the meta gives — and refused naming what is wrong; checksums
    /// and the kind's own checks are the server's validation. A different version of the same number already
    /// here is refused: versions never change after their commit.
    public func importVersion(from artifact: StoreEnvironment, model: String, version: UInt64) throws -> ImportOutcome {
        try StoreKeys.validate(model: model)
        let source = try artifact.snapshot()
        guard let metaBytes = try source.bytes(StoreKeys.meta(model, version)) else {
            throw StoreError.invalidRequest("the artifact holds no version \(version) of '\(model)'")
        }
        var meta = try decodeMeta(Data(metaBytes), key: StoreKeys.meta(model, version))
        guard meta.model == model, meta.version == version else {
            throw StoreError.corrupt("the artifact's meta for \(model) v\(version) names \(meta.model) v\(meta.version)")
        }
        guard VersionMeta.readableFormats.contains(meta.format) else {
            throw StoreError.corrupt("the artifact's \(model) v\(version) has store format \(meta.format); this build reads formats \(VersionMeta.readableFormats.lowerBound)...\(VersionMeta.readableFormats.upperBound)")
        }
        guard let manifest = try source.bytes(StoreKeys.manifest(model, version)), manifest.count == meta.manifestBytes else {
            throw StoreError.corrupt("the artifact's manifest for \(model) v\(version) is missing or not \(meta.manifestBytes) bytes")
        }
        var names = Set<String>()
        for e in meta.tensors {
            guard e.storedIn == nil, names.insert(e.name).inserted, !e.name.isEmpty, !e.name.contains("/") else {
                throw StoreError.corrupt("the artifact's tensor '\(e.name)' of \(model) v\(version) is shared, repeated or badly named: an artifact holds its own tensors once each")
            }
        }
        let payload = meta.tensors.reduce(manifest.count) { $0 + $1.byteCount }
        return try environment.write(reserving: payload) { txn -> ImportOutcome in
            if let existing = try txn.get(StoreKeys.meta(model, version)) {
                let here = try decodeMeta(Data(existing), key: StoreKeys.meta(model, version))
                let same = here.manifestChecksum == meta.manifestChecksum && here.kind == meta.kind
                    && here.tensors.map { [$0.name, $0.checksum, String($0.byteCount)] } == meta.tensors.map { [$0.name, $0.checksum, String($0.byteCount)] }
                guard same else {
                    throw StoreError.invalidRequest("this store already has a different \(model) v\(version): versions never change once committed")
                }
                return .alreadyPresent
            }
            let shareable = sharesTensors ? try Self.shareableTensors(txn, model) : [:]
            var shared = 0
            for i in meta.tensors.indices {
                let e = meta.tensors[i]
                let key = StoreKeys.tensor(model, version, e.name)
                let home = try source.withValue(key) { bytes throws -> UInt64? in
                    guard bytes.count == e.byteCount else {
                        throw StoreError.corrupt("the artifact's \(key) holds \(bytes.count) bytes; its meta says \(e.byteCount)")
                    }
                    if let home = try Self.sharedHome(txn, model, shareable, e, bytes) { return home }
                    try txn.put(key, bytes)
                    return version
                }
                guard let home else { throw StoreError.corrupt("the artifact's \(key) is missing") }
                if home != version {
                    meta.tensors[i].storedIn = home
                    shared += e.byteCount
                }
            }
            meta.format = VersionMeta.format(for: meta.tensors)
            try txn.put(StoreKeys.manifest(model, version), manifest)
            try txn.put(StoreKeys.meta(model, version), try encodeRecord(meta))
            if (try txn.getUInt64(StoreKeys.latest(model)) ?? 0) < version {
                try txn.put(StoreKeys.latest(model), uint64: version)
            }
            try Self.bumpGeneration(txn)
            return .imported(sharedBytes: shared)
        }
    }
}

extension StoreEnvironment {
    /// Writes a compacted copy of the store (``copyCompacted(toFile:sync:)``'s bytes) to the descriptor `fd` —
    /// a pipe, for a reader that takes the copy as it is made and keeps no file of it — and returns when all
    /// of it is written. The descriptor is left open.
    public func copyCompacted(toDescriptor fd: Int32) throws(StoreError) {
        try check(mdb_env_copyfd2(env, fd, UInt32(MDB_CP_COMPACT)), "mdb_env_copyfd2 (compact) to descriptor \(fd)")
    }

    /// Writes a compacted copy of the store to the new file `path` (LMDB's `mdb_env_copyfd2` with
    /// `MDB_CP_COMPACT`: free pages left out, pages renumbered), flushed to disk before returning unless `sync` is
    /// false (a scratch copy). The file is a
    /// `data.mdb` for a directory of its own. Returns its size.
    @discardableResult
    public func copyCompacted(toFile path: String, sync: Bool = true) throws -> Int {
        let fd = Foundation.open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw StoreError.invalidRequest("cannot create \(path): \(String(cString: strerror(errno)))") }
        var closed = false
        defer { if !closed { close(fd) } }
        try check(mdb_env_copyfd2(env, fd, UInt32(MDB_CP_COMPACT)), "mdb_env_copyfd2 (compact) to \(path)")
        guard !sync || fsync(fd) == 0 else { throw StoreError.invalidRequest("fsync of \(path) failed: \(String(cString: strerror(errno)))") }
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw StoreError.invalidRequest("fstat of \(path) failed") }
        closed = true
        guard close(fd) == 0 else { throw StoreError.invalidRequest("close of \(path) failed: \(String(cString: strerror(errno)))") }
        return Int(st.st_size)
    }
}
