import ArbiterClient
import ArbiterWire
import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

/// A client of a cluster of replicas. Each SCORE goes to the less loaded of two replicas picked at random
/// (least outstanding requests, "power of two choices"), pinned to the version the cluster last committed
/// (so no answer comes from a version the cluster has not committed). A SCORE is idempotent, so one that
/// fails to connect, or is answered OVERLOADED, SHUTTING_DOWN or TOO_MANY_CONNECTIONS, or whose connection
/// drops, is sent again to another replica — within a retry budget (a share of requests plus a few a second,
/// so a sick cluster is not buried under retries). One still unanswered after the model's recent p95 is
/// hedged: sent to a second replica, the first answer wins. Every attempt carries what is left of the
/// caller's deadline, which the server also honours.
public final class BalancedClient: Sendable {
    public struct Configuration: Sendable {
        /// How each replica connection is set up (TLS, token, compression).
        public var connection = ClientConfiguration()
        /// Retries and hedges may add this share of the requests...
        public var retryBudgetRatio = 0.2
        /// ...plus this many a second.
        public var retryBudgetPerSecond = 10.0
        /// Attempts per request at most, hedges included.
        public var maxAttempts = 3
        /// Hedge a request still unanswered after its model's recent p95 latency (nil: never hedge).
        public var hedgeQuantile: Double? = 0.95
        /// Latencies kept per model for the hedge delay, and how many before hedging starts.
        public var latencyWindow = 1_000
        public var hedgeAfterSamples = 200
        /// Pin requests that name no version to the model's committed version, when the membership knows it.
        public var pinToCommitted = true
        /// A replica that failed to connect or dropped a connection gets nothing for this long.
        public var ejection: TimeAmount = .seconds(1)

        public init() {}
    }

    /// What the client did, for the caller's metrics and the benchmark.
    public struct Statistics: Sendable, Equatable {
        public var requests = 0
        /// Sent again after a failure.
        public var retries = 0
        /// Sent to a second replica while the first was still out.
        public var hedges = 0
        /// Answered by the hedge before the first attempt.
        public var hedgeWins = 0
        /// Requests that ended in an error.
        public var failures = 0
        /// Retries and hedges refused by the budget.
        public var budgetRefusals = 0
        /// Answers by replica name.
        public var answeredBy: [String: Int] = [:]
        /// Attempts in all (requests + retries + hedges).
        public var attempts: Int { requests + retries + hedges }
    }

    let membership: any Membership
    let configuration: Configuration
    let group: any EventLoopGroup
    let ownsGroup: Bool
    private let state: NIOLockedValueBox<State>

    struct Slot {
        var client: ArbiterClient?
        var connecting: EventLoopFuture<ArbiterClient>?
        var outstanding = 0
        var ejectedUntil: NIODeadline = .uptimeNanoseconds(0)
    }

    struct State {
        var slots: [ReplicaEndpoint: Slot] = [:]
        var statistics = Statistics()
        var budget: Double
        var budgetRefilled = NIODeadline.now()
        var latencies: [String: LatencyWindow] = [:]
        var rng = SystemRandomNumberGenerator()
    }

    public init(membership: any Membership, configuration: Configuration = Configuration(), group: (any EventLoopGroup)? = nil) {
        self.membership = membership
        self.configuration = configuration
        self.group = group ?? MultiThreadedEventLoopGroup(numberOfThreads: 1)
        ownsGroup = group == nil
        state = NIOLockedValueBox(State(budget: configuration.retryBudgetPerSecond))
    }

    public var statistics: Statistics { state.withLockedValue { $0.statistics } }

    /// Closes every connection (and the event loop group this client made).
    public func close() async {
        let clients = state.withLockedValue { s -> [ArbiterClient] in
            defer { s.slots.removeAll() }
            return s.slots.values.compactMap(\.client)
        }
        for c in clients { try? await c.close() }
        if ownsGroup { try? await group.shutdownGracefully() }
    }

