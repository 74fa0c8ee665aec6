#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#else
import Darwin
#endif

/// A scratch buffer per thread, for kernels that need more working memory than fits on the stack
/// (`withUnsafeTemporaryAllocation` heap-allocates above about 1 KiB): allocated on a thread's first use,
/// grown only when a larger request comes, freed when the thread ends. Scoring then allocates nothing.
///
/// One user at a time per thread and per buffer: the memory is valid inside `body` only, and `body` must
/// not call something else that uses the same buffer. Models use `ThreadScratch.models` (a model that scores
/// through another model must give each its own turn); a caller that holds its own inputs and outputs in
/// scratch while a model scores makes its own `ThreadLocalBuffer`.
public final class ThreadLocalBuffer: Sendable {
    // Written once in init; pthread keys are safe to use from any thread.
    private nonisolated(unsafe) var key = pthread_key_t()

    /// Makes a new per-thread buffer. Each one takes a pthread key for the life of the process (there are
    /// at least 128): make them once, as statics.
    public init() {
        let rc = pthread_key_create(&key) { p in free(p) }
        precondition(rc == 0, "pthread_key_create failed: \(rc)")
    }

    /// Runs `body` with at least `bytes` bytes, 64-byte aligned, that this thread owns.
    @inlinable
    public func with<T>(bytes: Int, _ body: (UnsafeMutableRawPointer) throws -> T) rethrows -> T {
        try body(buffer(bytes: bytes))
    }

    @usableFromInline
    func buffer(bytes: Int) -> UnsafeMutableRawPointer {
        // The first 64 bytes hold the capacity; the usable area follows, 64-byte aligned.
        if let p = pthread_getspecific(key) {
            let capacity = p.load(as: Int.self)
            if capacity >= bytes { return p + 64 }
            free(p)
        }
        let capacity = max(bytes, 16 << 10)
        var raw: UnsafeMutableRawPointer?
        guard posix_memalign(&raw, 64, capacity + 64) == 0, let p = raw else { fatalError("out of memory for \(capacity) bytes of scratch") }
        p.storeBytes(of: capacity, as: Int.self)
        pthread_setspecific(key, p)
        return p + 64
    }
}

/// The models' per-thread scratch (see `ThreadLocalBuffer`).
public enum ThreadScratch {
    public static let models = ThreadLocalBuffer()

    /// Runs `body` with at least `bytes` bytes of this thread's model scratch, 64-byte aligned.
    @inlinable
    public static func with<T>(bytes: Int, _ body: (UnsafeMutableRawPointer) throws -> T) rethrows -> T {
        try models.with(bytes: bytes, body)
    }
}
