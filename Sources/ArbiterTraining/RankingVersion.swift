import ArbiterModels
import ArbiterStore
import Foundation
import Ranking

/// Everything a `ranking` version holds, as arrays: what `arbiter-train` publishes, and what it scores with
/// the serving code (``model()``) to evaluate weights and record golden cases.
public struct RankingVersion: Sendable {
    /// Context (user) and candidate (item) features; the outputs are derived from the heads.
    public var features: FeatureSchema
    public var users: Table
    public var items: Table
    public var heads: [Head]
    public var fusion: RankingLayout.Fusion
    /// The candidate feature whose values are capped in an answer, and the cap.
    public var diversity: (feature: String, max: Int)?
    public var notes: [String: String] = [:]

    /// An embedding table: ids, their vectors (row-major) and the vector for ids it does not hold.
    public struct Table: Sendable {
        public var ids: [UInt64]
        public var dimension: Int
        public var vectors: [Float]
        public var defaultRow: [Float]

        public init(ids: [UInt64], dimension: Int, vectors: [Float], defaultRow: [Float]) {
            self.ids = ids
            self.dimension = dimension
            self.vectors = vectors
            self.defaultRow = defaultRow
        }
    }

    /// A head: its output column's name, its weight in the fusion, and its model over the head input row
    /// (context features, candidate features, dot product).
    public struct Head: Sendable {
        public enum Model: Sendable {
            /// A factorization machine (0 factors: a logistic regression) over the row's field encoding, with
            /// each field's mean and inverse standard deviation (`[fields × 2]`).
            case linear(FMParameters, norm: [Float])
            /// A tree ensemble with the logistic transform (imported from XGBoost or LightGBM).
            case trees(ImportedForest)
        }

        public var name: String
        public var weight: Float
        public var model: Model

        public init(name: String, weight: Float, model: Model) {
            self.name = name
            self.weight = weight
            self.model = model
        }
    }

    public init(features: FeatureSchema, users: Table, items: Table, heads: [Head], fusion: RankingLayout.Fusion = .logProduct,
                diversity: (feature: String, max: Int)? = nil) {
        self.features = features
        self.users = users
        self.items = items
        self.heads = heads
        self.fusion = fusion
        self.diversity = diversity
    }

    /// The served schema: the features, and one column per head, then `dot` and `rank_before`.
    public var schema: FeatureSchema {
        var s = features
        s.outputs = heads.map { OutputColumn(name: $0.name, kind: .float32) }
            + [OutputColumn(name: RankingLayout.dotColumn, kind: .float32), OutputColumn(name: RankingLayout.rankColumn, kind: .float32)]
        return s
    }

