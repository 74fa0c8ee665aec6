import Allocation
import ArbiterModels
import ArbiterStore

/// One allocation request as plain arrays: the context (`min_score`), the leads' and agents' rows
/// (row-major, the schema's candidate features) and their ids.
public struct AllocationRequest: Sendable {
    public var context: [Float]
    public var rows: [Float]
    public var count: Int
    public var ids: [UInt64]

    public init(context: [Float], rows: [Float], count: Int, ids: [UInt64]) {
        self.context = context
        self.rows = rows
        self.count = count
        self.ids = ids
    }
}

/// An `allocation` version as the trainer builds it (see ``AllocationLayout``): the schema, the sides and
/// rules, the pair model, the blocklist and the solve's parameters. Uses the serving code (``model()``) to
/// record golden cases.
public struct AllocationVersion: Sendable {
    public var schema: FeatureSchema
    /// `side.`, `equal.`, `member.` and `grade_feature` parameters.
    public var rules: [String: Double]
    /// The pair model over the pair fields (``AllocationLayout/sides(_:_:)``), with their normalisation.
    public var machine: FMParameters
    public var norm: [Float]
    /// Candidate-id pairs never to allocate.
    public var blocklist: [(lead: UInt64, agent: UInt64)] = []
    public var scale: Double = AllocationLayout.defaultScale
    public var maxLeadSlots = 1
    public var deadlineMilliseconds: Double = AllocationLayout.defaultDeadlineMilliseconds
    public var maxCandidates = 25_000
    public var maxPairs = AllocationModel.defaultMaxPairs
    public var notes: [String: String] = [:]

    public init(schema: FeatureSchema, rules: [String: Double], machine: FMParameters, norm: [Float]) {
        self.schema = schema
        self.rules = rules
        self.machine = machine
        self.norm = norm
    }

    /// The pair model's fields, lead side then agent side.
    public var pairFields: [Feature] {
        let (lead, agent) = AllocationLayout.sides(schema, rules)
        return (lead + agent).map { schema.candidate[$0] }
    }

    /// The manifest (with `golden`) and tensors to publish.
    public func build(golden: [GoldenCase]) throws -> (manifest: ModelManifest, tensors: [TensorData]) {
        let fields = pairFields
        let d = FieldEncoding(fields: fields).dimension
        guard machine.linear.count == d, machine.factors.count == d * machine.factorCount, norm.count == 2 * fields.count else {
            throw ModelError.invalidParameters("the pair model has \(machine.linear.count) weights for \(d) inputs, or norm \(norm.count) values for \(fields.count) fields")
        }
        var p = rules
        p[AllocationLayout.factorsParameter] = Double(machine.factorCount)
        p[AllocationLayout.scaleParameter] = scale
        p[AllocationLayout.maxLeadSlotsParameter] = Double(maxLeadSlots)
        p[AllocationLayout.deadlineParameter] = deadlineMilliseconds
        p[AllocationLayout.maxCandidatesParameter] = Double(maxCandidates)
        p[AllocationLayout.maxPairsParameter] = Double(maxPairs)
        p[AllocationLayout.offloadCandidatesParameter] = 1
        p[AllocationLayout.blocklistParameter] = Double(blocklist.count)
        var tensors = [
            TensorData(name: AllocationLayout.bias, shape: [1], values: [machine.bias]),
            TensorData(name: AllocationLayout.linear, shape: [d], values: machine.linear),
            TensorData(name: AllocationLayout.norm, shape: [fields.count, 2], values: norm),
        ]
        if machine.factorCount > 0 {
            tensors.append(TensorData(name: AllocationLayout.factors, shape: [d, machine.factorCount], values: machine.factors))
        }
        if !blocklist.isEmpty {
            let sorted = blocklist.sorted { ($0.lead, $0.agent) < ($1.lead, $1.agent) }
            var unique: [(lead: UInt64, agent: UInt64)] = []
            for b in sorted where unique.last.map({ $0 != b }) ?? true { unique.append(b) }
            p[AllocationLayout.blocklistParameter] = Double(unique.count)
            tensors.append(TensorData(name: AllocationLayout.blocklistLead, shape: [unique.count], elements: unique.map(\.lead)))
            tensors.append(TensorData(name: AllocationLayout.blocklistAgent, shape: [unique.count], elements: unique.map(\.agent)))
        }
        var s = schema
        s.outputs = AllocationLayout.outputs(maxLeadSlots: maxLeadSlots)
        let manifest = ModelManifest(kind: AllocationLayout.kind, schema: s, parameters: p, golden: golden,
                                     goldenTolerance: 1e-5, training: notes)
        return (manifest, tensors)
    }

    /// The version as the server would load it (detached: in no store), to score with the serving code.
    public func model() throws -> AllocationModel {
        let (manifest, tensors) = try build(golden: [])
        let loaded = try LoadedVersion(detachedModel: "allocation", kind: AllocationLayout.kind, manifest: manifest.encoded(), tensors: tensors)
        return try AllocationModel(version: loaded, manifest: manifest)
    }

    /// Golden cases for `requests`, answered by the serving code.
    public func goldenCases(_ requests: [AllocationRequest]) throws -> [GoldenCase] {
        let m = try model()
        return try requests.map { q in
            let out = try m.score(context: q.context, candidates: q.rows, candidateCount: q.count, ids: q.ids)
            return GoldenCase(context: q.context, candidates: q.rows, candidateCount: q.count, scores: out.scores,
                              floatColumns: out.floatColumns, codeColumns: out.codeColumns, ids: q.ids, rows: out.rows)
        }
    }

    /// Publishes this version of `model` with `golden` in one write transaction; returns its number.
    @discardableResult
    public func publish(model: String, golden: [GoldenCase], catalog: Catalog, metrics: [String: Double] = [:],
                        activate: Bool = true) throws -> UInt64 {
        let (manifest, tensors) = try build(golden: golden)
        return try catalog.publish(model: model, kind: AllocationLayout.kind, manifest: manifest.encoded(), tensors: tensors,
                                   metrics: metrics, activate: activate)
    }
}
