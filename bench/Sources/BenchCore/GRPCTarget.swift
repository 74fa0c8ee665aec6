import NIOCore

/// gRPC over HTTP/2 (cleartext, prior knowledge), spoken directly: each request is one HTTP/2 stream — a
/// HEADERS frame and DATA frames of at most 16 KiB, the last with END_STREAM, encoded once; only the stream
/// id is patched per send (stream = 2 × seq + 3). The client advertises the largest flow-control windows at
/// the handshake, so it never has to send WINDOW_UPDATE during a run (2 GiB of answers per connection).
///
/// Headers are compressed as a stock client's are (grpc-swift's and grpcio's HPACK encoders both index
/// what they send): the handshake makes one unmeasured call on stream 1 whose headers are literals with
/// incremental indexing, which puts :path, :authority, content-type, te and user-agent into the server's
/// dynamic table; every measured request then names each of them with one indexed byte.
///
/// An answer is the stream's trailers (HEADERS with END_STREAM). A stream whose trailers come without a
/// message before them is a gRPC error (a trailers-only response); RST_STREAM is an error too.
public struct GRPCTarget: Target {
    public let name: String
    /// The handshake's call: the same message, its headers entered into the server's HPACK table.
    let priming: [UInt8]
    /// The measured requests, sent in turn (request `seq` is `templates[seq % count]`); one size, so that their
    /// stream ids lie at the same offsets.
    let templates: [[UInt8]]
    /// Offsets of the 31-bit stream ids in `template`: the HEADERS frame's, then each DATA frame's.
    let streamOffsets: [Int]
    /// HTTP/2's initial SETTINGS_MAX_FRAME_SIZE: a larger message goes out as several DATA frames.
    static let maxFramePayload = 16_384
    static let userAgent = "arbiter-bench grpc-h2"
    /// What the priming call adds to the server's HPACK table; the handshake checks the server allows it.
    let hpackTableBytes: Int
    public var requestBytes: Int { templates[0].count }

    /// `path` is the method's, e.g. "/arbiter.bench.v1.Scorer/Score"; `message` the serialized protobuf.
    public init(name: String, path: String, message: [UInt8], authority: String) {
        self.init(name: name, path: path, messages: [message], authority: authority)
    }

    /// Several messages of one size, sent in turn (see ArbiterTarget's variants).
    public init(name: String, path: String, messages: [[UInt8]], authority: String) {
        precondition(!messages.isEmpty && Set(messages.map(\.count)).count == 1, "the messages of one target must be of one size")
        let message = messages[0]
        self.name = name
        // HPACK without Huffman coding. :method POST and :scheme http are in the static table (3 and 6).
        // The others go in as literals with incremental indexing (0x40 | static index of the name, or 0x40
        // and a literal name), in this order; the dynamic table then holds the newest first, from 62.
        let headers: [(staticName: UInt8?, name: String, value: String)] = [
            (4, ":path", path), (1, ":authority", authority), (31, "content-type", "application/grpc"),
            (nil, "te", "trailers"), (58, "user-agent", Self.userAgent),
        ]
        func string(_ s: String, into block: inout [UInt8]) {
            let b = Array(s.utf8)
            precondition(b.count < 127, "header value too long for this encoder")
            block.append(UInt8(b.count))
            block += b
        }
        var literal: [UInt8] = [0x83, 0x86]
        for h in headers {
            if let index = h.staticName {
                literal.append(0x40 | index)
            } else {
                literal.append(0x40)
                string(h.name, into: &literal)
            }
            string(h.value, into: &literal)
        }
        var indexed: [UInt8] = [0x83, 0x86]
        for i in headers.indices { indexed.append(0x80 | UInt8(62 + headers.count - 1 - i)) }
        // RFC 7541 §4.1: an entry takes its name's and value's lengths plus 32 bytes.
        hpackTableBytes = headers.reduce(0) { $0 + $1.name.utf8.count + $1.value.utf8.count + 32 }

        func stream(_ block: [UInt8], message: [UInt8], offsets: inout [Int]) -> [UInt8] {
            var payload: [UInt8] = [0]  // not compressed
            payload += withUnsafeBytes(of: UInt32(message.count).bigEndian, Array.init)
            payload += message
            var t: [UInt8] = []
            offsets.append(5)
            Self.frameHeader(&t, length: block.count, type: 0x1, flags: 0x4, stream: 1)  // END_HEADERS
            t += block
            var start = 0
            repeat {
                let end = min(start + Self.maxFramePayload, payload.count)
                offsets.append(t.count + 5)
                Self.frameHeader(&t, length: end - start, type: 0x0, flags: end == payload.count ? 0x1 : 0, stream: 1)  // END_STREAM on the last
                t += payload[start..<end]
                start = end
            } while start < payload.count
            return t
        }
        var unused: [Int] = []
        priming = stream(literal, message: message, offsets: &unused)
        var offsets: [Int] = []
        templates = messages.map { m in
            offsets = []
            return stream(indexed, message: m, offsets: &offsets)
        }
        streamOffsets = offsets
    }

    static func frameHeader(_ out: inout [UInt8], length: Int, type: UInt8, flags: UInt8, stream: UInt32) {
        out += [UInt8(length >> 16 & 0xFF), UInt8(length >> 8 & 0xFF), UInt8(length & 0xFF), type, flags]
        out += withUnsafeBytes(of: stream.bigEndian, Array.init)
    }

