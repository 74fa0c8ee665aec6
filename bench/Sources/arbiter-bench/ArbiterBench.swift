import ArgumentParser
import BenchCore
import Foundation

@main
struct ArbiterBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "arbiter-bench",
        abstract: "Open-loop load generator for Arbiter and its peers; writes JSON, Markdown and SVG results.",
        discussion: "Scenarios: " + Scenario.all.map { "\($0.name) (\($0.about))" }.joined(separator: "; ") + ".",
        subcommands: [Run.self, Sweep.self, Render.self, GRPCMessage.self])
}

extension WireProtocol: ExpressibleByArgument {}

/// What every load-driving command shares.
struct TargetOptions: ParsableArguments {
    @Option(help: "Scenario: \(Scenario.all.map(\.name).joined(separator: ", ")).") var scenario: String
    @Option(name: .customLong("protocol"), help: "How to speak to the server: arbiter (arbiterd, c-floor), grpc (gRPC peers), resp (Redis).")
    var wire: WireProtocol = .arbiter
    @Option(help: "Label of the server in reports (arbiterd, c-floor, redis, grpc-swift, ...).") var label: String
    @Option(help: "Server host (IPv4).") var host = "127.0.0.1"
    @Option(help: "Server port.") var port: Int = 7878
    @Option(help: "Model for SCORE scenarios.") var model = "leads"
    @Option(help: "Connections.") var connections = 1
    @Option(help: "Most requests outstanding per connection.") var inFlight = 64
    @Option(help: "Request timeout in ms (a request unanswered by then is recorded at this value).") var timeoutMs = 1000
    @Option(help: "JSON lines file to append runs to.") var out: String?
    @Option(help: "Speak TLS (arbiter protocol), trusting this CA (PEM) for the server's certificate.") var tlsCa: String?
    @Option(help: "Mutual TLS: the client certificate (PEM); needs --tls-key.") var tlsCert: String?
    @Option(help: "The private key (PEM) of --tls-cert.") var tlsKey: String?
    @Option(help: "A file holding the access token for HELLO (arbiter protocol).") var tokenFile: String?

    func validate() throws {
        guard Scenario.named(scenario) != nil else {
            throw ValidationError("unknown scenario '\(scenario)'; known: \(Scenario.all.map(\.name).joined(separator: ", "))")
        }
        guard (1...65535).contains(port) else { throw ValidationError("--port must be in 1...65535") }
        guard (1...1024).contains(connections) else { throw ValidationError("--connections must be in 1...1024") }
        guard (1...65536).contains(inFlight) else { throw ValidationError("--in-flight must be in 1...65536") }
        guard (1...600_000).contains(timeoutMs) else { throw ValidationError("--timeout-ms must be in 1...600000") }
        guard !label.isEmpty, !label.contains("|") else { throw ValidationError("--label must be non-empty, without '|'") }
        guard (tlsCert == nil) == (tlsKey == nil) else { throw ValidationError("--tls-cert and --tls-key go together") }
        guard tlsCert == nil || tlsCa != nil else { throw ValidationError("--tls-cert needs --tls-ca") }
        guard wire == .arbiter || (tlsCa == nil && tokenFile == nil) else {
            throw ValidationError("--tls-ca and --token-file are for the arbiter protocol")
        }
    }

    func target() throws -> any Target {
        var token: String?
        if let tokenFile {
            guard let text = try? String(contentsOfFile: tokenFile, encoding: .utf8) else { throw BenchError("cannot read \(tokenFile)") }
            token = text.trimmingCharacters(in: .whitespacesAndNewlines)
        }
        return try Scenario.named(scenario)!.target(wire, model: model, host: host, port: port, token: token)
    }

    func configuration(rate: Double, warmup: Double, duration: Double, poisson: Bool, saturate: Bool = false) -> LoadConfiguration {
        var c = LoadConfiguration(port: port, rate: rate)
        c.host = host
        c.connections = connections
        c.inFlightPerConnection = inFlight
        c.warmupSeconds = warmup
        c.durationSeconds = duration
        c.timeoutMillis = timeoutMs
        c.poisson = poisson
        c.saturate = saturate
        c.tls = tlsCa.map { BenchTLS(caPath: $0, certificatePath: tlsCert, privateKeyPath: tlsKey) }
        return c
    }

