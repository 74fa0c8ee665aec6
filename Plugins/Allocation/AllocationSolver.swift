import CPrefetch
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Exact allocation by min-cost flow: successive shortest paths with node potentials.
///
/// The network: every lead `i` holds `leadSlots[i]` units; each unit goes to an agent along an allowed pair
/// (capacity 1, cost −value) and on to the sink (the agent's capacity), or straight to the sink, unallocated
/// (cost 0). Every unit must reach the sink, so a min-cost flow is an allocation of the greatest total value.
/// The constraint matrix is a bipartite graph's — totally unimodular — so this integral optimum is the
/// integer program's.
///
/// Leads are taken one at a time, in `order` (by default their best pair's value, highest first). Each unit of a lead travels the shortest path from that lead to the sink in the residual network
/// (Dijkstra on reduced costs, which the potentials keep non-negative, stopping when the sink is settled): a
/// path may take a lead's agent away and send that lead elsewhere. After each search the potentials of the
/// settled nodes move by their distance, so reduced costs stay non-negative and every residual arc's reduced
/// cost is ≥ 0 at the end: the optimality certificate (``verify(_:_:)``).
///
/// What keeps a search small (see ``FlowNetwork``): a lead's pairs are held best value first, and no agent's
/// potential is ever above the sink's, so once a pair's value is too low for any path through it to beat the
/// best path to the sink found so far, the rest of the lead's pairs are not looked at; an agent looks only at
/// the pairs it holds, not every pair it is allowed; and the sink wins distance ties, so a search ends before
/// settling the plateau of nodes at the sink's distance.
///
/// Deterministic: the lead order, the pair order (by value, then agent) and the heap's ties (the sink first,
/// then by node) are fixed, so the same problem gives the same allocation.
public enum AllocationSolver {
    /// Solves `problem` exactly, taking leads in `order` (a permutation of the leads; by default their best
    /// pair's value, highest first, which keeps searches short), unless `deadline` (a time on `clock`, in ns)
    /// passes first: the leads not yet taken are then allocated greedily, in `greedyOrder` (a permutation; by
    /// default `order`), each to its best agents with capacity left, and the solution says so
    /// (``AllocationSolution/exact`` false).
    /// With `compareWithGreedy`, the greedy pass's objective on the same values is computed too
    /// (``AllocationSolution/greedyObjective``), sharing the sorted pairs.
    public static func solve(_ problem: AllocationProblem, order: [Int32]? = nil, greedyOrder: [Int32]? = nil, deadline: UInt64? = nil,
                             clock: () -> UInt64 = monotonicNanoseconds, compareWithGreedy: Bool = false) -> AllocationSolution {
        let network = FlowNetwork(problem)
        let greedyObjective = compareWithGreedy ? greedy(problem, network.arcs).objective : nil
        let sequence = order ?? network.defaultOrder()
        precondition(sequence.count == problem.leadCount && Set(sequence).count == sequence.count
                     && sequence.allSatisfy { $0 >= 0 && Int($0) < problem.leadCount }, "order must list every lead once")
        var exact = true
        var placedGreedily: [Bool] = []
        for (n, lead) in sequence.enumerated() {
            let k = Int(lead)
            if let deadline, n % 32 == 0, clock() >= deadline {
                exact = false
                placedGreedily = [Bool](repeating: false, count: problem.leadCount)
                let finish = greedyOrder ?? Array(sequence[n...])
                precondition(greedyOrder.map { $0.count == problem.leadCount && Set($0).count == $0.count && $0.allSatisfy { $0 >= 0 && Int($0) < problem.leadCount } } ?? true,
                             "greedyOrder must list every lead once")
                for rest in finish where network.excess[Int(rest)] > 0 {
                    network.allocateGreedily(Int(rest))
                    placedGreedily[Int(rest)] = true
                }
                break
            }
            while network.excess[k] > 0 { network.augment(from: k) }
        }
        let prices = exact ? network.shadowPrices() : [Int64](repeating: 0, count: problem.agentCount)
        return AllocationSolution(chosen: network.chosen(), objective: network.objective(), agentLoad: Array(network.load),
                                  shadowPrice: prices, exact: exact, placedGreedily: placedGreedily, greedyObjective: greedyObjective,
                                  potentials: Array(network.pi),
                                  work: .init(searches: network.searches, settledNodes: network.settledNodes,
                                              relaxations: network.relaxations))
    }

