import ArbiterWire
import NIOCore
import Testing

/// Random valid messages encode and decode to themselves; every prefix of a valid frame asks for more data;
/// corrupted frames are refused with an error, never a crash.
@Suite struct CodecPropertyTests {
    struct RNG: RandomNumberGenerator {
        var state: UInt64
        mutating func next() -> UInt64 {
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
    }

    static func name(_ r: inout RNG) -> String {
        let chars = Array("abcdefghijklmnopqrstuvwxyz0123456789-_.é")
        return String((0..<Int.random(in: 1...40, using: &r)).map { _ in chars.randomElement(using: &r)! })
    }

    static func floats(_ n: Int, _ r: inout RNG) -> [Float] {
        (0..<n).map { _ in Float.random(in: -1e6...1e6, using: &r) }
    }

    static func randomMessage(_ r: inout RNG) -> Message {
        switch Int.random(in: 0..<11, using: &r) {
        case 0:
            return .hello(Hello(minVersion: .random(in: 0...3, using: &r), maxVersion: .random(in: 0...3, using: &r),
                                maxFrameBytes: .random(in: 0...UInt32.max, using: &r), compression: CompressionSet(rawValue: .random(in: 0...1, using: &r)),
                                clientName: name(&r), token: Bool.random(using: &r) ? name(&r) : nil))
        case 1:
            return .helloOK(HelloOK(limits: Limits(maxFrameBytes: .random(in: 1...UInt32.max, using: &r),
                                                   maxCandidates: .random(in: 1...100_000, using: &r), maxInFlight: .random(in: 1...4096, using: &r)),
                                    compression: [], serverName: name(&r)))
        case 2: return .ping((0..<Int.random(in: 0...64, using: &r)).map { _ in UInt8.random(in: 0...255, using: &r) })
        case 3: return .pong((0..<Int.random(in: 0...64, using: &r)).map { _ in UInt8.random(in: 0...255, using: &r) })
        case 4: return .listModels
        case 5:
            return .models((0..<Int.random(in: 0...5, using: &r)).map { _ in
                ModelSummary(name: name(&r), kind: name(&r), version: .random(in: 1...UInt64.max, using: &r),
                             contextFeatureCount: .random(in: 0...100, using: &r), candidateFeatureCount: .random(in: 0...100, using: &r))
            })
        case 6: return .modelInfo(ModelInfoRequest(model: name(&r), version: .random(in: 0...9, using: &r)))
        case 7:
            let feats = { (r: inout RNG) in
                (0..<Int.random(in: 0...6, using: &r)).map { _ in
                    Bool.random(using: &r) ? FeatureSpec.numeric(name(&r)) : FeatureSpec.categorical(name(&r), .random(in: 1...1000, using: &r))
                }
            }
            return .schema(ModelSchema(model: name(&r), kind: name(&r), version: .random(in: 1...99, using: &r),
                                       createdUnixMillis: .random(in: 0...UInt64.max, using: &r), contextFeatures: feats(&r),
                                       candidateFeatures: feats(&r),
                                       outputs: [ColumnSpec(name: name(&r), kind: .float32), ColumnSpec(name: name(&r), kind: .code, labels: ["A", "B"])]))
        case 8:
            let n = Int.random(in: 0...50, using: &r), f = Int.random(in: 0...12, using: &r)
            return .score(ScoreRequest(model: name(&r), version: .random(in: 0...5, using: &r), routingKey: .random(in: 0...UInt64.max, using: &r),
                                       topK: .random(in: 0...10, using: &r),
                                       subject: Bool.random(using: &r) ? .random(in: 0...UInt64.max, using: &r) : nil,
                                       context: floats(Int.random(in: 0...9, using: &r), &r),
                                       candidateIDs: (0..<n).map { _ in .random(in: 0...UInt64.max, using: &r) }, candidateFeatureCount: f,
                                       candidateFeatures: floats(n * f, &r)))
        case 9:
            let n = Int.random(in: 0...50, using: &r)
            return .result(ScoreResult(version: .random(in: 1...99, using: &r), queueMicros: .random(in: 0...1000, using: &r),
                                       computeMicros: .random(in: 0...1000, using: &r), sorted: .random(using: &r),
                                       ids: (0..<n).map { _ in .random(in: 0...UInt64.max, using: &r) }, scores: floats(n, &r),
                                       columns: [ResultColumn(name: name(&r), values: .float32(floats(n, &r))),
                                                 ResultColumn(name: name(&r), labels: ["A", "B", "C"],
                                                              values: .code((0..<n).map { _ in .random(in: 0...2, using: &r) }))]))
        default:
            return .error(ErrorBody(status: Status.allCases.filter { $0 != .ok }.randomElement(using: &r)!, message: name(&r)))
        }
    }

