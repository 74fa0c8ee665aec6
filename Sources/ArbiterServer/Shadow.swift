import ArbiterModels
import ArbiterStore
import ArbiterWire
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

/// What a shadow version's comparisons add up to, per served version. Event loops only count drops here;
/// the shadow thread adds comparisons; the loader thread writes the record to the store about once a second.
final class ShadowRecorder: Sendable {
    let model: String
    let version: UInt64
    /// The code column compared (grade, arm, ...): its name, and its index among each version's code
    /// columns (nil where that version lacks it).
    let codeColumn: String?
    private let state: NIOLockedValueBox<State>
    /// Requests queued for the shadow thread at most; a sampled request beyond it is dropped (and counted).
    static let maxPending = 64

    private struct State {
        var comparisons: [UInt64: ShadowComparison] = [:]
        var pending = 0
        var dirty = false
    }

    /// `initial`: what the store already holds for this version (a restarted server counts on from there).
    init(model: String, version: UInt64, codeColumn: String?, initial: ShadowRecord?) {
        self.model = model
        self.version = version
        self.codeColumn = codeColumn
        var s = State()
        for c in initial?.comparisons ?? [] { s.comparisons[c.served] = c }
        state = NIOLockedValueBox(s)
    }

    /// Reserves a place in the shadow queue; false (and a drop counted against `served`) when it is full.
    func reserve(served: UInt64) -> Bool {
        state.withLockedValue { s in
            if s.pending < Self.maxPending {
                s.pending += 1
                return true
            }
            s.comparisons[served, default: ShadowComparison(served: served, codeColumn: codeColumn)].dropped += 1
            s.dirty = true
            return false
        }
    }

    /// Adds one request's comparison and frees its place.
    func add(_ c: ShadowComparison) {
        state.withLockedValue { s in
            s.pending -= 1
            s.comparisons[c.served, default: ShadowComparison(served: c.served, codeColumn: codeColumn)].merge(c)
            s.dirty = true
        }
    }

    /// Frees a place without a comparison (the shadow thread is shutting down).
    func abandon() {
        state.withLockedValue { $0.pending -= 1 }
    }

    /// Requests queued for the shadow thread now.
    var pending: Int { state.withLockedValue { $0.pending } }

    /// Every comparison so far, by served version.
    var comparisons: [ShadowComparison] {
        state.withLockedValue { s in s.comparisons.values.sorted { $0.served < $1.served } }
    }

    /// The record to write, if anything changed since the last call.
    func takeChanges(by: String) -> ShadowRecord? {
        state.withLockedValue { s in
            guard s.dirty else { return nil }
            s.dirty = false
            return ShadowRecord(comparisons: s.comparisons.values.sorted { $0.served < $1.served }, by: by)
        }
    }

    /// The code column a comparison of `model`'s versions counts: `grade` or `arm` if it has one, else its first
    /// code column.
    static func codeColumn(of schema: FeatureSchema) -> String? {
        let codes = schema.outputs.filter { $0.kind == .code }.map(\.name)
        return codes.first { $0 == "grade" } ?? codes.first { $0 == "arm" } ?? codes.first
    }
}

/// Scores sampled requests with the shadow version and the version that served them, on one thread of its
/// own, never on an event loop. The caller's answer has already been written when a request gets here.
final class ShadowScorer: Sendable {
    private let pool: NIOThreadPool

    init(nice: Int32 = 0) {
        pool = NIOThreadPool(numberOfThreads: 1)
        pool.start()
        pool.submit { _ in
            // Dropped work is counted, never waited for: the shadow may starve under load rather than delay a loop.
            if nice > 0 && !idleThreadPriority() { lowerThreadPriority(nice) }
        }
    }

    func shutdown() async throws {
        try await pool.shutdownGracefully()
    }

    /// Queues a comparison of `request` (a copy of a SCORE body the served version answered) if the
    /// recorder has room.
    func submit(_ request: ByteBuffer, served: ServingModel, shadow: ShadowTarget) {
        let recorder = shadow.recorder
        guard recorder.reserve(served: served.version) else { return }
        let target = shadow.model
        pool.submit { state in
            guard case .active = state else {
                recorder.abandon()
                return
            }
            recorder.add(Self.compare(request, served: served, shadow: target, codeColumn: recorder.codeColumn))
        }
    }

