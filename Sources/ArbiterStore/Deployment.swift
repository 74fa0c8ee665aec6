import Foundation

/// A traffic split: requests that pin no version are served by one of several versions, chosen by a hash
/// of their routing key, so that a key stays with its version while the split holds.
///
/// The hash is the model's (``bucket(key:model:)``), not the split's: each key has one fixed point in
/// [0, 1), and the shares are laid over [0, 1) in version order (the oldest version first). Changing the
/// weights of a two-version split therefore moves only the keys between the old and the new boundary — a
/// 90/10 split changed to 80/20 moves the keys in [0.8, 0.9) from the older version to the newer, and no
/// others.
public struct TrafficSplit: Codable, Equatable, Sendable {
    public struct Share: Codable, Equatable, Sendable {
        public var version: UInt64
        /// A share of the traffic in (0, 1]; the shares sum to 1.
        public var weight: Double

        public init(version: UInt64, weight: Double) {
            self.version = version
            self.weight = weight
        }
    }

    /// Sorted by version, each version once.
    public private(set) var shares: [Share]

    /// Checks the shares: at least two versions, each once, weights finite and positive, summing to 1
    /// (within 1e-6; they are then scaled to sum to 1 exactly).
    public init(shares: [Share]) throws(StoreError) {
        guard shares.count >= 2 else {
            throw StoreError.invalidRequest("a split needs at least two versions; to serve one version, promote it")
        }
        guard Set(shares.map(\.version)).count == shares.count else {
            throw StoreError.invalidRequest("a split names version \(Self.repeated(shares)) twice")
        }
        for s in shares where !(s.weight.isFinite && s.weight > 0) {
            throw StoreError.invalidRequest("version \(s.version)'s weight \(s.weight) is not a positive number")
        }
        let sum = shares.reduce(0) { $0 + $1.weight }
        guard abs(sum - 1) <= 1e-6 else {
            throw StoreError.invalidRequest("the weights sum to \(sum); they must sum to 1")
        }
        self.shares = shares.map { Share(version: $0.version, weight: $0.weight / sum) }.sorted { $0.version < $1.version }
    }

    /// A stored split is checked as one given on the command line.
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        try self.init(shares: try c.decode([Share].self, forKey: .shares))
    }

    private static func repeated(_ shares: [Share]) -> UInt64 {
        var seen = Set<UInt64>()
        for s in shares where !seen.insert(s.version).inserted { return s.version }
        return 0
    }

    /// Parses `7=0.9,8=0.1` (the CLI's form).
    public init(parsing text: String) throws(StoreError) {
        var shares: [Share] = []
        for part in text.split(separator: ",", omittingEmptySubsequences: false) {
            let kv = part.split(separator: "=", omittingEmptySubsequences: false)
            guard kv.count == 2, let v = UInt64(kv[0].trimmingCharacters(in: .whitespaces)), v > 0,
                  let w = Double(kv[1].trimmingCharacters(in: .whitespaces)) else {
                throw StoreError.invalidRequest("'\(part.prefix(60))' is not VERSION=WEIGHT (for example 7=0.9,8=0.1)")
            }
            shares.append(Share(version: v, weight: w))
        }
        try self.init(shares: shares)
    }

    public var versions: [UInt64] { shares.map(\.version) }

    /// The weight of `version` in this split, or nil.
    public func weight(of version: UInt64) -> Double? { shares.first { $0.version == version }?.weight }

    /// `7=0.9,8=0.1`.
    public var description: String {
        shares.map { "\($0.version)=\(Self.format($0.weight))" }.joined(separator: ",")
    }

    static func format(_ w: Double) -> String {
        let s = String(format: "%.6f", w)
        var t = Substring(s)
        while t.hasSuffix("0") { t = t.dropLast() }
        if t.hasSuffix(".") { t = t.dropLast() }
        return String(t)
    }

    /// Upper bounds of the shares in the 64-bit hash space, in `shares` order (the last is `UInt64.max`): a key
    /// whose ``bucket(key:model:)`` is below bound i and not below bound i−1 goes to share i.
    public var bounds: [UInt64] {
        var out: [UInt64] = []
        var cumulative = 0.0
        for (i, s) in shares.enumerated() {
            cumulative += s.weight
            if i == shares.count - 1 {
                out.append(UInt64.max)
            } else {
                // 2^64 × cumulative, clamped (Double cannot hold UInt64.max exactly).
                let x = cumulative * 0x1p64
                out.append(x >= 0x1p64 ? UInt64.max : UInt64(x))
            }
        }
        return out
    }

    /// The index in `shares` that serves `key`.
    public func index(forKey key: UInt64, model: String) -> Int {
        let b = Self.bucket(key: key, salt: Self.salt(model: model))
        let bounds = self.bounds
        for (i, bound) in bounds.enumerated() where b < bound { return i }
        return bounds.count - 1
    }

    /// The key's fixed point in the 64-bit hash space for `model` (SplitMix64's finalizer over the key and the
    /// model's salt). Independent of the weights, so splits move only the keys they must.
    @inlinable
    public static func bucket(key: UInt64, salt: UInt64) -> UInt64 {
        var z = (key ^ salt) &+ 0x9E37_79B9_7F4A_7C15
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// The model's salt: FNV-1a of "split/" and its name, so that two models split the same keys independently.
    public static func salt(model: String) -> UInt64 {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for b in ("split/" + model).utf8 {
            h ^= UInt64(b)
            h = h &* 0x0000_0100_0000_01b3
        }
        return h
    }
}

