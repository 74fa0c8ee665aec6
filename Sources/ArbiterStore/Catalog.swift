import Foundation

/// A tensor to publish: typed values with a shape, kept as their little-endian bytes.
public struct TensorData: Sendable {
    public var name: String
    public var shape: [Int]
    public var dtype: TensorDType
    /// The elements' bytes, little-endian, `dtype.byteWidth` each.
    public var bytes: [UInt8]

    /// A tensor of `dtype` from its elements' bytes (little-endian).
    public init(name: String, shape: [Int], dtype: TensorDType, bytes: [UInt8]) {
        self.name = name
        self.shape = shape
        self.dtype = dtype
        self.bytes = bytes
    }

    /// A float32 tensor.
    public init(name: String, shape: [Int], values: [Float]) {
        self.init(name: name, shape: shape, elements: values)
    }

    /// A tensor of `T` (float32, u64, i32, u32 or u8).
    public init<T: TensorElement>(name: String, shape: [Int], elements: [T]) {
        self.name = name
        self.shape = shape
        self.dtype = T.dtype
        self.bytes = elements.withUnsafeBytes { Array($0) }
    }

    /// The number of elements the bytes hold.
    public var count: Int { bytes.count / dtype.byteWidth }
}

/// One row of `Catalog.versions`.
public struct VersionListing: Sendable {
    public var meta: VersionMeta
    public var isActive: Bool
    /// What the last server that loaded this version found, if one has recorded it.
    public var validation: ValidationRecord?
    /// Its share of the traffic while a split holds.
    public var splitWeight: Double?
    /// Whether it is scored in the shadow of the served versions.
    public var isShadow = false
    /// Whether a server recorded that it keeps it loaded (for pins, a split or a shadow).
    public var isRetained = false
    /// How it scored in the shadow, if it was.
    public var shadowRecord: ShadowRecord?

    init(meta: VersionMeta, isActive: Bool) {
        self.meta = meta
        self.isActive = isActive
    }
}

/// A server's verdict on a version it loaded: whether it passed validation (its checksums, its kind's
/// checks and its golden cases) and may serve, or was rejected and why. Servers record it in the store (when
/// they may write it) so that `arbiter-train versions` shows it; a record never changes which version is
/// active.
public struct ValidationRecord: Codable, Equatable, Sendable {
    public enum Outcome: String, Codable, Sendable {
        case passed
        case rejected
    }
    public var outcome: Outcome
    /// Why it was rejected (nil when it passed).
    public var reason: String?
    public var unixMillis: Int64
    /// Which server: "arbiterd pid N on HOST".
    public var by: String

    public init(outcome: Outcome, reason: String? = nil, at date: Date = Date(), by: String) {
        self.outcome = outcome
        self.reason = reason
        self.unixMillis = Int64(date.timeIntervalSince1970 * 1000)
        self.by = by
    }
}

/// The catalog: which models exist, their versions, which version is active, and the global generation
/// the server watches. Publishing and activation are single write transactions.
public struct Catalog: Sendable {
    public let environment: StoreEnvironment
    /// Whether ``publish(model:kind:manifest:tensors:unchanged:metrics:activate:share:now:inTransaction:)`` shares unchanged
    /// tensors with the latest and active versions when its caller does not say (default true). Off, every
    /// version stores all its tensors (store format 1 or 2), which builds older than format 3 can read — for a
    /// store that such servers still serve during an upgrade.
    public var sharesTensors: Bool

    public init(environment: StoreEnvironment, sharesTensors: Bool = true) {
        self.environment = environment
        self.sharesTensors = sharesTensors
    }

    /// The global generation: bumped by every publish and every activation.
    public func generation() throws -> UInt64 {
        let s = try environment.snapshot()
        return try s.getUInt64(StoreKeys.generation) ?? 0
    }