    public enum BalancingError: Error, CustomStringConvertible, Equatable {
        case noReplica
        public var description: String { "no replica is ready to take requests" }
    }

    // MARK: Scoring

    /// Scores `request` on the cluster within `deadline`.
    public func score(_ request: ScoreRequest, deadline: TimeAmount = .seconds(1)) async throws -> ScoreResult {
        try await scoreFuture(request, deadline: deadline).get()
    }

    /// What answered a request: the result, the replica, and how many attempts it took.
    public struct Answer: Sendable {
        public var result: ScoreResult
        public var replica: String
        public var attempts: Int
    }

    /// The same as a future (for load generators that must not suspend per request).
    public func scoreFuture(_ request: ScoreRequest, deadline: TimeAmount = .seconds(1)) -> EventLoopFuture<ScoreResult> {
        answerFuture(request, deadline: deadline).map(\.result)
    }

    /// The answer with the replica that gave it (benchmarks chart which replica served which version).
    public func answerFuture(_ request: ScoreRequest, deadline: TimeAmount = .seconds(1)) -> EventLoopFuture<Answer> {
        let view = membership.view()
        var request = request
        var pinned = false
        if configuration.pinToCommitted, request.version == 0, let v = view.active[request.model] {
            request.version = v
            pinned = true
        }
        let loop = group.next()
        let race = Race(promise: loop.makePromise(of: Answer.self), request: request, pinnedByUs: pinned,
                        deadline: .now() + deadline, started: .now())
        state.withLockedValue { s in
            s.statistics.requests += 1
            s.budget = min(s.budget + configuration.retryBudgetRatio, max(10, configuration.retryBudgetPerSecond * 10))
        }
        guard launch(race, view: view) else {
            state.withLockedValue { $0.statistics.failures += 1 }
            race.promise.fail(BalancingError.noReplica)
            return race.promise.futureResult
        }
        if let delay = hedgeDelay(model: request.model) {
            let timer = loop.scheduleTask(in: delay) { [self] in
                let go = race.lock.withLock { !race.done && race.inFlight == 1 && race.attempts < configuration.maxAttempts }
                guard go, takeBudget() else { return }
                if launch(race, view: membership.view(), hedge: true) {
                    state.withLockedValue { $0.statistics.hedges += 1 }
                }
            }
            // Kept under the race's lock (the attempts' completions read it on other threads); a race already
            // settled cancels it at once.
            let settled = race.lock.withLock { () -> Bool in
                race.hedgeTimer = timer
                return race.done
            }
            if settled { timer.cancel() }
        }
        return race.promise.futureResult
    }

    /// One request's attempts, settled once.
    final class Race: @unchecked Sendable {
        let lock = NIOLock()
        let promise: EventLoopPromise<Answer>
        var request: ScoreRequest
        let pinnedByUs: Bool
        let deadline: NIODeadline
        let started: NIODeadline
        var done = false
        var inFlight = 0
        var attempts = 0
        var tried: Set<ReplicaEndpoint> = []
        var lastError: (any Error)?
        var hedgeTimer: Scheduled<Void>?
        /// The replica of the first attempt (a hedge that answers first is a hedge win).
        var first: ReplicaEndpoint?

        init(promise: EventLoopPromise<Answer>, request: ScoreRequest, pinnedByUs: Bool, deadline: NIODeadline, started: NIODeadline) {
            self.promise = promise
            self.request = request
            self.pinnedByUs = pinnedByUs
            self.deadline = deadline
            self.started = started
        }
    }

    /// Picks a replica not yet tried and sends to it; false when there is none.
    @discardableResult
    func launch(_ race: Race, view: MembershipView, hedge: Bool = false) -> Bool {
        let (tried, request) = race.lock.withLock { (race.tried, race.request) }
        guard let replica = pick(from: view.replicas, excluding: tried) else { return false }
        race.lock.withLock {
            race.tried.insert(replica)
            race.inFlight += 1
            race.attempts += 1
            if race.first == nil { race.first = replica }
        }
        let remaining = race.deadline - .now()
        guard remaining > .zero else {
            finish(race, replica: replica, .failure(ClientError.timeout))
            return true
        }
        connection(to: replica).flatMap { client in
            client.scoreFuture(request, deadline: remaining)
        }.whenComplete { result in
            self.finish(race, replica: replica, result)
        }
        return true
    }

