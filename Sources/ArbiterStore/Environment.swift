import Atomics
import CLMDB
import Foundation
import NIOConcurrencyHelpers

/// Settings of an LMDB environment.
///
/// The map size is recorded in the store itself: LMDB writes the largest map size any writer has used
/// into its meta page at every commit, and both the trainer and the server adopt that size when they
/// open the store. `mapSize` can only raise it (see ``StoreEnvironment`` and docs/STORE.md).
public struct StoreConfiguration: Sendable {
    /// The least map size this process wants, in bytes; nil takes the size the store records (or
    /// ``defaultMapSize`` for a new store). A value above the recorded size raises this process's map, and
    /// a writer's next commit records the larger size for every process that opens the store afterwards.
    /// A value below it is ignored: a map is never shrunk under other processes. The map is address space,
    /// not memory: pages are only used when written. Default nil.
    public var mapSize: Int?
    /// Reader slots: each loaded version pins one, plus short catalog reads. Default 256.
    public var maxReaders: UInt32
    /// Create the store (its directory and LMDB files) if there is none. The trainer's publishing commands
    /// do; everything else refuses a directory without a store, rather than leaving an empty one behind
    /// (`arbiterd --create` asks for it). Default false.
    public var create: Bool
    /// Open with `MDB_RDONLY`: nothing can be written, and the store's directory may be read-only. LMDB
    /// still records this process's readers in `lock.mdb`, which must then exist and be writable — except
    /// on a read-only file system, where LMDB uses no locks (nothing can write the store there either).
    /// Default false.
    public var readOnly: Bool
    /// Commit without flushing to disk (`MDB_NOSYNC`): for a scratch store that is thrown away after use (a
    /// version exported for `push`), never for one that must survive a crash.
    public var scratch = false
    /// Write through the map (`MDB_WRITEMAP`) rather than into memory of LMDB's own that is then copied to the
    /// file: a write of N bytes touches N bytes less memory. Importing a 1.15 GiB version into a replica's store
    /// took 3.4–4.7 s this way against 7.3–11.0 s (one replica alone on the local cluster, 2026-12-04), and the
    /// import needs no second copy of the version in memory. For a store only this process writes (a cluster
    /// replica's: its agent imports, nothing else writes). What it costs:
    /// - the map is writable, so a stray write through a pointer into it would change the store (the tensors'
    ///   checksums are checked when a version loads); the server only reads through such pointers;
    /// - LMDB sizes `data.mdb` to the map (a sparse file: the disk holds only the pages written);
    /// - a write through the map to a block the disk cannot supply kills the process (SIGBUS) where `pwrite`
    ///   would have failed, so each write transaction first reserves disk past the store's last page
    ///   (`posix_fallocate`: 64 MiB, plus what ``StoreEnvironment/write(reserving:_:)`` is told the transaction
    ///   writes) and fails, naming the shortfall, when the disk is full;
    /// - an existing store is checked for a `data.mdb` cut short before LMDB sizes it to the map (which would
    ///   hide the cut behind zeros).
    /// Ignored for a read-only store. Default false.
    public var writeMap = false

    public init(mapSize: Int? = nil, maxReaders: UInt32 = 256, create: Bool = false, readOnly: Bool = false) {
        self.mapSize = mapSize
        self.maxReaders = maxReaders
        self.create = create
        self.readOnly = readOnly
    }

    /// Disk reserved past the last page before each write through the map (``writeMap``).
    public static let writeMapSlack = 64 << 20

    /// The map size of a new store: 32 GiB.
    public static let defaultMapSize = 32 << 30
}

/// One LMDB environment holding every model. Opened with `MDB_NOTLS` so that a read snapshot can be
/// pinned by one thread and released by another.
///
/// LMDB forbids opening the same environment twice in one process (its locks are per process), so
/// `open(path:configuration:)` hands out the one instance per directory that is already open.
///
/// **The map is never moved while this process holds a transaction.** When another process has grown the
/// store beyond this process's map (LMDB's `MDB_MAP_RESIZED`), adopting the new size means unmapping the
/// old map, which would leave every pinned snapshot's pointers dangling. So the new size is adopted only
/// at a moment when this process has no snapshot and no write transaction open; until then, opening a
/// transaction fails with ``StoreError/mapOutgrown(path:mapSize:openTransactions:)`` and everything
/// already pinned stays valid.
// Unchecked: LMDB lets any thread use `env` (MDB_NOTLS); the map size changes only under `transactions`, with none open.
public final class StoreEnvironment: @unchecked Sendable {
    private static let registry = NIOLockedValueBox<[String: WeakEnvironment]>([:])