    public func handshake(_ io: SocketIO) throws {
        var out = Array("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".utf8)
        // SETTINGS: ENABLE_PUSH 0, INITIAL_WINDOW_SIZE 2^31-1; then widen the connection window to 2^31-1.
        var settings: [UInt8] = [0x00, 0x02, 0, 0, 0, 0, 0x00, 0x04]
        settings += withUnsafeBytes(of: UInt32(0x7FFF_FFFF).bigEndian, Array.init)
        Self.frameHeader(&out, length: settings.count, type: 0x4, flags: 0, stream: 0)
        out += settings
        Self.frameHeader(&out, length: 4, type: 0x8, flags: 0, stream: 0)
        out += withUnsafeBytes(of: UInt32(0x7FFF_FFFF - 65_535).bigEndian, Array.init)
        try io.sendAll(out)
        // Wait for the server's SETTINGS and acknowledge it; then make the priming call on stream 1 and wait
        // for its trailers.
        var inbox = ByteBuffer()
        var primed = false, gotMessage = false
        while true {
            while let (type, flags, stream, payload) = try Self.nextFrame(&inbox) {
                switch type {
                case 0x7:
                    throw BenchError("the gRPC server sent GOAWAY during the handshake")
                case 0x4 where flags & 0x1 == 0 && !primed:
                    var view = payload
                    while let (id, value) = view.readMultipleIntegers(as: (UInt16, UInt32).self) {
                        if id == 0x1 && Int(value) < hpackTableBytes {  // SETTINGS_HEADER_TABLE_SIZE
                            throw BenchError("the gRPC server allows an HPACK table of \(value) bytes; indexing this call's headers needs \(hpackTableBytes)")
                        }
                    }
                    var ack: [UInt8] = []
                    Self.frameHeader(&ack, length: 0, type: 0x4, flags: 0x1, stream: 0)
                    try io.sendAll(ack + priming)
                    primed = true
                case 0x0 where stream == 1:
                    if payload.readableBytes > 0 { gotMessage = true }
                case 0x1 where stream == 1 && flags & 0x1 != 0:
                    guard gotMessage else { throw BenchError("the gRPC server answered the handshake's call with an error status (trailers only)") }
                    return
                case 0x3 where stream == 1:
                    throw BenchError("the gRPC server reset the handshake's call (RST_STREAM)")
                default:
                    break
                }
            }
            try io.receive(into: &inbox)
        }
    }

    public func encode(seq: UInt64, into buffer: inout [UInt8]) {
        let template = templates[Int(seq % UInt64(templates.count))]
        if buffer.count != template.count {
            buffer = template
        } else if templates.count > 1 {
            buffer.withUnsafeMutableBytes { dst in template.withUnsafeBytes { dst.copyMemory(from: $0) } }
        }
        precondition(seq < 1 << 30 - 2, "HTTP/2 stream ids are 31 bits")
        let stream = UInt32(seq * 2 + 3).bigEndian
        withUnsafeBytes(of: stream) { s in
            for offset in streamOffsets {
                for i in 0..<4 { buffer[offset + i] = s[i] }
            }
        }
    }

    /// The request a measured stream carries (streams 3, 5, 7…; stream 1 was the handshake's).
    static func requestID(_ stream: UInt32) -> UInt64? { stream >= 3 ? UInt64((stream - 3) / 2) : nil }

    /// Reads one whole frame: (type, flags, stream, payload), or nil if it has not all arrived.
    static func nextFrame(_ inbox: inout ByteBuffer) throws -> (UInt8, UInt8, UInt32, ByteBuffer)? {
        guard inbox.readableBytes >= 9,
              let (l0, l1, l2, type, flags, rawStream) = inbox.getMultipleIntegers(
                at: inbox.readerIndex, as: (UInt8, UInt8, UInt8, UInt8, UInt8, UInt32).self) else { return nil }
        let length = Int(l0) << 16 | Int(l1) << 8 | Int(l2)
        guard inbox.readableBytes >= 9 + length else { return nil }
        inbox.moveReaderIndex(forwardBy: 9)
        let payload = inbox.readSlice(length: length)!
        return (type, flags, rawStream & 0x7FFF_FFFF, payload)
    }

    public func cut(_ inbox: inout ByteBuffer, _ state: inout CutState) throws -> [Answer] {
        var out: [Answer] = []
        while let (type, flags, stream, payload) = try Self.nextFrame(&inbox) {
            switch type {
            case 0x0 where stream != 0:  // DATA
                if payload.readableBytes > 0 { state.streamsWithMessage.insert(stream) }
                if flags & 0x1 != 0, let id = Self.requestID(stream) {
                    out.append(Answer(requestID: id, error: "grpc: DATA ended the stream without trailers"))
                    state.streamsWithMessage.remove(stream)
                }
            case 0x1 where flags & 0x1 != 0:  // trailers
                let gotMessage = state.streamsWithMessage.remove(stream) != nil
                if let id = Self.requestID(stream) {
                    out.append(Answer(requestID: id, error: gotMessage ? nil : "grpc: trailers-only response (an error status)"))
                }
            case 0x3:  // RST_STREAM
                let code = payload.getInteger(at: payload.readerIndex, as: UInt32.self) ?? 0
                state.streamsWithMessage.remove(stream)
                if let id = Self.requestID(stream) { out.append(Answer(requestID: id, error: "grpc: RST_STREAM code \(code)")) }
            case 0x7:  // GOAWAY
                let code = payload.getInteger(at: payload.readerIndex + 4, as: UInt32.self) ?? 0
                throw BenchError("the gRPC server sent GOAWAY (error code \(code))")
            default:
                break  // response HEADERS, SETTINGS acks, WINDOW_UPDATE, PING: nothing to record
            }
        }
        inbox.discardReadBytes()
        return out
    }
}
