import NIOCore

/// Every message of protocol v1, by opcode.
public enum Message: Equatable, Sendable {
    case hello(Hello)
    case helloOK(HelloOK)
    case ping([UInt8])
    case pong([UInt8])
    case listModels
    case models([ModelSummary])
    case modelInfo(ModelInfoRequest)
    case schema(ModelSchema)
    case score(ScoreRequest)
    case result(ScoreResult)
    /// Ask for the deployment of one model (by name) or of every model (empty name).
    case modelStatus(String)
    case status([ModelStatus])
    /// Ask the server to check the store now.
    case reload
    case reloaded(ReloadReport)
    case error(ErrorBody)

    public var opcode: Opcode {
        switch self {
        case .hello: .hello
        case .helloOK: .helloOK
        case .ping: .ping
        case .pong: .pong
        case .listModels: .listModels
        case .models: .models
        case .modelInfo: .modelInfo
        case .schema: .schema
        case .score: .score
        case .result: .result
        case .modelStatus: .modelStatus
        case .status: .status
        case .reload: .reload
        case .reloaded: .reloaded
        case .error: .error
        }
    }

    /// The header status byte this message travels with.
    public var status: Status {
        if case .error(let e) = self { return e.status }
        return .ok
    }
}

/// A decoded frame: the header as received and its message.
public struct Frame: Equatable, Sendable {
    public var header: FrameHeader
    public var message: Message

    public init(header: FrameHeader, message: Message) {
        self.header = header
        self.message = message
    }

    /// A frame whose header is derived from the message: opcode, status, uncompressed.
    public init(requestID: UInt64, time: UInt64 = 0, message: Message) {
        self.header = FrameHeader(opcode: message.opcode.rawValue, status: message.status.rawValue,
                                  requestID: requestID, time: time)
        self.message = message
    }

    /// Encodes header and body; the header's body length and opcode are taken from the message.
    public func encode(into buffer: inout ByteBuffer) {
        let start = buffer.writerIndex
        var h = header
        h.opcode = message.opcode.rawValue
        h.status = message.status.rawValue
        h.flags.remove(.zstd)
        h.write(to: &buffer)
        let bodyStart = buffer.writerIndex
        message.encodeBody(into: &buffer)
        FrameHeader.patchBodyLength(UInt32(buffer.writerIndex - bodyStart), in: &buffer, headerAt: start)
    }

    /// Decodes a body (already decompressed) according to the header's opcode.
    public static func decode(header: FrameHeader, body: ByteBuffer) throws(WireError) -> Frame {
        guard let op = Opcode(rawValue: header.opcode) else {
            throw WireError(.unknownOpcode, "opcode 0x\(String(header.opcode, radix: 16)) is not defined in protocol v1",
                            requestID: header.requestID)
        }
        do {
            let m = try Message.decodeBody(opcode: op, status: header.status, body: body)
            return Frame(header: header, message: m)
        } catch {
            var e = error
            e.requestID = header.requestID
            throw e
        }
    }
}

