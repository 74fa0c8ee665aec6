import Atomics
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// One limit on the server's memory. Two counts meet it:
///
/// - what connections hold — read buffers (a partial frame), answers queued for the socket (ours and the
///   channel's), requests being scored off the event loop with their answers. Connections re-count after each
///   batch and at every sweep, and add the difference here (one atomic add; no lock). This count moves at once.
/// - the process's resident memory (RSS: heap, stacks, models copied out of the map, the binary and its
///   libraries) less the store's mapped pages (the kernel's page cache: shared, and dropped under pressure
///   rather than swapped), sampled every 100 ms by `sample()` when `countsProcess` is set. This count catches
///   what connections cannot see: allocator slack, transient buffers, the runtime, the models.
///
/// `bytesInUse` is the larger of the process sample and the connections' count plus what the process held
/// besides them at the last sample. Past 70% of the limit the budget is in use: new SCOREs from connections
/// that hold much and do not read their answers are shed with `OVERLOADED`, those connections stop reading
/// (see `holdsBack`), and those that leave their answers unread for a second are closed. Past 85%, every
/// connection stops reading and every SCORE is shed; the rest is headroom for work already under way and
/// for the 100 ms between samples, so that the process stays under the limit (the soak at twice capacity
/// with misbehaving clients peaked 4 MiB over a 256 MiB limit with the hard line at 90%). Freed heap is given
/// back to the OS (`malloc_trim`) when the process holds much more than its connections account for.
public final class MemoryBudget: Sendable {
    let limit: Int
    /// Whether the process's resident memory is sampled and counted (arbiterd); off, only what connections
    /// hold is (a server embedded in a larger process, such as the tests).
    let countsProcess: Bool
    private let held = ManagedAtomic<Int>(0)
    /// The process's resident bytes (less the store's) at the last sample, and what of it was not held by
    /// connections.
    private let process = ManagedAtomic<Int>(0)
    private let own = ManagedAtomic<Int>(0)
    private let lastTrim = ManagedAtomic<UInt64>(0)
    private let statm: Int32
    /// The store's resident mapped bytes (read once a second: the `Rss` of its mapping in /proc/self/smaps), and when.
    private let storeResident: (@Sendable () -> Int)?
    private let store = ManagedAtomic<Int>(0)
    private let storeSampledAt = ManagedAtomic<UInt64>(0)

    init(limit: Int, countsProcess: Bool = false, storeResident: (@Sendable () -> Int)? = nil) {
        self.limit = limit
        self.countsProcess = countsProcess
        self.storeResident = storeResident
        statm = countsProcess ? open("/proc/self/statm", O_RDONLY | O_CLOEXEC) : -1
        sample()
    }

    deinit {
        if statm >= 0 { close(statm) }
    }

    /// The process's resident memory less the store's mapped pages, at the last sample (0 when not counted).
    var processBytes: Int { process.load(ordering: .relaxed) }

    /// The store's mapped pages resident at the last sample (left out of the budget).
    var storeBytes: Int { store.load(ordering: .relaxed) }

    /// The memory counted against the limit.
    var bytesInUse: Int {
        max(process.load(ordering: .relaxed), own.load(ordering: .relaxed) + held.load(ordering: .relaxed))
    }

    /// Past 70% of the limit: connections that hold much and do not read are held back.
    var isExhausted: Bool { bytesInUse > softLimit }

    var softLimit: Int { limit / 10 * 7 }
    /// Past 85% of the limit: every connection is held back, not only those holding much.
    var hardLimit: Int { limit / 20 * 17 }

    /// Whether a connection holding `bytes` must stop reading and have its SCOREs shed. Past the soft limit,
    /// connections that hold little (under `smallHolding`), or that read their answers, carry on — those
    /// that hold the memory bear the cost — until the hard limit.
    func holdsBack(_ bytes: Int, readsAnswers: Bool) -> Bool {
        let u = bytesInUse
        return u > hardLimit || (u > softLimit && bytes > Self.smallHolding && !readsAnswers)
    }

