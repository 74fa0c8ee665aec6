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
    /// Connections, each with its own sender and receiver thread.
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
    public var errors: [String: Int]
    public var measuredSeconds: Double

    /// Throughput: answers per second that arrived in the measured window. (Counting the requests
    /// scheduled in the window instead would report the offered rate for a server far behind, whose
    /// answers keep coming after the window.)
    public var achievedRate: Double { Double(answeredInWindow) / max(measuredSeconds, 1e-9) }
}

/// An open-loop load generator: requests are sent at their scheduled times whether or not earlier ones
/// were answered (up to `inFlightPerConnection`), and each latency is measured from the time the request
/// should have been sent, so a stalled server cannot hide behind its own back-pressure.
///
/// Two threads drive every connection, so the harness's own footprint does not grow with the connection
/// count (this machine has two cores, shared with the server): a sender that keeps one global schedule and
/// deals requests round-robin over the connections, and a receiver that polls every socket. Request `k`
/// goes to connection `k % connections` and carries id `k`.
public enum LoadGenerator {
    public static func run(_ target: any Target, _ config: LoadConfiguration) throws -> LoadResult {
        precondition(config.connections >= 1 && config.rate > 0)
        let total = Int((config.warmupSeconds + config.durationSeconds) * config.rate)
        let sockets = try (0..<config.connections).map { _ in try SocketIO(host: config.host, port: config.port) }
        for s in sockets { try target.handshake(s) }
        let run = RunState(target: target, sockets: sockets, total: total, config: config, start: nowNanos() + 20_000_000)
        let group = DispatchGroup()
        for body in [run.sendLoop, run.receiveLoop] {
            group.enter()
            let t = Thread {
                body()
                group.leave()
            }
            t.stackSize = 1 << 20
            t.start()
        }
        group.wait()
        return run.result(warmupEnd: run.start + UInt64(config.warmupSeconds * 1e9))
    }

    static func newHistogram() -> Histogram<UInt64> {
        Histogram(lowestDiscernibleValue: 1, highestTrackableValue: 120_000_000_000, numberOfSignificantValueDigits: .three)
    }
}

