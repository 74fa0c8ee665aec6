import ArbiterModels
import ArbiterStore
import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOPosix

/// Loads the active version of every model in the store, validating each before it may serve.
struct ModelLoader: Sendable {
    let environment: StoreEnvironment
    let registry: ModelRegistry
    let logger: Logger
    /// Where verdicts and retained versions are written: on a thread of its own, so that a trainer holding
    /// the store's write lock never delays a swap.
    let records: StoreRecorder

    /// Loads `model` at `version` (0 = active) and validates it. Tensors it shares with a version in `loaded`
    /// (the same stored bytes) are not read again.
    func load(model: String, version: UInt64 = 0, loaded others: [ServingModel] = []) throws -> ServingModel {
        let loaded = try LoadedVersion(environment: environment, model: model, version: version, verified: others.map(\.model.version))
        // Validation reads every page (the checksums): the version is pre-faulted. Whether its large tensors
        // stay mapped is decided once its role is known (`ServingModel.settlePages`).
        return ServingModel(name: model, model: try registry.load(loaded))
    }

    /// What a reload did to one model's versions (RELOAD's answer, and the log).
    struct Event: Sendable, Equatable {
        enum Outcome: UInt8, Sendable { case loaded = 1, rejected = 2, unloaded = 3 }
        var model: String
        var version: UInt64
        var outcome: Outcome
        var detail: String
    }

