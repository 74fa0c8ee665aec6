import ArbiterModels
import ArbiterStore

/// Kind `allocation`: leads matched to agents under capacity, solved exactly in the request (see
/// ``AllocationLayout`` for the request, the rules, the pair model and the answer).
///
/// Unlike the other kinds, a request allocates memory as it runs — its pairs, the flow network and the solver's
/// scratch, O(leads + agents + allowed pairs), bounded by `max_candidates` and `max_pairs` — which is why its
/// versions are scored off the event loops (`offload_candidates`).
// Unchecked: the pointers are read-only views into tensors `version` holds; nothing mutates after init.
public final class AllocationModel: ScoringModel, @unchecked Sendable {
    public let version: LoadedVersion
    public let manifest: ModelManifest

    let roleIndex: Int, slotsIndex: Int, minScoreIndex: Int
    /// Candidate indices of the model's fields: the lead side's, then the agent side's.
    let leadFields: [Int], agentFields: [Int]
    let encoding: FieldEncoding
    let norm: UnsafePointer<Float>
    let machine: FactorizationMachine
    let k: Int
    /// (lead feature, agent feature) candidate indices.
    let equalRules: [(lead: Int, agent: Int, cardinality: Int)]
    let memberRules: [(lead: Int, agent: Int)]
    let blockLead: UnsafeBufferPointer<UInt64>, blockAgent: UnsafeBufferPointer<UInt64>
    let scale: Double
    public let maxLeadSlots: Int
    let deadlineNanoseconds: UInt64
    let gradeIndex: Int?
    /// The most allowed pairs a request may derive (parameter `max_pairs`, default ``defaultMaxPairs``).
    public let maxPairs: Int
    public static let defaultMaxPairs = 4_000_000

    /// The factory the registry calls.
    public static let factory: ModelFactory = { version, manifest in
        try AllocationModel(version: version, manifest: manifest)
    }

