import Foundation
import Histogram

/// Percentiles of a histogram in microseconds.
public struct Summary: Codable, Sendable {
    public var p50: Double
    public var p90: Double
    public var p99: Double
    public var p999: Double
    public var max: Double

    public init(_ h: Histogram<UInt64>, unitNanos: Double = 1000) {
        func v(_ p: Double) -> Double { h.totalCount == 0 ? 0 : Double(h.valueAtPercentile(p)) / unitNanos }
        p50 = v(50)
        p90 = v(90)
        p99 = v(99)
        p999 = v(99.9)
        max = h.totalCount == 0 ? 0 : Double(h.max) / unitNanos
    }
}

/// One run as written to results JSON.
public struct RunRecord: Codable, Sendable {
    /// "run" (a fixed offered rate), "saturation" (offered far above capacity, to find it) or "sweep" (a
    /// step of a latency–throughput sweep).
    public var kind: String
    /// Repeat number of this (scenario, label, rate, connections) within the results file, from 0.
    public var repeatIndex: Int
    public var wire: String
    public var scenario: String
    public var target: String
    public var label: String
    public var rate: Double
    public var connections: Int
    public var inFlightPerConnection: Int
    public var poisson: Bool
    public var requestBytes: Int
    public var durationSeconds: Double
    public var completed: Int
    public var achievedRate: Double
    public var errors: [String: Int]
    /// From the scheduled send time (coordinated omission corrected), µs.
    public var latency: Summary
    /// From the actual send, µs.
    public var service: Summary
    public var serverQueue: Summary?
    public var serverCompute: Summary?
    /// The corrected latency histogram: [value in ns, count] for every recorded value bucket.
    public var histogram: [[UInt64]]
    /// Latency of the requests answered with a result, not an error (nil in records written before it).
    public var accepted: Summary?
    /// The same from the actual send.
    public var acceptedService: Summary?

    public init(kind: String = "run", repeatIndex: Int = 0, wire: String, scenario: String, label: String,
                requestBytes: Int, result r: LoadResult) {
        self.kind = kind
        self.repeatIndex = repeatIndex
        self.wire = wire
        self.scenario = scenario
        target = r.target
        self.label = label
        rate = r.configuration.rate
        connections = r.configuration.connections
        inFlightPerConnection = r.configuration.inFlightPerConnection
        poisson = r.configuration.poisson
        self.requestBytes = requestBytes
        durationSeconds = r.measuredSeconds
        completed = r.completed
        achievedRate = r.achievedRate
        errors = r.errors
        latency = Summary(r.latency)
        service = Summary(r.service)
        serverQueue = r.serverQueue.totalCount > 0 ? Summary(r.serverQueue, unitNanos: 1) : nil
        serverCompute = r.serverCompute.totalCount > 0 ? Summary(r.serverCompute, unitNanos: 1) : nil
        histogram = r.latency.recordedValues().map { [$0.value, UInt64($0.count)] }
        accepted = r.accepted.flatMap { $0.totalCount > 0 ? Summary($0) : nil }
        acceptedService = r.acceptedService.flatMap { $0.totalCount > 0 ? Summary($0) : nil }
    }

    public var errorCount: Int { errors.values.reduce(0, +) }
}

/// Markdown and SVG from run records.
public enum Report {
    /// Runs of one configuration (scenario, server, rate, connections, in-flight), repeats together.
    public struct Group {
        public var runs: [RunRecord]
        public var first: RunRecord { runs[0] }
        /// The median over the repeats of one figure.
        public func median(_ f: (RunRecord) -> Double) -> Double {
            let v = runs.map(f).sorted()
            return v.count % 2 == 1 ? v[v.count / 2] : (v[v.count / 2 - 1] + v[v.count / 2]) / 2
        }
        /// The repeat whose p99 is the median one (for plots).
        public var representative: RunRecord { runs.sorted { $0.latency.p99 < $1.latency.p99 }[(runs.count - 1) / 2] }
        func matches(_ o: Group) -> Bool {
            first.scenario == o.first.scenario && first.rate == o.first.rate && first.connections == o.first.connections
        }
    }

    /// Fixed-rate runs grouped by configuration, in first-seen order.
    public static func groups(_ runs: [RunRecord]) -> [Group] {
        var out: [Group] = []
        for r in runs where r.kind == "run" {
            if let i = out.firstIndex(where: { g in
                g.first.scenario == r.scenario && g.first.label == r.label && g.first.rate == r.rate
                    && g.first.connections == r.connections && g.first.inFlightPerConnection == r.inFlightPerConnection
            }) {
                out[i].runs.append(r)
            } else {
                out.append(Group(runs: [r]))
            }
        }
        return out
    }

