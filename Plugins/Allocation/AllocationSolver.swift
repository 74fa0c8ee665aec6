/// Exact allocation by min-cost flow: successive shortest paths with node potentials.
///
/// The network: every lead `i` holds `leadSlots[i]` units; each unit goes to an agent along an allowed pair
/// (capacity 1, cost −value) and on to the sink (the agent's capacity), or straight to the sink, unallocated
/// (cost 0). Every unit must reach the sink, so a min-cost flow is an allocation of the greatest total value.
/// The constraint matrix is a bipartite graph's — totally unimodular — so this integral optimum is the
/// integer program's.
///
/// Leads are taken one at a time, in `order` (the best pair first by default; the grade order when the caller
/// gives one). Each unit of a lead travels the shortest path from that lead to the sink in the residual network
/// (Dijkstra on reduced costs, which the potentials keep non-negative, stopping when the sink is settled): a
/// path may take a lead's agent away and send that lead elsewhere. After each search the potentials of the
/// settled nodes move by their distance, so reduced costs stay non-negative and every residual arc's reduced
/// cost is ≥ 0 at the end: the optimality certificate (``verify(_:_:)``).
///
/// Deterministic: the lead order, the pair order (by agent) and the heap's ties (by node) are fixed, so the same
/// problem gives the same allocation.
public enum AllocationSolver {
    /// Solves `problem` exactly, unless `deadline` (a time on `clock`, in ns) passes first: the leads not yet
    /// taken are then allocated greedily, in `order`, each to its best agents with capacity left, and the
    /// solution says so (``AllocationSolution/exact`` false).
    public static func solve(_ problem: AllocationProblem, order: [Int32]? = nil,
                             deadline: UInt64? = nil, clock: () -> UInt64 = monotonicNanoseconds) -> AllocationSolution {
        var state = FlowState(problem)
        let sequence = order ?? defaultOrder(problem)
        var exact = true, greedyLeads = 0
        for (n, lead) in sequence.enumerated() {
            let k = Int(lead)
            if let deadline, n % 32 == 0, clock() >= deadline {
                exact = false
                for rest in sequence[n...] where state.excess[Int(rest)] > 0 {
                    state.allocateGreedily(Int(rest))
                    greedyLeads += 1
                }
                break
            }
            while state.excess[k] > 0 { state.augment(from: k) }
        }
        let chosen = state.flow
        var objective: Int64 = 0
        for e in 0..<problem.pairCount where chosen[e] { objective += problem.pairValue[e] }
        let prices = exact ? state.shadowPrices() : [Int64](repeating: 0, count: problem.agentCount)
        return AllocationSolution(chosen: chosen, objective: objective, agentLoad: state.load, shadowPrice: prices,
                                  exact: exact, greedyLeads: greedyLeads, potentials: state.pi,
                                  work: .init(searches: state.searches, settledNodes: state.settledNodes, relaxations: state.relaxations))
    }

    /// Leads by their best pair's value, highest first; ties by index.
    static func defaultOrder(_ p: AllocationProblem) -> [Int32] {
        let best = (0..<p.leadCount).map { i in p.pairs(of: i).map { p.pairValue[$0] }.max() ?? 0 }
        return (0..<Int32(p.leadCount)).sorted { best[Int($0)] != best[Int($1)] ? best[Int($0)] > best[Int($1)] : $0 < $1 }
    }

    /// The greedy allocation on the same values: every pair, best first (ties by lead, then agent), taken when
    /// its lead has a slot and its agent capacity left. What a real-time "best grade to an agent" pass gets.
    public static func greedy(_ p: AllocationProblem) -> (chosen: [Bool], objective: Int64) {
        var pairs = Array(0..<p.pairCount)
        var lead = [Int32](repeating: 0, count: p.pairCount)
        for i in 0..<p.leadCount { for e in p.pairs(of: i) { lead[e] = Int32(i) } }
        pairs.sort { a, b in
            p.pairValue[a] != p.pairValue[b] ? p.pairValue[a] > p.pairValue[b] : (lead[a] != lead[b] ? lead[a] < lead[b] : p.pairAgent[a] < p.pairAgent[b])
        }
        var slots = p.leadSlots, capacity = p.agentCapacity
        var chosen = [Bool](repeating: false, count: p.pairCount)
        var objective: Int64 = 0
        for e in pairs {
            let i = Int(lead[e]), j = Int(p.pairAgent[e])
            guard slots[i] > 0, capacity[j] > 0 else { continue }
            slots[i] -= 1
            capacity[j] -= 1
            chosen[e] = true
            objective += p.pairValue[e]
        }
        return (chosen, objective)
    }