    /// Runs once, prints a line, appends the record to `--out`.
    func measure(_ target: any Target, kind: String, repeatIndex: Int, _ c: LoadConfiguration, trace: String? = nil) throws -> RunRecord {
        var c = c
        c.keepTrace = trace != nil
        let result = try LoadGenerator.run(target, c)
        if let trace, let entries = result.trace {
            var text = "scheduled_ns,answered_ns,version,failed\n"
            text.reserveCapacity(entries.count * 48)
            for e in entries { text += "\(e.scheduled),\(e.answered),\(e.version),\(e.failed ? 1 : 0)\n" }
            try text.write(toFile: trace, atomically: true, encoding: .utf8)
        }
        let record = RunRecord(kind: kind, repeatIndex: repeatIndex, wire: wire.rawValue, scenario: scenario, label: label,
                               requestBytes: target.requestBytes, result: result)
        let l = record.latency
        print(String(format: "%@ %@ %@ %.0f/s x%d: achieved %.0f/s, %d errors; latency p50 %.1f p90 %.1f p99 %.1f p99.9 %.1f max %.1f µs; service p50 %.1f p99 %.1f",
                     kind, scenario, label, c.rate, c.connections, record.achievedRate, record.errorCount,
                     l.p50, l.p90, l.p99, l.p999, l.max, record.service.p50, record.service.p99))
        if let q = record.serverQueue, let k = record.serverCompute {
            print(String(format: "  server-reported: queue p50 %.0f p99 %.0f µs, compute p50 %.0f p99 %.0f µs", q.p50, q.p99, k.p50, k.p99))
        }
        if !record.errors.isEmpty {
            print("  errors: \(record.errors.sorted { $0.key < $1.key })")
            if let a = record.accepted {
                print(String(format: "  answered with a result: latency p50 %.1f p99 %.1f p99.9 %.1f max %.1f µs", a.p50, a.p99, a.p999, a.max))
                if let s = record.acceptedService {
                    print(String(format: "  answered with a result, from the actual send: p50 %.1f p99 %.1f p99.9 %.1f µs", s.p50, s.p99, s.p999))
                }
            }
        }
        if let out { try append(record, to: out) }
        return record
    }

    func append(_ record: RunRecord, to path: String) throws {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys]
        var line = try e.encode(record)
        line.append(0x0A)
        if let h = FileHandle(forWritingAtPath: path) {
            h.seekToEndOfFile()
            h.write(line)
            h.closeFile()
        } else {
            try line.write(to: URL(fileURLWithPath: path))
        }
    }
}

struct Run: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Drive one server at a fixed offered rate.")
    @OptionGroup var target: TargetOptions
    @Option(help: "Offered requests per second, over all connections.") var rate: Double
    @Option(help: "Warm-up seconds (not recorded).") var warmup = 1.0
    @Option(help: "Measured seconds.") var duration = 5.0
    @Option(help: "Runs of the same configuration (each recorded; reports take medians).") var repeats = 1
    @Flag(help: "Poisson arrivals instead of a constant rate.") var poisson = false
    @Flag(help: "Measure capacity: send whenever a connection has a free in-flight slot (--rate then caps the requests prepared per second).") var saturation = false
    @Flag(help: "Exit non-zero if any request failed or timed out.") var failOnError = false
    @Option(help: "Write every request's schedule, answer time (CLOCK_MONOTONIC ns) and serving version to this CSV (one repeat).") var trace: String?

    func validate() throws {
        guard trace == nil || repeats == 1 else { throw ValidationError("--trace takes one repeat") }
        guard rate > 0, rate <= 5_000_000 else { throw ValidationError("--rate must be in (0, 5000000]") }
        guard duration > 0, duration <= 3600, warmup >= 0, warmup <= 600 else {
            throw ValidationError("--duration must be in (0, 3600] and --warmup in [0, 600]")
        }
        guard (1...100).contains(repeats) else { throw ValidationError("--repeats must be in 1...100") }
    }

    func run() throws {
        let t = try target.target()
        var failed = 0
        for i in 0..<repeats {
            let r = try target.measure(t, kind: saturation ? "saturation" : "run", repeatIndex: i,
                                       target.configuration(rate: rate, warmup: warmup, duration: duration, poisson: poisson, saturate: saturation),
                                       trace: trace)
            failed += r.errorCount
        }
        if failOnError && failed > 0 {
            print("FAIL: \(failed) request(s) failed or timed out")
            throw ExitCode(1)
        }
    }
}

struct Sweep: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Find the saturation rate, then offer 10% to 120% of it: the latency–throughput curve.")
    @OptionGroup var target: TargetOptions
    @Option(help: "Saturation rate to sweep under; measured first when omitted.") var saturationRate: Double?
    @Option(help: "Offered rates, in percent of saturation.") var percents = "10,20,30,40,50,60,70,80,90,100,110,120"
    @Option(help: "Warm-up seconds per step.") var warmup = 1.0
    @Option(help: "Measured seconds per step.") var duration = 3.0

    func run() throws {
        let steps = percents.split(separator: ",").compactMap { Double($0.trimmingCharacters(in: .whitespaces)) }
        guard !steps.isEmpty, steps.allSatisfy({ $0 > 0 && $0 <= 1000 }) else {
            throw ValidationError("--percents must be a comma-separated list of numbers in (0, 1000]")
        }
        let t = try target.target()
        var saturation = saturationRate ?? 0
        if saturation <= 0 {
            // Send whenever a connection has a free slot: the achieved rate is the capacity.
            let r = try target.measure(t, kind: "saturation", repeatIndex: 0,
                                       target.configuration(rate: 1_000_000, warmup: warmup, duration: duration, poisson: false, saturate: true))
            saturation = r.achievedRate
        }
        guard saturation > 0 else { throw ValidationError("the saturation rate came out as 0: is the server up?") }
        for p in steps {
            _ = try target.measure(t, kind: "sweep", repeatIndex: 0,
                                   target.configuration(rate: saturation * p / 100, warmup: warmup, duration: duration, poisson: false))
        }
    }
}

