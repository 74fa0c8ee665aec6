import ArbiterServer
import ArbiterWire
import NIOCore
import Testing

/// Every bad input the spec names, sent to the real server over a socket: each gets the ERROR the spec
/// says, the connection is closed exactly when the spec says, and the server still answers PING after.
@Suite struct BadInputTests {
    @Test func wrongMagicIsRefusedAndCloses() async throws {
        try await Fixture.withServer { _, port in
            let c = try RawConnection(port: port)
            c.send(Array("GET / HTTP/1.1\r\nHost: x\r\n\r\n".utf8))
            _ = try c.expectError(.badMagic, requestID: 0)
            #expect(try c.isClosedByServer())
            #expect(try serverStillAnswers(port))
        }
    }

    @Test func unknownProtocolVersionIsRefusedAndCloses() async throws {
        try await Fixture.withServer { _, port in
            let c = try RawConnection(port: port)
            var b = ByteBuffer()
            FrameHeader(version: 2, opcode: Opcode.ping.rawValue, requestID: 5).write(to: &b)
            c.send(Array(b.readableBytesView))
            _ = try c.expectError(.unsupportedVersion, requestID: 5)
            #expect(try c.isClosedByServer())
            // HELLO offering only versions the server lacks is refused the same way.
            let d = try RawConnection(port: port)
            d.send(Frame(requestID: 6, message: .hello(Hello(minVersion: 2, maxVersion: 3, clientName: "future"))))
            _ = try d.expectError(.unsupportedVersion, requestID: 6)
            #expect(try d.isClosedByServer())
            #expect(try serverStillAnswers(port))
        }
    }

    @Test func unknownOpcodeKeepsTheConnection() async throws {
        try await Fixture.withServer { _, port in
            let c = try RawConnection(port: port)
            var b = ByteBuffer()
            FrameHeader(opcode: 0x42, requestID: 8, bodyLength: 3).write(to: &b)
            b.writeBytes([1, 2, 3])
            c.send(Array(b.readableBytesView))
            _ = try c.expectError(.unknownOpcode, requestID: 8)
            #expect(try c.pingWorks())
            // A response opcode from a client is a protocol violation, also survivable.
            c.send(Frame(requestID: 9, message: .pong([])))
            _ = try c.expectError(.protocolViolation, requestID: 9)
            #expect(try c.pingWorks())
        }
    }

    @Test func bodyOverTheLimitIsRefusedFromTheHeaderAlone() async throws {
        try await Fixture.withServer { _, port in
            let c = try RawConnection(port: port)
            try c.hello()
            var b = ByteBuffer()
            // Only the header is sent: the answer proves nothing waited for (or allocated) the 1 GiB body.
            FrameHeader(opcode: Opcode.score.rawValue, requestID: 10, bodyLength: 1 << 30).write(to: &b)
            c.send(Array(b.readableBytesView))
            let msg = try c.expectError(.frameTooLarge, requestID: 10)
            #expect(msg.contains("1073741824"))
            #expect(try c.isClosedByServer())
            #expect(try serverStillAnswers(port))
        }
    }

    @Test func truncatedBodyFollowedByCloseLeavesTheServerServing() async throws {
        try await Fixture.withServer { _, port in
            let c = try RawConnection(port: port)
            try c.hello()
            var b = ByteBuffer()
            Frame(requestID: 11, message: .score(Fixture.scoreRequest(n: 3))).encode(into: &b)
            c.send(Array(b.readableBytesView.prefix(b.readableBytes - 7)))
            c.shutdownWrite()
            #expect(try c.isClosedByServer())
            #expect(try serverStillAnswers(port))
        }
    }

    @Test func requestsBeforeHelloAreRefusedButPingIsNot() async throws {
        try await Fixture.withServer { _, port in
            let c = try RawConnection(port: port)
            #expect(try c.pingWorks())
            c.send(Frame(requestID: 12, message: .score(Fixture.scoreRequest(n: 1))))
            _ = try c.expectError(.helloRequired, requestID: 12)
            c.send(Frame(requestID: 13, message: .listModels))
            _ = try c.expectError(.helloRequired, requestID: 13)
            try c.hello()
            c.send(Frame(requestID: 14, message: .hello(Hello(clientName: "again"))))
            _ = try c.expectError(.protocolViolation, requestID: 14)
            #expect(try c.pingWorks())
        }
    }

