import Foundation
import Histogram
import NIOCore

#if canImport(Glibc)
import Glibc
#endif

/// How to drive a target.
public struct LoadConfiguration: Sendable {
    public var host = "127.0.0.1"
    public var port: Int
    /// Connections, all driven by the generator's one thread.
    public var connections = 1
    /// Most requests outstanding per connection; when reached, the sender waits (and the correction shows
    /// what that waiting hid).
    public var inFlightPerConnection = 64
    /// Offered rate over all connections, requests per second.
    public var rate: Double
    public var warmupSeconds = 1.0
    public var durationSeconds = 5.0
    /// A request unanswered after this long is recorded at this value and counted as a timeout.
    public var timeoutMillis = 1000
    /// Exponential gaps between sends (Poisson arrivals) instead of a constant interval.
    public var poisson = false
    /// Measure capacity instead of latency at a rate: send whenever a connection has a free in-flight slot
    /// (`rate` then only bounds how many requests are prepared). Latency is measured from the actual send.
    public var saturate = false
    public var seed: UInt64 = 1
    /// Speak TLS (nil: plain TCP).
    public var tls: BenchTLS?
    /// Keep every request's schedule, answer time and serving version (``LoadResult/trace``).
    public var keepTrace = false

    public init(port: Int, rate: Double) {
        self.port = port
        self.rate = rate
    }
}

/// The measured outcome of one run.
public struct LoadResult: Sendable {
    public var target: String
    public var configuration: LoadConfiguration
    /// Latency from each request's scheduled send time (coordinated omission corrected), ns.
    public var latency: Histogram<UInt64>
    /// Latency from the actual send, ns.
    public var service: Histogram<UInt64>
    /// Server-reported queue and compute, µs (Arbiter RESULTs).
    public var serverQueue: Histogram<UInt64>
    public var serverCompute: Histogram<UInt64>
    /// Requests scheduled in the measured window and answered within the timeout.
    public var completed: Int
    /// Answers (errors included) that arrived within the measured window, whenever they were scheduled.
    public var answeredInWindow: Int = 0
    /// Latency of the requests answered with a result (not an error), ns: what a shedding server accepted.
    public var accepted: Histogram<UInt64>?
    /// The same from the actual send, ns (without the client's own lateness).
    public var acceptedService: Histogram<UInt64>?
    public var errors: [String: Int]
    public var measuredSeconds: Double

    /// Throughput: answers per second that arrived in the measured window. (Counting the requests
    /// scheduled in the window instead would report the offered rate for a server far behind, whose
    /// answers keep coming after the window.)
    public var achievedRate: Double { Double(answeredInWindow) / max(measuredSeconds, 1e-9) }
    /// With `keepTrace`: every request, warm-up included, in schedule order.
    public var trace: [TraceEntry]?
}

/// One request of a traced run. Times are CLOCK_MONOTONIC nanoseconds (comparable across processes on the
/// machine); `answered` is 0 when no answer came.
public struct TraceEntry: Sendable {
    public var scheduled: UInt64
    public var answered: UInt64
    /// The version named by its RESULT (0 for other answers).
    public var version: UInt64
    public var failed: Bool
}

/// An open-loop load generator: requests are sent at their scheduled times whether or not earlier ones
/// were answered (up to `inFlightPerConnection`), and each latency is measured from the time the request
/// should have been sent, so a stalled server cannot hide behind its own back-pressure.
///
/// One thread drives every connection, so the harness's own footprint does not grow with the connection
/// count and never competes with itself for this machine's two cores: it keeps one global schedule, deals
/// requests round-robin over the connections and polls every socket for answers. Request `k` goes to
/// connection `k % connections` and carries id `k`.
public enum LoadGenerator {
    public static func run(_ target: any Target, _ config: LoadConfiguration) throws -> LoadResult {
        precondition(config.connections >= 1 && config.rate > 0)
        let total = Int((config.warmupSeconds + config.durationSeconds) * config.rate)
        let context = try config.tls?.makeContext()
        let sockets = try (0..<config.connections).map { _ in try SocketIO(host: config.host, port: config.port, tls: context) }
        for s in sockets { try target.handshake(s) }
        let run = RunState(target: target, sockets: sockets, total: total, config: config, start: nowNanos() + 20_000_000)
        run.drive()
        return run.result(warmupEnd: run.start + UInt64(config.warmupSeconds * 1e9))
    }

