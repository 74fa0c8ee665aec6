import Atomics
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// The bytes every connection holds, against one limit for the whole server: read buffers (a partial
/// frame), answers queued for the socket (ours and the channel's), and requests being scored off the event
/// loop with their answers. Connections re-count what they hold after each batch and at every sweep, and
/// add the difference here (one atomic add; no lock). While the total is over the limit, connections that
/// hold much (see `holdsBack`) stop reading and have new SCOREs shed with `OVERLOADED`; past a quarter over,
/// all do. Each connection also pauses on its own limits (see `ConnectionHandler`).
final class MemoryBudget: Sendable {
    let limit: Int
    private let used = ManagedAtomic<Int>(0)

    init(limit: Int) {
        self.limit = limit
    }

    var bytesInUse: Int { used.load(ordering: .relaxed) }

    var isExhausted: Bool { used.load(ordering: .relaxed) > limit }

    /// A quarter over the limit: past this, every connection is held back, not only those holding much.
    var isOverHardLimit: Bool { used.load(ordering: .relaxed) > limit + limit / 4 }

    /// Whether a connection holding `bytes` must stop reading and have its SCOREs shed. Over the limit,
    /// connections that hold little (under `smallHolding`: a client reading its answers) carry on, so that
    /// those holding the memory bear the cost, until the hard limit.
    func holdsBack(_ bytes: Int) -> Bool {
        let u = used.load(ordering: .relaxed)
        return u > limit + limit / 4 || (u > limit && bytes > Self.smallHolding)
    }

    static let smallHolding = 256 << 10

    /// Whether more than 16 MiB was held since the last trim.
    private let hadBurst = ManagedAtomic<Bool>(false)

    /// Returns freed heap memory to the OS (`malloc_trim`) once usage has fallen from over 16 MiB to under
    /// 1 MiB. Called about once a second, off the event loops (trimming walks the allocator's arenas).
    func trimIfDrained() {
        guard used.load(ordering: .relaxed) < 1 << 20, hadBurst.load(ordering: .relaxed) else { return }
        hadBurst.store(false, ordering: .relaxed)
        #if os(Linux)
        _ = glibcMallocTrim(0)
        #endif
    }

    func add(_ delta: Int) {
        guard delta != 0 else { return }
        let now = used.wrappingIncrementThenLoad(by: delta, ordering: .relaxed)
        if now > 16 << 20 && !hadBurst.load(ordering: .relaxed) { hadBurst.store(true, ordering: .relaxed) }
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
#endif