    /// Every model that has an `active` pointer, sorted by name.
    public func models() throws -> [String] {
        let s = try environment.snapshot()
        var out: [String] = []
        for key in try s.keys(prefix: "m/") where key.hasSuffix("/active") {
            let parts = key.split(separator: "/")
            if parts.count == 3 { out.append(String(parts[1])) }
        }
        return out.sorted()
    }

    public func activeVersion(model: String) throws -> UInt64? {
        try environment.snapshot().getUInt64(StoreKeys.active(model))
    }

    /// Every published version of `model`, oldest first.
    public func versions(model: String) throws -> [VersionListing] {
        try StoreKeys.validate(model: model)
        let s = try environment.snapshot()
        let active = try s.getUInt64(StoreKeys.active(model))
        var out: [VersionListing] = []
        var verdicts: [String: ValidationRecord] = [:]
        var shadows: [String: ShadowRecord] = [:]
        try s.forEach(prefix: StoreKeys.versionPrefix(model)) { key, value in
            if key.hasSuffix("/meta") {
                let meta = try decodeMeta(value, key: key)
                out.append(VersionListing(meta: meta, isActive: meta.version == active))
            } else if key.hasSuffix("/validation") {
                // A record that does not decode is shown as none: it is advice, never what decides serving.
                verdicts[String(key.dropLast("validation".count))] = try? JSONDecoder().decode(ValidationRecord.self, from: Data(value))
            } else if key.hasSuffix("/shadow") {
                shadows[String(key.dropLast("shadow".count))] = try? JSONDecoder().decode(ShadowRecord.self, from: Data(value))
            }
        }
        let split = try? decodeRecord(TrafficSplit.self, s.bytes(StoreKeys.split(model)), key: StoreKeys.split(model))
        let shadow = try? decodeRecord(ShadowConfig.self, s.bytes(StoreKeys.shadow(model)), key: StoreKeys.shadow(model))
        let retained = Set((try? decodeRecord(RetainedRecord.self, s.bytes(StoreKeys.retained(model)), key: StoreKeys.retained(model)))?.versions ?? [])
        for i in out.indices {
            let v = out[i].meta.version, prefix = StoreKeys.version(model, v)
            out[i].validation = verdicts[prefix]
            out[i].shadowRecord = shadows[prefix]
            out[i].splitWeight = split?.weight(of: v)
            out[i].isShadow = shadow?.version == v
            out[i].isRetained = retained.contains(v)
        }
        return out
    }

    /// The validation outcome recorded for `model` v`version`, if any.
    public func validation(model: String, version: UInt64) throws -> ValidationRecord? {
        try StoreKeys.validate(model: model)
        guard let bytes = try environment.snapshot().bytes(StoreKeys.validation(model, version)) else { return nil }
        return try? JSONDecoder().decode(ValidationRecord.self, from: Data(bytes))
    }

    /// Records a server's verdict on a version (one small write transaction; the generation is left alone,
    /// so servers do not reload for it).
    public func recordValidation(model: String, version: UInt64, _ record: ValidationRecord) throws {
        try StoreKeys.validate(model: model)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        let bytes = Array(try encoder.encode(record))
        try environment.write { txn in
            guard try txn.get(StoreKeys.meta(model, version)) != nil else {
                throw StoreError.unknownVersion(model: model, version: version)
            }
            try txn.put(StoreKeys.validation(model, version), bytes)
        }
    }

