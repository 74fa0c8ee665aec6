import ArbiterModels
import ArbiterStore
import Foundation
import Routing

/// Everything a `routing` version holds, as arrays: what `arbiter-train` publishes, and what it scores with
/// the serving code (``model()``) to evaluate and record golden cases.
public struct RoutingVersion: Sendable {
    /// Applicant (context) and lender (candidate) features; the outputs follow from the lender rules.
    public var features: FeatureSchema
    public var channelFeature: String
    public var returningFeature: String?
    public var capacityFeature: String
    /// The lender table (any order: it is stored sorted by id) and each lender's average funded amount.
    public var lenders: [LenderSpec]
    public var averageAmounts: [UInt64: Float]
    public var heads: [Head]
    public var value: RoutingLayout.Value
    public var baseline: RoutingLayout.Baseline
    /// The model's share of each channel's applicants, by channel code.
    public var shares: [Float]
    public var epsilon: Double
    public var maxProducts: Int
    public var salt: UInt64
    /// Seeds the exploration draw (a version's own: keys explore differently from one version to the next
    /// when it changes).
    public var exploreSalt: UInt64 = 0
    public var notes: [String: String] = [:]

    /// A head: its role, the applicants it applies to, and its model over the head row (the context
    /// features, the candidate features, the lender's row in the table).
    public struct Head: Sendable {
        public enum Model: Sendable {
            /// A factorization machine over the row's field encoding with each field's mean and inverse standard
            /// deviation (`[fields × 2]`); an amount head's output is `offset + scale × machine`.
            case linear(FMParameters, norm: [Float], scale: Float = 1, offset: Float = 0)
            /// A tree ensemble: logistic for an approve head, identity for an amount head.
            case trees(ImportedForest)
        }

        public var role: RoutingLayout.Role
        public var population: RoutingLayout.Population
        public var model: Model

        public init(role: RoutingLayout.Role, population: RoutingLayout.Population = .all, model: Model) {
            self.role = role
            self.population = population
            self.model = model
        }
    }

    public init(features: FeatureSchema, channelFeature: String, returningFeature: String?, capacityFeature: String,
                lenders: [LenderSpec], averageAmounts: [UInt64: Float], heads: [Head], value: RoutingLayout.Value = .revenue,
                baseline: RoutingLayout.Baseline = .priority, shares: [Float], epsilon: Double = 0, maxProducts: Int = 0,
                salt: UInt64 = 0) {
        self.features = features
        self.channelFeature = channelFeature
        self.returningFeature = returningFeature
        self.capacityFeature = capacityFeature
        self.lenders = lenders
        self.averageAmounts = averageAmounts
        self.heads = heads
        self.value = value
        self.baseline = baseline
        self.shares = shares
        self.epsilon = epsilon
        self.maxProducts = maxProducts
        self.salt = salt
    }

    /// The lenders in table order (by id): a head's `lender` field is a lender's index here.
    public var sortedLenders: [LenderSpec] { lenders.sorted { $0.id < $1.id } }

    /// The features that rules name: allowed-values rules and range rules, each sorted by name (the table's
    /// order, and the reason codes').
    var ruleFeatures: (allowed: [String], ranges: [String]) {
        (Set(lenders.flatMap { $0.allowed.keys }).sorted(), Set(lenders.flatMap { $0.ranges.keys }).sorted())
    }

    /// The served schema: the features, and the outputs the rules imply.
    public var schema: FeatureSchema {
        var s = features
        let (allowed, ranges) = ruleFeatures
        s.outputs = RoutingLayout.outputs(allowed: allowed, ranges: ranges)
        return s
    }

