import ArbiterWire
import ArgumentParser
import BenchCore
import Foundation

@main
struct ArbiterBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "arbiter-bench",
        abstract: "Open-loop load generator for Arbiter and its peers; writes JSON, Markdown and SVG results.",
        subcommands: [Run.self, Render.self])
}

/// The scenarios: each is a target built from a request frame (adding one is one entry here).
enum Scenario: String, ExpressibleByArgument, CaseIterable {
    case ping, lead1 = "lead-1", lead100 = "lead-100", redisPing = "redis-ping"

    func target(model: String) -> any Target {
        switch self {
        case .ping: return ArbiterTarget(name: "ping", frame: Frame(requestID: 0, message: .ping([UInt8](repeating: 0, count: 32))))
        case .lead1: return ArbiterTarget(name: "lead-1", frame: Frame(requestID: 0, message: .score(Self.leads(1, model))))
        case .lead100: return ArbiterTarget(name: "lead-100", frame: Frame(requestID: 0, message: .score(Self.leads(100, model))))
        case .redisPing: return RedisPingTarget()
        }
    }

    /// Leads in the schema of `arbiter-train gen-data` (job context, six lead features).
    static func leads(_ n: Int, _ model: String) -> ScoreRequest {
        var matrix: [Float] = []
        for i in 0..<n {
            let gap = Float(i % 7) * 0.05 - 0.1
            matrix += [Float(i % 5), Float(i % 12), Float(2 + i % 40), gap, Float(i % 30), Float(i % 15)]
        }
        return ScoreRequest(model: model, context: [3, 4200], candidateIDs: (0..<n).map(UInt64.init),
                            candidateFeatureCount: 6, candidateFeatures: matrix)
    }
}

struct Run: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Drive one server with one scenario and append the run to a results file.")
    @Option(help: "Scenario: \(Scenario.allCases.map(\.rawValue).joined(separator: ", ")).") var scenario: Scenario
    @Option(help: "Label of the server in reports (arbiterd, c-floor, redis, ...).") var label: String
    @Option(help: "Server host (IPv4).") var host = "127.0.0.1"
    @Option(help: "Server port.") var port: Int = 7878
    @Option(help: "Model for SCORE scenarios.") var model = "leads"
    @Option(help: "Offered requests per second, over all connections.") var rate: Double
    @Option(help: "Connections.") var connections = 1
    @Option(help: "Most requests outstanding per connection.") var inFlight = 64
    @Option(help: "Warm-up seconds (not recorded).") var warmup = 1.0
    @Option(help: "Measured seconds.") var duration = 5.0
    @Option(help: "Request timeout in ms (recorded at this value).") var timeoutMs = 1000
    @Flag(help: "Poisson arrivals instead of a constant rate.") var poisson = false
    @Option(help: "JSON lines file to append the run to.") var out: String?
    @Flag(help: "Exit non-zero if any request failed.") var failOnError = false

    func validate() throws {
        guard rate > 0, rate <= 2_000_000 else { throw ValidationError("--rate must be in (0, 2000000]") }
        guard (1...1024).contains(connections) else { throw ValidationError("--connections must be in 1...1024") }
        guard (1...65536).contains(inFlight) else { throw ValidationError("--in-flight must be in 1...65536") }
        guard duration > 0, warmup >= 0, timeoutMs > 0 else { throw ValidationError("--duration and --timeout-ms must be > 0") }
    }

    func run() throws {
        let target = scenario.target(model: model)
        var c = LoadConfiguration(port: port, rate: rate)
        c.host = host
        c.connections = connections
        c.inFlightPerConnection = inFlight
        c.warmupSeconds = warmup
        c.durationSeconds = duration
        c.timeoutMillis = timeoutMs
        c.poisson = poisson
        let result = try LoadGenerator.run(target, c)
        let record = RunRecord(scenario: scenario.rawValue == "redis-ping" ? "ping" : scenario.rawValue, label: label,
                               requestBytes: target.requestBytes, result: result)
        print(String(format: "%@ %@ %.0f/s x%d: achieved %.0f/s, %d errors, p50 %.1f p90 %.1f p99 %.1f p99.9 %.1f max %.1f µs (service p99 %.1f)",
                     scenario.rawValue, label, rate, connections, record.achievedRate, record.errorCount, record.latency.p50,
                     record.latency.p90, record.latency.p99, record.latency.p999, record.latency.max, record.service.p99))
        if !record.errors.isEmpty { print("  errors: \(record.errors)") }
        if let out {
            let e = JSONEncoder()
            e.outputFormatting = [.sortedKeys]
            var line = try e.encode(record)
            line.append(0x0A)
            if let h = FileHandle(forWritingAtPath: out) {
                h.seekToEndOfFile()
                h.write(line)
                h.closeFile()
            } else {
                try line.write(to: URL(fileURLWithPath: out))
            }
        }
        if failOnError && record.errorCount > 0 { throw ExitCode(1) }
    }
}

struct Render: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Turn a results file into a Markdown table and SVG plots.")
    @Option(help: "JSON lines file written by `run --out`.") var input: String
    @Option(help: "Directory for results.md and the plots.") var dir: String
    @Option(help: "Machine description for the report header.") var machine = ""

    func run() throws {
        let text = try String(contentsOfFile: input, encoding: .utf8)
        let runs = try text.split(separator: "\n").map { try JSONDecoder().decode(RunRecord.self, from: Data($0.utf8)) }
        var md = "# Benchmark results\n\n\(machine)\n\nLatency is measured from each request's scheduled send time (coordinated omission corrected); service time from the actual send. µs.\n\n"
        md += Report.markdownTable(runs)
        for scenario in Set(runs.map(\.scenario)).sorted() {
            let svg = Report.percentileSVG(runs.filter { $0.scenario == scenario }, title: "\(scenario): latency by percentile")
            try svg.write(toFile: "\(dir)/\(scenario).svg", atomically: true, encoding: .utf8)
            md += "\n![\(scenario)](\(scenario).svg)\n"
        }
        try md.write(toFile: "\(dir)/results.md", atomically: true, encoding: .utf8)
        print("wrote \(dir)/results.md")
    }
}
