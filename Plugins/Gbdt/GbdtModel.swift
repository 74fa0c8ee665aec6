import ArbiterModels
import ArbiterStore

/// Kind `gbdt`: one tree ensemble (imported from XGBoost or LightGBM) as a plain scorer. The score is the
/// model's prediction: `transform(base_margin + Σ leaves)`.
// Unchecked: `model`'s pointers are read-only, into tensor views that `version` holds; nothing mutates after init.
public final class GbdtModel: ScoringModel, @unchecked Sendable {
    public let version: LoadedVersion
    public let manifest: ModelManifest
    let model: LoadedForest
    let contextCount: Int

    /// The factory the registry calls.
    public static let factory: ModelFactory = { version, manifest in
        try GbdtModel(version: version, manifest: manifest)
    }

    public init(version: LoadedVersion, manifest: ModelManifest) throws {
        let schema = manifest.schema
        guard schema.outputs.isEmpty else { throw ModelError.invalidSchema("a gbdt model has no output columns besides its score") }
        model = try LoadedForest(version: version, parameters: manifest.parameters, prefix: "",
                                 features: schema.context.count + schema.candidate.count)
        self.version = version
        self.manifest = manifest
        self.contextCount = schema.context.count
    }

    public func score(_ batch: ScoreBatch, into out: ScoreOutput) -> RowOrder {
        let f = model.forest.featureCount
        let c = contextCount
        let m = f - c
        let n = batch.candidateCount
        // Rows are the context followed by each candidate's features, built a block at a time in this thread's
        // scratch (no copy at all when there is no context).
        let block = max(1, min(64, 65_536 / (4 * f)))
        ThreadScratch.with(bytes: block * (4 * f + 8)) { raw in
            let sums = raw.bindMemory(to: Double.self, capacity: block)
            let rows = (raw + 8 * block).bindMemory(to: Float.self, capacity: block * f)
            var start = 0
            while start < n {
                let count = min(block, n - start)
                let input: UnsafePointer<Float>
                if c == 0 {
                    input = batch.candidates.baseAddress! + start * m
                } else {
                    for r in 0..<count {
                        let row = rows + r * f
                        for j in 0..<c { row[j] = batch.context[j] }
                        if m > 0 { (row + c).update(from: batch.candidates.baseAddress! + (start + r) * m, count: m) }
                    }
                    input = UnsafePointer(rows)
                }
                model.predict(rows: input, count: count, sums: sums, into: out.scores + start)
                start += count
            }
        }
        return .requestOrder
    }
}
