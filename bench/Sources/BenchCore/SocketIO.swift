import NIOCore
import NIOSSL

#if canImport(Glibc)
import Glibc
#endif

/// A TCP socket for one connection of the load generator (blocking until `setNonBlocking`).
// Unchecked: one thread at a time uses a socket (the handshake, then the run's single driver thread).
public final class SocketIO: @unchecked Sendable {
    public let fd: Int32
    private var chunk = [UInt8](repeating: 0, count: 1 << 16)
    /// TLS over this socket, when the run speaks TLS.
    private var tls: TLSSession?

    public init(host: String, port: Int, tls context: NIOSSLContext? = nil) throws {
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = in_port_t(UInt16(truncatingIfNeeded: port).bigEndian)
        guard inet_pton(AF_INET, host == "localhost" ? "127.0.0.1" : host, &addr.sin_addr) == 1 else {
            throw BenchError("'\(host)' is not an IPv4 address")
        }
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue | SOCK_CLOEXEC.rawValue), 0)
        // Every stored property is set from here on, so a throw below runs `deinit`, which closes `fd`: it must
        // not be closed here too (a second close can shut a descriptor another thread has opened since).
        guard fd >= 0 else { throw BenchError("cannot create a socket: \(String(cString: strerror(errno)))") }
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard rc == 0 else {
            let why = String(cString: strerror(errno))
            throw BenchError("cannot connect to \(host):\(port): \(why)")
        }
        var one: Int32 = 1
        setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
        if let context {
            tls = try TLSSession(context: context, peer: try SocketAddress(ipAddress: host == "localhost" ? "127.0.0.1" : host, port: port))
        }
    }

    /// Whether TLS holds ciphertext the socket has not taken yet (poll for POLLOUT and call `sendSome`).
    public var hasPendingOutput: Bool { tls?.hasPending ?? false }

    deinit { if fd >= 0 { close(fd) } }

    /// Writes all of `bytes`, waiting while the socket is full.
    public func sendAll(_ bytes: [UInt8]) throws {
        if let tls {
            try tls.encrypt(bytes[...])
            try rawSendAll(Array(tls.unwritten))
            tls.wrote(tls.unwritten.count)
            return
        }
        try rawSendAll(bytes)
    }

    private func rawSendAll(_ bytes: [UInt8]) throws {
        var off = 0
        while off < bytes.count {
            let n = bytes[off...].withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if n > 0 { off += n; continue }
            if n < 0 && errno == EINTR { continue }
            if n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) {
                // A non-blocking socket that is full: wait until it drains.
                var p = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
                if poll(&p, 1, 1000) > 0 { continue }
            }
            throw BenchError("send failed: \(String(cString: strerror(errno)))")
        }
    }

    public func setNonBlocking() {
        _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
    }

    /// Writes from `bytes[offset...]` as much as the socket takes now; returns how many bytes it took
    /// (0 when it would block). Over TLS every byte is taken (encrypted at once) and the ciphertext the socket
    /// does not take waits: see `hasPendingOutput`.
    public func sendSome(_ bytes: [UInt8], from offset: Int) throws -> Int {
        if let tls {
            if offset < bytes.count { try tls.encrypt(bytes[offset...]) }
            try flushTLS(tls)
            return bytes.count - offset
        }
        return try rawSendSome(bytes[...], from: offset)
    }

    private func flushTLS(_ tls: TLSSession) throws {
        guard tls.hasPending else { return }
        let unwritten = tls.unwritten
        tls.wrote(try rawSendSome(unwritten, from: unwritten.startIndex))
    }

    private func rawSendSome(_ bytes: ArraySlice<UInt8>, from offset: Int) throws -> Int {
        var off = offset
        while off < bytes.endIndex {
            let n = bytes[off...].withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL | MSG_DONTWAIT)) }
            if n > 0 { off += n; continue }
            if n < 0 && errno == EINTR { continue }
            if n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) { break }
            throw BenchError("send failed: \(String(cString: strerror(errno)))")
        }
        return off - offset
    }

    /// Appends what arrives to `inbox`. With `dontWait`, returns false when nothing is waiting; otherwise
    /// waits up to `waitMillis` (handshakes) and throws if nothing came. Throws when the peer closed.
    @discardableResult
    public func receive(into inbox: inout ByteBuffer, dontWait: Bool = false, waitMillis: Int32 = 5000) throws -> Bool {
        if !dontWait {
            var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            if poll(&p, 1, waitMillis) == 0 {
                throw BenchError("no answer within \(waitMillis) ms: is the server on that port speaking the protocol given with --protocol?")
            }
        }
        let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, dontWait ? Int32(MSG_DONTWAIT) : 0) }
        if n > 0 {
            if let tls {
                try tls.decrypt(chunk[0..<n], into: &inbox)
                // Handshake messages and alerts the session answers with.
                if dontWait { try flushTLS(tls) } else if tls.hasPending {
                    try rawSendAll(Array(tls.unwritten))
                    tls.wrote(tls.unwritten.count)
                }
                return true
            }
            inbox.writeBytes(chunk[0..<n])
            return true
        }
        if n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) { return false }
        throw BenchError(n == 0 ? "the server closed the connection" : "recv failed: \(String(cString: strerror(errno)))")
    }

    public func shutdownBoth() { shutdown(fd, Int32(SHUT_RDWR)) }
}

/// Monotonic nanoseconds.
@inline(__always)
public func nowNanos() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
}

/// Sleeps until monotonic time `t` (ns).
@inline(__always)
public func sleep(until t: UInt64) {
    var ts = timespec(tv_sec: Int(t / 1_000_000_000), tv_nsec: Int(t % 1_000_000_000))
    while clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, nil) == EINTR {}
}

@_silgen_name("prctl")
func linuxPrctl(_ option: Int32, _ a: UInt, _ b: UInt, _ c: UInt, _ d: UInt) -> Int32

@_silgen_name("ppoll")
func linuxPpoll(_ fds: UnsafeMutablePointer<pollfd>, _ n: UInt, _ timeout: UnsafePointer<timespec>?, _ sigmask: UnsafeRawPointer?) -> Int32

/// 1 ns of timer slack for this thread (Linux PR_SET_TIMERSLACK), so sleeps wake on time.
public func tightenTimerSlack() { _ = linuxPrctl(29, 1, 0, 0, 0) }