    /// Publishes a version in one write transaction: tensors, manifest, meta (with checksums), the model's
    /// `latest`, optionally `active`, then the bumped generation. Returns the new version number. Activating
    /// ends any traffic split (the newest decision wins: a trainer that publishes live replaces a canary).
    ///
    /// With `share` (by default ``sharesTensors``), a tensor that is byte for byte the same-named tensor of the model's latest
    /// or active version is not written again: the new version's record points at the stored one
    /// (``VersionMeta/TensorEntry/storedIn``, store format 3). A retrained head beside an unchanged 1 GiB
    /// embedding table then writes kilobytes, and a server that has the earlier version loaded maps the same
    /// pages for both — it neither reads the table again nor holds it twice.
    ///
    /// A process killed at any instant before the commit leaves the store exactly as it was.
    ///
    /// `inTransaction` is called with the new version number once the version's tensors and manifest are
    /// written and before its meta, `latest`, `active` and `generation` are, with the write transaction
    /// open: the trainer reports progress there, and crash tests use it to know that a kill landed inside
    /// the transaction. A throw from it aborts the publish.
    ///
    /// `unchanged` names tensors the new version takes from the active one as they are, without their bytes: a
    /// trainer that retrained only the heads need not hold, hash and compare a 1 GiB table it did not touch.
    /// Each must exist in the active version and not be among `tensors`.
    @discardableResult
    public func publish(model: String, kind: String, manifest: [UInt8], tensors: [TensorData], unchanged: [String] = [],
                        metrics: [String: Double], activate: Bool = true, share: Bool? = nil,
                        now: Date = Date(), inTransaction: ((UInt64) throws -> Void)? = nil) throws -> UInt64 {
        try StoreKeys.validate(model: model)
        var seen = Set<String>()
        for name in unchanged where tensors.contains(where: { $0.name == name }) || !seen.insert(name).inserted {
            throw StoreError.invalidTensor("tensor '\(name)' is given both as unchanged and with its bytes, or twice")
        }
        seen = []
        for t in tensors {
            guard !t.name.isEmpty, !t.name.contains("/"), seen.insert(t.name).inserted else {
                throw StoreError.invalidTensor("tensor name '\(t.name)' is empty, has a '/', or repeats")
            }
            guard t.shape.allSatisfy({ $0 >= 0 }), LoadedVersion.elementCount(t.shape) == t.count,
                  t.bytes.count == t.count * t.dtype.byteWidth else {
                throw StoreError.invalidTensor("'\(t.name)' has \(t.count) \(t.dtype) values for shape \(t.shape)")
            }
        }
        return try environment.write(reserving: tensors.reduce(manifest.count) { $0 + $1.bytes.count }) { txn in
            let latest = try txn.getUInt64(StoreKeys.latest(model))
            let version = (latest ?? 0) + 1
            let shareable = share ?? sharesTensors ? try Self.shareableTensors(txn, model) : [:]
            var entries: [VersionMeta.TensorEntry] = []
            if !unchanged.isEmpty {
                guard let active = try txn.getUInt64(StoreKeys.active(model)), let bytes = try txn.get(StoreKeys.meta(model, active)) else {
                    throw StoreError.invalidTensor("\(model) has no active version to take unchanged tensors from")
                }
                let from = try decodeMeta(Data(bytes), key: StoreKeys.meta(model, active))
                for name in unchanged {
                    guard var entry = from.tensors.first(where: { $0.name == name }) else {
                        throw StoreError.invalidTensor("the active version of \(model) (v\(active)) has no tensor '\(name)' to keep unchanged")
                    }
                    entry.storedIn = entry.home(in: active)
                    entries.append(entry)
                }
            }
            for t in tensors {
                try t.bytes.withUnsafeBytes { b in
                    let checksum = Checksum.hex(b)
                    var entry = VersionMeta.TensorEntry(name: t.name, dtype: t.dtype.rawValue, shape: t.shape, byteCount: b.count,
                                                        checksum: checksum)
                    entry.storedIn = try Self.sharedHome(txn, model, shareable, entry, b)
                    if entry.storedIn == nil { try txn.put(StoreKeys.tensor(model, version, t.name), b) }
                    entries.append(entry)
                }
            }
            try txn.put(StoreKeys.manifest(model, version), manifest)
            try inTransaction?(version)
            let meta = VersionMeta(format: VersionMeta.format(for: entries), model: model, version: version, kind: kind,
                                   createdUnixMillis: UInt64(now.timeIntervalSince1970 * 1000), metrics: metrics,
                                   tensors: entries,
                                   manifestChecksum: manifest.withUnsafeBytes { Checksum.hex($0) },
                                   manifestBytes: manifest.count)
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys]
            try txn.put(StoreKeys.meta(model, version), Array(try encoder.encode(meta)))
            try txn.put(StoreKeys.latest(model), uint64: version)
            if activate {
                try Self.setActive(txn, model, version)
            } else {
                try Self.bumpGeneration(txn)
            }
            return version
        }
    }

    /// What a new version's tensors may share: the model's latest and active versions' tensors, by name, each
    /// with the version whose key holds its bytes.
    static func shareableTensors(_ txn: WriteTransaction, _ model: String) throws -> [String: [(entry: VersionMeta.TensorEntry, home: UInt64)]] {
        var shareable: [String: [(entry: VersionMeta.TensorEntry, home: UInt64)]] = [:]
        let candidates = [try txn.getUInt64(StoreKeys.latest(model)), try txn.getUInt64(StoreKeys.active(model))]
        for v in Set(candidates.compactMap { $0 }).sorted() {
            guard let bytes = try txn.get(StoreKeys.meta(model, v)) else { continue }
            for e in try decodeMeta(Data(bytes), key: StoreKeys.meta(model, v)).tensors {
                shareable[e.name, default: []].append((e, e.home(in: v)))
            }
        }
        return shareable
    }

    /// The version holding bytes equal to `bytes` for a tensor like `entry` among `shareable`, if any: dtype,
    /// shape, size and checksum filter, the bytes decide.
    static func sharedHome(_ txn: WriteTransaction, _ model: String,
                           _ shareable: [String: [(entry: VersionMeta.TensorEntry, home: UInt64)]],
                           _ entry: VersionMeta.TensorEntry, _ bytes: UnsafeRawBufferPointer) throws -> UInt64? {
        for c in shareable[entry.name] ?? [] where c.entry.dtype == entry.dtype && c.entry.shape == entry.shape
            && c.entry.byteCount == bytes.count && c.entry.checksum == entry.checksum {
            let same = try txn.withBytes(StoreKeys.tensor(model, c.home, entry.name)) { stored in
                guard let stored, stored.count == bytes.count else { return false }
                return bytes.count == 0 || memcmp(stored.baseAddress!, bytes.baseAddress!, bytes.count) == 0
            }
            if same { return c.home }
        }
        return nil
    }

    /// Rolls `model` back: makes active the newest version older than the active one that a server recorded
    /// as having passed validation (a version no server has loaded, or one that was rejected, is passed over).
    /// Returns it. One write transaction, as activation; it ends any split.
    @discardableResult
    public func rollback(model: String) throws -> UInt64 {
        let listing = try versions(model: model)
        guard let active = listing.first(where: \.isActive)?.meta.version else {
            throw StoreError.unknownModel(model)
        }
        guard let target = listing.last(where: { $0.meta.version < active && $0.validation?.outcome == .passed })?.meta.version else {
            throw StoreError.noRollbackTarget(model: model, active: active)
        }
        try environment.write { txn in
            // The same check inside the transaction: another writer may have moved `active` since the listing.
            guard try txn.getUInt64(StoreKeys.active(model)) == active else {
                throw StoreError.concurrentChange("\(model)'s active version changed while rolling back; look again (arbiter-train versions)")
            }
            try Self.setActive(txn, model, target)
        }
        return target
    }

    /// What `gc` removed.
    public struct Collected: Equatable, Sendable {
        /// The versions deleted, oldest first.
        public var versions: [UInt64]
        /// Their tensors' and manifests' bytes: what later writes can reuse.
        public var bytes: Int
        /// The versions kept, oldest first.
        public var kept: [UInt64]
    }

    /// Deletes `model`'s old versions in one write transaction, keeping the active one, the split's, the shadow,
    /// the versions a server recorded as retained, and the newest `keep` others (what a rollback goes back to). Version numbers are never
    /// reused. Servers that still have a deleted version loaded keep it intact: its pages belong to their
    /// snapshot until they let it go, and LMDB reuses them only after. The generation is left alone.
    @discardableResult
    public func gc(model: String, keep: Int) throws -> Collected {
        try StoreKeys.validate(model: model)
        precondition(keep >= 0, "keep must be at least 0")
        return try environment.write { txn in
            guard let active = try txn.getUInt64(StoreKeys.active(model)), let latest = try txn.getUInt64(StoreKeys.latest(model)) else {
                throw StoreError.unknownModel(model)
            }
            var required: Set<UInt64> = [active]
            if let split = try decodeRecord(TrafficSplit.self, txn.get(StoreKeys.split(model)), key: StoreKeys.split(model)) {
                required.formUnion(split.versions)
            }
            if let shadow = try decodeRecord(ShadowConfig.self, txn.get(StoreKeys.shadow(model)), key: StoreKeys.shadow(model)) {
                required.insert(shadow.version)
            }
            if let retained = try? decodeRecord(RetainedRecord.self, txn.get(StoreKeys.retained(model)), key: StoreKeys.retained(model)) {
                required.formUnion(retained.versions)
            }
            var present: [(UInt64, VersionMeta)] = []
            for v in stride(from: latest, through: 1, by: -1) {
                guard let bytes = try txn.get(StoreKeys.meta(model, v)) else { continue }
                present.append((v, try decodeMeta(Data(bytes), key: StoreKeys.meta(model, v))))
            }
            // Newest first: the required ones always, then the newest `keep` others.
            var kept: [UInt64] = [], deleted: [UInt64] = []
            var others = 0
            for (v, _) in present {
                if required.contains(v) || others < keep {
                    if !required.contains(v) { others += 1 }
                    kept.append(v)
                } else {
                    deleted.append(v)
                }
            }
            // The stored tensors the kept versions read: their own and the ones they share with older versions.
            var reachable = Set<String>()
            for (v, meta) in present where kept.contains(v) {
                for t in meta.tensors { reachable.insert(StoreKeys.tensor(model, t.home(in: v), t.name)) }
            }
            var bytes = 0
            let gone = Set(deleted)
            // Every key under the model's versions: a deleted version's records go, and so does every stored
            // tensor no kept version reads (including one an earlier gc kept only because a later version
            // shared it).
            for (key, size) in try txn.sizes(prefix: StoreKeys.versionPrefix(model)) {
                let rest = key.dropFirst(StoreKeys.versionPrefix(model).count)
                guard let slash = rest.firstIndex(of: "/"), let v = UInt64(rest[..<slash]) else { continue }
                let isTensor = rest[rest.index(after: slash)...].hasPrefix("t/")
                if isTensor ? !reachable.contains(key) : gone.contains(v) {
                    _ = try txn.delete(key)
                    if isTensor || key == StoreKeys.manifest(model, v) { bytes += size }
                }
            }
            return Collected(versions: deleted.reversed(), bytes: bytes, kept: kept.reversed())
        }
    }

    /// Makes `version` the active one, ending any split, bumping the generation. Unlike ``promote(model:version:)``
    /// it does not look at validation records.
    public func activate(model: String, version: UInt64) throws {
        try StoreKeys.validate(model: model)
        try environment.write { txn in
            guard try txn.get(StoreKeys.meta(model, version)) != nil else {
                throw StoreError.unknownVersion(model: model, version: version)
            }
            try Self.setActive(txn, model, version)
        }
    }
}

func decodeMeta(_ bytes: UnsafeRawBufferPointer, key: String) throws(StoreError) -> VersionMeta {
    try decodeMeta(Data(bytes), key: key)
}

func decodeMeta(_ data: Data, key: String) throws(StoreError) -> VersionMeta {
    do {
        return try JSONDecoder().decode(VersionMeta.self, from: data)
    } catch {
        throw StoreError.corrupt("\(key) is not a valid version record: \(error)")
    }
}