    func finish(_ race: Race, replica: ReplicaEndpoint, _ result: Result<ScoreResult, any Error>) {
        state.withLockedValue { $0.slots[replica]?.outstanding -= 1 }
        switch result {
        case .success(let r):
            let (won, hedgeWon) = race.lock.withLock { () -> (Bool, Bool) in
                race.inFlight -= 1
                guard !race.done else { return (false, false) }
                race.done = true
                return (true, race.first != replica)
            }
            guard won else { return }
            race.lock.withLock { race.hedgeTimer }?.cancel()
            let (attempts, model) = race.lock.withLock { (race.attempts, race.request.model) }
            let elapsed = NIODeadline.now() - race.started
            state.withLockedValue { s in
                if hedgeWon { s.statistics.hedgeWins += 1 }
                s.statistics.answeredBy[replica.name, default: 0] += 1
                s.latencies[model, default: LatencyWindow(capacity: configuration.latencyWindow)].add(elapsed.nanoseconds)
            }
            race.promise.succeed(Answer(result: r, replica: replica.name, attempts: attempts))
        case .failure(let error):
            let kind = classify(error)
            if kind == .replicaTrouble { eject(replica) }
            let (settle, retry) = race.lock.withLock { () -> (Bool, Bool) in
                race.inFlight -= 1
                race.lastError = error
                guard !race.done else { return (false, false) }
                // A pin this client added that the replica does not hold: its view is ahead of or behind the
                // replica's; the replica's own committed version is as good an answer.
                if kind == .unknownVersion && race.pinnedByUs { race.request.version = 0 }
                let retryable = kind != .final
                let canRetry = retryable && race.attempts < configuration.maxAttempts && race.deadline > .now()
                // Another attempt still out (a hedge, or the attempt a hedge raced): replace this one if the
                // attempts allow — the one still out may be on a replica that stopped answering — else let it answer.
                if race.inFlight > 0 { return (false, canRetry) }
                if !canRetry {
                    race.done = true
                    return (true, false)
                }
                return (false, true)
            }
            if retry {
                if takeBudget(), launch(race, view: membership.view()) {
                    state.withLockedValue { $0.statistics.retries += 1 }
                    return
                }
                // No retry: fail unless another attempt is still out.
                let last = race.lock.withLock { () -> Bool in
                    guard !race.done, race.inFlight == 0 else { return false }
                    race.done = true
                    return true
                }
                guard last else { return }
            } else if !settle {
                return
            }
            race.lock.withLock { race.hedgeTimer }?.cancel()
            state.withLockedValue { $0.statistics.failures += 1 }
            race.promise.fail(error)
        }
    }

    enum FailureKind { case replicaTrouble, busy, unknownVersion, final }

    func classify(_ error: any Error) -> FailureKind {
        switch error {
        case ClientError.server(let status, _):
            switch status {
            case .shuttingDown, .tooManyConnections: return .replicaTrouble
            case .overloaded, .internalError: return .busy
            case .unknownVersion: return .unknownVersion
            default: return .final
            }
        case ClientError.connectionClosed: return .replicaTrouble
        case ClientError.timeout: return .final
        case is ClientError: return .final
        default: return .replicaTrouble   // connect refused, reset, TLS trouble reaching it
        }
    }

    // MARK: Replicas

