import Foundation
import Histogram
import NIOCore

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
    public var completed: Int
    public var errors: [String: Int]
    public var measuredSeconds: Double

    public var achievedRate: Double { Double(completed) / max(measuredSeconds, 1e-9) }
}

/// An open-loop load generator: requests are sent at their scheduled times whether or not earlier ones
/// were answered (up to `inFlightPerConnection`), and each latency is measured from the time the request
/// should have been sent, so a stalled server cannot hide behind its own back-pressure.
public enum LoadGenerator {
    public static func run(_ target: any Target, _ config: LoadConfiguration) throws -> LoadResult {
        precondition(config.connections >= 1 && config.rate > 0)
        let perConnection = config.rate / Double(config.connections)
        let interval = 1e9 / perConnection
        let total = Int((config.warmupSeconds + config.durationSeconds) * perConnection)
        let warmupEnd = UInt64(config.warmupSeconds * 1e9)
        let sockets = try (0..<config.connections).map { _ in try SocketIO(host: config.host, port: config.port) }
        for s in sockets { try target.handshake(s) }
        let start = nowNanos() + 20_000_000
        let workers = sockets.enumerated().map { i, s in
            Connection(index: i, io: s, target: target, total: total, interval: interval,
                       // Stagger connections so their sends interleave instead of bunching.
                       start: start + UInt64(Double(i) * interval / Double(config.connections)),
                       config: config)
        }
        let group = DispatchGroup()
        for w in workers {
            for body in [w.sendLoop, w.receiveLoop] {
                group.enter()
                let t = Thread {
                    body()
                    group.leave()
                }
                t.stackSize = 1 << 20
                t.start()
            }
        }
        group.wait()
        var result = LoadResult(target: target.name, configuration: config, latency: newHistogram(), service: newHistogram(),
                                serverQueue: Histogram(highestTrackableValue: 60_000_000),
                                serverCompute: Histogram(highestTrackableValue: 60_000_000),
                                completed: 0, errors: [:], measuredSeconds: config.durationSeconds)
        for w in workers {
            w.finish(warmupEnd: start + warmupEnd)
            result.latency.add(w.latency)
            result.service.add(w.service)
            result.serverQueue.add(w.queue)
            result.serverCompute.add(w.compute)
            result.completed += w.completed
            for (k, v) in w.errors { result.errors[k, default: 0] += v }
            if let failure = w.failure { result.errors["connection: \(failure)", default: 0] += 1 }
        }
        return result
    }

    static func newHistogram() -> Histogram<UInt64> {
        Histogram(lowestDiscernibleValue: 1, highestTrackableValue: 120_000_000_000, numberOfSignificantValueDigits: .three)
    }
}

/// One connection: a sender thread that keeps the schedule and a receiver thread that matches answers.
final class Connection: @unchecked Sendable {
    let index: Int
    let io: SocketIO
    let target: any Target
    let total: Int
    let interval: Double
    let start: UInt64
    let config: LoadConfiguration
    /// Per request: scheduled and actual send times, and the answer time (0 = none yet). Written by the
    /// sender before the send, read by the receiver after the answer (the socket orders them).
    let scheduled: UnsafeMutablePointer<UInt64>
    let sent: UnsafeMutablePointer<UInt64>
    let answered: UnsafeMutablePointer<UInt64>
    let slots: DispatchSemaphore
    var latency = LoadGenerator.newHistogram()
    var service = LoadGenerator.newHistogram()
    var queue = Histogram<UInt64>(highestTrackableValue: 60_000_000)
    var compute = Histogram<UInt64>(highestTrackableValue: 60_000_000)
    var completed = 0
    var errors: [String: Int] = [:]
    var failure: String?
    private var sendsDone = false
    private var stopped = false
    private let lock = NSLock()
    private var lastSend: UInt64 = 0

