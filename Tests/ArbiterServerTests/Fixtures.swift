import ArbiterServer
import ArbiterStore
import ArbiterTraining
import ArbiterWire
import Foundation
import NIOCore
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// A store with one small trained lead-grading model, shared by the server tests.
enum Fixture {
    static let store: String = {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("arbiter-server-tests-\(getpid())").path
        try? FileManager.default.removeItem(atPath: dir)
        let rows = LeadData.generate(rows: 3000, seed: 11)
        var o = FMTrainingOptions()
        o.maxEpochs = 4
        let trained = try! LeadGradingTrainer.train(rows: rows, options: o)
        let env = try! StoreEnvironment.open(path: dir, configuration: StoreConfiguration(mapSize: 1 << 30, create: true))
        try! LeadGradingTrainer.publish(trained, model: "leads", catalog: Catalog(environment: env))
        return dir
    }()

    static func config(store: String = Fixture.store) -> ServerConfiguration {
        var c = ServerConfiguration(storePath: store)
        c.port = 0
        c.threads = 2
        c.store = StoreConfiguration(mapSize: 1 << 30)
        c.limits = Limits(maxFrameBytes: 64 << 10, maxCandidates: 100, maxInFlight: 64)
        c.pollIntervalMillis = 0
        return c
    }

    /// Starts a server, runs `body` with its port, and shuts it down.
    static func withServer<T>(_ config: ServerConfiguration = Fixture.config(), _ body: (ArbiterServer, Int) async throws -> T) async throws -> T {
        let server = try ArbiterServer(configuration: config)
        try await server.start()
        do {
            let r = try await body(server, server.port!)
            try await server.shutdown()
            return r
        } catch {
            try? await server.shutdown()
            throw error
        }
    }

    /// A valid lead: 2 context features, 6 candidate features.
    static let context: [Float] = [3, 4200]
    static func lead(_ i: Int) -> [Float] { [Float(i % 5), Float(i % 12), Float(3 + i), 0.05 * Float(i % 3), Float(i % 30), Float(i % 10)] }
    static func scoreRequest(n: Int, model: String = "leads", topK: UInt32 = 0) -> ScoreRequest {
        ScoreRequest(model: model, topK: topK, context: context, candidateIDs: (0..<n).map { UInt64(1000 + $0) },
                     candidateFeatureCount: 6, candidateFeatures: (0..<n).flatMap(lead))
    }
}

/// A blocking TCP connection that speaks raw bytes, for feeding the server what a real client never would.
final class RawConnection {
    let fd: Int32
    var inbox = ByteBuffer()

    init(port: Int) throws {
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = in_port_t(UInt16(port).bigEndian)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard rc == 0 else { close(fd); throw ClientTestError("connect failed: errno \(errno)") }
        var tv = timeval(tv_sec: 5, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
    }

    deinit { close(fd) }

    func send(_ bytes: [UInt8]) {
        var off = 0
        while off < bytes.count {
            let n = bytes[off...].withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if n <= 0 { return }
            off += n
        }
    }

    func send(_ frame: Frame, flags: FrameFlags = []) {
        var b = ByteBuffer()
        frame.encode(into: &b)
        var bytes = Array(b.readableBytesView)
        bytes[6] = flags.rawValue
        send(bytes)
    }

    func shutdownWrite() { shutdown(fd, Int32(SHUT_WR)) }

    /// The next frame, or nil when the server closed the connection.
    func readFrame() throws -> Frame? {
        while true {
            if let raw = try FrameDecoder(maxBodyBytes: 1 << 24).decodeFrame(&inbox) {
                return try Frame.decode(header: raw.header, body: raw.body)
            }
            var chunk = [UInt8](repeating: 0, count: 65536)
            let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n == 0 { return nil }
            if n < 0 { throw ClientTestError("recv failed: errno \(errno) (timeout?)") }
            inbox.writeBytes(chunk[0..<n])
        }
    }

    /// Reads an ERROR and returns its status and message.
    func expectError(_ status: Status, requestID: UInt64? = nil, sourceLocation: SourceLocation = #_sourceLocation) throws -> String {
        let f = try #require(try readFrame(), "connection closed instead of ERROR \(status)", sourceLocation: sourceLocation)
        guard case .error(let e) = f.message else {
            Issue.record("expected ERROR \(status), got \(f.message.opcode)", sourceLocation: sourceLocation)
            return ""
        }
        #expect(e.status == status, "\(e.message)", sourceLocation: sourceLocation)
        if let requestID { #expect(f.header.requestID == requestID, sourceLocation: sourceLocation) }
        return e.message
    }

    func hello(compression: CompressionSet = []) throws {
        send(Frame(requestID: 1, message: .hello(Hello(compression: compression, clientName: "raw-test"))))
        let f = try #require(try readFrame())
        guard case .helloOK = f.message else { throw ClientTestError("expected HELLO_OK, got \(f.message)") }
    }

    /// PING on this connection answers.
    func pingWorks() throws -> Bool {
        send(Frame(requestID: 77, message: .ping([9, 9])))
        guard let f = try readFrame(), case .pong(let p) = f.message else { return false }
        return p == [9, 9] && f.header.requestID == 77
    }

    /// True when the server has closed the connection (after any frames already sent).
    func isClosedByServer() throws -> Bool {
        while let _ = try readFrame() {}
        return true
    }
}

struct ClientTestError: Error, CustomStringConvertible {
    var description: String
    init(_ s: String) { description = s }
}

/// A fresh connection to `port` answers PING: the server is still serving.
func serverStillAnswers(_ port: Int) throws -> Bool {
    try RawConnection(port: port).pingWorks()
}
