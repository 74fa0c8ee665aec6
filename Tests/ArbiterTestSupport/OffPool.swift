import Foundation

/// Runs blocking or CPU-heavy work (a socket read that waits for a server, a training run) on a thread of
/// its own, so that it does not hold one of the few threads Swift concurrency runs every test's tasks on —
/// as many as the machine has cores, two here. Every test target runs in one process: a test that computes
/// for seconds on one of those threads delays every other test's awaits by as much, and under the sanitizers
/// (ten times slower) that made servers' HELLO timeouts fire and clients' requests fail in unrelated suites.
public func offPool<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { continuation in
        Thread { continuation.resume(with: Result { try body() }) }.start()
    }
}
