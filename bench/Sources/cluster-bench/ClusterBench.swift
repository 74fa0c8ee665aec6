import ArbiterClient
import ArbiterCluster
import ArbiterStore
import ArbiterWire
import ArgumentParser
import AsyncHTTPClient
import Foundation
import NIOCore
import NIOPosix

/// The cluster's benchmark scenarios, run against a local cluster that `scripts/cluster.sh` started (its
/// addresses from `scripts/cluster.sh env`): capacity through the balancing client, then at a rate (half of
/// it) consistency over promotions, failover, partial failures, distribution of a 1 GiB version and a cold
/// start. Each writes a JSON summary (and the series it plots) to --out; bench/cluster/run.sh drives them.
@main
struct ClusterBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "cluster-bench",
                                                    abstract: "Arbiter cluster scenarios (bench/cluster/run.sh runs them).")

    @Option(help: "capacity, consistency, failover, partial, distribution or coldstart") var scenario: String
    @Option(help: "Requests per second (open loop).") var rate = 1000
    @Option(help: "Seconds of load (capacity, failover).") var duration = 30.0
    @Option(help: "Promotions (consistency).") var promotions = 100
    @Option(help: "The trainer's store holding `leads` v1.") var trainerStore: String
    @Option(help: "A store holding the large model (distribution, coldstart) or the partial scenario's extra models.") var extraStore: String?
    @Option(help: "Where the JSON summary goes.") var out: String
    @Option(help: "The cluster's replicas (r0...).") var replicas = 4
    @Option(help: "Where pushes write their scratch copies (default: the cluster's directory); arbiter-train push --work-dir.") var pushWorkDir: String?

    func run() async throws {
        let env = ProcessInfo.processInfo.environment
        guard let etcdList = env["ARBITER_ETCD"], let s3URL = env["ARBITER_S3"], let bucket = env["ARBITER_BUCKET"],
              let clusterDir = env["ARBITER_CLUSTER_DIR"] else {
            throw ValidationError("set the cluster's environment first: eval \"$(scripts/cluster.sh env)\"")
        }
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let http = S3Client.makeHTTPClient(eventLoopGroup: group)
        let etcdHTTP = EtcdClient.makeHTTPClient(eventLoopGroup: group)
        let etcd = try EtcdClient(endpoints: EtcdClient.parseEndpoints(etcdList), http: etcdHTTP)
        let plane = ControlPlane(etcd: etcd, keys: try ClusterKeys(), identity: "cluster-bench")
        let s3 = S3Client(location: try S3Location(endpoint: s3URL, bucket: bucket), credentials: try S3Credentials.fromEnvironment(), http: http)
        let bench = Bench(plane: plane, s3: s3, clusterDir: clusterDir, pushWorkDir: pushWorkDir ?? clusterDir,
                          trainerStore: trainerStore, extraStore: extraStore, replicas: replicas, rate: rate, duration: duration, promotions: promotions)
        let result: Result<[String: JSONValue], any Error>
        do {
            switch scenario {
            case "capacity": result = .success(try await bench.capacity())
            case "consistency": result = .success(try await bench.consistency())
            case "failover": result = .success(try await bench.failover())
            case "partial": result = .success(try await bench.partial())
            case "distribution": result = .success(try await bench.distribution())
            case "coldstart": result = .success(try await bench.coldStart())
            default: throw ValidationError("unknown scenario \(scenario)")
            }
        } catch {
            result = .failure(error)
        }
        try? await http.shutdown()
        try? await etcdHTTP.shutdown()
        try? await group.shutdownGracefully()
        var summary = try result.get()
        summary["scenario"] = .string(scenario)
        summary["rate"] = .number(Double(rate))
        let data = try JSONSerialization.data(withJSONObject: JSONValue.object(summary).any, options: [.prettyPrinted, .sortedKeys])
        try data.write(to: URL(fileURLWithPath: out))
        print(String(decoding: data, as: UTF8.self))
    }
}

/// JSON for the summaries.
enum JSONValue {
    case number(Double), string(String), bool(Bool), array([JSONValue]), object([String: JSONValue])
    var any: Any {
        switch self {
        case .number(let d): return d
        case .string(let s): return s
        case .bool(let b): return b
        case .array(let a): return a.map(\.any)
        case .object(let o): return o.mapValues(\.any)
        }
    }
}

