import ArbiterModels
import Foundation
import Routing

/// What one routing policy earns on replayed applicants, per applicant, under the world's true approval
/// probabilities and amounts: each applicant goes down the policy's order of eligible lenders until one
/// approves, at most `tries` lenders (a ping tree).
public struct PolicyValue: Sendable, Equatable {
    public var fundedAmount: Double
    public var revenue: Double
    public var approvalRate: Double
}

/// The offline replay of a `routing` version on fresh applicants of a generated world (the data's seed):
/// the version's own order (its value from its heads), the baseline priority list, the rules-only router
/// (eligible lenders by average amount × take rate, no model) and the oracle (true expected revenue), all
/// among the lenders the version finds eligible. Applicants come from a stream the training data never used.
public struct RoutingReplay: Sendable {
    public static let policies = ["model", "baseline", "rules", "oracle"]

    public var applicants: Int
    public var tries: Int
    public var values: [String: PolicyValue]

    public var metrics: [String: Double] {
        var m: [String: Double] = ["replay.applicants": Double(applicants), "replay.tries": Double(tries)]
        for (name, v) in values {
            m["replay.\(name).funded"] = v.fundedAmount
            m["replay.\(name).revenue"] = v.revenue
            m["replay.\(name).approval"] = v.approvalRate
        }
        return m
    }

    public static func run(model: RoutingModel, seed: UInt64, applicants: Int, tries: Int = 3) throws -> RoutingReplay {
        let ids = Array(model.lenderIDs)
        let world = RoutingWorld(seed: seed, lenders: ids.count)
        // The same ids come from every seed; the take rates and the priority list tell the worlds apart.
        guard world.lenders.map(\.id) == ids,
              world.lenders.allSatisfy({ l in model.lender(l.id).map { $0.takeRate == l.takeRate && $0.priority == l.priority } ?? false }) else {
            throw DataError("this version's lender table (\(ids.count) lenders) is not the one gen-data makes with seed \(seed): replay the seed the data was generated with")
        }
        let requests = world.requests(count: applicants, firstID: 10_000_000, stream: seed ^ 0x7E57_5EED)
        var totals = Dictionary(uniqueKeysWithValues: policies.map { ($0, PolicyValue(fundedAmount: 0, revenue: 0, approvalRate: 0)) })
        let n = ids.count
        for q in requests {
            let out = try model.score(context: q.features, candidates: q.lenderFeatures, candidateCount: n, ids: q.lenders)
            let eligible = (0..<n).filter { out.codeColumns[$0] == 0 }
            let truth = eligible.map { world.truth(lender: $0, applicant: q.features, load: q.lenderFeatures[2 * $0 + 1]) }
            let take = eligible.map { Double(world.lenders[$0].takeRate) }
            let positions = Array(eligible.indices)
            func by(_ key: (Int) -> Double) -> [Int] { positions.sorted { key($0) > key($1) || (key($0) == key($1) && $0 < $1) } }
            let orders: [String: [Int]] = [
                "model": by { Double(out.scores[eligible[$0]]) },
                "baseline": by { -Double(model.lender(ids[eligible[$0]])!.priority) },
                "rules": by { let l = model.lender(ids[eligible[$0]])!; return Double(l.amount * l.takeRate) },
                "oracle": by { truth[$0].pApprove * truth[$0].amount * take[$0] },
            ]
            for (name, order) in orders {
                var remaining = 1.0
                var v = totals[name]!
                for k in order.prefix(tries) {
                    let p = truth[k].pApprove
                    v.fundedAmount += remaining * p * truth[k].amount
                    v.revenue += remaining * p * truth[k].amount * take[k]
                    v.approvalRate += remaining * p
                    remaining *= 1 - p
                }
                totals[name] = v
            }
        }
        let count = Double(max(requests.count, 1))
        return RoutingReplay(applicants: requests.count, tries: tries, values: totals.mapValues {
            PolicyValue(fundedAmount: $0.fundedAmount / count, revenue: $0.revenue / count, approvalRate: $0.approvalRate / count)
        })
    }

    /// The replay as a table.
    public var report: String {
        var lines = [String(format: "replay: %d fresh applicants, up to %d lenders each (until one approves); per applicant:", applicants, tries),
                     "  policy     funded amount   revenue   approved"]
        let names = ["model": "model", "baseline": "baseline", "rules": "rules only", "oracle": "oracle"]
        for name in Self.policies {
            let v = values[name]!
            let label = names[name]!.padding(toLength: 10, withPad: " ", startingAt: 0)
            lines.append("  \(label)" + String(format: " %13.1f %9.2f %9.1f%%", v.fundedAmount, v.revenue, 100 * v.approvalRate))
        }
        return lines.joined(separator: "\n")
    }
}
