import CLMDB
import NIOConcurrencyHelpers

/// A pinned LMDB read transaction. Everything read through it stays valid and unchanged until it is
/// released (when the last reference goes), whatever writers commit meanwhile.
///
/// Bytes in the map are lent only in ways that keep the snapshot alive while they are read: inside a
/// closure (``withValue(_:_:)``, ``forEach(prefix:_:)``) or as ``MappedBytes``, which holds the snapshot.
// Unchecked: every LMDB call on `txn` happens under `lock` (LMDB lets an MDB_NOTLS read txn span threads so).
public final class ReadSnapshot: @unchecked Sendable {
    let environment: StoreEnvironment
    /// The transaction. Reading the mapped pages it pins needs no lock: they do not change while it is open.
    private let txn: OpaquePointer
    private let lock = NIOLock()

    init(environment: StoreEnvironment, txn: OpaquePointer) {
        self.environment = environment
        self.txn = txn
    }

    deinit {
        mdb_txn_abort(txn)
        environment.ended()
    }

    /// The stored bytes under `key`, as a view into the map that keeps this snapshot pinned, or nil.
    public func value(_ key: String) throws(StoreError) -> MappedBytes? {
        guard let b = try raw(key) else { return nil }
        return MappedBytes(snapshot: self, buffer: b)
    }

    /// Runs `body` with the stored bytes under `key` (no copy); nil when there is no such key. The bytes
    /// are valid only inside `body`.
    public func withValue<T>(_ key: String, _ body: (UnsafeRawBufferPointer) throws -> T) throws -> T? {
        guard let b = try raw(key) else { return nil }
        return try body(b)
    }

    /// A copy of the bytes under `key`, or nil.
    public func bytes(_ key: String) throws(StoreError) -> [UInt8]? {
        try raw(key).map { Array($0) }
    }

    /// Calls `body` with each key that starts with `prefix` and its value (no copy), in key order. The
    /// value is valid only inside `body`.
    public func forEach(prefix: String, _ body: (String, UnsafeRawBufferPointer) throws -> Void) throws {
        let entries = try locked { () throws(StoreError) in try scanCursor(txn: txn, dbi: environment.dbi, prefix: prefix) }
        // The pages stay mapped and unchanged while this snapshot is open, which it is for this whole call.
        for (k, v) in entries { try body(k, v) }
    }

    /// The keys that start with `prefix`, in key order.
    public func keys(prefix: String) throws(StoreError) -> [String] {
        try locked { () throws(StoreError) in try scanCursor(txn: txn, dbi: environment.dbi, prefix: prefix).map(\.key) }
    }

    public func getUInt64(_ key: String) throws(StoreError) -> UInt64? {
        guard let b = try raw(key) else { return nil }
        guard b.count == 8 else { throw StoreError.corrupt("\(key) holds \(b.count) bytes, expected 8") }
        return UInt64(littleEndian: b.loadUnaligned(as: UInt64.self))
    }

    /// The bytes under `key`, pointing into the map. Valid while this snapshot is alive: callers keep it
    /// alive (a method of `self` running, or a `MappedBytes` holding it).
    private func raw(_ key: String) throws(StoreError) -> UnsafeRawBufferPointer? {
        try locked { () throws(StoreError) -> UnsafeRawBufferPointer? in
            var data = MDB_val()
            let rc = withKey(key) { k in mdb_get(txn, environment.dbi, &k, &data) }
            if rc == MDB_NOTFOUND { return nil }
            try check(rc, "mdb_get \(key)")
            return UnsafeRawBufferPointer(start: data.mv_data, count: data.mv_size)
        }
    }

    private func locked<T>(_ body: () throws(StoreError) -> T) throws(StoreError) -> T {
        lock.lock()
        defer { lock.unlock() }
        return try body()
    }
}

/// Bytes of one value inside a pinned snapshot. Holding them keeps the snapshot, and so the bytes, alive.
// Unchecked: the bytes are immutable while `snapshot` is open, and `snapshot` is held here.
public struct MappedBytes: @unchecked Sendable {
    /// The snapshot the bytes belong to.
    public let snapshot: ReadSnapshot
    let buffer: UnsafeRawBufferPointer

    public var count: Int { buffer.count }

    /// Runs `body` with the bytes (no copy); they are valid only inside `body`.
    public func withUnsafeBytes<T>(_ body: (UnsafeRawBufferPointer) throws -> T) rethrows -> T {
        defer { withExtendedLifetime(snapshot) {} }
        return try body(buffer)
    }
}