func percentile(_ values: [Double], _ p: Double) -> Double {
    guard !values.isEmpty else { return 0 }
    let s = values.sorted()
    let rank = Int((Double(s.count) * p / 100).rounded(.up)) - 1
    return s[max(0, min(s.count - 1, rank))]
}

struct Bench: Sendable {
    let plane: ControlPlane
    let s3: S3Client
    let clusterDir: String
    let pushWorkDir: String
    let trainerStore: String
    let extraStore: String?
    let replicas: Int
    let rate: Int
    let duration: Double
    let promotions: Int

    static func leadRequest(_ i: Int) -> ScoreRequest {
        let lead: [Float] = [Float(i % 5), Float(i % 12), Float(3 + i % 40), 0.05 * Float(i % 3), Float(i % 30), Float(i % 10)]
        return ScoreRequest(model: "leads", context: [Float(i % 6), 4200], candidateIDs: [UInt64(1000 + i)],
                            candidateFeatureCount: 6, candidateFeatures: lead)
    }

    static var leadRequests: [ScoreRequest] { (0..<512).map(leadRequest) }

    func withClient<T>(_ body: (BalancedClient, EtcdMembership) async throws -> T) async throws -> T {
        let membership = EtcdMembership(plane: plane)
        try await membership.load()
        let watch = Task { await membership.run() }
        let client = BalancedClient(membership: membership)
        do {
            let r = try await body(client, membership)
            watch.cancel()
            await client.close()
            return r
        } catch {
            watch.cancel()
            await client.close()
            throw error
        }
    }

    func pid(_ name: String) throws -> Int32 {
        guard let text = try? String(contentsOfFile: "\(clusterDir)/pids/\(name)", encoding: .utf8), let pid = Int32(text.trimmingCharacters(in: .whitespacesAndNewlines)) else {
            throw ValidationError("no pid file for \(name) in \(clusterDir)/pids")
        }
        return pid
    }

    func signal(_ name: String, _ sig: Int32) throws {
        guard kill(try pid(name), sig) == 0 else { throw ValidationError("cannot signal \(name): errno \(errno)") }
    }

    /// Runs scripts/cluster.sh (found beside this package) with `arguments` after `--dir`. Through system(3),
    /// which waits for the script alone: Foundation's Process also waited for the replica the script leaves
    /// running in the background (it holds a descriptor Process watches).
    func clusterScript(_ command: String, _ arguments: [String] = [], environment: [String: String] = [:]) throws {
        let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("scripts/cluster.sh").path
        func quote(_ s: String) -> String { "'" + s.replacingOccurrences(of: "'", with: "'\\''") + "'" }
        let env = environment.map { "\($0.key)=\(quote($0.value))" }.joined(separator: " ")
        let line = "\(env) \(quote(script)) \(command) --dir \(quote(clusterDir)) \(arguments.map(quote).joined(separator: " ")) </dev/null"
        let status = system(line)
        guard status == 0 else { throw ValidationError("cluster.sh \(command) \(arguments) failed (status \(status))") }
    }

    /// Checks `condition` every `interval` until it holds. Each check of the replicas' records is a read of etcd:
    /// a wait of tens of seconds checks every 50 ms, not 5, or the bench loads the control plane it measures.
    func waitUntil(_ what: String, seconds: Double, every interval: Duration = .milliseconds(5), _ condition: () async throws -> Bool) async throws {
        let deadline = ContinuousClock.now + .seconds(seconds)
        while try await !condition() {
            guard ContinuousClock.now < deadline else { throw ValidationError("gave up after \(seconds) s waiting until \(what)") }
            try await Task.sleep(for: interval)
        }
    }

    func readyReplicas() async throws -> [ReplicaRecord] {
        try await plane.replicas().records.filter(\.ready)
    }

    /// A new version of `leads` with v1's parameters, pushed and registered.
    func newLeadVersion(_ trainer: Catalog) async throws -> UInt64 {
        let v1 = try LoadedVersion(environment: trainer.environment, model: "leads", version: 1)
        let tensors = v1.tensors.map { name, t in TensorData(name: name, shape: t.shape, dtype: t.dtype, bytes: Array(t.bytes)) }
        let v = try trainer.publish(model: "leads", kind: v1.kind, manifest: Array(v1.manifest), tensors: tensors, metrics: [:])
        try await push(trainer, model: "leads", version: v)
        return v
    }

