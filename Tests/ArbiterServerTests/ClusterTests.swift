import ArbiterClient
import ArbiterCluster
import ArbiterStore
import ArbiterTestSupport
import ArbiterWire
import AsyncHTTPClient
import Foundation
import NIOConcurrencyHelpers
import NIOPosix
import Testing

/// Replicas of arbiterd (real processes) around a real 3-member etcd and a real S3 server: versions pushed,
/// staged on every replica, promoted together; a version that fails validation, or whose object is damaged,
/// never becomes active; an etcd member lost changes nothing; a replica that joins empty catches up before it
/// says it is ready.
@Suite(.serialized) struct ClusterTests {
    final class Replica: @unchecked Sendable {
        let name: String
        let process: Process
        let log: NIOLockedValueBox<String>
        let store: String

        init(name: String, store: String, etcd: String, s3: LocalS3, bucket: String) throws {
            self.name = name
            self.store = store
            process = Process()
            process.executableURL = OtherProcess.binDir.appendingPathComponent("arbiterd")
            process.arguments = ["--store", store, "--listen", "127.0.0.1:0", "--poll-ms", "100", "--background-nice", "0",
                                 "--cluster-etcd", etcd, "--cluster-s3", s3.endpoint, "--cluster-bucket", bucket,
                                 "--cluster-name", name, "--cluster-lease-seconds", "3", "--log-level", "debug",
                                 // The replicas share one slot, as co-located replicas would (scripts/cluster.sh).
                                 "--cluster-download-lock", URL(fileURLWithPath: store).deletingLastPathComponent().path + "/download-slot",
                                 "--cluster-download-slots", "1"]
            var env = ProcessInfo.processInfo.environment
            env["AWS_ACCESS_KEY_ID"] = s3.accessKey
            env["AWS_SECRET_ACCESS_KEY"] = s3.secretKey
            process.environment = env
            let pipe = Pipe()
            process.standardOutput = pipe
            process.standardError = pipe
            let text = NIOLockedValueBox("")
            log = text
            try process.run()
            let reader = Handed(value: pipe.fileHandleForReading)
            Thread {
                while true {
                    let chunk = reader.value.availableData
                    if chunk.isEmpty { return }
                    text.withLockedValue { $0 += String(decoding: chunk, as: UTF8.self) }
                }
            }.start()
        }

        func kill() {
            if process.isRunning { Foundation.kill(process.processIdentifier, SIGKILL) }
            process.waitUntilExit()
        }
    }

    static func poll(_ what: String, seconds: Double = 60, _ condition: () async throws -> Bool) async throws {
        let deadline = ContinuousClock.now + .seconds(seconds)
        while try await !condition() {
            guard ContinuousClock.now < deadline else { throw ClientTestError("gave up after \(seconds) s waiting until \(what)") }
            try await Task.sleep(for: .milliseconds(50))
        }
    }

    /// A new version of `leads` in the trainer's store with v1's parameters and golden cases (a retrain that
    /// changed nothing: a distinct version all the same).
    static func republish(_ catalog: Catalog) throws -> UInt64 {
        let v1 = try LoadedVersion(environment: catalog.environment, model: "leads", version: 1)
        let tensors = v1.tensors.map { name, t in TensorData(name: name, shape: t.shape, dtype: t.dtype, bytes: Array(t.bytes)) }
        return try catalog.publish(model: "leads", kind: v1.kind, manifest: Array(v1.manifest), tensors: tensors, metrics: [:])
    }

    static func score(_ address: String, version: UInt64 = 0) async throws -> UInt64 {
        let parts = address.split(separator: ":")
        let client = try await ArbiterClient.connect(host: String(parts[0]), port: Int(parts[1])!)
        var request = Fixture.scoreRequest(n: 3)
        request.version = version
        do {
            let result = try await client.score(request)
            try await client.close()
            return result.version
        } catch {
            try? await client.close()
            throw error
        }
    }

