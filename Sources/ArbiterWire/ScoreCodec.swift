import NIOCore

/// A SCORE body parsed in place: counts, the model name and the offsets of its arrays, with every length
/// checked against the body. The arrays stay in the received buffer until the caller copies them out.
public struct ScoreRequestView: Sendable {
    public let version: UInt64
    public let routingKey: UInt64
    public let topK: UInt32
    public let contextCount: Int
    public let candidateCount: Int
    public let candidateFeatureCount: Int
    public let model: String
    /// The subject id, when flag `SUBJECT` is set.
    public let subject: UInt64?

    @usableFromInline let body: ByteBuffer
    @usableFromInline let contextOffset: Int
    @usableFromInline let idsOffset: Int
    @usableFromInline let matrixOffset: Int
    /// Bytes after the matrix; a valid SCORE has none.
    public let trailingBytes: Int

    /// The fixed part of a SCORE body before the model name.
    static let fixedBytes = 36

    /// Parses a SCORE body. Throws `.malformed` naming the first field that does not fit.
    public init(body: ByteBuffer) throws(WireError) {
        var b = body
        let start = b.readerIndex
        version = try b.readLE(UInt64.self, "version")
        routingKey = try b.readLE(UInt64.self, "routing_key")
        topK = try b.readLE(UInt32.self, "top_k")
        contextCount = Int(try b.readLE(UInt32.self, "context_count"))
        candidateCount = Int(try b.readLE(UInt32.self, "candidate_count"))
        candidateFeatureCount = Int(try b.readLE(UInt32.self, "candidate_feature_count"))
        let flags = try b.readLE(UInt16.self, "flags")
        guard flags & ~ScoreFlags.defined == 0 else {
            throw WireError(.malformed, "SCORE flags 0x\(String(flags & ~ScoreFlags.defined, radix: 16)) are not defined in v1")
        }
        let nameLen = Int(try b.readLE(UInt16.self, "model_name_len"))
        guard nameLen > 0, nameLen <= 255 else { throw WireError(.malformed, "model name length \(nameLen) is outside 1...255") }
        guard b.readableBytes >= nameLen, let name = b.readString(length: nameLen) else {
            throw WireError(.malformed, "body ends inside the model name")
        }
        model = name
        try b.skipPadding(from: start, to: 8)
        subject = flags & ScoreFlags.subject != 0 ? try b.readLE(UInt64.self, "subject_id") : nil
        contextOffset = b.readerIndex - start
        let ctxBytes = contextCount * 4
        guard b.readableBytes >= ctxBytes else {
            throw WireError(.malformed, "body ends inside the context features (\(contextCount) declared)")
        }
        b.moveReaderIndex(forwardBy: ctxBytes)
        try b.skipPadding(from: start, to: 8)
        idsOffset = b.readerIndex - start
        guard b.readableBytes / 8 >= candidateCount else {
            throw WireError(.malformed, "body ends inside the candidate ids (\(candidateCount) declared)")
        }
        b.moveReaderIndex(forwardBy: candidateCount * 8)
        matrixOffset = b.readerIndex - start
        let cells = candidateCount.multipliedReportingOverflow(by: candidateFeatureCount)
        guard !cells.overflow, b.readableBytes / 4 >= cells.partialValue else {
            throw WireError(.malformed,
                            "body ends inside the candidate matrix (\(candidateCount) × \(candidateFeatureCount) declared)")
        }
        b.moveReaderIndex(forwardBy: cells.partialValue * 4)
        trailingBytes = b.readableBytes
        self.body = body
    }

    /// Copies the context features into `dst` (which holds at least `contextCount` floats).
    @inlinable
    public func copyContext(into dst: UnsafeMutablePointer<Float>) {
        copy(from: contextOffset, bytes: contextCount * 4, into: UnsafeMutableRawPointer(dst))
    }

    /// Copies the candidate ids into `dst` (at least `candidateCount`).
    @inlinable
    public func copyCandidateIDs(into dst: UnsafeMutablePointer<UInt64>) {
        copy(from: idsOffset, bytes: candidateCount * 8, into: UnsafeMutableRawPointer(dst))
    }

