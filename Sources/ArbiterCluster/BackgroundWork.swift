import Foundation
import NIOPosix

/// A thread for a replica's bulk work — checking and decompressing a downloaded version, importing it into
/// the store — in Linux's SCHED_IDLE class: it runs on the cores the event loops leave idle, and a loop that
/// wakes takes its core back at once. (At normal priority, four replicas each decompressing and importing a
/// 256 MiB version on this 2-core machine held requests for over a second.) Under saturation the work waits:
/// serving comes first, and a version not yet staged is not yet promoted.
public final class BackgroundWork: Sendable {
    let pool: NIOThreadPool

    /// `idle`: SCHED_IDLE (else the callers' priority; tests).
    public init(idle: Bool = true) {
        pool = NIOThreadPool(numberOfThreads: 1)
        pool.start()
        if idle {
            pool.submit { _ in
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

    /// Runs `body` on the background thread and returns what it returns.
    public func run<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await pool.runIfActive(body)
    }

    public func shutdown() async throws {
        try await pool.shutdownGracefully()
    }
}
