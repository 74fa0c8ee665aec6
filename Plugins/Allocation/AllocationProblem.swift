/// One allocation instance: leads, agents, and the allowed lead–agent pairs with their values.
///
/// Each lead may go to at most `leadSlots[i]` agents, each agent take at most `agentCapacity[j]` leads, and a
/// pair at most once; the solver maximises the sum of the chosen pairs' values. Values are integers (a
/// probability quantised by the model's scale), so the optimum is exact and the same request gives the same
/// answer on every machine.
///
/// Pairs are held per lead, compressed (CSR): lead `i`'s pairs are `pairStart[i] ..< pairStart[i + 1]`, each
/// with its agent and value. Within a lead, pairs are in increasing agent order (``init(leadSlots:agentCapacity:pairs:)``
/// sorts them), which with the fixed lead order makes the solver's ties break the same way every time.
public struct AllocationProblem: Sendable {
    public let leadSlots: [Int32]
    public let agentCapacity: [Int32]
    public let pairStart: [Int32]
    public let pairAgent: [Int32]
    public let pairValue: [Int64]

    public var leadCount: Int { leadSlots.count }
    public var agentCount: Int { agentCapacity.count }
    public var pairCount: Int { pairAgent.count }

    /// Values may be at most this (2^32): a potential is at most a path's length, a path at most every node,
    /// so potentials stay inside Int64 for up to 2^30 nodes.
    public static let maxValue: Int64 = 1 << 32

    /// An instance from per-lead pair lists. Refuses negative slots or capacities, agents out of range, a pair
    /// given twice, and values that are not in `1 ... maxValue` (a pair worth nothing is not a pair).
    public init(leadSlots: [Int32], agentCapacity: [Int32], pairs: [[(agent: Int32, value: Int64)]]) throws(AllocationError) {
        guard pairs.count == leadSlots.count else {
            throw AllocationError.invalidProblem("\(pairs.count) pair lists for \(leadSlots.count) leads")
        }
        if let i = leadSlots.firstIndex(where: { $0 < 0 }) {
            throw AllocationError.invalidProblem("lead \(i) has \(leadSlots[i]) slots; slots must be 0 or more")
        }
        if let j = agentCapacity.firstIndex(where: { $0 < 0 }) {
            throw AllocationError.invalidProblem("agent \(j) has capacity \(agentCapacity[j]); capacity must be 0 or more")
        }
        guard leadSlots.count < Int(Int32.max), agentCapacity.count < Int(Int32.max) else {
            throw AllocationError.invalidProblem("too many leads or agents")
        }
        var start: [Int32] = [0]
        start.reserveCapacity(leadSlots.count + 1)
        var agents: [Int32] = [], values: [Int64] = []
        let total = pairs.reduce(0) { $0 + $1.count }
        guard total < Int(Int32.max) else { throw AllocationError.invalidProblem("\(total) pairs: too many") }
        agents.reserveCapacity(total)
        values.reserveCapacity(total)
        for (i, list) in pairs.enumerated() {
            let sorted = list.sorted { $0.agent < $1.agent }
            for (k, p) in sorted.enumerated() {
                guard p.agent >= 0, Int(p.agent) < agentCapacity.count else {
                    throw AllocationError.invalidProblem("lead \(i) has a pair with agent \(p.agent); there are \(agentCapacity.count) agents")
                }
                guard k == 0 || sorted[k - 1].agent != p.agent else {
                    throw AllocationError.invalidProblem("lead \(i) has agent \(p.agent) twice")
                }
                guard p.value >= 1, p.value <= Self.maxValue else {
                    throw AllocationError.invalidProblem("lead \(i), agent \(p.agent): value \(p.value) is outside 1...\(Self.maxValue)")
                }
                agents.append(p.agent)
                values.append(p.value)
            }
            start.append(Int32(agents.count))
        }
        self.leadSlots = leadSlots
        self.agentCapacity = agentCapacity
        pairStart = start
        pairAgent = agents
        pairValue = values
    }

    /// The pairs of lead `i`, as indices into `pairAgent` and `pairValue`.
    @inline(__always)
    public func pairs(of lead: Int) -> Range<Int> { Int(pairStart[lead]) ..< Int(pairStart[lead + 1]) }
}

/// What the solver found.
public struct AllocationSolution: Sendable, Equatable {
    /// Per pair (as in ``AllocationProblem/pairAgent``): whether it was chosen.
    public var chosen: [Bool]
    /// The sum of the chosen pairs' values.
    public var objective: Int64
    /// Leads each agent was given.
    public var agentLoad: [Int32]
    /// What one more unit of each agent's capacity would add to the objective (its shadow price: 0 for an
    /// agent with capacity to spare). Exact when ``exact`` is true.
    public var shadowPrice: [Int64]
    /// Whether this is an optimum (false when a deadline cut the exact search short and the remaining leads
    /// were allocated greedily).
    public var exact: Bool
    /// Leads allocated greedily after the deadline (0 when exact).
    public var greedyLeads: Int
    /// The certificate: node potentials under which every residual arc has a non-negative reduced cost
    /// (leads, then agents, then the sink). Checked by ``AllocationSolver/verify(_:_:)``.
    public var potentials: [Int64]
    /// What the search did (for benchmarks; not part of the answer).
    public var work: Work

    public struct Work: Sendable, Equatable {
        /// Shortest-path searches, nodes they settled, arcs they relaxed.
        public var searches: Int
        public var settledNodes: Int
        public var relaxations: Int
    }
}

/// Why an allocation could not be made.
public enum AllocationError: Error, Equatable, CustomStringConvertible, Sendable {
    case invalidProblem(String)
    case notOptimal(String)

    public var description: String {
        switch self {
        case .invalidProblem(let s): "invalid allocation problem: \(s)"
        case .notOptimal(let s): "allocation is not optimal: \(s)"
        }
    }
}
