/// What goes wrong between machines: each case names the operation and the object, so an operator can act on
/// the message alone.
public enum ClusterError: Error, CustomStringConvertible, Sendable, Equatable {
    /// A flag, URL or environment variable is missing or malformed.
    case configuration(String)
    /// S3 answered with an error: the operation, the object, the HTTP status and S3's code and message.
    case s3(operation: String, object: String, status: Int, code: String, message: String)
    /// The S3 endpoint could not be reached, or the connection broke, after every retry.
    case s3Unreachable(operation: String, object: String, underlying: String)
    /// An artifact's bytes do not match its manifest (size or SHA-256), or its manifest is malformed.
    case corruptArtifact(String)
    /// Compressing or decompressing failed.
    case compression(String)
    /// A local file could not be read or written.
    case io(String)

    public var description: String {
        switch self {
        case .configuration(let m): return m
        case .s3(let op, let object, let status, let code, let message):
            return "S3 \(op) of \(object) failed: HTTP \(status)\(code.isEmpty ? "" : " \(code)")\(message.isEmpty ? "" : ": \(message)")"
        case .s3Unreachable(let op, let object, let underlying):
            return "S3 \(op) of \(object) failed: \(underlying)"
        case .corruptArtifact(let m): return m
        case .compression(let m): return m
        case .io(let m): return m
        }
    }
}
