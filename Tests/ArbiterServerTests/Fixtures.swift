import Allocation
import ArbiterClient
import ArbiterModels
import Gbdt
import LeadGrading
import Ranking
import Routing
import ArbiterServer
import ArbiterStore
import ArbiterTestSupport
import ArbiterTraining
import ArbiterWire
import Foundation
import NIOConcurrencyHelpers
import NIOCore
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// A store with one small trained lead-grading model, shared by the server tests.
enum Fixture {
    static let store: String = {
        let tmp = FileManager.default.temporaryDirectory
        let dir = tmp.appendingPathComponent("arbiter-server-tests-\(getpid())").path
        try? FileManager.default.removeItem(atPath: dir)
        // Stores left by earlier runs whose process is gone (the store outlives the run that made it).
        for name in (try? FileManager.default.contentsOfDirectory(atPath: tmp.path)) ?? [] where name.hasPrefix("arbiter-server-tests-") {
            if let pid = Int32(name.dropFirst("arbiter-server-tests-".count)), kill(pid, 0) != 0, errno == ESRCH {
                try? FileManager.default.removeItem(at: tmp.appendingPathComponent(name))
            }
        }
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
        // No shedding by wait: the suites run in parallel on two cores, where a request can wait 300 ms for a
        // loop that another test keeps busy. QueueDelayTests and OverloadTests turn it on.
        c.maxQueueMillis = 0
        // Nor by the HELLO and frame clocks (10 s by default): under the sanitizers every test shares one slow,
        // busy process, where a client's next bytes can wait seconds for a thread. The tests of those timeouts
        // set their own.
        c.helloTimeoutMillis = 60_000
        c.frameTimeoutMillis = 60_000
        // Background threads (loader, records, shadow) at the loops' priority: the suites share two cores, and a
        // shadow thread in SCHED_IDLE would wait for every other suite's computation.
        c.backgroundNice = 0
        return c
    }

    /// The kinds the tests serve (as arbiterd's `ServedKinds` does).
    static var registry: ModelRegistry {
        var r = ModelRegistry()
        r.register(kind: LeadGradingLayout.kind, factory: LeadGradingModel.factory)
        r.register(kind: GbdtLayout.kind, factory: GbdtModel.factory)
        r.register(kind: RankingLayout.kind, factory: RankingModel.factory)
        r.register(kind: RoutingLayout.kind, factory: RoutingModel.factory)
        r.register(kind: AllocationLayout.kind, factory: AllocationModel.factory)
        return r
    }

    /// Starts a server, runs `body` with its port, and shuts it down.
    static func withServer<T>(_ config: ServerConfiguration = Fixture.config(), _ body: (ArbiterServer, Int) async throws -> T) async throws -> T {
        let server = try ArbiterServer(configuration: config, registry: registry)
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

/// The blocking client, with the expectations the bad-input tests share.
typealias RawConnection = BlockingConnection

extension BlockingConnection {
    convenience init(port: Int) throws {
        try self.init(port: port, receiveTimeoutSeconds: 5)
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

/// Polls `condition` every millisecond until it holds; fails the test (throws) after `seconds`, so a
/// broken server cannot hang the suite.
/// 60 s by default: the wait ends as soon as the condition holds, and under the sanitizers the whole test
/// process can stall for tens of seconds while other suites compute.
func waitUntil(_ what: String, seconds: Double = 60, _ condition: () throws -> Bool) async throws {
    let deadline = ContinuousClock.now + .seconds(seconds)
    while try !condition() {
        guard ContinuousClock.now < deadline else { throw ClientTestError("gave up after \(seconds) s waiting until \(what)") }
        try await Task.sleep(for: .milliseconds(1))
    }
}

/// A fresh connection to `port` answers PING: the server is still serving.
func serverStillAnswers(_ port: Int) throws -> Bool {
    try RawConnection(port: port).pingWorks()
}

/// Something handed whole to one other thread at a time (a blocking connection read on a thread of its own).
struct Handed<T>: @unchecked Sendable {
    let value: T
}


/// Writes all of `bytes` to `connection`'s socket, blocking while the kernel's buffers are full; false once
/// the peer is gone (tests that must keep sending to a server that stops reading call it from a thread of
/// their own). It takes the connection, not its descriptor: the connection — and so its descriptor — stays
/// open for as long as this writes. (A thread that kept writing to a bare descriptor number after its
/// connection was closed wrote into whatever socket the process opened next under that number: another
/// test's connection, which the server then reset. That broke whole sanitizer runs.)
@discardableResult
func sendAll(_ connection: BlockingConnection, _ bytes: [UInt8]) -> Bool {
    withExtendedLifetime(connection) {
        var off = 0
        while off < bytes.count {
            let n = bytes[off...].withUnsafeBytes { Glibc.send(connection.fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if n <= 0 { return false }
            off += n
        }
        return true
    }
}

/// Sends `bytes` on `connection` from a thread of its own (see `sendAll`), which holds the connection open
/// until it is done.
func sendOnThread(_ connection: BlockingConnection, _ bytes: [UInt8]) {
    let held = Handed(value: connection)
    Thread { sendAll(held.value, bytes) }.start()
}

/// arbiterd as an operator runs it, as a process of its own, on a port the kernel picks.
enum ArbiterdProcess {
    /// Starts arbiterd on `Fixture.store` with `arguments` (under `ulimit -n files` if given); returns the
    /// process and its log, read as it comes.
    static func start(files: Int? = nil, _ arguments: [String]) throws -> (Process, NIOLockedValueBox<String>) {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/bin/sh")
        // The hard limit too, or arbiterd would raise its soft limit back up.
        let limit = files.map { "ulimit -Sn \($0) && ulimit -Hn \($0) && " } ?? ""
        p.arguments = ["-c", limit + "exec \"$0\" \"$@\"", OtherProcess.binDir.appendingPathComponent("arbiterd").path,
                       "--store", Fixture.store, "--listen", "127.0.0.1:0", "--poll-ms", "0"] + arguments
        let log = Pipe()
        p.standardError = log
        p.standardOutput = log
        try p.run()
        let text = NIOLockedValueBox("")
        let reader = Handed(value: log.fileHandleForReading)
        Thread {
            while true {
                let chunk = reader.value.availableData
                if chunk.isEmpty { return }
                text.withLockedValue { $0 += String(decoding: chunk, as: UTF8.self) }
            }
        }.start()
        return (p, text)
    }

    /// The port from the log line "listening on [IPv4]127.0.0.1/127.0.0.1:PORT ...", once it is written.
    static func port(_ p: Process, _ log: NIOLockedValueBox<String>) async throws -> Int {
        try await waitUntil("arbiterd listens", seconds: 60) { log.withLockedValue { $0.contains("listening on") } || !p.isRunning }
        let text = log.withLockedValue { $0 }
        let r = try #require(text.range(of: #"listening on \S*:(\d+)"#, options: .regularExpression), "\(text)")
        return try #require(Int(text[r].split(separator: ":").last!))
    }

    /// A process's resident memory (VmRSS), in bytes.
    static func resident(_ pid: Int32) -> Int {
        guard let text = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8),
              let line = text.split(separator: "\n").first(where: { $0.hasPrefix("VmRSS:") }),
              let kb = Int(line.split(separator: " ").dropFirst().first ?? "") else { return 0 }
        return kb << 10
    }
}
