import ArbiterClient
import ArbiterWire
import ArgumentParser
import Foundation
import NIOCore

#if canImport(Glibc)
import Glibc
#endif

/// A quick, honest latency probe: one blocking connection, requests sent at a fixed rate, latency measured
/// from each request's scheduled send time (so a stall is counted, not hidden), with the service time from
/// the actual send beside it. The full harness, with peers and sweeps, lives in bench/.
struct Probe: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Measure scoring latency at a steady rate over one connection (p50/p90/p99/p99.9/max).")
    @OptionGroup var connection: Connection
    @Option(help: "Model to score; omit to send PING instead.") var model: String?
    @Option(help: "Candidates per request.") var candidates: Int = 1
    @Option(help: "Requests per second.") var rate: Double = 5000
    @Option(help: "Measured seconds.") var seconds: Double = 10
    @Option(help: "Warm-up seconds (not recorded).") var warmup: Double = 2

    func validate() throws {
        guard (1...100_000).contains(candidates) else { throw ValidationError("--candidates must be in 1...100000") }
        guard rate > 0, rate <= 1_000_000 else { throw ValidationError("--rate must be in (0, 1000000]") }
        guard seconds > 0, warmup >= 0 else { throw ValidationError("--seconds must be > 0 and --warmup >= 0") }
    }

    func run() throws {
        let (host, port) = connection.split()!
        guard connection.tlsSettings == nil else {
            throw CLIError("probe speaks plain TCP only (it measures the server, not TLS); the bench harness measures TLS (arbiter-bench run --tls-ca)")
        }
        let sock = try BlockingConnection(host: host, port: port)
        sock.send(frame(Frame(requestID: 1, message: .hello(Hello(clientName: "arbiter-probe", token: try connection.token())))))
        if case .error(let e) = try next(sock).message { throw CLIError("HELLO refused: \(e.status): \(e.message)") }
        var request: [UInt8]
        if let model {
            sock.send(frame(Frame(requestID: 2, message: .modelInfo(ModelInfoRequest(model: model)))))
            guard case .schema(let s) = try next(sock).message else { throw CLIError("no schema for \(model)") }
            func value(_ f: FeatureSpec, _ i: Int) -> Float {
                f.kind == .categorical ? Float(i % Int(max(f.cardinality, 1))) : Float(1 + i % 7)
            }
            request = frame(Frame(requestID: 3, message: .score(ScoreRequest(
                model: model, context: s.contextFeatures.enumerated().map { value($1, $0) },
                candidateIDs: (0..<candidates).map(UInt64.init), candidateFeatureCount: s.candidateFeatures.count,
                candidateFeatures: (0..<candidates).flatMap { r in s.candidateFeatures.enumerated().map { value($1, r + $0) } }))))
        } else {
            request = frame(Frame(requestID: 3, message: .ping([UInt8](repeating: 0, count: 32))))
        }
        // 1 ns of timer slack (Linux PR_SET_TIMERSLACK) so sleeps wake on time, not up to 50 µs late.
        _ = linuxPrctl(29, 1, 0, 0, 0)
        let interval = 1e9 / rate
        let total = Int((warmup + seconds) * rate)
        let skip = Int(warmup * rate)
        var corrected = [UInt64](), service = [UInt64]()
        corrected.reserveCapacity(total - skip)
        service.reserveCapacity(total - skip)
        var errors = 0
        var serverMicros = [UInt64]()
        let start = monotonicNanos() + 1_000_000
        for i in 0..<total {
            let scheduled = start + UInt64(Double(i) * interval)
            sleepUntil(scheduled)
            let sent = monotonicNanos()
            request.withUnsafeMutableBytes { $0.storeBytes(of: UInt64(i).littleEndian, toByteOffset: 8, as: UInt64.self) }
            sock.send(request)
            let answer = try next(sock)
            let done = monotonicNanos()
            if case .error = answer.message { errors += 1 }
            if i >= skip {
                corrected.append(done - scheduled)
                service.append(done - sent)
                serverMicros.append(answer.header.time)
            }
        }
        let elapsed = Double(monotonicNanos() - start) / 1e9
        corrected.sort()
        service.sort()
        serverMicros.sort()
        func p(_ a: [UInt64], _ q: Double) -> String {
            String(format: "%.1f", Double(a[min(a.count - 1, Int(q * Double(a.count)))]) / 1000)
        }
        print(String(format: "%@, %d candidate(s), target %.0f req/s, achieved %.0f req/s over %.1f s, %d errors",
                     model ?? "ping", model == nil ? 0 : candidates, rate, Double(total) / elapsed, elapsed, errors))
        print("                      p50     p90     p99   p99.9     max   (µs)")
        for (name, a) in [("latency (scheduled)", corrected), ("service (from send)", service)] {
            print(name.padding(toLength: 20, withPad: " ", startingAt: 0),
                  [0.5, 0.9, 0.99, 0.999].map { p(a, $0).leftPad(7) }.joined(separator: " "),
                  String(format: "%.1f", Double(a.last!) / 1000).leftPad(7))
        }
        print("server-held time µs  p50 \(serverMicros[serverMicros.count / 2])  p99 \(serverMicros[Int(0.99 * Double(serverMicros.count))])")
    }

    func next(_ sock: BlockingConnection) throws -> Frame {
        guard let f = try sock.readFrame() else { throw CLIError("the server closed the connection") }
        return f
    }

    func frame(_ f: Frame) -> [UInt8] {
        var b = ByteBuffer()
        f.encode(into: &b)
        return Array(b.readableBytesView)
    }
}

extension String {
    func leftPad(_ n: Int) -> String { count >= n ? self : String(repeating: " ", count: n - count) + self }
}

@_silgen_name("prctl")
func linuxPrctl(_ option: Int32, _ a: UInt, _ b: UInt, _ c: UInt, _ d: UInt) -> Int32

func monotonicNanos() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
}

func sleepUntil(_ t: UInt64) {
    var ts = timespec(tv_sec: Int(t / 1_000_000_000), tv_nsec: Int(t % 1_000_000_000))
    while clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, nil) == EINTR {}
}
