import ArbiterModels

/// The contract between `arbiter-train` and the `allocation` plugin: the request's shape, parameters, tensors
/// and output columns.
///
/// **A request** is one allocation: the candidates are the leads and the agents, each one row of the same
/// candidate features, told apart by `role` (categorical: 0 lead, 1 agent) and carrying `slots` (numeric: how
/// many agents a lead may go to, at most `max_lead_slots`; an agent's remaining capacity), both integers ≥ 0.
/// The context holds `min_score`: a pair whose probability is below it is not allocated. Every other
/// candidate feature belongs to one side (parameter `side.<feature>` = 0 lead, 1 agent); a row's features of
/// the other side are ignored (send NaN where the schema allows it). Candidate ids name leads and agents for
/// the blocklist and must not repeat.
///
/// **Allowed pairs** are derived in the server, so a request is O(leads + agents) rows: a pair (lead, agent) is
/// allowed when every rule holds and it is not blocklisted —
/// - `equal.<lead feature>` = the candidate index of an agent feature: both categorical with the same codes,
///   and the lead's code equals the agent's (same city);
/// - `member.<lead feature>` = the candidate index of a numeric agent feature holding a bit set: the lead's
///   categorical code `c` (below 24) must have bit `c` set in it (the agent covers the job category);
/// - the blocklist: `blocklist` = B pairs, tensors `blocklist.lead` and `blocklist.agent` (u64 `[B]`, sorted by
///   lead id, then agent id) of candidate ids that must never be paired.
///
/// **The pair model** is a factorization machine over the pair's fields — the lead-side candidate features,
/// then the agent-side ones, in candidate order — as the lead-grading kind encodes them: `bias` `[1]`,
/// `linear` `[d]`, `factors` `[d, k]` (`factors` = k, 0 for a logistic model without it), `norm` `[fields, 2]`.
/// Its output through the logistic function is the pair's probability (of a hire). A factorization machine
/// splits into a lead part, an agent part and the dot product of their factor sums, so a request costs one
/// pass per row and k multiply-adds per allowed pair.
///
/// **The solve**: allowed pairs with probability ≥ `min_score` are worth `max(1, round(p × scale))` (`scale`,
/// default 2^20, at most 2^32); the allocation of greatest total worth is found exactly
/// (``AllocationSolver``) within `deadline_ms` (default 1,300), after which the leads not yet placed are
/// placed greedily, best first (by the lead feature `grade_feature` names, when set, else by their best pair),
/// and their rows say so. The greedy pass on the same worths is computed beside it.
///
/// **The answer**, one row per candidate in request order: for a lead, `agent_1 … agent_M` (M =
/// `max_lead_slots`: the candidate index of each agent it goes to, best pair first, −1 for none) with `p_1 …
/// p_M` (the pairs' probabilities) and its score the sum of those; for an agent, `load` (leads given; for a
/// lead, agents given) and `shadow_price` (what one more unit of its capacity would add to the expected hires:
/// the dual value, 0 when it has room to spare), which is also its score. Every row carries `objective` (the
/// allocation's expected hires, Σ of its pairs' quantised worth ÷ scale) and `greedy_objective` (the greedy
/// pass's). The code column `allocation`: `exact` (a lead placed by the exact solve, possibly nowhere),
/// `greedy` (placed after the deadline), `no_allowed_agent` (no pair of the lead is allowed), `agent`.
///
/// A request's size is bounded per model: `max_candidates` (the server's limit applies when unset), and the
/// pairs its rules allow by `max_pairs` (4,000,000 unless set). `offload_candidates` (the trainer sets 1) has
/// the server score every request of the version off the event loops, however few its rows: a 500 × 200
/// allocation costs milliseconds, which a loop's other connections should not wait for.
public enum AllocationLayout {
    public static let kind = "allocation"

    public static let roleFeature = "role"
    public static let slotsFeature = "slots"
    public static let minScoreFeature = "min_score"
    public static let leadRole: Float = 0
    public static let agentRole: Float = 1

