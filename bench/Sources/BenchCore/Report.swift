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

    public init(scenario: String, label: String, requestBytes: Int, result r: LoadResult) {
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
    }

    public var errorCount: Int { errors.values.reduce(0, +) }
}

/// Markdown and SVG from run records.
public enum Report {
    public static func markdownTable(_ runs: [RunRecord], floorLabel: String = "c-floor") -> String {
        var s = "| scenario | server | offered/s | conns × in-flight | achieved/s | errors | p50 µs | p90 | p99 | p99.9 | max | service p99 | p50 / floor | p99 / floor |\n"
        s += "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n"
        for r in runs {
            let floor = runs.first { $0.label == floorLabel && $0.scenario == r.scenario && $0.rate == r.rate && $0.connections == r.connections }
            func ratio(_ a: Double, _ b: Double?) -> String { b.map { $0 > 0 ? String(format: "%.2f×", a / $0) : "–" } ?? "–" }
            s += "| \(r.scenario) | \(r.label) | \(Int(r.rate)) | \(r.connections) × \(r.inFlightPerConnection) | \(Int(r.achievedRate)) | \(r.errorCount) | "
            s += [r.latency.p50, r.latency.p90, r.latency.p99, r.latency.p999, r.latency.max, r.service.p99]
                .map { String(format: "%.1f", $0) }.joined(separator: " | ")
            s += " | \(ratio(r.latency.p50, floor?.latency.p50)) | \(ratio(r.latency.p99, floor?.latency.p99)) |\n"
        }
        return s
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
