import ArbiterModels
import ArbiterStore
import ArbiterWire
import Logging
import NIOCore
import NIOPosix
import NIOSSL
import NIOConcurrencyHelpers

/// The scoring server: opens the store, loads and validates every model's active version, serves the
/// protocol on a TCP port, and watches the store for newly published versions.
///
/// ```swift
/// var kinds = ModelRegistry()
/// kinds.register(kind: LeadGradingLayout.kind, factory: LeadGradingModel.factory)
/// let server = try ArbiterServer(configuration: ServerConfiguration(storePath: "var/store"), registry: kinds)
/// try await server.start()
/// // ...
/// try await server.shutdown()   // in-flight requests finish first
/// ```
public final class ArbiterServer: Sendable {
    public let configuration: ServerConfiguration
    let logger: Logger
    let group: MultiThreadedEventLoopGroup
    /// A separate thread for loading and validating versions, so that serving loops never block on it.
    /// Every poll and reload runs there, one at a time.
    let loaderGroup: MultiThreadedEventLoopGroup
    let environment: StoreEnvironment
    let loader: ModelLoader
    let state: ServingState
    /// Scores large requests off the event loops (see `ServerConfiguration.offloadCandidates`).
    let pool: NIOThreadPool?
    /// Scores sampled requests with a shadow version, on a thread of its own.
    let shadowScorer: ShadowScorer
    /// Shadow recorders replaced by a reload whose last comparisons are still to be written.
    private let retiredRecorders = NIOLockedValueBox<[ShadowRecorder]>([])
    /// What `start` and `shutdown` change.
    private let lifecycle = NIOLockedValueBox(Lifecycle())
    /// What the store watcher remembers between polls.
    private let watcher: NIOLockedValueBox<Watcher>

    private struct Lifecycle {
        var channel: (any Channel)?
        var watchTask: RepeatedTask?
        var sweepTasks: [RepeatedTask] = []
        var shutDown = false
        /// Why something outside the server (the cluster agent) holds readiness off, if it does.
        var readinessHold: String?
    }
    /// What all connections hold, against `memoryBudgetBytes`.
    let budget: MemoryBudget
    /// The series `/metrics` shows (see `AdminEndpoint`).
    public let metrics = ServerMetrics()
    private let credentials: Credentials
    private let handshakeLog = RateLimitedLog(intervalNanos: 10_000_000_000)
    private let authLog = RateLimitedLog(intervalNanos: 10_000_000_000)
    /// Connections open now (accepted and not yet closed), against `maxConnections`.
    let connectionCount = NIOLockedValueBox(0)
    /// Warnings that could come once per connection attempt are logged at most once per 10 s each.
    private let refusalLog = RateLimitedLog(intervalNanos: 10_000_000_000)
    private let acceptLog = RateLimitedLog(intervalNanos: 10_000_000_000)

    /// Serializes every change of the served table — a reload's swap and a switch to a loaded version — and
    /// remembers the switches a reload that read the store before them must not undo.
    private let tableChanges = NIOLockedValueBox<[String: SwitchOverride]>([:])

    /// A switch made by ``switchToLoaded(model:version:storeGeneration:)``, which the store records from
    /// generation `generation` on.
    private struct SwitchOverride {
        var version: UInt64
        var generation: UInt64
    }

    private struct Watcher {
        var lastGeneration: UInt64
        var pollsSinceReaderCheck = 0
        /// The store outgrew this server's map (logged once, until it is resolved).
        var outgrown = false
    }