/// The shared state of one run. Per request `k`: scheduled and actual send times, written by the sender
/// before the send, and the answer time (0 = none), written by the receiver after the answer arrived (the
/// socket round trip orders the two).
final class RunState: @unchecked Sendable {
    let target: any Target
    let sockets: [SocketIO]
    let total: Int
    let config: LoadConfiguration
    let start: UInt64
    let scheduled: UnsafeMutablePointer<UInt64>
    let sent: UnsafeMutablePointer<UInt64>
    let answered: UnsafeMutablePointer<UInt64>
    /// Free in-flight slots, per connection.
    let slots: [DispatchSemaphore]
    var queue = Histogram<UInt64>(highestTrackableValue: 60_000_000)
    var compute = Histogram<UInt64>(highestTrackableValue: 60_000_000)
    var errors: [String: Int] = [:]
    private var failure: String?
    private var sendsDone = false
    private var stopped = false
    private var lastSend: UInt64 = 0
    private var sentCount = 0
    private let lock = NSLock()

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
        scheduled.initialize(repeating: 0, count: n)
        sent.initialize(repeating: 0, count: n)
        answered.initialize(repeating: 0, count: n)
        slots = sockets.map { _ in DispatchSemaphore(value: config.inFlightPerConnection) }
    }

    deinit {
        scheduled.deallocate()
        sent.deallocate()
        answered.deallocate()
    }

    /// Most requests encoded and not yet written, over all connections: past this the sender writes even
    /// while it is still behind its schedule.
    static let maxUnwritten = 256

    /// Sends every request at its scheduled time. A request that is due is encoded at once; requests are
    /// written together, one write per connection, whenever the sender is about to wait (for the next
    /// scheduled time or for a free slot): so a sender that fell behind catches up with one system call per
    /// connection instead of one per request, as a pipelining client does. `sent` is stamped at the write.
    func sendLoop() {
        tightenTimerSlack()
        var rng = SplitMix(seed: config.seed)
        let interval = 1e9 / config.rate
        let n = sockets.count
        let timeout = DispatchTimeInterval.milliseconds(config.timeoutMillis)
        var scratch: [UInt8] = []
        var unwritten = [[UInt8]](repeating: [], count: n)
        var unwrittenSeqs = [[Int]](repeating: [], count: n)
        var unwrittenCount = 0
        var sentSoFar = 0
        var t = Double(start)
        let end = start + UInt64((config.warmupSeconds + config.durationSeconds) * 1e9)

        /// Writes what is encoded; false when a connection failed.
        func write() -> Bool {
            guard unwrittenCount > 0 else { return true }
            for c in 0..<n where !unwritten[c].isEmpty {
                let now = nowNanos()
                for k in unwrittenSeqs[c] { sent[k] = now }
                do { try sockets[c].sendAll(unwritten[c]) } catch {
                    lock.withLock { failure = failure ?? "connection \(c): \(error)" }
                    return false
                }
                sentSoFar += unwrittenSeqs[c].count
                unwritten[c].removeAll(keepingCapacity: true)
                unwrittenSeqs[c].removeAll(keepingCapacity: true)
            }
            unwrittenCount = 0
            return true
        }
        /// Takes a slot on connection `c`, writing what is encoded before blocking; false on timeout.
        func takeSlot(_ c: Int) -> Bool {
            if slots[c].wait(timeout: .now()) == .success { return true }
            guard write() else { return false }
            return slots[c].wait(timeout: .now() + timeout) == .success
        }

        if config.saturate { sleep(until: start) }
        sending: for k in 0..<total {
            let c = k % n
            if config.saturate {
                // Capacity: the next request goes as soon as its connection has a slot.
                guard takeSlot(c) else { break }
                let now = nowNanos()
                if now >= end || lock.withLock({ stopped }) { break }
                scheduled[k] = now
            } else {
                let due = UInt64(t)
                t += config.poisson ? -interval * log(max(rng.uniform(), 1e-12)) : interval
                scheduled[k] = due
                if due > nowNanos() {
                    guard write() else { break }
                    sleep(until: due)
                }
                if lock.withLock({ stopped }) { break }
                // At the in-flight cap, wait for a slot; a request that cannot get one within the timeout is
                // not sent and is recorded as a timeout (never dropped from the figures).
                if !takeSlot(c) {
                    if lock.withLock({ failure != nil }) { break sending }
                    continue
                }
            }
            target.encode(seq: UInt64(k), into: &scratch)
            unwritten[c].append(contentsOf: scratch)
            unwrittenSeqs[c].append(k)
            unwrittenCount += 1
            if unwrittenCount >= RunState.maxUnwritten { guard write() else { break } }
        }
        _ = write()
        lock.withLock {
            sendsDone = true
            lastSend = nowNanos()
            sentCount = sentSoFar
        }
    }

    func receiveLoop() {
        let n = sockets.count
        var inboxes = [ByteBuffer](repeating: ByteBuffer(), count: n)
        var states = [CutState](repeating: CutState(), count: n)
        // In-order protocols: the next request of each connection that may be answered.
        var nextInOrder = Array(0..<n)
        var polls = sockets.map { pollfd(fd: $0.fd, events: Int16(POLLIN), revents: 0) }
        var received = 0
        let timeout = UInt64(config.timeoutMillis) * 1_000_000
        loop: while received < total {
            let (done, last, count) = lock.withLock { (sendsDone, lastSend, sentCount) }
            // Done when every request sent has its answer, or the last one has had its full timeout.
            if done && (received >= count || nowNanos() > last + timeout) { break }
            let ready = poll(&polls, nfds_t(n), 20)
            if ready <= 0 { continue }
            for c in 0..<n where polls[c].revents != 0 {
                do {
                    guard try sockets[c].receive(into: &inboxes[c], dontWait: true) else { continue }
                    for a in try target.cut(&inboxes[c], &states[c]) {
                        let k: Int
                        if let id = a.requestID {
                            k = Int(truncatingIfNeeded: id)
                            guard k >= 0 && k < total && k % n == c else { continue }
                        } else {
                            // In-order protocols answer the oldest request sent on the connection (skipping
                            // any the in-flight cap kept from being sent: they are recorded as timeouts).
                            while nextInOrder[c] < total && sent[nextInOrder[c]] == 0 { nextInOrder[c] += n }
                            k = nextInOrder[c]
                            nextInOrder[c] += n
                            guard k < total else { continue }
                        }
                        guard answered[k] == 0 else { continue }
                        answered[k] = nowNanos()
                        received += 1
                        slots[c].signal()
                        if let e = a.error { errors[e, default: 0] += 1 }
                        if let q = a.queueMicros { _ = queue.record(UInt64(q)) }
                        if let m = a.computeMicros { _ = compute.record(UInt64(m)) }
                    }
                    inboxes[c].discardReadBytes()
                } catch {
                    lock.withLock { failure = failure ?? "connection \(c): \(error)" }
                    break loop
                }
            }
        }
        // Release a sender that may be waiting for a slot.
        lock.withLock { stopped = true }
        for s in slots { for _ in 0..<config.inFlightPerConnection { s.signal() } }
        for s in sockets { s.shutdownBoth() }
    }

    /// Records every request scheduled after the warm-up, in its connection's histograms (merged at the
    /// end): answered ones at their latency (counted as a timeout beyond it), unanswered ones at the timeout.
    func result(warmupEnd: UInt64) -> LoadResult {
        let n = sockets.count
        let timeout = UInt64(config.timeoutMillis) * 1_000_000
        var latency = (0..<n).map { _ in LoadGenerator.newHistogram() }
        var service = (0..<n).map { _ in LoadGenerator.newHistogram() }
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
            _ = latency[c].record(done - scheduled[k])
            _ = service[c].record(done - max(sent[k], scheduled[k]))
        }
        for c in 0..<n {
            out.latency.add(latency[c])
            out.service.add(service[c])
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