    @discardableResult
    func push(_ catalog: Catalog, model: String, version: UInt64) async throws -> ArtifactPusher.Report {
        let work = pushWorkDir + "/arbiter-bench-push-\(model)-\(version)-\(getpid())"
        let report = try await ArtifactPusher(s3: s3).push(catalog: catalog, model: model, version: version, workDirectory: work, pushedBy: "cluster-bench")
        try await plane.register(report.manifest)
        return report
    }

    func trainer() throws -> Catalog {
        Catalog(environment: try StoreEnvironment.open(path: trainerStore))
    }

    func loadSummary(_ load: OpenLoopLoad, client: BalancedClient, from: Double = 0, to: Double = .infinity) -> [String: JSONValue] {
        let s = load.summary(from: from, to: to)
        let stats = client.statistics
        return [
            "requests": .number(Double(s.requests)), "failed": .number(Double(s.failed)), "mismatches": .number(Double(s.mismatches)),
            "p50_us": .number(s.p50Micros), "p99_us": .number(s.p99Micros), "p999_us": .number(s.p999Micros), "max_us": .number(s.maxMicros),
            "retries": .number(Double(stats.retries)), "hedges": .number(Double(stats.hedges)), "hedge_wins": .number(Double(stats.hedgeWins)),
            "budget_refusals": .number(Double(stats.budgetRefusals)),
            "extra_load": .number(stats.requests == 0 ? 0 : Double(stats.retries + stats.hedges) / Double(stats.requests)),
            "failures_sample": .array(load.lock.withLock { load.failures.prefix(5).map { .string($0) } }),
            "mismatches_sample": .array(load.lock.withLock { load.mismatches.prefix(5).map { .string($0) } }),
        ]
    }

    func series(_ load: OpenLoopLoad) -> [String: JSONValue] {
        let p99 = load.p99Series().map { JSONValue.array([.number($0.0), .number($0.1), .number(Double($0.2))]) }
        let served = load.servedSeries().map { t, byReplica in
            JSONValue.array([.number(t), .object(byReplica.mapValues { versions in
                .object(Dictionary(uniqueKeysWithValues: versions.map { (String($0.key), JSONValue.number(Double($0.value))) }))
            })])
        }
        return ["p99_series": .array(p99), "served_series": .array(served)]
    }

    // MARK: Scenarios

    /// Closed loop with 64 requests always out, for `duration` seconds: the rate the cluster sustains
    /// through the balancing client on this machine.
    func capacity() async throws -> [String: JSONValue] {
        try await withClient { client, membership in
            let requests = Self.leadRequests
            let done = ManagedCounter()
            let stop = ManagedCounter()
            let finished = AsyncStream<Void>.makeStream()
            @Sendable func launch(_ k: Int) {
                client.scoreFuture(requests[k % requests.count], deadline: .seconds(2)).whenComplete { _ in
                    done.add(1)
                    if stop.value == 0 { launch(k + 64) } else { finished.continuation.yield() }
                }
            }
            // Warm up: connections to every replica, the hedging window filled.
            for k in 0..<2000 { _ = try? await client.score(requests[k % requests.count]) }
            let start = ContinuousClock.now
            for k in 0..<64 { launch(k) }
            try await Task.sleep(for: .seconds(duration))
            stop.add(1)
            let count = done.value
            let elapsed = start.duration(to: .now)
            let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
            var drained = 0
            for await _ in finished.stream {
                drained += 1
                if drained == 64 { break }
            }
            let closed = Double(count) / seconds
            // Open loop, as the scenarios load it: rising rates, 4 s each; the capacity is the highest rate at
            // which every request is answered and p99 stays under 10 ms.
            var ramp: [JSONValue] = []
            var sustained = 0.0
            for fraction in [0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8] {
                let rate = Int(closed * fraction)
                let load = OpenLoopLoad(client: client, membership: membership, model: "leads", requests: requests, rate: rate)
                load.start()
                try await Task.sleep(for: .seconds(4))
                load.stop()
                let s = load.summary(from: 0.5)
                ramp.append(.array([.number(Double(rate)), .number(s.p50Micros), .number(s.p99Micros), .number(Double(s.failed))]))
                print("open loop at \(rate)/s: p50 \(Int(s.p50Micros)) µs, p99 \(Int(s.p99Micros)) µs, \(s.failed) failed")
                guard s.failed == 0, s.p99Micros <= 10_000 else { break }
                sustained = Double(rate)
                try await Task.sleep(for: .seconds(1))
            }
            let stats = client.statistics
            return ["closed_loop_rps": .number(closed), "capacity_rps": .number(sustained), "ramp": .array(ramp),
                    "requests": .number(Double(stats.requests)), "failures": .number(Double(stats.failures)),
                    "answered_by": .object(stats.answeredBy.mapValues { .number(Double($0)) })]
        }
    }

