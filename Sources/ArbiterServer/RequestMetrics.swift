import ArbiterWire
import NIOConcurrencyHelpers

/// Latency counts in fixed buckets (upper bounds in microseconds; the last bucket is +Inf), as a Prometheus
/// histogram wants them. Recording is a short scan and two adds: no lock, no allocation.
struct LatencyHistogram: Sendable {
    /// Upper bounds, µs: 1, 2, 5, then 10 µs to 2.5 s in 1–2.5–5 steps (a small model computes in a few µs;
    /// the wire counts whole µs).
    static let boundsMicros: [UInt64] = [1, 2, 5, 10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000,
                                         100_000, 250_000, 500_000, 1_000_000, 2_500_000]
    /// Per bucket (not cumulative), the last one for values above every bound.
    private(set) var counts = [UInt64](repeating: 0, count: LatencyHistogram.boundsMicros.count + 1)
    private(set) var sumMicros: UInt64 = 0

    @inline(__always)
    mutating func record(_ micros: UInt64) {
        var i = 0
        let bounds = Self.boundsMicros
        while i < bounds.count && micros > bounds[i] { i += 1 }
        counts[i] &+= 1
        sumMicros &+= micros
    }

    var count: UInt64 { counts.reduce(0, &+) }

    mutating func add(_ other: LatencyHistogram) {
        for i in counts.indices { counts[i] &+= other.counts[i] }
        sumMicros &+= other.sumMicros
    }
}

/// A number for each (model, version) served in this process, so that an event loop's counters are found by
/// an integer, not by hashing the model's name per request. Numbers are handed out at load time (under a lock,
/// off the hot path) and never reused: one entry per version ever loaded, a few dozen bytes each.
enum SeriesNumbers {
    struct Key: Hashable, Sendable {
        let model: String
        let version: UInt64
    }

    private static let table = NIOLockedValueBox<(numbers: [Key: Int], keys: [Key])>(([:], []))

    static func number(model: String, version: UInt64) -> Int {
        let key = Key(model: model, version: version)
        return table.withLockedValue { t in
            if let n = t.numbers[key] { return n }
            t.keys.append(key)
            t.numbers[key] = t.keys.count - 1
            return t.keys.count - 1
        }
    }

    static func key(_ number: Int) -> Key {
        table.withLockedValue { $0.keys[number] }
    }
}

/// One event loop's request counters. Only that loop writes them (no lock, no atomic on the hot path); a
/// scrape copies them on the loop (`snapshot`) and adds the loops' copies up.
// Unchecked: touched only on its loop (ConnectionHandler records there; the scrape hops there).
final class LoopMetrics: @unchecked Sendable {
    struct Series: Sendable {
        var requests: UInt64 = 0
        var candidates: UInt64 = 0
        var queue = LatencyHistogram()
        var compute = LatencyHistogram()

        mutating func add(_ other: Series) {
            requests &+= other.requests
            candidates &+= other.candidates
            queue.add(other.queue)
            compute.add(other.compute)
        }
    }

    enum ShedReason: Int, CaseIterable, Sendable {
        /// The request waited longer than `maxQueueMillis` before the server could score it.
        case queue
        /// The server's memory budget was in use.
        case memory

        var label: String {
            switch self {
            case .queue: "queue"
            case .memory: "memory"
            }
        }
    }

    /// Per (model, version) number: SCOREs answered with a RESULT.
    private(set) var series: [Int: Series] = [:]
    /// ERROR frames sent, by status code.
    private(set) var errors = [UInt64](repeating: 0, count: 256)
    private(set) var shed = [UInt64](repeating: 0, count: ShedReason.allCases.count)
    /// SCOREs being scored off the event loop now.
    private(set) var offloaded = 0

    @inline(__always)
    func scored(series number: Int, candidates: Int, timing: ScoreTiming) {
        series[number, default: Series()].record(candidates: candidates, timing: timing)
    }

    @inline(__always)
    func failed(_ status: Status) { errors[Int(status.rawValue)] &+= 1 }

    @inline(__always)
    func shed(_ reason: ShedReason) { shed[reason.rawValue] &+= 1 }

    func offloadStarted() { offloaded += 1 }
    func offloadFinished() { offloaded -= 1 }

    /// A copy of the counters. The series of versions no longer loaded (not in `loaded`) are handed out this
    /// once more and then dropped, so that the counters of a long-running server do not grow with every
    /// version it ever served.
    func snapshot(keeping loaded: Set<Int>) -> Snapshot {
        let s = Snapshot(series: series, errors: errors, shed: shed, offloaded: offloaded)
        for number in series.keys where !loaded.contains(number) { series[number] = nil }
        return s
    }

    struct Snapshot: Sendable {
        var series: [Int: Series] = [:]
        var errors = [UInt64](repeating: 0, count: 256)
        var shed = [UInt64](repeating: 0, count: ShedReason.allCases.count)
        var offloaded = 0

        mutating func add(_ other: Snapshot) {
            for (number, s) in other.series { series[number, default: Series()].add(s) }
            for i in errors.indices { errors[i] &+= other.errors[i] }
            for i in shed.indices { shed[i] &+= other.shed[i] }
            offloaded += other.offloaded
        }
    }
}

extension LoopMetrics.Series {
    @inline(__always)
    mutating func record(candidates n: Int, timing: ScoreTiming) {
        requests &+= 1
        candidates &+= UInt64(n)
        queue.record(timing.queueMicros)
        compute.record(timing.computeMicros)
    }
}

/// What a scored request's answer reports: how long it waited before scoring began (from its send stamp, or
/// from when it was read) and how long scoring took, in microseconds.
struct ScoreTiming: Sendable {
    var queueMicros: UInt64
    var computeMicros: UInt64
}
