import ArbiterModels
import ArbiterStore
import Foundation
import Gbdt

/// A tree ensemble read from a library's model file, before it is laid out for serving: every split in
/// Arbiter's form (left when `x < threshold`, a missing value to the split's default side), leaves as
/// float32, the margin's base and the output transform.
public struct ImportedForest: Sendable, Equatable {
    public enum Node: Sendable, Equatable {
        case split(feature: Int, threshold: Float, missingRight: Bool, left: Int, right: Int)
        case leaf(Float)
    }

    /// One tree; node 0 is its root, children are indices into `nodes`.
    public struct Tree: Sendable, Equatable {
        public var nodes: [Node]
        public init(nodes: [Node]) { self.nodes = nodes }
    }

    public var trees: [Tree]
    /// The model file's feature names (possibly generated: `f0`, `f1`, …).
    public var featureNames: [String]
    public var baseMargin: Double
    public var transform: OutputTransform
    public var sigmoidScale: Double
    /// Where the model came from, for the manifest ("xgboost 3.2.0 binary:logistic").
    public var source: String

    public var featureCount: Int { featureNames.count }

    public init(trees: [Tree], featureNames: [String], baseMargin: Double, transform: OutputTransform, sigmoidScale: Double,
                source: String) {
        self.trees = trees
        self.featureNames = featureNames
        self.baseMargin = baseMargin
        self.transform = transform
        self.sigmoidScale = sigmoidScale
        self.source = source
    }

    /// The deepest leaf's depth (a single-leaf tree has depth 0).
    public var maxDepth: Int {
        trees.map { t in
            func depth(_ i: Int) -> Int {
                if case .split(_, _, _, let l, let r) = t.nodes[i] { return 1 + max(depth(l), depth(r)) }
                return 0
            }
            return t.nodes.isEmpty ? 0 : depth(0)
        }.max() ?? 0
    }

    /// The prediction for one row, walking every tree one node at a time in Double: the reference the
    /// served kernel is checked against.
    public func predict(_ row: [Float]) -> Double {
        var sum = baseMargin
        for t in trees {
            var i = 0
            while case .split(let f, let threshold, let missingRight, let l, let r) = t.nodes[i] {
                let x = row[f]
                i = x.isNaN ? (missingRight ? r : l) : (x < threshold ? l : r)
            }
            if case .leaf(let v) = t.nodes[i] { sum += Double(v) }
        }
        return transform.apply(sum, scale: sigmoidScale)
    }

    /// The tensors and manifest parameters of the `gbdt` layout: perfect trees when the forest is at most
    /// ``TreeEnsemble/maxPerfectDepth`` deep, general nodes otherwise.
    public func layout() -> (tensors: [TensorData], parameters: [String: Double]) {
        var parameters: [String: Double] = [
            GbdtLayout.treesParameter: Double(trees.count),
            GbdtLayout.transformParameter: Double(transform.rawValue),
            GbdtLayout.sigmoidScaleParameter: sigmoidScale,
            GbdtLayout.baseMarginParameter: baseMargin,
        ]
        let depth = max(1, maxDepth)
        if depth <= TreeEnsemble.maxPerfectDepth {
            let inner = (1 << depth) - 1
            var split = [UInt32](repeating: 0, count: trees.count * inner)
            // Padding splits may go either way (both subtrees hold the same leaf); any finite threshold will do.
            var threshold = [Float](repeating: 0, count: trees.count * inner)
            var leaf = [Float](repeating: 0, count: trees.count * (inner + 1))
            for (t, tree) in trees.enumerated() {
                // Fill position `pos` (level order) from node `i`; a leaf above the last level fills its whole
                // subtree with itself, under splits that may go either way.
                func fill(_ i: Int, _ pos: Int, _ level: Int) {
                    if level == depth {
                        var n = i
                        while case .split(_, _, _, let l, _) = tree.nodes[n] { n = l }  // unreachable for depth = maxDepth
                        if case .leaf(let v) = tree.nodes[n] { leaf[t * (inner + 1) + pos - inner] = v }
                        return
                    }
                    switch tree.nodes[i] {
                    case .split(let f, let thr, let missingRight, let l, let r):
                        split[t * inner + pos] = UInt32(f) | (missingRight ? TreeEnsemble.missingRightBit : 0)
                        threshold[t * inner + pos] = thr
                        fill(l, 2 * pos + 1, level + 1)
                        fill(r, 2 * pos + 2, level + 1)
                    case .leaf:
                        fill(i, 2 * pos + 1, level + 1)
                        fill(i, 2 * pos + 2, level + 1)
                    }
                }
                fill(0, 0, 0)
            }
            parameters[GbdtLayout.depthParameter] = Double(depth)
            return ([TensorData(name: GbdtLayout.split, shape: [trees.count, inner], elements: split),
                     TensorData(name: GbdtLayout.threshold, shape: [trees.count, inner], values: threshold),
                     TensorData(name: GbdtLayout.leaf, shape: [trees.count, inner + 1], values: leaf)], parameters)
        }
        var root: [Int32] = [], split: [UInt32] = [], threshold: [Float] = [], left: [Int32] = [], right: [Int32] = []
        var leaf: [Float] = []
        for tree in trees {
            // Preorder numbering: a parent always comes before its children.
            func place(_ i: Int) -> Int32 {
                switch tree.nodes[i] {
                case .leaf(let v):
                    leaf.append(v)
                    return ~Int32(leaf.count - 1)
                case .split(let f, let thr, let missingRight, let l, let r):
                    let n = split.count
                    split.append(UInt32(f) | (missingRight ? TreeEnsemble.missingRightBit : 0))
                    threshold.append(thr)
                    left.append(0)
                    right.append(0)
                    left[n] = place(l)
                    right[n] = place(r)
                    return Int32(n)
                }
            }
            root.append(place(0))
        }
        parameters[GbdtLayout.depthParameter] = 0
        return ([TensorData(name: GbdtLayout.root, shape: [root.count], elements: root),
                 TensorData(name: GbdtLayout.split, shape: [split.count], elements: split),
                 TensorData(name: GbdtLayout.threshold, shape: [threshold.count], values: threshold),
                 TensorData(name: GbdtLayout.left, shape: [left.count], elements: left),
                 TensorData(name: GbdtLayout.right, shape: [right.count], elements: right),
                 TensorData(name: GbdtLayout.leaf, shape: [leaf.count], values: leaf)], parameters)
    }
}

/// A model file that cannot be imported, with the file and what is wrong with it.
public struct ImportError: Error, CustomStringConvertible, Equatable {
    public var file: String
    public var message: String

    public init(file: String, _ message: String) {
        self.file = file
        self.message = message
    }

    public var description: String { "\(file): \(message)" }
}