    @Test func scoringErrorsKeepTheConnection() async throws {
        try await Fixture.withServer { _, port in
            let c = try RawConnection(port: port)
            try c.hello()

            c.send(Frame(requestID: 20, message: .score(Fixture.scoreRequest(n: 2, model: "nope"))))
            #expect(try c.expectError(.unknownModel, requestID: 20).contains("leads"))

            var pinned = Fixture.scoreRequest(n: 2)
            pinned.version = 99
            c.send(Frame(requestID: 21, message: .score(pinned)))
            _ = try c.expectError(.unknownVersion, requestID: 21)

            var wrongContext = Fixture.scoreRequest(n: 2)
            wrongContext.context = [1, 2, 3]
            c.send(Frame(requestID: 22, message: .score(wrongContext)))
            #expect(try c.expectError(.schemaMismatch, requestID: 22).contains("job_category"))

            var wrongColumns = Fixture.scoreRequest(n: 2)
            wrongColumns.candidateFeatureCount = 4
            wrongColumns.candidateFeatures = Array(wrongColumns.candidateFeatures.prefix(8))
            c.send(Frame(requestID: 23, message: .score(wrongColumns)))
            _ = try c.expectError(.schemaMismatch, requestID: 23)

            c.send(Frame(requestID: 24, message: .score(Fixture.scoreRequest(n: 101))))
            #expect(try c.expectError(.tooManyCandidates, requestID: 24).contains("100"))

            for (i, bad) in [Float.nan, .infinity, -.infinity].enumerated() {
                var r = Fixture.scoreRequest(n: 3)
                r.candidateFeatures[6 + 2] = bad
                c.send(Frame(requestID: 25 + UInt64(i), message: .score(r)))
                #expect(try c.expectError(.invalidFeature, requestID: 25 + UInt64(i)).contains("distance_km"))
            }
            var nanContext = Fixture.scoreRequest(n: 1)
            nanContext.context[1] = .nan
            c.send(Frame(requestID: 28, message: .score(nanContext)))
            #expect(try c.expectError(.invalidFeature, requestID: 28).contains("job_salary"))

            var badCode = Fixture.scoreRequest(n: 1)
            badCode.candidateFeatures[0] = 7.5
            c.send(Frame(requestID: 29, message: .score(badCode)))
            #expect(try c.expectError(.invalidFeature, requestID: 29).contains("channel"))

            // A SCORE body that lies about its counts is malformed.
            var b = ByteBuffer()
            Frame(requestID: 30, message: .score(Fixture.scoreRequest(n: 2))).encode(into: &b)
            var bytes = Array(b.readableBytesView)
            bytes[FrameHeader.size + 24] = 50  // candidate_count
            c.send(bytes)
            _ = try c.expectError(.malformed, requestID: 30)

            #expect(try c.pingWorks())
        }
    }

