import Foundation

/// Where the control plane's records live in etcd, under one prefix (default `/arbiter/`):
///
/// | key | value |
/// | --- | --- |
/// | `models/<m>/versions/<v, 12 digits>` | JSON ``PublishedVersion``: a pushed version (its artifact manifest's key and digests) |
/// | `models/<m>/target` | JSON ``VersionPointer``: the version replicas stage |
/// | `models/<m>/active` | JSON ``VersionPointer``: the committed version; replicas switch to it |
/// | `replicas/<name>` | JSON ``ReplicaRecord``, held by the replica's lease |
public struct ClusterKeys: Sendable, Equatable {
    public var prefix: String

    public init(prefix: String = "/arbiter/") throws(ClusterError) {
        guard prefix.hasPrefix("/"), prefix.hasSuffix("/"), prefix.utf8.count <= 128 else {
            throw ClusterError.configuration("the etcd prefix '\(prefix)' must start and end with '/'")
        }
        self.prefix = prefix
    }

    public var models: String { prefix + "models/" }
    public func model(_ m: String) -> String { prefix + "models/\(m)/" }
    public func target(_ m: String) -> String { prefix + "models/\(m)/target" }
    public func active(_ m: String) -> String { prefix + "models/\(m)/active" }
    public func versions(_ m: String) -> String { prefix + "models/\(m)/versions/" }
    public func version(_ m: String, _ v: UInt64) -> String {
        let s = String(v)
        return versions(m) + String(repeating: "0", count: max(0, 12 - s.count)) + s
    }
    public var replicas: String { prefix + "replicas/" }
    public func replica(_ name: String) -> String { prefix + "replicas/\(name)" }

    /// The model and the record's kind (`target`, `active`, `version`) a key under ``models`` names.
    public func parseModelKey(_ key: String) -> (model: String, kind: String)? {
        guard key.hasPrefix(models) else { return nil }
        let rest = key.dropFirst(models.count).split(separator: "/", omittingEmptySubsequences: false)
        guard rest.count >= 2 else { return nil }
        let kind = rest[1] == "versions" ? "version" : String(rest[1])
        return (String(rest[0]), kind)
    }
}

/// A model's `target` or `active`: a version and the epoch that moves by one with every change.
public struct VersionPointer: Codable, Equatable, Sendable {
    public var version: UInt64
    public var epoch: UInt64
    /// When it was set (microseconds since 1970, the setter's clock): replicas measure their switch from it.
    public var unixMicros: Int64
    public var by: String

    public init(version: UInt64, epoch: UInt64, unixMicros: Int64 = Int64(Date().timeIntervalSince1970 * 1_000_000), by: String) {
        self.version = version
        self.epoch = epoch
        self.unixMicros = unixMicros
        self.by = by
    }
}

/// A pushed version, as the control plane lists it.
public struct PublishedVersion: Codable, Equatable, Sendable {
    public var version: UInt64
    public var kind: String
    /// The artifact manifest's key in the bucket.
    public var manifestKey: String
    public var objectSHA256: String
    public var goldenDigest: String
    public var storeBytes: Int
}

/// What a replica tells the cluster, under its lease: where it serves, whether it is ready, and per model
/// the version it serves, the versions it has staged (imported and validated, ready to switch to) and the
/// ones it rejected, with why.
public struct ReplicaRecord: Codable, Equatable, Sendable {
    public var name: String
    /// HOST:PORT of its scoring port.
    public var address: String
    /// HOST:PORT of its admin port (/metrics, /ready), if it has one.
    public var adminAddress: String?
    public var ready: Bool
    public var detail: String
    public var active: [String: UInt64]
    public var staged: [String: [UInt64]]
    public var rejected: [String: [String: String]]
    /// Per model, microseconds from the `active` record's `unixMicros` to this replica serving it (the last switch).
    public var switchMicros: [String: Int64]
    public var unixMillis: Int64

    public init(name: String, address: String, adminAddress: String? = nil, ready: Bool = false, detail: String = "starting",
                active: [String: UInt64] = [:], staged: [String: [UInt64]] = [:], rejected: [String: [String: String]] = [:],
                switchMicros: [String: Int64] = [:]) {
        self.name = name
        self.address = address
        self.adminAddress = adminAddress
        self.ready = ready
        self.detail = detail
        self.active = active
        self.staged = staged
        self.rejected = rejected
        self.switchMicros = switchMicros
        self.unixMillis = Int64(Date().timeIntervalSince1970 * 1000)
    }

    public func hasStaged(_ model: String, _ version: UInt64) -> Bool {
        active[model] == version || staged[model]?.contains(version) == true
    }
}

enum Records {
    static func encode<T: Encodable>(_ value: T) -> [UInt8] {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys]
        return Array(try! e.encode(value))
    }

    static func decode<T: Decodable>(_ type: T.Type, _ bytes: [UInt8], key: String) throws(ClusterError) -> T {
        do {
            return try JSONDecoder().decode(T.self, from: Data(bytes))
        } catch {
            throw ClusterError.corruptArtifact("etcd key \(key) does not hold a valid \(T.self): \(error)")
        }
    }
}

/// The operator's side of the control plane: register pushed versions, set a model's target, promote once
/// every ready replica has staged it, and read the cluster's state. Every change is an etcd transaction
/// guarded by what it read, so two operators (or an operator and a replica joining) cannot interleave.
public struct ControlPlane: Sendable {
    public let etcd: EtcdClient
    public let keys: ClusterKeys
    public let identity: String

    public init(etcd: EtcdClient, keys: ClusterKeys, identity: String) {
        self.etcd = etcd
        self.keys = keys
        self.identity = identity
    }

