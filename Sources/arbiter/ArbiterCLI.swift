import ArbiterClient
import ArbiterServer
import ArbiterWire
import ArgumentParser
import Foundation
import NIOCore

@main
struct Arbiter: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "arbiter",
        abstract: "Talk to an arbiterd server: ping it, list models, show a schema, score candidates from JSON.",
        subcommands: [Ping.self, Models.self, Info.self, Score.self, Reload.self, Probe.self, Token.self])
}

struct Connection: ParsableArguments {
    @Option(help: "Server address, HOST:PORT.")
    var host: String = "127.0.0.1:7878"

    @Option(help: "Request timeout in milliseconds.")
    var timeoutMs: Int64 = 5000

    @Flag(help: "Speak TLS, trusting the system's CAs (implied by the other --tls options).")
    var tls = false

    @Option(help: "Speak TLS, trusting this CA (PEM) for the server's certificate.")
    var tlsCa: String?

    @Option(help: "Mutual TLS: this client's certificate chain (PEM); needs --tls-key.")
    var tlsCert: String?

    @Option(help: "The private key (PEM) of --tls-cert.")
    var tlsKey: String?

    @Option(help: "The name the server's certificate must carry (default: the host of --host).")
    var tlsServerName: String?

    @Option(help: "A file holding the access token for HELLO (default: the ARBITER_TOKEN environment variable).")
    var tokenFile: String?

    func validate() throws {
        guard split() != nil else { throw ValidationError("--host must be HOST:PORT, got '\(host)'") }
        guard timeoutMs > 0 else { throw ValidationError("--timeout-ms must be positive") }
        guard (tlsCert == nil) == (tlsKey == nil) else { throw ValidationError("--tls-cert and --tls-key go together") }
    }

    var tlsSettings: ClientTLS? {
        guard tls || tlsCa != nil || tlsCert != nil || tlsServerName != nil else { return nil }
        return ClientTLS(caPath: tlsCa, certificatePath: tlsCert, privateKeyPath: tlsKey, serverName: tlsServerName)
    }

    /// The token from --token-file or ARBITER_TOKEN (never from the command line, where `ps` shows it).
    func token() throws -> String? {
        if let tokenFile {
            guard let text = try? String(contentsOfFile: tokenFile, encoding: .utf8) else {
                throw CLIError("cannot read the token file \(tokenFile)")
            }
            let t = text.trimmingCharacters(in: .whitespacesAndNewlines)
            guard !t.isEmpty, t.utf8.count <= 255 else { throw CLIError("\(tokenFile) must hold one token of 1 to 255 bytes") }
            return t
        }
        if let t = ProcessInfo.processInfo.environment["ARBITER_TOKEN"], !t.isEmpty { return t }
        return nil
    }

    func split() -> (String, Int)? {
        guard let colon = host.lastIndex(of: ":"), let port = Int(host[host.index(after: colon)...]),
              (1...65535).contains(port) else { return nil }
        let h = String(host[..<colon])
        return (h.isEmpty ? "127.0.0.1" : h, port)
    }

    func connect() async throws -> ArbiterClient {
        let (h, p) = split()!
        var c = ClientConfiguration()
        c.requestTimeout = .milliseconds(timeoutMs)
        c.clientName = "arbiter-cli"
        c.tls = tlsSettings
        c.token = try token()
        do {
            return try await ArbiterClient.connect(host: h, port: p, configuration: c)
        } catch ClientError.server(let status, let message) {
            let hint = status == .unauthenticated ? " (give a token with --token-file or ARBITER_TOKEN)" : ""
            throw CLIError("arbiterd at \(host) refused this client: \(status): \(message)\(hint)")
        } catch ClientError.tls(let why) {
            throw CLIError("TLS with \(host) failed: \(why)")
        } catch ClientError.connectionClosed {
            throw CLIError("arbiterd at \(host) closed the connection during HELLO\(c.tls == nil ? " (does it require TLS? try --tls-ca)" : "")")
        } catch {
            throw CLIError("cannot reach arbiterd at \(host): \(error) (is it running? `arbiterd --store DIR`)")
        }
    }
}