    public init(version: LoadedVersion, manifest: ModelManifest) throws {
        let schema = manifest.schema
        let p = manifest.parameters
        func integer(_ name: String, default value: Double? = nil, in range: ClosedRange<Double>) throws -> Int {
            guard let x = p[name] ?? value else { throw ModelError.invalidParameters("'\(name)' is missing") }
            guard x == x.rounded(), range.contains(x) else {
                throw ModelError.invalidParameters("'\(name)' is \(x); it must be an integer in \(Int(range.lowerBound))...\(Int(range.upperBound))")
            }
            return Int(x)
        }
        func candidate(_ name: String) -> Int? { schema.candidate.firstIndex { $0.name == name } }
        guard let role = candidate(AllocationLayout.roleFeature), schema.candidate[role].kind == .categorical,
              schema.candidate[role].cardinality == 2, !schema.candidate[role].allowsMissing else {
            throw ModelError.invalidSchema("an allocation model needs the candidate feature '\(AllocationLayout.roleFeature)' (categorical, 2 codes: lead, agent; never missing)")
        }
        guard let slots = candidate(AllocationLayout.slotsFeature), schema.candidate[slots].kind == .numeric,
              !schema.candidate[slots].allowsMissing else {
            throw ModelError.invalidSchema("an allocation model needs the candidate feature '\(AllocationLayout.slotsFeature)' (numeric, never missing)")
        }
        guard let minScore = schema.context.firstIndex(where: { $0.name == AllocationLayout.minScoreFeature }),
              schema.context[minScore].kind == .numeric, !schema.context[minScore].allowsMissing else {
            throw ModelError.invalidSchema("an allocation model needs the context feature '\(AllocationLayout.minScoreFeature)' (numeric, never missing)")
        }
        maxLeadSlots = try integer(AllocationLayout.maxLeadSlotsParameter, default: 1, in: 1...Double(AllocationLayout.maxLeadSlotsLimit))
        guard schema.outputs == AllocationLayout.outputs(maxLeadSlots: maxLeadSlots) else {
            throw ModelError.invalidSchema("allocation outputs must be \(AllocationLayout.outputs(maxLeadSlots: maxLeadSlots).map(\.name)) for max_lead_slots \(maxLeadSlots)")
        }
        // Every parameter that names a feature must name one the schema has.
        let known: Set<String> = [AllocationLayout.factorsParameter, AllocationLayout.scaleParameter, AllocationLayout.maxLeadSlotsParameter,
                                  AllocationLayout.deadlineParameter, AllocationLayout.gradeFeatureParameter, AllocationLayout.blocklistParameter,
                                  AllocationLayout.maxCandidatesParameter, AllocationLayout.maxPairsParameter, AllocationLayout.offloadCandidatesParameter]
        var lead: [Int] = [], agent: [Int] = []
        for (j, f) in schema.candidate.enumerated() where j != role && j != slots {
            switch p[AllocationLayout.sidePrefix + f.name] {
            case 0: lead.append(j)
            case 1: agent.append(j)
            default:
                throw ModelError.invalidParameters("candidate feature '\(f.name)' has no side: set '\(AllocationLayout.sidePrefix)\(f.name)' to 0 (lead) or 1 (agent)")
            }
        }
        var equal: [(lead: Int, agent: Int, cardinality: Int)] = [], member: [(lead: Int, agent: Int)] = []
        for (name, value) in p.sorted(by: { $0.key < $1.key }) {
            let isEqual = name.hasPrefix(AllocationLayout.equalPrefix), isMember = name.hasPrefix(AllocationLayout.memberPrefix)
            if name.hasPrefix(AllocationLayout.sidePrefix) {
                let feature = String(name.dropFirst(AllocationLayout.sidePrefix.count))
                guard let j = candidate(feature), j != role, j != slots else {
                    throw ModelError.invalidParameters("'\(name)' names '\(feature)', which is not a candidate feature the schema has (or is role or slots)")
                }
                continue
            }
            guard isEqual || isMember else {
                guard known.contains(name) else { throw ModelError.invalidParameters("unknown parameter '\(name)'") }
                continue
            }
            let feature = String(name.dropFirst(isEqual ? AllocationLayout.equalPrefix.count : AllocationLayout.memberPrefix.count))
            guard let l = candidate(feature), schema.candidate[l].kind == .categorical, l != role else {
                throw ModelError.invalidParameters("rule '\(name)' names '\(feature)', which is not a categorical candidate feature the schema has")
            }
            guard value == value.rounded(), value >= 0, Int(value) < schema.candidate.count, Int(value) != role, Int(value) != slots else {
                throw ModelError.invalidParameters("rule '\(name)' = \(value) is not the index of an agent feature (0..<\(schema.candidate.count), not role or slots)")
            }
            let a = Int(value), af = schema.candidate[a]
            if isEqual {
                guard af.kind == .categorical, af.cardinality == schema.candidate[l].cardinality else {
                    throw ModelError.invalidParameters("rule '\(name)' compares '\(feature)' with '\(af.name)', which is not categorical with \(schema.candidate[l].cardinality) codes")
                }
                equal.append((l, a, af.cardinality))
            } else {
                guard af.kind == .numeric, schema.candidate[l].cardinality <= AllocationLayout.memberCodeLimit else {
                    throw ModelError.invalidParameters("rule '\(name)' needs a numeric agent feature holding a bit set ('\(af.name)' is \(af.kind.rawValue)) and at most \(AllocationLayout.memberCodeLimit) codes of '\(feature)'")
                }
                member.append((l, a))
            }
        }
        if let g = p[AllocationLayout.gradeFeatureParameter] {
            guard g == g.rounded(), g >= 0, Int(g) < schema.candidate.count, lead.contains(Int(g)), schema.candidate[Int(g)].kind == .numeric else {
                throw ModelError.invalidParameters("'\(AllocationLayout.gradeFeatureParameter)' = \(g) is not the index of a numeric lead feature")
            }
            gradeIndex = Int(g)
        } else {
            gradeIndex = nil
        }
        let scale = p[AllocationLayout.scaleParameter] ?? AllocationLayout.defaultScale
        guard scale.isFinite, scale >= 1, scale <= Double(AllocationProblem.maxValue) else {
            throw ModelError.invalidParameters("'\(AllocationLayout.scaleParameter)' is \(scale); it must be in 1...\(AllocationProblem.maxValue)")
        }
        let deadline = p[AllocationLayout.deadlineParameter] ?? AllocationLayout.defaultDeadlineMilliseconds
        guard deadline.isFinite, deadline > 0, deadline <= 600_000 else {
            throw ModelError.invalidParameters("'\(AllocationLayout.deadlineParameter)' is \(deadline); it must be in (0, 600000] ms")
        }
        k = try integer(AllocationLayout.factorsParameter, in: 0...256)
        maxPairs = try integer(AllocationLayout.maxPairsParameter, default: Double(Self.defaultMaxPairs), in: 1...2_000_000_000)
        _ = try integer(AllocationLayout.maxCandidatesParameter, default: 1, in: 1...Double(1 << 24))
        _ = try integer(AllocationLayout.offloadCandidatesParameter, default: 1, in: 1...Double(1 << 24))
        let blocked = try integer(AllocationLayout.blocklistParameter, default: 0, in: 0...1e9)

        let fields = (lead + agent).map { schema.candidate[$0] }
        encoding = FieldEncoding(fields: fields)
        let d = encoding.dimension
        let b = try version.tensor(AllocationLayout.bias, shape: [1])
        let w = try version.tensor(AllocationLayout.linear, shape: [d])
        // With k = 0 the machine never reads its factors: the linear weights stand in.
        let v = k > 0 ? try version.tensor(AllocationLayout.factors, shape: [d, k]).pointer : w.pointer
        norm = try version.tensor(AllocationLayout.norm, shape: [fields.count, 2]).pointer
        machine = FactorizationMachine(bias: b[0], linear: w.pointer, factors: v, factorCount: k)
        if blocked > 0 {
            blockLead = try version.tensor(AllocationLayout.blocklistLead, shape: [blocked], as: UInt64.self).buffer
            blockAgent = try version.tensor(AllocationLayout.blocklistAgent, shape: [blocked], as: UInt64.self).buffer
            for x in 1..<blocked where (blockLead[x - 1], blockAgent[x - 1]) >= (blockLead[x], blockAgent[x]) {
                throw ModelError.invalidParameters("the blocklist must be sorted by lead id, then agent id, without repeats (entry \(x))")
            }
        } else {
            blockLead = UnsafeBufferPointer(start: nil, count: 0)
            blockAgent = UnsafeBufferPointer(start: nil, count: 0)
        }
        roleIndex = role
        slotsIndex = slots
        minScoreIndex = minScore
        leadFields = lead
        agentFields = agent
        equalRules = equal
        memberRules = member
        self.scale = scale
        deadlineNanoseconds = UInt64(deadline * 1e6)
        self.version = version
        self.manifest = manifest
    }