    /// Opens the store and loads every model whose kind `registry` knows. Throws if the store cannot be
    /// opened. The server knows no model kind by itself: the executable that links the plugins builds the
    /// registry (arbiterd's `ServedKinds`).
    public init(configuration: ServerConfiguration, registry: ModelRegistry,
                logger: Logger = Logger(label: "arbiterd")) throws {
        guard configuration.threads >= 1 else { throw ServerError.invalidConfiguration("threads must be at least 1") }
        guard configuration.memoryBudgetBytes >= 1 << 20 else { throw ServerError.invalidConfiguration("the memory budget must be at least 1 MiB") }
        self.configuration = configuration
        self.logger = logger
        credentials = try Credentials(tls: configuration.tls, tokenPath: configuration.tokenFile)
        let environment = try StoreEnvironment.open(path: configuration.storePath, configuration: configuration.store)
        self.environment = environment
        budget = MemoryBudget(limit: configuration.memoryBudgetBytes, countsProcess: configuration.countsProcessMemory,
                              storeResident: { environment.residentMapBytes() })
        if environment.staleReadersCleared > 0 {
            logger.warning("cleared \(environment.staleReadersCleared) stale reader slots left by dead processes")
        }
        loader = ModelLoader(environment: environment, registry: registry, logger: logger,
                             records: StoreRecorder(nice: configuration.backgroundNice))
        shadowScorer = ShadowScorer(nice: configuration.backgroundNice)
        group = MultiThreadedEventLoopGroup(numberOfThreads: configuration.threads)
        loaderGroup = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let nice = configuration.backgroundNice
        // SCHED_IDLE, not only a nice value: a niced loader keeps its core for its time slice (a millisecond or
        // two of checksums and golden cases) while an event loop woken there waits; SCHED_IDLE yields at once.
        loaderGroup.next().execute { if nice > 0 && !idleThreadPriority() { lowerThreadPriority(nice) } }
        watcher = NIOLockedValueBox(Watcher(lastGeneration: (try? Catalog(environment: environment).generation()) ?? 0))
        // Only what must serve at start-up (active versions, a split's, a shadow): the retained others load
        // just after the port opens, so the first answer does not wait for them.
        let (table, events) = loader.loadAll(retain: 0)
        for name in table.models.keys { metrics.serving(model: name) }
        for e in events where e.outcome == .rejected { metrics.rejected(model: e.model) }
        state = ServingState(table, loops: Array(group.makeIterator()))
        if configuration.offloadCandidates > 0 {
            let p = NIOThreadPool(numberOfThreads: max(1, configuration.offloadThreads))
            p.start()
            pool = p
        } else {
            pool = nil
        }
        if table.models.isEmpty {
            logger.warning("the store at \(configuration.storePath) has no servable model yet; waiting for a publish")
        }
    }

