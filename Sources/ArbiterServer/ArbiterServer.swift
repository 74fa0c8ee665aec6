import ArbiterModels
import ArbiterStore
import ArbiterWire
import Logging
import NIOCore
import NIOExtras
import NIOPosix

/// The scoring server: opens the store, loads and validates every model's active version, serves the
/// protocol on a TCP port, and watches the store for newly published versions.
///
/// ```swift
/// let server = try ArbiterServer(configuration: ServerConfiguration(storePath: "var/store"))
/// try await server.start()
/// // ...
/// try await server.shutdown()   // in-flight requests finish first
/// ```
public final class ArbiterServer: @unchecked Sendable {
    public let configuration: ServerConfiguration
    let logger: Logger
    let group: MultiThreadedEventLoopGroup
    /// A separate thread for loading and validating versions, so that serving loops never block on it.
    let loaderGroup: MultiThreadedEventLoopGroup
    let environment: StoreEnvironment
    let loader: ModelLoader
    let state: ServingState
    /// Scores large requests off the event loops (see `ServerConfiguration.offloadCandidates`).
    let pool: NIOThreadPool?
    private var channel: (any Channel)?
    private var quiesce: ServerQuiescingHelper?
    private var watchTask: RepeatedTask?
    private var lastGeneration: UInt64 = 0
    private var shutDown = false

    /// Opens the store and loads every model. Throws if the store cannot be opened.
    public init(configuration: ServerConfiguration, registry: ModelRegistry = BuiltinPlugins.registry(),
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
        lastGeneration = (try? Catalog(environment: environment).generation()) ?? 0
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
        self.quiesce = quiesce
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
        channel = ch
        logger.info("listening on \(ch.localAddress?.description ?? "?") with \(config.threads) threads, store \(config.storePath)")
        if config.pollIntervalMillis > 0 {
            watchTask = loaderGroup.next().scheduleRepeatedTask(initialDelay: .milliseconds(config.pollIntervalMillis),
                                                                delay: .milliseconds(config.pollIntervalMillis)) { [weak self] _ in
                self?.poll()
            }
        }
    }

    /// The port actually bound (useful with port 0).
    public var port: Int? { channel?.localAddress?.port }

    /// What is served now: name, version, kind.
    public var served: [(name: String, version: UInt64, kind: String)] {
        state.table.models.values.map { ($0.name, $0.version, $0.summary.kind) }.sorted { $0.name < $1.name }
    }

    /// Checks the store now and swaps in any new active versions (after validating them). Runs on the
    /// loader thread.
    public func reload() async throws {
        try await loaderGroup.next().submit { self.reloadNow() }.get()
    }

    private var pollsSinceReaderCheck = 0

    private func poll() {
        // Reader slots of dead processes (a killed trainer, an old server) are cleared about every 10 s.
        pollsSinceReaderCheck += 1
        if Int64(pollsSinceReaderCheck) * configuration.pollIntervalMillis >= 10_000 {
            pollsSinceReaderCheck = 0
            let cleared = environment.clearStaleReaders()
            if cleared > 0 { logger.warning("cleared \(cleared) stale LMDB reader slots") }
        }
        guard let g = try? Catalog(environment: environment).generation(), g != lastGeneration else { return }
        reloadNow()
    }

    private func reloadNow() {
        lastGeneration = (try? Catalog(environment: environment).generation()) ?? lastGeneration
        let before = state.table
        let after = loader.loadAll(keeping: before)
        for (name, m) in after.models where before.models[name]?.version != m.version {
            logger.info("swapped in \(name) v\(m.version)")
        }
        state.replace(after)
        environment.clearStaleReaders()
    }

    /// Stops accepting, lets every connection finish what it has read, closes them, and stops the loops.
    public func shutdown() async throws {
        guard !shutDown else { return }
        shutDown = true
        if let t = watchTask {
            let p = loaderGroup.next().makePromise(of: Void.self)
            t.cancel(promise: p)
            try await p.futureResult.get()
        }
        if let quiesce {
            let p = group.next().makePromise(of: Void.self)
            quiesce.initiateShutdown(promise: p)
            try await p.futureResult.get()
            // The helper fails an internal promise when it goes away: let it go while the loops still run.
            self.quiesce = nil
            channel = nil
        }
        try await group.shutdownGracefully()
        try await pool?.shutdownGracefully()
        try await loaderGroup.shutdownGracefully()
        logger.info("stopped")
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
