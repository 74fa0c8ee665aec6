import ArbiterModels
import ArbiterStore

/// Kind `lead-grading`: three chained factorization machines (contact → interview → hire), each stage
/// conditional on the last, and a grade A–D from the version's thresholds on p_hire.
// Unchecked: `scorer`'s pointers are read-only, into tensor views that `version` holds; nothing mutates after init.
public final class LeadGradingModel: ScoringModel, @unchecked Sendable {
    public let version: LoadedVersion
    public let manifest: ModelManifest
    let scorer: LeadGradingScorer

    /// The factory the registry calls.
    public static let factory: ModelFactory = { version, manifest in
        try LeadGradingModel(version: version, manifest: manifest)
    }

    public init(version: LoadedVersion, manifest: ModelManifest) throws {
        let schema = manifest.schema
        guard schema.outputs == LeadGradingLayout.outputs else {
            throw ModelError.invalidSchema("lead-grading outputs must be \(LeadGradingLayout.outputs.map(\.name))")
        }
        guard let kd = manifest.parameters[LeadGradingLayout.factorsParameter], kd >= 1, kd <= 256, kd == kd.rounded() else {
            throw ModelError.invalidParameters("'\(LeadGradingLayout.factorsParameter)' must be an integer in 1...256")
        }
        let k = Int(kd)
        let enc = FieldEncoding(fields: schema.context + schema.candidate)
        let d = enc.dimension
        var ms: [FactorizationMachine] = []
        for s in LeadGradingLayout.stages {
            let b = try version.tensor(LeadGradingLayout.bias(s), shape: [1])
            let w = try version.tensor(LeadGradingLayout.linear(s), shape: [d])
            let v = try version.tensor(LeadGradingLayout.factors(s), shape: [d, k])
            ms.append(FactorizationMachine(bias: b[0], linear: w.pointer, factors: v.pointer, factorCount: k))
        }
        let t = try version.tensor(LeadGradingLayout.thresholds, shape: [3])
        guard t[0] >= t[1], t[1] >= t[2] else {
            throw ModelError.invalidParameters("thresholds must be descending, got \(Array(t.buffer))")
        }
        self.version = version
        self.manifest = manifest
        self.scorer = LeadGradingScorer(
            encoding: enc, contextFields: schema.context.count, k: k,
            norm: try version.tensor(LeadGradingLayout.norm, shape: [enc.fields.count, 2]).pointer,
            thresholds: t.pointer, machines: ms)
    }

    public func score(_ batch: ScoreBatch, into out: ScoreOutput) -> RowOrder {
        scorer.score(batch, into: out)
        return .requestOrder
    }
}

/// The lead-grading computation over parameter views, shared by the served model (views into the store)
/// and the trainer (views into its arrays, to record golden outputs with the very code that serves).
public struct LeadGradingScorer {
    public let encoding: FieldEncoding
    public let contextFields: Int
    public let k: Int
    public let norm: UnsafePointer<Float>
    public let thresholds: UnsafePointer<Float>
    public let machines: [FactorizationMachine]

    public init(encoding: FieldEncoding, contextFields: Int, k: Int, norm: UnsafePointer<Float>,
                thresholds: UnsafePointer<Float>, machines: [FactorizationMachine]) {
        self.encoding = encoding
        self.contextFields = contextFields
        self.k = k
        self.norm = norm
        self.thresholds = thresholds
        self.machines = machines
    }

    public func score(_ batch: ScoreBatch, into out: ScoreOutput) {
        let k = self.k
        let stages = machines.count
        let n = batch.candidateCount
        let m = encoding.fields.count - contextFields
        // Stack scratch: per stage, the context's sums and a working copy.
        withUnsafeTemporaryAllocation(of: Float.self, capacity: 2 * stages * k) { scratch in
            let base = scratch.baseAddress!
            withUnsafeTemporaryAllocation(of: FactorizationMachine.Accumulator.self, capacity: 2 * stages) { accs in
                let a = accs.baseAddress!
                for s in 0..<stages {
                    (a + s).initialize(to: .init(sums: base + s * k, factorCount: k))
                    (a + stages + s).initialize(to: .init(sums: base + (stages + s) * k, factorCount: k))
                    for j in 0..<contextFields {
                        let (i, x) = encoding.encode(field: j, batch.context[j], mean: norm[2 * j], invStd: norm[2 * j + 1])
                        machines[s].add(i, x, to: &a[s])
                    }
                }
                let pContact = out.floatColumn(0), pInterview = out.floatColumn(1), pHire = out.floatColumn(2)
                let grade = out.codeColumn(0)
                for r in 0..<n {
                    let row = batch.candidates.baseAddress! + r * m
                    var p: Float = 1
                    for s in 0..<stages {
                        machines[s].copy(a[s], into: &a[stages + s])
                        for c in 0..<m {
                            let j = contextFields + c
                            let (i, x) = encoding.encode(field: j, row[c], mean: norm[2 * j], invStd: norm[2 * j + 1])
                            machines[s].add(i, x, to: &a[stages + s])
                        }
                        p *= Kernels.sigmoid(machines[s].output(a[stages + s]))
                        switch s {
                        case 0: pContact[r] = p
                        case 1: pInterview[r] = p
                        default: pHire[r] = p
                        }
                    }
                    out.scores[r] = p
                    grade[r] = LeadGradingLayout.grade(p, thresholds: thresholds)
                }
            }
        }
    }
}