    static let smallHolding = 256 << 10

    func add(_ delta: Int) {
        guard delta != 0 else { return }
        held.wrappingIncrement(by: delta, ordering: .relaxed)
    }

    /// Reads the process's resident memory (every 100 ms, off the event loops). When the process holds more
    /// than its connections account for by over an eighth of the limit (at least 8 MiB) — freed memory the
    /// allocator kept — that memory is given back to the OS, at most once a second.
    func sample(now: UInt64 = DispatchTime.now().uptimeNanoseconds) {
        guard countsProcess, let resident = readResident() else { return }
        if let storeResident, now &- storeSampledAt.load(ordering: .relaxed) >= 1_000_000_000 {
            storeSampledAt.store(now, ordering: .relaxed)
            store.store(storeResident(), ordering: .relaxed)
        }
        let counted = max(0, resident - store.load(ordering: .relaxed))
        let connections = held.load(ordering: .relaxed)
        var current = counted
        if counted - connections - own.load(ordering: .relaxed) > max(8 << 20, limit / 8),
           now &- lastTrim.load(ordering: .relaxed) >= 1_000_000_000 {
            lastTrim.store(now, ordering: .relaxed)
            #if os(Linux)
            _ = glibcMallocTrim(0)
            #endif
            current = readResident().map { max(0, $0 - store.load(ordering: .relaxed)) } ?? counted
            // What remains besides the connections is the process's own: models, runtime, slack that stays.
            own.store(max(0, current - connections), ordering: .relaxed)
        } else if counted - connections < own.load(ordering: .relaxed) {
            // The process's own fell (a model unloaded, a trim by the allocator itself).
            own.store(max(0, counted - connections), ordering: .relaxed)
        }
        process.store(current, ordering: .relaxed)
    }

    /// The resident set, from /proc/self/statm.
    private func readResident() -> Int? {
        guard statm >= 0 else { return nil }
        var buffer = [UInt8](repeating: 0, count: 128)
        let n = buffer.withUnsafeMutableBytes { pread(statm, $0.baseAddress, 128, 0) }
        guard n > 0 else { return nil }
        let fields = buffer[0..<n].split(separator: UInt8(ascii: " ")).prefix(3).compactMap { Int(String(decoding: $0, as: UTF8.self)) }
        guard fields.count == 3 else { return nil }
        return fields[1] * Int(sysconf(Int32(_SC_PAGESIZE)))
    }

    /// Large blocks (128 KiB and up: frames, decompressed bodies, answers) come straight from the OS and go
    /// back to it when freed. glibc's default threshold rises with every large block freed, up to 32 MiB,
    /// after which such blocks stay in its arenas and the process keeps its peak. Process-wide: arbiterd
    /// calls it once at start.
    public static func tuneAllocator() {
        #if os(Linux)
        _ = glibcMallopt(-3 /* M_MMAP_THRESHOLD */, 128 << 10)
        #endif
    }

    /// A quarter of the memory this process may use: the machine's, or its cgroup's limit if lower; at
    /// least 64 MiB.
    static func defaultLimit() -> Int {
        var machine = Int(sysconf(Int32(_SC_PHYS_PAGES))) * Int(sysconf(Int32(_SC_PAGESIZE)))
        if machine <= 0 { machine = 4 << 30 }
        for path in ["/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"] {
            if let text = try? String(contentsOfFile: path, encoding: .utf8),
               let v = Int(text.trimmingCharacters(in: .whitespacesAndNewlines)), v > 0 {
                machine = min(machine, v)
            }
        }
        return max(64 << 20, machine / 4)
    }
}

#if os(Linux)
@_silgen_name("malloc_trim")
private func glibcMallocTrim(_ pad: Int) -> Int32
@_silgen_name("mallopt")
private func glibcMallopt(_ param: Int32, _ value: Int32) -> Int32
#endif