extension Message {
    /// Writes the body of this message (no header).
    public func encodeBody(into b: inout ByteBuffer) {
        switch self {
        case .hello(let h):
            b.writeMultipleIntegers(h.minVersion, h.maxVersion, h.maxFrameBytes, h.compression.rawValue, endianness: .little)
            b.writeShortString(h.clientName)
            if let token = h.token { b.writeShortString(token) }
        case .helloOK(let h):
            b.writeMultipleIntegers(h.version, UInt16(0), h.limits.maxFrameBytes, h.limits.maxCandidates,
                                    h.limits.maxInFlight, h.compression.rawValue, endianness: .little)
            b.writeShortString(h.serverName)
        case .ping(let p), .pong(let p):
            b.writeBytes(p)
        case .listModels:
            break
        case .models(let list):
            b.writeInteger(UInt32(list.count), endianness: .little)
            for m in list {
                b.writeMultipleIntegers(m.version, m.contextFeatureCount, m.candidateFeatureCount, endianness: .little)
                b.writeShortString(m.name)
                b.writeShortString(m.kind)
            }
        case .modelInfo(let r):
            b.writeInteger(r.version, endianness: .little)
            b.writeShortString(r.model)
        case .schema(let s):
            b.writeMultipleIntegers(s.version, s.createdUnixMillis, endianness: .little)
            b.writeShortString(s.model)
            b.writeShortString(s.kind)
            for list in [s.contextFeatures, s.candidateFeatures] {
                b.writeInteger(UInt16(list.count), endianness: .little)
                for f in list {
                    b.writeMultipleIntegers(f.kind.rawValue | (f.allowsMissing ? FeatureSpec.missingBit : 0), f.cardinality,
                                            endianness: .little)
                    b.writeShortString(f.name)
                }
            }
            b.writeInteger(UInt16(s.outputs.count), endianness: .little)
            for c in s.outputs {
                b.writeMultipleIntegers(c.kind.rawValue, UInt8(c.labels.count), endianness: .little)
                b.writeShortString(c.name)
                for l in c.labels { b.writeShortString(l) }
            }
        case .score(let r):
            ScoreCodec.writeRequest(r, into: &b)
        case .result(let r):
            ScoreCodec.writeResult(r, into: &b)
        case .modelStatus(let name):
            b.writeShortString(name)
        case .status(let list):
            ModelStatus.write(list, into: &b)
        case .reload:
            break
        case .reloaded(let r):
            r.write(into: &b)
        case .error(let e):
            b.writeShortString(ErrorBody.truncated(e.message))
        }
    }

