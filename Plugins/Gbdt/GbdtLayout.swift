import ArbiterModels
import ArbiterStore

/// The contract between the importer and the `gbdt` plugin: a forest stored with no name prefix, as
/// ``ForestLayout`` names its tensors and parameters.
///
/// A version's features are its schema's context features followed by its candidate features: feature `j`
/// of the trees is context feature `j` for `j < C`, else candidate feature `j - C`.
public enum GbdtLayout {
    public static let kind = "gbdt"

    public static let treesParameter = ForestLayout.treesParameter
    public static let depthParameter = ForestLayout.depthParameter
    public static let transformParameter = ForestLayout.transformParameter
    public static let sigmoidScaleParameter = ForestLayout.sigmoidScaleParameter
    public static let baseMarginParameter = ForestLayout.baseMarginParameter

    public static let split = ForestLayout.split
    public static let threshold = ForestLayout.threshold
    public static let leaf = ForestLayout.leaf
    public static let root = ForestLayout.root
    public static let left = ForestLayout.left
    public static let right = ForestLayout.right
}
