import NIOCore

/// A frame as cut from the stream: its header and its body bytes, still compressed if the flag says so.
public struct RawFrame: Sendable {
    public var header: FrameHeader
    public var body: ByteBuffer

    public init(header: FrameHeader, body: ByteBuffer) {
        self.header = header
        self.body = body
    }
}

/// Cuts a byte stream into frames. It judges the header before waiting for the body, so a frame over the
/// limit is refused before anything is allocated for it; the body is a slice of the received bytes, not a
/// copy. A partial frame asks for more data.
///
/// Errors it throws (all close the connection): `BAD_MAGIC`, `UNSUPPORTED_VERSION`, `FRAME_TOO_LARGE`.
public struct FrameDecoder: NIOSingleStepByteToMessageDecoder {
    public typealias InboundOut = RawFrame

    /// Largest body accepted, in bytes.
    public let maxBodyBytes: UInt32

    public init(maxBodyBytes: UInt32) {
        self.maxBodyBytes = maxBodyBytes
    }

    public mutating func decode(buffer: inout ByteBuffer) throws -> RawFrame? {
        try decodeFrame(&buffer)
    }

    public mutating func decodeLast(buffer: inout ByteBuffer, seenEOF: Bool) throws -> RawFrame? {
        try decodeFrame(&buffer)
    }

    /// The decoding step itself, with a typed error, for callers outside a channel pipeline.
    @inlinable
    public func decodeFrame(_ buffer: inout ByteBuffer) throws(WireError) -> RawFrame? {
        // Judge the magic as soon as 4 bytes are here, so garbage is refused without waiting for 32 bytes.
        if buffer.readableBytes >= 4, let magic = buffer.getInteger(at: buffer.readerIndex, endianness: .little, as: UInt32.self),
           magic != FrameHeader.magic {
            throw WireError(.badMagic, "frame does not start with the magic \"ARBT\" (41 52 42 54)")
        }
        guard let (_, header) = FrameHeader.peek(buffer) else { return nil }
        guard header.version == FrameHeader.currentVersion else {
            throw WireError(.unsupportedVersion,
                            "frame is protocol version \(header.version); this server speaks version \(FrameHeader.currentVersion)",
                            requestID: header.requestID)
        }
        guard header.bodyLength <= maxBodyBytes else {
            throw WireError(.frameTooLarge,
                            "body of \(header.bodyLength) bytes is over the limit of \(maxBodyBytes) bytes",
                            requestID: header.requestID)
        }
        let total = FrameHeader.size + Int(header.bodyLength)
        guard buffer.readableBytes >= total else { return nil }
        buffer.moveReaderIndex(forwardBy: FrameHeader.size)
        let body = buffer.readSlice(length: Int(header.bodyLength))!
        return RawFrame(header: header, body: body)
    }
}
