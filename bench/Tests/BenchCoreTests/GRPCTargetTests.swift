@testable import BenchCore
import NIOCore
import NIOHPACK
import Testing

/// The harness's HTTP/2 requests, read back with swift-nio-http2's HPACK decoder (the one grpc-swift's
/// server uses): the priming call enters every header into the dynamic table, and each measured request
/// names the same headers by index.
struct GRPCTargetTests {
    /// The header block of the HEADERS frame at the start of `stream`.
    func headerBlock(_ stream: [UInt8]) -> ByteBuffer {
        let length = Int(stream[0]) << 16 | Int(stream[1]) << 8 | Int(stream[2])
        #expect(stream[3] == 0x1 && stream[4] & 0x4 != 0, "a HEADERS frame with END_HEADERS")
        return ByteBuffer(bytes: stream[9..<9 + length])
    }

    @Test func measuredRequestsIndexTheHeadersThePrimingCallEntered() throws {
        let message = [UInt8](repeating: 7, count: 40_000)  // three DATA frames
        let target = GRPCTarget(name: "t", path: "/arbiter.bench.v1.Scorer/Score", message: message, authority: "127.0.0.1:7879")
        var decoder = HPACKDecoder(allocator: ByteBufferAllocator())
        var priming = headerBlock(target.priming)
        let first = try decoder.decodeHeaders(from: &priming)
        let expected: [(String, String)] = [
            (":method", "POST"), (":scheme", "http"), (":path", "/arbiter.bench.v1.Scorer/Score"),
            (":authority", "127.0.0.1:7879"), ("content-type", "application/grpc"), ("te", "trailers"),
            ("user-agent", GRPCTarget.userAgent),
        ]
        #expect(first.map { ($0.name, $0.value) }.elementsEqual(expected, by: ==))
        // Every measured request: two static and five dynamic indices, one byte each.
        var buffer: [UInt8] = []
        for seq: UInt64 in [0, 1, 1000] {
            target.encode(seq: seq, into: &buffer)
            var block = headerBlock(buffer)
            #expect(block.readableBytes == 7)
            let again = try decoder.decodeHeaders(from: &block)
            #expect(again.map { ($0.name, $0.value) }.elementsEqual(expected, by: ==))
        }
    }

    @Test func streamIdsFollowTheSequenceAfterThePrimingCall() throws {
        let target = GRPCTarget(name: "t", path: "/p", message: [UInt8](repeating: 1, count: 20_000), authority: "a")
        var buffer: [UInt8] = []
        target.encode(seq: 5, into: &buffer)
        #expect(target.streamOffsets.count == 3)  // HEADERS and two DATA frames
        for offset in target.streamOffsets {
            let id = buffer[offset..<offset + 4].reduce(UInt32(0)) { $0 << 8 | UInt32($1) }
            #expect(id == 13)
        }
        #expect(GRPCTarget.requestID(13) == 5)
        #expect(GRPCTarget.requestID(1) == nil)  // the priming call's answer is not a measured one
    }
}