    /// The manifest (with `golden`) and tensors to publish. Checks what the plugin would refuse, with a
    /// message a person can act on.
    public func build(golden: [GoldenCase]) throws -> (manifest: ModelManifest, tensors: [TensorData]) {
        let context = features.context, candidate = features.candidate
        let lenders = sortedLenders
        guard !lenders.isEmpty, lenders.count <= RoutingLayout.maxLenders else {
            throw DataError("a routing version needs 1 to \(RoutingLayout.maxLenders) lenders; this one has \(lenders.count)")
        }
        guard Set(lenders.map(\.id)).count == lenders.count else { throw DataError("a lender id appears twice in the table") }
        guard let channel = context.firstIndex(where: { $0.name == channelFeature }), context[channel].kind == .categorical else {
            throw DataError("the channel feature '\(channelFeature)' must be a categorical applicant feature (\(context.map(\.name).joined(separator: ", ")))")
        }
        guard shares.count == context[channel].cardinality, shares.allSatisfy({ $0 >= 0 && $0 <= 1 }) else {
            throw DataError("one model share per channel (\(context[channel].cardinality)), each in 0...1; got \(shares)")
        }
        let returning = try returningFeature.map { name in
            guard let j = context.firstIndex(where: { $0.name == name }) else {
                throw DataError("the returning flag '\(name)' is not an applicant feature (\(context.map(\.name).joined(separator: ", ")))")
            }
            return j
        }
        guard let capacity = candidate.firstIndex(where: { $0.name == capacityFeature }), candidate[capacity].kind == .numeric else {
            throw DataError("the capacity feature '\(capacityFeature)' must be a numeric lender feature (\(candidate.map(\.name).joined(separator: ", ")))")
        }
        guard epsilon >= 0, epsilon <= 1 else { throw DataError("epsilon must be in 0...1, got \(epsilon)") }
        guard maxProducts >= 0 else { throw DataError("max products must be ≥ 0, got \(maxProducts)") }
        guard salt < 1 << 53, exploreSalt < 1 << 53 else { throw DataError("the split and exploration salts must be below 2^53, got \(salt) and \(exploreSalt)") }
        let (allowedNames, rangeNames) = ruleFeatures
        var p: [String: Double] = [
            RoutingLayout.channelFeatureParameter: Double(channel),
            RoutingLayout.returningFeatureParameter: Double(returning ?? -1),
            RoutingLayout.capacityFeatureParameter: Double(capacity),
            RoutingLayout.lendersParameter: Double(lenders.count),
            RoutingLayout.rangesParameter: Double(rangeNames.count),
            RoutingLayout.headsParameter: Double(heads.count),
            RoutingLayout.valueParameter: Double(value.rawValue),
            RoutingLayout.baselineParameter: Double(baseline.rawValue),
            RoutingLayout.epsilonParameter: epsilon,
            RoutingLayout.maxProductsParameter: Double(maxProducts),
            RoutingLayout.saltParameter: Double(salt),
            RoutingLayout.exploreSaltParameter: Double(exploreSalt),
        ]
        // Rules, checked against the schema as the plugin will check them.
        var offsets: [String: Int] = [:]
        var width = 0
        for name in allowedNames {
            guard let f = context.first(where: { $0.name == name }) else {
                throw DataError("a lender rule names '\(name)', which is not an applicant feature (\(context.map(\.name).joined(separator: ", ")))")
            }
            guard f.kind == .categorical else { throw DataError("allowed values apply to categorical features; '\(name)' is numeric") }
            offsets[name] = width
            p[RoutingLayout.allowPrefix + name] = Double(width)
            width += f.cardinality
        }
        for (r, name) in rangeNames.enumerated() {
            guard let f = context.first(where: { $0.name == name }) else {
                throw DataError("a lender rule names '\(name)', which is not an applicant feature (\(context.map(\.name).joined(separator: ", ")))")
            }
            guard f.kind == .numeric else { throw DataError("ranges apply to numeric features; '\(name)' is categorical") }
            p[RoutingLayout.rangePrefix + name] = Double(r)
        }
        p[RoutingLayout.allowedWidthParameter] = Double(width)
        var allowed = [UInt8](repeating: 1, count: lenders.count * width)
        var minimums = [Float](repeating: -RoutingLayout.noBound, count: lenders.count * rangeNames.count)
        var maximums = [Float](repeating: RoutingLayout.noBound, count: lenders.count * rangeNames.count)
        for (row, l) in lenders.enumerated() {
            for (name, codes) in l.allowed {
                let f = context.first { $0.name == name }!
                guard codes.allSatisfy({ $0 >= 0 && $0 < f.cardinality }) else {
                    throw DataError("lender \(l.id): allowed codes of '\(name)' must be in 0..<\(f.cardinality), got \(codes.sorted())")
                }
                for c in 0..<f.cardinality { allowed[row * width + offsets[name]! + c] = codes.contains(c) ? 1 : 0 }
            }
            for (name, range) in l.ranges {
                let r = rangeNames.firstIndex(of: name)!
                guard !range.min.isNaN, !range.max.isNaN, range.min <= range.max else {
                    throw DataError("lender \(l.id): the range on '\(name)' is [\(range.min), \(range.max)]")
                }
                // An infinite bound (no bound) is stored as the largest finite one.
                minimums[row * rangeNames.count + r] = max(range.min, -RoutingLayout.noBound)
                maximums[row * rangeNames.count + r] = min(range.max, RoutingLayout.noBound)
            }
        }
        let amounts = lenders.map { averageAmounts[$0.id] ?? 0 }
        guard amounts.allSatisfy({ $0.isFinite && $0 >= 0 }) else { throw DataError("average amounts must be finite and ≥ 0") }
        var tensors = [
            TensorData(name: RoutingLayout.lenderID, shape: [lenders.count], elements: lenders.map(\.id)),
            TensorData(name: RoutingLayout.lenderAmount, shape: [lenders.count], values: amounts),
            TensorData(name: RoutingLayout.lenderTakeRate, shape: [lenders.count], values: lenders.map(\.takeRate)),
            TensorData(name: RoutingLayout.lenderPriority, shape: [lenders.count], elements: lenders.map(\.priority)),
            TensorData(name: RoutingLayout.lenderMin, shape: [lenders.count, rangeNames.count], values: minimums),
            TensorData(name: RoutingLayout.lenderMax, shape: [lenders.count, rangeNames.count], values: maximums),
            TensorData(name: RoutingLayout.lenderAllowed, shape: [lenders.count, width], elements: allowed),
            TensorData(name: RoutingLayout.channelShare, shape: [shares.count], values: shares),
        ]
        // Heads.
        guard !heads.isEmpty, heads.count <= RoutingLayout.maxHeads else {
            throw DataError("a routing version needs 1 to \(RoutingLayout.maxHeads) heads; this one has \(heads.count)")
        }
        let fields = RoutingLayout.headFields(features, lenders: lenders.count)
        let dimension = FieldEncoding(fields: fields).dimension
        for (k, head) in heads.enumerated() {
            let prefix = RoutingLayout.headPrefix(k)
            p[prefix + RoutingLayout.roleParameter] = Double(head.role.rawValue)
            p[prefix + RoutingLayout.populationParameter] = Double(head.population.rawValue)
            switch head.model {
            case .linear(let fm, let norm, let scale, let offset):
                guard fm.linear.count == dimension, fm.factors.count == dimension * fm.factorCount, norm.count == 2 * fields.count else {
                    throw DataError("head \(k) was fitted for \(fm.linear.count) encoded inputs; this schema's rows with \(lenders.count) lenders encode to \(dimension) (\(fields.count) fields)")
                }
                p[prefix + RoutingLayout.typeParameter] = Double(RoutingLayout.HeadType.linear.rawValue)
                p[prefix + RoutingLayout.biasParameter] = Double(fm.bias)
                p[prefix + RoutingLayout.factorsParameter] = Double(fm.factorCount)
                if head.role == .amount {
                    p[prefix + RoutingLayout.outputScaleParameter] = Double(scale)
                    p[prefix + RoutingLayout.outputOffsetParameter] = Double(offset)
                }
                tensors.append(TensorData(name: prefix + RoutingLayout.norm, shape: [fields.count, 2], values: norm))
                tensors.append(TensorData(name: prefix + RoutingLayout.linear, shape: [dimension], values: fm.linear))
                tensors.append(TensorData(name: prefix + RoutingLayout.factors, shape: [dimension, fm.factorCount], values: fm.factors))
            case .trees(let forest):
                guard forest.featureCount == fields.count else {
                    throw DataError("head \(k) takes \(forest.featureCount) features; a routing head's row has \(fields.count): "
                                    + fields.map(\.name).joined(separator: ", "))
                }
                guard forest.transform == (head.role == .approve ? .logistic : .identity) else {
                    throw DataError(head.role == .approve ? "head \(k) gives p(approve): it must be a binary classifier"
                                                          : "head \(k) gives an amount: it must be a regression, not a classifier")
                }
                p[prefix + RoutingLayout.typeParameter] = Double(RoutingLayout.HeadType.trees.rawValue)
                let (trees, parameters) = forest.layout()
                for (name, value) in parameters { p[prefix + name] = value }
                tensors += trees.map { var t = $0; t.name = prefix + t.name; return t }
            }
        }
        var notes = notes
        for (k, head) in heads.enumerated() {
            if case .trees(let forest) = head.model { notes["head \(k)"] = forest.source }
        }
        let manifest = ModelManifest(kind: RoutingLayout.kind, schema: schema, parameters: p, golden: golden,
                                     goldenTolerance: 2e-5, training: notes)
        return (manifest, tensors)
    }

