import ArbiterStore

/// The inputs of one scoring call, as views into memory the caller owns for the duration of the call.
public struct ScoreBatch {
    /// `schema.context.count` floats.
    public let context: UnsafeBufferPointer<Float>
    /// Row-major, `candidateCount × schema.candidate.count`.
    public let candidates: UnsafeBufferPointer<Float>
    public let candidateCount: Int
    /// Each candidate's id as the caller sent it (`candidateCount` of them; empty when the caller has none,
    /// as in tools that score feature rows).
    public let ids: UnsafeBufferPointer<UInt64>
    /// The request's routing key (the caller's stable key for traffic splits; 0 when not given).
    public let routingKey: UInt64
    /// The request's subject — the user a ranking is for — when the caller sent one.
    public let subject: UInt64?
    /// The rows the caller wants back: 0 = every candidate; k > 0 = the best k. A model that orders its
    /// own rows (``RowOrder/ranked(count:)``) cuts to it; for the others the server selects the best k.
    public let topK: Int

    @inlinable
    public init(context: UnsafeBufferPointer<Float>, candidates: UnsafeBufferPointer<Float>, candidateCount: Int,
                ids: UnsafeBufferPointer<UInt64> = UnsafeBufferPointer(start: nil, count: 0), routingKey: UInt64 = 0,
                subject: UInt64? = nil, topK: Int = 0) {
        self.context = context
        self.candidates = candidates
        self.candidateCount = candidateCount
        self.ids = ids
        self.routingKey = routingKey
        self.subject = subject
        self.topK = topK
    }
}

/// Which rows a model's answer holds, and in what order.
public enum RowOrder: Equatable, Sendable {
    /// One row per candidate, in request order; the server selects the best `topK` by score when asked.
    case requestOrder
    /// The model ordered and cut its rows itself: `output.order[0..<count]` are candidate indices, best
    /// first (after any rerank of its own), and only those rows are answered.
    case ranked(count: Int)
}

/// Why a request cannot be scored, found by the model (the server has already checked shapes and values
/// against the schema). Each becomes an ERROR with its status; the connection carries on.
public struct ScoringError: Error, Equatable, Sendable, CustomStringConvertible {
    public enum Kind: Sendable, Equatable {
        /// The request is well formed but this model cannot score it as sent (a subject id it needs is
        /// absent, say): `INVALID_REQUEST`.
        case invalidRequest
        /// A feature value the schema accepts but the model cannot use: `INVALID_FEATURE`.
        case invalidFeature
        /// A fault of the model or the server, not of the request: `INTERNAL`.
        case internalError
    }

    public let kind: Kind
    public let message: String

    public init(_ kind: Kind, _ message: String) {
        self.kind = kind
        self.message = message
    }

    public var description: String { message }
}

/// Where a model writes its outputs: one score per candidate, and its extra columns. Float columns are
/// laid out one after another (`candidateCount` floats each, in schema order among float columns), and
/// so are code columns.
public struct ScoreOutput {
    public let scores: UnsafeMutablePointer<Float>
    public let floatColumns: UnsafeMutablePointer<Float>
    public let codeColumns: UnsafeMutablePointer<UInt8>
    public let candidateCount: Int
    /// Room for `candidateCount` candidate indices, where a model that orders its own rows writes them
    /// (see ``RowOrder/ranked(count:)``); nil where the caller takes rows in request order only.
    public let order: UnsafeMutablePointer<Int32>?

