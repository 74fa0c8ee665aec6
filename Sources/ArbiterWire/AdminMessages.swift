import NIOCore

/// What a loaded version is for, in MODEL_STATUS. A version with none of these is retained for pins.
public struct VersionRoles: OptionSet, Hashable, Sendable {
    public let rawValue: UInt8
    public init(rawValue: UInt8) { self.rawValue = rawValue }
    /// Serves requests that pin no version (when no split holds), and is what MODELS lists.
    public static let active = VersionRoles(rawValue: 1)
    /// Has a share of a traffic split.
    public static let split = VersionRoles(rawValue: 2)
    /// Scores a sample of live requests in the shadow.
    public static let shadow = VersionRoles(rawValue: 4)
}

/// One version a server has loaded.
public struct VersionStatus: Equatable, Sendable {
    public var version: UInt64
    public var roles: VersionRoles
    /// Its share of the unpinned traffic while a split holds (0 otherwise).
    public var splitWeight: Float

    public init(version: UInt64, roles: VersionRoles, splitWeight: Float = 0) {
        self.version = version
        self.roles = roles
        self.splitWeight = splitWeight
    }
}

/// A version the server refused to serve, and why.
public struct RejectedVersion: Equatable, Sendable {
    public var version: UInt64
    public var reason: String

    public init(version: UInt64, reason: String) {
        self.version = version
        self.reason = reason
    }
}

/// How the shadow version's scores differed from the served versions' (one comparison per served version).
public struct ShadowStatus: Equatable, Sendable {
    public struct Comparison: Equatable, Sendable {
        public var served: UInt64
        public var requests: UInt64
        public var rows: UInt64
        public var meanAbsDifference: Double
        public var maxAbsDifference: Double
        /// Requests with at least two rows, over which the rank correlation is averaged.
        public var rankedRequests: UInt64
        /// Spearman's, averaged over requests; NaN when no request had two rows.
        public var meanRankCorrelation: Double
        public var codeRows: UInt64
        public var changedCodes: UInt64
        /// Sampled requests not compared because the shadow queue was full.
        public var dropped: UInt64
        /// Requests the shadow version could not score.
        public var failed: UInt64
        /// The code column compared (`grade`, `arm`, ...); empty when the model has none.
        public var codeColumn: String

        public init(served: UInt64, requests: UInt64, rows: UInt64, meanAbsDifference: Double, maxAbsDifference: Double,
                    rankedRequests: UInt64, meanRankCorrelation: Double, codeRows: UInt64, changedCodes: UInt64,
                    dropped: UInt64, failed: UInt64, codeColumn: String) {
            self.served = served
            self.requests = requests
            self.rows = rows
            self.meanAbsDifference = meanAbsDifference
            self.maxAbsDifference = maxAbsDifference
            self.rankedRequests = rankedRequests
            self.meanRankCorrelation = meanRankCorrelation
            self.codeRows = codeRows
            self.changedCodes = changedCodes
            self.dropped = dropped
            self.failed = failed
            self.codeColumn = codeColumn
        }

        // NaN == NaN here: a status is equal to its decoded copy.
        public static func == (a: Self, b: Self) -> Bool {
            func same(_ x: Double, _ y: Double) -> Bool { x == y || (x.isNaN && y.isNaN) }
            return a.served == b.served && a.requests == b.requests && a.rows == b.rows
                && same(a.meanAbsDifference, b.meanAbsDifference) && same(a.maxAbsDifference, b.maxAbsDifference)
                && a.rankedRequests == b.rankedRequests && same(a.meanRankCorrelation, b.meanRankCorrelation)
                && a.codeRows == b.codeRows && a.changedCodes == b.changedCodes && a.dropped == b.dropped
                && a.failed == b.failed && a.codeColumn == b.codeColumn
        }
    }

    public var version: UInt64
    /// The share of unpinned requests sampled.
    public var sample: Float
    public var comparisons: [Comparison]

    public init(version: UInt64, sample: Float, comparisons: [Comparison]) {
        self.version = version
        self.sample = sample
        self.comparisons = comparisons
    }
}

