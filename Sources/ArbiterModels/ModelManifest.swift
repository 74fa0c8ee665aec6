import Foundation

/// The model-level manifest of a version, stored as JSON beside its tensors: what it takes and gives, its
/// plugin's parameters, and golden cases that any loader must reproduce before the version may serve.
public struct ModelManifest: Codable, Equatable, Sendable {
    public var kind: String
    public var schema: FeatureSchema
    /// Plugin-specific scalar parameters (factor count, stage names' order, ...).
    public var parameters: [String: Double]
    public var golden: [GoldenCase]
    /// Largest absolute difference allowed between a recomputed golden output and the recorded one.
    public var goldenTolerance: Float
    /// Free-form notes on how the version was made (data file, seed, epochs).
    public var training: [String: String]

    public init(kind: String, schema: FeatureSchema, parameters: [String: Double], golden: [GoldenCase],
                goldenTolerance: Float = 1e-5, training: [String: String] = [:]) {
        self.kind = kind
        self.schema = schema
        self.parameters = parameters
        self.golden = golden
        self.goldenTolerance = goldenTolerance
        self.training = training
    }

    public func encoded() -> [UInt8] {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys]
        // Floats that cannot be represented are a trainer bug; encoding them as strings keeps them visible.
        e.nonConformingFloatEncodingStrategy = .convertToString(positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
        return Array(try! e.encode(self))
    }

    public static func decode(_ data: Data) throws(ModelError) -> ModelManifest {
        do {
            let d = JSONDecoder()
            d.nonConformingFloatDecodingStrategy = .convertFromString(positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
            return try d.decode(ModelManifest.self, from: data)
        } catch {
            throw ModelError.invalidManifest("\(error)")
        }
    }
}

/// One golden input (a context and a few candidates) with the outputs the trainer computed for it.
public struct GoldenCase: Codable, Equatable, Sendable {
    public var context: [Float]
    /// Row-major candidates.
    public var candidates: [Float]
    public var candidateCount: Int
    public var scores: [Float]
    /// Float output columns, column-major (`floatColumnCount × candidateCount`).
    public var floatColumns: [Float]
    public var codeColumns: [UInt8]
    /// The request's candidate ids, routing key, subject and top_k, for models whose answer depends on them
    /// (absent: no ids, key 0, no subject, every row). Absent from manifests written before they existed.
    public var ids: [UInt64]?
    public var routingKey: UInt64?
    public var subject: UInt64?
    public var topK: Int?
    /// The candidate indices answered, in the answer's order (absent: not checked).
    public var rows: [Int]?

    public init(context: [Float], candidates: [Float], candidateCount: Int, scores: [Float],
                floatColumns: [Float], codeColumns: [UInt8], ids: [UInt64]? = nil, routingKey: UInt64? = nil,
                subject: UInt64? = nil, topK: Int? = nil, rows: [Int]? = nil) {
        self.context = context
        self.candidates = candidates
        self.candidateCount = candidateCount
        self.scores = scores
        self.floatColumns = floatColumns
        self.codeColumns = codeColumns
        self.ids = ids
        self.routingKey = routingKey
        self.subject = subject
        self.topK = topK
        self.rows = rows
    }
}
