@testable import ArbiterServer
import ArbiterModels
import ArbiterTestSupport
import ArbiterWire
import Foundation
import Logging
import NIOCore
import NIOEmbedded
import NIOConcurrencyHelpers
import Testing

/// Every golden vector of a frame the server sends (proto-spec/vectors, written by an independent Python
/// encoder) is produced byte for byte by the server's own code: its connection handler on an
/// `EmbeddedChannel`, answering the request vectors, with a clock scripted so that the times in the
/// headers and RESULT bodies are the vectors' own. Errors the server words differently (OVERLOADED says
/// how many requests are in flight; BAD_COMPRESSION carries libzstd's words) or never sends (INTERNAL) are
/// produced by the encoder the handler uses for every error frame, which writes every error vector.
@Suite struct ServerGoldenVectorTests {
    static let vectors = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("proto-spec/vectors")

    static func vector(_ name: String) throws -> [UInt8] {
        let hex = try String(contentsOf: vectors.appendingPathComponent(name + ".hex"), encoding: .utf8).filter { !$0.isWhitespace }
        var out: [UInt8] = []
        var i = hex.startIndex
        while i < hex.endIndex {
            let j = hex.index(i, offsetBy: 2)
            out.append(try #require(UInt8(hex[i..<j], radix: 16)))
            i = j
        }
        return out
    }

    /// The schema of the SCHEMA vector's `leads` v3, and the models the RESULT vectors come from.
    static let schema = FeatureSchema(
        context: [.categorical("job_category", 8), .numeric("job_salary")],
        candidate: [.categorical("channel", 5), .numeric("distance_km")],
        outputs: [OutputColumn(name: "p_hire", kind: .float32), OutputColumn(name: "grade", kind: .code, labels: ["A", "B", "C", "D"])])

    static func grade(_ p: Float) -> UInt8 { p >= 0.5 ? 0 : p >= 0.2 ? 1 : p >= 0.1 ? 2 : 3 }

    /// `leads` v3: score 2^-(channel + 1). `lead-model-x` v3: score 1 - distance/2. Both copy the score into
    /// p_hire and grade it A >= 0.5 > B >= 0.2 > C >= 0.1 > D. `leads6` is the MODELS vector's `leads` (6
    /// candidate features).
    static let models: (leads: ServingModel, x: ServingModel, leads6: ServingModel) = {
        let store = temporaryPath("vectors")
        func rule(_ f: @escaping @Sendable (Float, Float) -> Float) -> @Sendable (ScoreBatch, ScoreOutput) -> Void {
            { batch, out in
                for r in 0..<batch.candidateCount {
                    let s = f(batch.candidates[2 * r], batch.candidates[2 * r + 1])
                    out.scores[r] = s
                    out.floatColumn(0)[r] = s
                    out.codeColumn(0)[r] = grade(s)
                }
            }
        }
        let leads = try! ScriptedModel.publish(store: store, model: "leads", kind: "lead-grading", schema: schema, versions: 3,
                                               rule: rule { channel, _ in Float(1) / Float(1 << (Int(channel) + 1)) })
        let x = try! ScriptedModel.publish(store: store, model: "lead-model-x", kind: "lead-grading", schema: schema, versions: 3,
                                           rule: rule { _, distance in 1 - distance / 2 })
        var six = schema
        six.candidate = (0..<6).map { .numeric("f\($0)") }
        let leads6 = try! ScriptedModel.publish(store: store + "-6", model: "leads", kind: "lead-grading", schema: six, versions: 3) { _, _ in }
        return (ServingModel(name: "leads", model: leads), ServingModel(name: "lead-model-x", model: x), ServingModel(name: "leads", model: leads6))
    }()

    /// A connection handler on an embedded channel, serving `models`, whose clock reads the values the test
    /// scripts (the last one repeats).
    final class Connection {
        let channel = EmbeddedChannel()
        let readings = Readings()

        final class Readings: Sendable {
            let values = NIOLockedValueBox<[UInt64]>([1_000_000])
            func next() -> UInt64 {
                values.withLockedValue { v in v.count > 1 ? v.removeFirst() : v[0] }
            }
        }

        init(_ models: [ServingModel]) throws {
            let config = ServerConfiguration(storePath: "/unused")
            var table = ModelTable()
            for m in models { table.models[m.name] = ServedModel(name: m.name, active: m, loaded: [m], split: nil, shadow: nil, latest: m.version) }
            let readings = self.readings
            let handler = ConnectionHandler(config: config, loopTable: LoopTable(loop: channel.eventLoop, table: table), pool: nil,
                                            logger: Logger(label: "vectors"), clock: .scripted { readings.next() })
            try channel.pipeline.syncOperations.addHandler(handler)
            // Active, as an accepted connection is (so that a test can see the handler close it).
            try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 9)).wait()
        }