    static func ratio(_ a: Double, _ b: Double?) -> String {
        guard let b, b > 0, a > 0 else { return "–" }
        return String(format: "%.2f×", a / b)
    }

    /// The results table: one row per configuration, each figure the median of its repeats, with the ratio
    /// of p50 and p99 to the floor's at the same scenario, rate and connections.
    public static func markdownTable(_ runs: [RunRecord], floorLabel: String = "c-floor") -> String {
        let groups = groups(runs)
        var s = "| scenario | server | bytes | offered/s | conns × in-flight | achieved/s | errors | p50 µs | p90 | p99 | p99.9 | max | service p99 | server queue / compute p50 µs | p50 / floor | p99 / floor | repeats |\n"
        s += "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n"
        for g in groups {
            let r = g.first
            let floor = groups.first { $0.first.label == floorLabel && $0.matches(g) }
            let p50 = g.median { $0.latency.p50 }, p99 = g.median { $0.latency.p99 }
            let errors = g.runs.map(\.errorCount).reduce(0, +)
            s += "| \(r.scenario) | \(r.label) | \(r.requestBytes) | \(Int(r.rate)) | \(r.connections) × \(r.inFlightPerConnection) | \(Int(g.median { $0.achievedRate })) | \(errors) | "
            s += [p50, g.median { $0.latency.p90 }, p99, g.median { $0.latency.p999 }, g.median { $0.latency.max }, g.median { $0.service.p99 }]
                .map { String(format: "%.1f", $0) }.joined(separator: " | ")
            if r.serverQueue != nil {
                s += String(format: " | %.0f / %.0f", g.median { $0.serverQueue?.p50 ?? 0 }, g.median { $0.serverCompute?.p50 ?? 0 })
            } else {
                s += " | –"
            }
            let f50 = floor?.median { $0.latency.p50 }, f99 = floor?.median { $0.latency.p99 }
            s += " | \(ratio(p50, f50)) | \(ratio(p99, f99)) | \(g.runs.count) |\n"
        }
        return s
    }

    /// Each peer against Arbiter at the same scenario, rate and connections: how many times Arbiter's
    /// latency the peer's is (above 1× means Arbiter is faster).
    public static func peerTable(_ runs: [RunRecord], arbiterLabel: String = "arbiterd", floorLabel: String = "c-floor") -> String {
        let groups = groups(runs)
        var s = "| scenario | offered/s | conns | peer | peer p50 / Arbiter p50 | peer p99 / Arbiter p99 | peer p99.9 / Arbiter p99.9 |\n| --- | --- | --- | --- | --- | --- | --- |\n"
        var any = false
        for a in groups where a.first.label == arbiterLabel {
            for p in groups where p.first.label != arbiterLabel && p.first.label != floorLabel && p.matches(a) {
                any = true
                s += "| \(a.first.scenario) | \(Int(a.first.rate)) | \(a.first.connections) | \(p.first.label) | "
                s += "\(ratio(p.median { $0.latency.p50 }, a.median { $0.latency.p50 })) | \(ratio(p.median { $0.latency.p99 }, a.median { $0.latency.p99 })) | "
                s += "\(ratio(p.median { $0.latency.p999 }, a.median { $0.latency.p999 })) |\n"
            }
        }
        return any ? s : ""
    }

    /// Saturation throughputs (offered far above capacity), each the median of its runs, with its ratio to
    /// the reference server's (Redis) at the same scenario and connections where that was measured.
    public static func saturationTable(_ runs: [RunRecord], referenceLabel: String = "redis") -> String {
        let sat = runs.filter { $0.kind == "saturation" }
        guard !sat.isEmpty else { return "" }
        var s = "| scenario | server | conns × in-flight | max achieved/s | / \(referenceLabel) | errors | service p50 µs | p99 | runs |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- |\n"
        func group(_ scenario: String, _ label: String, _ connections: Int) -> Group? {
            let mine = sat.filter { $0.scenario == scenario && $0.label == label && $0.connections == connections }
            return mine.isEmpty ? nil : Group(runs: mine)
        }
        var seen: [String] = []
        for r in sat where !seen.contains("\(r.scenario) \(r.label) \(r.connections)") {
            seen.append("\(r.scenario) \(r.label) \(r.connections)")
            guard let g = group(r.scenario, r.label, r.connections) else { continue }
            let rate = g.median { $0.achievedRate }
            let ref = group(r.scenario, referenceLabel, r.connections)?.median { $0.achievedRate }
            s += "| \(r.scenario) | \(r.label) | \(r.connections) × \(r.inFlightPerConnection) | \(Int(rate)) | \(ratio(rate, ref)) | \(g.runs.map(\.errorCount).reduce(0, +)) | "
            s += String(format: "%.1f | %.1f | %d |\n", g.median { $0.service.p50 }, g.median { $0.service.p99 }, g.runs.count)
        }
        return s
    }

