import AsyncHTTPClient
import Foundation
import NIOPosix
import Testing

@testable import ArbiterCluster

/// How `EtcdMembership` turns etcd's reads and watch events into a client's view (no etcd needed: the reads and
/// events are handed to it as a watch and a range would).
@Suite struct MembershipTests {
    static func withMembership(_ body: (EtcdMembership, ClusterKeys) throws -> Void) throws {
        let http = HTTPClient(eventLoopGroup: MultiThreadedEventLoopGroup.singleton)
        defer { try? http.syncShutdown() }
        let keys = try ClusterKeys()
        // Never asked anything: the test hands it reads and events.
        let etcd = try EtcdClient(endpoints: ["http://127.0.0.1:9"], http: http)
        try body(EtcdMembership(plane: ControlPlane(etcd: etcd, keys: keys, identity: "membership-tests")), keys)
    }

    static func record(_ keys: ClusterKeys, _ name: String, port: Int, ready: Bool, revision: Int64) -> EtcdKeyValue {
        let r = ReplicaRecord(name: name, address: "127.0.0.1:\(port)", ready: ready)
        return EtcdKeyValue(key: keys.replica(name), value: Records.encode(r), createRevision: revision, modRevision: revision, version: 1, lease: 1)
    }

    static func active(_ keys: ClusterKeys, _ model: String, version: UInt64, epoch: UInt64, revision: Int64) -> EtcdKeyValue {
        let p = VersionPointer(version: version, epoch: epoch, by: "test")
        return EtcdKeyValue(key: keys.active(model), value: Records.encode(p), createRevision: revision, modRevision: revision, version: 1, lease: 0)
    }

    static func names(_ m: EtcdMembership) -> [String] { m.view().replicas.map(\.name) }

    @Test func aReadOlderThanTheWatchDoesNotUndoIt() throws {
        try Self.withMembership { m, keys in
            m.apply(snapshot: [Self.record(keys, "r0", port: 1000, ready: true, revision: 10)], revision: 10)
            #expect(Self.names(m) == ["r0"])
            // The watch: r1 joins at 12, r0 goes at 13.
            m.apply([EtcdEvent(kind: .put, kv: Self.record(keys, "r1", port: 1001, ready: true, revision: 12))], revision: 12)
            var gone = Self.record(keys, "r0", port: 1000, ready: true, revision: 13)
            gone.value = []
            m.apply([EtcdEvent(kind: .delete, kv: gone)], revision: 13)
            #expect(Self.names(m) == ["r1"])
            // A read made at 11, answered after those events: dropped.
            m.apply(snapshot: [Self.record(keys, "r0", port: 1000, ready: true, revision: 10)], revision: 11)
            #expect(Self.names(m) == ["r1"])
            // A newer read wins; events it already reflects are skipped.
            m.apply(snapshot: [Self.record(keys, "r1", port: 1001, ready: true, revision: 12),
                               Self.record(keys, "r2", port: 1002, ready: true, revision: 20)], revision: 20)
            #expect(Self.names(m) == ["r1", "r2"])
            var r2gone = Self.record(keys, "r2", port: 1002, ready: true, revision: 19)
            r2gone.value = []
            m.apply([EtcdEvent(kind: .delete, kv: r2gone)], revision: 19)
            #expect(Self.names(m) == ["r1", "r2"])
        }
    }

    @Test func committedVersionsNeverGoBack() throws {
        try Self.withMembership { m, keys in
            m.apply([EtcdEvent(kind: .put, kv: Self.active(keys, "leads", version: 7, epoch: 3, revision: 30))], revision: 30)
            // A read of the same revision range holding an older pointer (another prefix's read, or a lagging one).
            m.apply(snapshot: [Self.active(keys, "leads", version: 5, epoch: 2, revision: 25)], revision: 31)
            #expect(m.view().active["leads"] == 7)
        }
    }

    @Test func withNoReadyReplicaTheLastReadyOnesStay() throws {
        try Self.withMembership { m, keys in
            // Nothing was ever ready: nothing to send to.
            m.apply(snapshot: [Self.record(keys, "r0", port: 1000, ready: false, revision: 5)], revision: 5)
            #expect(Self.names(m).isEmpty)
            m.apply([EtcdEvent(kind: .put, kv: Self.record(keys, "r0", port: 1000, ready: true, revision: 6)),
                     EtcdEvent(kind: .put, kv: Self.record(keys, "r1", port: 1001, ready: true, revision: 7))], revision: 7)
            #expect(Self.names(m) == ["r0", "r1"])
            // One leaves: the view follows.
            m.apply([EtcdEvent(kind: .put, kv: Self.record(keys, "r0", port: 1000, ready: false, revision: 8))], revision: 8)
            #expect(Self.names(m) == ["r1"])
            // Every record gone at once (leases lapsed while etcd was in trouble): the last ready set stays,
            // and committed versions still move.
            m.apply(snapshot: [Self.active(keys, "leads", version: 9, epoch: 4, revision: 9)], revision: 9)
            #expect(Self.names(m) == ["r1"])
            #expect(m.view().active["leads"] == 9)
            // Back: the view is etcd's word again.
            m.apply([EtcdEvent(kind: .put, kv: Self.record(keys, "r0", port: 1000, ready: true, revision: 10))], revision: 10)
            #expect(Self.names(m) == ["r0"])
        }
    }
}
