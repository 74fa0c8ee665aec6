import ArbiterStore

/// The inputs of one scoring call, as views into memory the caller owns for the duration of the call.
public struct ScoreBatch {
    /// `schema.context.count` floats.
    public let context: UnsafeBufferPointer<Float>
    /// Row-major, `candidateCount × schema.candidate.count`.
    public let candidates: UnsafeBufferPointer<Float>
    public let candidateCount: Int

    @inlinable
    public init(context: UnsafeBufferPointer<Float>, candidates: UnsafeBufferPointer<Float>, candidateCount: Int) {
        self.context = context
        self.candidates = candidates
        self.candidateCount = candidateCount
    }
}

/// Where a model writes its outputs: one score per candidate, and its extra columns. Float columns are
/// laid out one after another (`candidateCount` floats each, in schema order among float columns), and
/// so are code columns.
public struct ScoreOutput {
    public let scores: UnsafeMutablePointer<Float>
    public let floatColumns: UnsafeMutablePointer<Float>
    public let codeColumns: UnsafeMutablePointer<UInt8>
    public let candidateCount: Int

    @inlinable
    public init(scores: UnsafeMutablePointer<Float>, floatColumns: UnsafeMutablePointer<Float>,
                codeColumns: UnsafeMutablePointer<UInt8>, candidateCount: Int) {
        self.scores = scores
        self.floatColumns = floatColumns
        self.codeColumns = codeColumns
        self.candidateCount = candidateCount
    }

    /// The `i`-th float column (counting float columns only).
    @inlinable
    public func floatColumn(_ i: Int) -> UnsafeMutablePointer<Float> { floatColumns + i * candidateCount }

    /// The `i`-th code column (counting code columns only).
    @inlinable
    public func codeColumn(_ i: Int) -> UnsafeMutablePointer<UInt8> { codeColumns + i * candidateCount }
}

/// A loaded, validated model version, ready to score on any thread.
///
/// Implementations keep every parameter pointer resolved at load; `score` makes no store call, takes no
/// lock and allocates nothing per candidate. Inputs have already been checked against the schema (finite,
/// categorical codes in range) by the caller.
public protocol ScoringModel: AnyObject, Sendable {
    /// The version this model serves (it also keeps the version's snapshot pinned).
    var version: LoadedVersion { get }
    var manifest: ModelManifest { get }
    func score(_ batch: ScoreBatch, into output: ScoreOutput)
}

extension ScoringModel {
    public var schema: FeatureSchema { manifest.schema }

    /// Scores with plain arrays (tests, golden checks, tools). The hot path uses `score(_:into:)`.
    public func score(context: [Float], candidates: [Float], candidateCount: Int)
        -> (scores: [Float], floatColumns: [Float], codeColumns: [UInt8]) {
        let s = schema
        var scores = [Float](repeating: 0, count: candidateCount)
        var fc = [Float](repeating: 0, count: s.floatColumnCount * candidateCount)
        var cc = [UInt8](repeating: 0, count: s.codeColumnCount * candidateCount)
        context.withUnsafeBufferPointer { ctx in
            candidates.withUnsafeBufferPointer { cand in
                scores.withUnsafeMutableBufferPointer { sp in
                    fc.withUnsafeMutableBufferPointer { fp in
                        cc.withUnsafeMutableBufferPointer { cp in
                            // Zero-sized arrays may have a nil base; give the model a valid pointer anyway.
                            withUnsafeTemporaryAllocation(of: Float.self, capacity: 1) { dummyF in
                                withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 1) { dummyC in
                                    let out = ScoreOutput(scores: sp.baseAddress ?? dummyF.baseAddress!,
                                                          floatColumns: fp.baseAddress ?? dummyF.baseAddress!,
                                                          codeColumns: cp.baseAddress ?? dummyC.baseAddress!,
                                                          candidateCount: candidateCount)
                                    self.score(ScoreBatch(context: ctx, candidates: cand, candidateCount: candidateCount), into: out)
                                }
                            }
                        }
                    }
                }
            }
        }
        return (scores, fc, cc)
    }

    /// Recomputes every golden case and compares with what the trainer recorded.
    public func checkGolden() throws(ModelError) {
        let m = manifest
        guard !m.golden.isEmpty else { throw ModelError.goldenMismatch("the manifest has no golden cases") }
        for (i, g) in m.golden.enumerated() {
            guard g.context.count == schema.context.count,
                  g.candidates.count == g.candidateCount * schema.candidate.count,
                  g.scores.count == g.candidateCount,
                  g.floatColumns.count == g.candidateCount * schema.floatColumnCount,
                  g.codeColumns.count == g.candidateCount * schema.codeColumnCount else {
                throw ModelError.goldenMismatch("golden case \(i) does not match the schema's shapes")
            }
            let r = score(context: g.context, candidates: g.candidates, candidateCount: g.candidateCount)
            for (a, b) in zip(r.scores, g.scores) where !(abs(a - b) <= m.goldenTolerance) {
                throw ModelError.goldenMismatch("case \(i): score \(a), recorded \(b)")
            }
            for (a, b) in zip(r.floatColumns, g.floatColumns) where !(abs(a - b) <= m.goldenTolerance) {
                throw ModelError.goldenMismatch("case \(i): column value \(a), recorded \(b)")
            }
            if r.codeColumns != g.codeColumns {
                throw ModelError.goldenMismatch("case \(i): codes \(r.codeColumns), recorded \(g.codeColumns)")
            }
        }
    }
}