    /// Sweeps: per (scenario, server), the highest offered rate whose p99 stayed within `sloMicros` with no
    /// errors, and the SVG of p50 and p99 against achieved throughput.
    public static func sweepTable(_ runs: [RunRecord], sloMicros: Double) -> String {
        let steps = runs.filter { $0.kind == "sweep" }
        guard !steps.isEmpty else { return "" }
        var s = "| scenario | server | conns | saturation/s | highest rate with p99 ≤ \(Int(sloMicros)) µs | p99 there µs |\n| --- | --- | --- | --- | --- | --- |\n"
        for key in sweepKeys(steps) {
            let mine = steps.filter { "\($0.scenario) \($0.label)" == key }.sorted { $0.rate < $1.rate }
            let sat = runs.last { $0.kind == "saturation" && "\($0.scenario) \($0.label)" == key }
            let ok = mine.filter { $0.latency.p99 <= sloMicros && $0.errorCount == 0 }.last
            s += "| \(mine[0].scenario) | \(mine[0].label) | \(mine[0].connections) | \(sat.map { String(Int($0.achievedRate)) } ?? "–") | "
            s += "\(ok.map { String(Int($0.rate)) } ?? "none") | \(ok.map { String(format: "%.1f", $0.latency.p99) } ?? "–") |\n"
        }
        return s
    }

    static func sweepKeys(_ steps: [RunRecord]) -> [String] {
        var keys: [String] = []
        for r in steps where !keys.contains("\(r.scenario) \(r.label)") { keys.append("\(r.scenario) \(r.label)") }
        return keys
    }

    /// Latency–load curves of a scenario's sweeps: p50 (dashed) and p99 against the offered rate, log
    /// latency axis (past saturation the achieved rate stays flat while latency climbs, so the offered
    /// rate is the axis that shows the knee).
    public static func sweepSVG(_ runs: [RunRecord], title: String) -> String {
        let steps = runs.filter { $0.kind == "sweep" }
        let width = 720.0, height = 420.0, left = 70.0, right = 200.0, top = 40.0, bottom = 50.0
        let maxX = max(1, steps.map(\.rate).max() ?? 1) * 1.05
        let ys = steps.flatMap { [$0.latency.p50, $0.latency.p99] }.filter { $0 > 0 }
        let minY = max(1, ys.min() ?? 1), maxY = max(minY * 10, ys.max() ?? 10)
        func px(_ x: Double) -> Double { left + x / maxX * (width - left - right) }
        func py(_ y: Double) -> Double {
            height - bottom - (log10(max(y, minY)) - log10(minY)) / (log10(maxY) - log10(minY)) * (height - top - bottom)
        }
        var s = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"\(Int(width))\" height=\"\(Int(height))\" font-family=\"sans-serif\" font-size=\"12\">\n"
        s += "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n<text x=\"\(left)\" y=\"24\" font-size=\"15\">\(escape(title))</text>\n"
        for i in 0...4 {
            let x = maxX / 1.05 * Double(i) / 4
            s += "<line x1=\"\(px(x))\" y1=\"\(top)\" x2=\"\(px(x))\" y2=\"\(height - bottom)\" stroke=\"#ddd\"/>"
            s += "<text x=\"\(px(x))\" y=\"\(height - bottom + 18)\" text-anchor=\"middle\">\(Int(x))</text>\n"
        }
        var t = pow(10, floor(log10(minY)))
        while t <= maxY {
            if t >= minY {
                s += "<line x1=\"\(left)\" y1=\"\(py(t))\" x2=\"\(width - right)\" y2=\"\(py(t))\" stroke=\"#eee\"/>"
                s += "<text x=\"\(left - 6)\" y=\"\(py(t) + 4)\" text-anchor=\"end\">\(Int(t))</text>\n"
            }
            t *= 10
        }
        s += "<text x=\"16\" y=\"\(top + (height - top - bottom) / 2)\" transform=\"rotate(-90 16 \(top + (height - top - bottom) / 2))\" text-anchor=\"middle\">latency µs (log)</text>\n"
        s += "<text x=\"\(left + (width - left - right) / 2)\" y=\"\(height - 12)\" text-anchor=\"middle\">offered requests/s</text>\n"
        let colors = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#17becf"]
        for (i, key) in sweepKeys(steps).enumerated() {
            let mine = steps.filter { "\($0.scenario) \($0.label)" == key }.sorted { $0.rate < $1.rate }
            let c = colors[i % colors.count]
            for (dash, f) in [("4,3", { (r: RunRecord) in r.latency.p50 }), ("", { (r: RunRecord) in r.latency.p99 })] {
                let pts = mine.map { String(format: "%.1f,%.1f", px($0.rate), py(f($0))) }.joined(separator: " ")
                s += "<polyline fill=\"none\" stroke=\"\(c)\" stroke-width=\"2\" stroke-dasharray=\"\(dash)\" points=\"\(pts)\"/>\n"
            }
            s += "<text x=\"\(width - right + 10)\" y=\"\(top + 16 + Double(i) * 18)\" fill=\"\(c)\">\(escape(mine[0].label)) p99 (p50 dashed)</text>\n"
        }
        return s + "</svg>\n"
    }

