import Testing

@testable import ArbiterCluster

/// When a replica may take traffic (ReplicaAgent.readinessHold): never before it has read what the cluster
/// committed, never while a committed model is served not at all here (its requests would fail), and not held
/// off for the instant of a switch to a version it has loaded.
@Suite struct ReadinessTests {
    static func hold(synced: Bool = true, actives: [String: UInt64], served: [String: UInt64], loaded: [String: [UInt64]] = [:],
                     validatedOnly: [String: Set<UInt64>] = [:], loadingOnActivation: [String: Set<UInt64>] = [:]) -> String? {
        ReplicaAgent.readinessHold(synced: synced, actives: actives, served: served, loaded: { loaded[$0] ?? [] },
                                   validatedOnly: validatedOnly, loadingOnActivation: loadingOnActivation)
    }

    @Test func aReplicaThatHasNotReadTheClusterIsNotReady() {
        // A store seeded with one model serves it, but the cluster may have committed others (the cold start
        // that answered `leads` requests with UNKNOWN_MODEL, bench/results/cluster-2026-12-04).
        let h = Self.hold(synced: false, actives: [:], served: ["big": 1])
        #expect(h?.contains("joining the cluster") == true)
        #expect(Self.hold(actives: [:], served: ["big": 1]) == nil)
    }

    @Test func aCommittedModelServedNotAtAllHoldsReadiness() {
        let h = Self.hold(actives: ["big": 1, "leads": 7], served: ["big": 1])
        #expect(h == "leads v7 is committed; this replica serves nothing")
        // Loaded (it is being swapped in) but served not at all: no pin to it is answered yet.
        #expect(Self.hold(actives: ["big": 1, "leads": 7], served: ["big": 1], loaded: ["leads": [7]],
                          validatedOnly: ["leads": [7]], loadingOnActivation: ["leads": [7]]) != nil)
        // Served: ready.
        #expect(Self.hold(actives: ["big": 1, "leads": 7], served: ["big": 1, "leads": 7]) == nil)
    }

    @Test func aSwitchToALoadedVersionDoesNotTakeTheReplicaOut() {
        #expect(Self.hold(actives: ["leads": 8], served: ["leads": 7], loaded: ["leads": [7, 8]]) == nil)
        // Not loaded: behind.
        #expect(Self.hold(actives: ["leads": 8], served: ["leads": 7], loaded: ["leads": [7]])
                == "leads v8 is committed; this replica serves v7")
    }

    @Test func aFirstVersionValidatedAheadOfItsCommitDoesNotTakeTheReplicaOut() {
        // Validated before the commit, loading now: the replica's other models keep their traffic.
        #expect(Self.hold(actives: ["leads": 7, "rank": 1], served: ["leads": 7], validatedOnly: ["rank": [1]]) == nil)
        // Committed before it was staged here (joining): held until it serves.
        #expect(Self.hold(actives: ["leads": 7, "rank": 1], served: ["leads": 7], validatedOnly: ["rank": [1]],
                          loadingOnActivation: ["rank": [1]]) == "rank v1 is committed; this replica serves nothing")
    }
}