    static func newHistogram() -> Histogram<UInt64> {
        Histogram(lowestDiscernibleValue: 1, highestTrackableValue: 120_000_000_000, numberOfSignificantValueDigits: .three)
    }
}

/// The state of one run, driven by one thread. Per request `k`: its scheduled time, the time the write
/// that carried it began, and the time its answer was read (0 = none).
final class RunState {
    let target: any Target
    let sockets: [SocketIO]
    let total: Int
    let config: LoadConfiguration
    let start: UInt64
    let scheduled: UnsafeMutablePointer<UInt64>
    let sent: UnsafeMutablePointer<UInt64>
    let answered: UnsafeMutablePointer<UInt64>
    /// Whether request k's answer was an error (OVERLOADED, DEADLINE_EXCEEDED, ...).
    let failed: UnsafeMutablePointer<Bool>
    /// The version each answer named (traces).
    let versions: UnsafeMutablePointer<UInt64>
    var queue = Histogram<UInt64>(highestTrackableValue: 60_000_000)
    var compute = Histogram<UInt64>(highestTrackableValue: 60_000_000)
    var errors: [String: Int] = [:]
    private(set) var failure: String?

    init(target: any Target, sockets: [SocketIO], total: Int, config: LoadConfiguration, start: UInt64) {
        self.target = target
        self.sockets = sockets
        self.total = total
        self.config = config
        self.start = start
        let n = max(total, 1)
        scheduled = .allocate(capacity: n)
        sent = .allocate(capacity: n)
        answered = .allocate(capacity: n)
        failed = .allocate(capacity: n)
        failed.initialize(repeating: false, count: n)
        versions = .allocate(capacity: n)
        versions.initialize(repeating: 0, count: n)
        scheduled.initialize(repeating: 0, count: n)
        sent.initialize(repeating: 0, count: n)
        answered.initialize(repeating: 0, count: n)
    }

    deinit {
        scheduled.deallocate()
        sent.deallocate()
        answered.deallocate()
        failed.deallocate()
        versions.deallocate()
    }

    /// Most requests encoded and not yet written, over all connections: past this the driver writes even
    /// while it is still behind its schedule.
    static let maxUnwritten = 256

