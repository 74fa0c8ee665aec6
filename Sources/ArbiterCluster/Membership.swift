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
///
/// Reads and watch events are applied in revision order: a read that was on its way while the watch applied
/// newer events is dropped, and events a newer read already reflects are skipped (otherwise a read could put
/// back a record the watch had just replaced, for up to a resync interval).
///
/// When no replica is ready by etcd's word but some were, the view keeps the last ready set (as a load
/// balancer's panic mode does) and says so in the log: every record gone at once is far likelier etcd's trouble
/// (leases lapsing while a member was lost) than every replica's, and the client's own retries skip a replica
/// that is really gone.
public final class EtcdMembership: Membership {
    let plane: ControlPlane
    let logger: Logger
    private let state = NIOLockedValueBox(State())
    public let resyncInterval: Duration

    struct State {
        var records: [String: ReplicaRecord] = [:]
        /// Each model's committed version and its epoch.
        var actives: [String: VersionPointer] = [:]
        /// The etcd revision the records and actives reflect.
        var revision: Int64 = 0
        var view = MembershipView(replicas: [])
        /// The view is the last ready set, kept because etcd has none ready.
        var holding = false
    }

    public init(plane: ControlPlane, logger: Logger = Logger(label: "arbiter.membership"), resyncInterval: Duration = .seconds(2)) {
        self.plane = plane
        self.logger = logger
        self.resyncInterval = resyncInterval
    }

    public func view() -> MembershipView { state.withLockedValue { $0.view } }

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
                let last = try await plane.etcd.watch(plane.keys.prefix, prefix: true, startRevision: from) { events, revision in
                    self.apply(events, revision: revision)
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
        apply(snapshot: kvs, revision: revision)
        return revision
    }

    /// Everything under the prefix as read at `revision`.
    func apply(snapshot kvs: [EtcdKeyValue], revision: Int64) {
        var r: [String: ReplicaRecord] = [:], a: [String: VersionPointer] = [:]
        for kv in kvs { Self.read(kv, keys: plane.keys, replicas: &r, actives: &a) }
        update { s in
            // The watch applied newer events while this read was on its way: they are the fresher word.
            guard revision >= s.revision else { return }
            s.records = r
            // Epochs only grow: a committed pointer never goes back.
            for (model, p) in a { if let c = s.actives[model], c.epoch > p.epoch { a[model] = c } }
            s.actives = a
            s.revision = revision
        }
    }

    func apply(_ events: [EtcdEvent], revision: Int64) {
        update { s in
            for e in events where e.kv.modRevision > s.revision {
                if e.kind == .delete {
                    if e.kv.key.hasPrefix(plane.keys.replicas) { s.records[String(e.kv.key.dropFirst(plane.keys.replicas.count))] = nil }
                    if let (model, kind) = plane.keys.parseModelKey(e.kv.key), kind == "active" { s.actives[model] = nil }
                } else {
                    Self.read(e.kv, keys: plane.keys, replicas: &s.records, actives: &s.actives)
                }
            }
            s.revision = max(s.revision, revision)
        }
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

    /// Changes the state and recomputes the view, under one lock.
    private func update(_ change: (inout State) -> Void) {
        let (began, ended) = state.withLockedValue { s -> (Bool, Bool) in
            change(&s)
            let ready = s.records.values.filter(\.ready).sorted { $0.name < $1.name }
                .compactMap { ReplicaEndpoint(name: $0.name, address: $0.address) }
            let wasHolding = s.holding
            if ready.isEmpty && !s.view.replicas.isEmpty {
                s.holding = true
                s.view.active = s.actives.mapValues(\.version)
            } else {
                s.holding = false
                s.view = MembershipView(replicas: ready, active: s.actives.mapValues(\.version))
            }
            return (!wasHolding && s.holding, wasHolding && !s.holding)
        }
        if began {
            logger.warning("etcd names no ready replica: keeping the last ready ones until it names one again")
        } else if ended {
            logger.info("etcd names ready replicas again")
        }
    }
}