/// A version scored in the shadow of the served ones: a sampled share of live requests is scored by it as
/// well, off the event loops, and how its scores differ is recorded (``ShadowRecord``). Its answers never
/// reach a caller.
public struct ShadowConfig: Codable, Equatable, Sendable {
    public var version: UInt64
    /// The share of requests (that the model serves without a pin) scored in the shadow, in (0, 1].
    public var sample: Double

    public init(version: UInt64, sample: Double) throws(StoreError) {
        guard sample.isFinite, sample > 0, sample <= 1 else {
            throw StoreError.invalidRequest("the shadow sample \(sample) is not in (0, 1]")
        }
        self.version = version
        self.sample = sample
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        try self.init(version: try c.decode(UInt64.self, forKey: .version), sample: try c.decode(Double.self, forKey: .sample))
    }
}

/// How a shadow version's scores differed from the served version's on the same live requests, as a server
/// recorded them at `m/<model>/v/<shadow>/shadow`. One entry per served version it was compared with.
public struct ShadowRecord: Codable, Equatable, Sendable {
    public var comparisons: [ShadowComparison]
    public var by: String
    public var unixMillis: Int64

    public init(comparisons: [ShadowComparison], by: String, at date: Date = Date()) {
        self.comparisons = comparisons
        self.by = by
        self.unixMillis = Int64(date.timeIntervalSince1970 * 1000)
    }
}

/// Differences between a shadow version's answers and a served version's, over the requests compared.
public struct ShadowComparison: Codable, Equatable, Sendable {
    /// The version that served the requests compared.
    public var served: UInt64
    /// Requests scored by both.
    public var requests: UInt64
    /// Candidate rows compared (score by score, in request order).
    public var rows: UInt64
    /// The sum and the largest of |shadow score − served score| over the rows.
    public var sumAbsDifference: Double
    public var maxAbsDifference: Double
    /// Spearman's rank correlation of the two versions' scores within a request, summed over the requests
    /// with at least two rows, and how many those were (the mean is their ratio).
    public var rankCorrelationSum: Double
    public var rankedRequests: UInt64
    /// Rows of the model's first code column (grade, arm, ...) compared, and how many changed.
    public var codeRows: UInt64
    public var changedCodes: UInt64
    /// The name of the code column compared (nil when the model has none).
    public var codeColumn: String?
    /// Requests sampled but not compared because the shadow queue was full (the caller was answered anyway).
    public var dropped: UInt64
    /// Requests the shadow version could not score (it refused them), not counted above.
    public var failed: UInt64

    public init(served: UInt64, codeColumn: String?) {
        self.served = served
        self.requests = 0
        self.rows = 0
        self.sumAbsDifference = 0
        self.maxAbsDifference = 0
        self.rankCorrelationSum = 0
        self.rankedRequests = 0
        self.codeRows = 0
        self.changedCodes = 0
        self.codeColumn = codeColumn
        self.dropped = 0
        self.failed = 0
    }