    /// Promotions under load: each commit, and how long until the last replica serves it.
    func consistency() async throws -> [String: JSONValue] {
        let trainer = try trainer()
        print("pushing \(promotions) versions...")
        var versions: [UInt64] = []
        for _ in 0..<promotions { versions.append(try await newLeadVersion(trainer)) }
        return try await withClient { client, membership in
            let load = OpenLoopLoad(client: client, membership: membership, model: "leads", requests: Self.leadRequests, rate: rate)
            load.start()
            try await Task.sleep(for: .seconds(2))
            var switchLast: [Double] = []     // ms from the commit to the last replica switched, per promotion
            var observed: [Double] = []       // ms from promote's return to every record showing the switch
            var commits: [JSONValue] = []
            for v in versions {
                let p = try await plane.promote(model: "leads", version: v, timeout: .seconds(60))
                let returned = ContinuousClock.now
                var records: [ReplicaRecord] = []
                try await waitUntil("every ready replica serves leads v\(v)", seconds: 10) {
                    records = try await readyReplicas()
                    return records.count == replicas && records.allSatisfy { $0.active["leads"] == v }
                }
                let seen = returned.duration(to: .now)
                observed.append(Double(seen.components.attoseconds) / 1e15 + Double(seen.components.seconds) * 1000)
                let last = records.compactMap { $0.switchMicros["leads"] }.max() ?? 0
                switchLast.append(Double(last) / 1000)
                commits.append(.array([.number(load.elapsed()), .number(Double(v)), .number(Double(p.epoch)), .number(Double(last) / 1000)]))
                try await Task.sleep(for: .milliseconds(300))
            }
            try await Task.sleep(for: .seconds(1))
            load.stop()
            var out = loadSummary(load, client: client)
            out["promotions"] = .number(Double(versions.count))
            out["switch_last_ms_p50"] = .number(percentile(switchLast, 50))
            out["switch_last_ms_p99"] = .number(percentile(switchLast, 99))
            out["switch_last_ms_max"] = .number(switchLast.max() ?? 0)
            out["observed_ms_p99"] = .number(percentile(observed, 99))
            out["commits"] = .array(commits)
            let answered = load.lock.withLock { load.answeredVersions }
            let committed = Set([1] + versions)
            out["answered_from_uncommitted"] = .number(Double(answered.filter { !committed.contains($0.key) }.values.reduce(0, +)))
            for (k, v) in series(load) { out[k] = v }
            return out
        }
    }

    /// SIGKILL r1 and SIGSTOP r2 for 2 s, at 10 s into `duration` s of load.
    func failover() async throws -> [String: JSONValue] {
        try await withClient { client, membership in
            let load = OpenLoopLoad(client: client, membership: membership, model: "leads", requests: Self.leadRequests, rate: rate)
            load.start()
            try await Task.sleep(for: .seconds(10))
            let eventAt = load.elapsed()
            try signal("r1", SIGKILL)
            try signal("r2", SIGSTOP)
            try await Task.sleep(for: .seconds(2))
            try signal("r2", SIGCONT)
            try await Task.sleep(for: .seconds(max(5, duration - 12)))
            load.stop()
            var out = loadSummary(load, client: client)
            let steady = load.summary(from: 2, to: eventAt)
            let event = load.summary(from: eventAt, to: eventAt + 5)
            out["event_at_s"] = .number(eventAt)
            out["steady_p99_us"] = .number(steady.p99Micros)
            out["event_p99_us"] = .number(event.p99Micros)
            out["event_p99_ratio"] = .number(steady.p99Micros > 0 ? event.p99Micros / steady.p99Micros : 0)
            out["event_failed"] = .number(Double(event.failed))
            for (k, v) in series(load) { out[k] = v }
            try clusterScript("start-replica", ["1"])
            try await waitUntil("r1 is back and ready", seconds: 60, every: .milliseconds(50)) { try await readyReplicas().count == replicas }
            return out
        }
    }

