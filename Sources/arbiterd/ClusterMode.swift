import ArbiterCluster
import ArbiterServer
import ArbiterStore
import ArgumentParser
import AsyncHTTPClient
import Foundation
import Logging
import NIOPosix

/// arbiterd's flags for running as one replica of a cluster (docs/CLUSTER.md).
struct ClusterOptions: ParsableArguments {
    @Option(help: ArgumentHelp(
        "Run as a replica of a cluster whose control plane is this etcd (its members' client URLs, comma-separated).",
        discussion: "The replica stages the versions etcd names as targets (from --cluster-s3), reports them in a lease-held record, and switches when a version is committed active. Needs --cluster-s3 and --cluster-bucket; S3 credentials come from AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY."))
    var clusterEtcd: String?

    @Option(help: "The S3 endpoint versions are pushed to (http://HOST:PORT).")
    var clusterS3: String?

    @Option(help: "The bucket versions are pushed to.")
    var clusterBucket: String?

    @Option(help: "The region signed into S3 requests.")
    var clusterRegion = "us-east-1"

    @Option(help: "This replica's name in the cluster: unique and stable across restarts (default: HOST-PORT).")
    var clusterName: String?

    @Option(help: "HOST:PORT clients reach this replica's scoring port at (default: --listen, with this host's name for a wildcard address).")
    var clusterAdvertise: String?

    @Option(help: "The prefix of the control plane's keys in etcd.")
    var clusterPrefix = "/arbiter/"

    @Option(help: "Seconds the replica's record outlives it in etcd (its lease).")
    var clusterLeaseSeconds = 10

    @Option(help: ArgumentHelp(
        "Where downloaded versions are decompressed before they are imported (default: a directory beside the store).",
        discussion: "The replica makes its own directory in it (named after --cluster-name) and removes it at start. A tmpfs such as /dev/shm keeps the scratch copy (as large as the version, removed once imported) off the disk, where it would otherwise be written back while the import itself is flushed; it must have room for the largest version, and its pages count against the process's memory limit while a version is staged."))
    var clusterScratch: String?

    @Option(help: ArgumentHelp(
        "A lock file's path shared by the replicas of this host: they stage versions --cluster-download-slots at a time.",
        discussion: "Each replica holds one of the files PATH.0, PATH.1, ... (flock) while it downloads, decompresses and imports a version. Replicas on one host that all stage at once share the bucket's bandwidth, all finish their downloads together, then import together; one replica's import beside another's download slows both. Two at a time was fastest on the local cluster (one at a time leaves the bucket's bandwidth unused: a single download does not fill it); measured in docs/CLUSTER.md. A slot not free within 120 s is not waited for. Without this option each replica stages on its own."))
    var clusterDownloadLock: String?

    @Option(help: "How many replicas of this host stage (download and import) at once (with --cluster-download-lock; default 2).")
    var clusterDownloadSlots: Int?

    /// The download slots --cluster-download-lock names, if any.
    func downloadSlots() throws -> DownloadSlots? {
        try clusterDownloadLock.map { try DownloadSlots(path: $0, count: clusterDownloadSlots ?? 2) }
    }

    var enabled: Bool { clusterEtcd != nil }

    func validate() throws {
        guard let etcd = clusterEtcd else {
            guard clusterS3 == nil, clusterBucket == nil else { throw ValidationError("--cluster-s3 and --cluster-bucket need --cluster-etcd") }
            return
        }
        guard !EtcdClient.parseEndpoints(etcd).isEmpty else { throw ValidationError("--cluster-etcd names no endpoint") }
        guard clusterS3 != nil, clusterBucket != nil else { throw ValidationError("--cluster-etcd needs --cluster-s3 and --cluster-bucket") }
        guard (2...300).contains(clusterLeaseSeconds) else { throw ValidationError("--cluster-lease-seconds must be in 2...300") }
        if let n = clusterName {
            let allowed = Set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.".utf8)
            guard !n.isEmpty, n.utf8.count <= 64, n.utf8.allSatisfy(allowed.contains) else {
                throw ValidationError("--cluster-name must be 1-64 characters of A-Z a-z 0-9 - _ .")
            }
        }
        if let dir = clusterScratch {
            var isDirectory: ObjCBool = false
            guard FileManager.default.fileExists(atPath: dir, isDirectory: &isDirectory), isDirectory.boolValue else {
                throw ValidationError("--cluster-scratch \(dir) is not a directory")
            }
        }
        if clusterDownloadLock != nil {
            do { _ = try downloadSlots() } catch { throw ValidationError("--cluster-download-lock: \(error)") }
        } else if clusterDownloadSlots != nil {
            throw ValidationError("--cluster-download-slots needs --cluster-download-lock")
        }
        if let a = clusterAdvertise, Arbiterd.parseHostPort(a, defaultHost: nil) == nil {
            throw ValidationError("--cluster-advertise must be HOST:PORT, got '\(a)'")
        }
    }
}

/// The running replica agent and what it holds, stopped by `stop()`.
final class ClusterReplica: Sendable {
    let task: Task<Void, Never>
    let http: HTTPClient
    let etcdHTTP: HTTPClient
    let group: MultiThreadedEventLoopGroup

