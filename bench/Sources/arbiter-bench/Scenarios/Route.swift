import ArbiterWire
import ScorerMessages

extension Scenario {
    /// A routing request: one applicant and the 30 lenders of bench/route/run.sh's model (`route-store`: the
    /// lenders and rules of `gen-data --kind routing --seed 1`, two heads of 100 trees of depth 6), top 5.
    /// Applicant features channel (24 codes), returning (2), region (8), credit_score, income,
    /// requested_amount, employment_years, debt_ratio; lender features capacity (0 for one lender in ten) and
    /// load. 256 different requests (applicants, lender states, routing keys) are sent in turn.
    static let route30 = Scenario(
        name: "route-30", about: "SCORE of 30 lenders for an applicant, top 5, with a routing model (two heads of 100 trees)",
        arbiter: { model in routeRequests(model, count: 1)[0] },
        grpc: { model in ("/arbiter.bench.v1.Scorer/Score", grpcMessage(routeRequests(model, count: 1)[0])) },
        resp: nil, arbiterVariants: { model in routeRequests(model, count: 256) },
        grpcVariants: { model in ("/arbiter.bench.v1.Scorer/Score", routeRequests(model, count: 256).map(grpcMessage)) })

    static func routeRequests(_ model: String, count: Int) -> [Frame] {
        var state: UInt64 = 0x20_07E
        func next() -> UInt64 {
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
        func uniform() -> Float { Float(next() >> 40) / Float(1 << 24) }
        // The lenders' ids (gen-data's: 1000 + 17 i), each a two-byte varint.
        let ids = (0..<30).map { UInt64(1000 + 17 * $0) }
        return (0..<count).map { _ in
            let applicant: [Float] = [Float(next() % 24), next() % 10 < 3 ? 1 : 0, Float(next() % 8), (300 + 550 * uniform()).rounded(),
                                      (800 + 9000 * uniform()).rounded(), (500 + 20_000 * uniform()).rounded(), (30 * uniform()).rounded(),
                                      (uniform() * 95).rounded() / 100]
            var lenders: [Float] = []
            for _ in ids { lenders += [next() % 10 == 0 ? 0 : Float(1 + next() % 400), uniform()] }
            // Keys of one varint length (nine bytes), so that the gRPC messages are of one size too.
            let key = (UInt64(1) << 62) | (next() >> 3)
            return Frame(requestID: 0, message: .score(ScoreRequest(
                model: model, routingKey: key, topK: 5, context: applicant, candidateIDs: ids, candidateFeatureCount: 2,
                candidateFeatures: lenders)))
        }
    }
}
