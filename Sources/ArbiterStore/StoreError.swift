/// Errors from the store, each with a message that says what to do.
public enum StoreError: Error, Equatable, Sendable, CustomStringConvertible {
    /// An LMDB call failed; `code` is LMDB's or errno.
    case lmdb(operation: String, code: Int32, message: String)
    /// The store directory does not exist (and the caller did not ask to create it).
    case missingStore(path: String)
    case invalidModelName(String)
    case unknownModel(String)
    case unknownVersion(model: String, version: UInt64)
    case noActiveVersion(model: String)
    /// Something stored does not match what its metadata promises.
    case corrupt(String)
    case checksumMismatch(model: String, version: UInt64, item: String)
    case invalidTensor(String)

    public var description: String {
        switch self {
        case .lmdb(let op, let code, let msg): "LMDB \(op) failed (\(code)): \(msg)"
        case .missingStore(let p): "no store at \(p): create one with `arbiter-train train --store \(p) ...`"
        case .invalidModelName(let n):
            "invalid model name '\(n)': use 1 to 64 characters from a-z, 0-9, '-', '_' and '.'"
        case .unknownModel(let m): "no model named '\(m)' in the store"
        case .unknownVersion(let m, let v): "model '\(m)' has no version \(v)"
        case .noActiveVersion(let m): "model '\(m)' has no active version"
        case .corrupt(let s): "store is inconsistent: \(s)"
        case .checksumMismatch(let m, let v, let item): "checksum mismatch in \(m) v\(v): \(item)"
        case .invalidTensor(let s): "invalid tensor: \(s)"
        }
    }
}
