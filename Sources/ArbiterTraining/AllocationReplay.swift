import Allocation
import ArbiterModels
import Foundation

/// An allocation version replayed on fresh days of the generated world it was trained for, where every pair's
/// true hire probability is known: the expected hires of the exact allocation against the greedy pass on the
/// same scores and against grading-only allocation (best grade first, to the least-loaded allowed agent, no
/// pair scores), and the calibration of the model's probabilities among the pairs the exact allocation chose
/// (the optimiser picks the pairs whose scores err high: does it pay for that?).
public enum AllocationReplay {
    public struct Report: Sendable {
        public var days = 0, leads = 0, agents = 0, pairs = 0
        /// Expected hires (true probabilities) summed over the days.
        public var exact = 0.0, greedy = 0.0, gradingOnly = 0.0
        /// What the model expected of the exact and greedy allocations (its own probabilities).
        public var exactPredicted = 0.0, greedyPredicted = 0.0
        /// Leads placed by each policy.
        public var exactPlaced = 0, greedyPlaced = 0, gradingPlaced = 0
        /// The exact allocation's pairs by decile of predicted probability: mean predicted, mean true, pairs.
        public var deciles: [(predicted: Double, actual: Double, pairs: Int)] = []

        public var text: String {
            var s = "\(days) held-out days of \(leads / max(days, 1)) leads and \(agents) agents (\(pairs / max(days, 1)) allowed pairs a day):\n"
            s += "  policy          expected hires   per day   placed   vs exact\n"
            for (name, hires, placed) in [("exact", exact, exactPlaced), ("greedy", greedy, greedyPlaced), ("grading only", gradingOnly, gradingPlaced)] {
                s += String(format: "  %@%14.1f%10.1f%9d%10.1f%%\n", name.padding(toLength: 14, withPad: " ", startingAt: 0) as NSString,
                            hires, hires / Double(max(days, 1)), placed, 100 * (hires / max(exact, 1e-9) - 1))
            }
            s += String(format: "  exact over greedy %+.2f%%, over grading only %+.1f%%; the model expected %.1f (exact) and %.1f (greedy)\n",
                        100 * (exact / max(greedy, 1e-9) - 1), 100 * (exact / max(gradingOnly, 1e-9) - 1), exactPredicted, greedyPredicted)
            s += "  calibration among the exact allocation's pairs (decile of predicted p: mean predicted, mean true, pairs):\n"
            for (i, d) in deciles.enumerated() {
                s += String(format: "    %2d  %.4f  %.4f  %d\n", i + 1, d.predicted, d.actual, d.pairs)
            }
            return s
        }
    }

    public static func run(model: AllocationModel, world: AllocationWorld, days: Int, leadsPerDay: Int) throws -> Report {
        var report = Report()
        report.agents = world.agents.count
        var calibration: [(predicted: Double, actual: Double)] = []
        for d in 0..<days {
            let (q, leads) = world.request(day: 50_000 + d, leads: leadsPerDay)
            let derived = try q.context.withUnsafeBufferPointer { c in
                try q.rows.withUnsafeBufferPointer { r in
                    try q.ids.withUnsafeBufferPointer { ids in
                        try model.derive(ScoreBatch(context: c, candidates: r, candidateCount: q.count, ids: ids), maxPairs: 1 << 30)
                    }
                }
            }
            let p = derived.problem
            func truth(_ lead: Int, _ pair: Int) -> Double {
                world.probability(leads[Int(derived.leadRows[lead])], world.agents[Int(derived.agentRows[Int(p.pairAgent[pair])]) - leads.count])
            }
            let exact = AllocationSolver.solve(p)
            let greedy = AllocationSolver.greedy(p)
            // Grading only: best grade first, each lead to the least-loaded allowed agent with room.
            var load = [Int32](repeating: 0, count: p.agentCount)
            var grading = [Bool](repeating: false, count: p.pairCount)
            let byGrade = (0..<p.leadCount).sorted { leads[$0].grade != leads[$1].grade ? leads[$0].grade > leads[$1].grade : $0 < $1 }
            for i in byGrade {
                for _ in 0..<Int(p.leadSlots[i]) {
                    var best: Int? = nil
                    for e in p.pairs(of: i) where !grading[e] && load[Int(p.pairAgent[e])] < p.agentCapacity[Int(p.pairAgent[e])] {
                        if best.map({ load[Int(p.pairAgent[e])] < load[Int(p.pairAgent[$0])] }) ?? true { best = e }
                    }
                    guard let e = best else { break }
                    grading[e] = true
                    load[Int(p.pairAgent[e])] += 1
                }
            }
            for i in 0..<p.leadCount {
                var placed = (false, false, false)
                for e in p.pairs(of: i) {
                    let actual = truth(i, e), predicted = Double(derived.pairProbability[e])
                    if exact.chosen[e] {
                        report.exact += actual
                        report.exactPredicted += predicted
                        calibration.append((predicted, actual))
                        placed.0 = true
                    }
                    if greedy.chosen[e] {
                        report.greedy += actual
                        report.greedyPredicted += predicted
                        placed.1 = true
                    }
                    if grading[e] {
                        report.gradingOnly += actual
                        placed.2 = true
                    }
                }
                if placed.0 { report.exactPlaced += 1 }
                if placed.1 { report.greedyPlaced += 1 }
                if placed.2 { report.gradingPlaced += 1 }
            }
            report.days += 1
            report.leads += p.leadCount
            report.pairs += p.pairCount
        }
        calibration.sort { $0.predicted < $1.predicted }
        let n = calibration.count
        report.deciles = (0..<10).compactMap { k in
            let slice = calibration[(k * n / 10)..<((k + 1) * n / 10)]
            guard !slice.isEmpty else { return nil }
            return (slice.reduce(0) { $0 + $1.predicted } / Double(slice.count), slice.reduce(0) { $0 + $1.actual } / Double(slice.count), slice.count)
        }
        return report
    }
}
