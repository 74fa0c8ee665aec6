// The allocation solver alone, timed (bench/allocation/run.sh): random instances shaped like a recruiting
// business's day — leads of varied quality, agents of varied skill and capacity, each lead allowed a random
// share of the agents, the value of a pair its hire probability quantised to 2^20 — solved exactly, with the
// greedy pass on the same values beside it.
//
//   alloc-solver LEADS AGENTS DENSITY RUNS [SLOTS] [--world CITIES COVERAGE]
// ALLOC_ORDER=reverse|index takes the leads worst first or by index instead of best first (measured on the
// world's 20,000 × 2,000: 2.0× and 1.7× the time of best first).
// prints one JSON line: solve times (ms: p50, p99, max), the greedy pass's alone, both as the server runs them
// (`solve(compareWithGreedy:)`, sharing the sorted pairs), pairs, and the optimum against the greedy objective.
import Allocation
import ArbiterTraining
import Foundation

struct SplitMix64 {
    var state: UInt64
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
    mutating func uniform() -> Double { Double(next() >> 11) / Double(1 << 53) }
    mutating func normal() -> Double { sqrt(-2 * log(max(uniform(), 1e-300))) * cos(2 * .pi * uniform()) }
}

func instance(leads: Int, agents: Int, density: Double, slots: Int32, seed: UInt64) throws -> AllocationProblem {
    var rng = SplitMix64(state: seed)
    let quality = (0..<leads).map { _ in rng.normal() }
    let skill = (0..<agents).map { _ in 0.5 * rng.normal() }
    // Capacities average 1.2 × the leads' demand over the agents; some agents are full already (0).
    let mean = 1.2 * Double(leads) * Double(slots) / Double(agents)
    let capacity = (0..<agents).map { _ in rng.uniform() < 0.05 ? Int32(0) : Int32(max(0, (mean * (0.5 + rng.uniform())).rounded())) }
    let perLead = max(1, Int((density * Double(agents)).rounded()))
    var pairs: [[(agent: Int32, value: Int64)]] = []
    pairs.reserveCapacity(leads)
    var seen = [Int](repeating: -1, count: agents)
    for i in 0..<leads {
        var list: [(agent: Int32, value: Int64)] = []
        list.reserveCapacity(perLead)
        while list.count < perLead {
            let j = Int(rng.next() % UInt64(agents))
            if seen[j] == i { continue }
            seen[j] = i
            let logit = -2.5 + quality[i] + skill[j] + 0.3 * rng.normal()
            let p = 1 / (1 + exp(-logit))
            list.append((Int32(j), max(1, Int64((p * Double(1 << 20)).rounded()))))
        }
        pairs.append(list)
    }
    return try AllocationProblem(leadSlots: [Int32](repeating: slots, count: leads), agentCapacity: capacity, pairs: pairs)
}

func percentile(_ sorted: [Double], _ p: Double) -> Double {
    sorted[min(sorted.count - 1, Int((p / 100 * Double(sorted.count)).rounded(.up)) - 1)]
}

/// An instance from `arbiter-train gen-data --kind allocation`'s world (seed 1): a day's leads and every agent,
/// the pairs the rules allow valued by their true hire probability. Leads agree on which agents are good (skill is
/// a main effect), unlike the instances above, whose pairs carry their own noise.
func worldInstance(leads: Int, agents: Int, cities: Int, coverage: Double, day: Int) throws -> AllocationProblem {
    let world = AllocationWorld(seed: 1, agents: agents, leadsPerDay: leads, cities: cities, coverage: coverage)
    let ls = world.leads(day: 100 + day, count: leads)
    let pairs = ls.map { l in
        world.agents.indices.compactMap { j -> (agent: Int32, value: Int64)? in
            let a = world.agents[j]
            guard world.allowed(l, a) else { return nil }
            return (Int32(j), max(1, Int64((world.probability(l, a) * Double(1 << 20)).rounded())))
        }
    }
    return try AllocationProblem(leadSlots: [Int32](repeating: 1, count: leads), agentCapacity: world.agents.map { Int32($0.capacity) }, pairs: pairs)
}