struct CLIError: Error, CustomStringConvertible {
    var description: String
    init(_ s: String) { description = s }
}

func printJSON(_ object: Any) throws {
    let data = try JSONSerialization.data(withJSONObject: object, options: [.prettyPrinted, .sortedKeys])
    print(String(decoding: data, as: UTF8.self))
}

struct Ping: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Measure round trips to the server.")
    @OptionGroup var connection: Connection
    @Option(help: "Number of pings.") var count: Int = 3

    func run() async throws {
        let client = try await connection.connect()
        print("connected to \(client.session.serverName), protocol v\(client.session.version)")
        for i in 1...max(1, count) {
            let d: Duration
            do { d = try await client.ping() } catch {
                try? await client.close()
                throw CLIError("\(error)")
            }
            let us = Double(d.components.attoseconds) / 1e12 + Double(d.components.seconds) * 1e6
            print(String(format: "pong %d: %.1f µs", i, us))
        }
        try await client.close()
    }
}

struct Models: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "List the models the server serves, with the versions it has loaded, any split and shadow, and the versions it rejected.")
    @OptionGroup var connection: Connection

    func run() async throws {
        let client = try await connection.connect()
        let list: [ModelSummary], status: [ModelStatus]
        do {
            list = try await client.listModels()
            status = try await client.status()
        } catch {
            try? await client.close()
            throw CLIError("\(error)")
        }
        try await client.close()
        if list.isEmpty { print("no models served") } else {
            print("MODEL                VERSION  KIND          CONTEXT  CANDIDATE")
            for m in list {
                print(m.name.padding(toLength: 20, withPad: " ", startingAt: 0), String(format: "%7llu", m.version), " ",
                      m.kind.padding(toLength: 12, withPad: " ", startingAt: 0), String(format: "%7d  %9d", m.contextFeatureCount, m.candidateFeatureCount))
            }
        }
        for m in status { print(""); print(Self.describe(m)) }
    }

    /// A model's deployment, a few indented lines.
    static func describe(_ m: ModelStatus) -> String {
        var lines = ["\(m.name):"]
        let loaded = m.versions.map { v -> String in
            var roles: [String] = []
            if v.roles.contains(.active) { roles.append("active") }
            if v.roles.contains(.split) { roles.append("split \(percent(Double(v.splitWeight)))") }
            if v.roles.contains(.shadow) { roles.append("shadow") }
            return "v\(v.version) (\(roles.isEmpty ? "retained" : roles.joined(separator: ", ")))"
        }
        lines.append("  loaded: \(loaded.isEmpty ? "none" : loaded.joined(separator: ", "))\(m.latest > 0 ? "; newest in the store v\(m.latest)" : "")")
        if !m.failure.isEmpty { lines.append("  not serving the store's active version: \(m.failure)") }
        if let s = m.shadow {
            lines.append("  shadow: v\(s.version), sampling \(percent(Double(s.sample))) of unpinned requests")
            if s.comparisons.isEmpty { lines.append("    no request compared yet") }
            for c in s.comparisons {
                var parts = ["\(c.requests) requests", "\(c.rows) rows",
                             "mean |Δscore| \(String(format: "%.6g", c.meanAbsDifference))",
                             "max \(String(format: "%.6g", c.maxAbsDifference))"]
                if c.rankedRequests > 0 { parts.append("rank correlation \(String(format: "%.4f", c.meanRankCorrelation))") }
                if c.codeRows > 0 && !c.codeColumn.isEmpty {
                    parts.append("\(c.codeColumn) changed \(percent(Double(c.changedCodes) / Double(c.codeRows))) (\(c.changedCodes) of \(c.codeRows))")
                }
                if c.dropped > 0 { parts.append("\(c.dropped) dropped (queue full)") }
                if c.failed > 0 { parts.append("\(c.failed) the shadow could not score") }
                lines.append("    against v\(c.served): " + parts.joined(separator: ", "))
            }
        }
        for r in m.rejected { lines.append("  rejected v\(r.version): \(r.reason)") }
        return lines.joined(separator: "\n")
    }

    static func percent(_ x: Double) -> String {
        let p = x * 100
        return p == p.rounded() ? "\(Int(p))%" : String(format: "%.2f%%", p)
    }
}

