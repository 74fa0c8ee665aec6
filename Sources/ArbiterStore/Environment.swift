import CLMDB
import Foundation

/// Settings of an LMDB environment. The trainer and the server must use the same `mapSize` so that
/// `MDB_MAP_RESIZED` cannot occur while the server pins snapshots.
public struct StoreConfiguration: Sendable {
    /// Address space reserved for the map, in bytes. It is not memory: pages are only used when written.
    /// Default 32 GiB.
    public var mapSize: Int
    /// Reader slots: each loaded version pins one, plus short catalog reads. Default 256.
    public var maxReaders: UInt32
    /// Create the directory if it is missing (the trainer does; the server does not).
    public var create: Bool

    public init(mapSize: Int = StoreConfiguration.defaultMapSize, maxReaders: UInt32 = 256, create: Bool = false) {
        self.mapSize = mapSize
        self.maxReaders = maxReaders
        self.create = create
    }

    public static let defaultMapSize = 32 << 30
}

/// One LMDB environment holding every model. Opened with `MDB_NOTLS` so that a read snapshot can be
/// pinned by one thread and released by another.
///
/// LMDB forbids opening the same environment twice in one process (its locks are per process), so
/// `open(path:configuration:)` hands out the one instance per directory that is already open.
public final class StoreEnvironment: @unchecked Sendable {
    private static let registryLock = NSLock()
    nonisolated(unsafe) private static var registry: [String: WeakEnvironment] = [:]

    /// The environment at `path`, opening it if this process has not already.
    public static func open(path: String, configuration: StoreConfiguration = StoreConfiguration()) throws(StoreError) -> StoreEnvironment {
        registryLock.lock()
        defer { registryLock.unlock() }
        let key = URL(fileURLWithPath: path).standardizedFileURL.resolvingSymlinksInPath().path
        if let env = registry[key]?.value { return env }
        let env = try StoreEnvironment(path: path, configuration: configuration)
        registry[key] = WeakEnvironment(value: env)
        return env
    }

    let env: OpaquePointer
    let dbi: MDB_dbi
    public let path: String
    /// Stale reader slots (from processes that died) cleared when the environment was opened.
    public private(set) var staleReadersCleared: Int32 = 0

    private init(path: String, configuration: StoreConfiguration) throws(StoreError) {
        self.path = path
        var isDir: ObjCBool = false
        if !FileManager.default.fileExists(atPath: path, isDirectory: &isDir) {
            guard configuration.create else { throw StoreError.missingStore(path: path) }
            do {
                try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
            } catch {
                throw StoreError.lmdb(operation: "create directory \(path)", code: 0, message: "\(error)")
            }
        } else if !isDir.boolValue {
            throw StoreError.lmdb(operation: "open \(path)", code: ENOTDIR, message: "not a directory")
        }
        var e: OpaquePointer?
        try check(mdb_env_create(&e), "mdb_env_create")
        guard let e else { throw StoreError.lmdb(operation: "mdb_env_create", code: -1, message: "no environment") }
        do {
            try check(mdb_env_set_mapsize(e, configuration.mapSize), "mdb_env_set_mapsize")
            try check(mdb_env_set_maxreaders(e, configuration.maxReaders), "mdb_env_set_maxreaders")
            try check(mdb_env_open(e, path, UInt32(MDB_NOTLS), 0o644), "mdb_env_open \(path)")
        } catch {
            mdb_env_close(e)
            throw error
        }
        env = e
        var dead: Int32 = 0
        mdb_reader_check(e, &dead)
        staleReadersCleared = dead
        var txn: OpaquePointer?
        var d: MDB_dbi = 0
        do {
            try check(mdb_txn_begin(e, nil, 0, &txn), "mdb_txn_begin")
            try check(mdb_dbi_open(txn, nil, 0, &d), "mdb_dbi_open")
            try check(mdb_txn_commit(txn), "mdb_txn_commit")
        } catch {
            if txn != nil { mdb_txn_abort(txn) }
            mdb_env_close(e)
            throw error
        }
        dbi = d
    }

    deinit {
        mdb_env_close(env)
    }

    /// Clears reader slots left by dead processes; returns how many. Call periodically.
    @discardableResult
    public func clearStaleReaders() -> Int32 {
        var dead: Int32 = 0
        mdb_reader_check(env, &dead)
        return dead
    }

    /// The map size in force (it may exceed the configured one if another process set it larger).
    public var mapSize: Int {
        var info = MDB_envinfo()
        mdb_env_info(env, &info)
        return info.me_mapsize
    }

    /// Opens a read snapshot that stays valid (and keeps what it sees mapped) until released.
    public func snapshot() throws(StoreError) -> ReadSnapshot {
        var txn: OpaquePointer?
        var rc = mdb_txn_begin(env, nil, UInt32(MDB_RDONLY), &txn)
        if rc == MDB_MAP_RESIZED {
            // Another process grew the map: adopt its size (no snapshot of ours can be open in this call).
            mdb_env_set_mapsize(env, 0)
            rc = mdb_txn_begin(env, nil, UInt32(MDB_RDONLY), &txn)
        }
        try check(rc, "mdb_txn_begin (read)")
        return ReadSnapshot(environment: self, txn: txn!)
    }

    /// Runs `body` in a write transaction and commits it; any throw aborts, leaving the store as it was.
    public func write<T>(_ body: (WriteTransaction) throws -> T) throws -> T {
        var txn: OpaquePointer?
        try check(mdb_txn_begin(env, nil, 0, &txn), "mdb_txn_begin (write)")
        let w = WriteTransaction(txn: txn!, dbi: dbi)
        let result: T
        do {
            result = try body(w)
        } catch {
            mdb_txn_abort(txn)
            throw error
        }
        try check(mdb_txn_commit(txn), "mdb_txn_commit")
        return result
    }
}

@inline(__always)
func check(_ rc: Int32, _ op: String) throws(StoreError) {
    guard rc == 0 else {
        throw StoreError.lmdb(operation: op, code: rc, message: String(cString: mdb_strerror(rc)))
    }
}

/// Makes an `MDB_val` for the bytes of `key` for the duration of `body`.
@inline(__always)
func withKey<T>(_ key: String, _ body: (inout MDB_val) throws -> T) rethrows -> T {
    var k = key
    return try k.withUTF8 { u in
        var v = MDB_val(mv_size: u.count, mv_data: UnsafeMutableRawPointer(mutating: u.baseAddress))
        return try body(&v)
    }
}

private struct WeakEnvironment {
    weak var value: StoreEnvironment?
}