var args = CommandLine.arguments
var world: (cities: Int, coverage: Double)? = nil
if let w = args.firstIndex(of: "--world"), w + 2 < args.count, let c = Int(args[w + 1]), let v = Double(args[w + 2]) {
    world = (c, v)
    args.removeSubrange(w...(w + 2))
}
guard args.count >= 5, let leads = Int(args[1]), let agents = Int(args[2]), let density = Double(args[3]), let runs = Int(args[4]),
      leads > 0, agents > 0, density > 0, density <= 1, runs > 0 else {
    FileHandle.standardError.write(Data("usage: alloc-solver LEADS AGENTS DENSITY RUNS [SLOTS]\n".utf8))
    exit(2)
}
let slots = args.count > 5 ? Int32(args[5]) ?? 1 : 1
var solve: [Double] = [], greedy: [Double] = [], served: [Double] = []
var optimum: Int64 = 0, greedyObjective: Int64 = 0, pairCount = 0
var work: [String: Int] = [:]
// Instances differ per run (seeds 1...runs); the first run's figures are reported beside the times.
let problems = try (1...min(runs, 20)).map { r -> AllocationProblem in
    if let world { return try worldInstance(leads: leads, agents: agents, cities: world.cities, coverage: world.coverage, day: r) }
    return try instance(leads: leads, agents: agents, density: density, slots: slots, seed: UInt64(r))
}
for r in 0..<runs {
    let p = problems[r % problems.count]
    var order: [Int32]? = nil
    switch ProcessInfo.processInfo.environment["ALLOC_ORDER"] {
    case "reverse":
        let best = (0..<p.leadCount).map { i in p.pairs(of: i).map { p.pairValue[$0] }.max() ?? 0 }
        order = (0..<Int32(p.leadCount)).sorted { best[Int($0)] != best[Int($1)] ? best[Int($0)] < best[Int($1)] : $0 < $1 }
    case "index": order = Array(0..<Int32(p.leadCount))
    default: break
    }
    let t0 = AllocationSolver.monotonicNanoseconds()
    let s = AllocationSolver.solve(p, order: order)
    let t1 = AllocationSolver.monotonicNanoseconds()
    let g = AllocationSolver.greedy(p)
    let t2 = AllocationSolver.monotonicNanoseconds()
    let both = AllocationSolver.solve(p, compareWithGreedy: true)
    let t3 = AllocationSolver.monotonicNanoseconds()
    solve.append(Double(t1 - t0) / 1e6)
    greedy.append(Double(t2 - t1) / 1e6)
    served.append(Double(t3 - t2) / 1e6)
    guard both.greedyObjective == g.objective, both.objective == s.objective else { fatalError("solve(compareWithGreedy:) disagrees") }
    if r == 0 {
        try AllocationSolver.verify(p, s)
        optimum = s.objective
        greedyObjective = g.objective
        pairCount = p.pairCount
        work = ["searches": s.work.searches, "settled": s.work.settledNodes, "relaxed": s.work.relaxations]
    }
}
solve.sort()
greedy.sort()
served.sort()
let out: [String: Any] = [
    "leads": leads, "agents": agents, "density": density, "slots": Int(slots), "pairs": pairCount, "runs": runs,
    "solve_ms": ["p50": percentile(solve, 50), "p99": percentile(solve, 99), "max": solve.last!],
    "greedy_ms": ["p50": percentile(greedy, 50), "p99": percentile(greedy, 99)],
    "solve_and_greedy_ms": ["p50": percentile(served, 50), "p99": percentile(served, 99)],
    "optimum_over_greedy": Double(optimum) / Double(max(greedyObjective, 1)), "work": work,
]
print(String(decoding: try JSONSerialization.data(withJSONObject: out, options: [.sortedKeys]), as: UTF8.self))
