import ArbiterModels
import ArbiterStore
import ArbiterWire
import NIOConcurrencyHelpers

/// A validated model version as the server serves it: the model plus everything the wire needs about it,
/// computed once at load so that the hot path only copies.
final class ServingModel: Sendable {
    /// Keeps the pages of its large tensors (embedding tables) mapped while it serves unpinned requests, so
    /// that requests after a swap do not fault them in one by one; gives them back to the page cache while it
    /// only serves pins or the shadow (a request then maps what it touches). Called on the loader thread.
    func settlePages(serving: Bool) {
        let changed = mapped.withLockedValue { m -> Bool in
            defer { m = serving }
            return m != serving
        }
        // (The first call always acts: a version that serves takes its hold on the pages it shares.)
        guard changed else { return }
        // Spans shared with another loaded version are counted in the store: the last holder gives them back.
        if serving {
            model.version.prefaultResidentPages()
        } else {
            model.version.releaseResidentPages()
        }
    }

    deinit {
        // The pages stay mapped after the snapshot ends (the map is one mapping): unmap them with the version.
        model.version.releaseResidentPages()
    }

    let model: any ScoringModel
    /// The model's schema, kept here so the hot path does not copy the manifest to reach it.
    let schema: FeatureSchema
    let name: String
    let version: UInt64
    let contextCount: Int
    let candidateFeatureCount: Int
    let floatColumnCount: Int
    let codeColumnCount: Int
    /// Pre-encoded column prologues in schema order, with each column's kind and index among its kind.
    let columns: [(prologue: [UInt8], isCode: Bool, index: Int)]
    /// Whether the large tensors' pages are held mapped in this process now; nil until the first settle (loading
    /// maps what it reads, but holds nothing).
    private let mapped = NIOLockedValueBox<Bool?>(nil)
    let summary: ModelSummary
    let wireSchema: ModelSchema
    /// The version's own limit on candidates per SCORE (manifest parameter `max_candidates`, an integer in
    /// 1...2^24), which replaces the server's for this model; nil when it sets none.
    let maxCandidates: Int?
    /// The version's own threshold for scoring off the event loops (manifest parameter `offload_candidates`,
    /// an integer in 1...2^24: requests of that many candidates or more), which replaces the server's; nil when
    /// it sets none. A kind whose every request is heavy (an allocation) sets 1.
    let offloadCandidates: Int?
    /// This (model, version)'s number among the event loops' request counters (`LoopMetrics`).
    let seriesNumber: Int

    init(name: String, model: any ScoringModel) {
        let s = model.schema
        self.model = model
        self.schema = s
        self.name = name
        self.version = model.version.version
        self.seriesNumber = SeriesNumbers.number(model: name, version: model.version.version)
        self.contextCount = s.context.count
        self.candidateFeatureCount = s.candidate.count
        self.floatColumnCount = s.floatColumnCount
        self.codeColumnCount = s.codeColumnCount
        var cols: [(prologue: [UInt8], isCode: Bool, index: Int)] = []
        var nf = 0, nc = 0
        for c in s.outputs {
            let spec = ColumnSpec(name: c.name, kind: c.kind == .code ? .code : .float32, labels: c.labels)
            if c.kind == .code {
                cols.append((ScoreCodec.columnPrologue(spec), true, nc))
                nc += 1
            } else {
                cols.append((ScoreCodec.columnPrologue(spec), false, nf))
                nf += 1
            }
        }
        self.columns = cols
        if let limit = model.manifest.parameters["max_candidates"], limit >= 1, limit <= Double(1 << 24), limit == limit.rounded() {
            maxCandidates = Int(limit)
        } else {
            maxCandidates = nil
        }
        if let limit = model.manifest.parameters["offload_candidates"], limit >= 1, limit <= Double(1 << 24), limit == limit.rounded() {
            offloadCandidates = Int(limit)
        } else {
            offloadCandidates = nil
        }
        self.summary = ModelSummary(name: name, kind: model.version.kind, version: version,
                                    contextFeatureCount: UInt16(clamping: s.context.count),
                                    candidateFeatureCount: UInt16(clamping: s.candidate.count))
        func wire(_ f: Feature) -> FeatureSpec {
            FeatureSpec(name: f.name, kind: f.kind == .categorical ? .categorical : .numeric,
                        cardinality: UInt32(clamping: f.cardinality), allowsMissing: f.allowsMissing)
        }
        self.wireSchema = ModelSchema(
            model: name, kind: model.version.kind, version: version,
            createdUnixMillis: model.version.meta.createdUnixMillis,
            contextFeatures: s.context.map(wire), candidateFeatures: s.candidate.map(wire),
            outputs: s.outputs.map { ColumnSpec(name: $0.name, kind: $0.kind == .code ? .code : .float32, labels: $0.labels) })
    }
}