struct Reload: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Make the server check the store now (instead of at its next poll) and print what it loaded or rejected.",
        discussion: "Taken from loopback only unless arbiterd runs with --remote-admin; with tokens, the token needs the admin right.")
    @OptionGroup var connection: Connection

    func run() async throws {
        let client = try await connection.connect()
        let report: ReloadReport
        do { report = try await client.reload() } catch {
            try? await client.close()
            throw CLIError("\(error)")
        }
        try await client.close()
        print("store generation \(report.generation)")
        if report.events.isEmpty { print("nothing changed") }
        for e in report.events {
            let what = switch e.outcome {
            case .loaded: "loaded"
            case .rejected: "REJECTED"
            case .unloaded: "unloaded"
            }
            print("\(e.model) v\(e.version): \(what) (\(e.detail))")
        }
    }
}

struct Info: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Show a model's feature schema and output columns (JSON).")
    @OptionGroup var connection: Connection
    @Option(help: "Model name.") var model: String
    @Option(help: "Version (default: the active one).") var version: UInt64 = 0

    func run() async throws {
        let client = try await connection.connect()
        let s: ModelSchema
        do { s = try await client.modelInfo(model, version: version) } catch {
            try? await client.close()
            throw CLIError("\(error)")
        }
        try await client.close()
        func feature(_ f: FeatureSpec) -> [String: Any] {
            var d: [String: Any] = ["name": f.name, "type": f.kind == .categorical ? "categorical" : "numeric"]
            if f.kind == .categorical { d["cardinality"] = f.cardinality }
            if f.allowsMissing { d["missing_allowed"] = true }
            return d
        }
        try printJSON([
            "model": s.model, "kind": s.kind, "version": s.version, "created_unix_ms": s.createdUnixMillis,
            "context": s.contextFeatures.map(feature), "candidate": s.candidateFeatures.map(feature),
            "outputs": s.outputs.map { c -> [String: Any] in
                var d: [String: Any] = ["name": c.name, "type": c.kind == .code ? "code" : "float32"]
                if !c.labels.isEmpty { d["labels"] = c.labels }
                return d
            },
        ])
    }
}

