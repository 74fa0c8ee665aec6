import ArbiterModels

/// The contract between `arbiter-train` and the `routing` plugin: parameter and tensor names, and the rules
/// that every version follows.
///
/// A request is one applicant (the context features) and the lenders (or products) it could go to (the
/// candidates, by lender id, with per-request lender features such as today's remaining capacity).
///
/// **The lender table** (`lenders` = L rows, ids sorted ascending):
/// - `lender.id` u64 `[L]`; `lender.amount` f32 `[L]` (average funded amount, ≥ 0); `lender.take_rate` f32 `[L]`
///   (in 0...1); `lender.priority` i32 `[L]` (the baseline's fixed order: lower first).
/// - Range rules on numeric applicant features: parameter `range.<feature>` = its column `r` in `lender.min`
///   and `lender.max` (f32 `[L, ranges]`; ∓`noBound`, the largest finite f32, for no bound — stored tensors are
///   finite). The applicant passes when min ≤ x ≤ max; a missing value (NaN) passes only a lender with no bound.
/// - Allowed values of categorical applicant features: parameter `allow.<feature>` = its offset `o` in
///   `lender.allowed` (u8 `[L, allowed_width]`, one byte per code: 1 allowed). Code `c` passes when
///   `allowed[o + c]` is 1; a missing value passes only a lender that allows every code.
/// Rules name features by name; a version whose rules name a feature the schema lacks (or one of the wrong
/// kind or cardinality) is refused at load.
///
/// **Eligibility and reason codes.** A candidate's `reason` is the first of: `unknown_lender` (its id is not
/// in the table), each allowed-values rule in offset order (labelled with the feature's name, as `region`),
/// each range rule in column order (`out_of_range:<feature>`), `no_capacity` (the candidate feature
/// `capacity_feature` is not above 0, or missing); otherwise `eligible`.
///
/// **Heads** (`heads` of them, under `head<k>.`): `role` (0 p(approve), 1 expected funded amount given
/// approval), `population` (0 every applicant, 1 new, 2 returning: the context feature `returning_feature`
/// is at least 0.5), `type` (0 linear: a factorization machine over the row's field encoding — `bias`,
/// `factors`, tensors `norm`, `linear`, `factors` as in the ranking kind; an approve head applies the
/// logistic function, an amount head `output_offset + output_scale × machine`; 1 a tree ensemble as
/// ``ForestLayout`` names it, logistic for approve, identity for amount). For each population exactly one
/// approve head applies (a population's own head before an `every applicant` one) and at most one amount
/// head (none: the lender's average amount). A head's input row is the context features, the candidate
/// features, then `lender` (categorical: the lender's row in the table).
///
/// **Value** (`value`): 0 `p × amount × take_rate`, 1 `p × amount`, 2 `p`; amounts below 0 count as 0. Each
/// eligible candidate's score is its value; an ineligible one scores -1.
///
/// **Arms.** `channel.share` f32 `[channel cardinality]`: the share of each channel's applicants routed by
/// the model; the rest get the baseline (`baseline` 0: `lender.priority`; 1: the rule `amount × take_rate`,
/// highest first). An applicant's arm is model when `u(routing key, split_salt) < share[channel]`, `u` a
/// uniform number from a hash of the key and the salt only: sticky per key, and raising a share moves keys
/// into the model arm without moving any other.
///
/// **Order.** Eligible candidates first — by value on the model arm, by the baseline on the other (ties to
/// the earlier candidate) — then the ineligible ones in request order. On the model arm, with probability
/// `epsilon` (from a hash of the key and the version's `explore_salt`), one eligible candidate below the top,
/// chosen by the same hash, moves to the top (`explored` yes): the same key and version always get the same
/// answer. (A salt rather than the version number: the golden cases are recorded before the store numbers
/// the version.) The answer holds every candidate when
/// neither top_k nor `max_products` is set; otherwise the best `min(top_k, max_products)` eligible ones only.
///
/// Output columns: `p_approve` f32, `amount` f32 (the amount the value used; 0 for ineligible rows), `reason`
/// code, `arm` code (`model`, `baseline`), `explored` code (`no`, `yes`).
public enum RoutingLayout {
    public static let kind = "routing"

    public static let channelFeatureParameter = "channel_feature"
    public static let returningFeatureParameter = "returning_feature"
    public static let capacityFeatureParameter = "capacity_feature"
    public static let lendersParameter = "lenders"
    public static let rangesParameter = "ranges"
    public static let allowedWidthParameter = "allowed_width"
    public static let rangePrefix = "range."
    public static let allowPrefix = "allow."
    public static let headsParameter = "heads"
    public static let valueParameter = "value"
    public static let baselineParameter = "baseline"
    public static let epsilonParameter = "epsilon"
    public static let maxProductsParameter = "max_products"
    public static let saltParameter = "split_salt"
    public static let exploreSaltParameter = "explore_salt"

