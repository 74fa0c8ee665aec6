import ArbiterModels
import ArbiterStore

/// Kind `gbdt`: one tree ensemble (imported from XGBoost or LightGBM) as a plain scorer. The score is the
/// model's prediction: `transform(base_margin + Σ leaves)`.
// Unchecked: `forest`'s pointers are read-only, into tensor views that `version` holds; nothing mutates after init.
public final class GbdtModel: ScoringModel, @unchecked Sendable {
    public let version: LoadedVersion
    public let manifest: ModelManifest
    let forest: TreeEnsemble
    let transform: OutputTransform
    let sigmoidScale: Double
    let baseMargin: Double
    let contextCount: Int

    /// The factory the registry calls.
    public static let factory: ModelFactory = { version, manifest in
        try GbdtModel(version: version, manifest: manifest)
    }

    public init(version: LoadedVersion, manifest: ModelManifest) throws {
        let schema = manifest.schema
        let p = manifest.parameters
        func integer(_ name: String, _ range: ClosedRange<Int>) throws -> Int {
            guard let v = p[name], v == v.rounded(), v >= Double(range.lowerBound), v <= Double(range.upperBound) else {
                throw ModelError.invalidParameters("'\(name)' must be an integer in \(range), got \(p[name].map { "\($0)" } ?? "nothing")")
            }
            return Int(v)
        }
        guard schema.outputs.isEmpty else { throw ModelError.invalidSchema("a gbdt model has no output columns besides its score") }
        let features = schema.context.count + schema.candidate.count
        guard features >= 1 else { throw ModelError.invalidSchema("a gbdt model needs at least one feature") }
        let trees = try integer(GbdtLayout.treesParameter, 0...1_000_000)
        let depth = try integer(GbdtLayout.depthParameter, 0...TreeEnsemble.maxPerfectDepth)
        guard let transform = OutputTransform(rawValue: try integer(GbdtLayout.transformParameter, 0...1)) else {
            throw ModelError.invalidParameters("unknown transform")
        }
        guard let scale = p[GbdtLayout.sigmoidScaleParameter] ?? (transform == .identity ? 1 : nil), scale.isFinite, scale > 0 else {
            throw ModelError.invalidParameters("'\(GbdtLayout.sigmoidScaleParameter)' must be a positive number")
        }
        guard let base = p[GbdtLayout.baseMarginParameter], base.isFinite else {
            throw ModelError.invalidParameters("'\(GbdtLayout.baseMarginParameter)' must be a finite number")
        }
        let forest: TreeEnsemble
        if depth > 0 {
            let inner = (1 << depth) - 1
            let split = try version.tensor(GbdtLayout.split, shape: [trees, inner], as: UInt32.self)
            let threshold = try version.tensor(GbdtLayout.threshold, shape: [trees, inner])
            let leaf = try version.tensor(GbdtLayout.leaf, shape: [trees, inner + 1])
            try Self.checkFeatures(split, features: features)
            forest = TreeEnsemble(perfectDepth: depth, treeCount: trees, featureCount: features, split: split.pointer,
                                  threshold: threshold.pointer, leaf: leaf.pointer)
        } else {
            guard let nodes = version.tensors[GbdtLayout.split]?.shape.first, let leaves = version.tensors[GbdtLayout.leaf]?.shape.first else {
                throw ModelError.invalidParameters("a general-layout gbdt version needs '\(GbdtLayout.split)' and '\(GbdtLayout.leaf)' tensors")
            }
            let root = try version.tensor(GbdtLayout.root, shape: [trees], as: Int32.self)
            let split = try version.tensor(GbdtLayout.split, shape: [nodes], as: UInt32.self)
            let threshold = try version.tensor(GbdtLayout.threshold, shape: [nodes])
            let left = try version.tensor(GbdtLayout.left, shape: [nodes], as: Int32.self)
            let right = try version.tensor(GbdtLayout.right, shape: [nodes], as: Int32.self)
            let leaf = try version.tensor(GbdtLayout.leaf, shape: [leaves])
            try Self.checkFeatures(split, features: features)
            // Every reference in range, and children after their parent: every walk ends.
            func check(_ c: Int32, after parent: Int?) throws {
                if c < 0 {
                    guard Int(~c) < leaves else { throw ModelError.invalidParameters("a tree refers to leaf \(~c) of \(leaves)") }
                } else {
                    guard Int(c) < nodes, parent.map({ Int(c) > $0 }) ?? true else {
                        throw ModelError.invalidParameters("node \(parent.map(String.init) ?? "root") refers to node \(c): out of order or out of range")
                    }
                }
            }
            for t in 0..<trees { try check(root[t], after: nil) }
            for n in 0..<nodes {
                try check(left[n], after: n)
                try check(right[n], after: n)
            }
            forest = TreeEnsemble(generalTreeCount: trees, featureCount: features, root: root.pointer, split: split.pointer,
                                  threshold: threshold.pointer, left: left.pointer, right: right.pointer, leaf: leaf.pointer)
        }
        self.version = version
        self.manifest = manifest
        self.forest = forest
        self.transform = transform
        self.sigmoidScale = scale
        self.baseMargin = base
        self.contextCount = schema.context.count
    }

    static func checkFeatures(_ split: Tensor<UInt32>, features: Int) throws {
        for s in split.buffer where Int(s & TreeEnsemble.featureMask) >= features {
            throw ModelError.invalidParameters("a split uses feature \(s & TreeEnsemble.featureMask); the schema has \(features)")
        }
    }

    public func score(_ batch: ScoreBatch, into out: ScoreOutput) -> RowOrder {
        let f = forest.featureCount
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
                for r in 0..<count { sums[r] = baseMargin }
                forest.accumulate(rows: input, count: count, into: sums)
                for r in 0..<count {
                    out.scores[start + r] = Float(transform.apply(sums[r], scale: sigmoidScale))
                }
                start += count
            }
        }
        return .requestOrder
    }
}
