import ArbiterWire
import Foundation
import Testing
import BenchCore

#if canImport(Glibc)
import Glibc
#endif

/// A one-connection frame echo server (like bench/c/floor_echo.c) that stalls once, for `stallMillis`,
/// before answering its `stallAt`-th frame.
// Unchecked: every stored property is a `let` set in init; the file descriptors are used by one thread.
final class StallingEchoServer: @unchecked Sendable {
    let listener: Int32
    let port: Int
    let stallAt: Int
    let stallMillis: UInt32

    init(stallAt: Int, stallMillis: UInt32) throws {
        self.stallAt = stallAt
        self.stallMillis = stallMillis
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        addr.sin_port = 0
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { p -> Bool in
                bind(fd, p, len) == 0 && listen(fd, 4) == 0 && getsockname(fd, p, &len) == 0
            }
        }
        guard bound else { throw BenchError("cannot listen: \(String(cString: strerror(errno)))") }
        listener = fd
        port = Int(UInt16(bigEndian: addr.sin_port))
        let t = Thread { [self] in serve() }
        t.start()
    }

    private func readFully(_ fd: Int32, _ p: UnsafeMutableRawPointer, _ n: Int) -> Bool {
        var off = 0
        while off < n {
            let r = recv(fd, p + off, n - off, 0)
            if r <= 0 { return false }
            off += r
        }
        return true
    }

    private func serve() {
        let fd = accept(listener, nil, nil)
        guard fd >= 0 else { return }
        var one: Int32 = 1
        setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: 1 << 16, alignment: 8)
        defer { buffer.deallocate(); close(fd); close(listener) }
        var frames = 0
        while readFully(fd, buffer, 32) {
            let bodyLength = Int(buffer.loadUnaligned(fromByteOffset: 16, as: UInt32.self).littleEndian)
            guard bodyLength <= (1 << 16) - 32, readFully(fd, buffer + 32, bodyLength) else { return }
            if frames == stallAt { usleep(stallMillis * 1000) }
            frames += 1
            guard send(fd, buffer, 32 + bodyLength, Int32(MSG_NOSIGNAL)) == 32 + bodyLength else { return }
        }
    }
}

@Suite struct StallTests {
    /// One 100 ms stall at 1,000 requests/s with one request in flight: the ~100 requests scheduled during the
    /// stall wait behind it. Measured from their scheduled times they show the stall; measured from their
    /// actual sends (what a closed-loop harness reports) only the one stalled request does.
    @Test func correctedLatencyShowsAStallThatServiceTimeHides() throws {
        // HELLO is frame 0; the stall hits about 1 s into the 2 s measured window.
        let server = try StallingEchoServer(stallAt: 1_500, stallMillis: 100)
        var config = LoadConfiguration(port: server.port, rate: 1_000)
        config.inFlightPerConnection = 1
        config.warmupSeconds = 0.5
        config.durationSeconds = 2
        config.timeoutMillis = 2_000
        let target = ArbiterTarget(name: "ping", frame: Frame(requestID: 0, message: .ping([UInt8](repeating: 7, count: 32))))
        let result = try LoadGenerator.run(target, config)
        let latency = Summary(result.latency), service = Summary(result.service)

        #expect(result.errors.isEmpty, "errors: \(result.errors)")
        #expect(result.completed >= 1_990 && result.completed <= 2_010, "completed \(result.completed)")
        // The stall is in the corrected figures: its max is the whole stall, and ~5% of the requests waited
        // behind it, so even p99 is tens of milliseconds.
        #expect(latency.max >= 100_000, "corrected max \(latency.max) µs")
        #expect(latency.p999 >= 90_000, "corrected p99.9 \(latency.p999) µs")
        #expect(latency.p99 >= 40_000, "corrected p99 \(latency.p99) µs")
        // From the actual send, only the stalled request itself is slow: 1 of 2,000, above p99.9.
        #expect(service.max >= 100_000, "service max \(service.max) µs")
        #expect(service.p999 < 20_000, "service p99.9 \(service.p999) µs")
        #expect(service.p99 < 10_000, "service p99 \(service.p99) µs")
    }

    /// An unanswered request is recorded at the timeout and counted, never dropped.
    @Test func unansweredRequestsAreRecordedAtTheTimeout() throws {
        // Stall the first measured frames for longer than the timeout.
        let server = try StallingEchoServer(stallAt: 5, stallMillis: 1_500)
        var config = LoadConfiguration(port: server.port, rate: 200)
        config.inFlightPerConnection = 4
        config.warmupSeconds = 0
        config.durationSeconds = 1
        config.timeoutMillis = 300
        let target = ArbiterTarget(name: "ping", frame: Frame(requestID: 0, message: .ping([])))
        let result = try LoadGenerator.run(target, config)
        let timeouts = result.errors["timeout"] ?? 0
        #expect(timeouts > 0)
        #expect(result.completed + timeouts == 200, "completed \(result.completed) + timeouts \(timeouts)")
        #expect(Summary(result.latency).max >= 300_000 * 0.99)
        #expect(result.latency.totalCount == 200)
    }
}