    public var meanAbsDifference: Double { rows == 0 ? 0 : sumAbsDifference / Double(rows) }
    /// NaN when no request had two rows.
    public var meanRankCorrelation: Double { rankedRequests == 0 ? .nan : rankCorrelationSum / Double(rankedRequests) }
    /// NaN when the model has no code column.
    public var changedCodeShare: Double { codeRows == 0 ? .nan : Double(changedCodes) / Double(codeRows) }

    /// Adds `other`'s counts (the same served version).
    public mutating func merge(_ other: ShadowComparison) {
        requests += other.requests
        rows += other.rows
        sumAbsDifference += other.sumAbsDifference
        maxAbsDifference = max(maxAbsDifference, other.maxAbsDifference)
        rankCorrelationSum += other.rankCorrelationSum
        rankedRequests += other.rankedRequests
        codeRows += other.codeRows
        changedCodes += other.changedCodes
        dropped += other.dropped
        failed += other.failed
    }
}

/// The versions of a model a server keeps loaded (the active one, the split's, the shadow, and the newest
/// others it retains for pins), recorded at `m/<model>/retained` so that `gc` keeps them and `versions` shows them.
public struct RetainedRecord: Codable, Equatable, Sendable {
    public var versions: [UInt64]
    public var by: String
    public var unixMillis: Int64

    public init(versions: [UInt64], by: String, at date: Date = Date()) {
        self.versions = versions
        self.by = by
        self.unixMillis = Int64(date.timeIntervalSince1970 * 1000)
    }
}

/// What the store says should serve a model: its active version, any split and shadow, and the retained
/// record servers left.
public struct Deployment: Equatable, Sendable {
    public var active: UInt64?
    public var latest: UInt64?
    public var split: TrafficSplit?
    public var shadow: ShadowConfig?
    public var retained: RetainedRecord?

    /// The versions a split or a shadow needs, with the active one.
    public var required: Set<UInt64> {
        var s = Set(split?.versions ?? [])
        if let a = active { s.insert(a) }
        if let v = shadow?.version { s.insert(v) }
        return s
    }
}

extension Catalog {
    /// The model's active version, split, shadow and retained record, read in one snapshot. A record that does
    /// not decode is refused (servers keep serving what they have; the operator sets it again).
    public func deployment(model: String) throws -> Deployment {
        try StoreKeys.validate(model: model)
        let s = try environment.snapshot()
        return Deployment(active: try s.getUInt64(StoreKeys.active(model)), latest: try s.getUInt64(StoreKeys.latest(model)),
                          split: try decodeRecord(TrafficSplit.self, s.bytes(StoreKeys.split(model)), key: StoreKeys.split(model)),
                          shadow: try decodeRecord(ShadowConfig.self, s.bytes(StoreKeys.shadow(model)), key: StoreKeys.shadow(model)),
                          retained: try? decodeRecord(RetainedRecord.self, s.bytes(StoreKeys.retained(model)), key: StoreKeys.retained(model)))
    }

    /// Splits the traffic of `model` that pins no version between the split's versions (one write transaction,
    /// bumping the generation, as activation). Every version must exist and none may have been rejected by a
    /// server. Replaces any earlier split.
    public func split(model: String, _ split: TrafficSplit) throws {
        try StoreKeys.validate(model: model)
        let bytes = try encodeRecord(split)
        try environment.write { txn in
            guard try txn.getUInt64(StoreKeys.active(model)) != nil else { throw StoreError.unknownModel(model) }
            for v in split.versions { try Self.requireServable(txn, model, v) }
            try txn.put(StoreKeys.split(model), bytes)
            try Self.bumpGeneration(txn)
        }
    }

    /// Makes `version` active and ends any split (and a shadow of that version): one write transaction. A
    /// version a server rejected is refused.
    public func promote(model: String, version: UInt64) throws {
        try StoreKeys.validate(model: model)
        try environment.write { txn in
            guard try txn.getUInt64(StoreKeys.active(model)) != nil else { throw StoreError.unknownModel(model) }
            try Self.requireServable(txn, model, version)
            try Self.setActive(txn, model, version)
        }
    }