    public func score(_ batch: ScoreBatch, into out: ScoreOutput) throws(ScoringError) -> RowOrder {
        try allocate(batch, into: out, maxPairs: maxPairs)
        return .requestOrder
    }

    /// What a request asks, derived: its leads' and agents' rows, the allowed pairs with their worth (the
    /// problem the solver takes) and probability, and the order a greedy finish takes leads in (by
    /// `grade_feature`, when set). Used by ``allocate(_:into:maxPairs:deadline:clock:)`` and by tools that
    /// compare allocations on the same scores.
    public struct Derived: Sendable {
        public let problem: AllocationProblem
        /// Request rows of the problem's leads and agents, in the problem's order.
        public let leadRows: [Int32], agentRows: [Int32]
        /// Per pair (as the problem holds them): the pair model's probability.
        public let pairProbability: [Float]
        public let greedyOrder: [Int32]?
    }

    /// Splits `batch` by role, checks slots, ids and bit sets, and derives and scores the allowed pairs.
    public func derive(_ batch: ScoreBatch, maxPairs: Int) throws(ScoringError) -> Derived {
        let n = batch.candidateCount
        let width = manifest.schema.candidate.count
        let rows = batch.candidates.baseAddress
        @inline(__always) func value(_ r: Int, _ j: Int) -> Float { rows.unsafelyUnwrapped[r * width + j] }

        // Rows by role, with their slots.
        var leads: [Int32] = [], agents: [Int32] = []
        var leadSlots: [Int32] = [], capacity: [Int32] = []
        for r in 0..<n {
            let isLead = value(r, roleIndex) == AllocationLayout.leadRole
            let s = value(r, slotsIndex)
            guard s >= 0, s == s.rounded(), s <= Float(isLead ? maxLeadSlots : 1 << 30) else {
                throw ScoringError(.invalidRequest, "row \(r) (\(isLead ? "lead" : "agent")): slots \(s); "
                    + (isLead ? "a lead's slots must be an integer in 0...\(maxLeadSlots)" : "an agent's remaining capacity must be an integer 0 or more"))
            }
            if isLead {
                leads.append(Int32(r))
                leadSlots.append(Int32(s))
            } else {
                agents.append(Int32(r))
                capacity.append(Int32(s))
            }
        }
        // Ids: each names one row.
        let hasIds = batch.ids.count == n
        @inline(__always) func id(_ r: Int) -> UInt64 { hasIds ? batch.ids[r] : UInt64(r) }
        if hasIds, n > 1 {
            // Ids with their rows in the low bits would not fit; sort (id, row) pairs.
            var byId: [(id: UInt64, row: Int32)] = (0..<n).map { (batch.ids[$0], Int32($0)) }
            byId.sort { $0.id != $1.id ? $0.id < $1.id : $0.row < $1.row }
            for x in 1..<n where byId[x - 1].id == byId[x].id {
                throw ScoringError(.invalidRequest, "candidate id \(byId[x].id) is given twice (rows \(byId[x - 1].row) and \(byId[x].row)); each lead and agent needs its own id")
            }
        }
        // An agent's bit sets: an integer below 2^24, or missing (it covers nothing).
        for ar in agents {
            for rule in memberRules {
                let set = value(Int(ar), rule.agent)
                guard set.isNaN || (set >= 0 && set < 16_777_216 && set == set.rounded()) else {
                    throw ScoringError(.invalidRequest, "row \(ar) (agent): '\(manifest.schema.candidate[rule.agent].name)' is \(set); a bit set must be an integer in 0..<2^24")
                }
            }
        }
        let minScore = batch.context[minScoreIndex]

        // Each row's part of the machine: its side's linear and self-interaction terms, and its factor sums.
        var part = [Float](repeating: 0, count: n)
        var sums = [Float](repeating: 0, count: n * max(k, 1))
        sums.withUnsafeMutableBufferPointer { sums in
            for r in 0..<n {
                let fields = value(r, roleIndex) == AllocationLayout.leadRole ? leadFields : agentFields
                let offset = value(r, roleIndex) == AllocationLayout.leadRole ? 0 : leadFields.count
                var acc = FactorizationMachine.Accumulator(sums: sums.baseAddress! + r * max(k, 1), factorCount: k)
                for (c, j) in fields.enumerated() {
                    let x = value(r, j)
                    if x.isNaN { continue }
                    let f = offset + c
                    let (i, v) = encoding.encode(field: f, x, mean: norm[2 * f], invStd: norm[2 * f + 1])
                    machine.add(i, v, to: &acc)
                }
                var selfPairs: Float = 0
                for f in 0..<k { selfPairs += acc.sums[f] * acc.sums[f] }
                part[r] = acc.linear + 0.5 * (selfPairs - acc.squares)
            }
        }

        // Agents grouped by the first equality rule's code (all in one group without one), in row order.
        let groupCount = equalRules.first?.cardinality ?? 1
        var groupStart = [Int32](repeating: 0, count: groupCount + 1)
        // A missing code (where the schema allows one) is in no group: that agent or lead is never paired.
        @inline(__always) func group(_ r: Int, _ j: Int) -> Int? {
            if equalRules.isEmpty { return 0 }
            let x = value(r, j)
            return x.isNaN ? nil : Int(x)
        }
        for a in agents.indices { if let g = group(Int(agents[a]), equalRules.first?.agent ?? 0) { groupStart[g + 1] += 1 } }
        for g in 0..<groupCount { groupStart[g + 1] += groupStart[g] }
        var grouped = [Int32](repeating: 0, count: agents.count)
        var fill = groupStart
        for a in agents.indices {
            guard let g = group(Int(agents[a]), equalRules.first?.agent ?? 0) else { continue }
            grouped[Int(fill[g])] = Int32(a)
            fill[g] += 1
        }
        // Blocklisted agents of the lead at hand, marked with its position + 1.
        var blockedFor = [Int32](repeating: 0, count: agents.count)
        var agentsById: [(id: UInt64, agent: Int32)] = []
        if !blockLead.isEmpty {
            agentsById = agents.indices.map { (id(Int(agents[$0])), Int32($0)) }.sorted { $0.id < $1.id }
        }

        // The allowed pairs, lead by lead, agents in increasing position.
        var pairStart: [Int32] = [0], pairAgent: [Int32] = [], pairValue: [Int64] = [], pairProbability: [Float] = []
        pairStart.reserveCapacity(leads.count + 1)
        let bias = machine.bias
        try sums.withUnsafeBufferPointer { (sums) throws(ScoringError) in
            for (i, lr) in leads.enumerated() {
                let r = Int(lr)
                if !blockLead.isEmpty { markBlocked(lead: id(r), position: Int32(i + 1), agentsById: agentsById, into: &blockedFor) }
                guard let g = group(r, equalRules.first?.lead ?? 0) else {
                    pairStart.append(Int32(pairAgent.count))
                    continue
                }
                let leadSums = sums.baseAddress! + r * max(k, 1)
                let leadPart = bias + part[r]
                candidates: for x in Int(groupStart[g]) ..< Int(groupStart[g + 1]) {
                    let a = Int(grouped[x]), ar = Int(agents[a])
                    for rule in equalRules.dropFirst() where value(r, rule.lead) != value(ar, rule.agent) { continue candidates }
                    for rule in memberRules {
                        let code = value(r, rule.lead), set = value(ar, rule.agent)
                        guard !code.isNaN, !set.isNaN, (UInt32(set) >> UInt32(code)) & 1 == 1 else { continue candidates }
                    }
                    if blockedFor[a] == Int32(i + 1) { continue }
                    var logit = leadPart + part[ar]
                    let agentSums = sums.baseAddress! + ar * max(k, 1)
                    for f in 0..<k { logit += leadSums[f] * agentSums[f] }
                    let probability = Kernels.sigmoid(logit)
                    guard probability >= minScore else { continue }
                    guard pairAgent.count < maxPairs else {
                        throw ScoringError(.invalidRequest, "the rules allow more than \(maxPairs) lead–agent pairs (max_pairs) in this request; split it or raise min_score")
                    }
                    pairAgent.append(Int32(a))
                    pairValue.append(min(AllocationProblem.maxValue, max(1, Int64((Double(probability) * scale).rounded()))))
                    pairProbability.append(probability)
                }
                pairStart.append(Int32(pairAgent.count))
            }
        }
        let problem: AllocationProblem
        do {
            problem = try AllocationProblem(leadSlots: leadSlots, agentCapacity: capacity, pairStart: pairStart,
                                            pairAgent: pairAgent, pairValue: pairValue)
        } catch {
            throw ScoringError(.internalError, "\(error)")
        }
        var order: [Int32]? = nil
        if let gi = gradeIndex {
            let grade = leads.map { value(Int($0), gi).isNaN ? -Float.infinity : value(Int($0), gi) }
            order = (0..<Int32(leads.count)).sorted { grade[Int($0)] != grade[Int($1)] ? grade[Int($0)] > grade[Int($1)] : $0 < $1 }
        }
        return Derived(problem: problem, leadRows: leads, agentRows: agents, pairProbability: pairProbability, greedyOrder: order)
    }