    /// The environment at `path`, opening it if this process has not already. When it is already open,
    /// the instance open is returned as it is (its map size included).
    public static func open(path: String, configuration: StoreConfiguration = StoreConfiguration()) throws(StoreError) -> StoreEnvironment {
        let key = URL(fileURLWithPath: path).standardizedFileURL.resolvingSymlinksInPath().path
        let opened = registry.withLockedValue { registry -> Result<StoreEnvironment, StoreError> in
            if let env = registry[key]?.value { return .success(env) }
            return Result { () throws(StoreError) in
                let env = try StoreEnvironment(path: path, configuration: configuration)
                registry[key] = WeakEnvironment(value: env)
                return env
            }
        }
        return try opened.get()
    }

    let env: OpaquePointer
    let dbi: MDB_dbi
    public let path: String
    /// Stale reader slots (from processes that died) cleared when the environment was opened.
    public let staleReadersCleared: Int32
    /// The map size the store recorded when this process opened it (before any raise by this process).
    public let recordedMapSize: Int
    /// Transactions this process has open (snapshots and writes): the map may move only when none is.
    /// Held while the map may move (a resize after another process grew the store) and by what must not see it
    /// move; never while waiting for another process.
    private let transactions = NIOLockedValueBox(TransactionCount())
    /// Snapshots and write transactions open in this process.
    private let openCount = ManagedAtomic<Int>(0)
    /// Serializes this process's write transactions while they wait for LMDB's writer lock.
    private let writers = NIOLock()
    /// Spans of the map that loaded versions keep mapped (``LoadedVersion/prefaultResidentPages(minimumBytes:)``),
    /// by first address, with how many versions hold each: versions that share a stored tensor share its span,
    /// and its pages are given back only when the last of them lets go.
    let residentHolds = NIOLockedValueBox<[Int: Int]>([:])
    let populated = ManagedAtomic<Int>(0)

