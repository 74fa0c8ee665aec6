import ArbiterStore

/// One model as this server serves it: every version it keeps loaded, and how a request that pins no
/// version chooses among them (the active one, or a traffic split by routing key). Immutable: a reload
/// builds a new one, reusing the loaded versions that stay.
final class ServedModel: Sendable {
    let name: String
    /// What serves unpinned requests when no split holds; what MODELS lists.
    let active: ServingModel
    /// Every version loaded, oldest first: the active one, a split's, the shadow and the retained others.
    /// A request may pin any of them.
    let loaded: [ServingModel]
    /// While a split holds, each share's upper bound in the routing-key hash space (``TrafficSplit/bounds``)
    /// and the version that serves it. A share whose version failed validation is served by `active`.
    let split: [SplitShare]
    let splitSalt: UInt64
    /// The split as the store holds it (for MODEL_STATUS), nil without one.
    let configuredSplit: TrafficSplit?
    /// The version scored in the shadow of unpinned requests, if one is set and loaded.
    let shadow: ShadowTarget?
    /// The newest version the store holds (to tell a version that was never published from one not retained).
    let latest: UInt64

    struct SplitShare: Sendable {
        let bound: UInt64
        let model: ServingModel
    }

    init(name: String, active: ServingModel, loaded: [ServingModel], split: TrafficSplit?, shadow: ShadowTarget?, latest: UInt64) {
        self.name = name
        self.active = active
        self.loaded = loaded.sorted { $0.version < $1.version }
        self.configuredSplit = split
        self.splitSalt = TrafficSplit.salt(model: name)
        if let split {
            self.split = zip(split.bounds, split.shares).map { bound, share in
                SplitShare(bound: bound, model: loaded.first { $0.version == share.version } ?? active)
            }
        } else {
            self.split = []
        }
        self.shadow = shadow
        self.latest = max(latest, loaded.map(\.version).max() ?? 0)
    }

    /// The same model with `version` (one of `loaded`) active, as an activation leaves it: no split, and no
    /// shadow of the version that now serves.
    func activating(_ version: ServingModel) -> ServedModel {
        ServedModel(name: name, active: version, loaded: loaded, split: nil,
                    shadow: shadow?.model.version == version.version ? nil : shadow, latest: max(latest, version.version))
    }

    /// The version that serves a request: the pinned one if loaded (nil if not), else the split's choice for
    /// the routing key, else the active one.
    @inline(__always)
    func serving(version: UInt64, routingKey: UInt64) -> ServingModel? {
        if version == 0 {
            if split.isEmpty { return active }
            let b = TrafficSplit.bucket(key: routingKey, salt: splitSalt)
            for s in split where b < s.bound { return s.model }
            return split[split.count - 1].model
        }
        for m in loaded where m.version == version { return m }
        return nil
    }

    /// Why a pinned version cannot be served, for UNKNOWN_VERSION.
    func notLoaded(_ version: UInt64) -> String {
        let kept = loaded.map { String($0.version) }.joined(separator: ", ")
        if version > latest {
            return "model '\(name)' has no version \(version) (the newest is \(latest)); this server has \(kept) loaded, \(active.version) active"
        }
        return "version \(version) of '\(name)' is not retained by this server; it has \(kept) loaded (\(active.version) active). "
            + "A pin may name any of those; arbiterd --retain K keeps more"
    }
}

/// A version scored in the shadow: which, how many requests to sample (as a bound on a 64-bit draw), and
/// where its differences are recorded.
final class ShadowTarget: Sendable {
    let model: ServingModel
    let sample: Double
    let threshold: UInt64
    let recorder: ShadowRecorder

    init(model: ServingModel, sample: Double, recorder: ShadowRecorder) {
        self.model = model
        self.sample = sample
        let x = sample * 0x1p64
        self.threshold = x >= 0x1p64 ? UInt64.max : UInt64(x)
        self.recorder = recorder
    }
}

/// The models being served, by name. Immutable: a swap builds a new table.
struct ModelTable: Sendable {
    var models: [String: ServedModel] = [:]
    /// Why a model in the store is not being served as the store says (its active version failed
    /// validation), by name.
    var failures: [String: String] = [:]
    /// Versions this server rejected, with the reason, by model. A version never changes once published, so a
    /// rejected one is not loaded again.
    var rejected: [String: [UInt64: String]] = [:]
}
