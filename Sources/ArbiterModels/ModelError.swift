/// Why a version cannot serve, or why a request cannot be scored.
public enum ModelError: Error, Equatable, Sendable, CustomStringConvertible {
    case unknownKind(String, known: [String])
    case invalidSchema(String)
    case invalidManifest(String)
    case invalidParameters(String)
    /// A golden input scored differently from what the trainer recorded.
    case goldenMismatch(String)
    case nonFinite(String)

    public var description: String {
        switch self {
        case .unknownKind(let k, let known):
            "unknown model kind '\(k)'; this server knows: \(known.joined(separator: ", "))"
        case .invalidSchema(let s): "invalid feature schema: \(s)"
        case .invalidManifest(let s): "invalid manifest: \(s)"
        case .invalidParameters(let s): "invalid parameters: \(s)"
        case .goldenMismatch(let s): "golden check failed: \(s)"
        case .nonFinite(let s): "non-finite parameters: \(s)"
        }
    }
}
