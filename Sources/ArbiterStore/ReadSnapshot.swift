import CLMDB

/// A pinned LMDB read transaction. Everything read through it stays valid and unchanged until it is
/// released (when the last reference goes), whatever writers commit meanwhile.
public final class ReadSnapshot: @unchecked Sendable {
    let environment: StoreEnvironment
    let txn: OpaquePointer

    init(environment: StoreEnvironment, txn: OpaquePointer) {
        self.environment = environment
        self.txn = txn
    }

    deinit {
        mdb_txn_abort(txn)
    }

    /// The bytes stored under `key`, pointing into the map (no copy), or nil.
    public func get(_ key: String) throws(StoreError) -> UnsafeRawBufferPointer? {
        var data = MDB_val()
        let rc = withKey(key) { k in mdb_get(txn, environment.dbi, &k, &data) }
        if rc == MDB_NOTFOUND { return nil }
        try check(rc, "mdb_get \(key)")
        return UnsafeRawBufferPointer(start: data.mv_data, count: data.mv_size)
    }

    /// Keys (and values) that start with `prefix`, in key order.
    public func scan(prefix: String) throws(StoreError) -> [(key: String, value: UnsafeRawBufferPointer)] {
        try scanCursor(txn: txn, dbi: environment.dbi, prefix: prefix)
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

    init(txn: OpaquePointer, dbi: MDB_dbi) {
        self.txn = txn
        self.dbi = dbi
    }

    public func put(_ key: String, _ bytes: UnsafeRawBufferPointer) throws(StoreError) {
        var data = MDB_val(mv_size: bytes.count, mv_data: UnsafeMutableRawPointer(mutating: bytes.baseAddress))
        let rc = withKey(key) { k in mdb_put(txn, dbi, &k, &data, 0) }
        try check(rc, "mdb_put \(key)")
    }

    public func put(_ key: String, _ bytes: [UInt8]) throws {
        try bytes.withUnsafeBytes { try put(key, $0) }
    }

    public func put(_ key: String, uint64 value: UInt64) throws {
        try withUnsafeBytes(of: value.littleEndian) { try put(key, $0) }
    }

    /// A copy of the bytes under `key`, or nil.
    public func get(_ key: String) throws(StoreError) -> [UInt8]? {
        var data = MDB_val()
        let rc = withKey(key) { k in mdb_get(txn, dbi, &k, &data) }
        if rc == MDB_NOTFOUND { return nil }
        try check(rc, "mdb_get \(key)")
        return Array(UnsafeRawBufferPointer(start: data.mv_data, count: data.mv_size))
    }

    public func getUInt64(_ key: String) throws(StoreError) -> UInt64? {
        guard let b = try get(key) else { return nil }
        guard b.count == 8 else { throw StoreError.corrupt("\(key) holds \(b.count) bytes, expected 8") }
        return b.withUnsafeBytes { UInt64(littleEndian: $0.loadUnaligned(as: UInt64.self)) }
    }

    public func scan(prefix: String) throws(StoreError) -> [(key: String, value: UnsafeRawBufferPointer)] {
        try scanCursor(txn: txn, dbi: dbi, prefix: prefix)
    }
}

extension ReadSnapshot {
    public func getUInt64(_ key: String) throws(StoreError) -> UInt64? {
        guard let b = try get(key) else { return nil }
        guard b.count == 8 else { throw StoreError.corrupt("\(key) holds \(b.count) bytes, expected 8") }
        return UInt64(littleEndian: b.loadUnaligned(as: UInt64.self))
    }
}
