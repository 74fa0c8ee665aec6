import Foundation
import ArbiterWire
import NIOCore
import Prometheus

/// The server's metrics, in Prometheus's text format (docs/METRICS.md lists every series).
///
/// Two sources make one exposition:
/// - what happens off the hot path — connections accepted and refused, swaps, rejected versions — and what is
///   read at scrape time — open connections, the memory budget, the store — live in a swift-prometheus
///   registry (`registry`; it is also a swift-metrics backend: arbiterd bootstraps swift-metrics with it);
/// - what every request changes — requests, candidates, queue and compute latency per model and version,
///   errors by status, shed requests — is counted by each event loop in its own `LoopMetrics`, without a lock
///   or an atomic (swift-prometheus's histograms take a lock per observation), and added up at scrape time.
public final class ServerMetrics: Sendable {
    /// Where the non-request series live (and where an embedding process may add its own).
    public let registry = PrometheusCollectorRegistry()

    let connectionsAccepted: Counter
    let connectionsRefused: Counter
    private let connectionsOpen: Gauge
    private let memoryLimit: Gauge
    private let memoryInUse: Gauge
    private let memoryProcess: Gauge
    private let memoryStore: Gauge
    private let storeGeneration: Gauge
    private let storeMap: Gauge
    private let storeUsed: Gauge
    private let storeFile: Gauge
    private let ready: Gauge

    init() {
        connectionsAccepted = registry.makeCounter(descriptor: Self.named("arbiter_connections_accepted_total", "Connections accepted (including those then refused over the limit)"))
        connectionsRefused = registry.makeCounter(descriptor: Self.named("arbiter_connections_refused_total", "Connections answered TOO_MANY_CONNECTIONS and closed (--max-connections)"))
        connectionsOpen = registry.makeGauge(descriptor: Self.named("arbiter_connections", "Connections open now"))
        memoryLimit = registry.makeGauge(descriptor: Self.named("arbiter_memory_budget_bytes", "The memory budget (--memory-budget-mib)"))
        memoryInUse = registry.makeGauge(descriptor: Self.named("arbiter_memory_in_use_bytes", "Memory counted against the budget: past 70% of it heavy non-reading clients are shed, past 85% every SCORE"))
        memoryProcess = registry.makeGauge(descriptor: Self.named("arbiter_memory_process_bytes", "Resident memory less the store's mapped pages, at the last 100 ms sample (0 when not counted)"))
        memoryStore = registry.makeGauge(descriptor: Self.named("arbiter_memory_store_resident_bytes", "The store's mapped pages resident in memory (page cache; not counted against the budget)"))
        storeGeneration = registry.makeGauge(descriptor: Self.named("arbiter_store_generation", "The store's generation this server last read"))
        storeMap = registry.makeGauge(descriptor: Self.named("arbiter_store_map_bytes", "The store's map size (address space)"))
        storeUsed = registry.makeGauge(descriptor: Self.named("arbiter_store_used_bytes", "Bytes of the map in use (last page written)"))
        storeFile = registry.makeGauge(descriptor: Self.named("arbiter_store_file_bytes", "The store's data file size"))
        ready = registry.makeGauge(descriptor: Self.named("arbiter_ready", "1 when /ready answers 200: every model in the store is served by a validated version"))
    }

    /// A full metric name (swift-prometheus joins the parts; here the whole name is one).
    static func named(_ name: String, _ help: String) -> MetricNameDescriptor {
        MetricNameDescriptor(metricName: name, unitName: "", helpText: help)
    }

    static let swapsHelp = "Changes of the active version of a model this server already served (a swap or a rollback)"
    static let rejectedHelp = "Versions that failed validation here and never served"

    /// A model is served: its counters exist from now on (at 0), so that dashboards see them before the first
    /// event. Idempotent.
    func serving(model: String) {
        _ = registry.makeCounter(descriptor: Self.named("arbiter_swaps_total", Self.swapsHelp), labels: [("model", model)])
        _ = registry.makeCounter(descriptor: Self.named("arbiter_versions_rejected_total", Self.rejectedHelp), labels: [("model", model)])
    }

    /// A served model's active version changed (on the loader thread).
    func swapped(model: String) {
        registry.makeCounter(descriptor: Self.named("arbiter_swaps_total", Self.swapsHelp), labels: [("model", model)]).increment()
    }

    /// A version failed validation.
    func rejected(model: String) {
        registry.makeCounter(descriptor: Self.named("arbiter_versions_rejected_total", Self.rejectedHelp), labels: [("model", model)]).increment()
    }

    /// What the scrape reads off the server besides the loops' counters.
    struct Readings: Sendable {
        var connections: Int
        var memoryLimit: Int
        var memoryInUse: Int
        var memoryProcess: Int
        var memoryStore: Int
        var storeGeneration: UInt64
        var storeMapBytes: Int
        var storeUsedBytes: Int
        var storeFileBytes: Int
        var ready: Bool
        /// Per model served: its active version and the versions loaded.
        var models: [(name: String, active: UInt64, loaded: Int, failing: Bool)]
    }