    /// Copies the row-major candidate matrix into `dst` (at least `candidateCount × candidateFeatureCount`).
    @inlinable
    public func copyCandidateMatrix(into dst: UnsafeMutablePointer<Float>) {
        copy(from: matrixOffset, bytes: candidateCount * candidateFeatureCount * 4, into: UnsafeMutableRawPointer(dst))
    }

    @inlinable
    func copy(from offset: Int, bytes: Int, into dst: UnsafeMutableRawPointer) {
        guard bytes > 0 else { return }
        body.withUnsafeReadableBytes { src in
            dst.copyMemory(from: src.baseAddress! + offset, byteCount: bytes)
        }
    }

    /// The request as plain arrays (tests, tools; the server copies into reused scratch instead).
    public func materialize() -> ScoreRequest {
        var ctx = [Float](repeating: 0, count: contextCount)
        var ids = [UInt64](repeating: 0, count: candidateCount)
        var mat = [Float](repeating: 0, count: candidateCount * candidateFeatureCount)
        ctx.withUnsafeMutableBufferPointer { if let p = $0.baseAddress { copyContext(into: p) } }
        ids.withUnsafeMutableBufferPointer { if let p = $0.baseAddress { copyCandidateIDs(into: p) } }
        mat.withUnsafeMutableBufferPointer { if let p = $0.baseAddress { copyCandidateMatrix(into: p) } }
        return ScoreRequest(model: model, version: version, routingKey: routingKey, topK: topK, subject: subject, context: ctx,
                            candidateIDs: ids.map { UInt64(littleEndian: $0) }, candidateFeatureCount: candidateFeatureCount,
                            candidateFeatures: mat)
    }
}

/// SCORE's `flags` bits.
public enum ScoreFlags {
    /// A `u64 subject_id` follows the model name's padding (added within v1; clients that never set it send
    /// exactly what they sent before).
    public static let subject: UInt16 = 0x0001
    /// Every bit defined in v1; any other is `MALFORMED`.
    public static let defined: UInt16 = subject
}

/// The encoders of SCORE and RESULT bodies, including the allocation-free path the server uses.
public enum ScoreCodec {
    public static func writeRequest(_ r: ScoreRequest, into b: inout ByteBuffer) {
        let start = b.writerIndex
        let nameBytes = Array(r.model.utf8)
        b.writeMultipleIntegers(r.version, r.routingKey, r.topK, UInt32(r.context.count), UInt32(r.candidateIDs.count),
                                UInt32(r.candidateFeatureCount), r.subject == nil ? UInt16(0) : ScoreFlags.subject,
                                UInt16(nameBytes.count), endianness: .little)
        b.writeBytes(nameBytes)
        b.writePadding(from: start, to: 8)
        if let subject = r.subject { b.writeInteger(subject, endianness: .little) }
        b.writeFloats(r.context)
        b.writePadding(from: start, to: 8)
        for id in r.candidateIDs { b.writeInteger(id, endianness: .little) }
        b.writeFloats(r.candidateFeatures)
    }

    /// The bytes that describe one result column (kind, labels, name), padded to 4. Models encode these once
    /// per version so the hot path only copies them.
    public static func columnPrologue(_ c: ColumnSpec) -> [UInt8] {
        var b = ByteBufferAllocator().buffer(capacity: 64)
        b.writeMultipleIntegers(c.kind.rawValue, UInt8(c.labels.count), endianness: .little)
        b.writeShortString(c.name)
        for l in c.labels { b.writeShortString(l) }
        b.writePadding(from: 0, to: 4)
        return b.readBytes(length: b.readableBytes)!
    }

    /// Writes the fixed part of a RESULT body, then the ids and scores.
    @inlinable
    public static func writeResultHead(version: UInt64, queueMicros: UInt32, computeMicros: UInt32, sorted: Bool,
                                       columnCount: Int, ids: UnsafeBufferPointer<UInt64>, scores: UnsafeBufferPointer<Float>,
                                       into b: inout ByteBuffer) {
        b.writeMultipleIntegers(version, queueMicros, computeMicros, UInt32(ids.count), UInt16(columnCount),
                                UInt16(sorted ? 1 : 0), endianness: .little)
        b.writeUInt64s(ids)
        b.writeFloats(scores)
    }

