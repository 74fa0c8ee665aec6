import ArbiterCluster
import ArgumentParser
import AsyncHTTPClient
import Foundation
import NIOPosix

/// The control plane's address, shared by the cluster commands and `push --etcd`.
struct EtcdOptions: ParsableArguments {
    @Option(help: "The etcd members' client URLs, comma-separated (http://HOST:PORT,...).")
    var etcd: String

    @Option(help: "The prefix of the control plane's keys in etcd.")
    var prefix = "/arbiter/"

    func validate() throws {
        guard !EtcdClient.parseEndpoints(etcd).isEmpty else { throw ValidationError("--etcd names no endpoint") }
    }

    /// Runs `body` with a control plane over its own HTTP client, shut down after.
    func withControlPlane<T: Sendable>(_ body: @Sendable (ControlPlane) async throws -> T) async throws -> T {
        try await Self.withControlPlane(etcd: etcd, prefix: prefix, body)
    }

    static func withControlPlane<T: Sendable>(etcd: String, prefix: String, _ body: @Sendable (ControlPlane) async throws -> T) async throws -> T {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let http = EtcdClient.makeHTTPClient(eventLoopGroup: group)
        let result: Result<T, any Error>
        do {
            let etcdClient = try EtcdClient(endpoints: EtcdClient.parseEndpoints(etcd), http: http)
            let plane = ControlPlane(etcd: etcdClient, keys: try ClusterKeys(prefix: prefix),
                                     identity: "arbiter-train pid \(getpid()) on \(ProcessInfo.processInfo.hostName)")
            result = .success(try await body(plane))
        } catch {
            result = .failure(error)
        }
        try? await http.shutdown()
        try? await group.shutdownGracefully()
        return try result.get()
    }
}

struct ClusterCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cluster",
        abstract: "Stage, promote and inspect versions across a cluster of replicas (docs/CLUSTER.md).",
        subcommands: [ClusterTarget.self, ClusterPromote.self, ClusterStatus.self])
}

struct ClusterTarget: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "stage",
        abstract: "Make a pushed version the model's target: every replica downloads, imports and validates it, and reports it staged or rejected.")
    @OptionGroup var etcdOptions: EtcdOptions
    @Option(help: "Model name.") var model: String
    @Option(help: "A version pushed with arbiter-train push --etcd.") var version: UInt64

    func run() throws {
        try runBlocking { [etcdOptions, model, version] in
            let p = try await etcdOptions.withControlPlane { try await $0.setTarget(model: model, version: version) }
            print("\(model) target: v\(p.version) (epoch \(p.epoch)); replicas stage it now (arbiter-train cluster status)")
        }
    }
}

struct ClusterPromote: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "promote",
        abstract: "Commit a version as active once every ready replica has staged it; replicas switch within milliseconds.",
        discussion: "Sets the target first if it is not this version, then waits. A rejection on any replica refuses the promotion, naming the replica and why; so does a replica still staging when the wait ends. The commit is a compare-and-swap in etcd, guarded by the replicas' records not having changed since they were read.")
    @OptionGroup var etcdOptions: EtcdOptions
    @Option(help: "Model name.") var model: String
    @Option(help: "Version to promote.") var version: UInt64
    @Option(help: "Seconds to wait for every ready replica to stage it.") var timeoutSeconds = 120

    func validate() throws {
        guard (1...86_400).contains(timeoutSeconds) else { throw ValidationError("--timeout-seconds must be in 1...86400") }
    }

    func run() throws {
        try runBlocking { [etcdOptions, model, version, timeoutSeconds] in
            let started = ContinuousClock.now
            let p = try await etcdOptions.withControlPlane {
                try await $0.promote(model: model, version: version, timeout: .seconds(timeoutSeconds))
            }
            print("\(model) v\(p.version) is active (epoch \(p.epoch)), committed \(started.duration(to: .now)) after the command started")
        }
    }
}

struct ClusterStatus: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "status",
        abstract: "Each model's target and active version, and each replica: ready, serving, staged, rejected.")
    @OptionGroup var etcdOptions: EtcdOptions

    func run() throws {
        try runBlocking { [etcdOptions] in
            let text = try await etcdOptions.withControlPlane { plane -> String in
                var out = ""
                let (kvs, _) = try await plane.etcd.range(plane.keys.models, prefix: true)
                let models = Set(kvs.compactMap { plane.keys.parseModelKey($0.key)?.model }).sorted()
                for m in models {
                    let target = try await plane.pointer(plane.keys.target(m))?.pointer
                    let active = try await plane.pointer(plane.keys.active(m))?.pointer
                    let pushed = try await plane.published(model: m).map { "v\($0.version)" }
                    out += "model \(m): active \(active.map { "v\($0.version) (epoch \($0.epoch))" } ?? "-"), target \(target.map { "v\($0.version)" } ?? "-"), pushed \(pushed.joined(separator: " "))\n"
                }
                let (replicas, _) = try await plane.replicas()
                for r in replicas.sorted(by: { $0.name < $1.name }) {
                    let serving = r.active.sorted { $0.key < $1.key }.map { "\($0.key) v\($0.value)" }.joined(separator: ", ")
                    let staged = r.staged.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value.map { "v\($0)" }.joined(separator: " "))" }.joined(separator: ", ")
                    out += "replica \(r.name) at \(r.address): \(r.ready ? "ready" : "NOT READY"); serving \(serving.isEmpty ? "nothing" : serving); loaded \(staged.isEmpty ? "nothing" : staged)\n"
                    if !r.ready || r.detail.contains("staging") { out += "  \(r.detail)\n" }
                    for (m, versions) in r.rejected.sorted(by: { $0.key < $1.key }) {
                        for (v, why) in versions.sorted(by: { $0.key < $1.key }) { out += "  rejected \(m) v\(v): \(why)\n" }
                    }
                }
                if replicas.isEmpty { out += "no replica is registered\n" }
                return out
            }
            print(text, terminator: "")
        }
    }
}