    /// Scores the request with both versions and measures how they differ: every candidate's score in request
    /// order, Spearman's rank correlation of the two score lists, and the code column.
    static func compare(_ body: ByteBuffer, served: ServingModel, shadow: ServingModel, codeColumn: String?) -> ShadowComparison {
        var c = ShadowComparison(served: served.version, codeColumn: codeColumn)
        c.requests = 1
        guard let view = try? ScoreRequestView(body: body), let a = score(view, served) else {
            // The served version answered this request a moment ago, so this does not happen; count it as a
            // failure rather than guess.
            c.failed = 1
            c.requests = 0
            return c
        }
        guard let b = score(view, shadow) else {
            c.failed = 1
            c.requests = 0
            return c
        }
        let n = view.candidateCount
        c.rows = UInt64(n)
        for i in 0..<n {
            let d = Double(abs(a.scores[i] - b.scores[i]))
            c.sumAbsDifference += d
            c.maxAbsDifference = max(c.maxAbsDifference, d)
        }
        if n >= 2, let rho = spearman(a.scores, b.scores) {
            c.rankCorrelationSum = rho
            c.rankedRequests = 1
        }
        if let name = codeColumn, let ia = codeIndex(served, name), let ib = codeIndex(shadow, name) {
            c.codeRows = UInt64(n)
            for i in 0..<n where a.codeColumns[ia * n + i] != b.codeColumns[ib * n + i] { c.changedCodes += 1 }
        }
        return c
    }

    private static func codeIndex(_ m: ServingModel, _ name: String) -> Int? {
        m.schema.outputs.filter { $0.kind == .code }.firstIndex { $0.name == name }
    }

    /// The version's scores for the request, or nil if its schema does not take it or it refuses it.
    static func score(_ view: ScoreRequestView, _ m: ServingModel) -> ScoredArrays? {
        guard view.contextCount == m.contextCount, view.candidateFeatureCount == m.candidateFeatureCount else { return nil }
        let r = view.materialize()
        let invalid = r.context.withUnsafeBufferPointer { ctx in
            r.candidateFeatures.withUnsafeBufferPointer { cand in
                m.schema.firstInvalidValue(context: ctx, candidates: cand, candidateCount: r.candidateIDs.count)
            }
        }
        guard invalid == nil else { return nil }
        return try? m.model.score(context: r.context, candidates: r.candidateFeatures, candidateCount: r.candidateIDs.count,
                                  ids: r.candidateIDs, routingKey: r.routingKey, subject: r.subject, topK: Int(r.topK))
    }

    /// Spearman's rank correlation (ties share their mean rank); nil when either list is constant.
    static func spearman(_ x: [Float], _ y: [Float]) -> Double? {
        let rx = ranks(x), ry = ranks(y)
        if rx == ry { return Set(rx).count > 1 ? 1 : nil }
        let n = Double(rx.count)
        let mx = rx.reduce(0, +) / n, my = ry.reduce(0, +) / n
        var sxy = 0.0, sxx = 0.0, syy = 0.0
        for i in rx.indices {
            let dx = rx[i] - mx, dy = ry[i] - my
            sxy += dx * dy
            sxx += dx * dx
            syy += dy * dy
        }
        guard sxx > 0, syy > 0 else { return nil }
        return sxy / (sxx.squareRoot() * syy.squareRoot())
    }

    static func ranks(_ v: [Float]) -> [Double] {
        let order = v.indices.sorted { v[$0] < v[$1] || (v[$0] == v[$1] && $0 < $1) }
        var out = [Double](repeating: 0, count: v.count)
        var i = 0
        while i < order.count {
            var j = i
            while j + 1 < order.count && v[order[j + 1]] == v[order[i]] { j += 1 }
            let mean = Double(i + j) / 2 + 1
            for k in i...j { out[order[k]] = mean }
            i = j + 1
        }
        return out
    }
}