    init(index: Int, io: SocketIO, target: any Target, total: Int, interval: Double, start: UInt64, config: LoadConfiguration) {
        self.index = index
        self.io = io
        self.target = target
        self.total = total
        self.interval = interval
        self.start = start
        self.config = config
        scheduled = .allocate(capacity: max(total, 1))
        sent = .allocate(capacity: max(total, 1))
        answered = .allocate(capacity: max(total, 1))
        answered.initialize(repeating: 0, count: max(total, 1))
        scheduled.initialize(repeating: 0, count: max(total, 1))
        sent.initialize(repeating: 0, count: max(total, 1))
        slots = DispatchSemaphore(value: config.inFlightPerConnection)
    }

    deinit {
        scheduled.deallocate()
        sent.deallocate()
        answered.deallocate()
    }

    func sendLoop() {
        tightenTimerSlack()
        var rng = SplitMix(seed: config.seed &+ UInt64(index))
        var buffer: [UInt8] = []
        var t = Double(start)
        for seq in 0..<total {
            let due = UInt64(t)
            t += config.poisson ? -interval * log(max(rng.uniform(), 1e-12)) : interval
            scheduled[seq] = due
            sleep(until: due)
            if lock.withLock({ stopped }) { break }
            // At the in-flight cap, wait for a slot; a request that cannot get one within the timeout is not
            // sent and is recorded as a timeout (never dropped from the figures).
            if slots.wait(timeout: .now() + .milliseconds(config.timeoutMillis)) == .timedOut { continue }
            target.encode(seq: UInt64(seq), into: &buffer)
            sent[seq] = nowNanos()
            do { try io.sendAll(buffer) } catch {
                lock.withLock { failure = failure ?? "\(error)" }
                break
            }
        }
        lock.withLock {
            sendsDone = true
            lastSend = nowNanos()
        }
    }

    func receiveLoop() {
        io.setReceiveTimeout(milliseconds: 20)
        var inbox = ByteBuffer()
        var nextInOrder = 0
        var received = 0
        let timeout = UInt64(config.timeoutMillis) * 1_000_000
        while received < total {
            let (done, last) = lock.withLock { (sendsDone, lastSend) }
            if done && nowNanos() > last + timeout { break }
            do {
                guard try io.receive(into: &inbox) else { continue }
                for a in try target.cut(&inbox) {
                    let seq: Int
                    if let id = a.requestID { seq = Int(id) } else { seq = nextInOrder; nextInOrder += 1 }
                    guard seq >= 0 && seq < total && answered[seq] == 0 else { continue }
                    answered[seq] = nowNanos()
                    received += 1
                    slots.signal()
                    if let e = a.error { errors[e, default: 0] += 1 }
                    if let q = a.queueMicros { _ = queue.record(UInt64(q)) }
                    if let c = a.computeMicros { _ = compute.record(UInt64(c)) }
                }
                inbox.discardReadBytes()
            } catch {
                lock.withLock { failure = failure ?? "\(error)" }
                break
            }
        }
        // Release a sender that may be waiting for a slot.
        lock.withLock { stopped = true }
        for _ in 0..<config.inFlightPerConnection { slots.signal() }
        io.shutdownBoth()
    }

    /// Records every request scheduled after the warm-up: answered ones at their latency (capped at the
    /// timeout, counted as a timeout beyond it), unanswered ones at the timeout.
    func finish(warmupEnd: UInt64) {
        let timeout = UInt64(config.timeoutMillis) * 1_000_000
        for seq in 0..<total where scheduled[seq] >= warmupEnd && scheduled[seq] != 0 {
            let done = answered[seq]
            if done == 0 || done - scheduled[seq] > timeout {
                errors["timeout", default: 0] += 1
                _ = latency.record(timeout)
                _ = service.record(timeout)
                continue
            }
            completed += 1
            _ = latency.record(done - scheduled[seq])
            _ = service.record(done - max(sent[seq], scheduled[seq]))
        }
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