struct Score: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Score candidates from a JSON file, or many requests from a JSON Lines or CSV file (or - for standard input).",
        discussion: """
        Input: {"context": {"job_category": 3, "job_salary": 4200},
                "candidates": [{"id": 1, "features": {"channel": 1, "city": 4, ...}}, ...],
                "top_k": 0, "version": 0, "routing_key": 0}
        A model that needs a subject (kind ranking: the user) takes "subject": <user id> as well.
        Features may also be arrays in the schema's order (see `arbiter info`). null is a missing value, for
        features that accept one (`arbiter info` shows "missing_allowed"). Every candidate needs an "id".

        One such object prints one pretty JSON answer. A file of one object per line (JSON Lines) is scored as a
        batch: every line is checked first (a bad one is named and nothing is sent), the requests are pipelined
        over --connections connections with at most --in-flight each waiting, and the answers are written as
        JSON Lines in the input's order (to --output, or standard output), a request the server refused as
        {"line": N, "error": "..."}.

        A CSV (--format csv, or a file named *.csv) has a header naming its columns: the model's features by
        name, an id column (--id-column), and with --group-by a column whose consecutive equal values make one
        request (their context from the first of those rows; every row one candidate). Without --group-by every
        row is a request of one candidate. Other columns are ignored. An empty cell, NA, NaN or null is a missing
        value. The file is read as it is scored (memory stays bounded whatever its size): a bad row stops the
        batch there, naming it, after the answers before it are written. Answers are CSV (one line per
        candidate: the group, id, score, the model's columns, version) or, with --output-format jsonl, JSON
        Lines; a group the server refused is named on standard error and the exit status is 1.

        Batches show progress on a terminal and report their throughput at the end.
        """)
    @OptionGroup var connection: Connection
    @Option(help: "Model name.") var model: String
    @Option(help: "Input: a JSON object, JSON Lines (one request object per line) or CSV; - for standard input.") var input: String
    @Option(help: "Input format: auto (CSV for *.csv, else JSON or JSON Lines), json, jsonl or csv.") var format: InputFormat = .auto
    @Option(help: "Batches: write the answers here instead of standard output.") var output: String?
    @Option(help: "Batches: answers as csv or jsonl (default: csv for CSV input, jsonl for JSON Lines).") var outputFormat: OutputFormat?
    @Option(help: "CSV: the column whose consecutive equal values make one request (e.g. a job posting's id).") var groupBy: String?
    @Option(help: "CSV: the column holding each candidate's id.") var idColumn: String = "id"
    @Option(help: "CSV: return only the best K candidates of each request, best first (0 = all, in input order).") var topK: UInt32 = 0
    @Option(help: "CSV: score with this version instead of the active one (it must be loaded).") var modelVersion: UInt64 = 0
    @Option(help: "Batches: connections to score over.") var connections: Int = 2
    @Option(help: "Batches: requests waiting for their answers per connection.") var inFlight: Int = 32

    enum InputFormat: String, ExpressibleByArgument, CaseIterable { case auto, json, jsonl, csv }
    enum OutputFormat: String, ExpressibleByArgument, CaseIterable { case jsonl, csv }

    func validate() throws {
        guard (1...64).contains(connections) else { throw ValidationError("--connections must be in 1...64") }
        guard (1...1024).contains(inFlight) else { throw ValidationError("--in-flight must be in 1...1024") }
        let csv = format == .csv || (format == .auto && input.lowercased().hasSuffix(".csv"))
        if !csv {
            for (flag, set) in [("--group-by", groupBy != nil), ("--id-column", idColumn != "id"), ("--top-k", topK != 0), ("--model-version", modelVersion != 0)] where set {
                throw ValidationError("\(flag) applies to CSV input (--format csv or a *.csv file); JSON requests carry it in each object")
            }
            if outputFormat == .csv { throw ValidationError("--output-format csv needs CSV input") }
        }
    }

    func run() async throws {
        if format == .csv || (format == .auto && input.lowercased().hasSuffix(".csv")) {
            return try await scoreCSV()
        }
        let data: Data
        do {
            data = input == "-" ? FileHandle.standardInput.readDataToEndOfFile() : try Data(contentsOf: URL(fileURLWithPath: input))
        } catch {
            throw CLIError("cannot read \(input): \(error.localizedDescription)")
        }
        if format != .jsonl, let json = try? JSONSerialization.jsonObject(with: data) as? [String: Any] {
            return try await scoreOne(json)
        }
        if format == .json { throw CLIError("\(input) is not a JSON object") }
        let lines = data.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false)
        let objects = lines.enumerated().filter { !$0.element.allSatisfy { $0 == 0x20 || $0 == 0x09 || $0 == 0x0D } }
        guard objects.count > 1 || (objects.count == 1 && (lines.count > 1 || format == .jsonl)) else {
            throw CLIError("\(input) is neither a JSON object nor JSON Lines (one request object per line)")
        }
        var parsed: [(line: Int, json: [String: Any])] = []
        for (i, bytes) in objects {
            guard let json = try? JSONSerialization.jsonObject(with: Data(bytes)) as? [String: Any] else {
                throw CLIError("line \(i + 1) of \(input) is not a JSON object")
            }
            parsed.append((i + 1, json))
        }
        try await withClients { clients in try await scoreLines(parsed, over: clients) }
    }

    func scoreOne(_ json: [String: Any]) async throws {
        let client = try await connection.connect()
        do {
            let schema = try await client.modelInfo(model)
            let request = try ScoreInput.parse(json, model: model, schema: schema)
            let result = try await client.score(request, deadline: .milliseconds(connection.timeoutMs))
            try await client.close()
            try printJSON(ScoreInput.render(result, model: model))
        } catch {
            try? await client.close()
            if let e = error as? CLIError { throw e }
            throw CLIError("\(error)")
        }
    }

    /// Runs `body` over `--connections` connections, closing them afterwards.
    func withClients(_ body: ([ArbiterClient]) async throws -> Void) async throws {
        var clients: [ArbiterClient] = []
        do {
            for _ in 0..<connections { clients.append(try await connection.connect()) }
            try await body(clients)
        } catch {
            for c in clients { try? await c.close() }
            if error is CLIError || error is ExitCode { throw error }
            throw CLIError("\(error)")
        }
        for c in clients { try? await c.close() }
    }

    func scoreLines(_ parsed: [(line: Int, json: [String: Any])], over clients: [ArbiterClient]) async throws {
        let schema = try await clients[0].modelInfo(model)
        // Every line is checked before anything is sent.
        var items: [BatchItem] = []
        items.reserveCapacity(parsed.count)
        for (line, json) in parsed {
            do {
                items.append(BatchItem(request: try ScoreInput.parse(json, model: model, schema: schema), key: nil, firstLine: line, lastLine: line))
            } catch {
                throw CLIError("line \(line): \(error)")
            }
        }
        var i = 0
        let model = self.model
        try await pipeline(over: clients, header: nil, next: {
            defer { i += 1 }
            return i < items.count ? items[i] : nil
        }, render: { _, r in ScoreInput.jsonLine(r, model: model) + "\n" },
           refuse: { item, error in ((try? ScoreInput.line(["line": item.firstLine, "error": "\(error)"])) ?? "") + "\n" })
    }

    func scoreCSV() async throws {
        let handle: FileHandle
        if input == "-" {
            handle = FileHandle.standardInput
        } else {
            guard let h = FileHandle(forReadingAtPath: input) else { throw CLIError("cannot read \(input): no such file, or not readable") }
            handle = h
        }
        defer { if input != "-" { try? handle.close() } }
        try await withClients { clients in
            let schema = try await clients[0].modelInfo(model, version: modelVersion)
            let rows = try CSVRequests(reader: CSVReader(handle: handle, source: input == "-" ? "standard input" : input), model: model,
                                       schema: schema, groupBy: groupBy, idColumn: idColumn, topK: topK, version: modelVersion,
                                       maxCandidates: Int(clients[0].session.limits.maxCandidates))
            if !rows.ignored.isEmpty {
                FileHandle.standardError.write(Data("ignoring column\(rows.ignored.count == 1 ? "" : "s") \(rows.ignored.joined(separator: ", ")) (not features of \(model))\n".utf8))
            }
            let model = self.model, group = groupBy
            let csv = (outputFormat ?? .csv) == .csv
            try await pipeline(over: clients, header: csv ? rows.answerHeader() : nil, next: {
                try rows.next().map { BatchItem(request: $0.request, key: $0.key, firstLine: $0.firstLine, lastLine: $0.lastLine) }
            }, render: { item, r in
                if csv { return CSVRequests.answerRows(r, key: group == nil ? nil : item.key) }
                var line = ScoreInput.jsonLine(r, model: model)
                if let group {
                    var prefix = "{"
                    ScoreInput.appendString(group, to: &prefix)
                    prefix += ":"
                    ScoreInput.appendString(item.key ?? "", to: &prefix)
                    line = prefix + "," + line.dropFirst()
                }
                return line + "\n"
            }, refuse: { item, error in
                let lines = item.firstLine == item.lastLine ? "line \(item.firstLine)" : "lines \(item.firstLine)-\(item.lastLine)"
                let what = group.map { "\(lines) (\($0) \(item.key ?? ""))" } ?? lines
                if csv {
                    FileHandle.standardError.write(Data("\(what): refused: \(error)\n".utf8))
                    return ""
                }
                return ((try? ScoreInput.line(["lines": [item.firstLine, item.lastLine], "error": "\(error)"])) ?? "") + "\n"
            })
        }
    }

    /// One request of a batch, and where it came from.
    struct BatchItem: Sendable {
        let request: ScoreRequest
        let key: String?
        let firstLine: Int
        let lastLine: Int
    }

    /// Pipelines `next()`'s requests over `clients` (at most `--in-flight` waiting on each) and writes each
    /// answer's text in the order the requests came, as soon as those before it are in. An error from `next`
    /// (a bad row) stops the batch: the requests already sent are answered and written, then it is thrown.
    func pipeline(over clients: [ArbiterClient], header: String?, next: () throws -> BatchItem?,
                  render: @escaping @Sendable (BatchItem, ScoreResult) -> String,
                  refuse: @escaping @Sendable (BatchItem, any Error) -> String) async throws {
        let out: FileHandle
        if let output {
            guard FileManager.default.createFile(atPath: output, contents: nil), let h = FileHandle(forWritingAtPath: output) else {
                throw CLIError("cannot write \(output)")
            }
            out = h
        } else {
            out = FileHandle.standardOutput
        }
        defer { if output != nil { try? out.close() } }
        let deadline = TimeAmount.milliseconds(connection.timeoutMs)
        let tty = isatty(STDERR_FILENO) == 1
        let clock = ContinuousClock(), start = clock.now
        // Answers not yet written, by sequence number (at most the window's worth).
        var answers: [Int: String] = [:]
        var sent = 0, written = 0, failed = 0, candidates = 0
        var stopped: (any Error)?
        var pending = Data(header.map { Array($0.utf8) } ?? [])
        var lastProgress = start
        let window = connections * inFlight
        try await withThrowingTaskGroup(of: (Int, String, Bool).self) { group in
            /// Sends the next request, if any; false at the end (or after a bad row).
            func add() -> Bool {
                guard stopped == nil else { return false }
                let item: BatchItem
                do {
                    guard let i = try next() else { return false }
                    item = i
                } catch {
                    stopped = error
                    return false
                }
                let seq = sent, client = clients[seq % clients.count]
                sent += 1
                candidates += item.request.candidateIDs.count
                group.addTask {
                    do {
                        return (seq, render(item, try await client.score(item.request, deadline: deadline)), true)
                    } catch {
                        return (seq, refuse(item, error), false)
                    }
                }
                return true
            }
            while sent < window, add() {}
            while let (seq, text, ok) = try await group.next() {
                answers[seq] = text
                if !ok { failed += 1 }
                _ = add()
                while let a = answers.removeValue(forKey: written) {
                    pending.append(contentsOf: a.utf8)
                    written += 1
                }
                if pending.count >= 1 << 16 {
                    out.write(pending)
                    pending.removeAll(keepingCapacity: true)
                }
                if tty && clock.now - lastProgress > .milliseconds(500) {
                    lastProgress = clock.now
                    FileHandle.standardError.write(Data("\r\(written) requests scored".utf8))
                }
            }
        }
        out.write(pending)
        let elapsed = clock.now - start
        let seconds = Double(elapsed.components.attoseconds) / 1e18 + Double(elapsed.components.seconds)
        if tty { FileHandle.standardError.write(Data("\r".utf8)) }
        FileHandle.standardError.write(Data(String(format: "scored %d requests (%d candidates) in %.2f s: %.0f requests/s, %.0f candidates/s over %d connection(s)%@\n",
                                                   sent, candidates, seconds, Double(sent) / max(seconds, 1e-9),
                                                   Double(candidates) / max(seconds, 1e-9), connections,
                                                   failed > 0 ? "; \(failed) refused (\(output == nil && header != nil ? "named above" : "their lines say why"))" : "").utf8))
        if let stopped { throw stopped }
        if failed > 0 { throw ExitCode(1) }
    }
}

