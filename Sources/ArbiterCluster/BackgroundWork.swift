import Foundation
import NIOConcurrencyHelpers
import NIOPosix

/// Threads for a replica's bulk work — checking and decompressing a downloaded version, importing it into the
/// store. While the replica serves traffic the work runs in Linux's SCHED_IDLE class: on the cores the event
/// loops leave idle, and a loop that wakes takes its core back at once. (At normal priority, four replicas
/// each decompressing and importing a 256 MiB version on this 2-core machine held requests for over a second.)
/// Under saturation the work waits: serving comes first, and a version not yet staged is not yet promoted.
/// A replica that serves nothing yet (a cold start) has no requests of its own to protect, and on a saturated
/// machine idle cores may never come: its work runs at nice 10 instead (``yieldsToServing(_:)``), a share of a
/// busy core (about a tenth against a normal thread) that keeps it joining without taking the cores its
/// neighbours on a shared host serve from. (At normal priority, a replica cold-starting with a 1 GiB version
/// beside four serving ones on this 2-core machine made their load time out.)
///
/// Two threads, one per class: an unprivileged thread cannot leave SCHED_IDLE (RLIMIT_NICE is 0 by default),
/// so work moves between them instead. A caller runs its pieces one at a time, so their order holds.
public final class BackgroundWork: Sendable {
    let idlePool: NIOThreadPool
    /// Nice 10: for a replica that serves nothing.
    let nicedPool: NIOThreadPool
    private let yields = NIOLockedValueBox(true)

    /// `idle`: the idle thread is SCHED_IDLE and the other at nice 10 (else both keep the callers' priority; tests).
    public init(idle: Bool = true) {
        idlePool = NIOThreadPool(numberOfThreads: 1)
        idlePool.start()
        nicedPool = NIOThreadPool(numberOfThreads: 1)
        nicedPool.start()
        if idle {
            nicedPool.submit { _ in
                #if os(Linux)
                _ = setpriority(__priority_which_t(PRIO_PROCESS.rawValue), 0, 10)
                #endif
            }
            idlePool.submit { _ in
                #if os(Linux)
                var param = sched_param()
                param.sched_priority = 0
                if sched_setscheduler(0, 5 /* SCHED_IDLE */, &param) != 0 {
                    _ = setpriority(__priority_which_t(PRIO_PROCESS.rawValue), 0, 19)
                }
                #endif
            }
        }
    }

    /// Whether work yields to serving (SCHED_IDLE; the default) or runs at nice 10 (the replica serves nothing).
    /// Takes effect from the next piece of work.
    public func yieldsToServing(_ value: Bool) {
        yields.withLockedValue { $0 = value }
    }

    public var isYieldingToServing: Bool { yields.withLockedValue { $0 } }

    /// Runs `body` on the background thread of the current class and returns what it returns.
    public func run<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await (isYieldingToServing ? idlePool : nicedPool).runIfActive(body)
    }

    public func shutdown() async throws {
        try await idlePool.shutdownGracefully()
        try await nicedPool.shutdownGracefully()
    }
}