    @Test(.timeLimit(.minutes(6))) func versionsAreStagedEverywhereBeforeAnyReplicaServesThem() async throws {
        let etcd = try LocalEtcd(members: 3)
        let s3Server = try LocalS3()
        let work = FileManager.default.temporaryDirectory.appendingPathComponent("arbiter-cluster-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: work, withIntermediateDirectories: true)
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let http = S3Client.makeHTTPClient(eventLoopGroup: group)
        let etcdHTTP = EtcdClient.makeHTTPClient(eventLoopGroup: group)
        var replicas: [Replica] = []
        defer {
            for r in replicas { r.kill() }
            etcd.stop()
            s3Server.stop()
            try? FileManager.default.removeItem(atPath: work)
        }
        do {
            try await scenario(etcd: etcd, s3Server: s3Server, work: work, http: http, etcdHTTP: etcdHTTP, replicas: &replicas)
        } catch {
            for r in replicas { print("--- \(r.name) log ---\n\(r.log.withLockedValue { $0 })") }
            try? await http.shutdown()
            try? await etcdHTTP.shutdown()
            try? await group.shutdownGracefully()
            throw error
        }
        try await http.shutdown()
        try await etcdHTTP.shutdown()
        try await group.shutdownGracefully()
    }

    func scenario(etcd: LocalEtcd, s3Server: LocalS3, work: String, http: HTTPClient, etcdHTTP: HTTPClient, replicas: inout [Replica]) async throws {
        let bucket = "arbiter-cluster"
        let s3 = S3Client(location: try S3Location(endpoint: s3Server.endpoint, bucket: bucket),
                          credentials: S3Credentials(accessKeyID: s3Server.accessKey, secretAccessKey: s3Server.secretKey), http: http)
        try await s3.createBucket()
        let plane = ControlPlane(etcd: try EtcdClient(endpoints: EtcdClient.parseEndpoints(etcd.endpoints), http: etcdHTTP),
                                 keys: try ClusterKeys(), identity: "cluster-tests")

        // The trainer's store: a copy of the fixture's (one trained lead-grading model, v1).
        let trainerPath = work + "/trainer"
        try FileManager.default.createDirectory(atPath: trainerPath, withIntermediateDirectories: true)
        try FileManager.default.copyItem(atPath: Fixture.store + "/data.mdb", toPath: trainerPath + "/data.mdb")
        let trainer = Catalog(environment: try StoreEnvironment.open(path: trainerPath, configuration: StoreConfiguration(mapSize: 1 << 30)))
        let pusher = ArtifactPusher(s3: s3, partSize: 5 << 20, concurrency: 2)
        func push(_ v: UInt64) async throws -> ArtifactManifest {
            let report = try await pusher.push(catalog: trainer, model: "leads", version: v, workDirectory: work + "/push-\(v)", pushedBy: "test")
            try await plane.register(report.manifest)
            return report.manifest
        }
        _ = try await push(1)

        for i in 0..<3 {
            replicas.append(try Replica(name: "r\(i)", store: work + "/r\(i)", etcd: etcd.endpoints, s3: s3Server, bucket: bucket))
        }
        try await Self.poll("three replicas register") { try await plane.replicas().records.count == 3 }
        // Empty stores: nothing is ready yet, and the first version is promoted once every live replica staged it.
        #expect(try await plane.replicas().records.allSatisfy { !$0.ready })
        let first = try await plane.promote(model: "leads", version: 1, timeout: Duration.seconds(90))
        #expect(first.version == 1 && first.epoch == 1)
        func converged(on v: UInt64, count: Int = 3) async throws -> Bool {
            let records = try await plane.replicas().records
            return records.count == count && records.allSatisfy { $0.ready && $0.active["leads"] == v }
        }
        try await Self.poll("every replica serves v1") { try await converged(on: 1) }
        for r in try await plane.replicas().records { #expect(try await Self.score(r.address) == 1) }

        // From here on, load through the balancing client (membership and pins from etcd): no request may fail,
        // and every answer must come from a committed version.
        let membership = EtcdMembership(plane: plane)
        try await membership.load()
        let watching = Task { await membership.run() }
        defer { watching.cancel() }
        let client = BalancedClient(membership: membership)
        defer { Task { await client.close() } }
        let committed = NIOLockedValueBox<Set<UInt64>>([1])
        let answers = NIOLockedValueBox<[UInt64: Int]>([:])
        let failures = NIOLockedValueBox<[String]>([])
        // Which step of the scenario a failed request fell in, and when (to find it in the replicas' logs).
        let phase = NIOLockedValueBox("promotions")
        func step(_ name: String) { phase.withLockedValue { $0 = name } }
        let load = Task {
            await withTaskGroup(of: Void.self) { group in
                for worker in 0..<3 {
                    group.addTask {
                        var i = 0
                        while !Task.isCancelled {
                            do {
                                let r = try await client.score(Fixture.scoreRequest(n: 1 + (i + worker) % 4), deadline: .seconds(5))
                                answers.withLockedValue { $0[r.version, default: 0] += 1 }
                            } catch {
                                let at = Date().formatted(.iso8601.time(includingFractionalSeconds: true))
                                failures.withLockedValue { $0.append("\(at) during \(phase.withLockedValue { $0 }): \(error)") }
                            }
                            i += 1
                            try? await Task.sleep(for: .milliseconds(2))
                        }
                    }
                }
            }
        }
        defer { load.cancel() }

        // Promotions: each version staged everywhere first, then every replica switches; both the version before
        // and the new one answer pins on every replica throughout.
        var active: UInt64 = 1
        var switches: [Int64] = []
        for _ in 0..<4 {
            let v = try Self.republish(trainer)
            _ = try await push(v)
            committed.withLockedValue { _ = $0.insert(v) }   // before the commit: an answer may follow it at once
            let p = try await plane.promote(model: "leads", version: v, timeout: Duration.seconds(60))
            #expect(p.version == v)
            try await Self.poll("every replica serves v\(v)") { try await converged(on: v) }
            for r in try await plane.replicas().records {
                #expect(try await Self.score(r.address) == v)
                #expect(try await Self.score(r.address, version: active) == active)
                switches.append(r.switchMicros["leads"] ?? -1)
            }
            active = v
        }
        #expect(switches.allSatisfy { $0 > 0 && $0 < 5_000_000 }, "commit-to-switch µs: \(switches)")

        // A version that fails validation (a flipped byte in a tensor) is rejected by every replica and never
        // promoted; the active one keeps serving and every replica stays ready.
        step("a version failing validation")
        let bad = try SwapUnderLoadTests.publishFlipped(from: 1, catalog: trainer)
        _ = try await push(bad)
        do {
            _ = try await plane.promote(model: "leads", version: bad, timeout: Duration.seconds(60))
            Issue.record("a version that fails validation was promoted")
        } catch let refusal as ControlPlane.PromotionRefusal {
            guard case .rejected(_, let v, let by) = refusal else { throw refusal }
            #expect(v == bad && !by.isEmpty)
        }
        #expect(try await plane.pointer(plane.keys.active("leads"))?.pointer.version == active)
        try await Self.poll("every replica reports v\(bad) rejected") {
            try await plane.replicas().records.allSatisfy { $0.rejected["leads"]?[String(bad)] != nil && $0.ready }
        }
        #expect(try await converged(on: active))

        // A damaged object (the bytes in the bucket no longer match the manifest's SHA-256): refused the same way.
        step("a damaged object")
        let damagedVersion = try Self.republish(trainer)
        let manifest = try await push(damagedVersion)
        var bytes = try #require(try await s3.get(manifest.object.key!, limit: 64 << 20))
        bytes[bytes.count / 2] ^= 0x10
        try await s3.put(manifest.object.key!, bytes: bytes)
        await #expect(throws: ControlPlane.PromotionRefusal.self) {
            _ = try await plane.promote(model: "leads", version: damagedVersion, timeout: Duration.seconds(60))
        }
        #expect(try await converged(on: active))

        // A replica paused (SIGSTOP) for 2 s: requests it holds are hedged to the others; none fails.
        step("a replica paused")
        kill(replicas[2].process.processIdentifier, SIGSTOP)
        try await Task.sleep(for: .seconds(2))
        kill(replicas[2].process.processIdentifier, SIGCONT)

        // One etcd member killed: a quorum remains, and promotion works as before.
        step("an etcd member lost")
        etcd.kill(0)
        let afterLoss = try Self.republish(trainer)
        _ = try await push(afterLoss)
        committed.withLockedValue { _ = $0.insert(afterLoss) }
        #expect(try await plane.promote(model: "leads", version: afterLoss, timeout: Duration.seconds(60)).version == afterLoss)
        try await Self.poll("every replica serves v\(afterLoss)") { try await converged(on: afterLoss) }
        active = afterLoss
        try etcd.restart(0)

        // A replica that joins with no store begins from the committed version's artifact (seeded: the file is
        // the store the server opens), serves it, and only then says it is ready.
        step("a replica joining")
        replicas.append(try Replica(name: "r3", store: work + "/r3", etcd: etcd.endpoints, s3: s3Server, bucket: bucket))
        try await Self.poll("the new replica catches up") { try await converged(on: active, count: 4) }
        let joined = try #require(try await plane.replicas().records.first { $0.name == "r3" })
        #expect(try await Self.score(joined.address) == active)
        let joinedLog = replicas[3].log.withLockedValue { $0 }
        #expect(joinedLog.contains("seeded the store with leads v\(active)"), "\(joinedLog.suffix(3000))")
        #expect(try FileManager.default.contentsOfDirectory(atPath: work + "/r3").allSatisfy { !$0.hasPrefix(".seed-") })

        // A replica killed: its record goes with its lease, and promotion goes on without it.
        step("a replica killed")
        replicas[1].kill()
        try await Self.poll("the killed replica's record expires", seconds: 30) { try await plane.replicas().records.count == 3 }
        let last = try Self.republish(trainer)
        _ = try await push(last)
        committed.withLockedValue { _ = $0.insert(last) }
        #expect(try await plane.promote(model: "leads", version: last, timeout: Duration.seconds(60)).version == last)
        try await Self.poll("the live replicas serve v\(last)") { try await converged(on: last) }

        load.cancel()
        _ = await load.value
        // Everything that speaks HTTP stops before the test shuts the HTTP client down.
        watching.cancel()
        _ = await watching.value
        let seen = answers.withLockedValue { $0 }
        let stats = client.statistics
        let failed = failures.withLockedValue { $0 }
        #expect(failed.isEmpty, "\(failed.count) failed, first \(failed.prefix(3)), last \(failed.suffix(2)) of \(stats)")
        if !failed.isEmpty {
            for r in replicas { print("--- \(r.name) log ---\n\(r.log.withLockedValue { $0 })") }
        }
        #expect(Set(seen.keys).isSubset(of: committed.withLockedValue { $0 }), "answers by version \(seen); committed \(committed.withLockedValue { $0 })")
        #expect(seen[bad] == nil && seen[damagedVersion] == nil)
        #expect(seen.values.reduce(0, +) > 500, "\(seen)")
        #expect(stats.hedges > 0 || stats.retries > 0, "\(stats)")
        print("cluster test load: answers by version \(seen.sorted { $0.key < $1.key }); \(stats)")
    }
}
