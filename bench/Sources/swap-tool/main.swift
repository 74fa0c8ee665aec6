// The swap scenario's tools (bench/swap/run.sh).
//
// `publish`: the trainer's side. Publishes a new version of a model every interval — the active version's
// tensors and manifest with one value of each small float32 tensor changed (--change small: retrained heads
// beside unchanged embedding tables, which the store shares) or of every one (--change all: the tables are
// written and read in full too), so each version is loaded, checked and validated by the server as any new
// version is — or alternates publishes with rollbacks. Prints one JSON line per store change with its commit
// time and when its writing began (CLOCK_MONOTONIC ns, comparable with arbiter-bench's traces), and, with --reload-port, when the
// server's RELOADED answer came back.
//
// `first-answer`: connects to a server as soon as it listens and sends one SCORE (every feature 0, a subject
// id for models that need one), printing the CLOCK_MONOTONIC time its RESULT arrived.
import ArbiterClient
import ArbiterStore
import ArbiterWire
import ArgumentParser
import Foundation

@main
struct SwapTool: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "swap-tool", abstract: "The swap scenario's trainer and first-answer client.",
        subcommands: [Publish.self, FirstAnswer.self])
}

struct FirstAnswer: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Time a server's first answer: print the CLOCK_MONOTONIC ns when a RESULT arrived.")
    @Option(help: "The server's port (loopback).") var port: Int
    @Option(help: "The model.") var model: String
    @Option(help: "Candidates in the SCORE.") var candidates = 200
    @Option(help: "Give up after this many seconds.") var timeout = 60.0

    func run() throws {
        let deadline = monotonic() + UInt64(timeout * 1e9)
        while monotonic() < deadline {
            guard let c = try? BlockingConnection(port: port, receiveTimeoutSeconds: 30) else {
                usleep(500)
                continue
            }
            c.send(Frame(requestID: 1, message: .hello(Hello(clientName: "first-answer"))))
            guard let f = try c.readFrame(), case .helloOK = f.message else { throw ValidationError("no HELLO_OK") }
            c.send(Frame(requestID: 2, message: .modelInfo(ModelInfoRequest(model: model))))
            guard let g = try c.readFrame(), case .schema(let s) = g.message else { throw ValidationError("no SCHEMA for \(model)") }
            let request = ScoreRequest(model: model, routingKey: 1, topK: 10, subject: s.kind == "ranking" ? 1 : nil,
                                       context: [Float](repeating: 0, count: s.contextFeatures.count),
                                       candidateIDs: (0..<candidates).map(UInt64.init), candidateFeatureCount: s.candidateFeatures.count,
                                       candidateFeatures: [Float](repeating: 0, count: candidates * s.candidateFeatures.count))
            c.send(Frame(requestID: 3, message: .score(request)))
            guard let r = try c.readFrame(), case .result = r.message else { throw ValidationError("the SCORE was not answered with a RESULT") }
            print(monotonic())
            return
        }
        throw ValidationError("no server answered on port \(port) within \(timeout) s")
    }
}

