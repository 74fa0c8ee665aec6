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
/// One user at a time per thread: the buffer is valid inside `body` only, and `body` must not call
/// something else that uses it (a model that scores through another model must give each its own turn).
public enum ThreadScratch {
    private static let key: pthread_key_t = {
        var k = pthread_key_t()
        let rc = pthread_key_create(&k) { p in free(p) }
        precondition(rc == 0, "pthread_key_create failed: \(rc)")
        return k
    }()

    /// Runs `body` with at least `bytes` bytes, 64-byte aligned, that this thread owns.
    @inlinable
    public static func with<T>(bytes: Int, _ body: (UnsafeMutableRawPointer) throws -> T) rethrows -> T {
        try body(buffer(bytes: bytes))
    }

    @usableFromInline
    static func buffer(bytes: Int) -> UnsafeMutableRawPointer {
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
