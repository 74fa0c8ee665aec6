import ArbiterStore

/// A tree ensemble with its output transform, loaded from a version's tensors and parameters under a name
/// prefix: the `gbdt` kind's whole model (prefix ""), or one head of a model that holds several (`head0.`,
/// ...). The names are ``ForestLayout``'s; the importer writes them.
public struct LoadedForest {
    public let forest: TreeEnsemble
    public let transform: OutputTransform
    public let sigmoidScale: Double
    public let baseMargin: Double

    /// Loads and checks the forest stored under `prefix` for rows of `features` floats: parameter ranges,
    /// tensor shapes, every split's feature in range, and for the general layout every child reference in
    /// range and after its parent (so that every walk ends). Errors name the prefix.
    public init(version: LoadedVersion, parameters p: [String: Double], prefix: String, features: Int) throws(ModelError) {
        let at = prefix.isEmpty ? "" : " (\(prefix.dropLast()))"
        func integer(_ name: String, _ range: ClosedRange<Int>) throws(ModelError) -> Int {
            guard let v = p[prefix + name], v == v.rounded(), v >= Double(range.lowerBound), v <= Double(range.upperBound) else {
                throw ModelError.invalidParameters("'\(prefix + name)' must be an integer in \(range), got \(p[prefix + name].map { "\($0)" } ?? "nothing")")
            }
            return Int(v)
        }
        func tensor<T: TensorElement>(_ name: String, _ shape: [Int], as: T.Type) throws(ModelError) -> Tensor<T> {
            do {
                return try version.tensor(prefix + name, shape: shape, as: T.self)
            } catch {
                throw ModelError.invalidParameters("\(error)")
            }
        }
        guard features >= 1 else { throw ModelError.invalidSchema("a tree model\(at) needs at least one feature") }
        let trees = try integer(ForestLayout.treesParameter, 0...1_000_000)
        let depth = try integer(ForestLayout.depthParameter, 0...TreeEnsemble.maxPerfectDepth)
        guard let transform = OutputTransform(rawValue: try integer(ForestLayout.transformParameter, 0...1)) else {
            throw ModelError.invalidParameters("unknown transform\(at)")
        }
        guard let scale = p[prefix + ForestLayout.sigmoidScaleParameter] ?? (transform == .identity ? 1 : nil), scale.isFinite, scale > 0 else {
            throw ModelError.invalidParameters("'\(prefix + ForestLayout.sigmoidScaleParameter)' must be a positive number")
        }
        guard let base = p[prefix + ForestLayout.baseMarginParameter], base.isFinite else {
            throw ModelError.invalidParameters("'\(prefix + ForestLayout.baseMarginParameter)' must be a finite number")
        }
        func checkFeatures(_ split: Tensor<UInt32>) throws(ModelError) {
            for s in split.buffer where Int(s & TreeEnsemble.featureMask) >= features {
                throw ModelError.invalidParameters("a split\(at) uses feature \(s & TreeEnsemble.featureMask); the model has \(features)")
            }
        }
        if depth > 0 {
            let inner = (1 << depth) - 1
            let split = try tensor(ForestLayout.split, [trees, inner], as: UInt32.self)
            let threshold = try tensor(ForestLayout.threshold, [trees, inner], as: Float.self)
            let leaf = try tensor(ForestLayout.leaf, [trees, inner + 1], as: Float.self)
            try checkFeatures(split)
            forest = TreeEnsemble(perfectDepth: depth, treeCount: trees, featureCount: features, split: split.pointer,
                                  threshold: threshold.pointer, leaf: leaf.pointer)
        } else {
            guard let nodes = version.tensors[prefix + ForestLayout.split]?.shape.first,
                  let leaves = version.tensors[prefix + ForestLayout.leaf]?.shape.first else {
                throw ModelError.invalidParameters("a general-layout forest\(at) needs '\(prefix + ForestLayout.split)' and '\(prefix + ForestLayout.leaf)' tensors")
            }
            let root = try tensor(ForestLayout.root, [trees], as: Int32.self)
            let split = try tensor(ForestLayout.split, [nodes], as: UInt32.self)
            let threshold = try tensor(ForestLayout.threshold, [nodes], as: Float.self)
            let left = try tensor(ForestLayout.left, [nodes], as: Int32.self)
            let right = try tensor(ForestLayout.right, [nodes], as: Int32.self)
            let leaf = try tensor(ForestLayout.leaf, [leaves], as: Float.self)
            try checkFeatures(split)
            func check(_ c: Int32, after parent: Int?) throws(ModelError) {
                if c < 0 {
                    guard Int(~c) < leaves else { throw ModelError.invalidParameters("a tree\(at) refers to leaf \(~c) of \(leaves)") }
                } else {
                    guard Int(c) < nodes, parent.map({ Int(c) > $0 }) ?? true else {
                        throw ModelError.invalidParameters("node \(parent.map(String.init) ?? "root")\(at) refers to node \(c): out of order or out of range")
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
        self.transform = transform
        self.sigmoidScale = scale
        self.baseMargin = base
    }

    /// Predicts `count` rows (row-major, `forest.featureCount` floats each) into `out`, using `sums` (room for
    /// `count` doubles) as working memory. Allocates nothing.
    @inlinable
    public func predict(rows: UnsafePointer<Float>, count: Int, sums: UnsafeMutablePointer<Double>, into out: UnsafeMutablePointer<Float>) {
        for r in 0..<count { sums[r] = baseMargin }
        forest.accumulate(rows: rows, count: count, into: sums)
        for r in 0..<count { out[r] = Float(transform.apply(sums[r], scale: sigmoidScale)) }
    }
}

/// The names of a stored forest's tensors and parameters (each under the model's prefix for it).
///
/// Parameters: `trees`, `depth` (the perfect layout's depth; 0 = the general layout), `transform`
/// (``OutputTransform``), `sigmoid_scale` (for the logistic transform), `base_margin` (added to every row's
/// sum of leaves). Tensors as ``TreeEnsemble`` describes them: `split` u32, `threshold` f32, `leaf` f32, and
/// for the general layout `root`, `left`, `right` i32.
public enum ForestLayout {
    public static let treesParameter = "trees"
    public static let depthParameter = "depth"
    public static let transformParameter = "transform"
    public static let sigmoidScaleParameter = "sigmoid_scale"
    public static let baseMarginParameter = "base_margin"

    public static let split = "split"
    public static let threshold = "threshold"
    public static let leaf = "leaf"
    public static let root = "root"
    public static let left = "left"
    public static let right = "right"
}
