import ArbiterModels
import ArbiterStore
import Foundation
import Logging

/// Loads the active version of every model in the store, validating each before it may serve.
struct ModelLoader: Sendable {
    let environment: StoreEnvironment
    let registry: ModelRegistry
    let logger: Logger

    /// Loads `model` at `version` (0 = active) and validates it.
    func load(model: String, version: UInt64 = 0) throws -> ServingModel {
        let loaded = try LoadedVersion(environment: environment, model: model, version: version)
        let serving = ServingModel(name: model, model: try registry.load(loaded))
        // Validation read every page; large tensors (embedding tables) give theirs back until requests touch them.
        loaded.releaseResidentPages()
        return serving
    }

    /// Builds a table of every model's active version. A model whose active version fails validation is
    /// served from its newest earlier version that passes, if any, and the failure is recorded.
    func loadAll(keeping previous: ModelTable? = nil) -> ModelTable {
        var table = ModelTable()
        let catalog = Catalog(environment: environment)
        let names: [String]
        do { names = try catalog.models() } catch {
            logger.error("cannot list models in the store: \(error)")
            return previous ?? table
        }
        for name in names {
            let active: UInt64?
            do { active = try catalog.activeVersion(model: name) } catch {
                table.failures[name] = "\(error)"
                continue
            }
            guard let active else { continue }
            if let current = previous?.models[name], current.version == active {
                table.models[name] = current
                continue
            }
            do {
                table.models[name] = try load(model: name, version: active)
                logger.info("loaded \(name) v\(active)")
                record(name, active, ValidationRecord(outcome: .passed, by: Self.identity), catalog: catalog)
            } catch {
                let why = "v\(active) failed validation: \(error)"
                record(name, active, ValidationRecord(outcome: .rejected, reason: "\(error)", by: Self.identity), catalog: catalog)
                table.failures[name] = why
                logger.error("model \(name) \(why)")
                if let current = previous?.models[name] {
                    logger.warning("model \(name): still serving v\(current.version)")
                    table.models[name] = current
                } else if let fallback = loadFallback(name, below: active, catalog: catalog) {
                    logger.warning("model \(name): serving v\(fallback.version), the newest earlier version that validates")
                    table.models[name] = fallback
                }
            }
        }
        return table
    }

    /// "arbiterd pid N on HOST", for validation records.
    static let identity = "arbiterd pid \(ProcessInfo.processInfo.processIdentifier) on \(ProcessInfo.processInfo.hostName)"

    /// Records a verdict in the store for `arbiter-train versions`, unless the same outcome is recorded
    /// already or the store is read-only. A failure to record is logged; it never changes what is served.
    private func record(_ model: String, _ version: UInt64, _ verdict: ValidationRecord, catalog: Catalog) {
        guard !environment.readOnly else { return }
        do {
            if let old = try catalog.validation(model: model, version: version),
               old.outcome == verdict.outcome, old.reason == verdict.reason { return }
            try catalog.recordValidation(model: model, version: version, verdict)
        } catch {
            logger.warning("could not record the validation of \(model) v\(version) in the store: \(error)")
        }
    }

    private func loadFallback(_ name: String, below: UInt64, catalog: Catalog) -> ServingModel? {
        guard let versions = try? catalog.versions(model: name) else { return nil }
        for v in versions.reversed() where v.meta.version < below {
            if let m = try? load(model: name, version: v.meta.version) { return m }
        }
        return nil
    }
}
