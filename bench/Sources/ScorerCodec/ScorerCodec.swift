// The grpc-swift peer's protobuf codec for bench/proto/scorer.proto, written by hand so that the peer scores
// the way arbiterd does: the request's packed floats are read where they lie (no message object, no arrays
// per request), outputs come from per-thread scratch, and the reply is written in one pass into one buffer,
// grades as one code byte per candidate (no strings). The generated messages (ScorerMessages) stay the
// reference: the tests check this codec against them, both ways.
#if _endian(big)
#error("packed floats are copied as they lie: this codec assumes a little-endian machine, as protobuf's wire format is")
#endif

/// A malformed or unsupported message; `reason` names the field and what is wrong with it.
public struct ProtoError: Error, CustomStringConvertible {
    public let reason: String
    public init(_ reason: String) { self.reason = reason }
    public var description: String { reason }
}

/// A forward-only reader of protobuf's wire format over borrowed bytes.
struct ProtoReader {
    let base: UnsafeRawPointer
    let end: Int
    var offset = 0

    init(_ bytes: UnsafeRawBufferPointer) {
        // An empty buffer may have a nil base; nothing is read from it then.
        base = UnsafeRawPointer(bytes.baseAddress) ?? UnsafeRawPointer(bitPattern: 1)!
        end = bytes.count
    }

    var atEnd: Bool { offset >= end }

    mutating func varint() throws(ProtoError) -> UInt64 {
        var result: UInt64 = 0
        var shift: UInt64 = 0
        while true {
            guard offset < end else { throw ProtoError("a varint runs past the end of the message") }
            guard shift < 64 else { throw ProtoError("a varint is longer than 10 bytes") }
            let byte = base.load(fromByteOffset: offset, as: UInt8.self)
            offset += 1
            result |= UInt64(byte & 0x7F) << shift
            if byte & 0x80 == 0 { return result }
            shift += 7
        }
    }

    /// A length-delimited field's payload, as a range of offsets.
    mutating func lengthDelimited() throws(ProtoError) -> Range<Int> {
        let length = try varint()
        guard length <= UInt64(end - offset) else { throw ProtoError("a field of \(length) bytes runs past the end of the message") }
        let start = offset
        offset += Int(length)
        return start..<offset
    }

    /// Skips a field of an unknown number.
    mutating func skip(wireType: UInt64) throws(ProtoError) {
        switch wireType {
        case 0: _ = try varint()
        case 1: try advance(8)
        case 2: _ = try lengthDelimited()
        case 5: try advance(4)
        default: throw ProtoError("wire type \(wireType) is not supported (groups are not used by proto3)")
        }
    }

    mutating func advance(_ n: Int) throws(ProtoError) {
        guard n <= end - offset else { throw ProtoError("a fixed-size field runs past the end of the message") }
        offset += n
    }
}

/// Where the fields of a `ScoreRequest` lie in its bytes. Repeated floats must be packed (proto3's default,
/// what every stock encoder writes); an unpacked float field is refused rather than gathered.
public struct ScoreRequestFields: Equatable {
    public var model: Range<Int> = 0..<0
    /// Packed little-endian float32s.
    public var context: Range<Int> = 0..<0
    public var candidateCount = 0
    public var candidateFeatureCount = 0
    /// Packed little-endian float32s, row-major.
    public var candidateFeatures: Range<Int> = 0..<0
    /// The packed varints of the candidate ids (`decodeIDs` reads them).
    public var candidateIDs: Range<Int> = 0..<0
    /// The subject id, when the request carries one.
    public var subject: UInt64?
    public var topK = 0
    public var routingKey: UInt64 = 0

    public var contextCount: Int { context.count / 4 }
    public var candidateFeatureValues: Int { candidateFeatures.count / 4 }

    public init() {}