    /// Under load: S3 killed mid-download (and back), a damaged object, one replica failing validation, etcd's
    /// quorum lost for 30 s. The bad versions must never become active; no request may fail.
    func partial() async throws -> [String: JSONValue] {
        guard let extraStore else { throw ValidationError("--extra-store (with models 'rank' and 'route') is needed") }
        let extra = Catalog(environment: try StoreEnvironment.open(path: extraStore))
        let trainer = try trainer()
        // Pushed before the load starts: the trainer is another machine on a real cluster.
        try await push(extra, model: "rank", version: 1)
        try await push(extra, model: "route", version: 1)
        return try await withClient { client, membership in
            let load = OpenLoopLoad(client: client, membership: membership, model: "leads", requests: Self.leadRequests, rate: rate)
            load.start()
            try await Task.sleep(for: .seconds(2))
            var events: [JSONValue] = []
            func note(_ what: String) {
                print(String(format: "%6.2f s  %@", load.elapsed(), what))
                events.append(.array([.number(load.elapsed()), .string(what)]))
            }

            // (a) S3 killed while the replicas download a 256 MiB version; it comes back after 3 s.
            let activeLeads = try await plane.pointer(plane.keys.active("leads"))?.pointer.version
            note("rank v1 (256 MiB) set as target")
            try await plane.setTarget(model: "rank", version: 1)
            try await Task.sleep(for: .milliseconds(400))
            try signal("s3", SIGKILL)
            note("S3 killed mid-download")
            try await Task.sleep(for: .seconds(3))
            try clusterScript("start-s3")
            note("S3 restarted")
            let p = try await plane.promote(model: "rank", version: 1, timeout: .seconds(120))
            note("rank v1 promoted once every replica staged it (epoch \(p.epoch))")

            // (b) A damaged object: its promotion is refused; leads keeps its version.
            let damaged = try await newLeadVersion(trainer)
            let manifest = try require(try await ArtifactFetcher(s3: s3).manifest(model: "leads", version: damaged))
            var bytes = try require(try await s3.get(manifest.object.key!, limit: 64 << 20))
            bytes[bytes.count / 2] ^= 0x10
            try await s3.put(manifest.object.key!, bytes: bytes)
            note("leads v\(damaged) pushed, then its object damaged in the bucket")
            var refusedDamaged = false
            do { _ = try await plane.promote(model: "leads", version: damaged, timeout: .seconds(60)) } catch { refusedDamaged = true; note("refused: \(error)") }

            // (c) One replica that does not serve the routing kind: the first version of 'route' fails validation
            // there, and is promoted nowhere.
            try signal("r3", SIGTERM)
            try await waitUntil("r3 has stopped", seconds: 30) { kill(try pid("r3"), 0) != 0 }
            try clusterScript("start-replica", ["3"], environment: ["ARBITERD_ARGS": (ProcessInfo.processInfo.environment["ARBITERD_ARGS"] ?? "") + " --kinds lead-grading,ranking"])
            try await waitUntil("r3 is ready again", seconds: 60, every: .milliseconds(50)) { try await readyReplicas().count == replicas }
            note("r3 restarted serving lead-grading and ranking only")
            var refusedRoute = false
            do { _ = try await plane.promote(model: "route", version: 1, timeout: .seconds(60)) } catch { refusedRoute = true; note("refused: \(error)") }
            let routeActive = try await plane.pointer(plane.keys.active("route"))

            // (d) etcd's quorum lost for 30 s (two of three members killed): replicas keep serving, clients keep
            // their view, a promotion is refused; after the members return, promotion works again.
            let next = try await newLeadVersion(trainer)
            try signal("e1", SIGKILL)
            try signal("e2", SIGKILL)
            note("etcd members e1 and e2 killed: no quorum")
            var refusedWithoutQuorum = false
            do { _ = try await plane.promote(model: "leads", version: next, timeout: .seconds(5)) } catch { refusedWithoutQuorum = true; note("refused: \(error)") }
            try await Task.sleep(for: .seconds(30))
            try clusterScript("start-etcd", ["1"])
            try clusterScript("start-etcd", ["2"])
            note("etcd members restarted")
            try await waitUntil("etcd answers again", seconds: 60, every: .milliseconds(50)) { (try? await plane.replicas()) != nil }
            let after = try await plane.promote(model: "leads", version: next, timeout: .seconds(60))
            note("leads v\(next) promoted after the quorum returned (epoch \(after.epoch))")
            try await waitUntil("every replica serves leads v\(next)", seconds: 30, every: .milliseconds(50)) {
                let r = try await readyReplicas()
                return r.count == replicas && r.allSatisfy { $0.active["leads"] == next }
            }
            try await Task.sleep(for: .seconds(1))
            load.stop()

            // r3 back to every kind, for the scenarios after this one.
            try signal("r3", SIGTERM)
            try await waitUntil("r3 has stopped", seconds: 30) { kill(try pid("r3"), 0) != 0 }
            try clusterScript("start-replica", ["3"])
            try await waitUntil("r3 is ready again", seconds: 60, every: .milliseconds(50)) { try await readyReplicas().count == replicas }

            var out = loadSummary(load, client: client)
            let answered = load.lock.withLock { load.answeredVersions }
            out["events"] = .array(events)
            out["damaged_refused"] = .bool(refusedDamaged)
            out["damaged_answers"] = .number(Double(answered[damaged] ?? 0))
            out["route_refused"] = .bool(refusedRoute)
            out["route_active_after"] = .string(routeActive.map { "v\($0.pointer.version)" } ?? "none")
            out["refused_without_quorum"] = .bool(refusedWithoutQuorum)
            out["leads_active_before"] = .number(Double(activeLeads ?? 0))
            for (k, v) in series(load) { out[k] = v }
            return out
        }
    }