    @Test func randomMessagesRoundTrip() throws {
        var r = RNG(state: 42)
        for i in 0..<2000 {
            let frame = Frame(requestID: .random(in: 0...UInt64.max, using: &r), time: .random(in: 0...UInt64.max, using: &r),
                              message: Self.randomMessage(&r))
            var buf = ByteBuffer()
            frame.encode(into: &buf)
            let raw = try #require(try FrameDecoder(maxBodyBytes: 1 << 24).decodeFrame(&buf), "iteration \(i)")
            var expectedHeader = frame.header
            expectedHeader.bodyLength = raw.header.bodyLength
            let back = try Frame.decode(header: raw.header, body: raw.body)
            #expect(back == Frame(header: expectedHeader, message: frame.message), "iteration \(i): \(frame.message.opcode)")
            #expect(buf.readableBytes == 0)
        }
    }

    @Test func everyTruncatedPrefixAsksForMoreData() throws {
        var r = RNG(state: 7)
        for _ in 0..<200 {
            var full = ByteBuffer()
            Frame(requestID: 5, message: Self.randomMessage(&r)).encode(into: &full)
            let bytes = Array(full.readableBytesView)
            for cut in 0..<bytes.count {
                var prefix = ByteBuffer(bytes: bytes[0..<cut])
                let before = prefix.readerIndex
                #expect(try FrameDecoder(maxBodyBytes: 1 << 24).decodeFrame(&prefix) == nil)
                #expect(prefix.readerIndex == before, "a partial frame must not be consumed")
            }
        }
    }

    @Test func truncatedOrCorruptBodiesAreMalformedNotCrashes() throws {
        var r = RNG(state: 99)
        for _ in 0..<300 {
            let msg = Self.randomMessage(&r)
            var body = ByteBuffer()
            msg.encodeBody(into: &body)
            let bytes = Array(body.readableBytesView)
            // Every shorter body, and random byte flips, either decode to something or throw a WireError.
            for cut in stride(from: 0, to: bytes.count, by: max(1, bytes.count / 16)) {
                do {
                    _ = try Message.decodeBody(opcode: msg.opcode, status: msg.status.rawValue, body: ByteBuffer(bytes: bytes[0..<cut]))
                } catch {
                    #expect(error.status == .malformed)
                }
            }
            var flipped = bytes
            if !flipped.isEmpty {
                for _ in 0..<4 { flipped[Int.random(in: 0..<flipped.count, using: &r)] = .random(in: 0...255, using: &r) }
                _ = try? Message.decodeBody(opcode: msg.opcode, status: msg.status.rawValue, body: ByteBuffer(bytes: flipped))
            }
        }
    }

    @Test func headerIsJudgedBeforeTheBodyArrives() {
        var big = ByteBuffer()
        FrameHeader(opcode: Opcode.score.rawValue, requestID: 3, bodyLength: 1 << 30).write(to: &big)
        #expect(throws: WireError(.frameTooLarge, "body of 1073741824 bytes is over the limit of 4096 bytes", requestID: 3)) {
            try FrameDecoder(maxBodyBytes: 4096).decodeFrame(&big)
        }
        var bad = ByteBuffer(bytes: Array("GET / HTTP/1.1\r\n".utf8))
        #expect(throws: WireError.self) { try FrameDecoder(maxBodyBytes: 4096).decodeFrame(&bad) }
        var v2 = ByteBuffer()
        FrameHeader(version: 2, opcode: 1, requestID: 9).write(to: &v2)
        do {
            _ = try FrameDecoder(maxBodyBytes: 4096).decodeFrame(&v2)
            Issue.record("version 2 accepted")
        } catch {
            #expect(error.status == .unsupportedVersion)
            #expect(error.requestID == 9)
        }
    }

    @Test func zstdRoundTripAndCorruption() throws {
        let codec = ZstdCodec()
        var body = ByteBuffer()
        Message.ping(Array(repeating: 7, count: 10_000)).encodeBody(into: &body)
        let packed = codec.compress(body, allocator: ByteBufferAllocator())
        #expect(packed.readableBytes < body.readableBytes)
        let back = try codec.decompress(packed, maxBytes: 1 << 20, allocator: ByteBufferAllocator())
        #expect(back == body)
        #expect(throws: WireError.self) { try codec.decompress(packed, maxBytes: 100, allocator: ByteBufferAllocator()) }
        var corrupt = Array(packed.readableBytesView)
        corrupt[corrupt.count / 2] ^= 0xFF
        corrupt[corrupt.count - 2] ^= 0xFF
        do {
            _ = try codec.decompress(ByteBuffer(bytes: corrupt), maxBytes: 1 << 20, allocator: ByteBufferAllocator())
        } catch {
            #expect(error.status == .badCompression)
        }
        #expect(throws: WireError.self) {
            try codec.decompress(ByteBuffer(bytes: [1, 2, 3, 4, 5, 6, 7, 8]), maxBytes: 1 << 20, allocator: ByteBufferAllocator())
        }
    }
}
