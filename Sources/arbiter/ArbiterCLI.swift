import ArbiterClient
import ArbiterWire
import ArgumentParser
import Foundation
import NIOCore

@main
struct Arbiter: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "arbiter",
        abstract: "Talk to an arbiterd server: ping it, list models, show a schema, score candidates from JSON.",
        subcommands: [Ping.self, Models.self, Info.self, Score.self, Probe.self])
}

struct Connection: ParsableArguments {
    @Option(help: "Server address, HOST:PORT.")
    var host: String = "127.0.0.1:7878"

    @Option(help: "Request timeout in milliseconds.")
    var timeoutMs: Int64 = 5000

    func validate() throws {
        guard split() != nil else { throw ValidationError("--host must be HOST:PORT, got '\(host)'") }
        guard timeoutMs > 0 else { throw ValidationError("--timeout-ms must be positive") }
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
        do {
            return try await ArbiterClient.connect(host: h, port: p, configuration: c)
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
    static let configuration = CommandConfiguration(abstract: "List the models the server serves.")
    @OptionGroup var connection: Connection

    func run() async throws {
        let client = try await connection.connect()
        let list = try await client.listModels()
        try await client.close()
        if list.isEmpty { print("no models served"); return }
        print("MODEL                VERSION  KIND          CONTEXT  CANDIDATE")
        for m in list {
            print(m.name.padding(toLength: 20, withPad: " ", startingAt: 0), String(format: "%7llu", m.version), " ",
                  m.kind.padding(toLength: 12, withPad: " ", startingAt: 0), String(format: "%7d  %9d", m.contextFeatureCount, m.candidateFeatureCount))
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
        abstract: "Score candidates from a JSON file (or - for standard input); prints JSON.",
        discussion: """
        Input: {"context": {"job_category": 3, "job_salary": 4200},
                "candidates": [{"id": 1, "features": {"channel": 1, "city": 4, ...}}, ...],
                "top_k": 0, "version": 0, "routing_key": 0}
        Features may also be arrays in the schema's order (see `arbiter info`). null is a missing value, for
        features that accept one (`arbiter info` shows "missing_allowed").
        """)
    @OptionGroup var connection: Connection
    @Option(help: "Model name.") var model: String
    @Option(help: "Input JSON file, or - for standard input.") var input: String

    func run() async throws {
        let data: Data
        do {
            data = input == "-" ? FileHandle.standardInput.readDataToEndOfFile() : try Data(contentsOf: URL(fileURLWithPath: input))
        } catch {
            throw CLIError("cannot read \(input): \(error.localizedDescription)")
        }
        guard let json = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else {
            throw CLIError("\(input) is not a JSON object")
        }
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
            if let id = obj["id"] {
                guard let n = id as? NSNumber, n.int64Value >= 0 else { throw CLIError("candidate \(i): \"id\" must be a non-negative integer") }
                ids.append(n.uint64Value)
            } else {
                ids.append(UInt64(i))
            }
            matrix += try vector(obj["features"] ?? [String: Any](), features: schema.candidateFeatures, what: "candidate \(i)")
        }
        func uint(_ key: String) throws -> UInt64 {
            guard let v = json[key] else { return 0 }
            guard let n = v as? NSNumber, n.int64Value >= 0 else { throw CLIError("\"\(key)\" must be a non-negative integer") }
            return n.uint64Value
        }
        return ScoreRequest(model: model, version: try uint("version"), routingKey: try uint("routing_key"),
                            topK: UInt32(clamping: try uint("top_k")), context: ctx, candidateIDs: ids,
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