    /// Bytes this process has mapped in ahead of requests so far (``LoadedVersion/prefaultResidentPages(minimumBytes:)``
    /// on spans no other loaded version held): what swaps cost in page walks.
    public var prefaultedBytes: Int { populated.load(ordering: .relaxed) }

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
        let isNew = !FileManager.default.fileExists(atPath: (path as NSString).appendingPathComponent("data.mdb"))
        if isNew {
            guard configuration.create else { throw StoreError.missingStore(path: path) }
            guard !configuration.readOnly else {
                throw StoreError.lmdb(operation: "open \(path)", code: EINVAL, message: "a store cannot be created read-only")
            }
        }
        if let size = configuration.mapSize, size <= 0 {
            throw StoreError.lmdb(operation: "open \(path)", code: EINVAL, message: "map size \(size) is not positive")
        }
        let throughMap = configuration.writeMap && !configuration.readOnly
        if throughMap && !isNew {
            // Sized to the map on open, a file cut short would read as zeros past the cut: check it first.
            try Self.checkFileSizeBeforeOpening(path: path)
        }
        var e: OpaquePointer?
        try check(mdb_env_create(&e), "mdb_env_create")
        guard let e else { throw StoreError.lmdb(operation: "mdb_env_create", code: -1, message: "no environment") }
        var recorded = 0
        do throws(StoreError) {
            // Size 0 before open makes LMDB take the size recorded in the store's meta page.
            try check(mdb_env_set_mapsize(e, isNew ? configuration.mapSize ?? Self.defaultNewSize : 0), "mdb_env_set_mapsize")
            try check(mdb_env_set_maxreaders(e, configuration.maxReaders), "mdb_env_set_maxreaders")
            let flags = UInt32(MDB_NOTLS) | (configuration.readOnly ? UInt32(MDB_RDONLY) : 0) | (configuration.scratch ? UInt32(MDB_NOSYNC) : 0)
                | (throughMap ? UInt32(MDB_WRITEMAP) : 0)
            let rc = mdb_env_open(e, path, flags, 0o644)
            if (rc == EACCES || rc == EROFS) && !configuration.readOnly {
                throw StoreError.lmdb(operation: "mdb_env_open \(path)", code: rc,
                                      message: "\(String(cString: mdb_strerror(rc))); a store this process may only read can be opened read-only (arbiterd --read-only)")
            } else if rc == EACCES {
                throw StoreError.lmdb(operation: "mdb_env_open \(path)", code: rc,
                                      message: "\(String(cString: mdb_strerror(rc))); opened read-only, LMDB still records readers in \(path)/lock.mdb: "
                                        + "create it once with write access (any reader does), make it writable by this process, or mount the store read-only")
            }
            try check(rc, "mdb_env_open \(path)")
            // Before any page is read: a data file shorter than the pages its meta page counts would fault
            // (SIGBUS) at the first read past its end.
            try Self.checkFileSize(e, path: path)
            recorded = Self.mapSize(of: e)
            // Raising is safe here: this instance is new, so no transaction of this process is open on it.
            if let wanted = configuration.mapSize, wanted > recorded, !configuration.readOnly {
                try check(mdb_env_set_mapsize(e, wanted), "mdb_env_set_mapsize")
            }
        } catch {
            mdb_env_close(e)
            throw error
        }
        env = e
        writesThroughMap = throughMap
        recordedMapSize = recorded
        var dead: Int32 = 0
        mdb_reader_check(e, &dead)
        staleReadersCleared = dead
        var txn: OpaquePointer?
        var d: MDB_dbi = 0
        do {
            try check(mdb_txn_begin(e, nil, configuration.readOnly ? UInt32(MDB_RDONLY) : 0, &txn), "mdb_txn_begin")
            try check(mdb_dbi_open(txn, nil, 0, &d), "mdb_dbi_open")
            try check(mdb_txn_commit(txn), "mdb_txn_commit")
        } catch {
            if txn != nil { mdb_txn_abort(txn) }
            mdb_env_close(e)
            throw error
        }
        dbi = d
        readOnly = configuration.readOnly
    }

    /// Whether this process opened the store read-only (writes then fail with a message saying so).
    public let readOnly: Bool

    /// Whether writes go through the map (``StoreConfiguration/writeMap``).
    public let writesThroughMap: Bool

    /// Opens the store read-only for a moment to run ``checkFileSize(_:path:)`` (before an open that would
    /// size the file to the map). Called before this process has the store open, so closing it releases
    /// nothing another environment of this process holds.
    static func checkFileSizeBeforeOpening(path: String) throws(StoreError) {
        var e: OpaquePointer?
        try check(mdb_env_create(&e), "mdb_env_create")
        guard let e else { throw StoreError.lmdb(operation: "mdb_env_create", code: -1, message: "no environment") }
        defer { mdb_env_close(e) }
        try check(mdb_env_set_mapsize(e, 0), "mdb_env_set_mapsize")
        try check(mdb_env_open(e, path, UInt32(MDB_NOTLS) | UInt32(MDB_RDONLY), 0o644), "mdb_env_open \(path) (read-only, to check its size)")
        try checkFileSize(e, path: path)
    }

    /// Before a write through the map: disk for `extra` bytes and a sixteenth more, plus
    /// ``StoreConfiguration/writeMapSlack``, past the store's last page (no further than the map), so that no
    /// page this transaction writes lacks a block. Called with the write lock held.
    func reserveDisk(extra: Int) throws(StoreError) {
        var info = MDB_envinfo()
        var stat = MDB_stat()
        var fd: Int32 = -1
        guard mdb_env_info(env, &info) == 0, mdb_env_stat(env, &stat) == 0, mdb_env_get_fd(env, &fd) == 0 else { return }
        let from = (Int(info.me_last_pgno) + 1) * Int(stat.ms_psize)
        let length = min(StoreConfiguration.writeMapSlack + max(0, extra) + max(0, extra) / 16, Int(info.me_mapsize) - from)
        guard length > 0 else { return }
        let rc = posix_fallocate(fd, off_t(from), off_t(length))
        guard rc == 0 else {
            throw StoreError.lmdb(operation: "reserving \(length) bytes of disk for \(path)/data.mdb", code: rc,
                                  message: "\(String(cString: strerror(rc))); a write through the map needs its disk reserved first, and nothing was written")
        }
    }

    /// Fails if `data.mdb` is shorter than the pages the store's newest meta page counts: a truncated copy,
    /// or a file cut short by a full disk. Reading such a store would fault (SIGBUS) on the first page past
    /// the end, so every open checks first, and the server checks again before each poll of the store.
    static func checkFileSize(_ e: OpaquePointer, path: String) throws(StoreError) {
        var info = MDB_envinfo()
        var stat = MDB_stat()
        var fd: Int32 = -1
        guard mdb_env_info(e, &info) == 0, mdb_env_stat(e, &stat) == 0, mdb_env_get_fd(e, &fd) == 0 else { return }
        var st = Glibc.stat()
        guard fstat(fd, &st) == 0 else { return }
        let needed = (Int(info.me_last_pgno) + 1) * Int(stat.ms_psize)
        if Int(st.st_size) < needed {
            throw StoreError.corrupt("\(path)/data.mdb is \(st.st_size) bytes, but the store's pages reach \(needed) bytes: "
                + "the file was cut short (a partial copy, or a full disk). Restore it from a complete copy; nothing was read from it")
        }
    }

    /// Checks, without reading any page, that `data.mdb` still holds every page the store counts (see
    /// `checkFileSize`); a long-running reader calls it before reading pages it has not read before.
    public func checkIntegrity() throws(StoreError) {
        try Self.checkFileSize(env, path: path)
    }

    private static var defaultNewSize: Int { StoreConfiguration.defaultMapSize }

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

    /// Reader slots this process holds with a snapshot open now (`mdb_reader_list`, as `mdb_stat -r` shows
    /// them): one per loaded version, plus any read in progress. A version let go gives its slot back.
    public func readerSlotsHeld() -> Int {
        final class Lines { var text = "" }
        let lines = Lines()
        let ctx = Unmanaged.passUnretained(lines).toOpaque()
        mdb_reader_list(env, { msg, ctx in
            guard let msg, let ctx else { return 0 }
            Unmanaged<Lines>.fromOpaque(ctx).takeUnretainedValue().text += String(cString: msg)
            return 0
        }, ctx)
        let pid = String(getpid())
        // "       pid     thread     txnid": a slot whose txnid is "-" is free for its process to reuse.
        return lines.text.split(separator: "\n").filter { line in
            let f = line.split(separator: " ")
            return f.count == 3 && f[0] == pid && f[2] != "-"
        }.count
    }

    /// The map size in force in this process, in bytes.
    public var mapSize: Int {
        transactions.withLockedValue { _ in Self.mapSize(of: env) }
    }

    /// Bytes of the store's file resident in this process's map now: the `Rss` of the `data.mdb` mapping in
    /// /proc/self/smaps, which is what the process's resident size (statm) counts of the store. These pages are
    /// the kernel's page cache: shared, and dropped under memory pressure rather than swapped; the server's
    /// memory budget leaves them out. About a millisecond for a process of a few hundred mappings (the kernel
    /// walks the page tables); 0 where /proc is not there.
    public func residentMapBytes() -> Int {
        var fd: Int32 = -1
        var st = Glibc.stat()
        guard mdb_env_get_fd(env, &fd) == 0, fstat(fd, &st) == 0 else { return 0 }
        guard let text = Self.readProcFile("/proc/self/smaps") else { return 0 }
        return Self.mappedResidentBytes(smaps: text, inode: UInt64(st.st_ino), fileName: "data.mdb")
    }

    /// The sum of `Rss` over the mappings in `smaps` (the text of /proc/PID/smaps) of the file with this inode
    /// whose path ends in `/fileName`. One pass over the bytes, allocating nothing.
    public static func mappedResidentBytes(smaps: [UInt8], inode: UInt64, fileName: String) -> Int {
        let suffix = Array(("/" + fileName).utf8)
        return smaps.withUnsafeBufferPointer { text in
            let space: UInt8 = 0x20, colon: UInt8 = 0x3A, newline: UInt8 = 0x0A
            /// The decimal number starting at `i` (after spaces), or nil when none is there.
            func number(from start: Int, to end: Int) -> (value: UInt64, end: Int)? {
                var i = start
                while i < end && text[i] == space { i += 1 }
                var value: UInt64 = 0, digits = 0
                while i < end, text[i] >= 0x30, text[i] <= 0x39, digits < 19 {
                    value = value * 10 + UInt64(text[i] - 0x30)
                    digits += 1
                    i += 1
                }
                return digits > 0 ? (value, i) : nil
            }
            var total = 0
            var inMapping = false
            var start = 0
            while start < text.count {
                var end = start
                while end < text.count && text[end] != newline { end += 1 }
                defer { start = end + 1 }
                // The first word: "Key:" in a mapping's lines, else the header "start-end perms offset dev inode path".
                var word = start
                while word < end && text[word] != space { word += 1 }
                guard word > start else { continue }
                if text[word - 1] != colon {
                    // Skip three more words (perms, offset, dev) to the inode.
                    var i = word, words = 1
                    while words < 4 && i < end {
                        while i < end && text[i] == space { i += 1 }
                        while i < end && text[i] != space { i += 1 }
                        words += 1
                    }
                    guard let (found, after) = number(from: i, to: end), found == inode, after < end else {
                        inMapping = false
                        continue
                    }
                    var k = 0
                    while k < suffix.count && end - 1 - k > after && text[end - 1 - k] == suffix[suffix.count - 1 - k] { k += 1 }
                    inMapping = k == suffix.count
                } else if inMapping && word - start == 4 && text[start] == 0x52 && text[start + 1] == 0x73 && text[start + 2] == 0x73 {
                    // "Rss:  64 kB"
                    if let (kB, _) = number(from: word, to: end) { total += Int(kB) * 1024 }
                }
            }
            return total
        }
    }

    /// A /proc file's whole text (their sizes read as 0, so read to the end), or nil.
    static func readProcFile(_ path: String) -> [UInt8]? {
        let fd = Glibc.open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { Glibc.close(fd) }
        var out: [UInt8] = []
        out.reserveCapacity(256 << 10)
        var chunk = [UInt8](repeating: 0, count: 64 << 10)
        while true {
            let n = chunk.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { return n == 0 ? out : nil }
            out.append(contentsOf: chunk[0..<n])
            if out.count > 64 << 20 { return nil }  // not a smaps file any process has
        }
    }

    /// What `mdb_stat -e` reports of the store's size: the page size, the pages in use (the last page
    /// number + 1: the file's high-water mark, which deleting data does not lower — freed pages are reused by
    /// later writes instead), the pages the map allows, and `data.mdb`'s size in bytes — what the disk holds of
    /// it: a store written through its map (``StoreConfiguration/writeMap``) is a sparse file the size of the map,
    /// of which only the pages written and the disk reserved ahead of them take blocks.
    public struct PageStatistics: Equatable, Sendable {
        public var pageSize: Int
        public var pagesUsed: Int
        public var maxPages: Int
        public var fileBytes: Int
    }

    public func pageStatistics() -> PageStatistics {
        transactions.withLockedValue { _ in
            var info = MDB_envinfo()
            var stat = MDB_stat()
            var fd: Int32 = -1
            var st = Glibc.stat()
            guard mdb_env_info(env, &info) == 0, mdb_env_stat(env, &stat) == 0, mdb_env_get_fd(env, &fd) == 0, fstat(fd, &st) == 0 else {
                return PageStatistics(pageSize: 0, pagesUsed: 0, maxPages: 0, fileBytes: 0)
            }
            let page = Int(stat.ms_psize)
            return PageStatistics(pageSize: page, pagesUsed: info.me_last_pgno + 1, maxPages: info.me_mapsize / max(page, 1),
                                  fileBytes: writesThroughMap ? min(Int(st.st_size), Int(st.st_blocks) * 512) : Int(st.st_size))
        }
    }

    /// How many snapshots and write transactions this process has open on the store.
    public var openTransactions: Int {
        openCount.load(ordering: .sequentiallyConsistent)
    }

    private static func mapSize(of env: OpaquePointer) -> Int {
        var info = MDB_envinfo()
        mdb_env_info(env, &info)
        return info.me_mapsize
    }

    /// Begins a transaction, adopting a map grown by another process only when this process has no other
    /// transaction open (LMDB's rule for `mdb_env_set_mapsize`, and what keeps pinned pointers valid).
    private func begin(readOnly: Bool) throws(StoreError) -> OpaquePointer {
        if readOnly {
            let begun = transactions.withLockedValue { state -> Result<OpaquePointer, StoreError> in
                Result { () throws(StoreError) -> OpaquePointer in
                    var txn: OpaquePointer?
                    var rc = mdb_txn_begin(env, nil, UInt32(MDB_RDONLY), &txn)
                    if rc == MDB_MAP_RESIZED {
                        let open = openCount.load(ordering: .sequentiallyConsistent)
                        guard open == 0 else {
                            throw StoreError.mapOutgrown(path: path, mapSize: Self.mapSize(of: env), openTransactions: open)
                        }
                        rc = mdb_env_set_mapsize(env, 0)
                        if rc == 0 {
                            state.remaps += 1
                            rc = mdb_txn_begin(env, nil, UInt32(MDB_RDONLY), &txn)
                        }
                    }
                    try check(rc, "mdb_txn_begin (read)")
                    openCount.wrappingIncrement(ordering: .sequentiallyConsistent)
                    return txn!
                }
            }
            return try begun.get()
        }
        // A write transaction first waits for LMDB's writer lock, which another process — a trainer writing a
        // large version — may hold for seconds. It waits holding only `writers`: were it to hold
        // `transactions`, every snapshot opened and every one ended meanwhile (an event loop letting go of an
        // old version) would wait for that other process too. It is counted as open before it begins, so a
        // reader that meets a grown map meanwhile does not move the map under it.
        writers.lock()
        defer { writers.unlock() }
        do {
            openCount.wrappingIncrement(ordering: .sequentiallyConsistent)
            var txn: OpaquePointer?
            var rc = mdb_txn_begin(env, nil, 0, &txn)
            if rc == MDB_MAP_RESIZED {
                rc = transactions.withLockedValue { state -> Int32 in
                    // This transaction is the one counted; any other open one pins the map.
                    guard openCount.load(ordering: .sequentiallyConsistent) == 1 else { return MDB_MAP_RESIZED }
                    var r = mdb_env_set_mapsize(env, 0)
                    if r == 0 {
                        state.remaps += 1
                        r = mdb_txn_begin(env, nil, 0, &txn)
                    }
                    return r
                }
            }
            guard rc == 0 else {
                let open = openCount.wrappingDecrementThenLoad(ordering: .sequentiallyConsistent)
                if rc == MDB_MAP_RESIZED {
                    throw StoreError.mapOutgrown(path: path, mapSize: Self.mapSize(of: env), openTransactions: open)
                }
                try check(rc, "mdb_txn_begin (write)")
                preconditionFailure("unreachable")
            }
            return txn!
        }
    }

    /// Called once a transaction from `begin` has ended (committed or aborted). Takes no lock: an event loop
    /// that lets go of the last request on an old version ends its snapshot, and must never wait.
    func ended() {
        openCount.wrappingDecrement(ordering: .sequentiallyConsistent)
    }

    /// Opens a read snapshot that stays valid (and keeps what it sees mapped) until released.
    public func snapshot() throws(StoreError) -> ReadSnapshot {
        ReadSnapshot(environment: self, txn: try begin(readOnly: true))
    }

    /// Runs `body` in a write transaction and commits it; any throw aborts, leaving the store as it was.
    /// `reserving`: about how many bytes the transaction writes (a store written through its map reserves the
    /// disk for them first; ``StoreConfiguration/writeMap``).
    public func write<T>(reserving: Int = 0, _ body: (WriteTransaction) throws -> T) throws -> T {
        guard !readOnly else { throw StoreError.readOnly(path: path) }
        let txn = try begin(readOnly: false)
        defer { ended() }
        let w = WriteTransaction(txn: txn, dbi: dbi, mapSize: Self.mapSize(of: env))
        let result: T
        do {
            if writesThroughMap { try reserveDisk(extra: reserving) }
            result = try body(w)
        } catch {
            mdb_txn_abort(txn)
            throw error
        }
        let rc = mdb_txn_commit(txn)
        if rc == MDB_MAP_FULL { throw StoreError.mapFull(path: path, mapSize: w.mapSize) }
        try check(rc, "mdb_txn_commit")
        return result
    }
}

/// What `transactions` guards: the map's moves. (Never an empty struct: a zero-sized value would sit at the
/// lock's own address, which ThreadSanitizer reports as a race with the mutex.)
private struct TransactionCount {
    /// Times this process moved its map to a size another process set.
    var remaps = 0
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