    public static func parse(_ message: UnsafeRawBufferPointer) throws(ProtoError) -> ScoreRequestFields {
        var r = ProtoReader(message)
        var f = ScoreRequestFields()
        var seen: UInt8 = 0
        func once(_ field: UInt64, _ name: String) throws(ProtoError) {
            // A repeated packed field may legally come in several pieces; no stock encoder splits one, and
            // reading them as one view would need a copy, so a second piece is refused.
            let bit = UInt8(1) << UInt8(field)
            guard seen & bit == 0 else { throw ProtoError("field \(name) appears twice (split packed fields are not supported)") }
            seen |= bit
        }
        while !r.atEnd {
            let key = try r.varint()
            let field = key >> 3, wireType = key & 7
            switch (field, wireType) {
            case (1, 2):
                try once(1, "model")
                f.model = try r.lengthDelimited()
            case (2, 2):
                try once(2, "context")
                f.context = try r.lengthDelimited()
                guard f.context.count % 4 == 0 else { throw ProtoError("context holds \(f.context.count) bytes, not a whole number of floats") }
            case (3, 2):
                try once(3, "candidate_ids")
                let ids = try r.lengthDelimited()
                f.candidateIDs = ids
                // Count the varints: each ends with a byte whose top bit is clear.
                var count = 0
                var last: UInt8 = 0
                for i in ids {
                    last = message[i]
                    if last & 0x80 == 0 { count += 1 }
                }
                guard last & 0x80 == 0 else { throw ProtoError("candidate_ids ends inside a varint") }
                f.candidateCount = count
            case (4, 0):
                let v = try r.varint()
                guard v <= UInt64(UInt32.max) else { throw ProtoError("candidate_feature_count \(v) does not fit a uint32") }
                f.candidateFeatureCount = Int(v)
            case (5, 2):
                try once(5, "candidate_features")
                f.candidateFeatures = try r.lengthDelimited()
                guard f.candidateFeatures.count % 4 == 0 else {
                    throw ProtoError("candidate_features holds \(f.candidateFeatures.count) bytes, not a whole number of floats")
                }
            case (6, 0):
                f.subject = try r.varint()
            case (7, 0):
                let v = try r.varint()
                guard v <= UInt64(UInt32.max) else { throw ProtoError("top_k \(v) does not fit a uint32") }
                f.topK = Int(v)
            case (8, 0):
                f.routingKey = try r.varint()
            case (2, 5), (5, 5), (3, 0):
                throw ProtoError("field \(field) is not packed (this peer reads packed repeated fields only)")
            case (1...8, _):
                throw ProtoError("field \(field) has wire type \(wireType), not the one scorer.proto gives it")
            default:
                try r.skip(wireType: wireType)
            }
        }
        return f
    }

    /// Decodes the `candidateCount` candidate ids into `out` (parse has checked they are whole varints).
    public func decodeIDs(_ message: UnsafeRawBufferPointer, into out: UnsafeMutablePointer<UInt64>) {
        var value: UInt64 = 0, shift: UInt64 = 0, k = 0
        for i in candidateIDs {
            let b = message[i]
            if shift < 64 { value |= UInt64(b & 0x7F) << shift }
            if b & 0x80 == 0 {
                out[k] = value
                k += 1
                value = 0
                shift = 0
            } else {
                shift += 7
            }
        }
    }
}

/// One output column of a reply, prepared once per model.
public struct ReplyColumn: Sendable {
    public enum Kind: Sendable {
        /// The `index`-th float column of the model's output.
        case float(index: Int)
        /// The `index`-th code column, with the label of each code.
        case code(index: Int, labels: [[UInt8]])
    }
    public let name: [UInt8]
    public let kind: Kind

    public init(name: String, kind: Kind) {
        self.name = Array(name.utf8)
        self.kind = kind
    }
}

/// Writes `ScoreReply` messages (field order 1, 2, 3…, 4, as generated code writes them).
public struct ScoreReplyWriter: Sendable {
    public let columns: [ReplyColumn]

    public init(columns: [ReplyColumn]) { self.columns = columns }

    static func varintSize(_ v: UInt64) -> Int {
        var n = 1, v = v >> 7
        while v != 0 { n += 1; v >>= 7 }
        return n
    }