    /// Sends every request at its scheduled time and reads every answer, from one thread.
    ///
    /// Each turn: encode every request that is due (request `k` on connection `k % connections`, while that
    /// connection is under its in-flight cap), write what was encoded — one write per connection, so a
    /// driver that fell behind catches up as a pipelining client does — then wait in `ppoll` for an answer
    /// or for the next scheduled time, whichever comes first, and read what arrived. One thread means one
    /// wake-up per event and nothing of the harness's own competing for the cores with the server (two
    /// threads, a sender and a receiver, put a third runnable thread on this two-core machine and showed up
    /// in the floor's own p99). Sockets are non-blocking: a write the kernel cannot take whole waits for
    /// POLLOUT while answers keep being read, so a large batch cannot deadlock against its own answers.
    func drive() {
        tightenTimerSlack()
        var rng = SplitMix(seed: config.seed)
        let interval = 1e9 / config.rate
        let n = sockets.count
        let cap = config.inFlightPerConnection
        let timeout = UInt64(config.timeoutMillis) * 1_000_000
        let end = start + UInt64((config.warmupSeconds + config.durationSeconds) * 1e9)
        for s in sockets { s.setNonBlocking() }

        var scratch: [UInt8] = []
        // Per connection: bytes encoded or partly written, and the requests they carry not yet stamped.
        var outbox = [[UInt8]](repeating: [], count: n)
        var outboxOffset = [Int](repeating: 0, count: n)
        var unstamped = [[Int]](repeating: [], count: n)
        var unwrittenCount = 0
        var inFlight = [Int](repeating: 0, count: n)
        var inboxes = [ByteBuffer](repeating: ByteBuffer(), count: n)
        var states = [CutState](repeating: CutState(), count: n)
        // In-order protocols: the next request of each connection that may be answered.
        var nextInOrder = Array(0..<n)
        var polls = sockets.map { pollfd(fd: $0.fd, events: Int16(POLLIN), revents: 0) }

        var k = 0                       // next request to send
        var due = Double(start)         // its scheduled time (rate mode)
        var sentCount = 0, received = 0
        var sendsDone = total == 0
        var lastSend: UInt64 = 0

        func fail(_ c: Int, _ why: String) { failure = failure ?? "connection \(c): \(why)" }

        /// Writes what each connection has pending, as far as its socket takes it; false when one failed.
        func flush() -> Bool {
            guard unwrittenCount > 0 || polls.contains(where: { $0.events & Int16(POLLOUT) != 0 }) else { return true }
            for c in 0..<n where outboxOffset[c] < outbox[c].count || sockets[c].hasPendingOutput {
                let now = nowNanos()
                for j in unstamped[c] { sent[j] = now }
                sentCount += unstamped[c].count
                unstamped[c].removeAll(keepingCapacity: true)
                do { outboxOffset[c] += try sockets[c].sendSome(outbox[c], from: outboxOffset[c]) } catch {
                    fail(c, "\(error)")
                    return false
                }
                if outboxOffset[c] == outbox[c].count && !sockets[c].hasPendingOutput {
                    outbox[c].removeAll(keepingCapacity: true)
                    outboxOffset[c] = 0
                    polls[c].events = Int16(POLLIN)
                } else if outboxOffset[c] == outbox[c].count {
                    // TLS took every byte; its ciphertext waits for the socket.
                    outbox[c].removeAll(keepingCapacity: true)
                    outboxOffset[c] = 0
                    polls[c].events = Int16(POLLIN | POLLOUT)
                } else {
                    if outboxOffset[c] >= 1 << 20 && outboxOffset[c] * 2 >= outbox[c].count {
                        // A socket that never drains fully (a server holding the connection back) would otherwise
                        // keep every byte ever written in this buffer: drop the written part (found by the soak,
                        // where it grew to 23 GB).
                        outbox[c].removeFirst(outboxOffset[c])
                        outboxOffset[c] = 0
                    }
                    polls[c].events = Int16(POLLIN | POLLOUT)
                }
            }
            unwrittenCount = 0
            return true
        }

        func enqueue(_ c: Int) {
            target.encode(seq: UInt64(k), into: &scratch)
            outbox[c].append(contentsOf: scratch)
            unstamped[c].append(k)
            unwrittenCount += 1
            inFlight[c] += 1
            k += 1
        }

        if config.saturate { sleep(until: start) }
        running: while true {
            var now = nowNanos()
            // Send what is due.
            var waitUntil: UInt64? = nil
            if !sendsDone {
                if config.saturate {
                    // Capacity: the next request goes as soon as its connection has a slot.
                    if now >= end {
                        sendsDone = true
                    } else {
                        while k < total && inFlight[k % n] < cap {
                            scheduled[k] = now
                            enqueue(k % n)
                            if unwrittenCount >= RunState.maxUnwritten { guard flush() else { break running } }
                        }
                    }
                } else {
                    while k < total && UInt64(due) <= now {
                        let c = k % n
                        if inFlight[c] >= cap {
                            // At the cap: wait for an answer to free a slot. A request that cannot get one
                            // within the timeout is not sent and is recorded as a timeout, never dropped.
                            if now - UInt64(due) < timeout { waitUntil = UInt64(due) + timeout; break }
                            scheduled[k] = UInt64(due)
                            k += 1
                        } else {
                            scheduled[k] = UInt64(due)
                            enqueue(c)
                            if unwrittenCount >= RunState.maxUnwritten {
                                guard flush() else { break running }
                                now = nowNanos()
                            }
                        }
                        due += config.poisson ? -interval * log(max(rng.uniform(), 1e-12)) : interval
                    }
                    if k < total && waitUntil == nil { waitUntil = UInt64(due) }
                }
                if k >= total { sendsDone = true }
                guard flush() else { break }
                if sendsDone { lastSend = nowNanos() }
            }
            // Done when every request sent has its answer, or the last one has had its full timeout.
            if sendsDone && (received >= sentCount || nowNanos() > lastSend + timeout) { break }

            // Wait for an answer, a writable socket, or the next scheduled time.
            var wait = timespec(tv_sec: 0, tv_nsec: 20_000_000)
            if let w = waitUntil {
                let t = nowNanos()
                let left = w > t ? w - t : 0
                wait = timespec(tv_sec: Int(left / 1_000_000_000), tv_nsec: Int(left % 1_000_000_000))
            }
            let ready = polls.withUnsafeMutableBufferPointer { linuxPpoll($0.baseAddress!, UInt(n), &wait, nil) }
            if ready <= 0 { continue }
            for c in 0..<n where polls[c].revents != 0 {
                if polls[c].revents & Int16(POLLOUT) != 0 { guard flush() else { break running } }
                if polls[c].revents & Int16(POLLIN | POLLERR | POLLHUP) == 0 { continue }
                do {
                    guard try sockets[c].receive(into: &inboxes[c], dontWait: true) else { continue }
                    let at = nowNanos()
                    for a in try target.cut(&inboxes[c], &states[c]) {
                        let j: Int
                        if let id = a.requestID {
                            j = Int(truncatingIfNeeded: id)
                            guard j >= 0 && j < total && j % n == c else { continue }
                        } else {
                            // In-order protocols answer the oldest request sent on the connection (skipping
                            // any the in-flight cap kept from being sent: they are recorded as timeouts).
                            while nextInOrder[c] < total && sent[nextInOrder[c]] == 0 { nextInOrder[c] += n }
                            j = nextInOrder[c]
                            nextInOrder[c] += n
                            guard j < total else { continue }
                        }
                        guard answered[j] == 0 && sent[j] != 0 else { continue }
                        answered[j] = at
                        received += 1
                        inFlight[c] -= 1
                        if let e = a.error {
                            errors[e, default: 0] += 1
                            failed[j] = true
                        }
                        if let v = a.version { versions[j] = v }
                        if let q = a.queueMicros { _ = queue.record(UInt64(q)) }
                        if let m = a.computeMicros { _ = compute.record(UInt64(m)) }
                    }
                    inboxes[c].discardReadBytes()
                } catch {
                    fail(c, "\(error)")
                    break running
                }
            }
        }
        for s in sockets { s.shutdownBoth() }
    }