    /// Checks that `s` is a feasible allocation of `p` with the objective it states, and that its potentials
    /// certify it optimal: every arc of the residual network has a non-negative reduced cost. Throws naming the
    /// first thing that fails.
    public static func verify(_ p: AllocationProblem, _ s: AllocationSolution) throws(AllocationError) {
        let L = p.leadCount, A = p.agentCount, t = L + A
        guard s.chosen.count == p.pairCount, s.potentials.count == L + A + 1, s.agentLoad.count == A else {
            throw AllocationError.notOptimal("the solution's sizes do not match the problem")
        }
        var load = [Int32](repeating: 0, count: A)
        var objective: Int64 = 0
        let pi = s.potentials
        for i in 0..<L {
            var taken: Int32 = 0
            for e in p.pairs(of: i) {
                let j = Int(p.pairAgent[e]), v = p.pairValue[e]
                if s.chosen[e] {
                    taken += 1
                    load[j] += 1
                    objective += v
                    // The reverse arc agent → lead (cost +v) is residual.
                    guard v + pi[L + j] - pi[i] >= 0 else {
                        throw AllocationError.notOptimal("lead \(i) → agent \(j) (chosen, value \(v)): giving it up has reduced cost \(v + pi[L + j] - pi[i])")
                    }
                } else {
                    guard -v + pi[i] - pi[L + j] >= 0 else {
                        throw AllocationError.notOptimal("lead \(i) → agent \(j) (not chosen, value \(v)) has reduced cost \(-v + pi[i] - pi[L + j])")
                    }
                }
            }
            guard taken <= p.leadSlots[i] else { throw AllocationError.notOptimal("lead \(i) has \(taken) agents for \(p.leadSlots[i]) slots") }
            // The lead's unallocated slots: arc lead → sink with `taken` residual, its reverse with the rest.
            if taken > 0, pi[i] - pi[t] < 0 { throw AllocationError.notOptimal("lead \(i) could leave a slot unallocated at reduced cost \(pi[i] - pi[t])") }
            if taken < p.leadSlots[i], pi[t] - pi[i] < 0 { throw AllocationError.notOptimal("lead \(i) has an unallocated slot of reduced cost \(pi[t] - pi[i])") }
        }
        for j in 0..<A {
            guard load[j] == s.agentLoad[j] else { throw AllocationError.notOptimal("agent \(j) is said to have \(s.agentLoad[j]) leads, has \(load[j])") }
            guard load[j] <= p.agentCapacity[j] else { throw AllocationError.notOptimal("agent \(j) has \(load[j]) leads for capacity \(p.agentCapacity[j])") }
            if load[j] < p.agentCapacity[j], pi[L + j] - pi[t] < 0 { throw AllocationError.notOptimal("agent \(j)'s spare capacity has reduced cost \(pi[L + j] - pi[t])") }
            if load[j] > 0, pi[t] - pi[L + j] < 0 { throw AllocationError.notOptimal("agent \(j)'s load has reduced cost \(pi[t] - pi[L + j])") }
        }
        guard objective == s.objective else { throw AllocationError.notOptimal("the objective is \(objective), the solution says \(s.objective)") }
    }

    public static func monotonicNanoseconds() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
    }
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The residual network and the search's scratch, reused by every search (nothing is allocated per path).
struct FlowState {
    let p: AllocationProblem
    let L: Int, A: Int, t: Int
    /// Per pair: chosen (its unit flows lead → agent).
    var flow: [Bool]
    /// Per lead: units not yet sent; units sent straight to the sink (unallocated).
    var excess: [Int32]
    var unallocated: [Int32]
    /// Per agent: leads taken.
    var load: [Int32]
    /// Node potentials: leads, agents, sink.
    var pi: [Int64]
    /// Pairs by agent (CSR over pair indices, in lead order) and each pair's lead.
    let agentStart: [Int32]
    let agentPairs: [Int32]
    let pairLead: [Int32]
    // Search scratch: distance, the run that set it, the run that settled the node, how it was reached.
    var dist: [Int64]
    var seen: [Int32]
    var settledIn: [Int32]
    /// For an agent: the pair it was reached by (from its lead). For a lead: the pair it was reached by (taken
    /// from its agent). For the sink: the node it was reached from.
    var parent: [Int32]
    var settled: [Int32] = []
    var heap = NodeHeap()
    var run: Int32 = 0
    /// Work done: searches, nodes settled and arcs relaxed over all of them.
    var searches = 0, settledNodes = 0, relaxations = 0