    /// Latency by percentile, the percentile axis log-scaled as HdrHistogram plots are (50%, 90%, 99%, ...).
    public static func percentileSVG(_ runs: [RunRecord], title: String) -> String {
        let width = 720.0, height = 420.0, left = 70.0, right = 170.0, top = 40.0, bottom = 50.0
        let maxX = 5.0  // 99.999%
        var series: [(String, [(Double, Double)])] = []
        for r in runs {
            var total: UInt64 = 0
            for b in r.histogram { total += b[1] }
            guard total > 0 else { continue }
            var seen: UInt64 = 0
            var pts: [(Double, Double)] = []
            for b in r.histogram {
                seen += b[1]
                let q = Double(seen) / Double(total)
                let x = q >= 1 ? maxX : min(maxX, -log10(1 - q))
                pts.append((x, Double(b[0]) / 1000))
            }
            series.append((r.label, pts))
        }
        let maxY = max(1, series.flatMap { $0.1.map(\.1) }.max() ?? 1)
        let logY = maxY / max(series.flatMap { $0.1.map(\.1) }.min() ?? 1, 1) > 50
        func px(_ x: Double) -> Double { left + x / maxX * (width - left - right) }
        func py(_ y: Double) -> Double {
            let f = logY ? log10(max(y, 1)) / log10(maxY) : y / maxY
            return height - bottom - f * (height - top - bottom)
        }
        let colors = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#17becf"]
        var s = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"\(Int(width))\" height=\"\(Int(height))\" font-family=\"sans-serif\" font-size=\"12\">\n"
        s += "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
        s += "<text x=\"\(left)\" y=\"24\" font-size=\"15\">\(escape(title))</text>\n"
        for (i, label) in ["0%", "90%", "99%", "99.9%", "99.99%", "99.999%"].enumerated() {
            let x = px(Double(i))
            s += "<line x1=\"\(x)\" y1=\"\(top)\" x2=\"\(x)\" y2=\"\(height - bottom)\" stroke=\"#ddd\"/>"
            s += "<text x=\"\(x)\" y=\"\(height - bottom + 18)\" text-anchor=\"middle\">\(label)</text>\n"
        }
        let ticks = logY ? stride(from: 0.0, through: log10(maxY), by: 1).map { pow(10, $0) } : (0...4).map { maxY * Double($0) / 4 }
        for t in ticks {
            s += "<line x1=\"\(left)\" y1=\"\(py(t))\" x2=\"\(width - right)\" y2=\"\(py(t))\" stroke=\"#eee\"/>"
            s += "<text x=\"\(left - 6)\" y=\"\(py(t) + 4)\" text-anchor=\"end\">\(String(format: t < 10 ? "%.1f" : "%.0f", t))</text>\n"
        }
        s += "<text x=\"16\" y=\"\(top + (height - top - bottom) / 2)\" transform=\"rotate(-90 16 \(top + (height - top - bottom) / 2))\" text-anchor=\"middle\">latency µs\(logY ? " (log)" : "")</text>\n"
        s += "<text x=\"\(left + (width - left - right) / 2)\" y=\"\(height - 12)\" text-anchor=\"middle\">percentile</text>\n"
        for (i, (label, pts)) in series.enumerated() {
            let c = colors[i % colors.count]
            let path = pts.map { String(format: "%.1f,%.1f", px($0.0), py($0.1)) }.joined(separator: " ")
            s += "<polyline fill=\"none\" stroke=\"\(c)\" stroke-width=\"2\" points=\"\(path)\"/>\n"
            s += "<text x=\"\(width - right + 10)\" y=\"\(top + 16 + Double(i) * 18)\" fill=\"\(c)\">\(escape(label))</text>\n"
        }
        return s + "</svg>\n"
    }

    static func escape(_ s: String) -> String {
        s.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;")
    }
}