    @Test func zstdWithoutNegotiationAndCorruptZstd() async throws {
        try await Fixture.withServer { _, port in
            let c = try RawConnection(port: port)
            try c.hello()
            c.send(Frame(requestID: 40, message: .ping([1, 2, 3])), flags: .zstd)
            _ = try c.expectError(.compressionNotNegotiated, requestID: 40)
            #expect(try c.pingWorks())

            let z = try RawConnection(port: port)
            try z.hello(compression: .zstd)
            // A valid compressed SCORE is served...
            var body = ByteBuffer()
            Message.score(Fixture.scoreRequest(n: 4)).encodeBody(into: &body)
            let packed = ZstdCodec().compress(body, allocator: ByteBufferAllocator())
            var frame = ByteBuffer()
            FrameHeader(opcode: Opcode.score.rawValue, flags: .zstd, requestID: 41, bodyLength: UInt32(packed.readableBytes)).write(to: &frame)
            frame.writeImmutableBuffer(packed)
            z.send(Array(frame.readableBytesView))
            let ok = try #require(try z.readFrame())
            guard case .result(let r) = ok.message else { Issue.record("expected RESULT, got \(ok.message)"); return }
            #expect(r.ids.count == 4)
            // ...and a corrupted one is refused.
            var bytes = Array(frame.readableBytesView)
            for i in stride(from: FrameHeader.size + 6, to: bytes.count, by: 5) { bytes[i] ^= 0x5A }
            z.send(Array(bytes[0..<8]) + withUnsafeBytes(of: UInt64(42).littleEndian, Array.init) + Array(bytes[16...]))
            _ = try z.expectError(.badCompression, requestID: 42)
            // Garbage that is not zstd at all.
            var junk = ByteBuffer()
            FrameHeader(opcode: Opcode.ping.rawValue, flags: .zstd, requestID: 43, bodyLength: 8).write(to: &junk)
            junk.writeBytes([1, 2, 3, 4, 5, 6, 7, 8])
            z.send(Array(junk.readableBytesView))
            _ = try z.expectError(.badCompression, requestID: 43)
            #expect(try z.pingWorks())
        }
    }

    @Test func unknownFlagBitsAreMalformed() async throws {
        try await Fixture.withServer { _, port in
            let c = try RawConnection(port: port)
            try c.hello()
            c.send(Frame(requestID: 50, message: .ping([])), flags: FrameFlags(rawValue: 0x80))
            _ = try c.expectError(.malformed, requestID: 50)
            #expect(try c.pingWorks())
        }
    }

    /// Answers to one read batch are written together: good and bad frames sent in one write are answered
    /// in order, and a closing error still comes after the answers to the frames before it.
    @Test func aBatchWithBadFramesIsAnsweredInOrder() async throws {
        try await Fixture.withServer { _, port in
            let c = try RawConnection(port: port)
            try c.hello()
            var b = ByteBuffer()
            Frame(requestID: 50, message: .ping([5])).encode(into: &b)
            Frame(requestID: 51, message: .score(Fixture.scoreRequest(n: 3))).encode(into: &b)
            Frame(requestID: 52, message: .score(Fixture.scoreRequest(n: 2, model: "nope"))).encode(into: &b)
            Frame(requestID: 53, message: .score(Fixture.scoreRequest(n: 101))).encode(into: &b)
            Frame(requestID: 54, message: .score(Fixture.scoreRequest(n: 1, topK: 1))).encode(into: &b)
            FrameHeader(opcode: 0x42, requestID: 55).write(to: &b)
            Frame(requestID: 56, message: .ping([6])).encode(into: &b)
            var closing = ByteBuffer()
            FrameHeader(opcode: Opcode.score.rawValue, requestID: 57, bodyLength: 1 << 30).write(to: &closing)
            c.send(Array(b.readableBytesView) + Array(closing.readableBytesView))

            let pong = try #require(try c.readFrame())
            #expect(pong.header.requestID == 50)
            let r = try #require(try c.readFrame())
            guard case .result(let res) = r.message else { Issue.record("expected RESULT, got \(r.message)"); return }
            #expect(r.header.requestID == 51 && res.ids == [1000, 1001, 1002])
            _ = try c.expectError(.unknownModel, requestID: 52)
            _ = try c.expectError(.tooManyCandidates, requestID: 53)
            let top = try #require(try c.readFrame())
            guard case .result(let t) = top.message else { Issue.record("expected RESULT, got \(top.message)"); return }
            #expect(top.header.requestID == 54 && t.ids == [1000])
            _ = try c.expectError(.unknownOpcode, requestID: 55)
            let pong2 = try #require(try c.readFrame())
            #expect(pong2.header.requestID == 56)
            _ = try c.expectError(.frameTooLarge, requestID: 57)
            #expect(try c.isClosedByServer())
            #expect(try serverStillAnswers(port))
        }
    }
}