    /// The less loaded of two replicas drawn at random from those not tried and not ejected (any not tried,
    /// if every one is ejected).
    func pick(from replicas: [ReplicaEndpoint], excluding tried: Set<ReplicaEndpoint>) -> ReplicaEndpoint? {
        let now = NIODeadline.now()
        return state.withLockedValue { s -> ReplicaEndpoint? in
            var candidates = replicas.filter { !tried.contains($0) && (s.slots[$0]?.ejectedUntil ?? .uptimeNanoseconds(0)) <= now }
            if candidates.isEmpty { candidates = replicas.filter { !tried.contains($0) } }
            guard !candidates.isEmpty else { return nil }
            let a = candidates[Int.random(in: 0..<candidates.count, using: &s.rng)]
            var chosen = a
            if candidates.count > 1 {
                var b = candidates[Int.random(in: 0..<(candidates.count - 1), using: &s.rng)]
                if b == a { b = candidates[candidates.count - 1] }
                if (s.slots[b]?.outstanding ?? 0) < (s.slots[a]?.outstanding ?? 0) { chosen = b }
            }
            s.slots[chosen, default: Slot()].outstanding += 1
            return chosen
        }
    }

    func eject(_ replica: ReplicaEndpoint) {
        let dropped = state.withLockedValue { s -> ArbiterClient? in
            s.slots[replica]?.ejectedUntil = .now() + configuration.ejection
            defer { s.slots[replica]?.client = nil; s.slots[replica]?.connecting = nil }
            return s.slots[replica]?.client
        }
        if let dropped { Task { try? await dropped.close() } }
    }

    /// The open connection to `replica`, or one being made (one at a time per replica).
    func connection(to replica: ReplicaEndpoint) -> EventLoopFuture<ArbiterClient> {
        let loop = group.next()
        return state.withLockedValue { s -> EventLoopFuture<ArbiterClient> in
            if let c = s.slots[replica]?.client, c.isOpen { return loop.makeSucceededFuture(c) }
            if let pending = s.slots[replica]?.connecting { return pending }
            // On the event loops, not in a task: a connect (and so a retry) must not wait for Swift's task pool.
            let future = ArbiterClient.connectFuture(host: replica.host, port: replica.port, configuration: configuration.connection,
                                                     group: loop)
            s.slots[replica, default: Slot()].connecting = future
            future.whenComplete { result in
                self.state.withLockedValue { s in
                    s.slots[replica]?.connecting = nil
                    if case .success(let c) = result { s.slots[replica]?.client = c }
                }
            }
            return future
        }
    }

    // MARK: Budget and hedging

    /// Takes one retry or hedge from the budget, if it has one.
    func takeBudget() -> Bool {
        state.withLockedValue { s in
            let now = NIODeadline.now()
            let seconds = Double((now - s.budgetRefilled).nanoseconds) / 1e9
            s.budgetRefilled = now
            s.budget = min(s.budget + seconds * configuration.retryBudgetPerSecond, max(10, configuration.retryBudgetPerSecond * 10))
            guard s.budget >= 1 else {
                s.statistics.budgetRefusals += 1
                return false
            }
            s.budget -= 1
            return true
        }
    }

    /// The model's recent latency at `hedgeQuantile`, once enough requests have been seen.
    func hedgeDelay(model: String) -> TimeAmount? {
        guard let q = configuration.hedgeQuantile else { return nil }
        return state.withLockedValue { s in
            s.latencies[model]?.quantile(q, after: configuration.hedgeAfterSamples).map { TimeAmount.nanoseconds($0) }
        }
    }
}

/// The last `capacity` latencies of a model, and a quantile of them recomputed every 100 new ones.
struct LatencyWindow {
    var samples: [Int64] = []
    var next = 0
    var seen = 0
    var cached: Int64?
    let capacity: Int

    init(capacity: Int) { self.capacity = max(10, capacity) }

    mutating func add(_ nanos: Int64) {
        if samples.count < capacity { samples.append(nanos) } else { samples[next] = nanos }
        next = (next + 1) % capacity
        seen += 1
        if seen % 100 == 0 { cached = nil }
    }

    mutating func quantile(_ q: Double, after minimum: Int) -> Int64? {
        guard seen >= minimum, !samples.isEmpty else { return nil }
        if let cached { return cached }
        let sorted = samples.sorted()
        let v = sorted[min(sorted.count - 1, Int(Double(sorted.count) * q))]
        cached = v
        return v
    }
}