/// JSON ⇄ SCORE / RESULT for people and scripts.
enum ScoreInput {
    static func parse(_ json: [String: Any], model: String, schema: ModelSchema) throws -> ScoreRequest {
        let ctx = try vector(json["context"] ?? [String: Any](), features: schema.contextFeatures, what: "context")
        guard let cands = json["candidates"] as? [Any] else { throw CLIError("input needs \"candidates\": an array") }
        var ids: [UInt64] = []
        var matrix: [Float] = []
        for (i, c) in cands.enumerated() {
            guard let obj = c as? [String: Any] else { throw CLIError("candidate \(i) is not an object") }
            // An id is what the answer's rows are matched by: one made up here would let a caller mistake rows.
            guard let id = obj["id"] else { throw CLIError("candidate \(i) has no \"id\" (a non-negative integer naming it in the answer)") }
            guard let n = id as? NSNumber, n.int64Value >= 0, n.doubleValue == n.doubleValue.rounded() else {
                throw CLIError("candidate \(i): \"id\" must be a non-negative integer, got \(id)")
            }
            ids.append(n.uint64Value)
            matrix += try vector(obj["features"] ?? [String: Any](), features: schema.candidateFeatures, what: "candidate \(i)")
        }
        func uint(_ key: String) throws -> UInt64 {
            guard let v = json[key] else { return 0 }
            guard let n = v as? NSNumber, n.int64Value >= 0 else { throw CLIError("\"\(key)\" must be a non-negative integer") }
            return n.uint64Value
        }
        return ScoreRequest(model: model, version: try uint("version"), routingKey: try uint("routing_key"),
                            topK: UInt32(clamping: try uint("top_k")), subject: json["subject"] == nil ? nil : try uint("subject"),
                            context: ctx, candidateIDs: ids,
                            candidateFeatureCount: schema.candidateFeatures.count, candidateFeatures: matrix)
    }