    /// Lists `manifest`'s version among the model's published versions (idempotent; a different version under
    /// the same number is refused).
    public func register(_ manifest: ArtifactManifest) async throws {
        let record = PublishedVersion(version: manifest.version, kind: manifest.kind,
                                      manifestKey: ArtifactKeys.manifest(model: manifest.model, version: manifest.version),
                                      objectSHA256: manifest.object.sha256, goldenDigest: manifest.goldenDigest, storeBytes: manifest.store.bytes)
        let key = keys.version(manifest.model, manifest.version)
        let (created, _) = try await etcd.txn([.modRevision(key, .equal, 0)], success: [.put(key: key, value: Records.encode(record), lease: 0)])
        if created { return }
        guard let existing = try await etcd.get(key) else { return }
        let old = try Records.decode(PublishedVersion.self, existing.value, key: key)
        guard old.objectSHA256 == record.objectSHA256 else {
            throw ClusterError.configuration("\(manifest.model) v\(manifest.version) is already registered with other contents")
        }
    }

    public func published(model: String) async throws -> [PublishedVersion] {
        try await etcd.range(keys.versions(model), prefix: true).kvs.map { try Records.decode(PublishedVersion.self, $0.value, key: $0.key) }
    }

    public func pointer(_ key: String) async throws -> (pointer: VersionPointer, modRevision: Int64)? {
        guard let kv = try await etcd.get(key) else { return nil }
        return (try Records.decode(VersionPointer.self, kv.value, key: key), kv.modRevision)
    }

    public func replicas() async throws -> (records: [ReplicaRecord], revision: Int64) {
        let (kvs, revision) = try await etcd.range(keys.replicas, prefix: true)
        return (try kvs.map { try Records.decode(ReplicaRecord.self, $0.value, key: $0.key) }, revision)
    }

    /// Sets `model`'s target to `version`, which must be registered: replicas start staging it.
    @discardableResult
    public func setTarget(model: String, version: UInt64) async throws -> VersionPointer {
        guard try await etcd.get(keys.version(model, version)) != nil else {
            throw ClusterError.configuration("\(model) v\(version) has not been pushed to this cluster (arbiter-train push --etcd ...)")
        }
        while true {
            let current = try await pointer(keys.target(model))
            if let current, current.pointer.version == version { return current.pointer }
            let next = VersionPointer(version: version, epoch: (current?.pointer.epoch ?? 0) + 1, by: identity)
            let (ok, _) = try await etcd.txn([.modRevision(keys.target(model), .equal, current?.modRevision ?? 0)],
                                             success: [.put(key: keys.target(model), value: Records.encode(next), lease: 0)])
            if ok { return next }
        }
    }

    /// Why a promotion did not happen.
    public enum PromotionRefusal: Error, CustomStringConvertible, Sendable, Equatable {
        case rejected(model: String, version: UInt64, byReplica: [String: String])
        case noReadyReplica(model: String)
        case timedOut(model: String, version: UInt64, waitingFor: [String])

        public var description: String {
            switch self {
            case .rejected(let m, let v, let by):
                return "\(m) v\(v) was rejected, and is not promoted: " + by.sorted { $0.key < $1.key }.map { "\($0.key): \($0.value)" }.joined(separator: "; ")
            case .noReadyReplica(let m):
                return "no replica is ready to serve \(m): nothing to promote to"
            case .timedOut(let m, let v, let waiting):
                return "\(m) v\(v) is not promoted: still not staged on \(waiting.sorted().joined(separator: ", ")) when the wait ended"
            }
        }
    }

    /// Promotes `model` to `version`: sets it as the target if it is not, waits (up to `timeout`) until every
    /// live, ready replica has staged it, then compare-and-swaps `active` — guarded by `active` being what was
    /// read and no replica record having changed since (a replica that joined, became ready or rejected the
    /// version meanwhile sends the promotion round again). A rejection anywhere refuses the promotion.
    /// Returns the new `active` pointer.
    public func promote(model: String, version: UInt64, timeout: Duration = .seconds(120)) async throws -> VersionPointer {
        try await setTarget(model: model, version: version)
        let deadline = ContinuousClock.now + timeout
        while true {
            let (records, revision) = try await replicas()
            let current = try await pointer(keys.active(model))
            if let current, current.pointer.version == version { return current.pointer }
            let rejections = records.reduce(into: [String: String]()) { out, r in
                if let why = r.rejected[model]?[String(version)] { out[r.name] = why }
            }
            if !rejections.isEmpty { throw PromotionRefusal.rejected(model: model, version: version, byReplica: rejections) }
            // Every ready replica must have staged it; for a model's first version, when no replica can be
            // ready for it yet, every live one.
            let eligible = current == nil ? records : records.filter(\.ready)
            let waiting = eligible.filter { !$0.hasStaged(model, version) }.map(\.name)
            if waiting.isEmpty {
                guard !eligible.isEmpty else { throw PromotionRefusal.noReadyReplica(model: model) }
                let next = VersionPointer(version: version, epoch: (current?.pointer.epoch ?? 0) + 1, by: identity)
                let (ok, _) = try await etcd.txn(
                    [.modRevision(keys.active(model), .equal, current?.modRevision ?? 0),
                     .unchangedSince(prefix: keys.replicas, revision: revision + 1)],
                    success: [.put(key: keys.active(model), value: Records.encode(next), lease: 0)])
                if ok { return next }
                continue
            }
            guard ContinuousClock.now < deadline else {
                throw PromotionRefusal.timedOut(model: model, version: version, waitingFor: waiting)
            }
            try await Task.sleep(for: .milliseconds(20))
        }
    }
}
