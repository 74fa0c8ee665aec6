@testable import Allocation
import Foundation
import Testing

/// The solver is exact (against an independent reference on 1,000 instances and against brute force),
/// deterministic, certified, and says when a deadline made it greedy.
@Suite struct AllocationSolverTests {
    /// SplitMix64, as Fixtures/make_reference.py has it: the same seed gives the same instance on both sides.
    struct SplitMix64 {
        var state: UInt64
        mutating func next() -> UInt64 {
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
        mutating func below(_ n: Int) -> Int { Int(next() % UInt64(n)) }
    }

    /// The reference script's generator, step for step.
    static func generate(seed: Int) throws -> AllocationProblem {
        var rng = SplitMix64(state: UInt64(seed))
        let large = seed % 50 == 0
        let leads = large ? 100 + rng.below(400) : 1 + rng.below(40)
        let agents = large ? 20 + rng.below(180) : 1 + rng.below(15)
        let slots = (0..<leads).map { _ in Int32(rng.below(4)) }
        let capacity = (0..<agents).map { _ in Int32(rng.below(6)) }
        let density = rng.below(101)
        let top = [3, 1000, 1 << 32][rng.below(3)]
        var pairs: [[(agent: Int32, value: Int64)]] = []
        for _ in 0..<leads {
            var list: [(agent: Int32, value: Int64)] = []
            for j in 0..<agents where rng.below(100) < density {
                list.append((Int32(j), Int64(1 + rng.below(top))))
            }
            pairs.append(list)
        }
        return try AllocationProblem(leadSlots: slots, agentCapacity: capacity, pairs: pairs)
    }

    static let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Fixtures")

    @Test func theOptimumEqualsTheReferenceOnAThousandInstances() throws {
        struct Reference: Decodable { let instances: [[Int64]] }
        let data = try Data(contentsOf: Self.fixtures.appendingPathComponent("reference.json"))
        let reference = try JSONDecoder().decode(Reference.self, from: data)
        #expect(reference.instances.count == 1000)
        var kinds = (ties: 0, zeroCapacity: 0, short: 0, stranded: 0)
        for row in reference.instances {
            let seed = Int(row[0]), optimum = row[1]
            let p = try Self.generate(seed: seed)
            let s = AllocationSolver.solve(p)
            #expect(s.objective == optimum, "seed \(seed): \(s.objective), reference \(optimum)")
            #expect(s.exact)
            try AllocationSolver.verify(p, s)
            #expect(AllocationSolver.greedy(p).objective <= s.objective)
            // What the instances cover.
            if Set(p.pairValue).count < p.pairCount { kinds.ties += 1 }
            if p.agentCapacity.contains(0) { kinds.zeroCapacity += 1 }
            if p.agentCapacity.reduce(0, +) < p.leadSlots.reduce(0, +) { kinds.short += 1 }
            if (0..<p.leadCount).contains(where: { p.pairs(of: $0).isEmpty && p.leadSlots[$0] > 0 }) { kinds.stranded += 1 }
        }
        #expect(kinds.ties > 300 && kinds.zeroCapacity > 300 && kinds.short > 300 && kinds.stranded > 300, "\(kinds)")
    }

    /// Every subset of pairs, on instances small enough to list them all: nothing beats the solver.
    @Test func nothingBeatsItOnInstancesSmallEnoughToEnumerate() throws {
        var rng = SplitMix64(state: 7)
        for _ in 0..<400 {
            let leads = 1 + rng.below(5), agents = 1 + rng.below(4)
            let slots = (0..<leads).map { _ in Int32(rng.below(3)) }
            let capacity = (0..<agents).map { _ in Int32(rng.below(3)) }
            var pairs: [[(agent: Int32, value: Int64)]] = []
            for _ in 0..<leads {
                pairs.append((0..<agents).compactMap { j in rng.below(100) < 60 ? (Int32(j), Int64(1 + rng.below(5))) : nil })
            }
            let p = try AllocationProblem(leadSlots: slots, agentCapacity: capacity, pairs: pairs)
            guard p.pairCount <= 16 else { continue }
            var lead = [Int](repeating: 0, count: p.pairCount)
            for i in 0..<leads { for e in p.pairs(of: i) { lead[e] = i } }
            var best: Int64 = 0
            for mask in 0..<(1 << p.pairCount) {
                var used = [Int32](repeating: 0, count: leads), load = [Int32](repeating: 0, count: agents)
                var value: Int64 = 0, ok = true
                for e in 0..<p.pairCount where mask & (1 << e) != 0 {
                    used[lead[e]] += 1
                    load[Int(p.pairAgent[e])] += 1
                    value += p.pairValue[e]
                    if used[lead[e]] > slots[lead[e]] || load[Int(p.pairAgent[e])] > capacity[Int(p.pairAgent[e])] { ok = false; break }
                }
                if ok { best = max(best, value) }
            }
            let s = AllocationSolver.solve(p)
            #expect(s.objective == best, "\(slots) \(capacity) \(pairs)")
            try AllocationSolver.verify(p, s)
        }
    }

    @Test func aWorsenedAnswerFailsTheCertificate() throws {
        var failures = 0, checked = 0
        for seed in 1...200 {
            let p = try Self.generate(seed: seed)
            let s = AllocationSolver.solve(p)
            guard let e = s.chosen.firstIndex(of: true) else { continue }
            checked += 1
            // Drop a chosen pair (the objective stated honestly): still feasible, no longer optimal.
            var worse = s
            worse.chosen[e] = false
            worse.objective -= p.pairValue[e]
            worse.agentLoad[Int(p.pairAgent[e])] -= 1
            do {
                try AllocationSolver.verify(p, worse)
            } catch {
                failures += 1
            }
            // A stated objective that is not the allocation's.
            var lying = s
            lying.objective += 1
            #expect(throws: AllocationError.self) { try AllocationSolver.verify(p, lying) }
        }
        #expect(checked > 150 && failures == checked, "\(failures) of \(checked) worsened answers refused")
    }

