import ArbiterClient
import ArbiterModels
@testable import ArbiterServer
import ArbiterStore
import ArbiterTestSupport
import ArbiterTraining
import ArbiterWire
import Foundation
import Logging
import LeadGrading
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// The operator's HTTP port: /metrics after known traffic, /live, and /ready only once the models validate.
@Suite struct MetricsTests {
    /// GET over a plain socket (what curl or Prometheus sends): the status code and the body.
    static func get(port: Int, _ path: String, method: String = "GET") throws -> (status: Int, body: String) {
        try LoopbackHTTP.request(port: port, path, method: method)
    }

    /// The value of one series in an exposition (nil when absent).
    static func value(_ text: String, _ series: String) -> Double? {
        for line in text.split(separator: "\n") where line.hasPrefix(series + " ") {
            return Double(line.dropFirst(series.count + 1))
        }
        return nil
    }

    static let trained: TrainedLeadModel = {
        var o = FMTrainingOptions()
        o.maxEpochs = 2
        return try! LeadGradingTrainer.train(rows: LeadData.generate(rows: 2000, seed: 5), options: o)
    }()

    @Test func readinessFollowsTheModelsAndTheScrapeCountsKnownTraffic() async throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("arbiter-metrics-\(getpid())-\(UInt32.random(in: 0...UInt32.max))").path
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var config = Fixture.config(store: dir)
        config.store = StoreConfiguration(mapSize: 1 << 30, create: true)
        config.offloadCandidates = 4  // requests of 4 or more candidates take the thread pool's path

        // Before the server exists (arbiterd loading its store): alive, not ready.
        let admin = try await AdminEndpoint.start(host: "127.0.0.1", port: 0, logger: Logger(label: "test"))
        defer { Task { await admin.shutdown() } }
        let port = try #require(admin.port)
        #expect(try Self.get(port: port, "/live").status == 200)
        let loading = try Self.get(port: port, "/ready")
        #expect(loading.status == 503 && loading.body.contains("loading models"), "\(loading)")
        #expect(try Self.get(port: port, "/nope").status == 404)
        #expect(try Self.get(port: port, "/metrics", method: "POST").status == 405)

        let server = try ArbiterServer(configuration: config, registry: Fixture.registry)
        try await server.start()
        admin.attach(server)
        // An empty store: nothing to serve yet.
        let empty = try Self.get(port: port, "/ready")
        #expect(empty.status == 503 && empty.body.contains("no servable model"), "\(empty)")
        #expect(Self.value(try Self.get(port: port, "/metrics").body, "arbiter_ready") == 0)

        // A version is published and validated: ready, naming it.
        let env = try StoreEnvironment.open(path: dir, configuration: StoreConfiguration(mapSize: 1 << 30))
        try LeadGradingTrainer.publish(Self.trained, model: "leads", catalog: Catalog(environment: env))
        try await server.reload()
        let ready = try Self.get(port: port, "/ready")
        #expect(ready.status == 200 && ready.body.contains("leads v1"), "\(ready)")
        #expect(try Self.get(port: port, "/live").status == 200)

