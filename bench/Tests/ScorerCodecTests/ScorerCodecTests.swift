import Foundation
import ScorerCodec
import ScorerMessages
import SwiftProtobuf
import Testing

/// The peer's hand-written codec against the generated messages: what SwiftProtobuf encodes, the codec reads;
/// what the codec writes, SwiftProtobuf decodes to the same values.
struct ScorerCodecTests {
    func request(model: String = "trees", context: [Float], ids: [UInt64], perCandidate: Int, features: [Float]) -> [UInt8] {
        var r = Arbiter_Bench_V1_ScoreRequest()
        r.model = model
        r.context = context
        r.candidateIds = ids
        r.candidateFeatureCount = UInt32(perCandidate)
        r.candidateFeatures = features
        return try! Array(r.serializedBytes() as [UInt8])
    }

    func floats(_ bytes: [UInt8], _ range: Range<Int>) -> [Float] {
        bytes[range].withUnsafeBytes { raw in (0..<range.count / 4).map { raw.loadUnaligned(fromByteOffset: 4 * $0, as: Float.self) } }
    }

    @Test func readsWhatGeneratedCodeWrites() throws {
        // Ids of every varint length, including the largest, so counting varints is exercised.
        let ids: [UInt64] = [0, 1, 127, 128, 16_383, 1 << 35, .max]
        let features = (0..<ids.count * 3).map { Float($0) * 0.5 - 4 }
        let bytes = request(context: [1.5, -2, .nan], ids: ids, perCandidate: 3, features: features)
        let f = try bytes.withUnsafeBytes { try ScoreRequestFields.parse($0) }
        #expect(String(decoding: bytes[f.model], as: UTF8.self) == "trees")
        #expect(f.candidateCount == ids.count)
        #expect(f.candidateFeatureCount == 3)
        let context = floats(bytes, f.context)
        #expect(context.count == 3 && context[0] == 1.5 && context[1] == -2 && context[2].isNaN)
        #expect(floats(bytes, f.candidateFeatures) == features)
        var decoded = [UInt64](repeating: 0, count: ids.count)
        bytes.withUnsafeBytes { raw in decoded.withUnsafeMutableBufferPointer { f.decodeIDs(raw, into: $0.baseAddress!) } }
        #expect(decoded == ids)
        #expect(f.subject == nil && f.topK == 0)
    }

    @Test func readsTheSubjectAndTopK() throws {
        var r = Arbiter_Bench_V1_ScoreRequest()
        r.model = "rank"
        r.candidateIds = [16_384, 999_999]
        r.subjectID = 0
        r.topK = 20
        let bytes = try Array(r.serializedBytes() as [UInt8])
        let f = try bytes.withUnsafeBytes { try ScoreRequestFields.parse($0) }
        #expect(f.subject == 0, "a present subject of 0 is a subject")
        #expect(f.topK == 20 && f.candidateCount == 2)
    }

    @Test func emptyFieldsAreAbsentNotWrong() throws {
        // proto3 leaves out empty fields: a request with no context and no candidates is valid.
        let bytes = request(context: [], ids: [], perCandidate: 0, features: [])
        let f = try bytes.withUnsafeBytes { try ScoreRequestFields.parse($0) }
        #expect(f.contextCount == 0 && f.candidateCount == 0 && f.candidateFeatureValues == 0)
    }

    @Test func skipsUnknownFields() throws {
        // Field 9 as a varint, a fixed64, a length-delimited and a fixed32 field, then the request.
        var bytes: [UInt8] = [0x48, 0x96, 0x01, 0x49] + [UInt8](repeating: 7, count: 8) + [0x4A, 0x02, 0xAA, 0xBB]
            + [0x4D, 1, 2, 3, 4]
        bytes += request(context: [3], ids: [5], perCandidate: 1, features: [4])
        let f = try bytes.withUnsafeBytes { try ScoreRequestFields.parse($0) }
        #expect(f.candidateCount == 1 && floats(bytes, f.context) == [3] && floats(bytes, f.candidateFeatures) == [4])
    }

    @Test(arguments: [
        ([0x12, 0x05, 0, 0, 0, 0, 0] as [UInt8], "not a whole number of floats"),
        ([0x12, 0x08, 0, 0, 0, 0], "runs past the end"),
        ([0x1A, 0x02, 0x01, 0x80], "ends inside a varint"),
        ([0x15, 0, 0, 0x80, 0x3F], "not packed"),
        ([0x0D, 0, 0, 0, 0], "wire type 5"),
        ([0x12, 0x00, 0x12, 0x00], "appears twice"),
        ([0x20, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF], "runs past the end"),
        ([0x20, 0x80, 0x80, 0x80, 0x80, 0x10], "does not fit a uint32"),
        ([0x4B], "wire type 3"),
    ])
    func refusesMalformedRequests(bytes: [UInt8], reason: String) {
        #expect {
            _ = try bytes.withUnsafeBytes { try ScoreRequestFields.parse($0) }
        } throws: { error in
            "\(error)".contains(reason)
        }
    }

    @Test(arguments: [(0, false), (1, true), (31, false), (32, true), (200, true), (5_000, false)])
    func writesWhatGeneratedCodeReads(n: Int, ranked: Bool) throws {
        let writer = ScoreReplyWriter(columns: [
            ReplyColumn(name: "p_contact", kind: .float(index: 0)),
            ReplyColumn(name: "p_hire", kind: .float(index: 1)),
            ReplyColumn(name: "grade", kind: .code(index: 0, labels: ["A", "B", "C", "D"].map { Array($0.utf8) })),
        ])
        let scores = (0..<n).map { Float($0) / 7 }
        let floatColumns = (0..<2 * n).map { Float($0) * -0.25 }
        let codes = (0..<n).map { UInt8($0 % 4) }
        let ids: [UInt64] = (0..<n).map { $0 % 3 == 0 ? UInt64($0) : UInt64.max - UInt64($0) }
        let capacity = writer.maxSize(candidates: n)
        var bytes = [UInt8](repeating: 0, count: capacity)
        let written = bytes.withUnsafeMutableBytes { out in
            writer.write(into: out.baseAddress!, version: 300, candidates: n, scores: scores, floatColumns: floatColumns,
                         codeColumns: codes, computeMicros: 17, ids: ids, sorted: ranked)
        }
        #expect(written <= capacity)
        let reply = try Arbiter_Bench_V1_ScoreReply(serializedBytes: Array(bytes[..<written]))
        #expect(reply.version == 300 && reply.computeMicros == 17)
        #expect(reply.scores == scores)
        #expect(reply.columns.map(\.name) == ["p_contact", "p_hire", "grade"])
        #expect(reply.columns[0].values == Array(floatColumns[..<n]))
        #expect(reply.columns[1].values == Array(floatColumns[n...]))
        #expect(reply.columns[2].codes == Data(codes))
        #expect(reply.columns[2].codeLabels == ["A", "B", "C", "D"])
        #expect(reply.ids == ids && reply.sorted == ranked)
        // Byte for byte what the generated code writes for the same message.
        #expect(Array(bytes[..<written]) == (try reply.serializedBytes() as [UInt8]))
    }
}
