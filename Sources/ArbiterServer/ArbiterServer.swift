import ArbiterModels
import ArbiterStore
import ArbiterWire
import Logging
import NIOCore
import NIOExtras
import NIOPosix
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
    /// What `start` and `shutdown` change.
    private let lifecycle = NIOLockedValueBox(Lifecycle())
    /// What the store watcher remembers between polls.
    private let watcher: NIOLockedValueBox<Watcher>

    private struct Lifecycle {
        var channel: (any Channel)?
        var quiesce: ServerQuiescingHelper?
        var watchTask: RepeatedTask?
        var shutDown = false
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
        self.configuration = configuration
        self.logger = logger
        environment = try StoreEnvironment.open(path: configuration.storePath, configuration: configuration.store)
        if environment.staleReadersCleared > 0 {
            logger.warning("cleared \(environment.staleReadersCleared) stale reader slots left by dead processes")
        }
        loader = ModelLoader(environment: environment, registry: registry, logger: logger)
        group = MultiThreadedEventLoopGroup(numberOfThreads: configuration.threads)
        loaderGroup = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        watcher = NIOLockedValueBox(Watcher(lastGeneration: (try? Catalog(environment: environment).generation()) ?? 0))
        let table = loader.loadAll()
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
        let quiesce = ServerQuiescingHelper(group: group)
        let config = configuration
        let state = self.state
        let logger = self.logger
        let pool = self.pool
        let bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 1024)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .serverChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(quiesce.makeServerChannelHandler(channel: channel))
                }
            }
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelOption(.maxMessagesPerRead, value: 16)
            .childChannelOption(.writeBufferWaterMark, value: .init(low: 256 << 10, high: 1 << 20))
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let handler = ConnectionHandler(config: config, loopTable: state.local(for: channel.eventLoop),
                                                    pool: pool, logger: logger)
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
        lifecycle.withLockedValue {
            $0.channel = ch
            $0.quiesce = quiesce
            $0.watchTask = task
        }
        logger.info("listening on \(ch.localAddress?.description ?? "?") with \(config.threads) threads, store \(config.storePath)")
    }

    /// The port actually bound (useful with port 0).
    public var port: Int? { lifecycle.withLockedValue { $0.channel?.localAddress?.port } }

    /// What is served now: name, version, kind.
    public var served: [(name: String, version: UInt64, kind: String)] {
        state.table.models.values.map { ($0.name, $0.version, $0.summary.kind) }.sorted { $0.name < $1.name }
    }

    /// Checks the store now and swaps in any new active versions (after validating them). Returns once
    /// every event loop serves the result: a request sent after this returns is answered by it. Throws
    /// when the store cannot be read (for instance ``StoreError/mapOutgrown(path:mapSize:openTransactions:)``);
    /// the models already loaded keep serving.
    public func reload() async throws {
        try await loaderGroup.next().flatSubmit { self.reloadNow() }.get()
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
    private func reloadNow() -> EventLoopFuture<Void> {
        let loop = loaderGroup.next()
        let outcome = watcher.withLockedValue { w -> Result<ModelTable, any Error> in
            switch readGeneration(&w) {
            case .success(let g): w.lastGeneration = g
            case .failure(let error): return .failure(error)
            }
            let before = state.table
            let after = loader.loadAll(keeping: before)
            for (name, m) in after.models where before.models[name]?.version != m.version {
                logger.info("swapped in \(name) v\(m.version)")
            }
            return .success(after)
        }
        switch outcome {
        case .success(let table):
            let switched = state.replace(table)
            environment.clearStaleReaders()
            return switched.hop(to: loop)
        case .failure(let error):
            return loop.makeFailedFuture(error)
        }
    }

    /// Stops accepting, lets every connection finish what it has read, closes them, and stops the loops.
    public func shutdown() async throws {
        let taken = lifecycle.withLockedValue { l -> (task: RepeatedTask?, quiescing: Bool)? in
            guard !l.shutDown else { return nil }
            l.shutDown = true
            defer { l.watchTask = nil }
            return (l.watchTask, l.quiesce != nil)
        }
        guard let taken else { return }
        if let task = taken.task {
            let p = loaderGroup.next().makePromise(of: Void.self)
            task.cancel(promise: p)
            try await p.futureResult.get()
        }
        if taken.quiescing, let quiesced = beginQuiescing() {
            try await quiesced.get()
        }
        // The helper fails an internal promise when it goes away: let go of it while the loops still run.
        // (No reference to it may live in this async frame, which outlives the loops.)
        lifecycle.withLockedValue {
            $0.quiesce = nil
            $0.channel = nil
        }
        try await group.shutdownGracefully()
        try await pool?.shutdownGracefully()
        try await loaderGroup.shutdownGracefully()
        logger.info("stopped")
    }

    /// Closes the listening socket and tells every connection to finish what it has read; the future
    /// completes once all of them have closed.
    private func beginQuiescing() -> EventLoopFuture<Void>? {
        lifecycle.withLockedValue { l in
            guard let helper = l.quiesce else { return nil }
            let p = group.next().makePromise(of: Void.self)
            helper.initiateShutdown(promise: p)
            return p.futureResult
        }
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
