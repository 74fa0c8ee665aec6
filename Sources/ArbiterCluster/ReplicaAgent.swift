import ArbiterStore
import Foundation
import Logging

/// What the replica agent needs of the server beside it (arbiterd adapts `ArbiterServer` to it): the local
/// store, a reload that returns once every loop serves its result, and what it has loaded or rejected.
public protocol ReplicaHost: Sendable {
    var localStore: StoreEnvironment { get }
    /// Reads the store now and swaps in what changed; returns once every event loop serves the result.
    func reloadStore() async throws
    /// Serves `model` at `version`, already loaded, at once (the store names it active from
    /// `storeGeneration` on); false if it is not loaded.
    func switchToLoaded(model: String, version: UInt64, storeGeneration: UInt64) async throws -> Bool
    func loadedVersions(of model: String) -> [UInt64]
    /// Why validation rejected `model` v`version`, if it did.
    func rejection(of model: String, version: UInt64) -> String?
    /// The version each model serves unpinned requests with.
    func servedVersions() -> [String: UInt64]
    /// Loads and validates a version without serving it (for a model the server serves no version of yet).
    func validate(model: String, version: UInt64) async throws
    func serverReadiness() -> (ready: Bool, detail: String)
    /// Holds the server's own readiness off with `reason` (nil releases it).
    func holdReadiness(_ reason: String?)
}

public struct ReplicaAgentConfiguration: Sendable {
    /// This replica's name in the cluster (its record's key): unique, stable across restarts.
    public var name: String
    /// HOST:PORT clients reach its scoring port at.
    public var address: String
    public var adminAddress: String?
    /// The lease holding its record: the record disappears this long after the replica does.
    public var leaseSeconds: Int = 10
    /// Downloads start after a random delay up to this, so replicas do not all hit the bucket at once.
    public var downloadJitter: Duration = .milliseconds(500)
    /// Where artifacts are downloaded and decompressed before the import (removed after).
    public var workDirectory: String
    /// How often the whole state is read again, beside the watch (a watch that went silent is caught by it).
    public var resyncInterval: Duration = .seconds(2)
    /// Slots shared with the other replicas of this host, one held while a version is downloaded and imported
    /// (nil: none).
    public var downloadSlots: DownloadSlots?

    public init(name: String, address: String, adminAddress: String? = nil, workDirectory: String) {
        self.name = name
        self.address = address
        self.adminAddress = adminAddress
        self.workDirectory = workDirectory
    }
}

