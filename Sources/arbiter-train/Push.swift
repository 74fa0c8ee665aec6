import ArbiterCluster
import ArbiterStore
import ArgumentParser
import Foundation
import NIOPosix

/// `arbiter-train push`: one version of the store into S3-compatible storage, for replicas to stage.
struct Push: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Upload a version to S3-compatible storage for replicas to stage (docs/CLUSTER.md).",
        discussion: """
        The version is copied alone into a new store (shared tensors resolved), compacted (mdb_env_copy2 with \
        MDB_CP_COMPACT, read from a pipe: no file holds it), named by the compacted copy's SHA-256 \
        (models/M/stores/SHA256.mdb.zst), and zstd-compressed into parts, each uploaded by multipart PUT while the \
        next is compressed; its manifest (models/M/versions/V.json: sizes, SHA-256s, golden \
        digest) is written last, so a manifest present means a whole object. Pushing the same version again \
        writes nothing; another version under the same number is refused. Credentials come from \
        AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN), never from the command line.
        """)
    @OptionGroup var storeOptions: StoreOptions
    @Option(help: "Model name.") var model: String
    @Option(help: "Version to push (default: the active one).") var version: UInt64?
    @Option(help: "The S3 endpoint, like http://127.0.0.1:8333 (path-style addressing).") var s3: String
    @Option(help: "The bucket.") var bucket: String
    @Option(help: "The region signed into requests.") var region = "us-east-1"
    @Flag(help: "Create the bucket first if it does not exist.") var createBucket = false
    @Option(help: "Multipart part size in MiB (5 or more).") var partMib = 16
    @Option(help: "Parts uploaded at once (each holds a part in memory; one more is being compressed).") var concurrency = 4
    @Option(help: "Also list the version in this cluster's control plane (etcd client URLs, comma-separated), ready for `arbiter-train cluster stage` and `promote`.")
    var etcd: String?
    @Option(help: "The prefix of the control plane's keys in etcd.")
    var etcdPrefix = "/arbiter/"
    @Option(help: "Scratch directory for the export, about the version's size (default: next to the store); removed at the end.")
    var workDir: String?

    func validate() throws {
        guard (5...1024).contains(partMib) else { throw ValidationError("--part-mib must be in 5...1024") }
        guard (1...32).contains(concurrency) else { throw ValidationError("--concurrency must be in 1...32") }
    }

    func run() throws {
        try runBlocking { try await push() }
    }

    func push() async throws {
        let location = try S3Location(endpoint: s3, bucket: bucket, region: region)
        let credentials = try S3Credentials.fromEnvironment()
        let catalog = try storeOptions.open(create: false)
        guard let version = try version ?? catalog.activeVersion(model: model) else {
            throw ValidationError("\(model) has no active version; name one with --version")
        }
        let parent = URL(fileURLWithPath: storeOptions.store).standardizedFileURL.deletingLastPathComponent().path
        let work = (workDir ?? parent) + "/.arbiter-push-\(model)-\(version)-\(getpid())"
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let http = S3Client.makeHTTPClient(eventLoopGroup: group)
        let result: Result<ArtifactPusher.Report, any Error>
        do {
            let client = S3Client(location: location, credentials: credentials, http: http)
            if createBucket { try await client.createBucket() }
            let pusher = ArtifactPusher(s3: client, partSize: partMib << 20, concurrency: concurrency)
            result = .success(try await pusher.push(catalog: catalog, model: model, version: version, workDirectory: work,
                                                    pushedBy: "arbiter-train pid \(getpid()) on \(ProcessInfo.processInfo.hostName)"))
        } catch {
            result = .failure(error)
        }
        try? await http.shutdown()
        try? await group.shutdownGracefully()
        let report = try result.get()
        let m = report.manifest
        if let etcd {
            try await EtcdOptions.withControlPlane(etcd: etcd, prefix: etcdPrefix) { try await $0.register(m) }
            print("listed \(model) v\(version) in the cluster's control plane (\(etcd))")
        }
        let key = ArtifactKeys.manifest(model: model, version: version)
        if report.alreadyPushed {
            print("\(model) v\(version) was already pushed with these contents: s3://\(bucket)/\(key); nothing written")
            return
        }
        for stage in report.stages { print("  \(stage)") }
        let ratio = m.store.bytes > 0 ? Double(m.object.bytes) / Double(m.store.bytes) : 1
        print("pushed \(model) v\(version) (\(m.kind)): store file \(m.store.bytes) bytes, object \(m.object.bytes) bytes (\(String(format: "%.2f", ratio))) at s3://\(bucket)/\(m.object.key ?? ""); manifest s3://\(bucket)/\(key)")
    }
}

/// Runs `body` on Swift's concurrency pool and waits for it: the commands are synchronous, a push is not.
func runBlocking(_ body: @escaping @Sendable () async throws -> Void) throws {
    let done = DispatchSemaphore(value: 0)
    let outcome = ResultBox()
    Task {
        do { try await body() } catch { outcome.error = error }
        done.signal()
    }
    done.wait()
    if let error = outcome.error { throw error }
}

/// Written by the task before it signals, read after the wait: the semaphore orders the two.
private final class ResultBox: @unchecked Sendable {
    var error: (any Error)?
}
