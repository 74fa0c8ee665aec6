/// A model input feature.
public struct Feature: Codable, Equatable, Hashable, Sendable {
    public enum Kind: String, Codable, Sendable {
        /// Any finite float.
        case numeric
        /// An integral code in `0..<cardinality`, carried as a float.
        case categorical
    }

    public var name: String
    public var kind: Kind
    /// Number of codes of a categorical feature; 0 for numeric.
    public var cardinality: Int
    /// Whether NaN is accepted for this feature, meaning "missing": the model decides what it means (a tree
    /// follows each split's default direction). For every other feature NaN is refused. Infinities are
    /// refused everywhere. Default false (and absent from manifests written before it existed).
    public var allowsMissing: Bool

    public init(name: String, kind: Kind, cardinality: Int = 0, allowsMissing: Bool = false) {
        self.name = name
        self.kind = kind
        self.cardinality = cardinality
        self.allowsMissing = allowsMissing
    }

    public static func numeric(_ name: String, allowsMissing: Bool = false) -> Feature {
        Feature(name: name, kind: .numeric, allowsMissing: allowsMissing)
    }
    public static func categorical(_ name: String, _ cardinality: Int, allowsMissing: Bool = false) -> Feature {
        Feature(name: name, kind: .categorical, cardinality: cardinality, allowsMissing: allowsMissing)
    }

    private enum CodingKeys: String, CodingKey { case name, kind, cardinality, allowsMissing }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        name = try c.decode(String.self, forKey: .name)
        kind = try c.decode(Kind.self, forKey: .kind)
        cardinality = try c.decode(Int.self, forKey: .cardinality)
        allowsMissing = try c.decodeIfPresent(Bool.self, forKey: .allowsMissing) ?? false
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(name, forKey: .name)
        try c.encode(kind, forKey: .kind)
        try c.encode(cardinality, forKey: .cardinality)
        // Written only when set, so that manifests without missing values stay as earlier builds wrote them.
        if allowsMissing { try c.encode(true, forKey: .allowsMissing) }
    }
}

/// A column a model adds to each result row beside its score.
public struct OutputColumn: Codable, Equatable, Hashable, Sendable {
    public enum Kind: String, Codable, Sendable {
        case float32
        /// A u8 index into `labels`.
        case code
    }

    public var name: String
    public var kind: Kind
    public var labels: [String]

    public init(name: String, kind: Kind, labels: [String] = []) {
        self.name = name
        self.kind = kind
        self.labels = labels
    }
}

/// What a version takes and gives: context features (one vector per request), candidate features (one row
/// per candidate), and output columns (one value per candidate each).
public struct FeatureSchema: Codable, Equatable, Sendable {
    public var context: [Feature]
    public var candidate: [Feature]
    public var outputs: [OutputColumn]

    public init(context: [Feature], candidate: [Feature], outputs: [OutputColumn]) {
        self.context = context
        self.candidate = candidate
        self.outputs = outputs
    }

    public var floatColumnCount: Int { outputs.lazy.filter { $0.kind == .float32 }.count }
    public var codeColumnCount: Int { outputs.lazy.filter { $0.kind == .code }.count }

    /// Checks that the schema itself is usable: unique non-empty names, sane cardinalities, labels that fit
    /// a u8.
    public func check() throws(ModelError) {
        var names = Set<String>()
        for f in context + candidate {
            guard !f.name.isEmpty, names.insert(f.name).inserted else {
                throw ModelError.invalidSchema("feature name '\(f.name)' is empty or repeats")
            }
            if f.kind == .categorical, !(1...1_000_000).contains(f.cardinality) {
                throw ModelError.invalidSchema("categorical feature '\(f.name)' has cardinality \(f.cardinality)")
            }
        }
        for c in outputs where c.kind == .code {
            guard !c.labels.isEmpty, c.labels.count <= 255 else {
                throw ModelError.invalidSchema("code column '\(c.name)' has \(c.labels.count) labels (1...255)")
            }
        }
    }

    /// Finds the first value the schema forbids: an infinity anywhere, a NaN in a feature that does not
    /// allow missing values, or a categorical code that is not an integer in `0..<cardinality`. Returns nil when every value is acceptable. No allocation
    /// unless a problem is found.
    @inlinable
    public func firstInvalidValue(context ctx: UnsafeBufferPointer<Float>, candidates: UnsafeBufferPointer<Float>,
                                  candidateCount: Int) -> String? {
        for (j, f) in context.enumerated() {
            if let why = Self.reject(ctx[j], f) { return "context feature '\(f.name)' \(why)" }
        }
        let m = candidate.count
        if m == 0 { return nil }
        // Fast path: one pass for finiteness over the whole matrix, then the categorical columns only.
        var allFinite = true
        for x in candidates where !x.isFinite { allFinite = false; break }
        for (j, f) in candidate.enumerated() where !allFinite || f.kind == .categorical {
            var r = 0
            while r < candidateCount {
                if let why = Self.reject(candidates[r * m + j], f) { return "candidate row \(r) feature '\(f.name)' \(why)" }
                r += 1
            }
        }
        return nil
    }

    @inlinable
    static func reject(_ x: Float, _ f: Feature) -> String? {
        if x.isNaN && f.allowsMissing { return nil }
        if !x.isFinite { return "is \(x), not a finite number" }
        if f.kind == .categorical {
            if x < 0 || x >= Float(f.cardinality) || x.rounded(.towardZero) != x {
                return "is \(x), not a code in 0..<\(f.cardinality)"
            }
        }
        return nil
    }
}