    /// Scores a sampled share of `model`'s live requests with `config.version` as well, recording how its
    /// scores differ. Replaces any earlier shadow. The version must exist and not have been rejected.
    public func setShadow(model: String, _ config: ShadowConfig) throws {
        try StoreKeys.validate(model: model)
        let bytes = try encodeRecord(config)
        try environment.write { txn in
            guard try txn.getUInt64(StoreKeys.active(model)) != nil else { throw StoreError.unknownModel(model) }
            try Self.requireServable(txn, model, config.version)
            try txn.put(StoreKeys.shadow(model), bytes)
            try Self.bumpGeneration(txn)
        }
    }

    /// Stops shadow scoring for `model`; returns whether a shadow was set. What was recorded stays.
    @discardableResult
    public func clearShadow(model: String) throws -> Bool {
        try StoreKeys.validate(model: model)
        return try environment.write { txn in
            guard try txn.delete(StoreKeys.shadow(model)) else { return false }
            try Self.bumpGeneration(txn)
            return true
        }
    }

    /// The shadow comparisons recorded for `model` v`version`, if any.
    public func shadowRecord(model: String, version: UInt64) throws -> ShadowRecord? {
        try StoreKeys.validate(model: model)
        guard let bytes = try environment.snapshot().bytes(StoreKeys.shadowRecord(model, version)) else { return nil }
        return try? JSONDecoder().decode(ShadowRecord.self, from: Data(bytes))
    }

    /// Records a server's shadow comparisons of a version (the generation is left alone).
    public func recordShadow(model: String, version: UInt64, _ record: ShadowRecord) throws {
        try StoreKeys.validate(model: model)
        let bytes = try encodeRecord(record)
        try environment.write { txn in
            guard try txn.get(StoreKeys.meta(model, version)) != nil else {
                throw StoreError.unknownVersion(model: model, version: version)
            }
            try txn.put(StoreKeys.shadowRecord(model, version), bytes)
        }
    }

    /// Records what a server keeps loaded for `model` (the generation is left alone).
    public func recordRetained(model: String, _ record: RetainedRecord) throws {
        try StoreKeys.validate(model: model)
        let bytes = try encodeRecord(record)
        try environment.write { txn in try txn.put(StoreKeys.retained(model), bytes) }
    }

    static func requireServable(_ txn: WriteTransaction, _ model: String, _ version: UInt64) throws {
        guard try txn.get(StoreKeys.meta(model, version)) != nil else {
            throw StoreError.unknownVersion(model: model, version: version)
        }
        if let bytes = try txn.get(StoreKeys.validation(model, version)),
           let record = try? JSONDecoder().decode(ValidationRecord.self, from: Data(bytes)), record.outcome == .rejected {
            throw StoreError.invalidRequest("\(model) v\(version) was rejected by \(record.by): \(record.reason ?? "no reason recorded")")
        }
    }

    /// `active` = `version`, any split ended, a shadow of `version` ended, the generation bumped.
    static func setActive(_ txn: WriteTransaction, _ model: String, _ version: UInt64) throws {
        try txn.put(StoreKeys.active(model), uint64: version)
        _ = try txn.delete(StoreKeys.split(model))
        if let bytes = try txn.get(StoreKeys.shadow(model)),
           let shadow = try? JSONDecoder().decode(ShadowConfig.self, from: Data(bytes)), shadow.version == version {
            _ = try txn.delete(StoreKeys.shadow(model))
        }
        try bumpGeneration(txn)
    }

    static func bumpGeneration(_ txn: WriteTransaction) throws {
        try txn.put(StoreKeys.generation, uint64: (try txn.getUInt64(StoreKeys.generation) ?? 0) + 1)
    }
}

func encodeRecord<T: Encodable>(_ value: T) throws -> [UInt8] {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.sortedKeys]
    return Array(try encoder.encode(value))
}

func decodeRecord<T: Decodable>(_ type: T.Type, _ bytes: [UInt8]?, key: String) throws(StoreError) -> T? {
    guard let bytes else { return nil }
    do {
        return try JSONDecoder().decode(T.self, from: Data(bytes))
    } catch {
        throw StoreError.corrupt("\(key) is not a valid record: \(error)")
    }
}
