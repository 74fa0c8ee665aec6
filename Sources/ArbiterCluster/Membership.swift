import Foundation
import Logging
import NIOConcurrencyHelpers

/// A replica a client may send to.
public struct ReplicaEndpoint: Sendable, Hashable {
    public var name: String
    public var host: String
    public var port: Int

    public init(name: String, host: String, port: Int) {
        self.name = name
        self.host = host
        self.port = port
    }

    /// "HOST:PORT" or "[V6]:PORT".
    public init?(name: String? = nil, address: String) {
        guard let colon = address.lastIndex(of: ":"), let port = Int(address[address.index(after: colon)...]), (1...65535).contains(port) else {
            return nil
        }
        var host = String(address[..<colon])
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        guard !host.isEmpty else { return nil }
        self.init(name: name ?? address, host: host, port: port)
    }
}

/// What a balancing client knows of the cluster at one moment: the replicas ready for traffic, and each
/// model's committed version (nil for a static list, which knows none).
public struct MembershipView: Sendable, Equatable {
    public var replicas: [ReplicaEndpoint]
    public var active: [String: UInt64]

    public init(replicas: [ReplicaEndpoint], active: [String: UInt64] = [:]) {
        self.replicas = replicas
        self.active = active
    }
}

/// Where a balancing client learns the replicas from.
public protocol Membership: Sendable {
    /// The latest view; cheap (called for every request).
    func view() -> MembershipView
    /// Keeps the view current until cancelled (a static list returns at once).
    func run() async
}

/// A fixed list of replicas (no control plane): requests are not pinned.
public struct StaticMembership: Membership {
    let current: MembershipView

    public init(_ replicas: [ReplicaEndpoint]) {
        current = MembershipView(replicas: replicas)
    }

    public func view() -> MembershipView { current }
    public func run() async {}
}

/// The replicas and committed versions from the control plane: every ready replica's record, and each
/// model's `active`, kept current by a watch (and a read every few seconds, in case a watch goes quiet).
/// With etcd out of reach the last view stays: clients keep sending to the replicas they knew.
public final class EtcdMembership: Membership {
    let plane: ControlPlane
    let logger: Logger
    private let state = NIOLockedValueBox(MembershipView(replicas: []))
    private let records = NIOLockedValueBox<[String: ReplicaRecord]>([:])
    /// Each model's committed version and its epoch.
    private let actives = NIOLockedValueBox<[String: VersionPointer]>([:])
    public let resyncInterval: Duration

    public init(plane: ControlPlane, logger: Logger = Logger(label: "arbiter.membership"), resyncInterval: Duration = .seconds(2)) {
        self.plane = plane
        self.logger = logger
        self.resyncInterval = resyncInterval
    }

    public func view() -> MembershipView { state.withLockedValue { $0 } }

    /// Reads everything once (call before the first request, so it has replicas to choose from).
    public func load() async throws {
        _ = try await resync()
    }

    public func run() async {
        await withTaskGroup(of: Void.self) { group in
            group.addTask { await self.watchLoop() }
            group.addTask {
                while !Task.isCancelled {
                    // A cancelled sleep ends the loop: no request may follow the cancellation (the HTTP client
                    // may be shut down right after).
                    do { try await Task.sleep(for: self.resyncInterval) } catch { return }
                    _ = try? await self.resync()
                }
            }
            await group.waitForAll()
        }
    }

    func watchLoop() async {
        var from: Int64 = 0
        while !Task.isCancelled {
            do {
                if from == 0 { from = try await resync() + 1 }
                let last = try await plane.etcd.watch(plane.keys.prefix, prefix: true, startRevision: from) { events, _ in
                    self.apply(events)
                }
                from = last + 1
            } catch {
                if Task.isCancelled { return }
                from = 0
                do { try await Task.sleep(for: .milliseconds(200)) } catch { return }
            }
        }
    }

    func resync() async throws -> Int64 {
        let (kvs, revision) = try await plane.etcd.range(plane.keys.prefix, prefix: true)
        var r: [String: ReplicaRecord] = [:], a: [String: VersionPointer] = [:]
        for kv in kvs { Self.read(kv, keys: plane.keys, replicas: &r, actives: &a) }
        records.withLockedValue { $0 = r }
        // A watch event applied while this read was on its way may be newer: epochs only grow.
        actives.withLockedValue { current in
            for (model, p) in a { if let c = current[model], c.epoch > p.epoch { a[model] = c } }
            current = a
        }
        publish()
        return revision
    }

    func apply(_ events: [EtcdEvent]) {
        var r = records.withLockedValue { $0 }
        var a = actives.withLockedValue { $0 }
        for e in events {
            if e.kind == .delete {
                if e.kv.key.hasPrefix(plane.keys.replicas) { r[String(e.kv.key.dropFirst(plane.keys.replicas.count))] = nil }
                if let (model, kind) = plane.keys.parseModelKey(e.kv.key), kind == "active" { a[model] = nil }
            } else {
                Self.read(e.kv, keys: plane.keys, replicas: &r, actives: &a)
            }
        }
        records.withLockedValue { $0 = r }
        actives.withLockedValue { $0 = a }
        publish()
    }

    static func read(_ kv: EtcdKeyValue, keys: ClusterKeys, replicas: inout [String: ReplicaRecord], actives: inout [String: VersionPointer]) {
        if kv.key.hasPrefix(keys.replicas) {
            if let record = try? Records.decode(ReplicaRecord.self, kv.value, key: kv.key) {
                replicas[String(kv.key.dropFirst(keys.replicas.count))] = record
            }
        } else if let (model, kind) = keys.parseModelKey(kv.key), kind == "active",
                  let p = try? Records.decode(VersionPointer.self, kv.value, key: kv.key) {
            if let c = actives[model], c.epoch > p.epoch { return }
            actives[model] = p
        }
    }

    private func publish() {
        let r = records.withLockedValue { $0 }
        let a = actives.withLockedValue { $0 }
        let ready = r.values.filter(\.ready).sorted { $0.name < $1.name }.compactMap { ReplicaEndpoint(name: $0.name, address: $0.address) }
        state.withLockedValue { $0 = MembershipView(replicas: ready, active: a.mapValues(\.version)) }
    }
}