    /// Writes one float column: its prologue, then the values.
    @inlinable
    public static func writeFloatColumn(prologue: [UInt8], values: UnsafeBufferPointer<Float>, into b: inout ByteBuffer) {
        b.writeBytes(prologue)
        b.writeFloats(values)
    }

    /// Writes one code column: its prologue, then one byte per row, padded to 4.
    @inlinable
    public static func writeCodeColumn(prologue: [UInt8], values: UnsafeBufferPointer<UInt8>, into b: inout ByteBuffer) {
        b.writeBytes(prologue)
        b.writeBytes(UnsafeRawBufferPointer(values))
        let pad = (4 - values.count % 4) % 4
        if pad > 0 { b.writeRepeatingByte(0, count: pad) }
    }

    public static func writeResult(_ r: ScoreResult, into b: inout ByteBuffer) {
        r.ids.withUnsafeBufferPointer { ids in
            r.scores.withUnsafeBufferPointer { scores in
                writeResultHead(version: r.version, queueMicros: r.queueMicros, computeMicros: r.computeMicros,
                                sorted: r.sorted, columnCount: r.columns.count, ids: ids, scores: scores, into: &b)
            }
        }
        for c in r.columns {
            switch c.values {
            case .float32(let v):
                let p = columnPrologue(ColumnSpec(name: c.name, kind: .float32, labels: c.labels))
                v.withUnsafeBufferPointer { writeFloatColumn(prologue: p, values: $0, into: &b) }
            case .code(let v):
                let p = columnPrologue(ColumnSpec(name: c.name, kind: .code, labels: c.labels))
                v.withUnsafeBufferPointer { writeCodeColumn(prologue: p, values: $0, into: &b) }
            }
        }
    }

    static func readResult(_ b: inout ByteBuffer) throws(WireError) -> ScoreResult {
        let start = b.readerIndex
        let version = try b.readLE(UInt64.self, "version")
        let q = try b.readLE(UInt32.self, "queue_us")
        let c = try b.readLE(UInt32.self, "compute_us")
        let rows = Int(try b.readLE(UInt32.self, "row_count"))
        let ncols = try b.readLE(UInt16.self, "column_count")
        let flags = try b.readLE(UInt16.self, "flags")
        guard flags & ~1 == 0 else { throw WireError(.malformed, "RESULT flags 0x\(String(flags, radix: 16)) are not defined in v1") }
        guard b.readableBytes / 12 >= rows else { throw WireError(.malformed, "RESULT row count \(rows) exceeds the body") }
        let ids = try b.readUInt64s(count: rows, "ids")
        let scores = try b.readFloats(count: rows, "scores")
        var cols: [ResultColumn] = []
        for _ in 0..<ncols {
            let k = try b.readLE(UInt8.self, "column_kind")
            let nl = try b.readLE(UInt8.self, "label_count")
            let name = try b.readShortString("column_name", max: 255)
            var labels: [String] = []
            for _ in 0..<nl { labels.append(try b.readShortString("label", max: 255)) }
            try b.skipPadding(from: start, to: 4)
            switch ColumnSpec.Kind(rawValue: k) {
            case .float32:
                cols.append(ResultColumn(name: name, labels: labels, values: .float32(try b.readFloats(count: rows, "column"))))
            case .code:
                guard b.readableBytes >= rows, let bytes = b.readBytes(length: rows) else {
                    throw WireError(.malformed, "body ends inside column '\(name)'")
                }
                try b.skipPadding(from: start, to: 4)
                cols.append(ResultColumn(name: name, labels: labels, values: .code(bytes)))
            case nil:
                throw WireError(.malformed, "column kind \(k) is not defined")
            }
        }
        return ScoreResult(version: version, queueMicros: q, computeMicros: c, sorted: flags & 1 == 1,
                           ids: ids, scores: scores, columns: cols)
    }
}
