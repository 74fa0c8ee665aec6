import ArbiterClient
import ArbiterTestSupport
import ArbiterWire
import Foundation
import NIOConcurrencyHelpers
import NIOCore
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// `arbiterd` as an operator runs it: SIGTERM with a client that keeps requests in flight and never reads
/// its answers still ends the process, within the grace period, with status 0.
@Suite struct SignalTests {
    @Test func sigtermWithAClientThatDoesNotReadExitsWithinTheGracePeriod() async throws {
        let arbiterd = OtherProcess.binDir.appendingPathComponent("arbiterd").path
        let p = Process()
        p.executableURL = URL(fileURLWithPath: arbiterd)
        // A port from the kernel: bind 0 and read it back from the log.
        let log = Pipe()
        p.standardError = log
        p.standardOutput = log
        p.arguments = ["--store", Fixture.store, "--listen", "127.0.0.1:0", "--shutdown-grace-ms", "1000", "--poll-ms", "0"]
        try p.run()
        defer { if p.isRunning { kill(p.processIdentifier, SIGKILL) } }
        // The log line "listening on [IPv4]127.0.0.1/127.0.0.1:PORT ..." gives the port (read on a thread of
        // its own: reading the pipe blocks).
        let reader = Handed(value: log.fileHandleForReading)
        let (port, text) = try await offPool { () -> (Int?, String) in
            var text = ""
            let deadline = Date(timeIntervalSinceNow: 60)
            while Date() < deadline {
                let chunk = reader.value.availableData
                if chunk.isEmpty { break }
                text += String(decoding: chunk, as: UTF8.self)
                if let r = text.range(of: #"listening on \S*:(\d+)"#, options: .regularExpression) {
                    return (Int(text[r].split(separator: ":").last!), text)
                }
            }
            return (nil, text)
        }
        let serverPort = try #require(port, "no port in: \(text)")

        let c = try BlockingConnection(port: serverPort, receiveTimeoutSeconds: 5)
        c.send(Frame(requestID: 1, message: .hello(Hello(clientName: "stalled"))))
        _ = try c.readFrame()
        // About 10 MB of answers that are never read.
        var batch = ByteBuffer()
        for id in 2...4_000 {
            Frame(requestID: UInt64(id), message: .score(Fixture.scoreRequest(n: 100))).encode(into: &batch)
        }
        sendOnThread(c, Array(batch.readableBytesView))
        try await Task.sleep(for: .milliseconds(500))

        kill(p.processIdentifier, SIGTERM)
        let signalled = ContinuousClock.now
        while p.isRunning && ContinuousClock.now - signalled < .seconds(30) {
            try await Task.sleep(for: .milliseconds(20))
        }
        #expect(!p.isRunning, "arbiterd still running 30 s after SIGTERM")
        let took = ContinuousClock.now - signalled
        // The grace period is 1 s; the bound only tells "ended at the grace period" from "waited for the
        // client", which never reads.
        #expect(took < .seconds(10), "exit took \(took)")
        #expect(p.terminationStatus == 0)
        withExtendedLifetime(c) {}
    }
}

/// File descriptors run out after connections do, never before: arbiterd refuses to start with a connection
/// cap the file limit cannot hold (past the limit, accepting fails with EMFILE and NIO's accept loop spins a
/// core), and with its default cap under a small limit, clients past the cap are refused with an ERROR while
/// the process stays idle.
@Suite struct FileLimitTests {
    static func cpuSeconds(_ pid: Int32) -> Double {
        guard let text = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
              let close = text.lastIndex(of: ")") else { return 0 }
        let fields = text[text.index(after: close)...].split(separator: " ")
        // After the command name: utime and stime are fields 14 and 15 of stat (1-based), 11 and 12 here.
        guard fields.count > 12, let u = Double(fields[11]), let s = Double(fields[12]) else { return 0 }
        return (u + s) / Double(sysconf(Int32(_SC_CLK_TCK)))
    }

    static func start(files: Int, _ arguments: [String]) throws -> (Process, NIOLockedValueBox<String>) {
        try ArbiterdProcess.start(files: files, ["--threads", "1", "--shutdown-grace-ms", "500"] + arguments)
    }

    @Test func aConnectionCapTheFileLimitCannotHoldIsRefusedAtStart() async throws {
        let (p, log) = try Self.start(files: 64, ["--max-connections", "1000"])
        defer { if p.isRunning { kill(p.processIdentifier, SIGKILL) } }
        try await waitUntil("arbiterd exits", seconds: 30) { !p.isRunning }
        #expect(p.terminationStatus == 1)
        try await waitUntil("the log says why", seconds: 5) { log.withLockedValue { $0.contains("need a limit of at least 1064 open files") } }
    }

    @Test func underASmallFileLimitClientsPastTheCapAreRefusedAndNothingSpins() async throws {
        // 96 files: the default cap is 32 connections.
        let (p, log) = try Self.start(files: 96, [])
        defer { if p.isRunning { kill(p.processIdentifier, SIGKILL) } }
        let port = try await ArbiterdProcess.port(p, log)
        let text = log.withLockedValue { $0 }
        #expect(text.contains("at most 32 connections"), "\(text)")

        // On a thread of its own, from the first connect to the first HELLO: the HELLO timeout (10 s) runs from
        // connecting, and the test's shared threads can be held up for longer by other suites under the
        // sanitizers.
        let pid = p.processIdentifier
        let (used, refused, served, clients) = try await offPool { () -> (Double, Int, Bool, Handed<[BlockingConnection]>) in
            var clients: [BlockingConnection] = []
            for _ in 0..<100 {
                if let c = try? BlockingConnection(port: port, receiveTimeoutSeconds: 2) { clients.append(c) }
            }
            usleep(500_000)
            let before = Self.cpuSeconds(pid)
            usleep(2_000_000)
            let used = Self.cpuSeconds(pid) - before
            // The first ones are served; the clients past the cap were told.
            let first = clients[0]
            try first.hello()
            let served = try first.pingWorks()
            var refused = 0
            for c in clients.suffix(50) {
                if let f = try? c.readFrame(), case .error(let e) = f.message, e.status == .tooManyConnections { refused += 1 }
            }
            return (used, refused, served, Handed(value: clients))
        }
        #expect(used < 0.5, "arbiterd used \(used) s of CPU in 2 s with 100 clients connected")
        #expect(refused == 50, "\(refused) of the last 50 clients were refused with TOO_MANY_CONNECTIONS")
        #expect(served)
        kill(p.processIdentifier, SIGTERM)
        p.waitUntilExit()
        #expect(p.terminationStatus == 0)
        withExtendedLifetime(clients) {}
    }
}