    /// The features' values from a JSON array (in schema order) or object (by name). `null` is a missing
    /// value, sent as NaN, for the features whose schema accepts missing values.
    static func vector(_ value: Any, features: [FeatureSpec], what: String) throws -> [Float] {
        let names = features.map(\.name)
        func number(_ v: Any, _ f: FeatureSpec, _ label: String) throws -> Float {
            if v is NSNull {
                guard f.allowsMissing else { throw CLIError("\(what): \(label) is null, but '\(f.name)' does not accept missing values") }
                return .nan
            }
            guard let n = v as? NSNumber else { throw CLIError("\(what): \(label) is not a number (or null for a missing value)") }
            return n.floatValue
        }
        if let arr = value as? [Any] {
            guard arr.count == names.count else { throw CLIError("\(what): \(arr.count) values, the model takes \(names.count): \(names.joined(separator: ", "))") }
            return try arr.enumerated().map { i, v in try number(v, features[i], "value \(i)") }
        }
        guard let obj = value as? [String: Any] else { throw CLIError("\(what) must be an object or an array") }
        if let extra = obj.keys.first(where: { !names.contains($0) }) {
            throw CLIError("\(what): unknown feature '\(extra)'; the model takes \(names.joined(separator: ", "))")
        }
        return try features.map { f in
            guard let v = obj[f.name] else {
                throw CLIError("\(what): missing feature '\(f.name)'\(f.allowsMissing ? " (write null for a missing value)" : "")")
            }
            return try number(v, f, "'\(f.name)'")
        }
    }