    init(_ p: AllocationProblem) {
        self.p = p
        L = p.leadCount
        A = p.agentCount
        t = L + A
        let n = L + A + 1
        flow = [Bool](repeating: false, count: p.pairCount)
        excess = p.leadSlots
        unallocated = [Int32](repeating: 0, count: L)
        load = [Int32](repeating: 0, count: A)
        var lead = [Int32](repeating: 0, count: p.pairCount)
        var count = [Int32](repeating: 0, count: A + 1)
        var best = [Int64](repeating: 0, count: A)
        for i in 0..<L {
            for e in p.pairs(of: i) {
                lead[e] = Int32(i)
                let j = Int(p.pairAgent[e])
                count[j + 1] += 1
                best[j] = max(best[j], p.pairValue[e])
            }
        }
        for j in 0..<A { count[j + 1] += count[j] }
        var fill = count
        var byAgent = [Int32](repeating: 0, count: p.pairCount)
        for e in 0..<p.pairCount {
            let j = Int(p.pairAgent[e])
            byAgent[Int(fill[j])] = Int32(e)
            fill[j] += 1
        }
        agentStart = count
        agentPairs = byAgent
        pairLead = lead
        // Potentials under which every arc of the empty flow has a non-negative reduced cost
        // (c + π(u) − π(v) ≥ 0): leads 0, agents and the sink minus the greatest value. An agent is then
        // reached at (greatest − the pair's value) and the sink through it at no more, so the first search
        // settles the lead's best agent with capacity and the sink right after: while agents have room, a
        // search looks at one lead's pairs, as a greedy pass would.
        let top = best.max() ?? 0
        pi = [Int64](repeating: 0, count: n)
        for j in 0..<A { pi[L + j] = -top }
        pi[t] = -top
        dist = [Int64](repeating: 0, count: n)
        seen = [Int32](repeating: 0, count: n)
        settledIn = [Int32](repeating: 0, count: n)
        parent = [Int32](repeating: 0, count: n)
    }

    @inline(__always)
    mutating func relax(_ v: Int, _ d: Int64, from: Int32) {
        relaxations += 1
        if seen[v] != run || d < dist[v] {
            seen[v] = run
            dist[v] = d
            parent[v] = from
            heap.push(d, Int32(v))
        }
    }

    /// Sends one unit (or, straight to the sink, all that is left) of lead `k` along a shortest path.
    mutating func augment(from k: Int) {
        run += 1
        settled.removeAll(keepingCapacity: true)
        heap.clear()
        relax(k, 0, from: -1)
        var D: Int64 = 0
        while let (d, u32) = heap.pop() {
            let u = Int(u32)
            if settledIn[u] == run || d > dist[u] { continue }
            settledIn[u] = run
            if u == t {
                D = d
                break
            }
            settled.append(u32)
            if u < L {
                for e in p.pairs(of: u) where !flow[e] {
                    let v = L + Int(p.pairAgent[e])
                    relax(v, d - p.pairValue[e] + pi[u] - pi[v], from: Int32(e))
                }
                if unallocated[u] < p.leadSlots[u] { relax(t, d + pi[u] - pi[t], from: u32) }
            } else {
                let j = u - L
                for x in Int(agentStart[j]) ..< Int(agentStart[j + 1]) {
                    let e = Int(agentPairs[x])
                    guard flow[e] else { continue }
                    let v = Int(pairLead[e])
                    relax(v, d + p.pairValue[e] + pi[u] - pi[v], from: Int32(e))
                }
                if load[j] < p.agentCapacity[j] { relax(t, d + pi[u] - pi[t], from: u32) }
            }
        }
        // The sink is always reached: the lead's own unallocated arc has room while it has units to send.
        searches += 1
        settledNodes += settled.count
        for u in settled { pi[Int(u)] += dist[Int(u)] - D }
        // Walk the path back from the sink.
        let last = Int(parent[t])
        var amount: Int32 = 1
        if last < L {
            if last == k { amount = excess[k] }
            unallocated[last] += amount
        } else {
            load[last - L] += 1
        }
        var v = last
        while v != k {
            let e = Int(parent[v])
            if v >= L {
                flow[e] = true
                v = Int(pairLead[e])
            } else {
                flow[e] = false
                v = L + Int(p.pairAgent[e])
            }
        }
        excess[k] -= amount
    }