    /// The whole request: rows split by role, pairs derived and scored, solved, answered. `maxPairs` bounds
    /// the pairs and `deadline` (ns from the start; nil: the version's `deadline_ms`, `.max`: none) the exact
    /// solve — a batch tool may allow more than a served request.
    public func allocate(_ batch: ScoreBatch, into out: ScoreOutput, maxPairs: Int, deadline: UInt64? = nil,
                         clock: () -> UInt64 = AllocationSolver.monotonicNanoseconds) throws(ScoringError) {
        let started = clock()
        let n = batch.candidateCount
        let derived = try derive(batch, maxPairs: maxPairs)
        let problem = derived.problem, leads = derived.leadRows, agents = derived.agentRows
        let pairProbability = derived.pairProbability, pairAgent = problem.pairAgent
        let budget = deadline ?? deadlineNanoseconds
        let solution = AllocationSolver.solve(problem, greedyOrder: derived.greedyOrder, deadline: budget == .max ? nil : started &+ budget,
                                              clock: clock, compareWithGreedy: true)

        // The answer.
        let objective = Float(Double(solution.objective) / scale)
        let greedyObjective = Float(Double(solution.greedyObjective ?? 0) / scale)
        let M = maxLeadSlots
        let loadColumn = out.floatColumn(2 * M), priceColumn = out.floatColumn(2 * M + 1)
        let objectiveColumn = out.floatColumn(2 * M + 2), greedyColumn = out.floatColumn(2 * M + 3)
        let kind = out.codeColumn(0)
        for r in 0..<n {
            for s in 0..<M {
                out.floatColumn(2 * s)[r] = -1
                out.floatColumn(2 * s + 1)[r] = 0
            }
            objectiveColumn[r] = objective
            greedyColumn[r] = greedyObjective
        }
        var taken: [(probability: Float, agent: Int32)] = []
        for (i, lr) in leads.enumerated() {
            let r = Int(lr)
            taken.removeAll(keepingCapacity: true)
            for e in problem.pairs(of: i) where solution.chosen[e] { taken.append((pairProbability[e], agents[Int(pairAgent[e])])) }
            taken.sort { $0.probability != $1.probability ? $0.probability > $1.probability : $0.agent < $1.agent }
            var total: Float = 0
            for (s, t) in taken.enumerated() {
                out.floatColumn(2 * s)[r] = Float(t.agent)
                out.floatColumn(2 * s + 1)[r] = t.probability
                total += t.probability
            }
            out.scores[r] = total
            loadColumn[r] = Float(taken.count)
            priceColumn[r] = 0
            let rowKind: AllocationLayout.RowKind = problem.pairs(of: i).isEmpty ? .noAllowedAgent
                : (solution.placedGreedily.isEmpty || !solution.placedGreedily[i] ? .exact : .greedy)
            kind[r] = rowKind.rawValue
        }
        for (a, ar) in agents.enumerated() {
            let r = Int(ar)
            let price = Float(Double(solution.shadowPrice[a]) / scale)
            out.scores[r] = price
            loadColumn[r] = Float(solution.agentLoad[a])
            priceColumn[r] = price
            kind[r] = AllocationLayout.RowKind.agent.rawValue
        }
    }