    /// `render(r)` as one JSON Lines line, written directly (keys sorted, as `line` sorts them): Foundation's
    /// serializer, with its dynamic casts and locale-aware key sort, took most of a batch's time.
    static func jsonLine(_ r: ScoreResult, model: String) -> String {
        var out = "{\"compute_us\":\(r.computeMicros),\"model\":"
        appendString(model, to: &out)
        out += ",\"queue_us\":\(r.queueMicros),\"rows\":["
        // Each row's keys in byte order: the columns, "id" and "score".
        enum Field { case id, score, column(Int) }
        let fields = ([("id", Field.id), ("score", Field.score)] + r.columns.indices.map { (r.columns[$0].name, Field.column($0)) })
            .sorted { Array($0.0.utf8).lexicographicallyPrecedes(Array($1.0.utf8)) }
        for i in r.ids.indices {
            out += i == 0 ? "{" : ",{"
            for (k, (name, field)) in fields.enumerated() {
                if k > 0 { out += "," }
                appendString(name, to: &out)
                out += ":"
                switch field {
                case .id: out += String(r.ids[i])
                case .score: appendNumber(Double(r.scores[i]), to: &out)
                case .column(let c):
                    switch r.columns[c].values {
                    case .float32(let v): appendNumber(Double(v[i]), to: &out)
                    case .code:
                        if let label = r.columns[c].label(at: i) { appendString(label, to: &out) } else { out += "null" }
                    }
                }
            }
            out += "}"
        }
        out += "],\"sorted\":\(r.sorted),\"version\":\(r.version)}"
        return out
    }