    /// Builds the table of every model from the store: for each, its active version, a split's versions, the
    /// shadow, and the newest `retain` others (0 at start-up, so that the first answer waits only for the
    /// active versions). Versions already in `previous` are reused as they are; new ones are loaded and
    /// validated first. A version that fails validation never serves: if it is the active one, the
    /// previous active version keeps serving (at start-up, the newest earlier version that validates), and
    /// a split's share of it is served by the active version. Verdicts are recorded in the store.
    func loadAll(keeping previous: ModelTable? = nil, retain: Int) -> (table: ModelTable, events: [Event]) {
        var table = ModelTable()
        var events: [Event] = []
        let catalog = Catalog(environment: environment)
        let names: [String]
        do { names = try catalog.models() } catch {
            logger.error("cannot list models in the store: \(error)")
            return (previous ?? table, [])
        }
        for name in names {
            var rejected = previous?.rejected[name] ?? [:]
            let before = previous?.models[name]
            let deployment: Deployment, listing: [VersionListing]
            do {
                deployment = try catalog.deployment(model: name)
                listing = try catalog.versions(model: name)
            } catch {
                // What serves keeps serving; the operator sees why in MODEL_STATUS and the log.
                logger.error("cannot read \(name)'s versions from the store: \(error)")
                table.failures[name] = "\(error)"
                if let before { table.models[name] = before }
                if !rejected.isEmpty { table.rejected[name] = rejected }
                continue
            }
            guard let active = deployment.active else { continue }
            // What must be loaded, then the newest others that no server has rejected, for pins.
            var wanted = deployment.required
            var others = 0
            for v in listing.reversed() where others < retain {
                let version = v.meta.version
                if wanted.contains(version) || rejected[version] != nil || v.validation?.outcome == .rejected { continue }
                wanted.insert(version)
                others += 1
            }
            var loaded: [UInt64: ServingModel] = [:]
            for version in wanted.sorted() {
                if let m = before?.loaded.first(where: { $0.version == version }) {
                    loaded[version] = m
                    continue
                }
                if rejected[version] != nil { continue }
                do {
                    let started = ServerClock.system.nanoseconds()
                    let m = try load(model: name, version: version, loaded: (before?.loaded ?? []) + loaded.values)
                    loaded[version] = m
                    let shared = m.model.version.sharedBytes
                    logger.info("loaded \(name) v\(version) in \((ServerClock.system.nanoseconds() - started) / 1_000_000) ms (checksums, the kind's checks, golden cases)\(shared > 0 ? "; \(shared >> 20) MiB of tensors shared with a loaded version, not read again" : "")")
                    events.append(Event(model: name, version: version, outcome: .loaded, detail: "validated"))
                    record(name, version, ValidationRecord(outcome: .passed, by: Self.identity), catalog: catalog)
                } catch {
                    rejected[version] = "\(error)"
                    logger.error("model \(name) v\(version) failed validation and will not serve: \(error)")
                    events.append(Event(model: name, version: version, outcome: .rejected, detail: "\(error)"))
                    record(name, version, ValidationRecord(outcome: .rejected, reason: "\(error)", by: Self.identity), catalog: catalog)
                }
            }
            // Only the newest rejections are kept (a store full of bad versions must not grow the table).
            if rejected.count > Self.rejectionsKept {
                for v in rejected.keys.sorted().dropLast(Self.rejectionsKept) { rejected[v] = nil }
            }
            if !rejected.isEmpty { table.rejected[name] = rejected }

            var serving = loaded[active]
            if serving == nil {
                let why = "v\(active) failed validation: \(rejected[active] ?? "unknown")"
                table.failures[name] = why
                if let current = before?.active {
                    logger.warning("model \(name): still serving v\(current.version)")
                    serving = current
                } else if let fallback = loadFallback(name, below: active, catalog: catalog) {
                    logger.warning("model \(name): serving v\(fallback.version), the newest earlier version that validates")
                    serving = fallback
                }
                if let s = serving { loaded[s.version] = s }
            }
            guard let serving else { continue }
            var shadow: ShadowTarget?
            if let config = deployment.shadow, let m = loaded[config.version] {
                let recorder: ShadowRecorder
                if let old = before?.shadow, old.model.version == config.version {
                    recorder = old.recorder
                } else {
                    recorder = ShadowRecorder(model: name, version: config.version, codeColumn: ShadowRecorder.codeColumn(of: m.schema),
                                              initial: try? catalog.shadowRecord(model: name, version: config.version))
                }
                shadow = ShadowTarget(model: m, sample: config.sample, recorder: recorder)
            }
            for m in before?.loaded ?? [] where loaded[m.version] == nil {
                events.append(Event(model: name, version: m.version, outcome: .unloaded, detail: "no longer active, split, shadow or retained"))
            }
            let served = ServedModel(name: name, active: serving, loaded: Array(loaded.values), split: deployment.split,
                                     shadow: shadow, latest: deployment.latest ?? active)
            // Before the swap: what serves unpinned requests has every page mapped (a version retained until now
            // is pre-faulted again); what only pins or the shadow use gives its large tensors' pages back.
            // The versions that serve take their hold first: a table they share with one that stops serving then
            // stays mapped, instead of being given back and walked in again (10 ms for 300 MiB).
            let hot = Set([served.active.version] + served.split.map(\.model.version))
            for m in served.loaded where hot.contains(m.version) { m.settlePages(serving: true) }
            for m in served.loaded where !hot.contains(m.version) { m.settlePages(serving: false) }
            table.models[name] = served
            recordRetained(served, deployment.retained, catalog: catalog)
        }
        return (table, events)
    }

    /// Rejections remembered per model.
    static let rejectionsKept = 16

    /// Records the versions kept loaded, so that `gc` keeps them, when they changed.
    private func recordRetained(_ m: ServedModel, _ old: RetainedRecord?, catalog: Catalog) {
        guard !environment.readOnly else { return }
        let versions = m.loaded.map(\.version)
        if let old, old.versions == versions, old.by == Self.identity { return }
        let logger = self.logger, name = m.name
        records.submit {
            do {
                try catalog.recordRetained(model: name, RetainedRecord(versions: versions, by: Self.identity))
            } catch {
                logger.warning("could not record the versions of \(name) kept loaded: \(error)")
            }
        }
    }

    /// "arbiterd pid N on HOST", for validation records.
    static let identity = "arbiterd pid \(ProcessInfo.processInfo.processIdentifier) on \(ProcessInfo.processInfo.hostName)"