struct Publish: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Publish a copy of a model's active version every interval (or alternate publish and rollback), printing commit times.")
    @Option(help: "The store.") var store: String
    @Option(help: "The model.") var model: String
    @Option(help: "Milliseconds between store changes.") var everyMs = 1000
    @Option(help: "Store changes to make.") var count = 20
    @Option(help: "Milliseconds to wait before the first.") var startDelayMs = 0
    @Option(help: "After every this many changes, rest --rest-ms more before the next (0: no rests): bursts of changes alternate with quiet stretches of the same load, for a steady p99 measured beside the swaps rather than before them.") var restEvery = 0
    @Option(help: "The rest after each burst, ms.") var restMs = 0
    @Option(help: "publish: a new version each time; rollback: a new version, then a rollback to the one before, in turn; shadow: a copy published without activating, then scored in the shadow of the active one (--sample).") var mode = "publish"
    @Option(help: "The shadow's sample (--mode shadow).") var sample = 0.05
    @Option(help: "After each change, send RELOAD to the server on this port (loopback) and wait for its answer.") var reloadPort: Int?
    @Option(help: "After each publish, delete all but the active version and this many others (gc).") var gcKeep: Int?
    @Option(help: "What each new version changes, by a last-bit change to one value of each float32 tensor (within the golden tolerance): small: tensors under 16 MiB (retrained heads; embedding tables unchanged, so the store shares them); all: every float32 tensor (tables rewritten and read in full); none: an exact copy.") var change = "small"

    func validate() throws {
        guard ["publish", "rollback", "shadow"].contains(mode) else { throw ValidationError("--mode is publish, rollback or shadow") }
        guard ["none", "small", "all"].contains(change) else { throw ValidationError("--change is none, small or all") }
        guard everyMs >= 10, count >= 1, startDelayMs >= 0 else { throw ValidationError("--every-ms ≥ 10, --count ≥ 1, --start-delay-ms ≥ 0") }
        guard restEvery >= 0, restMs >= 0 else { throw ValidationError("--rest-every and --rest-ms are ≥ 0") }
    }

    func run() throws {
        let env = try StoreEnvironment.open(path: store)
        let catalog = Catalog(environment: env)
        let reload = try reloadPort.map { port -> BlockingConnection in
            let c = try BlockingConnection(port: port, receiveTimeoutSeconds: 30)
            c.send(Frame(requestID: 1, message: .hello(Hello(clientName: "swap-publisher"))))
            guard let f = try c.readFrame(), case .helloOK = f.message else { throw ValidationError("no HELLO_OK from port \(port)") }
            return c
        }
        let start = monotonic() + UInt64(startDelayMs) * 1_000_000
        for i in 0..<count {
            let rests = restEvery > 0 ? UInt64(i / restEvery) * UInt64(restMs) : 0
            let due = start + (UInt64(i) * UInt64(everyMs) + rests) * 1_000_000
            let now = monotonic()
            if due > now { usleep(UInt32((due - now) / 1000)) }
            var event: [String: Any]
            let began = monotonic()
            if mode == "shadow" {
                let v = try publishCopy(catalog, env, activate: false)
                try catalog.setShadow(model: model, try ShadowConfig(version: v, sample: sample))
                event = ["event": "shadow", "version": v, "began_ns": began, "commit_ns": monotonic()]
            } else if mode == "rollback" && i % 2 == 1 {
                let v = try catalog.rollback(model: model)
                event = ["event": "rollback", "version": v, "began_ns": began, "commit_ns": monotonic()]
            } else {
                let v = try publishCopy(catalog, env)
                event = ["event": "publish", "version": v, "began_ns": began, "commit_ns": monotonic()]
                if let keep = gcKeep { event["gc_freed_bytes"] = try catalog.gc(model: model, keep: keep).bytes }
            }
            if restEvery > 0 { event["burst"] = i / restEvery }
            if let reload {
                reload.send(Frame(requestID: UInt64(i + 2), message: .reload))
                guard let f = try reload.readFrame(), case .reloaded = f.message else { throw ValidationError("RELOAD was not answered RELOADED") }
                event["reloaded_ns"] = monotonic()
            }
            let data = try JSONSerialization.data(withJSONObject: event, options: [.sortedKeys])
            FileHandle.standardOutput.write(data + Data("\n".utf8))
        }
    }


    /// A new active version holding the active one's tensors (changed as `--change` says), manifest and metrics.
    func publishCopy(_ catalog: Catalog, _ env: StoreEnvironment, activate: Bool = true) throws -> UInt64 {
        if change == "small" {
            // As a trainer that retrained the heads publishes: the small tensors with their new bytes, the large
            // ones (the embedding tables it did not touch) named as unchanged — it neither reads nor sends them.
            let listing = try catalog.versions(model: model)
            guard let meta = listing.first(where: \.isActive)?.meta else { throw ValidationError("\(model) has no active version") }
            let s = try env.snapshot()
            guard let manifest = try s.bytes(StoreKeys.manifest(model, meta.version)) else { throw ValidationError("no manifest") }
            var tensors: [TensorData] = [], unchanged: [String] = []
            for t in meta.tensors {
                guard t.byteCount < LoadedVersion.releaseThreshold, let dtype = TensorDType(rawValue: t.dtype) else {
                    unchanged.append(t.name)
                    continue
                }
                guard var bytes = try s.bytes(StoreKeys.tensor(model, t.home(in: meta.version), t.name)) else { throw ValidationError("no tensor \(t.name)") }
                if dtype == .f32, bytes.count >= 4 { bytes[bytes.count / 8 * 4] ^= 1 }   // the middle value's lowest bit
                tensors.append(TensorData(name: t.name, shape: t.shape, dtype: dtype, bytes: bytes))
            }
            return try catalog.publish(model: model, kind: meta.kind, manifest: manifest, tensors: tensors, unchanged: unchanged,
                                       metrics: meta.metrics, activate: activate)
        }
        let active = try LoadedVersion(environment: env, model: model, version: 0)
        let tensors = active.tensors.map { name, t in
            var bytes = Array(t.bytes)
            if t.dtype == .f32, t.count > 0, change == "all" {
                bytes[t.count / 2 * 4] ^= 1   // the lowest mantissa bit of the middle value (little-endian)
            }
            return TensorData(name: name, shape: t.shape, dtype: t.dtype, bytes: bytes)
        }
        let metrics = try catalog.versions(model: model).first { $0.isActive }?.meta.metrics ?? [:]
        return try catalog.publish(model: model, kind: active.kind, manifest: Array(active.manifest), tensors: tensors, metrics: metrics,
                                   activate: activate)
    }

}

func monotonic() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
}
