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

    /// An instance from per-lead pair lists, in any order. Refuses negative slots or capacities, agents out of
    /// range, a pair given twice, and values that are not in `1 ... maxValue` (a pair worth nothing is not a pair).
    public init(leadSlots: [Int32], agentCapacity: [Int32], pairs: [[(agent: Int32, value: Int64)]]) throws(AllocationError) {
        guard pairs.count == leadSlots.count else {
            throw AllocationError.invalidProblem("\(pairs.count) pair lists for \(leadSlots.count) leads")
        }
        let total = pairs.reduce(0) { $0 + $1.count }
        guard total < Int(Int32.max) else { throw AllocationError.invalidProblem("\(total) pairs: too many") }
        var start: [Int32] = [0]
        start.reserveCapacity(leadSlots.count + 1)
        var agents: [Int32] = [], values: [Int64] = []
        agents.reserveCapacity(total)
        values.reserveCapacity(total)
        for list in pairs {
            for p in list.sorted(by: { $0.agent < $1.agent }) {
                agents.append(p.agent)
                values.append(p.value)
            }
            start.append(Int32(agents.count))
        }
        try self.init(leadSlots: leadSlots, agentCapacity: agentCapacity, pairStart: start, pairAgent: agents, pairValue: values)
    }

    /// An instance from its compressed form, as it is held (``pairStart``, ``pairAgent``, ``pairValue``): within
    /// a lead, agents must increase (which also means no pair is given twice). Validated as the other initialiser.
    public init(leadSlots: [Int32], agentCapacity: [Int32], pairStart: [Int32], pairAgent: [Int32], pairValue: [Int64]) throws(AllocationError) {
        if let i = leadSlots.firstIndex(where: { $0 < 0 }) {
            throw AllocationError.invalidProblem("lead \(i) has \(leadSlots[i]) slots; slots must be 0 or more")
        }
        if let j = agentCapacity.firstIndex(where: { $0 < 0 }) {
            throw AllocationError.invalidProblem("agent \(j) has capacity \(agentCapacity[j]); capacity must be 0 or more")
        }
        guard leadSlots.count < Int(Int32.max), agentCapacity.count < Int(Int32.max), pairAgent.count < Int(Int32.max) else {
            throw AllocationError.invalidProblem("too many leads, agents or pairs")
        }
        guard pairStart.count == leadSlots.count + 1, pairStart.first == 0, Int(pairStart.last ?? -1) == pairAgent.count,
              pairValue.count == pairAgent.count else {
            throw AllocationError.invalidProblem("pair offsets and lists do not match \(leadSlots.count) leads and \(pairAgent.count) pairs")
        }
        for i in 0..<leadSlots.count {
            let lo = Int(pairStart[i]), hi = Int(pairStart[i + 1])
            guard lo <= hi else { throw AllocationError.invalidProblem("lead \(i)'s pair offsets decrease") }
            for e in lo..<hi {
                let agent = pairAgent[e], value = pairValue[e]
                guard agent >= 0, Int(agent) < agentCapacity.count else {
                    throw AllocationError.invalidProblem("lead \(i) has a pair with agent \(agent); there are \(agentCapacity.count) agents")
                }
                guard e == lo || pairAgent[e - 1] < agent else {
                    throw AllocationError.invalidProblem(pairAgent[e - 1] == agent ? "lead \(i) has agent \(agent) twice"
                                                                                 : "lead \(i)'s agents are not in increasing order")
                }
                guard value >= 1, value <= Self.maxValue else {
                    throw AllocationError.invalidProblem("lead \(i), agent \(agent): value \(value) is outside 1...\(Self.maxValue)")
                }
            }
        }
        self.leadSlots = leadSlots
        self.agentCapacity = agentCapacity
        self.pairStart = pairStart
        self.pairAgent = pairAgent
        self.pairValue = pairValue
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
    /// Per lead, whether it was placed greedily after the deadline (empty when exact).
    public var placedGreedily: [Bool]
    /// Leads allocated greedily after the deadline (0 when exact).
    public var greedyLeads: Int { placedGreedily.reduce(0) { $0 + ($1 ? 1 : 0) } }
    /// The greedy pass's objective on the same values (``AllocationSolver/greedy(_:)``), when asked for.
    public var greedyObjective: Int64?
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
