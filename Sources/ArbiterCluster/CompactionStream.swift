import ArbiterStore
import Foundation

/// Bytes read in order, to their end (a file, a pipe).
protocol ByteSource: AnyObject {
    /// What errors name.
    var name: String { get }
    /// Fills `buffer` unless the source ends first; returns how many bytes (0 at the end).
    func read(into buffer: UnsafeMutableRawBufferPointer) throws(ClusterError) -> Int
}

/// A store's compacted copy (`mdb_env_copyfd2` with `MDB_CP_COMPACT`) as a stream: LMDB writes it into a pipe
/// on a thread of its own while the reader takes it, so no file ever holds the copy (on a VM where memory
/// touched for the first time is dear, a 1 GiB scratch file cost 1–5 s to write). Read it to its end, then
/// ``finish()``; given up early, ``finish()`` (or the last reference going) reads the rest away, so the writer
/// is never left blocked on the pipe nor sent SIGPIPE.
final class CompactionStream: ByteSource, @unchecked Sendable {
    private let readEnd: Int32
    private let written = DispatchSemaphore(value: 0)
    /// Set by the writer thread before it signals `written`.
    private var failure: StoreError?
    private var finished = false
    let name: String

    init(environment: StoreEnvironment) throws(ClusterError) {
        name = "the compacted copy of \(environment.path)"
        var ends: [Int32] = [-1, -1]
        guard pipe(&ends) == 0 else {
            throw ClusterError.io("cannot make a pipe for \(name): \(String(cString: strerror(errno)))")
        }
        for end in ends { _ = fcntl(end, F_SETFD, FD_CLOEXEC) }
        readEnd = ends[0]
        let writeEnd = ends[1]
        #if os(Linux)
        _ = fcntl(writeEnd, 1031 /* F_SETPIPE_SZ */, Int32(1 << 20))  // fewer wake-ups; the default 64 KiB works too
        #endif
        let thread = Thread { [self] in
            do throws(StoreError) {
                try environment.copyCompacted(toDescriptor: writeEnd)
            } catch {
                failure = error
            }
            close(writeEnd)
            written.signal()
        }
        thread.name = "arbiter-compact"
        thread.start()
    }

    deinit {
        if !finished { drainAndWait() }
        close(readEnd)
    }

    func read(into buffer: UnsafeMutableRawBufferPointer) throws(ClusterError) -> Int {
        try PosixFile.readFully(readEnd, into: buffer, at: nil, name: name)
    }

    /// Reads whatever is left, waits for the copy to end, and throws what LMDB reported, if anything.
    func finish() throws(ClusterError) {
        guard !finished else { return }
        drainAndWait()
        if let failure { throw ClusterError.io("\(name) failed: \(failure)") }
    }

    private func drainAndWait() {
        finished = true
        let scratch = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 20, alignment: 16)
        defer { scratch.deallocate() }
        while true {
            let n = Foundation.read(readEnd, scratch.baseAddress!, scratch.count)
            if n == 0 || (n < 0 && errno != EINTR) { break }
        }
        written.wait()
    }
}