    /// A 1 GiB version from push to staged on every replica; MiB/s per stage.
    func distribution() async throws -> [String: JSONValue] {
        guard let extraStore else { throw ValidationError("--extra-store (with model 'big') is needed") }
        let big = Catalog(environment: try StoreEnvironment.open(path: extraStore))
        let version = try require(try big.activeVersion(model: "big"))
        let start = ContinuousClock.now
        let report = try await push(big, model: "big", version: version)
        let pushed = start.duration(to: .now)
        try await plane.setTarget(model: "big", version: version)
        try await waitUntil("every replica staged big v\(version)", seconds: 300, every: .milliseconds(50)) {
            let r = try await plane.replicas().records
            return r.count >= replicas && r.allSatisfy { $0.hasStaged("big", version) }
        }
        let staged = start.duration(to: .now)
        let p = try await plane.promote(model: "big", version: version, timeout: .seconds(60))
        func seconds(_ d: Duration) -> Double { Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18 }
        // The replicas' own stage timings, from their logs ("fetched big vN: download: ...; import: ...").
        var replicaStages: [JSONValue] = []
        for k in 0..<replicas {
            let log = (try? String(contentsOfFile: "\(clusterDir)/logs/r\(k).log", encoding: .utf8)) ?? ""
            if let line = log.split(separator: "\n").last(where: { $0.contains("fetched big v\(version)") }) {
                replicaStages.append(.string("r\(k): " + String(line.split(separator: "]").last ?? "")))
            }
        }
        return [
            "store_bytes": .number(Double(report.manifest.store.bytes)), "object_bytes": .number(Double(report.manifest.object.bytes)),
            "push_s": .number(seconds(pushed)), "push_to_all_staged_s": .number(seconds(staged)),
            "push_stages": .array(report.stages.map { .string($0.description) }),
            "replica_stages": .array(replicaStages), "epoch": .number(Double(p.epoch)),
        ]
    }