    static func columnSize(_ c: ReplyColumn, candidates n: Int) -> Int {
        var size = 0
        if !c.name.isEmpty { size += 1 + varintSize(UInt64(c.name.count)) + c.name.count }
        switch c.kind {
        case .float:
            if n > 0 { size += 1 + varintSize(UInt64(4 * n)) + 4 * n }
        case .code(_, let labels):
            if n > 0 { size += 1 + varintSize(UInt64(n)) + n }
            for l in labels { size += 1 + varintSize(UInt64(l.count)) + l.count }
        }
        return size
    }

    /// An upper bound of the reply's size for `n` candidates.
    public func maxSize(candidates n: Int) -> Int {
        // version, compute_micros, scores, ids (at most 10 bytes each), sorted
        var size = 11 + 11 + (n > 0 ? 1 + 10 + 4 * n : 0) + (n > 0 ? 1 + 10 + 10 * n : 0) + 2
        for c in columns {
            let body = Self.columnSize(c, candidates: n)
            size += 1 + Self.varintSize(UInt64(body)) + body
        }
        return size
    }

    /// Writes the reply at `out` (which has room for `maxSize(candidates:)` bytes); returns the bytes written.
    /// `n` rows: scores, columns (`n` values each) and, when given, the rows' candidate ids.
    public func write(into out: UnsafeMutableRawPointer, version: UInt64, candidates n: Int, scores: UnsafePointer<Float>,
                      floatColumns: UnsafePointer<Float>, codeColumns: UnsafePointer<UInt8>, computeMicros: UInt32,
                      ids: UnsafePointer<UInt64>? = nil, sorted: Bool = false) -> Int {
        var w = ProtoWriter(out)
        if version != 0 { w.key(1, 0); w.varint(version) }
        if n > 0 { w.key(2, 2); w.floats(scores, n) }
        for c in columns {
            w.key(3, 2)
            w.varint(UInt64(Self.columnSize(c, candidates: n)))
            if !c.name.isEmpty { w.key(1, 2); w.bytes(c.name) }
            switch c.kind {
            case .float(let index):
                if n > 0 { w.key(2, 2); w.floats(floatColumns + index * n, n) }
            case .code(let index, let labels):
                if n > 0 {
                    w.key(4, 2)
                    w.varint(UInt64(n))
                    w.raw(codeColumns + index * n, n)
                }
                for l in labels { w.key(5, 2); w.bytes(l) }
            }
        }
        if computeMicros != 0 { w.key(4, 0); w.varint(UInt64(computeMicros)) }
        if let ids, n > 0 {
            var length = 0
            for i in 0..<n { length += Self.varintSize(ids[i]) }
            w.key(5, 2)
            w.varint(UInt64(length))
            for i in 0..<n { w.varint(ids[i]) }
        }
        if sorted { w.key(6, 0); w.varint(1) }
        return w.offset
    }
}

struct ProtoWriter {
    let base: UnsafeMutableRawPointer
    var offset = 0

    init(_ base: UnsafeMutableRawPointer) { self.base = base }

    mutating func varint(_ v: UInt64) {
        var v = v
        while v >= 0x80 {
            base.storeBytes(of: UInt8(truncatingIfNeeded: v) | 0x80, toByteOffset: offset, as: UInt8.self)
            offset += 1
            v >>= 7
        }
        base.storeBytes(of: UInt8(v), toByteOffset: offset, as: UInt8.self)
        offset += 1
    }

    mutating func key(_ field: UInt64, _ wireType: UInt64) { varint(field << 3 | wireType) }

    mutating func raw(_ p: UnsafeRawPointer, _ count: Int) {
        (base + offset).copyMemory(from: p, byteCount: count)
        offset += count
    }

    mutating func bytes(_ b: [UInt8]) {
        varint(UInt64(b.count))
        b.withUnsafeBytes { if let p = $0.baseAddress { raw(p, b.count) } }
    }

    /// Packed float32s (little-endian, as this machine stores them).
    mutating func floats(_ p: UnsafePointer<Float>, _ n: Int) {
        varint(UInt64(4 * n))
        raw(p, 4 * n)
    }
}