    /// Binds and starts serving. Returns once the port is open.
    public func start() async throws {
        let config = configuration
        let state = self.state
        let logger = self.logger
        let pool = self.pool
        let count = connectionCount
        let budget = self.budget
        let refusalLog = self.refusalLog, acceptLog = self.acceptLog, handshakeLog = self.handshakeLog
        let authLog = self.authLog
        let credentials = self.credentials
        let metrics = self.metrics
        let admin = AdminHooks(shadow: shadowScorer, reload: { [weak self] in
            guard let self else {
                return MultiThreadedEventLoopGroup.singleton.next().makeFailedFuture(ServerError.invalidConfiguration("the server is gone"))
            }
            return self.loaderGroup.next().flatSubmit { self.reloadNow() }
        }, status: { [weak self] in self?.status() ?? [] })
        let bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 1024)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .serverChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    // Out of file descriptors (or kernel memory), accepting again at once would spin: wait a
                    // little, and say so (once per 10 s).
                    try channel.pipeline.syncOperations.addHandler(AcceptBackoffHandler(backoffProvider: { error in
                        acceptLog.log { suppressed in
                            logger.error("cannot accept connections: \(error)\(suppressed > 0 ? " (\(suppressed) more since the last report)" : ""); retrying in 100 ms")
                        }
                        return .milliseconds(100)
                    }))
                }
            }
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelOption(.maxMessagesPerRead, value: 16)
            .childChannelOption(.writeBufferWaterMark, value: .init(low: 256 << 10, high: 1 << 20))
            .childChannelInitializer { channel in
                let open = count.withLockedValue { n -> Int in
                    n += 1
                    return n
                }
                channel.closeFuture.whenComplete { _ in count.withLockedValue { $0 -= 1 } }
                metrics.connectionsAccepted.increment()
                return channel.eventLoop.makeCompletedFuture {
                    let access = credentials.current
                    if let tls = access.tls {
                        try channel.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: tls))
                        try channel.pipeline.syncOperations.addHandler(HandshakeFailureLog(log: handshakeLog, logger: logger))
                    }
                    if open > config.maxConnections {
                        refusalLog.log { suppressed in
                            logger.warning("refused a connection from \(channel.remoteAddress?.description ?? "?"): \(config.maxConnections) are open, the limit (--max-connections)\(suppressed > 0 ? "; \(suppressed) more refused since the last report" : "")")
                        }
                        metrics.connectionsRefused.increment()
                        try channel.pipeline.syncOperations.addHandler(RefusingHandler(limit: config.maxConnections))
                        return
                    }
                    let handler = ConnectionHandler(config: config, loopTable: state.local(for: channel.eventLoop),
                                                    pool: pool, logger: logger, budget: budget, tokens: access.tokens,
                                                    authLog: authLog, admin: admin)
                    try channel.pipeline.syncOperations.addHandler(handler)
                }
            }
        let ch = try await bootstrap.bind(host: config.host, port: config.port).get()
        var task: RepeatedTask?
        if config.pollIntervalMillis > 0 {
            task = loaderGroup.next().scheduleRepeatedTask(initialDelay: .milliseconds(config.pollIntervalMillis),
                                                           delay: .milliseconds(config.pollIntervalMillis)) { [weak self] _ in
                self?.poll()
            }
        }
        if config.retainedVersions > 0 {
            loaderGroup.next().execute { [weak self] in self?.reloadNow() }
        }
        // Shadow comparisons reach the store about once a second.
        // At most one flush waits in the records queue: while a trainer holds the write lock, flushes are not
        // queued up one a second behind it (each writes everything recorded so far anyway).
        let flushQueued = NIOLockedValueBox(false)
        let shadowFlush = loaderGroup.next().scheduleRepeatedTask(initialDelay: .seconds(1), delay: .seconds(1)) { [weak self] _ in
            guard let self, flushQueued.withLockedValue({ q in defer { q = true }; return !q }) else { return }
            self.loader.records.submit {
                flushQueued.withLockedValue { $0 = false }
                self.flushShadowRecords()
            }
        }
        // The process's memory against the budget, every 100 ms, off the event loops (and freed memory given
        // back to the OS when the allocator keeps much of it).
        let trim = loaderGroup.next().scheduleRepeatedTask(initialDelay: .milliseconds(100), delay: .milliseconds(100)) { _ in
            budget.sample()
        }
        // One deadline sweep per event loop (no timer per connection).
        let period = TimeAmount.milliseconds(max(1, config.sweepIntervalMillis))
        let sweeps = state.loopTables.map { lt in
            lt.loop.scheduleRepeatedTask(initialDelay: period, delay: period) { _ in
                let now = ServerClock.system.nanoseconds()
                for h in lt.connections.values { h.tick(now: now) }
            }
        }
        lifecycle.withLockedValue {
            $0.channel = ch
            $0.watchTask = task
            $0.sweepTasks = sweeps + [trim, shadowFlush]
        }
        budget.sample()
        var memory = "memory budget \(config.memoryBudgetBytes >> 20) MiB"
        if budget.countsProcess {
            memory += " (the process uses \(budget.processBytes >> 20) MiB of it; the store's mapped pages, \(budget.storeBytes >> 20) MiB resident, are not counted)"
        }
        logger.info("listening on \(ch.localAddress?.description ?? "?") (\(Self.describe(credentials.current))) with \(config.threads) threads, store \(config.storePath), at most \(config.maxConnections) connections, \(memory)")
        if budget.countsProcess && budget.processBytes > config.memoryBudgetBytes / 2 {
            logger.warning("the process already uses \(budget.processBytes >> 20) MiB of its \(config.memoryBudgetBytes >> 20) MiB memory budget (models copied out of the store, the runtime): little is left for requests; raise --memory-budget-mib")
        }
    }

    /// Reads the TLS certificate, key, client CA and token file again (arbiterd: on SIGHUP). New connections
    /// use them; open ones keep what they were accepted with. On an error nothing changes and it is thrown.
    /// Returns what is now in force, for the log.
    @discardableResult
    public func reloadCredentials() throws -> String {
        let now = try credentials.reload()
        return Self.describe(now)
    }

    static func describe(_ c: Credentials.Current) -> String {
        let tls = c.tls == nil ? "plain TCP" : "TLS"
        let tokens = c.tokens.map { "\($0.count) token\($0.count == 1 ? "" : "s")" } ?? "no token required"
        return "\(tls), \(tokens)"
    }

    /// The port actually bound (useful with port 0).
    public var port: Int? { lifecycle.withLockedValue { $0.channel?.localAddress?.port } }

    /// What is served now: name, active version, kind.
    public var served: [(name: String, version: UInt64, kind: String)] {
        state.table.models.values.map { ($0.name, $0.active.version, $0.active.summary.kind) }.sorted { $0.name < $1.name }
    }

    /// The versions of `model` loaded now (any of them may be pinned), oldest first.
    public func loadedVersions(of model: String) -> [UInt64] {
        state.table.models[model]?.loaded.map(\.version) ?? []
    }

    /// What this server has made of `model` v`version`: loaded and validated (it may serve, pinned or
    /// activated), rejected by validation (with why), or neither (not in the store, or not among the versions
    /// it keeps loaded).
    public func versionState(model: String, version: UInt64) -> VersionState {
        let table = state.table
        if table.models[model]?.loaded.contains(where: { $0.version == version }) == true { return .loaded }
        if let why = table.rejected[model]?[version] { return .rejected(why) }
        return .absent
    }

    public enum VersionState: Sendable, Equatable {
        case loaded
        case rejected(String)
        case absent
    }

    /// Loads and validates `model` v`version` as a swap would (checksums, the kind's checks, the golden
    /// cases), on the loader thread, without serving it; throws why it fails. For a version of a model this
    /// server does not serve yet, which a reload would not load (a cluster replica staging its first version).
    public func validate(model: String, version: UInt64) async throws {
        try await loaderGroup.next().submit { _ = try self.loader.load(model: model, version: version) }.get()
    }

    /// The store this server serves from (the cluster agent imports staged versions into it).
    public var store: StoreEnvironment { environment }

    /// Holds this server's readiness (`/ready`, ``readiness()``) off, saying why, until called with nil:
    /// a replica that has not staged the version its cluster committed must not receive traffic.
    public func holdReadiness(_ reason: String?) {
        lifecycle.withLockedValue { $0.readinessHold = reason }
    }

    /// Serves `model` at `version` — already loaded and validated here (retained for pins) — without
    /// waiting for the loader: the new table is built on the calling thread and handed to every loop; returns
    /// once every loop serves it, or false (changing nothing) when the version is not loaded. The store must
    /// already name it active, from `storeGeneration` on (the caller activated it there): a reload that read
    /// the store before that keeps this switch instead of undoing it.
    ///
    /// The loader runs in SCHED_IDLE so that validating a new version never takes a core from the event
    /// loops; a switch to a loaded version needs no such work, and must not wait behind it (a cluster replica
    /// switches on the commit, within milliseconds on every replica).
    public func switchToLoaded(model: String, version: UInt64, storeGeneration: UInt64) async throws -> Bool {
        let switched = tableChanges.withLockedValue { overrides -> EventLoopFuture<Void>? in
            var table = state.table
            guard let served = table.models[model], let target = served.loaded.first(where: { $0.version == version }) else {
                return nil
            }
            if served.active.version == version && served.split.isEmpty { return state.loopTables[0].loop.makeSucceededVoidFuture() }
            target.settlePages(serving: true)
            table.models[model] = served.activating(target)
            table.failures[model] = nil
            overrides[model] = SwitchOverride(version: version, generation: storeGeneration)
            logger.info("swapped in \(model) v\(version) (a loaded version, switched at once)")
            metrics.serving(model: model)
            metrics.swapped(model: model)
            // Completed on a serving loop, not the loader's: the loader's thread is in SCHED_IDLE, and a switch
            // waiting for it to run the completion waited as long as for a reload (48 ms at p99 on the cluster
            // bench). The old table it lets go there holds no version this one does not (every loaded version
            // stays), so nothing is unmapped on the loop.
            return state.replace(table, releaseOn: nil)
        }
        guard let switched else { return false }
        try await switched.get()
        return true
    }

    /// Checks the store now and swaps in what changed (after validating it). Returns once every event loop
    /// serves the result: a request sent after this returns is answered by it. Throws when the store cannot
    /// be read (for instance ``StoreError/mapOutgrown(path:mapSize:openTransactions:)``); the models already
    /// loaded keep serving.
    @discardableResult
    public func reload() async throws -> ReloadReport {
        try await loaderGroup.next().flatSubmit { self.reloadNow() }.get()
    }

    /// The shadow version's comparisons so far for `model` (empty without a shadow).
    public func shadowComparisons(of model: String) -> [ShadowComparison] {
        state.table.models[model]?.shadow?.recorder.comparisons ?? []
    }

    /// Sampled requests of `model` waiting for the shadow thread.
    func shadowPending(of model: String) -> Int {
        state.table.models[model]?.shadow?.recorder.pending ?? 0
    }

    /// Waits until what the server has recorded so far (validation verdicts, the versions it keeps loaded) is in
    /// the store. These writes run on a thread of their own, after the swap they describe.
    public func waitForStoreRecords() { loader.records.drain() }

    /// The scheduling of the threads beside the loops, as each sees itself (tests): the loader's and the
    /// records thread's (policy, nice).
    func backgroundScheduling() async throws -> (loader: ThreadScheduling, records: ThreadScheduling) {
        let loader = try await loaderGroup.next().submit { ThreadScheduling.current() }.get()
        return (loader, self.loader.records.scheduling())
    }

    /// LMDB reader slots this process holds open (one per loaded version, while it is loaded or a request
    /// still uses it).
    public func readerSlotsHeld() -> Int { environment.readerSlotsHeld() }

    /// Writes every shadow version's new comparisons to the store (on the loader thread).
    private func flushShadowRecords() {
        guard !environment.readOnly else { return }
        let catalog = Catalog(environment: environment)
        // Retired ones first, and let go once nothing of theirs is queued: their comparisons are all written.
        let retired = retiredRecorders.withLockedValue { r -> [ShadowRecorder] in
            defer { r.removeAll { $0.pending == 0 } }
            return r
        }
        for recorder in retired + state.table.models.values.compactMap(\.shadow?.recorder) {
            guard let record = recorder.takeChanges(by: ModelLoader.identity) else { continue }
            do {
                try catalog.recordShadow(model: recorder.model, version: recorder.version, record)
            } catch {
                logger.warning("could not record the shadow comparisons of \(recorder.model) v\(recorder.version): \(error)")
            }
        }
    }

    /// One tick of the watcher, on the loader thread.
    private func poll() {
        let changed = watcher.withLockedValue { w -> Bool in
            // Reader slots of dead processes (a killed trainer, an old server) are cleared about every 10 s.
            w.pollsSinceReaderCheck += 1
            if Int64(w.pollsSinceReaderCheck) * configuration.pollIntervalMillis >= 10_000 {
                w.pollsSinceReaderCheck = 0
                let cleared = environment.clearStaleReaders()
                if cleared > 0 { logger.warning("cleared \(cleared) stale LMDB reader slots") }
            }
            guard case .success(let g) = readGeneration(&w) else { return false }
            return g != w.lastGeneration
        }
        if changed { reloadNow() }
    }

    /// The store's generation, or why it cannot be read (logged here). A store grown beyond this server's
    /// map is reported once (the loaded versions keep serving; a restart maps the larger store).
    private func readGeneration(_ w: inout Watcher) -> Result<UInt64, any Error> {
        do {
            // A data file cut short under a running server would fault on the first new page read.
            try environment.checkIntegrity()
            let g = try Catalog(environment: environment).generation()
            if w.outgrown {
                w.outgrown = false
                logger.notice("the store is readable again; loading new versions resumes")
            }
            return .success(g)
        } catch let e as StoreError {
            if case .mapOutgrown = e {
                if !w.outgrown {
                    w.outgrown = true
                    logger.error("\(e). Until arbiterd restarts it serves \(served.map { "\($0.name) v\($0.version)" }.joined(separator: ", "))")
                }
            } else {
                logger.error("cannot read the store's generation: \(e)")
            }
            return .failure(e)
        } catch {
            logger.error("cannot read the store's generation: \(error)")
            return .failure(error)
        }
    }

    @discardableResult
    private func reloadNow() -> EventLoopFuture<ReloadReport> {
        let loop = loaderGroup.next()
        let started = ServerClock.system.nanoseconds()
        let outcome = watcher.withLockedValue { w -> Result<(ModelTable, ReloadReport), any Error> in
            let generation: UInt64
            switch readGeneration(&w) {
            case .success(let g): generation = g
            case .failure(let error): return .failure(error)
            }
            w.lastGeneration = generation
            let before = state.table
            let (after, events) = loader.loadAll(keeping: before, retain: configuration.retainedVersions)
            for (name, m) in after.models where before.models[name]?.active.version != m.active.version {
                logger.info("swapped in \(name) v\(m.active.version)")
                metrics.serving(model: name)
                if before.models[name] != nil { metrics.swapped(model: name) }
            }
            for e in events where e.outcome == .rejected { metrics.rejected(model: e.model) }
            let kept = Set(after.models.values.compactMap { $0.shadow.map { ObjectIdentifier($0.recorder) } })
            let replaced = before.models.values.compactMap(\.shadow?.recorder).filter { !kept.contains(ObjectIdentifier($0)) }
            if !replaced.isEmpty { retiredRecorders.withLockedValue { $0 += replaced } }
            return .success((after, ReloadReport(generation: generation, events: events.map {
                ReloadEvent(model: $0.model, version: $0.version, outcome: ReloadEvent.Outcome(rawValue: $0.outcome.rawValue) ?? .loaded,
                            detail: $0.detail)
            })))
        }
        switch outcome {
        case .success(let (loadedTable, report)):
            let loaded = ServerClock.system.nanoseconds()
            let switched = tableChanges.withLockedValue { overrides -> EventLoopFuture<Void> in
                // A switch made while this reload read an older store stands.
                var table = loadedTable
                for (model, o) in overrides {
                    if report.generation >= o.generation {
                        overrides[model] = nil
                        continue
                    }
                    if let served = table.models[model], served.active.version != o.version,
                       let target = served.loaded.first(where: { $0.version == o.version }) {
                        target.settlePages(serving: true)
                        table.models[model] = served.activating(target)
                    }
                }
                return state.replace(table, releaseOn: loop)
            }
            environment.clearStaleReaders()
            let logger = self.logger
            return switched.hop(to: loop).map {
                if report.events.contains(where: { $0.outcome != .unloaded }) {
                    let now = ServerClock.system.nanoseconds()
                    logger.debug("reload: store read, versions loaded and settled in \((loaded - started) / 1000) µs, every loop switched \((now - loaded) / 1000) µs later")
                }
                return report
            }
        case .failure(let error):
            return loop.makeFailedFuture(error)
        }
    }

    // MARK: health and metrics (AdminEndpoint)

    /// Whether this server should receive traffic: listening, not shutting down, and every model in the store
    /// served by a version that loaded and validated. A model whose newest active version failed validation
    /// while an older one serves keeps it ready (a bad publish must not take every replica out; `/metrics`
    /// shows it in `arbiter_model_failing`); a model with no servable version at all does not. `detail` says
    /// why, or what is served.
    public func readiness() -> (ready: Bool, detail: String) {
        let (listening, shutDown, hold) = lifecycle.withLockedValue { ($0.channel != nil, $0.shutDown, $0.readinessHold) }
        if shutDown { return (false, "shutting down") }
        if let hold { return (false, hold) }
        if !listening { return (false, "models loaded; the port is not open yet") }
        let table = state.table
        let unserved = table.failures.filter { table.models[$0.key] == nil }.sorted { $0.key < $1.key }
        if let (name, why) = unserved.first {
            return (false, "model '\(name)' has no version that validated: \(why)" + (unserved.count > 1 ? " (and \(unserved.count - 1) more)" : ""))
        }
        if table.models.isEmpty { return (false, "the store has no servable model yet") }
        var detail = table.models.values.sorted { $0.name < $1.name }.map { "\($0.name) v\($0.active.version)" }.joined(separator: ", ")
        if !table.failures.isEmpty {
            detail += "; failing validation (an older version serves): " + table.failures.keys.sorted().joined(separator: ", ")
        }
        return (true, detail)
    }

    /// nil when every event loop runs a task within `AdminEndpoint.liveWithin`, else what is stuck.
    func liveness(on loop: any EventLoop) -> EventLoopFuture<String?> {
        // Once shut down the serving loops may be gone: nothing is submitted to them.
        if lifecycle.withLockedValue({ $0.shutDown }) { return loop.makeSucceededFuture("shutting down") }
        let tables = state.loopTables
        let promise = loop.makePromise(of: String?.self)
        let answered = NIOLockedValueBox(false)
        let pings = tables.map { lt in lt.loop.submit {} }
        EventLoopFuture.andAllComplete(pings, on: loop).whenComplete { _ in
            if answered.withLockedValue({ a in defer { a = true }; return !a }) { promise.succeed(nil) }
        }
        loop.scheduleTask(in: AdminEndpoint.liveWithin) {
            if answered.withLockedValue({ a in defer { a = true }; return !a }) {
                promise.succeed("an event loop did not run a task within \(AdminEndpoint.liveWithin.nanoseconds / 1_000_000) ms")
            }
        }
        return promise.futureResult
    }

    /// The Prometheus exposition: each loop's counters copied on that loop, added up, with the rest read now.
    func metricsText(on loop: any EventLoop) -> EventLoopFuture<String> {
        if lifecycle.withLockedValue({ $0.shutDown }) { return loop.makeFailedFuture(AdminEndpoint.ShuttingDown()) }
        let table = state.table
        let loaded = Set(table.models.values.flatMap { $0.loaded.map(\.seriesNumber) })
        let copies = state.loopTables.map { lt in lt.loop.submit { lt.metrics.snapshot(keeping: loaded) } }
        let budget = self.budget, environment = self.environment, metrics = self.metrics
        let connections = connectionCount.withLockedValue { $0 }
        let generation = watcher.withLockedValue { $0.lastGeneration }
        let ready = readiness().ready
        var found = table.models.values.map { (name: $0.name, active: $0.active.version, loaded: $0.loaded.count, failing: table.failures[$0.name] != nil) }
        for name in table.failures.keys where table.models[name] == nil { found.append((name, 0, 0, true)) }
        let models = found.sorted { $0.name < $1.name }
        return EventLoopFuture.whenAllSucceed(copies, on: loop).map { snapshots in
            var total = LoopMetrics.Snapshot()
            for s in snapshots { total.add(s) }
            let pages = environment.pageStatistics()
            let readings = ServerMetrics.Readings(
                connections: connections, memoryLimit: budget.limit, memoryInUse: budget.bytesInUse,
                memoryProcess: budget.processBytes, memoryStore: budget.storeBytes, storeGeneration: generation,
                storeMapBytes: pages.maxPages * pages.pageSize, storeUsedBytes: pages.pagesUsed * pages.pageSize,
                storeFileBytes: pages.fileBytes, ready: ready, models: models)
            return metrics.render(readings, requests: total)
        }
    }

    /// Every model's deployment as this server serves it (MODEL_STATUS), sorted by name.
    func status() -> [ModelStatus] {
        let table = state.table
        let names = Set(table.models.keys).union(table.failures.keys).union(table.rejected.keys).sorted()
        return names.map { name in
            let m = table.models[name]
            var versions: [VersionStatus] = []
            for v in m?.loaded ?? [] {
                var roles: VersionRoles = []
                if v.version == m?.active.version { roles.insert(.active) }
                let weight = m?.configuredSplit?.weight(of: v.version)
                if weight != nil { roles.insert(.split) }
                if m?.shadow?.model.version == v.version { roles.insert(.shadow) }
                versions.append(VersionStatus(version: v.version, roles: roles, splitWeight: Float(weight ?? 0)))
            }
            let rejected = (table.rejected[name] ?? [:]).sorted { $0.key < $1.key }.map { RejectedVersion(version: $0.key, reason: $0.value) }
            var shadow: ShadowStatus?
            if let s = m?.shadow {
                shadow = ShadowStatus(version: s.model.version, sample: Float(s.sample), comparisons: s.recorder.comparisons.map {
                    ShadowStatus.Comparison(served: $0.served, requests: $0.requests, rows: $0.rows,
                                            meanAbsDifference: $0.meanAbsDifference, maxAbsDifference: $0.maxAbsDifference,
                                            rankedRequests: $0.rankedRequests, meanRankCorrelation: $0.meanRankCorrelation,
                                            codeRows: $0.codeRows, changedCodes: $0.changedCodes, dropped: $0.dropped,
                                            failed: $0.failed, codeColumn: $0.codeColumn ?? "")
                })
            }
            return ModelStatus(name: name, kind: m?.active.summary.kind ?? "", active: m?.active.version ?? 0, latest: m?.latest ?? 0,
                               failure: table.failures[name] ?? "", versions: versions, rejected: rejected, shadow: shadow)
        }
    }

    /// Stops accepting; lets every connection answer what it has read, tell its client it is closing
    /// (ERROR `SHUTTING_DOWN`) and close once the client has read it (see `ConnectionStateMachine`); then
    /// stops the loops. Returns within about `shutdownGraceMillis` whatever clients do: a connection still
    /// open at the end of the grace period is closed.
    public func shutdown() async throws {
        let taken = lifecycle.withLockedValue { l -> (task: RepeatedTask?, channel: (any Channel)?, sweeps: [RepeatedTask])? in
            guard !l.shutDown else { return nil }
            l.shutDown = true
            defer {
                l.watchTask = nil
                l.channel = nil
                l.sweepTasks = []
            }
            return (l.watchTask, l.channel, l.sweepTasks)
        }
        guard let taken else { return }
        if let task = taken.task {
            let p = loaderGroup.next().makePromise(of: Void.self)
            task.cancel(promise: p)
            try await p.futureResult.get()
        }
        if let channel = taken.channel {
            try? await channel.close()
            let now = ServerClock.system.nanoseconds()
            for lt in state.loopTables {
                lt.loop.execute {
                    for h in lt.connections.values { h.shutdown(now: now) }
                }
            }
            // The sweeps close every connection by the end of the grace period; wait for that (and a little
            // more), then close whatever is left.
            let deadline = now + UInt64(max(0, configuration.shutdownGraceMillis) + 500) * 1_000_000
            while connectionCount.withLockedValue({ $0 }) > 0 && ServerClock.system.nanoseconds() < deadline {
                try? await Task.sleep(nanoseconds: 10_000_000)
            }
            let left = connectionCount.withLockedValue { $0 }
            if left > 0 {
                logger.warning("closing \(left) connection(s) still open after the grace period")
                for lt in state.loopTables {
                    try? await lt.loop.submit { for h in lt.connections.values { h.forceClose() } }.get()
                }
            }
        }
        for sweep in taken.sweeps {
            let p = group.next().makePromise(of: Void.self)
            sweep.cancel(promise: p)
            try? await p.futureResult.get()
        }
        // The pool first: work still queued there is failed back to its connection's event loop, which
        // must still be running to take it.
        try await pool?.shutdownGracefully()
        try await shadowScorer.shutdown()
        loader.records.submit { self.flushShadowRecords() }
        try await loader.records.shutdown()
        try await group.shutdownGracefully()
        try await loaderGroup.shutdownGracefully()
        // The loaded versions' snapshots end here, not when the last reference to the server goes.
        state.clearAfterShutdown()
        logger.info("stopped")
    }
}

