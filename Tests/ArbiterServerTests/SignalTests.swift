import ArbiterClient
import ArbiterTestSupport
import ArbiterWire
import Foundation
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
        let bytes = Array(batch.readableBytesView), fd = c.fd
        Thread {
            var off = 0
            while off < bytes.count {
                let n = bytes[off...].withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
                if n <= 0 { return }
                off += n
            }
        }.start()
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