func scanCursor(txn: OpaquePointer, dbi: MDB_dbi, prefix: String) throws(StoreError) -> [(key: String, value: UnsafeRawBufferPointer)] {
    var cursor: OpaquePointer?
    try check(mdb_cursor_open(txn, dbi, &cursor), "mdb_cursor_open")
    defer { mdb_cursor_close(cursor) }
    var out: [(String, UnsafeRawBufferPointer)] = []
    let prefixBytes = Array(prefix.utf8)
    var data = MDB_val()
    var rc = withKey(prefix) { k -> Int32 in
        var kk = k
        let r = mdb_cursor_get(cursor, &kk, &data, MDB_SET_RANGE)
        k = kk
        return r
    }
    var key = MDB_val()
    if rc == 0 { rc = mdb_cursor_get(cursor, &key, &data, MDB_GET_CURRENT) }
    while rc == 0 {
        let kb = UnsafeRawBufferPointer(start: key.mv_data, count: key.mv_size)
        guard kb.count >= prefixBytes.count, kb.prefix(prefixBytes.count).elementsEqual(prefixBytes) else { break }
        out.append((String(decoding: kb, as: UTF8.self), UnsafeRawBufferPointer(start: data.mv_data, count: data.mv_size)))
        rc = mdb_cursor_get(cursor, &key, &data, MDB_NEXT)
    }
    if rc != 0 && rc != MDB_NOTFOUND { try check(rc, "mdb_cursor_get") }
    return out
}

/// A write transaction, valid only inside `StoreEnvironment.write`.
public final class WriteTransaction {
    let txn: OpaquePointer
    let dbi: MDB_dbi
    let mapSize: Int

    init(txn: OpaquePointer, dbi: MDB_dbi, mapSize: Int) {
        self.txn = txn
        self.dbi = dbi
        self.mapSize = mapSize
    }

    public func put(_ key: String, _ bytes: UnsafeRawBufferPointer) throws(StoreError) {
        var data = MDB_val(mv_size: bytes.count, mv_data: UnsafeMutableRawPointer(mutating: bytes.baseAddress))
        let rc = withKey(key) { k in mdb_put(txn, dbi, &k, &data, 0) }
        if rc == MDB_MAP_FULL { throw StoreError.mapFull(path: nil, mapSize: mapSize) }
        try check(rc, "mdb_put \(key)")
    }

    public func put(_ key: String, _ bytes: [UInt8]) throws {
        try bytes.withUnsafeBytes { try put(key, $0) }
    }

    public func put(_ key: String, uint64 value: UInt64) throws {
        try withUnsafeBytes(of: value.littleEndian) { try put(key, $0) }
    }

    /// Removes `key`; returns whether it was there.
    @discardableResult
    public func delete(_ key: String) throws(StoreError) -> Bool {
        let rc = withKey(key) { k in mdb_del(txn, dbi, &k, nil) }
        if rc == MDB_NOTFOUND { return false }
        try check(rc, "mdb_del \(key)")
        return true
    }

    /// A copy of the bytes under `key`, or nil.
    public func get(_ key: String) throws(StoreError) -> [UInt8]? {
        var data = MDB_val()
        let rc = withKey(key) { k in mdb_get(txn, dbi, &k, &data) }
        if rc == MDB_NOTFOUND { return nil }
        try check(rc, "mdb_get \(key)")
        return Array(UnsafeRawBufferPointer(start: data.mv_data, count: data.mv_size))
    }

    /// Runs `body` with the bytes under `key` (no copy: valid only inside `body`), or with nil.
    public func withBytes<T>(_ key: String, _ body: (UnsafeRawBufferPointer?) throws -> T) throws -> T {
        var data = MDB_val()
        let rc = withKey(key) { k in mdb_get(txn, dbi, &k, &data) }
        if rc == MDB_NOTFOUND { return try body(nil) }
        try check(rc, "mdb_get \(key)")
        return try body(UnsafeRawBufferPointer(start: data.mv_data, count: data.mv_size))
    }

    /// The keys that start with `prefix`, in key order, with the sizes of their values.
    public func sizes(prefix: String) throws(StoreError) -> [(key: String, bytes: Int)] {
        try scanCursor(txn: txn, dbi: dbi, prefix: prefix).map { ($0.key, $0.value.count) }
    }

    public func getUInt64(_ key: String) throws(StoreError) -> UInt64? {
        guard let b = try get(key) else { return nil }
        guard b.count == 8 else { throw StoreError.corrupt("\(key) holds \(b.count) bytes, expected 8") }
        return b.withUnsafeBytes { UInt64(littleEndian: $0.loadUnaligned(as: UInt64.self)) }
    }

    /// The keys that start with `prefix`, in key order.
    public func keys(prefix: String) throws(StoreError) -> [String] {
        try scanCursor(txn: txn, dbi: dbi, prefix: prefix).map(\.key)
    }
}
