import ArbiterWire
import NIOCore

/// One answer cut from a target's byte stream.
public struct Answer: Sendable {
    /// The request it answers: its id for Arbiter frames, nil for in-order protocols (RESP).
    public var requestID: UInt64?
    /// nil when the answer is a success, otherwise the status name (counted in the report).
    public var error: String?
    /// Server-reported queue and compute time, in µs (Arbiter RESULTs only).
    public var queueMicros: UInt32?
    public var computeMicros: UInt32?
    /// The version that served (Arbiter's RESULT), for traces.
    public var version: UInt64?
}

/// What a connection's receiver remembers between calls to `cut` (protocols whose answers span frames).
public struct CutState: Sendable {
    /// HTTP/2 streams that have delivered a gRPC message and await their trailers.
    public var streamsWithMessage = Set<UInt32>()
    public init() {}
}

/// What the load generator needs to drive one kind of server: a handshake, pre-encoded requests, and a
/// way to cut answers out of the received bytes. Adding a peer or scenario is a new conformance.
public protocol Target: Sendable {
    /// A short name for reports.
    var name: String { get }
    /// Bytes of one request (for reports: "message size").
    var requestBytes: Int { get }
    /// Runs once per connection before the measured traffic (e.g. HELLO).
    func handshake(_ io: SocketIO) throws
    /// The request with sequence number `seq`, written into `buffer` (which the caller reuses).
    func encode(seq: UInt64, into buffer: inout [UInt8])
    /// Cuts complete answers from `inbox`, leaving a partial one. An answer without a request id answers
    /// the oldest unanswered request (in-order protocols).
    func cut(_ inbox: inout ByteBuffer, _ state: inout CutState) throws -> [Answer]
}

/// Arbiter's protocol: PING or SCORE frames, pre-encoded once; only the request id is patched per send.
public struct ArbiterTarget: Target {
    public let name: String
    /// The requests, sent in turn (request `seq` is `templates[seq % count]`).
    let templates: [[UInt8]]
    public var requestBytes: Int { templates[0].count }
    /// The access token sent in HELLO, for a server that requires one.
    let token: String?

    /// `frame` is any request; its id is replaced per send.
    public init(name: String, frame: Frame, token: String? = nil) {
        self.init(name: name, frames: [frame], token: token)
    }

    /// Several requests of one size (different users and candidates, say), sent in turn so that the server
    /// does not see one request's data hot in its caches; each id is replaced per send. Sizes must match:
    /// the driver copies a template into its reused buffer.
    public init(name: String, frames: [Frame], token: String? = nil) {
        precondition(!frames.isEmpty, "a target needs a request")
        self.name = name
        self.token = token
        templates = frames.map { f in
            var b = ByteBuffer()
            f.encode(into: &b)
            return Array(b.readableBytesView)
        }
        precondition(Set(templates.map(\.count)).count == 1, "the requests of one target must be of one size")
    }

    public func handshake(_ io: SocketIO) throws {
        var b = ByteBuffer()
        Frame(requestID: UInt64.max, message: .hello(Hello(clientName: "arbiter-bench", token: token))).encode(into: &b)
        try io.sendAll(Array(b.readableBytesView))
        var inbox = ByteBuffer()
        while true {
            if let raw = try FrameDecoder(maxBodyBytes: 1 << 26).decodeFrame(&inbox) {
                // The C floor echoes HELLO back as-is; arbiterd answers HELLO_OK. Either means "ready".
                if raw.header.opcode == Opcode.error.rawValue {
                    if case .error(let e)? = (try? Frame.decode(header: raw.header, body: raw.body))?.message {
                        throw BenchError("HELLO refused: \(e.status): \(e.message)")
                    }
                    throw BenchError("HELLO refused")
                }
                return
            }
            try io.receive(into: &inbox)
        }
    }

    public func encode(seq: UInt64, into buffer: inout [UInt8]) {
        let template = templates[Int(seq % UInt64(templates.count))]
        if buffer.count != template.count {
            buffer = template
        } else if templates.count > 1 {
            // In place: the buffer is reused, nothing is allocated per send.
            buffer.withUnsafeMutableBytes { dst in template.withUnsafeBytes { dst.copyMemory(from: $0) } }
        }
        withUnsafeBytes(of: seq.littleEndian) { id in
            for i in 0..<8 { buffer[8 + i] = id[i] }
        }
        // Stamped as Arbiter's own clients stamp (the C floor echoes it back unread).
        withUnsafeBytes(of: FrameHeader.sendStampNow().littleEndian) { stamp in
            for i in 0..<4 { buffer[20 + i] = stamp[i] }
        }
    }

    public func cut(_ inbox: inout ByteBuffer, _ state: inout CutState) throws -> [Answer] {
        var out: [Answer] = []
        while let raw = try FrameDecoder(maxBodyBytes: 1 << 26).decodeFrame(&inbox) {
            var a = Answer(requestID: raw.header.requestID)
            if raw.header.opcode == Opcode.error.rawValue {
                a.error = Status(rawValue: raw.header.status)?.description ?? "status \(raw.header.status)"
            } else if raw.header.opcode == Opcode.result.rawValue,
                      let (q, c) = raw.body.getMultipleIntegers(at: raw.body.readerIndex + 8, endianness: .little, as: (UInt32, UInt32).self) {
                a.queueMicros = q
                a.computeMicros = c
                a.version = raw.body.getInteger(at: raw.body.readerIndex, endianness: .little, as: UInt64.self)
            }
            out.append(a)
        }
        return out
    }
}

/// Redis (RESP): one pre-encoded command (PING → +PONG), answered in order.
public struct RESPTarget: Target {
    public let name: String
    let command: [UInt8]
    public var requestBytes: Int { command.count }

    /// `arguments` of one command, e.g. ["PING"].
    public init(name: String, arguments: [String]) {
        self.name = name
        var s = "*\(arguments.count)\r\n"
        for a in arguments { s += "$\(a.utf8.count)\r\n\(a)\r\n" }
        command = Array(s.utf8)
    }

    public func handshake(_ io: SocketIO) throws {}

    public func encode(seq: UInt64, into buffer: inout [UInt8]) {
        if buffer.count != command.count { buffer = command }
    }

    public func cut(_ inbox: inout ByteBuffer, _ state: inout CutState) throws -> [Answer] {
        var out: [Answer] = []
        while let line = inbox.readableBytesView.firstIndex(of: UInt8(ascii: "\n")) {
            let n = line - inbox.readerIndex + 1
            let text = inbox.readString(length: n) ?? ""
            out.append(Answer(requestID: nil, error: text.hasPrefix("+") ? nil : "RESP " + text.trimmingCharacters(in: .whitespacesAndNewlines)))
        }
        inbox.discardReadBytes()
        return out
    }
}

import Foundation

public struct BenchError: Error, CustomStringConvertible {
    public var description: String
    public init(_ s: String) { description = s }
}
