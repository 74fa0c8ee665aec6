import ArbiterWire
import ScorerMessages

extension Scenario {
    /// 200 candidates per SCORE for a tree model of 300 trees of depth 6 over 40 features (bench/gbdt:
    /// kernel_peers.py trains it, run.sh imports it as model `trees`), about 5% of the values missing.
    static let gbdt200 = trees(200)

    /// The model every tree scenario scores, whatever `--model` says.
    static let treeModel = "trees"

    static func treeMatrix(_ n: Int) -> [Float] {
        var m: [Float] = []
        m.reserveCapacity(n * 40)
        for i in 0..<n {
            for j in 0..<40 {
                let v: Float = (i * 7 + j * 3) % 20 == 0 ? .nan : Float((i * 37 + j * 11) % 200) / 50 - 2
                m.append(v)
            }
        }
        return m
    }

    static func trees(_ n: Int) -> Scenario {
        let matrix = treeMatrix(n)
        let ids = (0..<n).map(UInt64.init)
        return Scenario(
            name: "gbdt-\(n)", about: "SCORE of \(n) candidates with a 300-tree gbdt model (40 features, missing values)",
            arbiter: { _ in
                Frame(requestID: 0, message: .score(ScoreRequest(model: treeModel, context: [], candidateIDs: ids,
                                                                 candidateFeatureCount: 40, candidateFeatures: matrix)))
            },
            grpc: { _ in
                var m = Arbiter_Bench_V1_ScoreRequest()
                m.model = treeModel
                m.candidateIds = ids
                m.candidateFeatureCount = 40
                m.candidateFeatures = matrix
                return ("/arbiter.bench.v1.Scorer/Score", m.bytes)
            },
            resp: nil)
    }
}