        /// Sends `request` and returns every byte the server wrote in answer, with the clock reading
        /// `micros` (offsets from an arbitrary start, in µs) in turn.
        func exchange(_ request: [UInt8], clock micros: [UInt64] = [0]) throws -> [UInt8] {
            readings.values.withLockedValue { $0 = micros.map { 1_000_000 + $0 * 1000 } }
            try channel.writeInbound(ByteBuffer(bytes: request))
            var out: [UInt8] = []
            while let b = try channel.readOutbound(as: ByteBuffer.self) { out += Array(b.readableBytesView) }
            return out
        }

        func hello() throws {
            #expect(try exchange(try vector("hello")) == (try vector("hello_ok")))
        }
    }

    /// The bytes of `frame` as the client encoder writes them.
    static func encode(_ frame: Frame) -> [UInt8] {
        var b = ByteBuffer()
        frame.encode(into: &b)
        return Array(b.readableBytesView)
    }

    static let score = ScoreRequest(model: "leads", routingKey: 42, context: [3, 4200], candidateIDs: [101, 102],
                                    candidateFeatureCount: 2, candidateFeatures: [1, 3.5, 4, 40])

    @Test func handshakeAndAdminAnswers() throws {
        let c = try Connection([Self.models.leads])
        try c.hello()
        #expect(try c.exchange(try Self.vector("ping"), clock: [0, 3]) == (try Self.vector("pong")))
        #expect(try c.exchange(try Self.vector("model_info"), clock: [0, 0]) == (try Self.vector("schema")))
        let six = try Connection([Self.models.leads6])
        try six.hello()
        #expect(try six.exchange(try Self.vector("list_models"), clock: [0, 0]) == (try Self.vector("models")))
    }

    /// The SCHEMA of a model whose features accept missing values (kind bit 7), and a SCORE carrying NaN for
    /// them: accepted, and the model sees the NaN.
    @Test func missingValues() throws {
        let store = temporaryPath("vectors-missing")
        let schema = FeatureSchema(context: [.categorical("region", 4), .numeric("income", allowsMissing: true)],
                                   candidate: [.numeric("utilization", allowsMissing: true)], outputs: [])
        let model = try ScriptedModel.publish(store: store, model: "approvals", kind: "gbdt", schema: schema, versions: 2) { batch, out in
            for r in 0..<batch.candidateCount {
                out.scores[r] = batch.candidates[r].isNaN ? -1 : batch.candidates[r] + (batch.context[1].isNaN ? 10 : 0)
            }
        }
        let c = try Connection([ServingModel(name: "approvals", model: model)])
        try c.hello()
        let info = Self.encode(Frame(requestID: 5, message: .modelInfo(ModelInfoRequest(model: "approvals", version: 0))))
        #expect(try c.exchange(info, clock: [0, 0]) == (try Self.vector("schema_missing")))
        var answer = ByteBuffer(bytes: try c.exchange(try Self.vector("score_missing"), clock: [0, 0, 0, 0]))
        let raw = try #require(try FrameDecoder(maxBodyBytes: 1 << 20).decodeFrame(&answer))
        guard case .result(let r) = try Frame.decode(header: raw.header, body: raw.body).message else {
            Issue.record("expected RESULT"); return
        }
        #expect(r.ids == [7, 8])
        #expect(r.scores == [-1, 10.5])
        // Infinity is still refused, and so is NaN in a feature that does not accept it.
        var bad = ScoreRequest(model: "approvals", context: [.nan, 1], candidateIDs: [1], candidateFeatureCount: 1, candidateFeatures: [0])
        var reply = ByteBuffer(bytes: try c.exchange(Self.encode(Frame(requestID: 12, message: .score(bad)))))
        var f = try #require(try FrameDecoder(maxBodyBytes: 1 << 20).decodeFrame(&reply))
        #expect(f.header.status == Status.invalidFeature.rawValue)
        bad.context = [1, 1]
        bad.candidateFeatures = [.infinity]
        reply = ByteBuffer(bytes: try c.exchange(Self.encode(Frame(requestID: 13, message: .score(bad)))))
        f = try #require(try FrameDecoder(maxBodyBytes: 1 << 20).decodeFrame(&reply))
        #expect(f.header.status == Status.invalidFeature.rawValue)
    }

    @Test func resultsAreTheVectorsOwnBytes() throws {
        let c = try Connection([Self.models.leads, Self.models.x])
        try c.hello()
        // Read at 0, scoring starts at 2 µs and ends at 7 µs, the frame is stamped at 9 µs.
        #expect(try c.exchange(try Self.vector("score"), clock: [0, 2, 7, 9]) == (try Self.vector("result")))
        #expect(try c.exchange(try Self.vector("score_topk_pinned"), clock: [0, 1, 5, 6]) == (try Self.vector("result_topk")))
    }

    /// `feed` v4, the ranking of vectors `score_subject` and `result_ranked`: fused scores scripted per
    /// candidate, best first with at most one item per category (candidate feature 0), cut to top_k; it
    /// needs a subject.
    static let feed: ServingModel = {
        let schema = FeatureSchema(context: [.numeric("u0"), .numeric("u1")], candidate: [.categorical("category", 4), .numeric("x")],
                                   outputs: [OutputColumn(name: "p_view", kind: .float32), OutputColumn(name: "dot", kind: .float32),
                                             OutputColumn(name: "rank_before", kind: .float32)])
        let model = try! ScriptedModel.publishRanking(store: temporaryPath("vectors-feed"), model: "feed", schema: schema, versions: 4) {
            (batch, out) throws(ScoringError) -> RowOrder in
            guard batch.subject != nil else {
                throw ScoringError(.invalidRequest, "model 'feed' (kind ranking) ranks for a user: set the SUBJECT flag and send the user's id")
            }
            let fused: [UInt64: (Float, Float, Float)] = [501: (-0.5, 0.625, 1.5), 502: (-1.25, 0.25, -0.75), 503: (-1, 0.4, 0.5)]
            let n = batch.candidateCount
            for i in 0..<n {
                let (s, p, d) = fused[batch.ids[i]] ?? (0, 0, 0)
                out.scores[i] = s
                out.floatColumn(0)[i] = p
                out.floatColumn(1)[i] = d
            }
            let byScore = (0..<n).sorted { out.scores[$0] > out.scores[$1] }
            for (rank, i) in byScore.enumerated() { out.floatColumn(2)[i] = Float(rank + 1) }
            var seen = Set<Float>(), rows = 0
            for i in byScore where rows < batch.topK && seen.insert(batch.candidates[2 * i]).inserted {
                out.order![rows] = Int32(i)
                rows += 1
            }
            return .ranked(count: rows)
        }
        return ServingModel(name: "feed", model: model)
    }()

    @Test func aRankingAnswersInItsOwnOrderAndRefusesARequestWithoutItsSubject() throws {
        let c = try Connection([Self.feed])
        try c.hello()
        // Read at 0, scoring from 3 µs to 43 µs, stamped at 45 µs.
        #expect(try c.exchange(try Self.vector("score_subject"), clock: [0, 3, 43, 45]) == (try Self.vector("result_ranked")))
        // The same request without its subject: the model's own refusal, as an ERROR that keeps the connection.
        var raw = try Self.vector("score_subject")
        var b = ByteBuffer(bytes: raw)
        let frame = try #require(try FrameDecoder(maxBodyBytes: 1 << 20).decodeFrame(&b))
        guard case .score(var request) = try Frame.decode(header: frame.header, body: frame.body).message else {
            Issue.record("score_subject is not a SCORE"); return
        }
        request.subject = nil
        raw = Self.encode(Frame(requestID: 7, message: .score(request)))
        #expect(try c.exchange(raw) == (try Self.vector("error_invalid_request")))
        #expect(c.channel.isActive)
    }

    @Test func errorsOnAnOpenConnection() throws {
        let c = try Connection([Self.models.leads])
        #expect(try c.exchange(try Self.vector("score")) == (try Self.vector("error_hello_required")))
        try c.hello()
        var again = ByteBuffer()
        Frame(requestID: 7, message: .hello(Hello(compression: [], clientName: "again"))).encode(into: &again)
        #expect(try c.exchange(Array(again.readableBytesView)) == (try Self.vector("error_protocol_violation")))
        // The SCORE vector carries a 250 µs budget; it waited 300 µs.
        #expect(try c.exchange(try Self.vector("score"), clock: [0, 300]) == (try Self.vector("error_deadline_exceeded")))
        var r = Self.score
        r.model = "nope"
        #expect(try c.exchange(Self.encode(Frame(requestID: 7, message: .score(r)))) == (try Self.vector("error_unknown_model")))
        r = Self.score
        r.version = 7
        #expect(try c.exchange(Self.encode(Frame(requestID: 7, message: .score(r)))) == (try Self.vector("error_unknown_version")))
        r = Self.score
        r.context = [3, 4200, 1]
        #expect(try c.exchange(Self.encode(Frame(requestID: 7, message: .score(r)))) == (try Self.vector("error_schema_mismatch")))
        r = Self.score
        r.candidateIDs = (0..<20_000).map { UInt64($0) }
        r.candidateFeatures = [Float](repeating: 1, count: 40_000)
        #expect(try c.exchange(Self.encode(Frame(requestID: 7, message: .score(r)))) == (try Self.vector("error_too_many_candidates")))
        r = Self.score
        r.candidateFeatures[1] = .nan
        #expect(try c.exchange(Self.encode(Frame(requestID: 7, message: .score(r)))) == (try Self.vector("error_invalid_feature")))
        // A SCORE body cut where top_k begins.
        let full = Self.encode(Frame(requestID: 7, message: .score(Self.score)))
        let body = ByteBuffer(bytes: full[FrameHeader.size...])
        func failsAtTopK(_ n: Int) -> Bool {
            do throws(WireError) {
                _ = try ScoreRequestView(body: body.getSlice(at: 0, length: n)!)
                return false
            } catch {
                return error.message == "body ends before field 'top_k'"
            }
        }
        let cut = try #require((0..<body.readableBytes).first(where: failsAtTopK))
        var truncated = ByteBuffer()
        FrameHeader(opcode: Opcode.score.rawValue, requestID: 7, bodyLength: UInt32(cut), time: 250).write(to: &truncated)
        truncated.writeBytes(full[FrameHeader.size..<(FrameHeader.size + cut)])
        #expect(try c.exchange(Array(truncated.readableBytesView)) == (try Self.vector("error_malformed")))
        // The connection still serves.
        #expect(try c.exchange(try Self.vector("ping"), clock: [0, 3]) == (try Self.vector("pong")))
    }

    /// Errors from the framing and the body's flags; those whose status closes (section 4's table) close.
    @Test func framingErrorsCloseTheConnectionExactlyWhenTheirStatusSaysSo() throws {
        func closing(_ request: [UInt8], _ expected: String, zstd: Bool = true) throws {
            let c = try Connection([Self.models.leads])
            if zstd {
                try c.hello()
            } else {
                _ = try c.exchange(Self.encode(Frame(requestID: 1, message: .hello(Hello(compression: [], clientName: "plain")))))
            }
            #expect(try c.exchange(request) == (try Self.vector(expected)), "\(expected)")
            let closes = try #require(Status(name: String(expected.dropFirst("error_".count)).uppercased())).closesConnection
            #expect(c.channel.isActive == !closes, "\(expected) \(closes ? "closes" : "keeps") the connection")
        }
        var header = ByteBuffer()
        FrameHeader(opcode: 0x42, requestID: 7, bodyLength: 0).write(to: &header)
        try closing(Array(header.readableBytesView), "error_unknown_opcode")
        try closing(Array("GET / HTTP/1.1\r\n\r\n".utf8), "error_bad_magic")
        var v9 = Self.encode(Frame(requestID: 7, message: .ping([1])))
        v9[4] = 9
        try closing(v9, "error_unsupported_version")
        header.clear()
        FrameHeader(opcode: Opcode.score.rawValue, requestID: 7, bodyLength: 99_999_999).write(to: &header)
        try closing(Array(header.readableBytesView), "error_frame_too_large")
        var zstd = Self.encode(Frame(requestID: 7, message: .score(Self.score)))
        zstd[6] |= FrameFlags.zstd.rawValue
        try closing(zstd, "error_compression_not_negotiated", zstd: false)
        // libzstd words its own failure, so this one is checked by status, request id and close; its bytes
        // come from the error encoder below, like every error vector's.
        let c = try Connection([Self.models.leads])
        try c.hello()
        var answer = ByteBuffer(bytes: try c.exchange(zstd))
        let raw = try #require(try FrameDecoder(maxBodyBytes: 1 << 20).decodeFrame(&answer))
        guard case .error(let e) = try Frame.decode(header: raw.header, body: raw.body).message else {
            Issue.record("expected ERROR BAD_COMPRESSION"); return
        }
        #expect(e.status == .badCompression && raw.header.requestID == 7)
        #expect(c.channel.isActive, "BAD_COMPRESSION keeps the connection")
    }

    /// OVERLOADED, INTERNAL and SHUTTING_DOWN through the encoder every error frame of the handler goes through.
    @Test func theErrorEncoderWritesEveryErrorVector() throws {
        let statuses = Dictionary(uniqueKeysWithValues: Status.allCases.map { ($0.description, $0) })
        let names = try FileManager.default.contentsOfDirectory(atPath: Self.vectors.path)
            .filter { $0.hasPrefix("error_") && $0.hasSuffix(".json") }.sorted()
        #expect(names.count == Status.allCases.count - 1)
        for name in names {
            let json = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: Self.vectors.appendingPathComponent(name))) as? [String: Any])
            let h = try #require(json["header"] as? [String: Any]), m = try #require(json["message"] as? [String: Any])
            let statusName = try #require(h["status"] as? String)
            let status = try #require(statuses[statusName])
            let id = try #require((h["request_id"] as? NSNumber)?.uint64Value)
            var out = ByteBuffer()
            ResultEncoder.encodeError(WireError(status, try #require(m["message"] as? String), requestID: id), into: &out)
            // The handler stamps the time the request was held, as on any answer.
            FrameHeader.patchTime(try #require((h["time"] as? NSNumber)?.uint64Value), in: &out, headerAt: 0)
            #expect(Array(out.readableBytesView) == (try Self.vector(String(name.dropLast(5)))), "\(name)")
        }
    }
}