    /// Decodes a body for `opcode`. Trailing bytes after a complete body are malformed.
    public static func decodeBody(opcode: Opcode, status: UInt8, body: ByteBuffer) throws(WireError) -> Message {
        var b = body
        let m: Message
        switch opcode {
        case .hello:
            let minV = try b.readLE(UInt16.self, "min_version")
            let maxV = try b.readLE(UInt16.self, "max_version")
            let maxFrame = try b.readLE(UInt32.self, "max_frame_bytes")
            let comp = try b.readLE(UInt32.self, "compression")
            let name = try b.readShortString("client_name", max: 255)
            // The token is optional: a body that ends after client_name carries none.
            let token = b.readableBytes > 0 ? try b.readShortString("token", max: 255) : nil
            m = .hello(Hello(minVersion: minV, maxVersion: maxV, maxFrameBytes: maxFrame,
                             compression: CompressionSet(rawValue: comp), clientName: name, token: token))
        case .helloOK:
            let v = try b.readLE(UInt16.self, "version")
            _ = try b.readLE(UInt16.self, "reserved")
            let maxFrame = try b.readLE(UInt32.self, "max_frame_bytes")
            let maxCand = try b.readLE(UInt32.self, "max_candidates")
            let maxInFlight = try b.readLE(UInt32.self, "max_in_flight")
            let comp = try b.readLE(UInt32.self, "compression")
            let name = try b.readShortString("server_name", max: 255)
            m = .helloOK(HelloOK(version: v, limits: Limits(maxFrameBytes: maxFrame, maxCandidates: maxCand,
                                                            maxInFlight: maxInFlight),
                                 compression: CompressionSet(rawValue: comp), serverName: name))
        case .ping:
            m = .ping(b.readBytes(length: b.readableBytes) ?? [])
        case .pong:
            m = .pong(b.readBytes(length: b.readableBytes) ?? [])
        case .listModels:
            m = .listModels
        case .models:
            let n = try b.readLE(UInt32.self, "count")
            guard Int(n) <= b.readableBytes / 16 else { throw WireError(.malformed, "MODELS count \(n) exceeds the body") }
            var list: [ModelSummary] = []
            list.reserveCapacity(Int(n))
            for _ in 0..<n {
                let v = try b.readLE(UInt64.self, "version")
                let nc = try b.readLE(UInt16.self, "context_feature_count")
                let nd = try b.readLE(UInt16.self, "candidate_feature_count")
                let name = try b.readShortString("name", max: 255)
                let kind = try b.readShortString("kind", max: 255)
                list.append(ModelSummary(name: name, kind: kind, version: v, contextFeatureCount: nc, candidateFeatureCount: nd))
            }
            m = .models(list)
        case .modelInfo:
            let v = try b.readLE(UInt64.self, "version")
            let name = try b.readShortString("model", max: 255)
            m = .modelInfo(ModelInfoRequest(model: name, version: v))
        case .schema:
            let v = try b.readLE(UInt64.self, "version")
            let created = try b.readLE(UInt64.self, "created_unix_ms")
            let model = try b.readShortString("model", max: 255)
            let kind = try b.readShortString("kind", max: 255)
            var lists: [[FeatureSpec]] = []
            for _ in 0..<2 {
                let n = try b.readLE(UInt16.self, "feature_count")
                var list: [FeatureSpec] = []
                for _ in 0..<n {
                    let k = try b.readLE(UInt8.self, "feature_kind")
                    guard let kind = FeatureSpec.Kind(rawValue: k & ~FeatureSpec.missingBit) else {
                        throw WireError(.malformed, "feature kind \(k & ~FeatureSpec.missingBit) is not defined")
                    }
                    let card = try b.readLE(UInt32.self, "cardinality")
                    let name = try b.readShortString("feature_name", max: 255)
                    list.append(FeatureSpec(name: name, kind: kind, cardinality: card, allowsMissing: k & FeatureSpec.missingBit != 0))
                }
                lists.append(list)
            }
            let no = try b.readLE(UInt16.self, "output_count")
            var outs: [ColumnSpec] = []
            for _ in 0..<no {
                let k = try b.readLE(UInt8.self, "column_kind")
                guard let kind = ColumnSpec.Kind(rawValue: k) else { throw WireError(.malformed, "column kind \(k) is not defined") }
                let nl = try b.readLE(UInt8.self, "label_count")
                let name = try b.readShortString("column_name", max: 255)
                var labels: [String] = []
                for _ in 0..<nl { labels.append(try b.readShortString("label", max: 255)) }
                outs.append(ColumnSpec(name: name, kind: kind, labels: labels))
            }
            m = .schema(ModelSchema(model: model, kind: kind, version: v, createdUnixMillis: created,
                                    contextFeatures: lists[0], candidateFeatures: lists[1], outputs: outs))
        case .score:
            let view = try ScoreRequestView(body: b)
            m = .score(view.materialize())
            b.moveReaderIndex(to: b.writerIndex - view.trailingBytes)
        case .result:
            m = .result(try ScoreCodec.readResult(&b))
        case .modelStatus:
            m = .modelStatus(try b.readShortString("model", max: 255))
        case .status:
            m = .status(try ModelStatus.read(&b))
        case .reload:
            m = .reload
        case .reloaded:
            m = .reloaded(try ReloadReport.read(&b))
        case .error:
            guard let s = Status(rawValue: status), s != .ok else {
                throw WireError(.malformed, "ERROR frame carries status \(status), which is not an error status")
            }
            m = .error(ErrorBody(status: s, message: try b.readShortString("message", max: ErrorBody.maxMessageBytes)))
        }
        guard b.readableBytes == 0 else {
            throw WireError(.malformed, "\(opcode) body has \(b.readableBytes) bytes after its last field")
        }
        return m
    }
}

extension ErrorBody {
    /// Cuts a message to `maxMessageBytes` of UTF-8 without splitting a character.
    static func truncated(_ s: String) -> String {
        if s.utf8.count <= maxMessageBytes { return s }
        var out = ""
        for ch in s {
            if out.utf8.count + String(ch).utf8.count > maxMessageBytes { break }
            out.append(ch)
        }
        return out
    }
}