    public static let factorsParameter = "factors"
    public static let scaleParameter = "scale"
    public static let defaultScale: Double = 1_048_576
    public static let maxLeadSlotsParameter = "max_lead_slots"
    public static let maxLeadSlotsLimit = 8
    public static let deadlineParameter = "deadline_ms"
    /// So that a 20,000 × 2,000 request is answered within 1.5 s even when it must finish greedily.
    public static let defaultDeadlineMilliseconds: Double = 1_300
    public static let gradeFeatureParameter = "grade_feature"
    public static let blocklistParameter = "blocklist"
    public static let maxCandidatesParameter = "max_candidates"
    public static let offloadCandidatesParameter = "offload_candidates"
    public static let maxPairsParameter = "max_pairs"
    public static let sidePrefix = "side."
    public static let equalPrefix = "equal."
    public static let memberPrefix = "member."
    /// A bit set held in a float32 is exact up to 2^24.
    public static let memberCodeLimit = 24

    public static let bias = "bias"
    public static let linear = "linear"
    public static let factors = "factors"
    public static let norm = "norm"
    public static let blocklistLead = "blocklist.lead"
    public static let blocklistAgent = "blocklist.agent"

    public static let allocationLabels = ["exact", "greedy", "no_allowed_agent", "agent"]
    public enum RowKind: UInt8 { case exact = 0, greedy, noAllowedAgent, agent }

    /// The candidate indices of each side's features as `side.<feature>` parameters assign them (features
    /// without a side, `role` and `slots` left out): the pair model's fields are the lead's, then the agent's.
    public static func sides(_ schema: FeatureSchema, _ parameters: [String: Double]) -> (lead: [Int], agent: [Int]) {
        var lead: [Int] = [], agent: [Int] = []
        for (j, f) in schema.candidate.enumerated() where f.name != roleFeature && f.name != slotsFeature {
            switch parameters[sidePrefix + f.name] {
            case 0: lead.append(j)
            case 1: agent.append(j)
            default: break
            }
        }
        return (lead, agent)
    }

    /// The output columns for leads of up to `maxLeadSlots` agents.
    public static func outputs(maxLeadSlots: Int) -> [OutputColumn] {
        var columns: [OutputColumn] = []
        for s in 1...max(1, maxLeadSlots) {
            columns.append(OutputColumn(name: "agent_\(s)", kind: .float32))
            columns.append(OutputColumn(name: "p_\(s)", kind: .float32))
        }
        columns += [OutputColumn(name: "load", kind: .float32), OutputColumn(name: "shadow_price", kind: .float32),
                    OutputColumn(name: "objective", kind: .float32), OutputColumn(name: "greedy_objective", kind: .float32),
                    OutputColumn(name: "allocation", kind: .code, labels: allocationLabels)]
        return columns
    }

    /// The schema of the data `arbiter-train gen-data --kind allocation` writes: leads of a job category in a
    /// city, with their grade (p_hire from lead grading); agents in a city covering a set of categories, the one
    /// they are best at (their specialty), their skill and experience.
    public static func defaultSchema(cities: Int = 12, categories: Int = 8, maxLeadSlots: Int = 1) -> FeatureSchema {
        FeatureSchema(
            context: [.numeric(minScoreFeature)],
            candidate: [
                .categorical(roleFeature, 2),
                .numeric(slotsFeature),
                .categorical("city", cities),
                .categorical("category", categories, allowsMissing: true),
                .numeric("grade", allowsMissing: true),
                .numeric("experience_years", allowsMissing: true),
                .numeric("agent_categories", allowsMissing: true),
                .categorical("agent_specialty", categories, allowsMissing: true),
                .numeric("agent_skill", allowsMissing: true),
                .numeric("agent_tenure_years", allowsMissing: true),
            ],
            outputs: outputs(maxLeadSlots: maxLeadSlots))
    }

    /// The default schema's sides and rules, as manifest parameters: leads have category, grade and
    /// experience; agents their categories, skill and tenure; a pair must share the city (one `city` feature
    /// serves both sides: a rule may name the same feature twice) and the agent must cover the lead's category.
    public static func defaultRules(_ schema: FeatureSchema) -> [String: Double] {
        func index(_ name: String) -> Double { Double(schema.candidate.firstIndex { $0.name == name }!) }
        return [
            sidePrefix + "city": 0, sidePrefix + "category": 0, sidePrefix + "grade": 0, sidePrefix + "experience_years": 0,
            sidePrefix + "agent_categories": 1, sidePrefix + "agent_specialty": 1, sidePrefix + "agent_skill": 1, sidePrefix + "agent_tenure_years": 1,
            equalPrefix + "city": index("city"),
            memberPrefix + "category": index("agent_categories"),
            gradeFeatureParameter: index("grade"),
        ]
    }
}