    /// ``allocate(_:into:maxPairs:deadline:clock:)`` on plain arrays (tools and tests): the scores and the
    /// float and code columns, column-major, one row per candidate in request order.
    public func allocate(context: [Float], rows: [Float], count n: Int, ids: [UInt64], maxPairs: Int, deadline: UInt64? = nil,
                         clock: () -> UInt64 = AllocationSolver.monotonicNanoseconds) throws(ScoringError)
        -> (scores: [Float], floatColumns: [Float], codeColumns: [UInt8]) {
        let schema = manifest.schema
        guard context.count == schema.context.count, rows.count == n * schema.candidate.count, ids.isEmpty || ids.count == n else {
            throw ScoringError(.invalidRequest, "\(context.count) context values, \(rows.count) row values and \(ids.count) ids for \(n) rows of \(schema.candidate.count) features")
        }
        var scores = [Float](repeating: 0, count: max(n, 1))
        var floats = [Float](repeating: 0, count: max(schema.floatColumnCount * n, 1))
        var codes = [UInt8](repeating: 0, count: max(schema.codeColumnCount * n, 1))
        let result = context.withUnsafeBufferPointer { c in
            rows.withUnsafeBufferPointer { r in
                ids.withUnsafeBufferPointer { i in
                    scores.withUnsafeMutableBufferPointer { sp in
                        floats.withUnsafeMutableBufferPointer { fp in
                            codes.withUnsafeMutableBufferPointer { cp in
                                let out = ScoreOutput(scores: sp.baseAddress!, floatColumns: fp.baseAddress!, codeColumns: cp.baseAddress!, candidateCount: n)
                                return Result { () throws(ScoringError) in
                                    try allocate(ScoreBatch(context: c, candidates: r, candidateCount: n, ids: i), into: out,
                                                 maxPairs: maxPairs, deadline: deadline, clock: clock)
                                }
                            }
                        }
                    }
                }
            }
        }
        try result.get()
        return (Array(scores.prefix(n)), Array(floats.prefix(schema.floatColumnCount * n)), Array(codes.prefix(schema.codeColumnCount * n)))
    }

    /// Marks with `position` the agents the blocklist keeps from the lead with id `lead`.
    private func markBlocked(lead: UInt64, position: Int32, agentsById: [(id: UInt64, agent: Int32)], into marks: inout [Int32]) {
        var lo = 0, hi = blockLead.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if blockLead[mid] < lead { lo = mid + 1 } else { hi = mid }
        }
        while lo < blockLead.count, blockLead[lo] == lead {
            let target = blockAgent[lo]
            var a = 0, b = agentsById.count
            while a < b {
                let mid = (a + b) / 2
                if agentsById[mid].id < target { a = mid + 1 } else { b = mid }
            }
            if a < agentsById.count, agentsById[a].id == target { marks[Int(agentsById[a].agent)] = position }
            lo += 1
        }
    }
}