    /// An empty replica (r<replicas>) started while the big version is active: process start to its first
    /// correct answer of the big model, and no balanced traffic before it is ready.
    func coldStart() async throws -> [String: JSONValue] {
        let bigVersion = try require(try await plane.pointer(plane.keys.active("big"))?.pointer.version,
                                     "an active version of 'big' (the distribution scenario pushes and promotes it: run it first)")
        return try await withClient { client, membership in
            let load = OpenLoopLoad(client: client, membership: membership, model: "leads", requests: Self.leadRequests, rate: rate)
            load.start()
            defer { load.stop() }
            try await Task.sleep(for: .seconds(2))
            let name = "r\(replicas)"
            try? FileManager.default.removeItem(atPath: "\(clusterDir)/\(name)")
            let startedAt = load.elapsed()
            let t0 = ContinuousClock.now
            try clusterScript("start-replica", [String(replicas)])
            // When its record first said ready, by the time the replica wrote it (clients can only see it later):
            // watched from the start, so that a later write of the record does not stand for the first. Every
            // 50 ms: reading every record every 5 ms kept an etcd member at a quarter of a core, and the load's
            // client starved with it.
            let readyWatch = Task { () -> Double? in
                while !Task.isCancelled, t0.duration(to: .now) < .seconds(120) {
                    if let r = try? await self.plane.replicas().records.first(where: { $0.name == name && $0.ready }) {
                        return Double(r.unixMillis) / 1000
                    }
                    try? await Task.sleep(for: .milliseconds(50))
                }
                return nil
            }
            defer { readyWatch.cancel() }
            // The cluster script gives replica K the port base + 30 + K.
            let address = try require(try await firstAddress(of: name, seconds: 30))
            let endpoint = try require(ReplicaEndpoint(name: name, address: address))
            var firstAnswer: Duration?
            while firstAnswer == nil, t0.duration(to: .now) < .seconds(120) {
                if let client = try? await ArbiterClient.connect(host: endpoint.host, port: endpoint.port) {
                    var request = Self.bigRequest()
                    request.version = bigVersion
                    if let r = try? await client.score(request), r.version == bigVersion, r.ids.count > 0 { firstAnswer = t0.duration(to: .now) }
                    try? await client.close()
                }
                if firstAnswer == nil { try await Task.sleep(for: .milliseconds(50)) }
            }
            guard let readyUnix = await readyWatch.value else { throw ValidationError("\(name) was not ready within 120 s") }
            let readyAt: Double? = load.elapsed(atUnixSeconds: readyUnix)
            try await Task.sleep(for: .seconds(3))
            load.stop()
            // Did the balanced load reach the new replica before its record said ready?
            let early = load.servedSeries().filter { $0.0 + Double(OpenLoopLoad.windowNanos) / 1e9 < (readyAt ?? 0) && $0.1[name] != nil }.count
            var out = loadSummary(load, client: client)
            func seconds(_ d: Duration) -> Double { Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18 }
            out["first_answer_s"] = .number(firstAnswer.map(seconds) ?? -1)
            out["ready_after_s"] = .number((readyAt ?? -1) - startedAt)
            out["windows_served_before_ready"] = .number(Double(early))
            out["answers_by_new_replica"] = .number(Double(client.statistics.answeredBy[name] ?? 0))
            try signal(name, SIGTERM)
            return out
        }
    }

    func firstAddress(of name: String, seconds: Double) async throws -> String? {
        var address: String?
        try await waitUntil("\(name) registers", seconds: seconds, every: .milliseconds(50)) {
            address = try await plane.replicas().records.first { $0.name == name }?.address
            return address != nil
        }
        return address
    }

    /// A request for the big ranking model (bench/rank's schema: 4 context features, 8 per item).
    static func bigRequest() -> ScoreRequest {
        let n = 20
        var features: [Float] = []
        for i in 0..<n { features += [Float(i % 50), Float(i * 37 % 1000), 20, 50, 10, 4, 3, 0] }
        return ScoreRequest(model: "big", topK: 5, subject: 42, context: [34, 120, 3, 5.5],
                            candidateIDs: (0..<n).map { UInt64(1 + $0 * 997) }, candidateFeatureCount: 8, candidateFeatures: features)
    }
}

/// A counter shared by callbacks.
final class ManagedCounter: @unchecked Sendable {
    private let lock = NSLock()
    private var v = 0
    func add(_ n: Int) { lock.lock(); v += n; lock.unlock() }
    var value: Int { lock.lock(); defer { lock.unlock() }; return v }
}

func require<T>(_ value: T?, _ what: String = "a value") throws -> T {
    guard let value else { throw ValidationError("missing \(what)") }
    return value
}
