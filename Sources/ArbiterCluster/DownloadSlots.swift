import Foundation
import Logging
import Synchronization

/// Download slots shared by the replicas of one host: lock files (`PATH.0`, `PATH.1`, …) that a replica holds
/// with `flock` while it downloads, decompresses and imports a version, so that replicas on one host stage a
/// few at a time rather than all at once. All at once, every download crawls to its end together and every
/// import then runs together; and one replica's import beside another's download made both about three times
/// slower than either alone (the memory both touch for the first time is what this host pays for; measured on
/// the local cluster: docs/CLUSTER.md). A lock held by a process goes with it, however it ends.
///
/// A wait has an end: after `maximumWait` a replica downloads without a slot (a neighbour stopped while holding
/// one must not keep this one from staging), and says so.
public struct DownloadSlots: Sendable {
    public let path: String
    public let count: Int
    public var maximumWait: Duration = .seconds(120)
    public var pollInterval: Duration = .milliseconds(20)

    /// `count` slots named `path.0` … `path.(count-1)`; the directory must exist (the files are created).
    public init(path: String, count: Int) throws {
        guard (1...64).contains(count) else { throw ClusterError.configuration("download slots must be 1...64, got \(count)") }
        let directory = URL(fileURLWithPath: path).deletingLastPathComponent().path
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: directory, isDirectory: &isDirectory), isDirectory.boolValue else {
            throw ClusterError.configuration("the download slots' directory \(directory) does not exist")
        }
        self.path = path
        self.count = count
    }

    /// A slot held, released by ``release()`` (or when the last reference goes, or by the process ending).
    /// Releasing twice is harmless: the descriptor is taken out once, so a second call cannot close a descriptor
    /// that the process has since reused for something else.
    public final class Held: Sendable {
        private let fd: Atomic<Int32>
        /// Which slot (nil: the wait ran out and none is held).
        public let slot: Int?
        public let waited: Duration

        init(fd: Int32, slot: Int?, waited: Duration) {
            self.fd = Atomic(fd)
            self.slot = slot
            self.waited = waited
        }

        /// Whether this still holds its slot.
        public var isHeld: Bool { fd.load(ordering: .acquiring) >= 0 }

        public func release() {
            let fd = self.fd.exchange(-1, ordering: .acquiringAndReleasing)
            if fd >= 0 { close(fd) }  // closing the only descriptor of the open file releases its flock
        }

        deinit { release() }
    }

    /// Waits for a free slot (polling, so that a cancelled task stops waiting at once).
    public func acquire(logger: Logger? = nil) async throws -> Held {
        let started = ContinuousClock.now
        var files: [Int32] = []
        defer { for fd in files where fd >= 0 { close(fd) } }
        for i in 0..<count {
            let fd = open("\(path).\(i)", O_RDWR | O_CREAT | O_CLOEXEC, 0o666)
            guard fd >= 0 else {
                throw ClusterError.io("cannot open the download slot \(path).\(i): \(String(cString: strerror(errno)))")
            }
            files.append(fd)
        }
        var said = false
        while true {
            for i in files.indices where flock(files[i], LOCK_EX | LOCK_NB) == 0 {
                let fd = files[i]
                files[i] = -1
                return Held(fd: fd, slot: i, waited: ContinuousClock.now - started)
            }
            let waited = ContinuousClock.now - started
            if waited >= maximumWait {
                logger?.warning("no download slot of \(path) came free in \(maximumWait): downloading without one")
                return Held(fd: -1, slot: nil, waited: waited)
            }
            if !said, waited >= .seconds(10) {
                logger?.info("waiting for a download slot of \(path) (\(count) shared by this host's replicas)")
                said = true
            }
            try await Task.sleep(for: pollInterval)
        }
    }
}