/// A replica's part in the cluster, running beside its server: it watches each model's `target` and
/// `active` in etcd; stages a target (downloads it from S3 with jitter, one download at a time, checks its
/// SHA-256s, imports it into the local store as a retained version, lets the server validate it) and reports
/// `staged` or `rejected` in its lease-held record; and switches the server to a committed `active` version
/// as soon as the watch reports it — a local activation and a reload, with the version already loaded.
///
/// A replica that does not serve the committed version (it could not stage it, or is still staging it after
/// a start) holds its server's readiness off and says `ready: false`, so balancing clients and Kubernetes
/// send it nothing; it never serves a version the cluster has moved past as if it were current. With etcd
/// unreachable it keeps serving what it has and retries.
public actor ReplicaAgent {
    let configuration: ReplicaAgentConfiguration
    let host: any ReplicaHost
    let plane: ControlPlane
    let fetcher: ArtifactFetcher
    let logger: Logger

    var targets: [String: VersionPointer] = [:]
    var actives: [String: VersionPointer] = [:]
    var staging: [String: (version: UInt64, task: Task<Void, Never>)] = [:]
    /// Why staging a version failed for good (corrupt artifact, validation), per model and version.
    var rejected: [String: [UInt64: String]] = [:]
    /// A transient staging failure, shown in the record's detail while it is retried.
    var stagingTrouble: [String: String] = [:]
    var switchMicros: [String: Int64] = [:]
    /// Versions of models the server serves nothing of yet, imported and validated without being loaded: a
    /// reload loads only models with an active version, so a first version is checked on its own.
    var validatedOnly: [String: Set<UInt64>] = [:]
    /// Of those, the committed versions staged as a model's first here and not validated apart (loading them on
    /// activation validates them): unlike a version validated ahead of its commit, they hold readiness until
    /// they serve — the replica is joining, or catching up, and must not take that model's traffic before.
    var loadingOnActivation: [String: Set<UInt64>] = [:]
    var lease: Int64 = 0
    /// The cluster's targets and actives have been read once: until then the replica cannot tell it is behind.
    var synced = false
    var published: ReplicaRecord?
    /// Activations in progress, so that two watch events do not switch the same model at once.
    var switching: Set<String> = []
    let downloads = Gate()
    /// Checking, decompressing and importing staged versions: at idle priority, off the serving cores' way.
    let background = BackgroundWork()

    public init(configuration: ReplicaAgentConfiguration, host: any ReplicaHost, plane: ControlPlane, fetcher: ArtifactFetcher,
                logger: Logger) {
        self.configuration = configuration
        self.host = host
        self.plane = plane
        self.fetcher = fetcher
        self.logger = logger
    }

    /// Runs until the task is cancelled; then revokes the lease (the record goes at once).
    public func run() async {
        host.holdReadiness(Self.readinessHold(synced: false, actives: [:], served: [:], loaded: { _ in [] }, validatedOnly: [:],
                                              loadingOnActivation: [:]))
        await withTaskGroup(of: Void.self) { group in
            group.addTask { await self.leaseLoop() }
            group.addTask { await self.watchLoop() }
            group.addTask { await self.resyncLoop() }
            await group.waitForAll()
        }
        for (_, s) in staging { s.task.cancel() }
        if lease != 0 { try? await plane.etcd.revokeLease(lease) }
        try? await background.shutdown()
    }

    // MARK: Loops

    func leaseLoop() async {
        var renewed = ContinuousClock.now
        var failedRenewals = 0
        while !Task.isCancelled {
            do {
                if lease == 0 {
                    lease = try await plane.etcd.grantLease(ttl: configuration.leaseSeconds)
                    renewed = .now
                    published = nil
                    await publish()
                }
                let asked = ContinuousClock.now
                let ttl = try await plane.etcd.keepAlive(lease: lease)
                logger.debug("lease \(lease) renewed: \(ttl) s, answered in \((ContinuousClock.now - asked).wholeMilliseconds) ms")
                renewed = .now
                if failedRenewals > 0 { logger.info("the cluster lease is renewed again after \(failedRenewals) failed attempts") }
                failedRenewals = 0
            } catch EtcdError.leaseExpired {
                logger.warning("the cluster lease expired (last renewed \((ContinuousClock.now - renewed).wholeMilliseconds) ms ago, for \(configuration.leaseSeconds) s); taking a new one")
                lease = 0
                continue
            } catch {
                // Soon again (another member may answer), well before the lease lapses; said once per outage.
                if failedRenewals == 0 { logger.warning("cannot renew the cluster lease (trying again every 250 ms): \(error)") }
                failedRenewals += 1
                do { try await Task.sleep(for: .milliseconds(250)) } catch { return }
                continue
            }
            do { try await Task.sleep(for: .seconds(max(1, configuration.leaseSeconds / 3))) } catch { return }
        }
    }

    func watchLoop() async {
        var from: Int64 = 0
        while !Task.isCancelled {
            do {
                if from == 0 { from = try await resync() + 1 }
                let last = try await plane.etcd.watch(plane.keys.models, prefix: true, startRevision: from) { events, _ in
                    await self.apply(events)
                }
                from = last + 1
            } catch {
                if Task.isCancelled { return }
                logger.debug("the watch of the cluster's models ended (\(error)); reading them again")
                from = 0
                do { try await Task.sleep(for: .milliseconds(200)) } catch { return }
            }
        }
    }

    func resyncLoop() async {
        while !Task.isCancelled {
            do { try await Task.sleep(for: configuration.resyncInterval) } catch { return }
            do { _ = try await resync() } catch {
                logger.debug("cannot read the cluster's models: \(error)")
            }
        }
    }

    // MARK: State

    /// Reads every model's target and active, and acts on them. Returns the revision read at.
    @discardableResult
    func resync() async throws -> Int64 {
        let (kvs, revision) = try await plane.etcd.range(plane.keys.models, prefix: true)
        var t: [String: VersionPointer] = [:], a: [String: VersionPointer] = [:]
        for kv in kvs {
            guard let (model, kind) = plane.keys.parseModelKey(kv.key), kind == "target" || kind == "active" else { continue }
            guard let p = try? Records.decode(VersionPointer.self, kv.value, key: kv.key) else {
                logger.error("etcd key \(kv.key) does not hold a version pointer; ignored")
                continue
            }
            if kind == "target" { t[model] = p } else { a[model] = p }
        }
        // A watch event applied while this read was on its way is newer than what it read: epochs only grow.
        for (model, p) in t { if let cur = targets[model], cur.epoch > p.epoch { t[model] = cur } }
        for (model, p) in a { if let cur = actives[model], cur.epoch > p.epoch { a[model] = cur } }
        targets = t
        actives = a
        synced = true
        await reconcile()
        return revision
    }

    func apply(_ events: [EtcdEvent]) async {
        for e in events {
            guard let (model, kind) = plane.keys.parseModelKey(e.kv.key), kind == "target" || kind == "active" else { continue }
            let p = e.kind == .put ? try? Records.decode(VersionPointer.self, e.kv.value, key: e.kv.key) : nil
            let current = kind == "target" ? targets[model] : actives[model]
            if let p, let current, current.epoch > p.epoch { continue }
            if kind == "target" { targets[model] = p } else { actives[model] = p }
        }
        await reconcile()
    }

    /// Moves this replica toward what etcd says: switch to committed versions it has loaded, stage the ones it
    /// lacks, then report.
    func reconcile() async {
        let served = host.servedVersions()
        for (model, active) in actives where served[model] != active.version {
            if host.loadedVersions(of: model).contains(active.version) || validatedOnly[model]?.contains(active.version) == true {
                await activate(model: model, pointer: active)
            } else {
                startStaging(model: model, version: active.version)
            }
        }
        for (model, target) in targets {
            let has = host.loadedVersions(of: model).contains(target.version) || host.servedVersions()[model] == target.version
                || validatedOnly[model]?.contains(target.version) == true
            if !has { startStaging(model: model, version: target.version) }
        }
        await publish()
    }

    func activate(model: String, pointer: VersionPointer) async {
        guard !switching.contains(model) else { return }
        switching.insert(model)
        defer { switching.remove(model) }
        do {
            let received = Int64(Date().timeIntervalSince1970 * 1_000_000) - pointer.unixMicros
            let started = ContinuousClock.now
            let catalog = Catalog(environment: host.localStore)
            try catalog.activate(model: model, version: pointer.version)
            let generation = try catalog.generation()
            let written = ContinuousClock.now
            // Loaded and validated already: switched at once. A first version (validated, not loaded) goes
            // through a reload, which loads it.
            if try await !host.switchToLoaded(model: model, version: pointer.version, storeGeneration: generation) {
                try await host.reloadStore()
            }
            let reloaded = ContinuousClock.now
            if host.servedVersions()[model] != pointer.version, let why = host.rejection(of: model, version: pointer.version) {
                // A first version loaded on activation failed its checks here: reported, not retried.
                rejected[model, default: [:]][pointer.version] = why
                validatedOnly[model]?.remove(pointer.version)
                loadingOnActivation[model]?.remove(pointer.version)
                logger.error("\(model) v\(pointer.version) failed validation here: \(why)")
                return
            }
            guard host.servedVersions()[model] == pointer.version else {
                logger.error("\(model) v\(pointer.version) was activated locally, but the server serves v\(host.servedVersions()[model].map(String.init) ?? "-")")
                return
            }
            let micros = Int64(Date().timeIntervalSince1970 * 1_000_000) - pointer.unixMicros
            switchMicros[model] = micros
            logger.info("switched \(model) to v\(pointer.version) (epoch \(pointer.epoch)), \(micros) µs after it was committed: seen after \(received) µs, local activation \((written - started).wholeMicroseconds) µs, swap \((reloaded - written).wholeMicroseconds) µs")
        } catch {
            logger.error("cannot switch \(model) to v\(pointer.version): \(error)")
        }
    }

    /// Starts staging `version` of `model` unless it is staging already (a newer target replaces an older one).
    func startStaging(model: String, version: UInt64) {
        if let s = staging[model] {
            if s.version == version { return }
            // The committed version comes first: never drop it for a target.
            if actives[model]?.version == s.version && !host.loadedVersions(of: model).contains(s.version) { return }
            s.task.cancel()
        }
        if rejected[model]?[version] != nil { return }
        let task = Task { await self.stage(model: model, version: version) }
        staging[model] = (version, task)
    }

    func stage(model: String, version: UInt64) async {
        var failures = 0
        while !Task.isCancelled {
            do {
                try await stageOnce(model: model, version: version)
                stagingTrouble[model] = nil
                break
            } catch let error as ClusterError {
                if case .corruptArtifact = error {
                    rejected[model, default: [:]][version] = "\(error)"
                    logger.error("\(model) v\(version) cannot be staged: \(error)")
                    break
                }
                failures += 1
                stagingTrouble[model] = "staging \(model) v\(version): \(error) (attempt \(failures))"
                logger.warning("staging \(model) v\(version) failed (attempt \(failures)), retrying: \(error)")
            } catch is CancellationError {
                break
            } catch {
                failures += 1
                stagingTrouble[model] = "staging \(model) v\(version): \(error) (attempt \(failures))"
                logger.warning("staging \(model) v\(version) failed (attempt \(failures)), retrying: \(error)")
            }
            try? await Task.sleep(for: .milliseconds(min(5_000, 200 << min(failures, 5))))
        }
        if staging[model]?.version == version { staging[model] = nil }
        await reconcile()
    }

    /// Download, check, import, let the server validate. A validation failure is a rejection (final).
    func stageOnce(model: String, version: UInt64) async throws {
        let catalog = Catalog(environment: host.localStore)
        let present = try catalog.versions(model: model).contains { $0.meta.version == version }
        if !present {
            let jitterMillis = configuration.downloadJitter.wholeMilliseconds
            if jitterMillis > 0 { try await Task.sleep(for: .milliseconds(Int64.random(in: 0...jitterMillis))) }
            try await downloads.run {
                guard let manifest = try await fetcher.manifest(model: model, version: version) else {
                    throw ClusterError.configuration("\(model) v\(version) has no manifest in the bucket")
                }
                let dir = configuration.workDirectory + "/\(model)-\(version)-\(UUID().uuidString)"
                defer { try? FileManager.default.removeItem(atPath: dir) }
                // Held through the import too: overlapping one replica's import with another's download made
                // both three times slower here (docs/CLUSTER.md, "Download slots").
                let slot = try await configuration.downloadSlots?.acquire(logger: logger)
                defer { slot?.release() }
                let timings = try await fetcher.fetch(manifest, into: dir, background: background)
                if let slot, slot.waited >= .milliseconds(100) {
                    logger.info("\(model) v\(version) waited \(slot.waited.wholeMilliseconds) ms for a download slot")
                }
                let started = ContinuousClock.now
                let outcome = try await background.run {
                    let artifact = try StoreEnvironment.open(path: dir, configuration: StoreConfiguration(readOnly: true))
                    return try catalog.importVersion(from: artifact, model: model, version: version)
                }
                let importSeconds = (ContinuousClock.now - started).seconds
                logger.info("fetched \(model) v\(version): \(timings.map(\.description).joined(separator: "; ")); \(StageTiming(name: "import", bytes: manifest.store.bytes, seconds: importSeconds)) (\(outcome))")
            }
        }
        try await host.reloadStore()
        if host.loadedVersions(of: model).contains(version) {
            logger.info("staged \(model) v\(version): loaded and validated")
            return
        }
        if let why = host.rejection(of: model, version: version) {
            rejected[model, default: [:]][version] = why
            logger.error("\(model) v\(version) failed validation here: \(why)")
            return
        }
        if host.servedVersions()[model] == nil {
            if actives[model]?.version == version {
                // Committed already (a replica joining, or one that lost it): loading it on activation checks
                // exactly what validating it would, so it is not checked twice before it can serve.
                validatedOnly[model, default: []].insert(version)
                loadingOnActivation[model, default: []].insert(version)
                logger.info("staged \(model) v\(version): the committed version, the first of \(model) here; it loads now")
                return
            }
            do {
                try await host.validate(model: model, version: version)
            } catch {
                rejected[model, default: [:]][version] = "\(error)"
                logger.error("\(model) v\(version) failed validation here: \(error)")
                return
            }
            validatedOnly[model, default: []].insert(version)
            logger.info("staged \(model) v\(version): validated (the first version of \(model) here; it loads when committed)")
            return
        }
        throw ClusterError.configuration("\(model) v\(version) was imported but the server did not load it (arbiterd --retain must be 1 or more in a cluster)")
    }

    // MARK: Reporting

    /// Why this replica must not take traffic yet, or nil when it may. Until it has read what the cluster
    /// committed (`synced`) it cannot know it is behind: a replica joining with a seeded store would otherwise
    /// say ready while serving none of the other committed models, and be sent their requests.
    /// Behind: a committed version this replica does not serve. One it has loaded is being switched to (a
    /// matter of milliseconds, and pins to it are answered already, as the model is served): reporting the
    /// replica not ready for that instant would take every replica out of every client's view at each commit —
    /// but a model served not at all here answers no pin, loaded or not.
    /// Nor is a model's first version, validated here and loading on its activation: the replica serves no
    /// version of that model to fall behind with, and its other models must not leave the clients' view while a
    /// large first version loads (that took every replica out at once for seconds) — unless that version was
    /// committed before it was staged here (`loadingOnActivation`: the replica is joining, or catching up).
    static func readinessHold(synced: Bool, actives: [String: UInt64], served: [String: UInt64],
                              loaded: (String) -> [UInt64], validatedOnly: [String: Set<UInt64>],
                              loadingOnActivation: [String: Set<UInt64>]) -> String? {
        guard synced else { return "joining the cluster: reading what it has committed" }
        var behind: [String] = []
        for (model, active) in actives where served[model] != active {
            if served[model] != nil && loaded(model).contains(active) { continue }
            if served[model] == nil && validatedOnly[model]?.contains(active) == true
                && loadingOnActivation[model]?.contains(active) != true { continue }
            behind.append("\(model) v\(active) is committed; this replica serves \(served[model].map { "v\($0)" } ?? "nothing")")
        }
        return behind.isEmpty ? nil : behind.sorted().joined(separator: "; ")
    }

    func currentRecord() -> ReplicaRecord {
        let served = host.servedVersions()
        var staged: [String: [UInt64]] = [:]
        for model in Set(served.keys).union(targets.keys).union(actives.keys) {
            let loaded = Set(host.loadedVersions(of: model)).union(validatedOnly[model] ?? [])
            if !loaded.isEmpty { staged[model] = loaded.sorted() }
        }
        let hold = Self.readinessHold(synced: synced, actives: actives.mapValues(\.version), served: served,
                                      loaded: { self.host.loadedVersions(of: $0) }, validatedOnly: validatedOnly,
                                      loadingOnActivation: loadingOnActivation)
        host.holdReadiness(hold)
        let server = host.serverReadiness()
        let ready = hold == nil && server.ready
        var detail = hold ?? server.detail
        if let trouble = stagingTrouble.values.sorted().first { detail += "; " + trouble }
        var rejectedOut: [String: [String: String]] = [:]
        for (model, versions) in rejected {
            rejectedOut[model] = Dictionary(uniqueKeysWithValues: versions.map { (String($0.key), $0.value) })
        }
        var record = ReplicaRecord(name: configuration.name, address: configuration.address, adminAddress: configuration.adminAddress,
                                   ready: ready, detail: detail, active: served, staged: staged, rejected: rejectedOut,
                                   switchMicros: switchMicros)
        record.unixMillis = published?.unixMillis ?? record.unixMillis
        return record
    }

    /// Writes the record when it changed (under the lease).
    func publish() async {
        var record = currentRecord()
        // Clients send traffic to ready replicas only: until this one is ready, staging has no requests to yield to.
        background.yieldsToServing(record.ready)
        guard lease != 0, record != published else { return }
        record.unixMillis = Int64(Date().timeIntervalSince1970 * 1000)
        do {
            try await plane.etcd.put(plane.keys.replica(configuration.name), Records.encode(record), lease: lease)
            published = record
        } catch {
            logger.warning("cannot write this replica's record to etcd: \(error)")
        }
    }
}

/// One body at a time (downloads: the bucket and the disk are shared by every replica on a host).
actor Gate {
    private var busy = false
    private var waiters: [CheckedContinuation<Void, Never>] = []

    func run<T: Sendable>(_ body: @Sendable () async throws -> T) async throws -> T {
        if busy {
            await withCheckedContinuation { waiters.append($0) }
        }
        busy = true
        defer {
            if waiters.isEmpty { busy = false } else { waiters.removeFirst().resume() }
        }
        return try await body()
    }
}