    /// The greedy allocation on the same values: every pair, best first (ties by lead, then agent), taken when
    /// its lead has a slot and its agent capacity left. What a real-time "best grade to an agent" pass gets.
    /// A merge of the leads' value-sorted pair lists: the pairs of a lead whose slots are filled are not looked at.
    public static func greedy(_ p: AllocationProblem) -> (chosen: [Bool], objective: Int64) {
        greedy(p, SortedArcs(p))
    }

    static func greedy(_ p: AllocationProblem, _ arcs: SortedArcs) -> (chosen: [Bool], objective: Int64) {
        var slots = p.leadSlots, capacity = p.agentCapacity
        var next = Array(arcs.start.dropLast())
        var chosen = [Bool](repeating: false, count: p.pairCount)
        var objective: Int64 = 0
        let heap = IndexedHeap(capacity: p.leadCount)
        for i in 0..<p.leadCount where slots[i] > 0 && next[i] < arcs.start[i + 1] {
            heap.update(Int32(i), -arcs.value(Int(next[i])))
        }
        while let (_, lead) = heap.popMin() {
            let i = Int(lead), s = Int(next[i])
            let j = arcs.agent(s)
            if capacity[j] > 0 {
                capacity[j] -= 1
                slots[i] -= 1
                chosen[Int(arcs.pair[s])] = true
                objective += arcs.value(s)
            }
            next[i] += 1
            if slots[i] > 0, next[i] < arcs.start[i + 1] { heap.update(lead, -arcs.value(Int(next[i]))) }
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

/// A fixed-size buffer allocated once and freed with its owner (the solver's state lives in these: no
/// uniqueness checks or reallocation in the search).
private func buffer<T>(_ count: Int, _ value: T) -> UnsafeMutableBufferPointer<T> {
    let b = UnsafeMutableBufferPointer<T>.allocate(capacity: max(count, 1))
    b.initialize(repeating: value)
    return b
}

/// Each lead's pairs, best value first (ties by agent), as arcs: position `s` in `start[i] ..< start[i + 1]`
/// (the lead's own range of pair indices, reordered), with the pair's index in the problem beside it.
///
/// An arc is one word, so a scan of a lead's arcs reads 8 bytes per pair: the agent in bits 0–30,
/// `maxValue − value` in bits 31–62 (an ascending sort of the words is value descending, then agent
/// ascending), and in bit 63 whether the arc carries flow (the pair is chosen).
final class SortedArcs {
    let start: [Int32]
    let word: UnsafeMutableBufferPointer<UInt64>
    let pair: UnsafeMutableBufferPointer<Int32>
    static let flowBit: UInt64 = 1 << 63

    init(_ p: AllocationProblem) {
        start = p.pairStart
        word = buffer(p.pairCount, 0)
        pair = buffer(p.pairCount, 0)
        // Where each agent sits in the lead being sorted, to find an arc's pair index.
        var place = [Int32](repeating: 0, count: p.agentCount)
        for i in 0..<p.leadCount {
            let range = p.pairs(of: i)
            for e in range {
                word[e] = UInt64(AllocationProblem.maxValue - p.pairValue[e]) << 31 | UInt64(p.pairAgent[e])
                place[Int(p.pairAgent[e])] = Int32(e)
            }
            var lead = UnsafeMutableBufferPointer(rebasing: word[range])
            lead.sort()
            for s in range { pair[s] = place[Int(word[s] & 0x7FFF_FFFF)] }
        }
    }

    deinit {
        word.deallocate()
        pair.deallocate()
    }

    @inline(__always) func agent(_ s: Int) -> Int { Int(word[s] & 0x7FFF_FFFF) }
    @inline(__always) func value(_ s: Int) -> Int64 { AllocationProblem.maxValue - Int64((word[s] >> 31) & 0xFFFF_FFFF) }
    @inline(__always) func carriesFlow(_ s: Int) -> Bool { word[s] >= Self.flowBit }
    @inline(__always) func setFlow(_ s: Int, _ on: Bool) {
        word[s] = on ? word[s] | Self.flowBit : word[s] & ~Self.flowBit
    }
}

/// A 4-ary min-heap of nodes keyed by distance (half the levels of a binary one), at most one entry per node (a better distance moves the node
/// up), ties broken by node so the search settles nodes in the same order on every run — except that `first`
/// (the sink) wins every tie: a search stops as soon as the sink is as near as anything left, instead of first
/// settling the whole plateau of nodes at its distance (whose potentials would not move).
final class IndexedHeap {
    private let keys: UnsafeMutableBufferPointer<Int64>
    private let nodes: UnsafeMutableBufferPointer<Int32>
    /// Per node: its position in the heap, or −1.
    private let position: UnsafeMutableBufferPointer<Int32>
    private(set) var count = 0
    private let first: Int32

    init(capacity: Int, first: Int32 = -1) {
        self.first = first
        keys = buffer(capacity, 0)
        nodes = buffer(capacity, 0)
        position = buffer(capacity, -1)
    }

    deinit {
        keys.deallocate()
        nodes.deallocate()
        position.deallocate()
    }

    func clear() {
        for i in 0..<count { position[Int(nodes[i])] = -1 }
        count = 0
    }

    @inline(__always)
    private func less(_ ka: Int64, _ na: Int32, _ kb: Int64, _ nb: Int32) -> Bool {
        ka != kb ? ka < kb : (na == first || (nb != first && na < nb))
    }

    /// Inserts `node` with `key`, or lowers its key if it is in the heap already (a higher key is ignored).
    @inline(__always)
    func update(_ node: Int32, _ key: Int64) {
        var i = Int(position[Int(node)])
        if i < 0 {
            i = count
            count += 1
        } else if !less(key, node, keys[i], node) {
            return
        }
        while i > 0 {
            let up = (i - 1) >> 2
            guard less(key, node, keys[up], nodes[up]) else { break }
            keys[i] = keys[up]
            nodes[i] = nodes[up]
            position[Int(nodes[i])] = Int32(i)
            i = up
        }
        keys[i] = key
        nodes[i] = node
        position[Int(node)] = Int32(i)
    }

    @inline(__always)
    func popMin() -> (Int64, Int32)? {
        guard count > 0 else { return nil }
        let topKey = keys[0], topNode = nodes[0]
        position[Int(topNode)] = -1
        count -= 1
        if count > 0 {
            let key = keys[count], node = nodes[count]
            var i = 0
            while true {
                let l = 4 &* i &+ 1
                if l >= count { break }
                var m = l
                var c = l &+ 1
                let end = min(l &+ 4, count)
                while c < end {
                    if less(keys[c], nodes[c], keys[m], nodes[m]) { m = c }
                    c &+= 1
                }
                guard less(keys[m], nodes[m], key, node) else { break }
                keys[i] = keys[m]
                nodes[i] = nodes[m]
                position[Int(nodes[i])] = Int32(i)
                i = m
            }
            keys[i] = key
            nodes[i] = node
            position[Int(node)] = Int32(i)
        }
        return (topKey, topNode)
    }
}

/// The residual network and the search's scratch, allocated once per solve (nothing is allocated per path).
///
/// Nodes: leads `0 ..< L`, agents `L ..< L + A`, the sink `L + A`. Arcs are the leads' pairs as ``SortedArcs``
/// holds them, with the flow bit saying arc `s` is chosen (its unit flows lead → agent). Each agent keeps the arcs it
/// holds in its own range of `held` (as many places as it can hold), so it looks at those only.
///
/// Two facts bound a search. Potentials only fall (a settled node moves by its distance less the sink's, never
/// more than 0) and the sink is always settled at that distance, so the sink's potential stays where it began,
/// `−top`, as does every agent's while it has capacity to spare (its arc to the sink must keep a non-negative
/// reduced cost): no agent's potential is ever above `−top`. A lead at distance `d` therefore reaches an agent
/// through a pair of value `v` at no less than `d + π(lead) − v + top`, and since its pairs are held best value
/// first, the scan stops at the first pair for which that is no better than the best path to the sink so far.
/// And when a pair reaches an agent with room, the path on to the sink is recorded at once (the agent's arc to
/// the sink costs 0), so that bound is tight early.
final class FlowNetwork {
    let p: AllocationProblem
    let L: Int, A: Int, t: Int
    let arcs: SortedArcs
    let arcLead: UnsafeMutableBufferPointer<Int32>
    /// Per lead: units not yet sent; units sent straight to the sink (unallocated).
    let excess: UnsafeMutableBufferPointer<Int32>
    let unallocated: UnsafeMutableBufferPointer<Int32>
    /// Per agent: the arcs it holds, `held[heldStart[j] ..< heldStart[j] + load[j]]`, and each arc's place there.
    /// Beside each held arc, its lead and value (`heldLead`, `heldValue`): an agent's scan reads its own range
    /// only, not the arcs' words scattered over every lead's pairs.
    let load: UnsafeMutableBufferPointer<Int32>
    let heldStart: UnsafeMutableBufferPointer<Int32>
    let held: UnsafeMutableBufferPointer<Int32>
    let heldLead: UnsafeMutableBufferPointer<Int32>
    let heldValue: UnsafeMutableBufferPointer<Int64>
    let heldAt: UnsafeMutableBufferPointer<Int32>
    /// Node potentials: leads, agents, sink.
    let pi: UnsafeMutableBufferPointer<Int64>
    /// The highest potential any agent has or will have (see above).
    let agentPotentialBound: Int64
    // Search scratch: distance, the run that set it, the run that settled the node, how it was reached (for an
    // agent, the arc from its lead; for a lead, the arc taken from its agent; for the sink, the node before it).
    let dist: UnsafeMutableBufferPointer<Int64>
    let seen: UnsafeMutableBufferPointer<Int32>
    let settledIn: UnsafeMutableBufferPointer<Int32>
    let parent: UnsafeMutableBufferPointer<Int32>
    let settled: UnsafeMutableBufferPointer<Int32>
    var settledCount = 0
    /// The sink's tentative distance in this search (Int64.max until a path reaches it).
    var sinkDistance: Int64 = .max
    /// Copies of the problem's slots and capacities (read in every scan).
    let leadSlots: UnsafeMutableBufferPointer<Int32>
    let capacity: UnsafeMutableBufferPointer<Int32>
    let heap: IndexedHeap
    var run: Int32 = 0
    /// Work done: searches, nodes settled and arcs relaxed over all of them.
    var searches = 0, settledNodes = 0, relaxations = 0

    init(_ p: AllocationProblem) {
        self.p = p
        L = p.leadCount
        A = p.agentCount
        t = L + A
        let n = L + A + 1
        arcs = SortedArcs(p)
        arcLead = buffer(p.pairCount, 0)
        excess = buffer(L, 0)
        unallocated = buffer(L, 0)
        load = buffer(A, 0)
        heldStart = buffer(A + 1, 0)
        heldAt = buffer(p.pairCount, -1)
        var degree = [Int32](repeating: 0, count: A)
        var top: Int64 = 0
        for i in 0..<L {
            excess[i] = p.leadSlots[i]
            for s in p.pairs(of: i) {
                arcLead[s] = Int32(i)
                degree[arcs.agent(s)] += 1
                top = max(top, arcs.value(s))
            }
        }
        for j in 0..<A { heldStart[j + 1] = heldStart[j] + min(degree[j], p.agentCapacity[j]) }
        held = buffer(Int(heldStart[A]), 0)
        heldLead = buffer(Int(heldStart[A]), 0)
        heldValue = buffer(Int(heldStart[A]), 0)
        // Potentials under which every arc of the empty flow has a non-negative reduced cost
        // (c + π(u) − π(v) ≥ 0): leads 0, agents and the sink minus the greatest value. An agent is then
        // reached at (greatest − the pair's value) and the sink through it at no more, so while agents have
        // room a search looks at a lead's best pairs only, as a greedy pass would.
        pi = buffer(n, -top)
        for i in 0..<L { pi[i] = 0 }
        agentPotentialBound = -top
        dist = buffer(n, 0)
        seen = buffer(n, 0)
        settledIn = buffer(n, 0)
        parent = buffer(n, 0)
        settled = buffer(n, 0)
        heap = IndexedHeap(capacity: n, first: Int32(t))
        leadSlots = buffer(L, 0)
        capacity = buffer(A, 0)
        for i in 0..<L { leadSlots[i] = p.leadSlots[i] }
        for j in 0..<A { capacity[j] = p.agentCapacity[j] }
    }

    deinit {
        heldValue.deallocate()
        for b in [arcLead, held, heldLead, heldAt, leadSlots, capacity, excess, unallocated, load, heldStart, seen, settledIn, parent, settled] { b.deallocate() }
        pi.deallocate()
        dist.deallocate()
    }

    /// Leads by their best pair's value, highest first; ties by index.
    func defaultOrder() -> [Int32] {
        var keys = (0..<L).map { i -> UInt64 in
            let s = Int(arcs.start[i])
            let best = s < Int(arcs.start[i + 1]) ? arcs.value(s) : 0
            return UInt64(AllocationProblem.maxValue - best) << 31 | UInt64(i)
        }
        keys.sort()
        return keys.map { Int32(truncatingIfNeeded: $0 & 0x7FFF_FFFF) }
    }

    func chosen() -> [Bool] {
        var chosen = [Bool](repeating: false, count: p.pairCount)
        for s in 0..<p.pairCount where arcs.carriesFlow(s) { chosen[Int(arcs.pair[s])] = true }
        return chosen
    }

    func objective() -> Int64 {
        var total: Int64 = 0
        for s in 0..<p.pairCount where arcs.carriesFlow(s) { total += arcs.value(s) }
        return total
    }

    @inline(__always)
    private func assign(_ s: Int) {
        let j = arcs.agent(s)
        let at = heldStart[j] + load[j]
        held[Int(at)] = Int32(s)
        heldLead[Int(at)] = arcLead[s]
        heldValue[Int(at)] = arcs.value(s)
        heldAt[s] = at
        load[j] += 1
        arcs.setFlow(s, true)
    }

    @inline(__always)
    private func unassign(_ s: Int) {
        let j = arcs.agent(s)
        load[j] -= 1
        let last = Int(heldStart[j] + load[j]), at = Int(heldAt[s])
        let moved = held[last]
        held[at] = moved
        heldLead[at] = heldLead[last]
        heldValue[at] = heldValue[last]
        heldAt[Int(moved)] = Int32(at)
        heldAt[s] = -1
        arcs.setFlow(s, false)
    }

    @inline(__always)
    private func relax(_ v: Int, _ d: Int64, from: Int32) {
        relaxations &+= 1
        if seen[v] != run || d < dist[v] {
            seen[v] = run
            dist[v] = d
            parent[v] = from
            heap.update(Int32(v), d)
            if v == t { sinkDistance = d }
        }
    }

    /// Relaxes the residual arcs out of node `u`, settled at distance `d`. With `toSink`, also the arcs into
    /// the sink, with the pruning described above (a node no nearer than the sink's tentative distance is not
    /// queued); without it (the shadow-price search from the sink), every arc between leads and agents.
    @inline(__always)
    private func relaxNeighbours(of u: Int, at d: Int64, toSink: Bool) {
        // Distances and potentials stay far inside Int64 (values ≤ 2^32, paths of at most every node), so the
        // arithmetic here wraps rather than checks.
        let base = d &+ pi[u]
        if u < L {
            if toSink, unallocated[u] < leadSlots[u] { relax(t, base &- pi[t], from: Int32(u)) }
            let stop = base &- agentPotentialBound
            for s in Int(arcs.start[u]) ..< Int(arcs.start[u + 1]) {
                let w = arcs.word[s]
                let value = AllocationProblem.maxValue &- Int64((w >> 31) & 0xFFFF_FFFF)
                if stop &- value >= sinkDistance { break }
                if w >= SortedArcs.flowBit { continue }
                let j = Int(w & 0x7FFF_FFFF), v = L &+ j
                let dv = base &- value &- pi[v]
                if dv >= sinkDistance { continue }
                relax(v, dv, from: Int32(truncatingIfNeeded: s))
                if toSink, load[j] < capacity[j], dist[v] == dv { relax(t, dv &+ pi[v] &- pi[t], from: Int32(truncatingIfNeeded: v)) }
            }
        } else {
            let j = u &- L
            if toSink, load[j] < capacity[j] { relax(t, base &- pi[t], from: Int32(truncatingIfNeeded: u)) }
            let first = Int(heldStart[j])
            for x in first ..< first &+ Int(load[j]) {
                let v = Int(heldLead[x])
                let dv = base &+ heldValue[x] &- pi[v]
                if dv >= sinkDistance { continue }
                relax(v, dv, from: held[x])
                // The lead's pairs are read when it is settled, likely from memory: start loading them now.
                if toSink { arbiter_prefetch(arcs.word.baseAddress! + Int(arcs.start[v])) }
            }
        }
    }

    /// Sends one unit (or, straight to the sink, all that is left) of lead `k` along a shortest path.
    func augment(from k: Int) {
        run += 1
        settledCount = 0
        sinkDistance = .max
        heap.clear()
        relax(k, 0, from: -1)
        var D: Int64 = 0
        while let (d, u32) = heap.popMin() {
            let u = Int(u32)
            settledIn[u] = run
            if u == t {
                D = d
                break
            }
            settled[settledCount] = u32
            settledCount += 1
            relaxNeighbours(of: u, at: d, toSink: true)
        }
        // The sink is always reached: the lead's own unallocated arc has room while it has units to send.
        searches += 1
        settledNodes += settledCount
        for x in 0..<settledCount {
            let u = Int(settled[x])
            pi[u] += dist[u] - D
        }
        // Walk the path back from the sink. Each agent on it gives up the arc to its next lead before it takes
        // the one from its previous lead, so its held range never overflows.
        let last = Int(parent[t])
        var amount: Int32 = 1
        if last < L {
            if last == k { amount = excess[k] }
            unallocated[last] += amount
        }
        var v = last
        while v != k {
            let s = Int(parent[v])
            if v >= L {
                assign(s)
                v = Int(arcLead[s])
            } else {
                unassign(s)
                v = L + arcs.agent(s)
            }
        }
        excess[k] -= amount
    }

    /// Allocates lead `k`'s units to its best agents with capacity left (no re-routing), the rest unallocated.
    func allocateGreedily(_ k: Int) {
        for s in Int(arcs.start[k]) ..< Int(arcs.start[k + 1]) where excess[k] > 0 {
            let j = arcs.agent(s)
            guard !arcs.carriesFlow(s), load[j] < p.agentCapacity[j] else { continue }
            assign(s)
            excess[k] -= 1
        }
        unallocated[k] += excess[k]
        excess[k] = 0
    }

    /// Per agent, what one more unit of capacity adds to the optimum: the most negative residual cycle through a
    /// new agent → sink arc, i.e. minus the shortest residual path from the sink to the agent (0 if none is
    /// negative). One Dijkstra from the sink on reduced costs.
    func shadowPrices() -> [Int64] {
        run += 1
        sinkDistance = .max
        heap.clear()
        // The sink's arcs out: the reverses of the leads' unallocated units and the agents' loads.
        for i in 0..<L where unallocated[i] > 0 { relax(i, pi[t] - pi[i], from: -1) }
        for j in 0..<A where load[j] > 0 { relax(L + j, pi[t] - pi[L + j], from: -1) }
        while let (d, u32) = heap.popMin() {
            let u = Int(u32)
            settledIn[u] = run
            relaxNeighbours(of: u, at: d, toSink: false)
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