    @Test func theSameProblemGivesTheSameAnswerAndShadowPricesAreMarginalValues() throws {
        for seed in [3, 17, 50, 100, 333] {
            let p = try Self.generate(seed: seed)
            let a = AllocationSolver.solve(p), b = AllocationSolver.solve(p)
            #expect(a == b)
            // One more unit of an agent's capacity adds exactly its shadow price to the optimum.
            for j in 0..<min(p.agentCount, 12) {
                var capacity = p.agentCapacity
                capacity[j] += 1
                let more = try AllocationProblem(leadSlots: p.leadSlots, agentCapacity: capacity,
                                                 pairs: (0..<p.leadCount).map { i in p.pairs(of: i).map { (p.pairAgent[$0], p.pairValue[$0]) } })
                #expect(AllocationSolver.solve(more).objective - a.objective == a.shadowPrice[j], "seed \(seed) agent \(j)")
                if a.agentLoad[j] < p.agentCapacity[j] { #expect(a.shadowPrice[j] == 0) }
            }
        }
    }

    /// The greedy pass (a merge of the leads' sorted pair lists) takes exactly what the definition does: every
    /// pair, best value first, ties by lead then agent, when its lead has a slot and its agent room.
    @Test func theGreedyPassIsTheDefinitionsAndSolveReportsIt() throws {
        for seed in 1...300 {
            let p = try Self.generate(seed: seed)
            var lead = [Int](repeating: 0, count: p.pairCount)
            for i in 0..<p.leadCount { for e in p.pairs(of: i) { lead[e] = i } }
            let order = (0..<p.pairCount).sorted { a, b in
                (-p.pairValue[a], lead[a], p.pairAgent[a]) < (-p.pairValue[b], lead[b], p.pairAgent[b])
            }
            var slots = p.leadSlots, room = p.agentCapacity
            var chosen = [Bool](repeating: false, count: p.pairCount), objective: Int64 = 0
            for e in order where slots[lead[e]] > 0 && room[Int(p.pairAgent[e])] > 0 {
                slots[lead[e]] -= 1
                room[Int(p.pairAgent[e])] -= 1
                chosen[e] = true
                objective += p.pairValue[e]
            }
            let g = AllocationSolver.greedy(p)
            #expect(g.chosen == chosen && g.objective == objective, "seed \(seed)")
            let s = AllocationSolver.solve(p, compareWithGreedy: true)
            #expect(s.greedyObjective == objective && AllocationSolver.solve(p).greedyObjective == nil)
        }
    }

    @Test func aPassedDeadlineFinishesGreedilyAndSaysSo() throws {
        let p = try Self.generate(seed: 100)
        var calls = 0
        let s = AllocationSolver.solve(p, deadline: 1) { calls += 1; return 2 }
        #expect(!s.exact && s.greedyLeads > 0 && calls >= 1)
        // Feasible all the same.
        var load = [Int32](repeating: 0, count: p.agentCount)
        for i in 0..<p.leadCount {
            let taken = p.pairs(of: i).filter { s.chosen[$0] }
            #expect(taken.count <= Int(p.leadSlots[i]))
            for e in taken { load[Int(p.pairAgent[e])] += 1 }
        }
        #expect(load == s.agentLoad && zip(load, p.agentCapacity).allSatisfy { $0 <= $1 })
        #expect(s.objective <= AllocationSolver.solve(p).objective)
    }

    @Test func badProblemsAreRefusedByName() {
        #expect { try AllocationProblem(leadSlots: [1], agentCapacity: [-1], pairs: [[]]) } throws: { "\($0)".contains("agent 0 has capacity -1") }
        #expect { try AllocationProblem(leadSlots: [-2], agentCapacity: [1], pairs: [[]]) } throws: { "\($0)".contains("lead 0 has -2 slots") }
        #expect { try AllocationProblem(leadSlots: [1], agentCapacity: [1], pairs: [[(0, 5), (0, 6)]]) } throws: { "\($0)".contains("agent 0 twice") }
        #expect { try AllocationProblem(leadSlots: [1], agentCapacity: [1], pairs: [[(3, 5)]]) } throws: { "\($0)".contains("there are 1 agents") }
        #expect { try AllocationProblem(leadSlots: [1], agentCapacity: [1], pairs: [[(0, 0)]]) } throws: { "\($0)".contains("value 0 is outside") }
        #expect { try AllocationProblem(leadSlots: [1, 1], agentCapacity: [1], pairs: [[]]) } throws: { "\($0)".contains("1 pair lists for 2 leads") }
        // The compressed form: agents must increase within a lead, offsets must match.
        #expect { try AllocationProblem(leadSlots: [1], agentCapacity: [1, 1], pairStart: [0, 2], pairAgent: [1, 0], pairValue: [3, 4]) }
            throws: { "\($0)".contains("not in increasing order") }
        #expect { try AllocationProblem(leadSlots: [1], agentCapacity: [1], pairStart: [0, 2], pairAgent: [0], pairValue: [3]) }
            throws: { "\($0)".contains("do not match") }
        // A lead with no allowed agent and an agent with no capacity are answers, not errors.
        let p = try? AllocationProblem(leadSlots: [2, 1], agentCapacity: [0, 1], pairs: [[], [(0, 9), (1, 4)]])
        let s = p.map { AllocationSolver.solve($0) }
        #expect(s?.objective == 4 && s?.chosen == [false, true])
    }
}