    public static let lenderID = "lender.id"
    public static let lenderAmount = "lender.amount"
    public static let lenderTakeRate = "lender.take_rate"
    public static let lenderPriority = "lender.priority"
    public static let lenderMin = "lender.min"
    public static let lenderMax = "lender.max"
    public static let lenderAllowed = "lender.allowed"
    public static let channelShare = "channel.share"

    public static func headPrefix(_ k: Int) -> String { "head\(k)." }
    public static let roleParameter = "role"
    public static let populationParameter = "population"
    public static let typeParameter = "type"
    public static let biasParameter = "bias"
    public static let factorsParameter = "factors"
    public static let outputScaleParameter = "output_scale"
    public static let outputOffsetParameter = "output_offset"
    public static let norm = "norm"
    public static let linear = "linear"
    public static let factors = "factors"

    /// The head row's last field: the lender's row in the table.
    public static let lenderField = "lender"

    public static let pApproveColumn = "p_approve"
    public static let amountColumn = "amount"
    public static let reasonColumn = "reason"
    public static let armColumn = "arm"
    public static let exploredColumn = "explored"

    public static let eligible = "eligible"
    public static let unknownLender = "unknown_lender"
    public static let noCapacity = "no_capacity"
    public static func outOfRange(_ feature: String) -> String { "out_of_range:\(feature)" }
    public static let armLabels = ["model", "baseline"]
    public static let exploredLabels = ["no", "yes"]

    /// A range bound that is no bound: `-noBound` as a minimum, `noBound` as a maximum (every finite value
    /// passes; the server refuses infinite features).
    public static let noBound = Float.greatestFiniteMagnitude

    /// Most lenders a version's table may hold, and most heads.
    public static let maxLenders = 65_536
    public static let maxHeads = 8
    /// The score of an ineligible candidate: below every eligible one's value (values are at least 0).
    public static let ineligibleScore: Float = -1

    public enum Role: Int, Sendable { case approve = 0, amount = 1 }
    public enum Population: Int, Sendable { case all = 0, new = 1, returning = 2 }
    public enum HeadType: Int, Sendable { case linear = 0, trees = 1 }
    public enum Value: Int, Sendable, CaseIterable {
        /// `p × amount × take_rate`: the marketplace's expected revenue.
        case revenue = 0
        /// `p × amount`: expected funded amount.
        case fundedAmount = 1
        /// `p`: approval probability alone.
        case approval = 2
    }
    public enum Baseline: Int, Sendable {
        /// The table's fixed priority list.
        case priority = 0
        /// The rule `amount × take_rate`, highest first (no model).
        case staticValue = 1
    }

    /// The fields of each head's input row: the context features, the candidate features, and the lender.
    public static func headFields(_ schema: FeatureSchema, lenders: Int) -> [Feature] {
        schema.context + schema.candidate + [.categorical(lenderField, lenders)]
    }

    /// The reason labels for rules on these features (allowed-values rules, then range rules, each in their
    /// stored order), as the `reason` column carries them.
    public static func reasonLabels(allowed: [String], ranges: [String]) -> [String] {
        [eligible, unknownLender] + allowed + ranges.map(outOfRange) + [noCapacity]
    }

    /// The output columns of a version with these rules.
    public static func outputs(allowed: [String], ranges: [String]) -> [OutputColumn] {
        [OutputColumn(name: pApproveColumn, kind: .float32), OutputColumn(name: amountColumn, kind: .float32),
         OutputColumn(name: reasonColumn, kind: .code, labels: reasonLabels(allowed: allowed, ranges: ranges)),
         OutputColumn(name: armColumn, kind: .code, labels: armLabels),
         OutputColumn(name: exploredColumn, kind: .code, labels: exploredLabels)]
    }

    /// A uniform number in [0, 1) from a 64-bit key and a salt: SplitMix64's finalizer over their mix. The
    /// arm and the exploration draw use it, as the trainer's replay and the tests do.
    @inlinable
    public static func uniform(_ key: UInt64, _ salt: UInt64) -> Double {
        Double(mix(key ^ (salt &* 0x9E37_79B9_7F4A_7C15)) >> 11) * 0x1.0p-53
    }

    @inlinable
    public static func mix(_ x: UInt64) -> UInt64 {
        var z = x &+ 0x9E37_79B9_7F4A_7C15
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// Whether a routing key lands on the model arm at this share.
    @inlinable
    public static func onModelArm(key: UInt64, salt: UInt64, share: Float) -> Bool {
        uniform(key, salt) < Double(share)
    }
}