/// Answers a connection over the limit with ERROR `TOO_MANY_CONNECTIONS` (request id 0) and closes it.
final class RefusingHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer
    let limit: Int

    init(limit: Int) { self.limit = limit }

    func channelActive(context: ChannelHandlerContext) {
        var out = context.channel.allocator.buffer(capacity: 128)
        ResultEncoder.encodeError(WireError(.tooManyConnections, "the server holds \(limit) connections, its limit; retry later or elsewhere"),
                                  into: &out)
        let channel = context.channel
        context.writeAndFlush(wrapOutboundOut(out)).whenComplete { _ in channel.close(promise: nil) }
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {}  // dropped: the connection is closing
}

/// Logs TLS handshakes that fail (a client without a certificate the CA signed, a plain-TCP client, a
/// client that does not trust the server), at most once per 10 s, then closes the connection.
final class HandshakeFailureLog: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    private let log: RateLimitedLog
    private let logger: Logger

    init(log: RateLimitedLog, logger: Logger) {
        self.log = log
        self.logger = logger
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if case NIOSSLError.uncleanShutdown = error {
            // The client closed TCP without TLS's close_notify: common, and no fault of the server's.
            context.close(promise: nil)
            return
        }
        if error is NIOSSLError || error is BoringSSLError {
            let peer = context.channel.remoteAddress?.description ?? "?"
            log.log { suppressed in
                logger.warning("TLS with \(peer) failed: \(error)\(suppressed > 0 ? " (\(suppressed) more since the last report)" : "")")
            }
            context.close(promise: nil)
            return
        }
        context.fireErrorCaught(error)
    }
}

/// Logs at most once per interval; the next log says how many were suppressed in between.
final class RateLimitedLog: Sendable {
    private let intervalNanos: UInt64
    private let state = NIOLockedValueBox((last: UInt64(0), suppressed: 0))

    init(intervalNanos: UInt64) { self.intervalNanos = intervalNanos }

    func log(_ body: (_ suppressed: Int) -> Void) {
        let now = ServerClock.system.nanoseconds()
        let suppressed = state.withLockedValue { s -> Int? in
            if s.last != 0 && now &- s.last < intervalNanos {
                s.suppressed += 1
                return nil
            }
            defer { s = (now, 0) }
            return s.suppressed
        }
        if let suppressed { body(suppressed) }
    }
}

/// Errors starting the server.
public enum ServerError: Error, CustomStringConvertible {
    case invalidConfiguration(String)

    public var description: String {
        switch self {
        case .invalidConfiguration(let s): "invalid configuration: \(s)"
        }
    }
}