/// Writes a scenario's gRPC request, so that another client (bench/python/grpcio_load.py) sends the very
/// bytes the harness sends.
struct GRPCMessage: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "grpc-message",
        abstract: "Write a scenario's serialized gRPC request to a file and print its method path.")
    @Option(help: "Scenario: \(Scenario.all.map(\.name).joined(separator: ", ")).") var scenario: String
    @Option(help: "Model for SCORE scenarios.") var model = "leads"
    @Option(help: "File to write the serialized request message to.") var out: String

    func run() throws {
        guard let s = Scenario.named(scenario) else {
            throw ValidationError("unknown scenario '\(scenario)'; known: \(Scenario.all.map(\.name).joined(separator: ", "))")
        }
        guard let grpc = s.grpc else { throw ValidationError("scenario \(scenario) has no gRPC form") }
        let (path, message) = grpc(model)
        guard FileManager.default.createFile(atPath: out, contents: Data(message)) else {
            throw ValidationError("cannot write \(out)")
        }
        print(path)
    }
}

struct Render: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Turn a results file into a Markdown report and SVG plots.")
    @Option(help: "JSON lines file written by `run --out` / `sweep --out`.") var input: String
    @Option(help: "Directory for the report and the plots.") var dir: String
    @Option(help: "Report file name inside --dir.") var report = "results.md"
    @Option(help: "A Markdown file describing the machine and build, put at the top of the report.") var machine: String?
    @Option(help: "Latency SLO for sweeps: the highest rate whose p99 stays within it, µs.") var sloP99Us = 1000.0

    func run() throws {
        let text = try String(contentsOfFile: input, encoding: .utf8)
        var runs: [RunRecord] = []
        for (i, line) in text.split(separator: "\n").enumerated() where !line.isEmpty {
            do { runs.append(try JSONDecoder().decode(RunRecord.self, from: Data(line.utf8))) } catch {
                throw ValidationError("\(input) line \(i + 1) is not a run record: \(error)")
            }
        }
        guard !runs.isEmpty else { throw ValidationError("\(input) holds no runs") }
        let base = URL(fileURLWithPath: input).deletingPathExtension().lastPathComponent
        var md = "# Benchmark results: \(base)\n\n"
        if let machine { md += try String(contentsOfFile: machine, encoding: .utf8) + "\n" }
        md += "Latency is measured from each request's scheduled send time (coordinated omission corrected); "
        md += "service time from the actual send. Figures in µs; each is the median of its repeats. "
        md += "Ratios to the floor divide by the C echo floor's figure at the same scenario, rate and connections.\n\n"
        md += Report.markdownTable(runs)
        let peers = Report.peerTable(runs)
        if !peers.isEmpty { md += "\n## Peers against Arbiter\n\n" + peers }
        let sat = Report.saturationTable(runs)
        if !sat.isEmpty { md += "\n## Saturation (offered load far above capacity)\n\n" + sat }
        let sweeps = Report.sweepTable(runs, sloMicros: sloP99Us)
        if !sweeps.isEmpty { md += "\n## Sweeps\n\n" + sweeps }
        md += "\n## Plots\n"
        let groups = Report.groups(runs)
        var plotKeys: [String] = []
        for g in groups {
            let key = "\(g.first.scenario)-\(Int(g.first.rate))-c\(g.first.connections)"
            if !plotKeys.contains(key) { plotKeys.append(key) }
        }
        for key in plotKeys {
            let reps = groups.filter { "\($0.first.scenario)-\(Int($0.first.rate))-c\($0.first.connections)" == key }.map(\.representative)
            let file = "\(base)-\(key).svg"
            let title = "\(reps[0].scenario) at \(Int(reps[0].rate))/s, \(reps[0].connections) conn: latency by percentile"
            try Report.percentileSVG(reps, title: title).write(toFile: "\(dir)/\(file)", atomically: true, encoding: .utf8)
            md += "\n![\(key)](\(file))\n"
        }
        for scenario in Set(runs.filter { $0.kind == "sweep" }.map(\.scenario)).sorted() {
            let file = "\(base)-sweep-\(scenario).svg"
            try Report.sweepSVG(runs.filter { $0.scenario == scenario }, title: "\(scenario): latency against throughput")
                .write(toFile: "\(dir)/\(file)", atomically: true, encoding: .utf8)
            md += "\n![sweep \(scenario)](\(file))\n"
        }
        try md.write(toFile: "\(dir)/\(report)", atomically: true, encoding: .utf8)
        print("wrote \(dir)/\(report)")
    }
}
