/// A forest of binary decision trees evaluated for a batch of rows, over parameter views (zero-copy into
/// the store at serving time, arrays while importing or testing).
///
/// Every split sends a row **left when `x < threshold`** and right otherwise; a missing value (NaN) goes to
/// the split's default side. That is XGBoost's rule as it is; LightGBM's `x <= t` (t a double) is the same
/// rule with the threshold rounded down to a float and moved up by one ulp, and its "missing is 0" nodes
/// carry the side 0 would take as their default (the importer converts both exactly).
///
/// A split is packed in one `u32`: the feature index in bits 0–30, bit 31 set when missing values go
/// right. Two layouts:
///
/// - **perfect**: every tree padded to a complete tree of the forest's depth `D` (a leaf above that depth
///   becomes splits whose subtrees all end in copies of it), stored level by level, so node `i`'s children
///   are `2i+1` and `2i+2` and no child index is loaded: `split` and `threshold` are `[trees, 2^D - 1]`,
///   `leaf` is `[trees, 2^D]`. The evaluator walks four trees at once per row (independent chains for the
///   core to overlap) with a branch-free child choice.
/// - **general**: for deeper trees, nodes with explicit children: `root` `[trees]`, `split`, `threshold`,
///   `left`, `right` `[nodes]`, `leaf` `[leaves]`; a child or root below 0 is leaf `~c`. Children always
///   have larger indices than their parent, so every walk ends (checked at load).
public struct TreeEnsemble {
    public enum Layout: Sendable, Equatable {
        case perfect(depth: Int)
        case general
    }

    public let layout: Layout
    public let treeCount: Int
    /// Features per row.
    public let featureCount: Int
    public let split: UnsafePointer<UInt32>
    public let threshold: UnsafePointer<Float>
    public let leaf: UnsafePointer<Float>
    /// General layout only.
    public let root: UnsafePointer<Int32>?
    public let left: UnsafePointer<Int32>?
    public let right: UnsafePointer<Int32>?

    public static let missingRightBit: UInt32 = 1 << 31
    public static let featureMask: UInt32 = ~missingRightBit
    /// The deepest forest the perfect layout is used for (2^10 leaves a tree); deeper ones use the general layout.
    public static let maxPerfectDepth = 10

    public init(perfectDepth depth: Int, treeCount: Int, featureCount: Int, split: UnsafePointer<UInt32>,
                threshold: UnsafePointer<Float>, leaf: UnsafePointer<Float>) {
        layout = .perfect(depth: depth)
        self.treeCount = treeCount
        self.featureCount = featureCount
        self.split = split
        self.threshold = threshold
        self.leaf = leaf
        root = nil
        left = nil
        right = nil
    }

    public init(generalTreeCount treeCount: Int, featureCount: Int, root: UnsafePointer<Int32>, split: UnsafePointer<UInt32>,
                threshold: UnsafePointer<Float>, left: UnsafePointer<Int32>, right: UnsafePointer<Int32>,
                leaf: UnsafePointer<Float>) {
        layout = .general
        self.treeCount = treeCount
        self.featureCount = featureCount
        self.split = split
        self.threshold = threshold
        self.leaf = leaf
        self.root = root
        self.left = left
        self.right = right
    }

    /// Adds, for each of `count` rows (row-major, `featureCount` floats each, starting at `rows`), the sum of
    /// its leaf values over every tree to `sums[r]`. Allocates nothing.
    @inlinable
    public func accumulate(rows: UnsafePointer<Float>, count: Int, into sums: UnsafeMutablePointer<Double>) {
        switch layout {
        case .perfect(let depth): accumulatePerfect(depth: depth, rows: rows, count: count, into: sums)
        case .general: accumulateGeneral(rows: rows, count: count, into: sums)
        }
    }

    /// One step down a split: 1 for the left child, 2 for the right, given the node's index. Branch-free:
    /// which way a row goes is data, not something the branch predictor can learn.
    @inline(__always) @usableFromInline
    func childOffset(_ n: Int, _ row: UnsafePointer<Float>) -> Int {
        let s = split[n]
        let x = row[Int(s & Self.featureMask)]
        // Right when x >= t, or when x is missing and missing values go right. NaN fails every ordered compare.
        // Bools as their 0/1 bytes (no select, which the compiler may turn back into a branch).
        let atLeast = UInt32(unsafeBitCast(x >= threshold[n], to: UInt8.self))
        let missing = UInt32(unsafeBitCast(x != x, to: UInt8.self))
        return 1 &+ Int(truncatingIfNeeded: atLeast | (missing & (s >> 31)))
    }

    @inlinable
    func accumulatePerfect(depth: Int, rows: UnsafePointer<Float>, count: Int, into sums: UnsafeMutablePointer<Double>) {
        let inner = (1 << depth) - 1
        let leaves = 1 << depth
        let f = featureCount
        var t = 0
        // Four trees at a time: four independent walks per row.
        while t + 4 <= treeCount {
            let b0 = t * inner, b1 = b0 + inner, b2 = b1 + inner, b3 = b2 + inner
            let l0 = leaf + t * leaves, l1 = l0 + leaves, l2 = l1 + leaves, l3 = l2 + leaves
            for r in 0..<count {
                let row = rows + r * f
                var i0 = 0, i1 = 0, i2 = 0, i3 = 0
                for _ in 0..<depth {
                    i0 = 2 &* i0 &+ childOffset(b0 &+ i0, row)
                    i1 = 2 &* i1 &+ childOffset(b1 &+ i1, row)
                    i2 = 2 &* i2 &+ childOffset(b2 &+ i2, row)
                    i3 = 2 &* i3 &+ childOffset(b3 &+ i3, row)
                }
                sums[r] += (Double(l0[i0 - inner]) + Double(l1[i1 - inner])) + (Double(l2[i2 - inner]) + Double(l3[i3 - inner]))
            }
            t += 4
        }
        while t < treeCount {
            let b = t * inner
            let l = leaf + t * leaves
            for r in 0..<count {
                let row = rows + r * f
                var i = 0
                for _ in 0..<depth { i = 2 &* i &+ childOffset(b &+ i, row) }
                sums[r] += Double(l[i - inner])
            }
            t += 1
        }
    }

    @inlinable
    func accumulateGeneral(rows: UnsafePointer<Float>, count: Int, into sums: UnsafeMutablePointer<Double>) {
        guard let root, let left, let right else { return }
        let f = featureCount
        for r in 0..<count {
            let row = rows + r * f
            var s = 0.0
            for t in 0..<treeCount {
                var n = root[t]
                while n >= 0 {
                    let i = Int(n)
                    n = childOffset(i, row) == 1 ? left[i] : right[i]
                }
                s += Double(leaf[Int(~n)])
            }
            sums[r] += s
        }
    }
}

/// How a tree model's summed margin becomes its output.
public enum OutputTransform: Int, Sendable, Codable {
    /// The margin itself (regression).
    case identity = 0
    /// `1 / (1 + exp(-scale * margin))` (binary classification), scale in the model's parameters.
    case logistic = 1

    @inlinable
    public func apply(_ margin: Double, scale: Double) -> Double {
        switch self {
        case .identity: margin
        case .logistic: 1 / (1 + _exp(-scale * margin))
        }
    }
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#else
import Darwin
#endif

@usableFromInline
func _exp(_ x: Double) -> Double { exp(x) }