    /// Records a verdict in the store for `arbiter-train versions`, unless the same outcome is recorded
    /// already or the store is read-only. A failure to record is logged; it never changes what is served.
    private func record(_ model: String, _ version: UInt64, _ verdict: ValidationRecord, catalog: Catalog) {
        guard !environment.readOnly else { return }
        let logger = self.logger
        records.submit {
            do {
                if let old = try catalog.validation(model: model, version: version),
                   old.outcome == verdict.outcome, old.reason == verdict.reason { return }
                try catalog.recordValidation(model: model, version: version, verdict)
            } catch {
                logger.warning("could not record the validation of \(model) v\(version) in the store: \(error)")
            }
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

/// Writes the server's records to the store (validation verdicts, the versions kept loaded, shadow
/// comparisons) in order, on a thread of its own. A trainer holds the store's write lock for as long as it
/// writes a version; were these writes made on the loader thread, the next swap would wait for it.
final class StoreRecorder: Sendable {
    /// One thread, so that its nice value holds for every record (a dispatch queue's blocks run on whichever
    /// pool thread is free: a nice value set in one block would miss the next and stay on a shared thread).
    private let pool: NIOThreadPool

    init(nice: Int32 = 0) {
        pool = NIOThreadPool(numberOfThreads: 1)
        pool.start()
        pool.submit { _ in lowerThreadPriority(nice) }
    }

    /// Queues `body`; records submitted after `shutdown` are dropped.
    func submit(_ body: @escaping @Sendable () -> Void) {
        pool.submit { state in
            guard case .active = state else { return }
            body()
        }
    }

    /// Returns once everything submitted so far is written (tests, shutdown).
    func drain() {
        let done = ConditionLock(value: false)
        pool.submit { _ in
            done.lock()
            done.unlock(withValue: true)
        }
        done.lock(whenValue: true)
        done.unlock()
    }

    /// The records thread's scheduling, as it sees itself (tests).
    func scheduling() -> ThreadScheduling {
        let seen = NIOLockedValueBox(ThreadScheduling(policy: -1, nice: 0))
        submit { seen.withLockedValue { $0 = ThreadScheduling.current() } }
        drain()
        return seen.withLockedValue { $0 }
    }

    /// Stops the thread once what is queued has run.
    func shutdown() async throws {
        drain()
        try await pool.shutdownGracefully()
    }
}

/// Puts the calling thread in Linux's SCHED_IDLE class: it runs only when nothing else wants the core, and a
/// waking event loop preempts it at once (a nice value only weighs its share, so a loop could wait for a
/// niced thread's time slice). For work that may be dropped when starved (the shadow); false if refused.
@discardableResult
func idleThreadPriority() -> Bool {
    #if os(Linux)
    var param = sched_param()
    param.sched_priority = 0
    return sched_setscheduler(0, 5 /* SCHED_IDLE */, &param) == 0
    #else
    return false
    #endif
}

/// A thread's scheduling policy (0 SCHED_OTHER, 5 SCHED_IDLE; -1 where unknown) and nice value.
struct ThreadScheduling: Sendable, Equatable {
    var policy: Int32
    var nice: Int32

    static func current() -> ThreadScheduling {
        #if os(Linux)
        let nice = getpriority(__priority_which_t(PRIO_PROCESS.rawValue), 0)
        return ThreadScheduling(policy: sched_getscheduler(0), nice: nice)
        #else
        return ThreadScheduling(policy: -1, nice: getpriority(PRIO_PROCESS, 0))
        #endif
    }
}

/// Raises the calling thread's nice value to `nice` (Linux keeps one per thread); 0 leaves it. Failing (a
/// sandbox that forbids it) changes nothing else.
func lowerThreadPriority(_ nice: Int32) {
    guard nice > 0 else { return }
    #if os(Linux)
    _ = setpriority(__priority_which_t(PRIO_PROCESS.rawValue), 0, nice)
    #else
    _ = setpriority(PRIO_PROCESS, 0, nice)
    #endif
}
