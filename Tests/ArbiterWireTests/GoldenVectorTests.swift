import ArbiterWire
import Foundation
import NIOCore
import Testing

/// The golden vectors in proto-spec/vectors were written by an independent Python implementation of
/// PROTOCOL.md. Every one must decode to what its JSON says and re-encode byte for byte.
@Suite struct GoldenVectorTests {
    static let vectorsDir = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("proto-spec/vectors")

    static var names: [String] {
        let files = (try? FileManager.default.contentsOfDirectory(atPath: vectorsDir.path)) ?? []
        return files.filter { $0.hasSuffix(".hex") }.map { String($0.dropLast(4)) }.sorted()
    }

    @Test func thereIsAVectorForEveryOpcodeAndErrorStatus() throws {
        let docs = try Self.names.map { try Self.load($0).json }
        let opcodes = Set(docs.compactMap { ($0["header"] as? [String: Any])?["opcode"] as? String })
        for op in Opcode.allCases { #expect(opcodes.contains(op.description), "no vector for \(op)") }
        let statuses = Set(docs.compactMap { ($0["header"] as? [String: Any])?["status"] as? String })
        for s in Status.allCases where s != .ok { #expect(statuses.contains(s.description), "no vector for \(s)") }
    }

    @Test(arguments: GoldenVectorTests.names)
    func vectorRoundTrips(name: String) throws {
        let (bytes, json) = try Self.load(name)
        let expected = try Self.frame(from: json)

        var buffer = ByteBuffer(bytes: bytes)
        let raw = try #require(try FrameDecoder(maxBodyBytes: 1 << 24).decodeFrame(&buffer))
        #expect(buffer.readableBytes == 0)
        let decoded = try Frame.decode(header: raw.header, body: raw.body)
        if Self.hasMissingValues(json) {
            // NaN != NaN: compare what the two frames encode to, bit for bit.
            var a = ByteBuffer(), b = ByteBuffer()
            decoded.encode(into: &a)
            expected.encode(into: &b)
            #expect(a == b)
            #expect(Array(a.readableBytesView) == bytes)
        } else {
            #expect(decoded == expected)
        }

        var encoded = ByteBuffer()
        expected.encode(into: &encoded)
        #expect(Array(encoded.readableBytesView) == bytes, "re-encoding \(name) differs")
    }

    /// Whether a vector's message carries a "nan" (a missing value).
    static func hasMissingValues(_ json: [String: Any]) -> Bool {
        String(decoding: (try? JSONSerialization.data(withJSONObject: json["message"] ?? [:])) ?? Data(), as: UTF8.self).contains("\"nan\"")
    }

    static func load(_ name: String) throws -> (bytes: [UInt8], json: [String: Any]) {
        let hex = try String(contentsOf: vectorsDir.appendingPathComponent(name + ".hex"), encoding: .utf8)
            .filter { !$0.isWhitespace }
        let bytes = try #require(hexBytes(hex))
        let data = try Data(contentsOf: vectorsDir.appendingPathComponent(name + ".json"))
        let json = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
        return (bytes, json)
    }

    static func hexBytes(_ s: String) -> [UInt8]? {
        var out: [UInt8] = []
        var i = s.startIndex
        while i < s.endIndex {
            let j = s.index(i, offsetBy: 2)
            guard let b = UInt8(s[i..<j], radix: 16) else { return nil }
            out.append(b)
            i = j
        }
        return out
    }

    /// Builds the frame a vector's JSON describes.
    static func frame(from json: [String: Any]) throws -> Frame {
        let h = try #require(json["header"] as? [String: Any])
        let m = try #require(json["message"] as? [String: Any])
        let opName = try #require(h["opcode"] as? String)
        let statusName = try #require(h["status"] as? String)
        let op = try #require(Opcode(name: opName))
        let status = try #require(Status(name: statusName))
        func u64(_ d: [String: Any], _ k: String) -> UInt64 { (d[k] as? NSNumber)?.uint64Value ?? 0 }
        func u32(_ d: [String: Any], _ k: String) -> UInt32 { UInt32(u64(d, k)) }
        func u16(_ d: [String: Any], _ k: String) -> UInt16 { UInt16(u64(d, k)) }
        func str(_ d: [String: Any], _ k: String) -> String { d[k] as? String ?? "" }
        func floats(_ d: [String: Any], _ k: String) -> [Float] {
            // A missing value is written as the string "nan" (JSON has no NaN).
            (d[k] as? [Any] ?? []).map { ($0 as? NSNumber)?.floatValue ?? (($0 as? String) == "nan" ? Float.nan : .infinity) }
        }
        func list(_ d: [String: Any], _ k: String) -> [[String: Any]] { d[k] as? [[String: Any]] ?? [] }
        let message: Message
        switch op {
        case .hello:
            message = .hello(Hello(minVersion: u16(m, "min_version"), maxVersion: u16(m, "max_version"),
                                   maxFrameBytes: u32(m, "max_frame_bytes"), compression: CompressionSet(rawValue: u32(m, "compression")),
                                   clientName: str(m, "client_name"), token: m["token"] as? String))
        case .helloOK:
            message = .helloOK(HelloOK(version: u16(m, "version"),
                                       limits: Limits(maxFrameBytes: u32(m, "max_frame_bytes"), maxCandidates: u32(m, "max_candidates"),
                                                      maxInFlight: u32(m, "max_in_flight")),
                                       compression: CompressionSet(rawValue: u32(m, "compression")), serverName: str(m, "server_name")))
        case .ping: message = .ping(hexBytes(str(m, "payload_hex")) ?? [0xEE])
        case .pong: message = .pong(hexBytes(str(m, "payload_hex")) ?? [0xEE])
        case .listModels: message = .listModels
        case .models:
            message = .models(list(m, "models").map {
                ModelSummary(name: str($0, "name"), kind: str($0, "kind"), version: u64($0, "version"),
                             contextFeatureCount: u16($0, "context_feature_count"), candidateFeatureCount: u16($0, "candidate_feature_count"))
            })
        case .modelInfo: message = .modelInfo(ModelInfoRequest(model: str(m, "model"), version: u64(m, "version")))
        case .schema:
            func feats(_ k: String) -> [FeatureSpec] {
                list(m, k).map { FeatureSpec(name: str($0, "name"), kind: str($0, "kind") == "categorical" ? .categorical : .numeric,
                                             cardinality: u32($0, "cardinality"), allowsMissing: $0["missing"] as? Bool ?? false) }
            }
            message = .schema(ModelSchema(model: str(m, "model"), kind: str(m, "kind"), version: u64(m, "version"),
                                          createdUnixMillis: u64(m, "created_unix_ms"), contextFeatures: feats("context_features"),
                                          candidateFeatures: feats("candidate_features"),
                                          outputs: list(m, "outputs").map {
                                              ColumnSpec(name: str($0, "name"), kind: str($0, "kind") == "code" ? .code : .float32,
                                                         labels: $0["labels"] as? [String] ?? [])
                                          }))
        case .score:
            message = .score(ScoreRequest(model: str(m, "model"), version: u64(m, "version"), routingKey: u64(m, "routing_key"),
                                          topK: u32(m, "top_k"), subject: (m["subject_id"] as? NSNumber)?.uint64Value,
                                          context: floats(m, "context"),
                                          candidateIDs: (m["candidate_ids"] as? [NSNumber] ?? []).map(\.uint64Value),
                                          candidateFeatureCount: Int(u64(m, "candidate_feature_count")),
                                          candidateFeatures: floats(m, "candidate_features")))
        case .result:
            message = .result(ScoreResult(version: u64(m, "version"), queueMicros: u32(m, "queue_us"), computeMicros: u32(m, "compute_us"),
                                          sorted: m["sorted"] as? Bool ?? false,
                                          ids: (m["ids"] as? [NSNumber] ?? []).map(\.uint64Value), scores: floats(m, "scores"),
                                          columns: list(m, "columns").map { c in
                                              let labels = c["labels"] as? [String] ?? []
                                              if str(c, "kind") == "code" {
                                                  return ResultColumn(name: str(c, "name"), labels: labels,
                                                                      values: .code((c["values"] as? [NSNumber] ?? []).map(\.uint8Value)))
                                              }
                                              return ResultColumn(name: str(c, "name"), labels: labels, values: .float32(floats(c, "values")))
                                          }))
        case .error:
            message = .error(ErrorBody(status: status, message: str(m, "message")))
        case .modelStatus:
            message = .modelStatus(str(m, "model"))
        case .status:
            func dbl(_ d: [String: Any], _ k: String) -> Double { (d[k] as? NSNumber)?.doubleValue ?? .nan }
            let roleBits: [String: VersionRoles] = ["active": .active, "split": .split, "shadow": .shadow]
            message = .status(list(m, "models").map { e in
                let shadow = (e["shadow"] as? [String: Any]).map { s in
                    ShadowStatus(version: u64(s, "version"), sample: Float(dbl(s, "sample")), comparisons: list(s, "comparisons").map {
                        ShadowStatus.Comparison(served: u64($0, "served"), requests: u64($0, "requests"), rows: u64($0, "rows"),
                                                meanAbsDifference: dbl($0, "mean_abs_difference"), maxAbsDifference: dbl($0, "max_abs_difference"),
                                                rankedRequests: u64($0, "ranked_requests"), meanRankCorrelation: dbl($0, "mean_rank_correlation"),
                                                codeRows: u64($0, "code_rows"), changedCodes: u64($0, "changed_codes"),
                                                dropped: u64($0, "dropped"), failed: u64($0, "failed"), codeColumn: str($0, "code_column"))
                    })
                }
                return ModelStatus(name: str(e, "name"), kind: str(e, "kind"), active: u64(e, "active"), latest: u64(e, "latest"),
                                   failure: str(e, "failure"),
                                   versions: list(e, "versions").map { v in
                                       VersionStatus(version: u64(v, "version"),
                                                     roles: VersionRoles((v["roles"] as? [String] ?? []).compactMap { roleBits[$0] }),
                                                     splitWeight: Float(dbl(v, "split_weight")))
                                   },
                                   rejected: list(e, "rejected").map { RejectedVersion(version: u64($0, "version"), reason: str($0, "reason")) },
                                   shadow: shadow)
            })
        case .reload:
            message = .reload
        case .reloaded:
            let outcomes: [String: ReloadEvent.Outcome] = ["loaded": .loaded, "rejected": .rejected, "unloaded": .unloaded]
            message = .reloaded(ReloadReport(generation: u64(m, "generation"), events: list(m, "events").map {
                ReloadEvent(model: str($0, "model"), version: u64($0, "version"), outcome: outcomes[str($0, "outcome")] ?? .loaded,
                            detail: str($0, "detail"))
            }))
        }
        let header = FrameHeader(version: UInt8(u64(h, "version")), opcode: op.rawValue, flags: FrameFlags(rawValue: UInt8(u64(h, "flags"))),
                                 status: status.rawValue, requestID: u64(h, "request_id"), bodyLength: u32(h, "body_length"),
                                 sendStamp: u32(h, "send_stamp"), time: u64(h, "time"))
        return Frame(header: header, message: message)
    }
}
