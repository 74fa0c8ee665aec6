import ArbiterTraining
import ArbiterWire

extension Scenario {
    /// An allocation request of issue 19's small size: 500 leads and 200 agents of the world
    /// `arbiter-train gen-data --kind allocation --seed 1 --leads 500 --agents 200 --cities 1 --coverage 0.3`
    /// generates (30% of pairs allowed), each request a different day's leads; bench/alloc/run.sh trains the
    /// model on that world's history.
    static let alloc500x200 = Scenario(
        name: "alloc-500x200", about: "SCORE of 500 leads and 200 agents (30% of pairs allowed) with an allocation model, solved exactly",
        arbiter: { model in allocRequests(model, leads: 500, agents: 200, cities: 1, count: 1)[0] },
        grpc: nil, resp: nil, arbiterVariants: { model in allocRequests(model, leads: 500, agents: 200, cities: 1, count: 16) })

    /// The large size: 20,000 leads and 2,000 agents, 5% of pairs allowed (`--cities 6 --coverage 0.3`).
    static let alloc20kx2k = Scenario(
        name: "alloc-20kx2k", about: "SCORE of 20,000 leads and 2,000 agents (5% of pairs allowed) with an allocation model, solved exactly",
        arbiter: { model in allocRequests(model, leads: 20_000, agents: 2_000, cities: 6, count: 1)[0] },
        grpc: nil, resp: nil, arbiterVariants: { model in allocRequests(model, leads: 20_000, agents: 2_000, cities: 6, count: 4) })

    static func allocRequests(_ model: String, leads: Int, agents: Int, cities: Int, count: Int) -> [Frame] {
        let world = AllocationWorld(seed: 1, agents: agents, leadsPerDay: leads, cities: cities, coverage: 0.3)
        return (0..<count).map { day in
            let q = world.request(day: 100 + day, leads: leads).request
            return Frame(requestID: 0, message: .score(ScoreRequest(
                model: model, context: q.context, candidateIDs: q.ids, candidateFeatureCount: q.rows.count / max(q.count, 1),
                candidateFeatures: q.rows)))
        }
    }
}
