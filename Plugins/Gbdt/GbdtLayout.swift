import ArbiterModels
import ArbiterStore

/// The contract between the importer and the `gbdt` plugin: tensor and parameter names.
///
/// A version's features are its schema's context features followed by its candidate features: feature `j`
/// of the trees is context feature `j` for `j < C`, else candidate feature `j - C`. Parameters: `trees`,
/// `depth` (the perfect layout's depth; 0 = the general layout), `transform` (``OutputTransform``),
/// `sigmoid_scale` (for the logistic transform), `base_margin` (added to every row's sum of leaves).
/// Tensors as ``TreeEnsemble`` describes them: `split` u32, `threshold` f32, `leaf` f32, and for the general
/// layout `root`, `left`, `right` i32.
public enum GbdtLayout {
    public static let kind = "gbdt"

    public static let treesParameter = "trees"
    public static let depthParameter = "depth"
    public static let transformParameter = "transform"
    public static let sigmoidScaleParameter = "sigmoid_scale"
    public static let baseMarginParameter = "base_margin"

    public static let split = "split"
    public static let threshold = "threshold"
    public static let leaf = "leaf"
    public static let root = "root"
    public static let left = "left"
    public static let right = "right"
}
