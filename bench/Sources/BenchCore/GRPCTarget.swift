import NIOCore

/// gRPC over HTTP/2 (cleartext, prior knowledge), spoken directly: each request is one HTTP/2 stream — a
/// HEADERS frame and DATA frames of at most 16 KiB, the last with END_STREAM, encoded once; only the stream
/// id is patched per send
/// (stream = 2 × seq + 1). The client advertises the largest flow-control windows at the handshake, so it
/// never has to send WINDOW_UPDATE during a run (2 GiB of answers per connection).
///
/// An answer is the stream's trailers (HEADERS with END_STREAM). A stream whose trailers come without a
/// message before them is a gRPC error (a trailers-only response); RST_STREAM is an error too.
public struct GRPCTarget: Target {
    public let name: String
    let template: [UInt8]
    /// Offsets of the 31-bit stream ids in `template`: the HEADERS frame's, then each DATA frame's.
    let streamOffsets: [Int]
    /// HTTP/2's initial SETTINGS_MAX_FRAME_SIZE: a larger message goes out as several DATA frames.
    static let maxFramePayload = 16_384
    public var requestBytes: Int { template.count }

    /// `path` is the method's, e.g. "/arbiter.bench.v1.Scorer/Score"; `message` the serialized protobuf.
    public init(name: String, path: String, message: [UInt8], authority: String) {
        self.name = name
        // HPACK, no Huffman, no dynamic table: indexed :method POST (static 3) and :scheme http (6), then
        // literals without indexing whose names come from the static table (:path 4, :authority 1,
        // content-type 31) or are literal (te).
        var block: [UInt8] = [0x83, 0x86]
        func string(_ s: String) {
            let b = Array(s.utf8)
            precondition(b.count < 127, "header value too long for this encoder")
            block.append(UInt8(b.count))
            block += b
        }
        block.append(0x04); string(path)
        block.append(0x01); string(authority)
        block += [0x0F, 0x10]; string("application/grpc")
        block.append(0x00); string("te"); string("trailers")
        var t: [UInt8] = []
        var offsets = [5]
        Self.frameHeader(&t, length: block.count, type: 0x1, flags: 0x4, stream: 1)  // END_HEADERS
        t += block
        var payload: [UInt8] = [0]  // not compressed
        payload += withUnsafeBytes(of: UInt32(message.count).bigEndian, Array.init)
        payload += message
        var start = 0
        repeat {
            let end = min(start + Self.maxFramePayload, payload.count)
            offsets.append(t.count + 5)
            Self.frameHeader(&t, length: end - start, type: 0x0, flags: end == payload.count ? 0x1 : 0, stream: 1)  // END_STREAM on the last
            t += payload[start..<end]
            start = end
        } while start < payload.count
        streamOffsets = offsets
        template = t
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
        // Wait for the server's SETTINGS and acknowledge it.
        var inbox = ByteBuffer()
        while true {
            while let (type, flags, _, _) = try Self.nextFrame(&inbox) {
                if type == 0x7 { throw BenchError("the gRPC server sent GOAWAY during the handshake") }
                if type == 0x4 && flags & 0x1 == 0 {
                    var ack: [UInt8] = []
                    Self.frameHeader(&ack, length: 0, type: 0x4, flags: 0x1, stream: 0)
                    try io.sendAll(ack)
                    return
                }
            }
            try io.receive(into: &inbox)
        }
    }

    public func encode(seq: UInt64, into buffer: inout [UInt8]) {
        if buffer.count != template.count { buffer = template }
        precondition(seq < 1 << 30, "HTTP/2 stream ids are 31 bits")
        let stream = UInt32(seq * 2 + 1).bigEndian
        withUnsafeBytes(of: stream) { s in
            for offset in streamOffsets {
                for i in 0..<4 { buffer[offset + i] = s[i] }
            }
        }
    }

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
                if flags & 0x1 != 0 {
                    out.append(Answer(requestID: UInt64(stream / 2), error: "grpc: DATA ended the stream without trailers"))
                    state.streamsWithMessage.remove(stream)
                }
            case 0x1 where stream != 0 && flags & 0x1 != 0:  // trailers
                let gotMessage = state.streamsWithMessage.remove(stream) != nil
                out.append(Answer(requestID: UInt64(stream / 2), error: gotMessage ? nil : "grpc: trailers-only response (an error status)"))
            case 0x3:  // RST_STREAM
                let code = payload.getInteger(at: payload.readerIndex, as: UInt32.self) ?? 0
                state.streamsWithMessage.remove(stream)
                out.append(Answer(requestID: UInt64(stream / 2), error: "grpc: RST_STREAM code \(code)"))
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