    /// Records every request scheduled after the warm-up, in its connection's histograms (merged at the
    /// end): answered ones at their latency (counted as a timeout beyond it), unanswered ones at the timeout.
    func result(warmupEnd: UInt64) -> LoadResult {
        let n = sockets.count
        let timeout = UInt64(config.timeoutMillis) * 1_000_000
        var latency = (0..<n).map { _ in LoadGenerator.newHistogram() }
        var service = (0..<n).map { _ in LoadGenerator.newHistogram() }
        var accepted = LoadGenerator.newHistogram()
        var acceptedService = LoadGenerator.newHistogram()
        var out = LoadResult(target: target.name, configuration: config, latency: LoadGenerator.newHistogram(),
                             service: LoadGenerator.newHistogram(), serverQueue: queue, serverCompute: compute,
                             completed: 0, errors: errors, measuredSeconds: config.durationSeconds)
        let windowEnd = warmupEnd + UInt64(config.durationSeconds * 1e9)
        for k in 0..<total where answered[k] >= warmupEnd && answered[k] < windowEnd && answered[k] != 0 {
            out.answeredInWindow += 1
        }
        for k in 0..<total where scheduled[k] >= warmupEnd && scheduled[k] != 0 {
            let c = k % n, done = answered[k]
            if done == 0 || done - scheduled[k] > timeout {
                out.errors["timeout", default: 0] += 1
                _ = latency[c].record(timeout)
                _ = service[c].record(timeout)
                continue
            }
            out.completed += 1
            if !failed[k] {
                _ = accepted.record(done - scheduled[k])
                _ = acceptedService.record(done - max(sent[k], scheduled[k]))
            }
            _ = latency[c].record(done - scheduled[k])
            _ = service[c].record(done - max(sent[k], scheduled[k]))
        }
        for c in 0..<n {
            out.latency.add(latency[c])
            out.service.add(service[c])
        }
        out.accepted = accepted
        out.acceptedService = acceptedService
        if config.keepTrace {
            out.trace = (0..<total).map { k in
                TraceEntry(scheduled: scheduled[k], answered: answered[k], version: versions[k], failed: failed[k])
            }
        }
        if let failure { out.errors["connection failed: \(failure)", default: 0] += 1 }
        return out
    }
}

/// SplitMix64, for Poisson gaps.
struct SplitMix {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
    mutating func uniform() -> Double { Double(next() >> 11) * 0x1.0p-53 }
}
