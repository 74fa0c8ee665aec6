import ArbiterClient
import ArbiterCluster
import ArbiterWire
import Foundation
import Histogram
import NIOConcurrencyHelpers
import NIOCore

/// Open-loop load through the balancing client: requests are sent on a fixed schedule from a thread of
/// their own, and each latency runs from the time the request was due (a stall cannot hide behind
/// back-pressure). Every answer is checked: it must come from the version the request was pinned to (the
/// committed version the client's membership last saw). Results are kept per 250 ms window, with which
/// replica answered with which version.
final class OpenLoopLoad: @unchecked Sendable {
    static let windowNanos: UInt64 = 250_000_000

    struct Window {
        var latency = Histogram<UInt64>(lowestDiscernibleValue: 1, highestTrackableValue: 60_000_000_000, numberOfSignificantValueDigits: .three)
        var sent = 0
        var failed = 0
        /// replica → version → answers
        var served: [String: [UInt64: Int]] = [:]
    }

    let client: BalancedClient
    let membership: any Membership
    let model: String
    let requests: [ScoreRequest]
    let rate: Int
    let deadline: TimeAmount
    let lock = NIOLock()
    var windows: [Int: Window] = [:]
    var failures: [String] = []
    var mismatches: [String] = []
    var answeredVersions: [UInt64: Int] = [:]
    var stopFlag = false
    var started: UInt64 = 0
    var thread: Thread?
    let finished = DispatchSemaphore(value: 0)
    var outstanding = 0

    init(client: BalancedClient, membership: any Membership, model: String, requests: [ScoreRequest], rate: Int,
         deadline: TimeAmount = .seconds(1)) {
        self.client = client
        self.membership = membership
        self.model = model
        self.requests = requests
        self.rate = rate
        self.deadline = deadline
    }

    static func now() -> UInt64 { DispatchTime.now().uptimeNanoseconds }

    /// Seconds since the load started at the wall-clock time `unixSeconds` (a time another process recorded).
    func elapsed(atUnixSeconds unixSeconds: Double) -> Double {
        elapsed() - (Date().timeIntervalSince1970 - unixSeconds)
    }

    /// Starts sending; returns at once.
    func start() {
        started = Self.now()
        let t = Thread { [self] in self.drive() }
        t.stackSize = 1 << 20
        thread = t
        t.start()
    }

    /// Stops sending and waits (up to the deadline and a second) for what is out.
    /// Stops the load and waits for what is in flight (up to the deadline); a second call does nothing.
    func stop() {
        let stoppedBefore = lock.withLock { () -> Bool in
            defer { stopFlag = true }
            return stopFlag
        }
        if stoppedBefore { return }
        finished.wait()
        let limit = Self.now() + UInt64(deadline.nanoseconds) + 1_000_000_000
        while lock.withLock({ outstanding }) > 0 && Self.now() < limit { usleep(10_000) }
    }

    /// Seconds since the load started.
    func elapsed() -> Double { Double(Self.now() - started) / 1e9 }

    private func drive() {
        let interval = 1_000_000_000 / UInt64(max(1, rate))
        var next = started
        var k = 0
        // Sleeps until the next request is due (never spinning: this machine has two cores, and a spinning
        // driver would take one from the replicas), then sends everything due. A request sent late carries its
        // lateness in its latency.
        while !lock.withLock({ stopFlag }) {
            let now = Self.now()
            if now < next {
                var ts = timespec(tv_sec: 0, tv_nsec: Int(next - now))
                nanosleep(&ts, nil)
                continue
            }
            while next <= Self.now() {
                send(request: k, due: next)
                k += 1
                next += interval
            }
        }
        finished.signal()
    }

    private func send(request k: Int, due: UInt64) {
        var request = requests[k % requests.count]
        // Pinned here, to the committed version the membership knows: an answer from any other is a mismatch.
        let pin = membership.view().active[model] ?? 0
        request.version = pin
        let window = Int((due - started) / Self.windowNanos)
        lock.withLock {
            windows[window, default: Window()].sent += 1
            outstanding += 1
        }
        client.answerFuture(request, deadline: deadline).whenComplete { [self] result in
            let done = Self.now()
            lock.withLock {
                outstanding -= 1
                switch result {
                case .success(let answer):
                    _ = windows[window, default: Window()].latency.record(done - due)
                    windows[window, default: Window()].served[answer.replica, default: [:]][answer.result.version, default: 0] += 1
                    answeredVersions[answer.result.version, default: 0] += 1
                    if pin != 0 && answer.result.version != pin && mismatches.count < 100 {
                        mismatches.append("pinned v\(pin), answered by \(answer.replica) with v\(answer.result.version)")
                    }
                case .failure(let error):
                    windows[window, default: Window()].failed += 1
                    if failures.count < 100 { failures.append("at \(String(format: "%.2f", Double(due - started) / 1e9)) s: \(error)") }
                }
            }
        }
    }

    // MARK: Reading the results

    struct Summary: Codable {
        var requests: Int
        var failed: Int
        var mismatches: Int
        var p50Micros: Double
        var p99Micros: Double
        var p999Micros: Double
        var maxMicros: Double
    }

    /// Latency over the windows in [from, to) seconds.
    func summary(from: Double = 0, to: Double = .infinity) -> Summary {
        lock.withLock {
            var h = Histogram<UInt64>(lowestDiscernibleValue: 1, highestTrackableValue: 60_000_000_000, numberOfSignificantValueDigits: .three)
            var sent = 0, failed = 0
            for (w, win) in windows {
                let t = Double(w) * Double(Self.windowNanos) / 1e9
                guard t >= from, t < to else { continue }
                h.add(win.latency)
                sent += win.sent
                failed += win.failed
            }
            func us(_ p: Double) -> Double { h.totalCount == 0 ? 0 : Double(h.valueAtPercentile(p)) / 1000 }
            return Summary(requests: sent, failed: failed, mismatches: mismatches.count, p50Micros: us(50), p99Micros: us(99),
                           p999Micros: us(99.9), maxMicros: Double(h.max) / 1000)
        }
    }

    /// (window start in s, p99 µs, requests) per window.
    func p99Series() -> [(Double, Double, Int)] {
        lock.withLock {
            windows.keys.sorted().map { w in
                let win = windows[w]!
                let p99 = win.latency.totalCount == 0 ? 0 : Double(win.latency.valueAtPercentile(99)) / 1000
                return (Double(w) * Double(Self.windowNanos) / 1e9, p99, win.sent)
            }
        }
    }

    /// Per window, per replica: the versions that answered.
    func servedSeries() -> [(Double, [String: [UInt64: Int]])] {
        lock.withLock {
            windows.keys.sorted().map { (Double($0) * Double(Self.windowNanos) / 1e9, windows[$0]!.served) }
        }
    }
}