    /// The version as the server would load it (detached: in no store), to score with the serving code.
    public func model() throws -> RoutingModel {
        let (manifest, tensors) = try build(golden: [])
        let loaded = try LoadedVersion(detachedModel: "routing", kind: RoutingLayout.kind, manifest: manifest.encoded(), tensors: tensors)
        return try RoutingModel(version: loaded, manifest: manifest)
    }

    /// Golden cases for `requests`, scored by the serving code.
    public func goldenCases(_ requests: [(request: RoutingRequest, routingKey: UInt64, topK: Int)]) throws -> [GoldenCase] {
        let m = try model()
        return try requests.map { r in
            let q = r.request
            let out = try m.score(context: q.features, candidates: q.lenderFeatures, candidateCount: q.lenders.count, ids: q.lenders,
                                  routingKey: r.routingKey, topK: r.topK)
            return GoldenCase(context: q.features, candidates: q.lenderFeatures, candidateCount: q.lenders.count, scores: out.scores,
                              floatColumns: out.floatColumns, codeColumns: out.codeColumns, ids: q.lenders, routingKey: r.routingKey,
                              topK: r.topK, rows: out.rows)
        }
    }

    /// Publishes this version of `model` with `golden` in one write transaction; returns its number.
    @discardableResult
    public func publish(model: String, golden: [GoldenCase], catalog: Catalog, metrics: [String: Double] = [:],
                        activate: Bool = true) throws -> UInt64 {
        let (manifest, tensors) = try build(golden: golden)
        return try catalog.publish(model: model, kind: RoutingLayout.kind, manifest: manifest.encoded(), tensors: tensors,
                                   metrics: metrics, activate: activate)
    }
}
