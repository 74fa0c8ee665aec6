import ArbiterClient
import ArbiterCluster
import ArbiterServer
import ArbiterTestSupport
import ArbiterWire
import Foundation
import NIOCore
import Testing

/// The balancing client over a static list: spread, retries past dead and departing replicas within a budget,
/// deadlines carried.
@Suite struct BalancedClientTests {
    static func servers(_ n: Int) async throws -> [ArbiterServer] {
        var out: [ArbiterServer] = []
        for _ in 0..<n {
            let s = try ArbiterServer(configuration: Fixture.config(), registry: Fixture.registry)
            try await s.start()
            out.append(s)
        }
        return out
    }

    static func endpoints(_ servers: [ArbiterServer]) -> [ReplicaEndpoint] {
        servers.enumerated().map { ReplicaEndpoint(name: "s\($0.offset)", host: "127.0.0.1", port: $0.element.port!) }
    }

    /// A loopback port nothing listens on.
    static func deadEndpoint() throws -> ReplicaEndpoint {
        ReplicaEndpoint(name: "dead", host: "127.0.0.1", port: try LocalPorts.free(count: 1)[0])
    }

    @Test func spreadsOverReplicasAndRetriesPastADeadOne() async throws {
        let servers = try await Self.servers(2)
        let client = BalancedClient(membership: StaticMembership(Self.endpoints(servers) + [try Self.deadEndpoint()]))
        for i in 0..<300 {
            do {
                let r = try await client.score(Fixture.scoreRequest(n: 1 + i % 4), deadline: .seconds(5))
                #expect(r.ids.count == 1 + i % 4 && r.version == 1)
            } catch {
                Issue.record("request \(i) failed: \(error); \(client.statistics)")
            }
        }
        let stats = client.statistics
        #expect(stats.requests == 300 && stats.failures == 0)
        // The dead one is tried, fails to connect, is ejected for a second and retried around.
        #expect(stats.retries >= 1 && stats.retries < 30, "\(stats)")
        // Both live servers took a share (two random choices among them).
        #expect(stats.answeredBy["s0", default: 0] > 50 && stats.answeredBy["s1", default: 0] > 50, "\(stats.answeredBy)")
        await client.close()
        for s in servers { try await s.shutdown() }
    }

    @Test func aReplicaShuttingDownFailsNoRequest() async throws {
        let servers = try await Self.servers(3)
        var config = BalancedClient.Configuration()
        config.hedgeQuantile = nil
        let client = BalancedClient(membership: StaticMembership(Self.endpoints(servers)), configuration: config)
        do {
            // Many requests in flight while one server shuts down: every one is answered.
            try await withThrowingTaskGroup(of: Int.self) { group in
                for t in 0..<4 {
                    group.addTask {
                        var answered = 0
                        for i in 0..<150 {
                            _ = try await client.score(Fixture.scoreRequest(n: 1 + (i + t) % 3), deadline: .seconds(5))
                            answered += 1
                        }
                        return answered
                    }
                }
                try await Task.sleep(for: .milliseconds(30))
                try await servers[0].shutdown()
                var total = 0
                for try await n in group { total += n }
                #expect(total == 600)
            }
            #expect(client.statistics.failures == 0)
            #expect(client.statistics.retries > 0, "\(client.statistics)")
        } catch {
            await client.close()
            for s in servers { try? await s.shutdown() }
            throw error
        }
        await client.close()
        for s in servers.dropFirst() { try await s.shutdown() }
    }

    @Test func withNoLiveReplicaRequestsFailFastAndRetriesStayWithinTheBudget() async throws {
        var config = BalancedClient.Configuration()
        config.retryBudgetRatio = 0.1
        config.retryBudgetPerSecond = 1
        let dead = try (0..<3).map { i in ReplicaEndpoint(name: "d\(i)", host: "127.0.0.1", port: try LocalPorts.free(count: 1)[0]) }
        let client = BalancedClient(membership: StaticMembership(dead), configuration: config)
        var failed = 0
        let started = ContinuousClock.now
        for _ in 0..<100 {
            do { _ = try await client.score(Fixture.scoreRequest(n: 1), deadline: .seconds(2)) } catch { failed += 1 }
        }
        let stats = client.statistics
        #expect(failed == 100 && stats.failures == 100)
        // 100 requests earn 10 retries at 10%, plus the 1/s refill and the starting allowance.
        #expect(stats.retries <= 10 + 1 + 2 * Int((ContinuousClock.now - started).components.seconds + 1), "\(stats)")
        #expect(stats.budgetRefusals > 0)
        await client.close()

        let none = BalancedClient(membership: StaticMembership([]))
        await #expect(throws: BalancedClient.BalancingError.self) { _ = try await none.score(Fixture.scoreRequest(n: 1)) }
        await none.close()
    }

    @Test func aRequestErrorIsNotRetried() async throws {
        let servers = try await Self.servers(2)
        let client = BalancedClient(membership: StaticMembership(Self.endpoints(servers)))
        var bad = Fixture.scoreRequest(n: 2)
        bad.model = "no-such-model"
        await #expect(throws: ClientError.self) { _ = try await client.score(bad) }
        #expect(client.statistics.retries == 0 && client.statistics.failures == 1)
        await client.close()
        for s in servers { try await s.shutdown() }
    }
}
