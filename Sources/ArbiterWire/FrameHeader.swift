import NIOCore
#if canImport(Glibc)
import Glibc
#endif

/// The fixed 32-byte header that starts every frame, in both directions.
///
/// All integers are little-endian. See `proto-spec/PROTOCOL.md`, section "Framing".
///
/// | offset | size | field |
/// | --- | --- | --- |
/// | 0 | 4 | magic `"ARBT"` (41 52 42 54) |
/// | 4 | 1 | protocol version (1) |
/// | 5 | 1 | opcode |
/// | 6 | 1 | flags (bit 0: body is zstd-compressed) |
/// | 7 | 1 | status (0 on requests) |
/// | 8 | 8 | request id |
/// | 16 | 4 | body length in bytes, as sent |
/// | 20 | 4 | requests: the client's send stamp (µs, its own clock, low 32 bits; 0 = none); responses: 0 |
/// | 24 | 8 | requests: deadline budget in µs (0 = none); responses: server time in µs |
public struct FrameHeader: Equatable, Hashable, Sendable {
    /// `"ARBT"` read as a little-endian `UInt32`.
    public static let magic: UInt32 = 0x5442_5241
    /// The size of the header on the wire.
    public static let size = 32
    /// The only protocol version this codec speaks.
    public static let currentVersion: UInt8 = 1

    public var version: UInt8
    public var opcode: UInt8
    public var flags: FrameFlags
    public var status: UInt8
    public var requestID: UInt64
    public var bodyLength: UInt32
    /// On requests, optionally, the low 32 bits of the client's monotonic clock in microseconds when it sent
    /// the frame (0 = not stamped): the server learns the clocks' offset from the smallest differences it
    /// sees and so how long a request waited before it was read (PROTOCOL.md, section 7). 0 on responses.
    public var sendStamp: UInt32
    /// On requests, the caller's budget in microseconds measured from the server's receipt of the frame
    /// (0 = no deadline). On responses, the microseconds the server held the request.
    public var time: UInt64

    public init(version: UInt8 = FrameHeader.currentVersion, opcode: UInt8, flags: FrameFlags = [],
                status: UInt8 = 0, requestID: UInt64, bodyLength: UInt32 = 0, sendStamp: UInt32 = 0, time: UInt64 = 0) {
        self.version = version
        self.opcode = opcode
        self.flags = flags
        self.status = status
        self.requestID = requestID
        self.bodyLength = bodyLength
        self.sendStamp = sendStamp
        self.time = time
    }

    /// A send stamp for a request sent now: the monotonic clock in µs, low 32 bits, never 0.
    public static func sendStampNow() -> UInt32 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        let micros = UInt64(ts.tv_sec) &* 1_000_000 &+ UInt64(ts.tv_nsec) / 1_000
        let stamp = UInt32(truncatingIfNeeded: micros)
        return stamp == 0 ? 1 : stamp
    }

    /// Overwrites the send stamp of a header already written at `headerIndex`.
    @inlinable
    public static func patchSendStamp(_ stamp: UInt32, in buffer: inout ByteBuffer, headerAt headerIndex: Int) {
        buffer.setInteger(stamp, at: headerIndex + 20, endianness: .little)
    }

    /// Writes the header; the body length is taken from `bodyLength`.
    ///
    /// Stores the 32 bytes through one raw pointer: this runs once per answer, and the per-integer
    /// `ByteBuffer` writes showed up in the server's profile at capacity.
    @inlinable
    public func write(to buffer: inout ByteBuffer) {
        buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: FrameHeader.size) { p in
            p.storeBytes(of: FrameHeader.magic.littleEndian, toByteOffset: 0, as: UInt32.self)
            p.storeBytes(of: version, toByteOffset: 4, as: UInt8.self)
            p.storeBytes(of: opcode, toByteOffset: 5, as: UInt8.self)
            p.storeBytes(of: flags.rawValue, toByteOffset: 6, as: UInt8.self)
            p.storeBytes(of: status, toByteOffset: 7, as: UInt8.self)
            p.storeBytes(of: requestID.littleEndian, toByteOffset: 8, as: UInt64.self)
            p.storeBytes(of: bodyLength.littleEndian, toByteOffset: 16, as: UInt32.self)
            p.storeBytes(of: sendStamp.littleEndian, toByteOffset: 20, as: UInt32.self)
            p.storeBytes(of: time.littleEndian, toByteOffset: 24, as: UInt64.self)
            return FrameHeader.size
        }
    }

    /// Overwrites the body-length field of a header already written at `headerIndex`.
    @inlinable
    public static func patchBodyLength(_ length: UInt32, in buffer: inout ByteBuffer, headerAt headerIndex: Int) {
        buffer.setInteger(length, at: headerIndex + 16, endianness: .little)
    }

    /// Overwrites the time field of a header already written at `headerIndex`.
    @inlinable
    public static func patchTime(_ time: UInt64, in buffer: inout ByteBuffer, headerAt headerIndex: Int) {
        buffer.setInteger(time, at: headerIndex + 24, endianness: .little)
    }

    /// Reads a header without judging it. Returns nil when fewer than 32 bytes are readable.
    @inlinable
    public static func peek(_ buffer: ByteBuffer) -> (magic: UInt32, header: FrameHeader)? {
        guard let (magic, version, opcode, flags, status, requestID, length, stamp, time) = buffer.getMultipleIntegers(
            at: buffer.readerIndex, endianness: .little,
            as: (UInt32, UInt8, UInt8, UInt8, UInt8, UInt64, UInt32, UInt32, UInt64).self)
        else { return nil }
        return (magic, FrameHeader(version: version, opcode: opcode, flags: FrameFlags(rawValue: flags),
                                   status: status, requestID: requestID, bodyLength: length, sendStamp: stamp, time: time))
    }
}

/// Per-frame flags.
public struct FrameFlags: OptionSet, Hashable, Sendable {
    public let rawValue: UInt8
    public init(rawValue: UInt8) { self.rawValue = rawValue }

    /// The body is one zstd frame whose header declares the decompressed size. Allowed only after HELLO
    /// negotiated zstd.
    public static let zstd = FrameFlags(rawValue: 1 << 0)
    /// Every flag bit protocol v1 defines; a frame with another bit set is malformed.
    public static let known: FrameFlags = [.zstd]
}
