import ArbiterModels
import ArbiterStore
import Foundation
import NIOConcurrencyHelpers

/// Models for server tests, each a `ScoringModel` of its own kind served from a real store.
///
/// `ScriptedModel` scores with a closure the test supplies (so a RESULT's numbers are whatever a golden
/// vector says); `GateModel` makes a request wait inside `score` until the test opens its gate.
final class ScriptedModel: ScoringModel, Sendable {
    let version: LoadedVersion
    let manifest: ModelManifest
    let rule: @Sendable (ScoreBatch, ScoreOutput) throws(ScoringError) -> RowOrder

    init(version: LoadedVersion, manifest: ModelManifest, rule: @escaping @Sendable (ScoreBatch, ScoreOutput) -> Void) {
        self.version = version
        self.manifest = manifest
        self.rule = { batch, output in
            rule(batch, output)
            return .requestOrder
        }
    }

    /// A model that may order its own rows or refuse the request.
    private init(version: LoadedVersion, manifest: ModelManifest, orderingRule: @escaping @Sendable (ScoreBatch, ScoreOutput) throws(ScoringError) -> RowOrder) {
        self.version = version
        self.manifest = manifest
        self.rule = orderingRule
    }

    func score(_ batch: ScoreBatch, into output: ScoreOutput) throws(ScoringError) -> RowOrder {
        try rule(batch, output)
    }

    /// `model` as `publish` below makes it, scored by `ranking`.
    static func publishRanking(store path: String, model: String, schema: FeatureSchema, versions: UInt64,
                               ranking: @escaping @Sendable (ScoreBatch, ScoreOutput) throws(ScoringError) -> RowOrder) throws -> ScriptedModel {
        let plain = try publish(store: path, model: model, kind: "ranking", schema: schema, versions: versions) { _, _ in }
        return ScriptedModel(version: plain.version, manifest: plain.manifest, orderingRule: ranking)
    }

    /// Publishes `versions` versions of `model` (kind `kind`, schema `schema`) into the store at `path` and
    /// returns the last one loaded, wrapped with `rule`.
    static func publish(store path: String, model: String, kind: String, schema: FeatureSchema, versions: UInt64 = 1,
                        createdUnixMillis: UInt64 = 1_795_000_000_000,
                        rule: @escaping @Sendable (ScoreBatch, ScoreOutput) -> Void) throws -> ScriptedModel {
        let env = try StoreEnvironment.open(path: path, configuration: StoreConfiguration(mapSize: 64 << 20, create: true))
        let catalog = Catalog(environment: env)
        let manifest = ModelManifest(kind: kind, schema: schema, parameters: [:], golden: [])
        var v: UInt64 = 0
        while v < versions {
            v = try catalog.publish(model: model, kind: kind, manifest: manifest.encoded(), tensors: [], metrics: [:],
                                    now: Date(timeIntervalSince1970: Double(createdUnixMillis) / 1000))
        }
        let loaded = try LoadedVersion(environment: env, model: model, version: v)
        return ScriptedModel(version: loaded, manifest: manifest, rule: rule)
    }
}

/// A gate that requests marked "hold" wait at inside `GateModel.score`.
final class Gate: Sendable {
    private let state = NIOLockedValueBox((open: false, waiting: 0))
    private let condition = NSCondition()

    func open() {
        condition.lock()
        state.withLockedValue { $0.open = true }
        condition.broadcast()
        condition.unlock()
    }

    /// How many scoring calls are waiting at the gate now.
    var waiting: Int { state.withLockedValue { $0.waiting } }

    /// Waits until the gate opens, or 30 s (so that a failed test cannot leave a server thread blocked forever).
    func pass() {
        condition.lock()
        defer { condition.unlock() }
        state.withLockedValue { $0.waiting += 1 }
        let deadline = Date(timeIntervalSinceNow: 30)
        while !state.withLockedValue({ $0.open }), condition.wait(until: deadline) {}
        state.withLockedValue { $0.waiting -= 1 }
    }
}

/// Kind `gate`: context `hold` (1 holds the request at the gate), one candidate feature `x`; the score is x.
final class GateModel: ScoringModel, Sendable {
    static let kind = "gate"
    static let schema = FeatureSchema(context: [.numeric("hold")], candidate: [.numeric("x")], outputs: [])

    let version: LoadedVersion
    let manifest: ModelManifest
    let gate: Gate

    init(version: LoadedVersion, manifest: ModelManifest, gate: Gate) {
        self.version = version
        self.manifest = manifest
        self.gate = gate
    }

    func score(_ batch: ScoreBatch, into output: ScoreOutput) -> RowOrder {
        if batch.context[0] == 1 { gate.pass() }
        for r in 0..<batch.candidateCount { output.scores[r] = batch.candidates[r] }
        return .requestOrder
    }

    /// A registry that serves `gate` models through `gate`.
    static func registry(_ gate: Gate) -> ModelRegistry {
        var r = ModelRegistry()
        r.register(kind: kind) { v, m in GateModel(version: v, manifest: m, gate: gate) }
        return r
    }

    /// A store at `path` holding one `gate` model named `model`, with one golden case.
    static func publish(store path: String, model: String = "gate") throws {
        let env = try StoreEnvironment.open(path: path, configuration: StoreConfiguration(mapSize: 64 << 20, create: true))
        let golden = GoldenCase(context: [0], candidates: [0.25, 0.5], candidateCount: 2, scores: [0.25, 0.5], floatColumns: [], codeColumns: [])
        let manifest = ModelManifest(kind: kind, schema: schema, parameters: [:], golden: [golden])
        try Catalog(environment: env).publish(model: model, kind: kind, manifest: manifest.encoded(), tensors: [], metrics: [:])
    }
}