        // Known traffic: 5 inline SCOREs of 2 candidates, 2 of 5 through the pool, 3 refused.
        let client = try await ArbiterClient.connect(port: server.port!)
        for _ in 0..<5 { _ = try await client.score(Fixture.scoreRequest(n: 2)) }
        for _ in 0..<2 { _ = try await client.score(Fixture.scoreRequest(n: 5)) }
        for _ in 0..<2 { await #expect(throws: (any Error).self) { try await client.score(Fixture.scoreRequest(n: 2, model: "nope")) } }
        var bad = Fixture.scoreRequest(n: 1)
        bad.candidateFeatures[0] = .infinity
        await #expect(throws: (any Error).self) { try await client.score(bad) }

        let scrape = try Self.get(port: port, "/metrics")
        #expect(scrape.status == 200)
        let m = scrape.body
        let series = #"model="leads",version="1""#
        #expect(Self.value(m, "arbiter_requests_total{\(series)}") == 7, "\(m)")
        #expect(Self.value(m, "arbiter_candidates_total{\(series)}") == 20)
        #expect(Self.value(m, "arbiter_queue_seconds_count{\(series)}") == 7)
        #expect(Self.value(m, "arbiter_compute_seconds_bucket{\(series),le=\"+Inf\"}") == 7)
        #expect((Self.value(m, "arbiter_compute_seconds_sum{\(series)}") ?? -1) >= 0)
        #expect(Self.value(m, #"arbiter_errors_total{status="UNKNOWN_MODEL"}"#) == 2)
        #expect(Self.value(m, #"arbiter_errors_total{status="INVALID_FEATURE"}"#) == 1)
        #expect(Self.value(m, #"arbiter_errors_total{status="OVERLOADED"}"#) == 0)
        #expect(Self.value(m, #"arbiter_shed_total{reason="queue"}"#) == 0)
        #expect(Self.value(m, "arbiter_requests_in_flight") == 0)
        #expect(Self.value(m, "arbiter_connections") == 1)
        #expect(Self.value(m, "arbiter_connections_accepted_total") == 1)
        // The model's first version is not a swap.
        #expect(Self.value(m, #"arbiter_swaps_total{model="leads"}"#) == 0)
        #expect(Self.value(m, #"arbiter_versions_rejected_total{model="leads"}"#) == 0)
        #expect(Self.value(m, #"arbiter_model_active_version{model="leads"}"#) == 1)
        #expect(Self.value(m, "arbiter_ready") == 1)
        #expect(Self.value(m, "arbiter_memory_budget_bytes") == Double(config.memoryBudgetBytes))
        #expect((Self.value(m, "arbiter_store_generation") ?? 0) >= 1)
        #expect((Self.value(m, "arbiter_store_used_bytes") ?? 0) > 0)
        // Every latency bucket line is cumulative: never fewer than the one before.
        var last = -1.0
        for line in m.split(separator: "\n") where line.hasPrefix("arbiter_queue_seconds_bucket{\(series)") {
            let v = Double(line.split(separator: " ").last ?? "") ?? -1
            #expect(v >= last, "\(line)")
            last = v
        }
        #expect(last == 7)

        // Every series the Grafana dashboard (docs/) and docs/METRICS.md name is one the server exports.
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        for doc in ["docs/grafana-arbiter.json", "docs/METRICS.md"] {
            let text = try String(contentsOf: root.appendingPathComponent(doc), encoding: .utf8)
            let names = Set(text.matches(of: /arbiter_[a-z_]+/).map { String($0.output) }.map {
                $0.hasSuffix("_bucket") ? String($0.dropLast(7)) : $0
            })
            #expect(names.count >= 15, "\(doc): \(names)")
            for name in names.sorted() {
                #expect(m.contains("# TYPE \(name) "), "\(doc) names \(name), which /metrics does not export")
            }
        }

        // A second scrape counts on from the first (nothing is reset by reading).
        _ = try await client.score(Fixture.scoreRequest(n: 2))
        #expect(Self.value(try Self.get(port: port, "/metrics").body, "arbiter_requests_total{\(series)}") == 8)
        try await client.close()

        // A version that fails validation is counted; the older one keeps serving and the server ready.
        #expect(try SwapUnderLoadTests.publishFlipped(from: 1, catalog: Catalog(environment: env)) == 2)
        try await server.reload()
        let after = try Self.get(port: port, "/metrics").body
        #expect(Self.value(after, #"arbiter_versions_rejected_total{model="leads"}"#) == 1, "\(after)")
        #expect(Self.value(after, #"arbiter_model_failing{model="leads"}"#) == 1)
        #expect(Self.value(after, #"arbiter_model_active_version{model="leads"}"#) == 1)
        #expect(try Self.get(port: port, "/ready").status == 200)

        // A good version after it swaps in.
        try LeadGradingTrainer.publish(Self.trained, model: "leads", catalog: Catalog(environment: env))
        try await server.reload()
        let swapped = try Self.get(port: port, "/metrics").body
        #expect(Self.value(swapped, #"arbiter_swaps_total{model="leads"}"#) == 1, "\(swapped)")
        #expect(Self.value(swapped, #"arbiter_model_active_version{model="leads"}"#) == 3)
        #expect(Self.value(swapped, #"arbiter_model_failing{model="leads"}"#) == 0)

        // Shutting down: no longer ready.
        try await server.shutdown()
        let stopping = try Self.get(port: port, "/ready")
        #expect(stopping.status == 503 && stopping.body.contains("shutting down"), "\(stopping)")
    }

    @Test func secondsAreExactAndLabelsEscaped() {
        #expect(ServerMetrics.seconds(2_500) == "0.0025")
        #expect(ServerMetrics.seconds(1_000_000) == "1")
        #expect(ServerMetrics.seconds(1_000_001) == "1.000001")
        #expect(ServerMetrics.escape(#"a"b\c"#) == #"a\"b\\c"#)
        var h = LatencyHistogram()
        for us: UInt64 in [0, 1, 2, 2_500_000, 2_500_001] { h.record(us) }
        #expect(h.counts[0] == 2 && h.counts[1] == 1 && h.counts[LatencyHistogram.boundsMicros.count - 1] == 1)
        #expect(h.counts[LatencyHistogram.boundsMicros.count] == 1 && h.count == 5 && h.sumMicros == 5_000_004)
    }
}
