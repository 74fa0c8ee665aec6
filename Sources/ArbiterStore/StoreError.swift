import Foundation

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
    /// Another process grew the store beyond this process's map while this process holds transactions
    /// (snapshots pinned by loaded versions): the map cannot move under them. What is loaded keeps
    /// working; newer data is readable after the process restarts (or once it holds no transaction).
    case mapOutgrown(path: String, mapSize: Int, openTransactions: Int)
    /// A write did not fit in the map; nothing was written.
    case mapFull(path: String?, mapSize: Int)
    /// A write was asked of a store this process opened read-only.
    case readOnly(path: String)
    /// A rollback found no earlier version that a server recorded as valid.
    case noRollbackTarget(model: String, active: UInt64)
    /// Another writer changed what an operation was based on; nothing was written.
    case concurrentChange(String)
    /// An operator's request (a split, a promotion, a shadow) that cannot be carried out as asked; nothing was written.
    case invalidRequest(String)

    public var description: String {
        switch self {
        case .lmdb(let op, let code, let msg): "LMDB \(op) failed (\(code)): \(msg)"
        case .missingStore(let p):
            "no store at \(p) (no data.mdb there): `arbiter-train train` or `arbiter-train import` with --store \(p) creates one "
                + "(arbiterd --create starts on a new, empty store and waits for a publish)"
        case .invalidModelName(let n):
            "invalid model name '\(n)': use 1 to 64 characters from a-z, 0-9, '-', '_' and '.'"
        case .unknownModel(let m): "no model named '\(m)' in the store"
        case .unknownVersion(let m, let v): "model '\(m)' has no version \(v)"
        case .noActiveVersion(let m): "model '\(m)' has no active version"
        case .corrupt(let s): "store is inconsistent: \(s)"
        case .checksumMismatch(let m, let v, let item): "checksum mismatch in \(m) v\(v): \(item)"
        case .invalidTensor(let s): "invalid tensor: \(s)"
        case .mapOutgrown(let p, let size, let open):
            "the store at \(p) has grown beyond this process's map of \(gib(size)) (another process raised the store's map size); "
                + "\(open) transaction(s) of this process pin the current map, so it cannot move: what is loaded keeps serving, "
                + "and newer versions load after a restart"
        case .readOnly(let p): "the store at \(p) was opened read-only; nothing was written"
        case .noRollbackTarget(let m, let active):
            "no version of '\(m)' older than the active v\(active) passed a server's validation; nothing was changed. "
                + "`arbiter-train versions` lists them; `arbiter-train activate --version N` activates any"
        case .concurrentChange(let s): "\(s); nothing was written"
        case .invalidRequest(let s): "\(s); nothing was written"
        case .mapFull(let p, let size):
            "the store\(p.map { " at \($0)" } ?? "")'s map of \(gib(size)) is full; nothing was written. Raise it with --map-size-gib "
                + "(address space, not memory), then restart running servers so they can load what lies beyond their map"
        }
    }
}

/// A byte count as GiB (or MiB below 1 GiB), for messages.
func gib(_ bytes: Int) -> String {
    bytes >= 1 << 30 && bytes % (1 << 30) == 0 ? "\(bytes >> 30) GiB"
        : bytes >= 1 << 30 ? String(format: "%.1f GiB", Double(bytes) / Double(1 << 30))
        : "\(bytes >> 20) MiB"
}