    /// Allocates lead `k`'s units to its best agents with capacity left (no re-routing), the rest unallocated.
    mutating func allocateGreedily(_ k: Int) {
        let candidates = p.pairs(of: k).sorted { p.pairValue[$0] != p.pairValue[$1] ? p.pairValue[$0] > p.pairValue[$1] : $0 < $1 }
        for e in candidates where excess[k] > 0 {
            let j = Int(p.pairAgent[e])
            guard !flow[e], load[j] < p.agentCapacity[j] else { continue }
            flow[e] = true
            load[j] += 1
            excess[k] -= 1
        }
        unallocated[k] += excess[k]
        excess[k] = 0
    }

    /// Per agent, what one more unit of capacity adds to the optimum: the most negative residual cycle through a
    /// new agent → sink arc, i.e. minus the shortest residual path from the sink to the agent (0 if none is
    /// negative). One Dijkstra from the sink on reduced costs.
    mutating func shadowPrices() -> [Int64] {
        run += 1
        heap.clear()
        relax(t, 0, from: -1)
        while let (d, u32) = heap.pop() {
            let u = Int(u32)
            if settledIn[u] == run || d > dist[u] { continue }
            settledIn[u] = run
            if u == t {
                for i in 0..<L where unallocated[i] > 0 { relax(i, d + pi[t] - pi[i], from: -1) }
                for j in 0..<A where load[j] > 0 { relax(L + j, d + pi[t] - pi[L + j], from: -1) }
            } else if u < L {
                for e in p.pairs(of: u) where !flow[e] {
                    let v = L + Int(p.pairAgent[e])
                    relax(v, d - p.pairValue[e] + pi[u] - pi[v], from: Int32(e))
                }
            } else {
                let j = u - L
                for x in Int(agentStart[j]) ..< Int(agentStart[j + 1]) {
                    let e = Int(agentPairs[x])
                    guard flow[e] else { continue }
                    let v = Int(pairLead[e])
                    relax(v, d + p.pairValue[e] + pi[u] - pi[v], from: Int32(e))
                }
            }
        }
        return (0..<A).map { j in
            let v = L + j
            guard settledIn[v] == run else { return 0 }
            // The path's true cost: its reduced cost less π(sink), plus π(agent).
            let cost = dist[v] - pi[t] + pi[v]
            return max(0, -cost)
        }
    }
}

/// A binary min-heap of (distance, node), ties broken by node: the search settles nodes in the same order on
/// every run.
struct NodeHeap {
    private var keys: [Int64] = []
    private var nodes: [Int32] = []

    mutating func clear() {
        keys.removeAll(keepingCapacity: true)
        nodes.removeAll(keepingCapacity: true)
    }

    @inline(__always)
    private func less(_ a: Int, _ b: Int) -> Bool {
        keys[a] != keys[b] ? keys[a] < keys[b] : nodes[a] < nodes[b]
    }

    mutating func push(_ key: Int64, _ node: Int32) {
        keys.append(key)
        nodes.append(node)
        var i = keys.count - 1
        while i > 0 {
            let up = (i - 1) / 2
            guard less(i, up) else { break }
            keys.swapAt(i, up)
            nodes.swapAt(i, up)
            i = up
        }
    }

    mutating func pop() -> (Int64, Int32)? {
        guard let top = keys.first else { return nil }
        let node = nodes[0]
        let lastKey = keys.removeLast(), lastNode = nodes.removeLast()
        if !keys.isEmpty {
            keys[0] = lastKey
            nodes[0] = lastNode
            var i = 0
            while true {
                let l = 2 * i + 1, r = l + 1
                var m = i
                if l < keys.count, less(l, m) { m = l }
                if r < keys.count, less(r, m) { m = r }
                if m == i { break }
                keys.swapAt(i, m)
                nodes.swapAt(i, m)
                i = m
            }
        }
        return (top, node)
    }
}