/// STATUS: one model's deployment as the server serves it.
public struct ModelStatus: Equatable, Sendable {
    public var name: String
    /// Empty when no version of it serves.
    public var kind: String
    /// The version serving unpinned requests (0: none).
    public var active: UInt64
    /// The newest version in the store.
    public var latest: UInt64
    /// Why the store's active version is not the one serving (it failed validation); empty when it is.
    public var failure: String
    /// Every version loaded, oldest first.
    public var versions: [VersionStatus]
    /// The versions the server rejected (the newest 16), oldest first.
    public var rejected: [RejectedVersion]
    public var shadow: ShadowStatus?

    public init(name: String, kind: String, active: UInt64, latest: UInt64, failure: String = "",
                versions: [VersionStatus], rejected: [RejectedVersion] = [], shadow: ShadowStatus? = nil) {
        self.name = name
        self.kind = kind
        self.active = active
        self.latest = latest
        self.failure = failure
        self.versions = versions
        self.rejected = rejected
        self.shadow = shadow
    }
}

/// One change a RELOAD made.
public struct ReloadEvent: Equatable, Sendable {
    public enum Outcome: UInt8, Sendable {
        /// Loaded and validated: it serves, or may be pinned, from now on.
        case loaded = 1
        /// Failed validation: it never serves.
        case rejected = 2
        /// Let go: no longer active, in a split, the shadow or retained.
        case unloaded = 3
    }

    public var model: String
    public var version: UInt64
    public var outcome: Outcome
    public var detail: String

    public init(model: String, version: UInt64, outcome: Outcome, detail: String) {
        self.model = model
        self.version = version
        self.outcome = outcome
        self.detail = detail
    }
}

/// RELOADED: the store's generation the server now serves, and what changed.
public struct ReloadReport: Equatable, Sendable {
    public var generation: UInt64
    public var events: [ReloadEvent]

    public init(generation: UInt64, events: [ReloadEvent]) {
        self.generation = generation
        self.events = events
    }
}

extension ModelStatus {
    static func write(_ list: [ModelStatus], into b: inout ByteBuffer) {
        b.writeInteger(UInt32(list.count), endianness: .little)
        for m in list {
            b.writeMultipleIntegers(m.active, m.latest, endianness: .little)
            b.writeShortString(m.name)
            b.writeShortString(m.kind)
            b.writeShortString(ErrorBody.truncated(m.failure))
            b.writeInteger(UInt16(m.versions.count), endianness: .little)
            for v in m.versions {
                b.writeMultipleIntegers(v.version, v.roles.rawValue, UInt8(0), UInt16(0), v.splitWeight.bitPattern, endianness: .little)
            }
            b.writeInteger(UInt16(m.rejected.count), endianness: .little)
            for r in m.rejected {
                b.writeInteger(r.version, endianness: .little)
                b.writeShortString(ErrorBody.truncated(r.reason))
            }
            guard let s = m.shadow else {
                b.writeInteger(UInt8(0))
                continue
            }
            b.writeInteger(UInt8(1))
            b.writeMultipleIntegers(s.version, s.sample.bitPattern, UInt16(s.comparisons.count), endianness: .little)
            for c in s.comparisons {
                b.writeMultipleIntegers(c.served, c.requests, c.rows, c.meanAbsDifference.bitPattern, c.maxAbsDifference.bitPattern,
                                        c.rankedRequests, c.meanRankCorrelation.bitPattern, endianness: .little)
                b.writeMultipleIntegers(c.codeRows, c.changedCodes, c.dropped, c.failed, endianness: .little)
                b.writeShortString(c.codeColumn)
            }
        }
    }