    /// Starts the agent beside `server`. Its own event loop thread serves its HTTP (etcd, S3): nothing of it
    /// runs on the serving loops.
    init(options: ClusterOptions, server: ArbiterServer, listenHost: String, adminAddress: String?, logger: Logger) throws {
        let location = try S3Location(endpoint: options.clusterS3!, bucket: options.clusterBucket!, region: options.clusterRegion)
        let credentials = try S3Credentials.fromEnvironment()
        let port = server.port ?? 0
        var advertised = options.clusterAdvertise ?? "\(listenHost):\(port)"
        if options.clusterAdvertise == nil, listenHost == "0.0.0.0" || listenHost == "::" {
            advertised = "\(ProcessInfo.processInfo.hostName):\(port)"
        }
        let name = options.clusterName ?? "\(ProcessInfo.processInfo.hostName)-\(port)"
        group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        http = S3Client.makeHTTPClient(eventLoopGroup: group)
        etcdHTTP = EtcdClient.makeHTTPClient(eventLoopGroup: group)
        let etcd = try EtcdClient(endpoints: EtcdClient.parseEndpoints(options.clusterEtcd!), http: etcdHTTP)
        let plane = ControlPlane(etcd: etcd, keys: try ClusterKeys(prefix: options.clusterPrefix), identity: "arbiterd \(name)")
        let fetcher = ArtifactFetcher(s3: S3Client(location: location, credentials: credentials, http: http))
        let storeURL = URL(fileURLWithPath: server.configuration.storePath).standardizedFileURL
        let scratch = options.clusterScratch.map { URL(fileURLWithPath: $0).standardizedFileURL.path + "/arbiterd-\(name)-staging" }
            ?? storeURL.deletingLastPathComponent().path + "/.\(storeURL.lastPathComponent)-staging"
        var agentConfig = ReplicaAgentConfiguration(name: name, address: advertised, adminAddress: adminAddress, workDirectory: scratch)
        agentConfig.leaseSeconds = options.clusterLeaseSeconds
        agentConfig.downloadSlots = try options.downloadSlots()
        try? FileManager.default.removeItem(atPath: agentConfig.workDirectory)
        try FileManager.default.createDirectory(atPath: agentConfig.workDirectory, withIntermediateDirectories: true)
        let agent = ReplicaAgent(configuration: agentConfig, host: ServerHost(server: server), plane: plane, fetcher: fetcher, logger: logger)
        logger.info("cluster replica '\(name)' at \(advertised): etcd \(etcd.endpoints.joined(separator: ",")), artifacts s3://\(location.bucket) at \(location.endpoint)")
        task = Task { await agent.run() }
    }

    /// Before the server opens its store: a replica with no store file begins from the largest committed
    /// version's artifact (``StoreSeed``). Anything that goes wrong is logged and the replica starts empty,
    /// staging every committed version as usual.
    static func seedStore(options: ClusterOptions, storePath: String, serves kinds: Set<String>, logger: Logger) async {
        let storeDirectory = URL(fileURLWithPath: storePath).standardizedFileURL.path
        guard !FileManager.default.fileExists(atPath: storeDirectory + "/data.mdb") else { return }
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let http = S3Client.makeHTTPClient(eventLoopGroup: group)
        let etcdHTTP = EtcdClient.makeHTTPClient(eventLoopGroup: group)
        // Nothing is served yet: the work runs at nice 10, not at idle priority (see BackgroundWork).
        let background = BackgroundWork()
        background.yieldsToServing(false)
        do {
            let location = try S3Location(endpoint: options.clusterS3!, bucket: options.clusterBucket!, region: options.clusterRegion)
            let fetcher = ArtifactFetcher(s3: S3Client(location: location, credentials: try S3Credentials.fromEnvironment(), http: http))
            let etcd = try EtcdClient(endpoints: EtcdClient.parseEndpoints(options.clusterEtcd!), http: etcdHTTP)
            let plane = ControlPlane(etcd: etcd, keys: try ClusterKeys(prefix: options.clusterPrefix), identity: "arbiterd seeding")
            let slots = try options.downloadSlots()
            let outcome = try await StoreSeed.seed(storeDirectory: storeDirectory, plane: plane, fetcher: fetcher, background: background,
                                                   slots: slots, serves: { kinds.contains($0) }, logger: logger)
            if case let .seeded(model, version, _, timings) = outcome {
                logger.info("seeded the store with \(model) v\(version): \(timings.map(\.description).joined(separator: "; "))")
            }
        } catch {
            logger.warning("cannot seed the empty store from the cluster's artifacts (starting empty; committed versions are staged as usual): \(error)")
        }
        try? await background.shutdown()
        try? await http.shutdown()
        try? await etcdHTTP.shutdown()
        try? await group.shutdownGracefully()
    }

    /// Leaves the cluster: the record goes (clients stop sending), then the HTTP client and its thread.
    func stop() async {
        task.cancel()
        await task.value
        try? await http.shutdown()
        try? await etcdHTTP.shutdown()
        try? await group.shutdownGracefully()
    }
}

/// `ArbiterServer` as the replica agent sees it.
struct ServerHost: ReplicaHost {
    let server: ArbiterServer

    var localStore: StoreEnvironment { server.store }
    func reloadStore() async throws { try await server.reload() }
    func switchToLoaded(model: String, version: UInt64, storeGeneration: UInt64) async throws -> Bool {
        try await server.switchToLoaded(model: model, version: version, storeGeneration: storeGeneration)
    }
    func loadedVersions(of model: String) -> [UInt64] { server.loadedVersions(of: model) }
    func rejection(of model: String, version: UInt64) -> String? {
        if case .rejected(let why) = server.versionState(model: model, version: version) { return why }
        return nil
    }
    func servedVersions() -> [String: UInt64] {
        Dictionary(uniqueKeysWithValues: server.served.map { ($0.name, $0.version) })
    }
    func validate(model: String, version: UInt64) async throws { try await server.validate(model: model, version: version) }
    func serverReadiness() -> (ready: Bool, detail: String) { server.readiness() }
    func holdReadiness(_ reason: String?) { server.holdReadiness(reason) }
}
