import ArbiterWire
import ScorerMessages

extension Scenario {
    /// A feed request: 200 candidate items for one user, the best 20 after the model's diversity rerank. The
    /// model is bench/rank/run.sh's (`rank-store`: 1M items, 100k users, dimension 64, three tree heads): user
    /// features u_age, u_tenure, u_segment (8 codes), u_activity; item features category (50), seller (1000),
    /// price, quality, age_days, rating, distance_km, discount. 256 different requests (users and items
    /// spread over the tables) are sent in turn, so that the tables' rows are not all hot in the caches.
    static let rank200 = Scenario(
        name: "rank-200", about: "SCORE of 200 items for a user, top 20, with a ranking model (1M items, three tree heads)",
        arbiter: { model in rankRequests(model, count: 1)[0] },
        grpc: { model in ("/arbiter.bench.v1.Scorer/Score", grpcMessage(rankRequests(model, count: 1)[0])) },
        resp: nil, arbiterVariants: { model in rankRequests(model, count: 256) },
        grpcVariants: { model in ("/arbiter.bench.v1.Scorer/Score", rankRequests(model, count: 256).map(grpcMessage)) })

    /// The same request in scorer.proto's form.
    static func grpcMessage(_ frame: Frame) -> [UInt8] {
        guard case .score(let r) = frame.message else { return [] }
        var m = Arbiter_Bench_V1_ScoreRequest()
        m.model = r.model
        m.context = r.context
        m.candidateIds = r.candidateIDs
        m.candidateFeatureCount = UInt32(r.candidateFeatureCount)
        m.candidateFeatures = r.candidateFeatures
        if let subject = r.subject { m.subjectID = subject }
        m.topK = r.topK
        m.routingKey = r.routingKey
        return m.bytes
    }

    static func rankRequests(_ model: String, count: Int) -> [Frame] {
        var state: UInt64 = 0x5EED
        func next() -> UInt64 {
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
        func uniform(_ n: Int) -> Float { Float(next() % UInt64(n)) }
        return (0..<count).map { _ in
            // Ids of one varint length (3 bytes: 16,384 and up), so that the gRPC messages are of one size too.
            let user = 16_384 + next() % (100_000 - 16_384)
            let ids = (0..<200).map { _ in 16_384 + next() % (1_000_000 - 16_384) }
            var features: [Float] = []
            features.reserveCapacity(200 * 8)
            for _ in 0..<200 {
                features += [uniform(50), uniform(1000), uniform(100), uniform(100), uniform(100), uniform(100), uniform(100), uniform(100)]
            }
            return Frame(requestID: 0, message: .score(ScoreRequest(
                model: model, topK: 20, subject: user, context: [uniform(100), uniform(100), uniform(8), uniform(100)],
                candidateIDs: ids, candidateFeatureCount: 8, candidateFeatures: features)))
        }
    }
}