    static func read(_ b: inout ByteBuffer) throws(WireError) -> [ModelStatus] {
        let n = try b.readLE(UInt32.self, "count")
        guard Int(n) <= b.readableBytes / 27 else { throw WireError(.malformed, "STATUS count \(n) exceeds the body") }
        var out: [ModelStatus] = []
        for _ in 0..<n {
            let active = try b.readLE(UInt64.self, "active")
            let latest = try b.readLE(UInt64.self, "latest")
            let name = try b.readShortString("name", max: 255)
            let kind = try b.readShortString("kind", max: 255)
            let failure = try b.readShortString("failure", max: ErrorBody.maxMessageBytes)
            let nv = try b.readLE(UInt16.self, "version_count")
            var versions: [VersionStatus] = []
            for _ in 0..<nv {
                let v = try b.readLE(UInt64.self, "version")
                let roles = try b.readLE(UInt8.self, "roles")
                _ = try b.readLE(UInt8.self, "reserved")
                _ = try b.readLE(UInt16.self, "reserved")
                let w = Float(bitPattern: try b.readLE(UInt32.self, "split_weight"))
                versions.append(VersionStatus(version: v, roles: VersionRoles(rawValue: roles), splitWeight: w))
            }
            let nr = try b.readLE(UInt16.self, "rejected_count")
            var rejected: [RejectedVersion] = []
            for _ in 0..<nr {
                let v = try b.readLE(UInt64.self, "version")
                rejected.append(RejectedVersion(version: v, reason: try b.readShortString("reason", max: ErrorBody.maxMessageBytes)))
            }
            var shadow: ShadowStatus?
            switch try b.readLE(UInt8.self, "has_shadow") {
            case 0: break
            case 1:
                let v = try b.readLE(UInt64.self, "shadow_version")
                let sample = Float(bitPattern: try b.readLE(UInt32.self, "sample"))
                let nc = try b.readLE(UInt16.self, "comparison_count")
                var comparisons: [ShadowStatus.Comparison] = []
                for _ in 0..<nc {
                    let served = try b.readLE(UInt64.self, "served")
                    let requests = try b.readLE(UInt64.self, "requests")
                    let rows = try b.readLE(UInt64.self, "rows")
                    let mean = Double(bitPattern: try b.readLE(UInt64.self, "mean_abs_difference"))
                    let maxd = Double(bitPattern: try b.readLE(UInt64.self, "max_abs_difference"))
                    let ranked = try b.readLE(UInt64.self, "ranked_requests")
                    let rho = Double(bitPattern: try b.readLE(UInt64.self, "mean_rank_correlation"))
                    let codeRows = try b.readLE(UInt64.self, "code_rows")
                    let changed = try b.readLE(UInt64.self, "changed_codes")
                    let dropped = try b.readLE(UInt64.self, "dropped")
                    let failed = try b.readLE(UInt64.self, "failed")
                    let column = try b.readShortString("code_column", max: 255)
                    comparisons.append(.init(served: served, requests: requests, rows: rows, meanAbsDifference: mean,
                                             maxAbsDifference: maxd, rankedRequests: ranked, meanRankCorrelation: rho,
                                             codeRows: codeRows, changedCodes: changed, dropped: dropped, failed: failed,
                                             codeColumn: column))
                }
                shadow = ShadowStatus(version: v, sample: sample, comparisons: comparisons)
            case let x:
                throw WireError(.malformed, "has_shadow is \(x); it must be 0 or 1")
            }
            out.append(ModelStatus(name: name, kind: kind, active: active, latest: latest, failure: failure,
                                   versions: versions, rejected: rejected, shadow: shadow))
        }
        return out
    }
}

extension ReloadReport {
    func write(into b: inout ByteBuffer) {
        b.writeMultipleIntegers(generation, UInt32(events.count), endianness: .little)
        for e in events {
            b.writeMultipleIntegers(e.version, e.outcome.rawValue, endianness: .little)
            b.writeShortString(e.model)
            b.writeShortString(ErrorBody.truncated(e.detail))
        }
    }

    static func read(_ b: inout ByteBuffer) throws(WireError) -> ReloadReport {
        let g = try b.readLE(UInt64.self, "generation")
        let n = try b.readLE(UInt32.self, "event_count")
        guard Int(n) <= b.readableBytes / 13 else { throw WireError(.malformed, "RELOADED event count \(n) exceeds the body") }
        var events: [ReloadEvent] = []
        for _ in 0..<n {
            let v = try b.readLE(UInt64.self, "version")
            let o = try b.readLE(UInt8.self, "outcome")
            guard let outcome = ReloadEvent.Outcome(rawValue: o) else { throw WireError(.malformed, "reload outcome \(o) is not defined") }
            let model = try b.readShortString("model", max: 255)
            events.append(ReloadEvent(model: model, version: v, outcome: outcome, detail: try b.readShortString("detail", max: ErrorBody.maxMessageBytes)))
        }
        return ReloadReport(generation: g, events: events)
    }
}