    static func appendNumber(_ x: Double, to out: inout String) {
        out += x.isFinite ? (x == x.rounded() && abs(x) < 1e15 ? String(Int64(x)) : x.description) : "null"
    }

    static func appendString(_ s: String, to out: inout String) {
        out += "\""
        for u in s.unicodeScalars {
            switch u {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case _ where u.value < 0x20: out += String(format: "\\u%04x", u.value)
            default: out.unicodeScalars.append(u)
            }
        }
        out += "\""
    }

    /// One JSON Lines line.
    static func line(_ object: [String: Any]) throws -> String {
        String(decoding: try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys]), as: UTF8.self)
    }

    static func render(_ r: ScoreResult, model: String) -> [String: Any] {
        var rows: [[String: Any]] = []
        for i in r.ids.indices {
            var row: [String: Any] = ["id": r.ids[i], "score": Double(r.scores[i])]
            for c in r.columns {
                switch c.values {
                case .float32(let v): row[c.name] = Double(v[i])
                case .code: row[c.name] = c.label(at: i) ?? NSNull()
                }
            }
            rows.append(row)
        }
        return ["model": model, "version": r.version, "queue_us": r.queueMicros, "compute_us": r.computeMicros,
                "sorted": r.sorted, "rows": rows]
    }
}

struct Token: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Make an access token and its line for arbiterd's token file (--tokens).",
        discussion: """
        Prints the token on the first line (give it to the client: `--token-file` or ARBITER_TOKEN) and the line \
        for the token file on the second; only the line's hash is kept by the server. With --append-to, the line \
        is appended to that file and only the token is printed. Send arbiterd SIGHUP to read the file again.
        """)

    @Option(help: "What the token allows, comma-separated: score, info (list models, schemas), admin (everything).")
    var rights: String

    @Option(help: "The token's name in the server's logs (letters, digits, '.', '_', '-').")
    var name: String

    @Option(help: "Append the line to this token file (created if missing) instead of printing it.")
    var appendTo: String?

    func run() throws {
        let made = TokenTable.newToken()
        let line = "\(made.hashHex) \(rights) \(name)"
        // The server's own parser checks the line, so what is written is what it will read.
        do {
            _ = try TokenTable(text: line, source: "the new line")
        } catch {
            throw CLIError("\(error)")
        }
        if let appendTo {
            if FileManager.default.fileExists(atPath: appendTo) {
                let existing = (try? String(contentsOfFile: appendTo, encoding: .utf8)) ?? ""
                do {
                    _ = try TokenTable(text: existing + "\n" + line, source: appendTo)
                } catch {
                    throw CLIError("not appended: \(error)")
                }
                guard let h = FileHandle(forWritingAtPath: appendTo) else { throw CLIError("cannot write \(appendTo)") }
                h.seekToEndOfFile()
                h.write(Data((((existing.isEmpty || existing.hasSuffix("\n")) ? "" : "\n") + line + "\n").utf8))
                h.closeFile()
            } else {
                guard FileManager.default.createFile(atPath: appendTo, contents: Data((line + "\n").utf8),
                                                     attributes: [.posixPermissions: 0o600]) else {
                    throw CLIError("cannot create \(appendTo)")
                }
            }
            print(made.token)
        } else {
            print(made.token)
            print(line)
        }
    }
}