    /// The exposition: the registry's series, then the request series added up over the loops.
    func render(_ r: Readings, requests: LoopMetrics.Snapshot) -> String {
        connectionsOpen.set(to: Double(r.connections))
        memoryLimit.set(to: Double(r.memoryLimit))
        memoryInUse.set(to: Double(r.memoryInUse))
        memoryProcess.set(to: Double(r.memoryProcess))
        memoryStore.set(to: Double(r.memoryStore))
        storeGeneration.set(to: Double(r.storeGeneration))
        storeMap.set(to: Double(r.storeMapBytes))
        storeUsed.set(to: Double(r.storeUsedBytes))
        storeFile.set(to: Double(r.storeFileBytes))
        ready.set(to: r.ready ? 1 : 0)
        var out = registry.emitToString()
        Self.renderRequests(requests, models: r.models, into: &out)
        return out
    }

    static func renderRequests(_ s: LoopMetrics.Snapshot, models: [(name: String, active: UInt64, loaded: Int, failing: Bool)], into out: inout String) {
        func family(_ name: String, _ type: String, _ help: String) {
            out += "# HELP \(name) \(help)\n# TYPE \(name) \(type)\n"
        }
        let series = s.series.map { (key: SeriesNumbers.key($0.key), value: $0.value) }
            .sorted { ($0.key.model, $0.key.version) < ($1.key.model, $1.key.version) }
        func labels(_ k: SeriesNumbers.Key) -> String { "model=\"\(escape(k.model))\",version=\"\(k.version)\"" }

        family("arbiter_requests_total", "counter", "SCOREs answered with a RESULT, by model and the version that scored them")
        for (k, v) in series { out += "arbiter_requests_total{\(labels(k))} \(v.requests)\n" }
        family("arbiter_candidates_total", "counter", "Candidates scored in those SCOREs")
        for (k, v) in series { out += "arbiter_candidates_total{\(labels(k))} \(v.candidates)\n" }
        for (name, help, pick) in [
            ("arbiter_queue_seconds", "Wait from the client's send stamp (or the read, unstamped) to the start of scoring, as RESULT's queue_us",
             { (v: LoopMetrics.Series) in v.queue }),
            ("arbiter_compute_seconds", "Scoring time, as RESULT's compute_us", { (v: LoopMetrics.Series) in v.compute }),
        ] {
            family(name, "histogram", help)
            for (k, v) in series {
                let h = pick(v)
                var cumulative: UInt64 = 0
                for (i, bound) in LatencyHistogram.boundsMicros.enumerated() {
                    cumulative &+= h.counts[i]
                    out += "\(name)_bucket{\(labels(k)),le=\"\(seconds(bound))\"} \(cumulative)\n"
                }
                cumulative &+= h.counts[LatencyHistogram.boundsMicros.count]
                out += "\(name)_bucket{\(labels(k)),le=\"+Inf\"} \(cumulative)\n"
                out += "\(name)_sum{\(labels(k))} \(seconds(h.sumMicros))\n"
                out += "\(name)_count{\(labels(k))} \(cumulative)\n"
            }
        }
        family("arbiter_errors_total", "counter", "ERROR frames sent, by status")
        for status in Status.allCases where status != .ok {
            out += "arbiter_errors_total{status=\"\(status)\"} \(s.errors[Int(status.rawValue)])\n"
        }
        family("arbiter_shed_total", "counter", "SCOREs answered OVERLOADED unscored: queue (waited over --max-queue-ms), memory (the budget in use)")
        for reason in LoopMetrics.ShedReason.allCases {
            out += "arbiter_shed_total{reason=\"\(reason.label)\"} \(s.shed[reason.rawValue])\n"
        }
        family("arbiter_requests_in_flight", "gauge", "SCOREs being scored off the event loops now (inline ones are answered within the read that brought them)")
        out += "arbiter_requests_in_flight \(s.offloaded)\n"
        family("arbiter_model_active_version", "gauge", "The version serving a model's unpinned requests (outside a split)")
        for m in models { out += "arbiter_model_active_version{model=\"\(escape(m.name))\"} \(m.active)\n" }
        family("arbiter_model_loaded_versions", "gauge", "Versions of a model loaded (active, split, shadow, retained)")
        for m in models { out += "arbiter_model_loaded_versions{model=\"\(escape(m.name))\"} \(m.loaded)\n" }
        family("arbiter_model_failing", "gauge", "1 when the store's active version of a model failed validation here (an older one may still serve)")
        for m in models { out += "arbiter_model_failing{model=\"\(escape(m.name))\"} \(m.failing ? 1 : 0)\n" }
    }

    /// Microseconds as seconds, exactly (no float formatting noise): 2500 → "0.0025".
    static func seconds(_ micros: UInt64) -> String {
        let whole = micros / 1_000_000, frac = micros % 1_000_000
        if frac == 0 { return "\(whole)" }
        var f = String(frac)
        f = String(repeating: "0", count: 6 - f.count) + f
        while f.hasSuffix("0") { f.removeLast() }
        return "\(whole).\(f)"
    }

    /// A label value as the text format wants it: backslash, quote and newline escaped.
    static func escape(_ s: String) -> String {
        guard s.contains(where: { $0 == "\\" || $0 == "\"" || $0 == "\n" }) else { return s }
        return s.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"")
            .replacingOccurrences(of: "\n", with: "\\n")
    }
}
