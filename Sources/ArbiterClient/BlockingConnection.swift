import ArbiterWire
import NIOCore

#if canImport(Glibc)
import Glibc
#endif

/// A plain blocking TCP connection that sends and receives raw frames, with no event loop: the
/// lowest-overhead client (for latency probes) and a way to send bytes no well-behaved client would (for
/// tests). Not thread-safe.
public final class BlockingConnection {
    public let fd: Int32
    private var inbox = ByteBuffer()
    private var chunk = [UInt8](repeating: 0, count: 1 << 16)

    /// Connects to an IPv4 address (or "localhost"). `receiveTimeoutSeconds` bounds each read (0 = none).
    public init(host: String = "127.0.0.1", port: Int, receiveTimeoutSeconds: Int = 0) throws {
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = in_port_t(UInt16(truncatingIfNeeded: port).bigEndian)
        guard inet_pton(AF_INET, host == "localhost" ? "127.0.0.1" : host, &addr.sin_addr) == 1 else {
            throw ClientError.protocolError("'\(host)' is not an IPv4 address")
        }
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue | SOCK_CLOEXEC.rawValue), 0)
        // Every stored property is set from here on, so a throw below runs `deinit`, which closes `fd`: it must
        // not be closed here too (a second close can shut a descriptor another thread has opened since).
        guard fd >= 0 else { throw ClientError.protocolError("cannot create a socket: \(String(cString: strerror(errno)))") }
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard rc == 0 else {
            let why = String(cString: strerror(errno))
            throw ClientError.protocolError("cannot connect to \(host):\(port): \(why)")
        }
        var one: Int32 = 1
        setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
        if receiveTimeoutSeconds > 0 {
            var tv = timeval(tv_sec: receiveTimeoutSeconds, tv_usec: 0)
            setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        }
    }

    deinit { if fd >= 0 { close(fd) } }

    /// Sends every byte (or stops quietly if the peer is gone).
    public func send(_ bytes: [UInt8]) {
        var off = 0
        while off < bytes.count {
            let n = bytes[off...].withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if n <= 0 { return }
            off += n
        }
    }

    /// Encodes and sends a frame, with `flags` forced into its header, stamped with the send time unless it
    /// carries a stamp of its own.
    public func send(_ frame: Frame, flags: FrameFlags = []) {
        var b = ByteBuffer()
        frame.encode(into: &b)
        if frame.header.sendStamp == 0 { FrameHeader.patchSendStamp(FrameHeader.sendStampNow(), in: &b, headerAt: 0) }
        var bytes = Array(b.readableBytesView)
        bytes[6] = flags.rawValue
        send(bytes)
    }

    /// Half-closes: the peer sees end of stream, and answers can still be read.
    public func shutdownWrite() { shutdown(fd, Int32(SHUT_WR)) }

    /// The next frame, or nil when the peer closed the connection. Throws on a read error or timeout, or a
    /// frame that does not decode.
    public func readFrame() throws -> Frame? {
        while true {
            if let raw = try FrameDecoder(maxBodyBytes: 1 << 26).decodeFrame(&inbox) {
                return try Frame.decode(header: raw.header, body: raw.body)
            }
            let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n == 0 { return nil }
            if n < 0 { throw ClientError.protocolError("recv failed: \(String(cString: strerror(errno)))") }
            inbox.writeBytes(chunk[0..<n])
            inbox.discardReadBytes()
        }
    }
}
