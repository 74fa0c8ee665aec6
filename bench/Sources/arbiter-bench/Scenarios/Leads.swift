import ArbiterWire
import ScorerMessages

extension Scenario {
    /// One lead per SCORE: the lead-grading model's per-request cost.
    static let lead1 = leads(1)
    /// A batch of 100 leads per SCORE.
    static let lead100 = leads(100)

    /// `n` leads in the schema of `arbiter-train gen-data --kind lead-grading`: context (job_category,
    /// job_salary), candidate (channel, city, distance_km, salary_gap, activity, experience_years).
    static func leadMatrix(_ n: Int) -> [Float] {
        var m: [Float] = []
        for i in 0..<n {
            let gap = Float(i % 7) * 0.05 - 0.1
            m += [Float(i % 5), Float(i % 12), Float(2 + i % 40), gap, Float(i % 30), Float(i % 15)]
        }
        return m
    }

    static func leads(_ n: Int) -> Scenario {
        let matrix = leadMatrix(n)
        let context: [Float] = [3, 4200]
        let ids = (0..<n).map(UInt64.init)
        return Scenario(
            name: "lead-\(n)", about: "SCORE of \(n) lead\(n == 1 ? "" : "s") with the lead-grading model",
            arbiter: { model in
                Frame(requestID: 0, message: .score(ScoreRequest(model: model, context: context, candidateIDs: ids,
                                                                 candidateFeatureCount: 6, candidateFeatures: matrix)))
            },
            grpc: { model in
                var m = Arbiter_Bench_V1_ScoreRequest()
                m.model = model
                m.context = context
                m.candidateIds = ids
                m.candidateFeatureCount = 6
                m.candidateFeatures = matrix
                return ("/arbiter.bench.v1.Scorer/Score", m.bytes)
            },
            resp: nil)
    }
}
