import ArbiterModels

/// The contract between `arbiter-train` and the `ranking` plugin: tensor and parameter names.
///
/// A `ranking` version holds two embedding tables (``EmbeddingTable``) of one dimension, `user` and `item`,
/// and `heads` heads. For each candidate the model takes the dot product of the subject's (user's) vector
/// and the item's, then feeds every head one row: the context (user) features, the candidate (item)
/// features and the dot product, in that order (`C + M + 1` values). Each head gives a probability `pₖ`;
/// the fused score is `Σ wₖ·log pₖ` (`fusion` 0) or `Σ wₖ·pₖ` (`fusion` 1). Candidates are ordered by it,
/// best first; with a diversity rule, at most `diversity_max` of the answered rows share a value of the
/// candidate feature `diversity_feature`, the rest filled from lower ranks.
///
/// Parameters: `heads`, `fusion`, `diversity_feature` (an index among the candidate features, -1 for
/// none), `diversity_max`; per head, under its prefix `head<k>.`: `type` (0 linear: a factorization machine
/// over the row's one-hot field encoding, with `factors` 0 a logistic regression; 1 a tree ensemble as
/// ``ForestLayout`` names it, with the logistic transform), `weight`, and for linear heads `bias` and
/// `factors`. Linear heads' tensors: `norm` f32 `[C + M + 1, 2]` (each field's mean and inverse standard
/// deviation; categorical fields ignore it), `linear` f32 `[D]`, `factors` f32 `[D, factors]`, D the
/// encoding's dimension. A missing value (NaN) adds nothing to a linear head: the field's mean.
///
/// Output columns: one f32 column per head (its probability, named after the head), then `dot` and
/// `rank_before` (the 1-based rank by fused score before the diversity rerank).
public enum RankingLayout {
    public static let kind = "ranking"

    public static let userTable = "user"
    public static let itemTable = "item"

    public static let headsParameter = "heads"
    public static let fusionParameter = "fusion"
    public static let diversityFeatureParameter = "diversity_feature"
    public static let diversityMaxParameter = "diversity_max"

    public static func headPrefix(_ k: Int) -> String { "head\(k)." }
    public static let typeParameter = "type"
    public static let weightParameter = "weight"
    public static let biasParameter = "bias"
    public static let factorsParameter = "factors"
    public static let norm = "norm"
    public static let linear = "linear"
    public static let factors = "factors"

    public static let dotColumn = "dot"
    public static let rankColumn = "rank_before"

    /// Most heads a version may hold.
    public static let maxHeads = 16

    public enum HeadType: Int, Sendable {
        case linear = 0
        case trees = 1
    }

    public enum Fusion: Int, Sendable {
        /// `Σ wₖ·log pₖ`: a weighted product of the probabilities.
        case logProduct = 0
        /// `Σ wₖ·pₖ`.
        case weightedSum = 1
    }

    /// The fields of each head's input row for a schema: its context features, its candidate features, and
    /// the dot product (numeric).
    public static func headFields(_ schema: FeatureSchema) -> [Feature] {
        schema.context + schema.candidate + [.numeric(dotColumn)]
    }

    /// The smallest probability fused by `log` (and its complement the largest): a head that says 0 or 1
    /// cannot dominate the product with an infinity.
    public static let probabilityFloor: Float = 1e-6
}