    @inlinable
    public init(scores: UnsafeMutablePointer<Float>, floatColumns: UnsafeMutablePointer<Float>,
                codeColumns: UnsafeMutablePointer<UInt8>, candidateCount: Int, order: UnsafeMutablePointer<Int32>? = nil) {
        self.scores = scores
        self.floatColumns = floatColumns
        self.codeColumns = codeColumns
        self.candidateCount = candidateCount
        self.order = order
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
///
/// `score` writes one score (and its columns) per candidate, at the candidate's index, and says which rows
/// the answer holds: all, in request order, or an order and cut of its own (a ranking). It may refuse a
/// request it cannot score with a ``ScoringError``.
public protocol ScoringModel: AnyObject, Sendable {
    /// The version this model serves (it also keeps the version's snapshot pinned).
    var version: LoadedVersion { get }
    var manifest: ModelManifest { get }
    func score(_ batch: ScoreBatch, into output: ScoreOutput) throws(ScoringError) -> RowOrder
}

extension ScoringModel {
    public var schema: FeatureSchema { manifest.schema }

    /// Scores with plain arrays (tests, golden checks, tools; the hot path uses `score(_:into:)`). Scores and
    /// columns are per candidate, in request order; `rows` are the candidate indices the answer holds, in
    /// its order — for a model that answers in request order, the best `topK` by score (ties to the lower
    /// index) as the server selects them, or every index when `topK` is 0.
    public func score(context: [Float], candidates: [Float], candidateCount: Int, ids: [UInt64] = [],
                      routingKey: UInt64 = 0, subject: UInt64? = nil, topK: Int = 0) throws(ScoringError) -> ScoredArrays {
        let s = schema
        let n = candidateCount
        var scores = [Float](repeating: 0, count: n)
        var fc = [Float](repeating: 0, count: s.floatColumnCount * n)
        var cc = [UInt8](repeating: 0, count: s.codeColumnCount * n)
        // -1: an index the model did not write is out of range, and caught below.
        var order = [Int32](repeating: -1, count: n)
        let ids = ids.isEmpty ? [UInt64](repeating: 0, count: n) : ids
        // Zero-sized arrays may have a nil base; the model gets valid pointers anyway.
        let dummyF = UnsafeMutablePointer<Float>.allocate(capacity: 1)
        let dummyC = UnsafeMutablePointer<UInt8>.allocate(capacity: 1)
        let dummyO = UnsafeMutablePointer<Int32>.allocate(capacity: 1)
        defer { dummyF.deallocate(); dummyC.deallocate(); dummyO.deallocate() }
        let result = context.withUnsafeBufferPointer { ctx in
            candidates.withUnsafeBufferPointer { cand in
                ids.withUnsafeBufferPointer { idp in
                    scores.withUnsafeMutableBufferPointer { sp in
                        fc.withUnsafeMutableBufferPointer { fp in
                            cc.withUnsafeMutableBufferPointer { cp in
                                order.withUnsafeMutableBufferPointer { op in
                                    let out = ScoreOutput(scores: sp.baseAddress ?? dummyF, floatColumns: fp.baseAddress ?? dummyF,
                                                          codeColumns: cp.baseAddress ?? dummyC, candidateCount: n,
                                                          order: op.baseAddress ?? dummyO)
                                    let batch = ScoreBatch(context: ctx, candidates: cand, candidateCount: n, ids: idp,
                                                           routingKey: routingKey, subject: subject, topK: topK)
                                    return Result { () throws(ScoringError) in try self.score(batch, into: out) }
                                }
                            }
                        }
                    }
                }
            }
        }
        let rows: [Int]
        switch try result.get() {
        case .requestOrder:
            if topK > 0 {
                rows = Array((0..<n).sorted { scores[$0] > scores[$1] || (scores[$0] == scores[$1] && $0 < $1) }.prefix(topK))
            } else {
                rows = Array(0..<n)
            }
        case .ranked(let count):
            guard count >= 0, count <= n else {
                throw ScoringError(.internalError, "the model answered \(count) rows of \(n) candidates")
            }
            rows = order.prefix(count).map { Int($0) }
            guard rows.allSatisfy({ $0 >= 0 && $0 < n }), Set(rows).count == rows.count else {
                throw ScoringError(.internalError, "the model's order names a candidate twice or out of range: \(rows)")
            }
        }
        return ScoredArrays(scores: scores, floatColumns: fc, codeColumns: cc, rows: rows)
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
                  g.codeColumns.count == g.candidateCount * schema.codeColumnCount,
                  g.ids.map({ $0.count == g.candidateCount }) ?? true else {
                throw ModelError.goldenMismatch("golden case \(i) does not match the schema's shapes")
            }
            let r: ScoredArrays
            do {
                r = try score(context: g.context, candidates: g.candidates, candidateCount: g.candidateCount, ids: g.ids ?? [],
                              routingKey: g.routingKey ?? 0, subject: g.subject, topK: g.topK ?? 0)
            } catch {
                throw ModelError.goldenMismatch("case \(i): the model refused it: \(error.message)")
            }
            for (a, b) in zip(r.scores, g.scores) where !(abs(a - b) <= m.goldenTolerance) {
                throw ModelError.goldenMismatch("case \(i): score \(a), recorded \(b)")
            }
            for (a, b) in zip(r.floatColumns, g.floatColumns) where !(abs(a - b) <= m.goldenTolerance) {
                throw ModelError.goldenMismatch("case \(i): column value \(a), recorded \(b)")
            }
            if r.codeColumns != g.codeColumns {
                throw ModelError.goldenMismatch("case \(i): codes \(r.codeColumns), recorded \(g.codeColumns)")
            }
            if let rows = g.rows, rows != r.rows {
                throw ModelError.goldenMismatch("case \(i): rows answered \(r.rows), recorded \(rows)")
            }
        }
    }
}

/// A scoring call's outputs as arrays: per candidate in request order, and the rows answered.
public struct ScoredArrays: Equatable, Sendable {
    public var scores: [Float]
    /// Column-major: float column `c` of candidate `i` at `c × candidateCount + i`.
    public var floatColumns: [Float]
    public var codeColumns: [UInt8]
    /// Candidate indices the answer holds, in its order.
    public var rows: [Int]
}
