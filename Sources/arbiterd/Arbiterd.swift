import ArbiterServer
import ArbiterStore
import ArbiterWire
import ArgumentParser
import Dispatch
import Foundation
import Logging
import Metrics
import Prometheus

@main
struct Arbiterd: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "arbiterd",
        abstract: "Arbiter scoring server: serves the models in an LMDB store over the Arbiter binary protocol.")

    @Option(help: "The store directory written by arbiter-train.")
    var store: String

    @Option(help: "Address to listen on, HOST:PORT.")
    var listen: String = "127.0.0.1:7878"

    @Option(help: "Event-loop threads (default: one per core the process may run on; honours taskset and cgroup limits).")
    var threads: Int?

    @Option(help: "Largest request body in bytes.")
    var maxFrameBytes: UInt32 = Limits.default.maxFrameBytes

    @Option(help: "Most candidates per SCORE.")
    var maxCandidates: UInt32 = Limits.default.maxCandidates

    @Option(help: "Most requests a client may pipeline on one connection.")
    var maxInFlight: UInt32 = Limits.default.maxInFlight

    @Option(help: "SCOREs with at least this many candidates are scored on a thread pool (0 = always inline).")
    var offloadCandidates: Int = 1_000

    @Option(help: ArgumentHelp(
        "Map the store with at least this many GiB of address space (default: the size the store records).",
        discussion: "The store records its map size; this can only raise it for this server. A larger map is address space, not memory."))
    var mapSizeGib: Int?

    @Option(help: "How often to check the store for new versions, in ms (0 = never). RELOAD checks at once.")
    var pollMs: Int64 = 100

    @Option(help: "Versions of each model kept loaded for pins besides the active one, a split's and a shadow: the newest K others that no server rejected.")
    var retain: Int = 2

    @Option(help: "Above 0: the threads that load and validate versions and score the shadow run in SCHED_IDLE, the thread that writes records at this nice value; 0: all as the event loops.")
    var backgroundNice: Int32 = 10

    @Flag(help: "Take RELOAD from any address (with a token holding the admin right, when --tokens is set), not only from loopback.")
    var remoteAdmin = false

    @Option(help: "Most connections served at once; more are answered TOO_MANY_CONNECTIONS and closed (default: 10,000, or fewer if the file limit is lower).")
    var maxConnections: Int?

    @Option(help: "MiB of memory the server may use: its resident memory (RSS) less the store's mapped pages (the kernel's page cache), counting what connections hold as they take it; over it, SCOREs from clients that hold much and do not read are shed with OVERLOADED (default: a quarter of the machine's or cgroup's memory).")
    var memoryBudgetMib: Int?

    @Option(help: "A stamped SCORE that waited more than this many ms before the server read it is answered OVERLOADED (0 = never).")
    var maxQueueMs: Int64 = 100

    @Option(help: "Serve TLS with this certificate chain (PEM); needs --tls-key. Reread on SIGHUP.")
    var tlsCert: String?

    @Option(help: "The private key (PEM) of --tls-cert.")
    var tlsKey: String?

    @Option(help: "Mutual TLS: clients must present a certificate signed by this CA (PEM); needs --tls-cert.")
    var tlsClientCa: String?

    @Option(help: ArgumentHelp(
        "Require a token in HELLO, checked against this file of SHA-256 hashes with rights (score, info, admin). Reread on SIGHUP.",
        discussion: "One entry a line: SHA256-HEX RIGHTS NAME, e.g. '9f86…0a08 score,info pricing-svc'. `arbiter token --rights score --name NAME` makes a token and its line."))
    var tokens: String?

    @Option(help: "A connection must complete HELLO within this many ms (0 = no limit).")
    var helloTimeoutMs: Int64 = 10_000

    @Option(help: "A connection idle this many ms (nothing read, nothing being scored) is closed (0 = never).")
    var idleTimeoutMs: Int64 = 120_000

    @Option(help: "A frame must be complete this many ms after its first byte arrives (0 = no limit).")
    var frameTimeoutMs: Int64 = 10_000

    @Option(help: "On SIGTERM, connections are closed and the server exits within about this many ms, whatever clients do.")
    var shutdownGraceMs: Int64 = 10_000

    @Option(help: ArgumentHelp(
        "Serve /metrics (Prometheus), /live and /ready over HTTP on PORT or HOST:PORT (a bare port binds 127.0.0.1). Off by default.",
        discussion: "/ready answers 200 once every model in the store is served by a validated version; the port opens before the models load."))
    var metricsListen: String?

    @Flag(help: "Create an empty store when --store holds none, and wait for a publish (otherwise that is an error).")
    var create = false

    @Flag(help: ArgumentHelp(
        "Open the store read-only (MDB_RDONLY): for a store this server may not write.",
        discussion: "LMDB still records readers in the store's lock.mdb, which must then exist and be writable by this server, "
            + "unless the store is on a read-only file system. New versions are still picked up; validation outcomes are only logged."))
    var readOnly = false

    @Option(help: ArgumentHelp(
        "Serve only these model kinds (comma-separated); a version of another kind fails validation, naming the kinds served.",
        discussion: "Default: every kind this build links (lead-grading, gbdt, ranking, routing, allocation)."))
    var kinds: String?

    @Flag(help: "Refuse zstd even when a client offers it.")
    var noCompression = false

    @Option(help: "Log level: trace, debug, info, notice, warning, error, critical.")
    var logLevel: String = "info"

    @OptionGroup(title: "Cluster") var cluster: ClusterOptions

    func validate() throws {
        guard parseListen() != nil else { throw ValidationError("--listen must be HOST:PORT with a port in 0...65535, got '\(listen)'") }
        if let t = threads, !(1...512).contains(t) { throw ValidationError("--threads must be in 1...512") }
        guard maxFrameBytes >= 1024 else { throw ValidationError("--max-frame-bytes must be at least 1024") }
        guard maxCandidates >= 1 else { throw ValidationError("--max-candidates must be at least 1") }
        guard maxInFlight >= 1 else { throw ValidationError("--max-in-flight must be at least 1") }
        if let m = mapSizeGib, !(1...4096).contains(m) { throw ValidationError("--map-size-gib must be in 1...4096") }
        guard offloadCandidates >= 0 else { throw ValidationError("--offload-candidates must be >= 0") }
        guard pollMs >= 0 else { throw ValidationError("--poll-ms must be >= 0") }
        guard (0...19).contains(backgroundNice) else { throw ValidationError("--background-nice must be in 0...19, got \(backgroundNice)") }
        guard (0...64).contains(retain) else { throw ValidationError("--retain must be in 0...64, got \(retain)") }
        if let m = memoryBudgetMib, !(16...1_048_576).contains(m) { throw ValidationError("--memory-budget-mib must be in 16...1048576") }
        if let m = maxConnections, m < 1 { throw ValidationError("--max-connections must be at least 1") }
        for (name, v) in [("--hello-timeout-ms", helloTimeoutMs), ("--idle-timeout-ms", idleTimeoutMs), ("--frame-timeout-ms", frameTimeoutMs)] {
            guard (0...86_400_000).contains(v) else { throw ValidationError("\(name) must be in 0...86400000 (a day), got \(v)") }
        }
        guard (0...600_000).contains(maxQueueMs) else { throw ValidationError("--max-queue-ms must be in 0...600000, got \(maxQueueMs)") }
        guard (0...600_000).contains(shutdownGraceMs) else { throw ValidationError("--shutdown-grace-ms must be in 0...600000, got \(shutdownGraceMs)") }
        if let kinds {
            let known = Set(ServedKinds.linked().kinds)
            let asked = kinds.split(separator: ",").map(String.init)
            guard !asked.isEmpty, asked.allSatisfy(known.contains) else {
                throw ValidationError("--kinds takes a comma-separated list of \(known.sorted().joined(separator: ", ")); got '\(kinds)'")
            }
        }
        if cluster.enabled {
            guard !readOnly else { throw ValidationError("a cluster replica writes the versions it stages into its store: --read-only does not go with --cluster-etcd") }
            guard retain >= 1 else { throw ValidationError("a cluster replica keeps the versions it stages loaded: --retain must be 1 or more with --cluster-etcd") }
        }
        guard !(create && readOnly) else { throw ValidationError("--create and --read-only exclude each other: a new store must be written") }
        guard (tlsCert == nil) == (tlsKey == nil) else { throw ValidationError("--tls-cert and --tls-key go together") }
        guard tlsClientCa == nil || tlsCert != nil else { throw ValidationError("--tls-client-ca needs --tls-cert and --tls-key: mutual TLS is TLS") }
        guard Logger.Level(rawValue: logLevel) != nil else { throw ValidationError("unknown --log-level '\(logLevel)'") }
        if let m = metricsListen {
            guard let (_, port) = Self.parseHostPort(m, defaultHost: "127.0.0.1") else {
                throw ValidationError("--metrics-listen must be PORT or HOST:PORT with a port in 0...65535, got '\(m)'")
            }
            if let (_, main) = parseListen(), main != 0, port == main {
                throw ValidationError("--metrics-listen and --listen name the same port, \(port)")
            }
        }
    }

    /// "HOST:PORT", "[V6]:PORT" or a bare "PORT" (on `defaultHost`).
    static func parseHostPort(_ s: String, defaultHost: String?) -> (String, Int)? {
        if let defaultHost, let port = Int(s) { return (0...65535).contains(port) ? (defaultHost, port) : nil }
        guard let colon = s.lastIndex(of: ":") else { return nil }
        var host = String(s[..<colon])
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        guard !host.isEmpty, let port = Int(s[s.index(after: colon)...]), (0...65535).contains(port) else { return nil }
        return (host, port)
    }

    func parseListen() -> (String, Int)? { Self.parseHostPort(listen, defaultHost: nil) }

    func run() async throws {
        let level = Logger.Level(rawValue: logLevel)!
        LoggingSystem.bootstrap { label in
            var h = StreamLogHandler.standardError(label: label)
            h.logLevel = level
            return h
        }
        let logger = Logger(label: "arbiterd")
        let files = ServerConfiguration.raiseFileLimit()
        var config = ServerConfiguration(storePath: store)
        config.maxConnections = maxConnections ?? ServerConfiguration.defaultMaxConnections()
        // Connections must run out before file descriptors do: past the file limit, accepting fails with
        // EMFILE, and NIO's accept loop then spins a core (it stays registered for the listening socket).
        // With 64 descriptors kept for the store, logs and the loops, the cap refuses clients first.
        guard files - 64 >= max(1, config.maxConnections) else {
            logger.critical("cannot start: \(config.maxConnections) connections need a limit of at least \(config.maxConnections + 64) open files, and this process may open \(files) (raise it with ulimit -n, or lower --max-connections)")
            throw ExitCode(1)
        }
        if let m = memoryBudgetMib { config.memoryBudgetBytes = m << 20 }
        config.countsProcessMemory = true
        MemoryBudget.tuneAllocator()
        config.maxQueueMillis = maxQueueMs
        config.helloTimeoutMillis = helloTimeoutMs
        config.idleTimeoutMillis = idleTimeoutMs
        config.frameTimeoutMillis = frameTimeoutMs
        config.shutdownGraceMillis = shutdownGraceMs
        let (host, port) = parseListen()!
        config.host = host
        config.port = port
        if let threads { config.threads = threads }
        config.limits = Limits(maxFrameBytes: maxFrameBytes, maxCandidates: maxCandidates, maxInFlight: maxInFlight)
        // A replica starts from an empty store as readily as from one it filled before.
        config.store = StoreConfiguration(mapSize: mapSizeGib.map { $0 << 30 }, create: create || cluster.enabled, readOnly: readOnly)
        // A replica's store is written by its own agent alone: imports go through the map (half the time, and no
        // second copy of a version in memory; StoreConfiguration.writeMap, docs/CLUSTER.md).
        config.store.writeMap = cluster.enabled
        // A replica writes every version it stages: its map has a new store's room at least, even when its store
        // began as a seeded artifact (sized to the one version it held).
        if cluster.enabled && mapSizeGib == nil { config.store.mapSize = StoreConfiguration.defaultMapSize }
        config.pollIntervalMillis = pollMs
        config.retainedVersions = retain
        config.backgroundNice = backgroundNice
        config.remoteAdmin = remoteAdmin
        config.offloadCandidates = offloadCandidates
        config.allowCompression = !noCompression
        if let tlsCert, let tlsKey { config.tls = TLSFiles(certificatePath: tlsCert, privateKeyPath: tlsKey, clientCAPath: tlsClientCa) }
        config.tokenFile = tokens

        // The admin port first: /live answers and /ready says "loading models" while a large store loads.
        var adminEndpoint: AdminEndpoint?
        if let m = metricsListen, let (host, port) = Self.parseHostPort(m, defaultHost: "127.0.0.1") {
            do {
                adminEndpoint = try await AdminEndpoint.start(host: host, port: port, logger: logger)
                logger.info("metrics, /live and /ready on http://\(host.contains(":") ? "[\(host)]" : host):\(adminEndpoint?.port ?? port)")
            } catch {
                logger.critical("cannot start: --metrics-listen \(m): \(error)")
                throw ExitCode(1)
            }
        }
        let registry = ServedKinds.registry(only: kinds.map { Set($0.split(separator: ",").map(String.init)) })
        if cluster.enabled && !readOnly {
            await ClusterReplica.seedStore(options: cluster, storePath: store, serves: Set(registry.kinds), logger: logger)
        }
        let server: ArbiterServer
        do {
            server = try ArbiterServer(configuration: config, registry: registry, logger: logger)
        } catch {
            logger.critical("cannot start: \(error)")
            await adminEndpoint?.shutdown()
            throw ExitCode(1)
        }
        // Anything in this process that reports through swift-metrics lands in the same exposition.
        MetricsSystem.bootstrap(PrometheusMetricsFactory(registry: server.metrics.registry))
        for m in server.served { logger.info("serving \(m.name) v\(m.version) (\(m.kind))") }
        // A replica is not ready before it knows what its cluster has committed.
        if cluster.enabled { server.holdReadiness("joining the cluster") }
        try await server.start()
        adminEndpoint?.attach(server)
        var replica: ClusterReplica?
        if cluster.enabled {
            do {
                let adminHost = metricsListen.flatMap { Self.parseHostPort($0, defaultHost: "127.0.0.1")?.0 } ?? "127.0.0.1"
                let admin = adminEndpoint?.port.map { "\(adminHost == "0.0.0.0" ? ProcessInfo.processInfo.hostName : adminHost):\($0)" }
                replica = try ClusterReplica(options: cluster, server: server, listenHost: host, adminAddress: admin, logger: logger)
            } catch {
                logger.critical("cannot join the cluster: \(error)")
                try await server.shutdown()
                await adminEndpoint?.shutdown()
                throw ExitCode(1)
            }
        }

        // SIGTERM / SIGINT: stop accepting, finish what was read, close connections, exit 0.
        let (stop, continuation) = AsyncStream<Int32>.makeStream()
        var sources: [any DispatchSourceSignal] = []
        for sig in [SIGTERM, SIGINT] {
            signal(sig, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: sig, queue: .global())
            source.setEventHandler { continuation.yield(sig) }
            source.resume()
            sources.append(source)
        }
        // SIGHUP: read the TLS files and the token file again (a bad file keeps what is in force).
        signal(SIGHUP, SIG_IGN)
        let hangup = DispatchSource.makeSignalSource(signal: SIGHUP, queue: .global())
        hangup.setEventHandler {
            do {
                let now = try server.reloadCredentials()
                logger.notice("SIGHUP: credentials reloaded; new connections get \(now)")
            } catch {
                logger.error("SIGHUP: credentials not reloaded, the ones in force stay: \(error)")
            }
        }
        hangup.resume()
        sources.append(hangup)
        for await sig in stop {
            logger.info("received signal \(sig), shutting down gracefully")
            break
        }
        sources.forEach { $0.cancel() }
        // Out of the cluster first: clients stop choosing this replica while it still answers.
        await replica?.stop()
        try await server.shutdown()
        await adminEndpoint?.shutdown()
    }
}