    /// The manifest (with `golden`) and tensors to publish. Checks what the plugin would refuse, with a
    /// message a person can act on: a diversity feature the schema lacks or that is not categorical, a head
    /// whose input size is not the schema's, head names that clash with the other columns.
    public func build(golden: [GoldenCase]) throws -> (manifest: ModelManifest, tensors: [TensorData]) {
        let fields = RankingLayout.headFields(features)
        guard !heads.isEmpty, heads.count <= RankingLayout.maxHeads else {
            throw DataError("a ranking version needs 1 to \(RankingLayout.maxHeads) heads; this one has \(heads.count)")
        }
        let names = heads.map(\.name)
        guard Set(names).count == names.count, !names.contains(RankingLayout.dotColumn), !names.contains(RankingLayout.rankColumn),
              names.allSatisfy({ !$0.isEmpty && $0.utf8.count <= 255 }) else {
            throw DataError("head names must be distinct, 1–255 bytes, and neither '\(RankingLayout.dotColumn)' nor '\(RankingLayout.rankColumn)': \(names)")
        }
        var p: [String: Double] = [
            RankingLayout.headsParameter: Double(heads.count),
            RankingLayout.fusionParameter: Double(fusion.rawValue),
            RankingLayout.diversityFeatureParameter: -1,
        ]
        if let diversity {
            guard let j = features.candidate.firstIndex(where: { $0.name == diversity.feature }) else {
                throw DataError("the diversity feature '\(diversity.feature)' is not a candidate feature of this model (its candidate features: \(features.candidate.map(\.name).joined(separator: ", ")))")
            }
            guard features.candidate[j].kind == .categorical else {
                throw DataError("the diversity feature '\(diversity.feature)' is numeric; it must be categorical (a category, a seller)")
            }
            guard diversity.max >= 1 else { throw DataError("the diversity cap must be at least 1, got \(diversity.max)") }
            p[RankingLayout.diversityFeatureParameter] = Double(j)
            p[RankingLayout.diversityMaxParameter] = Double(diversity.max)
        }
        guard users.dimension == items.dimension else {
            throw DataError("the user vectors have dimension \(users.dimension), the item vectors \(items.dimension)")
        }
        var tensors = try EmbeddingTable.tensors(name: RankingLayout.userTable, ids: users.ids, dimension: users.dimension,
                                                 vectors: users.vectors, defaultRow: users.defaultRow)
        tensors += try EmbeddingTable.tensors(name: RankingLayout.itemTable, ids: items.ids, dimension: items.dimension,
                                              vectors: items.vectors, defaultRow: items.defaultRow)
        let dimension = FieldEncoding(fields: fields).dimension
        for (k, head) in heads.enumerated() {
            let prefix = RankingLayout.headPrefix(k)
            p[prefix + RankingLayout.weightParameter] = Double(head.weight)
            switch head.model {
            case .linear(let fm, let norm):
                guard fm.linear.count == dimension, fm.factors.count == dimension * fm.factorCount, norm.count == 2 * fields.count else {
                    throw DataError("head '\(head.name)' was fitted for \(fm.linear.count) encoded inputs; this schema's rows encode to \(dimension) (\(fields.count) fields)")
                }
                p[prefix + RankingLayout.typeParameter] = Double(RankingLayout.HeadType.linear.rawValue)
                p[prefix + RankingLayout.biasParameter] = Double(fm.bias)
                p[prefix + RankingLayout.factorsParameter] = Double(fm.factorCount)
                tensors.append(TensorData(name: prefix + RankingLayout.norm, shape: [fields.count, 2], values: norm))
                tensors.append(TensorData(name: prefix + RankingLayout.linear, shape: [dimension], values: fm.linear))
                tensors.append(TensorData(name: prefix + RankingLayout.factors, shape: [dimension, fm.factorCount], values: fm.factors))
            case .trees(let forest):
                guard forest.featureCount == fields.count else {
                    throw DataError("head '\(head.name)' takes \(forest.featureCount) features; a ranking head's row has \(fields.count): "
                                    + "the context features, the candidate features and the dot product (\(fields.map(\.name).joined(separator: ", ")))")
                }
                guard forest.transform == .logistic else {
                    throw DataError("head '\(head.name)' is not a binary classifier (its output is not a probability)")
                }
                p[prefix + RankingLayout.typeParameter] = Double(RankingLayout.HeadType.trees.rawValue)
                let (trees, parameters) = forest.layout()
                for (name, value) in parameters { p[prefix + name] = value }
                tensors += trees.map { var t = $0; t.name = prefix + t.name; return t }
            }
        }
        var notes = notes
        for head in heads {
            if case .trees(let forest) = head.model { notes["head \(head.name)"] = forest.source }
        }
        let manifest = ModelManifest(kind: RankingLayout.kind, schema: schema, parameters: p, golden: golden,
                                     goldenTolerance: 2e-5, training: notes)
        return (manifest, tensors)
    }

    /// The version as the server would load it (a detached version: not in any store), to score with the
    /// serving code itself.
    public func model() throws -> RankingModel {
        let (manifest, tensors) = try build(golden: [])
        let version = try LoadedVersion(detachedModel: "ranking", kind: RankingLayout.kind, manifest: manifest.encoded(), tensors: tensors)
        return try RankingModel(version: version, manifest: manifest)
    }

    /// Golden cases for `requests` (context, candidate ids and features, subject, top_k), scored by the
    /// serving code.
    public func goldenCases(_ requests: [(context: [Float], ids: [UInt64], candidates: [Float], subject: UInt64, topK: Int)]) throws -> [GoldenCase] {
        let m = try model()
        return try requests.map { r in
            let out = try m.score(context: r.context, candidates: r.candidates, candidateCount: r.ids.count, ids: r.ids,
                                  subject: r.subject, topK: r.topK)
            return GoldenCase(context: r.context, candidates: r.candidates, candidateCount: r.ids.count, scores: out.scores,
                              floatColumns: out.floatColumns, codeColumns: out.codeColumns, ids: r.ids, subject: r.subject,
                              topK: r.topK, rows: out.rows)
        }
    }

    /// Publishes this version of `model` with `golden` in one write transaction; returns its number.
    @discardableResult
    public func publish(model: String, golden: [GoldenCase], catalog: Catalog, metrics: [String: Double] = [:],
                        activate: Bool = true) throws -> UInt64 {
        let (manifest, tensors) = try build(golden: golden)
        return try catalog.publish(model: model, kind: RankingLayout.kind, manifest: manifest.encoded(), tensors: tensors,
                                   metrics: metrics, activate: activate)
    }
}
