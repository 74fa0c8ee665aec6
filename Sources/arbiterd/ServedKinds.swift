import Allocation
import ArbiterModels
import Gbdt
import LeadGrading
import Ranking
import Routing

/// The model kinds this executable serves: one line per plugin it links. Adding a kind is a folder under
/// `Plugins/`, its target in Package.swift as a dependency of `arbiterd`, and one line here.
enum ServedKinds {
    /// Every kind linked, or only those in `only` (arbiterd --kinds).
    static func registry(only: Set<String>? = nil) -> ModelRegistry {
        let all = linked()
        guard let only else { return all }
        var r = ModelRegistry()
        all.forEachFactory { kind, factory in
            if only.contains(kind) { r.register(kind: kind, factory: factory) }
        }
        return r
    }

    static func linked() -> ModelRegistry {
        var r = ModelRegistry()
        r.register(kind: LeadGradingLayout.kind, factory: LeadGradingModel.factory)
        r.register(kind: GbdtLayout.kind, factory: GbdtModel.factory)
        r.register(kind: RankingLayout.kind, factory: RankingModel.factory)
        r.register(kind: RoutingLayout.kind, factory: RoutingModel.factory)
        r.register(kind: AllocationLayout.kind, factory: AllocationModel.factory)
        return r
    }
}
