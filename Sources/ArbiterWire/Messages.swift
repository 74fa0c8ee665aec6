import NIOCore

/// HELLO: the client's offer. Must be the first frame on a connection (PING excepted).
public struct Hello: Equatable, Sendable {
    /// Lowest and highest protocol version the client speaks.
    public var minVersion: UInt16
    public var maxVersion: UInt16
    /// Largest response body the client accepts (0 = no preference).
    public var maxFrameBytes: UInt32
    /// Compression the client offers, as a bit set (bit 0: zstd).
    public var compression: CompressionSet
    public var clientName: String
    /// The client's access token (≤ 255 bytes), for a server that requires one; nil sends none (the field is
    /// left out of the body, as clients written before it did).
    public var token: String?

    public init(minVersion: UInt16 = 1, maxVersion: UInt16 = 1, maxFrameBytes: UInt32 = 0,
                compression: CompressionSet = [], clientName: String, token: String? = nil) {
        self.minVersion = minVersion
        self.maxVersion = maxVersion
        self.maxFrameBytes = maxFrameBytes
        self.compression = compression
        self.clientName = clientName
        self.token = token
    }
}

/// HELLO_OK: what the server settled for this connection.
public struct HelloOK: Equatable, Sendable {
    public var version: UInt16
    public var limits: Limits
    /// The compression both sides may use from now on: at most one bit.
    public var compression: CompressionSet
    public var serverName: String

    public init(version: UInt16 = 1, limits: Limits, compression: CompressionSet, serverName: String) {
        self.version = version
        self.limits = limits
        self.compression = compression
        self.serverName = serverName
    }
}

/// A set of compression methods, as carried in HELLO and HELLO_OK.
public struct CompressionSet: OptionSet, Hashable, Sendable {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }
    public static let zstd = CompressionSet(rawValue: 1)
}

/// One entry of MODELS: a model that has an active version loaded.
public struct ModelSummary: Equatable, Sendable {
    public var name: String
    public var kind: String
    public var version: UInt64
    public var contextFeatureCount: UInt16
    public var candidateFeatureCount: UInt16

    public init(name: String, kind: String, version: UInt64, contextFeatureCount: UInt16, candidateFeatureCount: UInt16) {
        self.name = name
        self.kind = kind
        self.version = version
        self.contextFeatureCount = contextFeatureCount
        self.candidateFeatureCount = candidateFeatureCount
    }
}

/// MODEL_INFO: ask for a model's schema.
public struct ModelInfoRequest: Equatable, Sendable {
    public var model: String
    /// 0 asks for the active version.
    public var version: UInt64

    public init(model: String, version: UInt64 = 0) {
        self.model = model
        self.version = version
    }
}

/// A feature as the schema declares it.
public struct FeatureSpec: Equatable, Hashable, Sendable, Codable {
    public enum Kind: UInt8, Sendable, Codable {
        /// Any finite float32.
        case numeric = 0
        /// An integral code in `0..<cardinality`, sent as a float32.
        case categorical = 1
    }

    public var name: String
    public var kind: Kind
    /// The number of codes of a categorical feature; 0 for numeric ones.
    public var cardinality: UInt32
    /// Whether NaN is accepted for this feature, meaning "missing" (the model decides what that means; a
    /// tree follows each split's default direction). NaN is refused for every other feature. On the wire,
    /// bit 7 of the kind byte.
    public var allowsMissing: Bool

    /// The kind byte's bit that marks a feature that accepts missing values.
    public static let missingBit: UInt8 = 0x80

    public init(name: String, kind: Kind, cardinality: UInt32 = 0, allowsMissing: Bool = false) {
        self.name = name
        self.kind = kind
        self.cardinality = cardinality
        self.allowsMissing = allowsMissing
    }

    public static func numeric(_ name: String) -> FeatureSpec { FeatureSpec(name: name, kind: .numeric) }
    public static func categorical(_ name: String, _ cardinality: UInt32) -> FeatureSpec {
        FeatureSpec(name: name, kind: .categorical, cardinality: cardinality)
    }
}

/// An output column a model adds to every RESULT row, beside the score.
public struct ColumnSpec: Equatable, Hashable, Sendable, Codable {
    public enum Kind: UInt8, Sendable, Codable {
        /// One float32 per row.
        case float32 = 1
        /// One u8 per row, an index into `labels`.
        case code = 2
    }

    public var name: String
    public var kind: Kind
    /// The names of the codes of a `code` column (at most 255); empty for float columns.
    public var labels: [String]

    public init(name: String, kind: Kind, labels: [String] = []) {
        self.name = name
        self.kind = kind
        self.labels = labels
    }
}

/// SCHEMA: the answer to MODEL_INFO.
public struct ModelSchema: Equatable, Sendable {
    public var model: String
    public var kind: String
    public var version: UInt64
    /// When the version was published, in milliseconds since the Unix epoch.
    public var createdUnixMillis: UInt64
    public var contextFeatures: [FeatureSpec]
    public var candidateFeatures: [FeatureSpec]
    public var outputs: [ColumnSpec]

    public init(model: String, kind: String, version: UInt64, createdUnixMillis: UInt64,
                contextFeatures: [FeatureSpec], candidateFeatures: [FeatureSpec], outputs: [ColumnSpec]) {
        self.model = model
        self.kind = kind
        self.version = version
        self.createdUnixMillis = createdUnixMillis
        self.contextFeatures = contextFeatures
        self.candidateFeatures = candidateFeatures
        self.outputs = outputs
    }
}

/// SCORE: score a batch of candidates for one context.
public struct ScoreRequest: Equatable, Sendable {
    public var model: String
    /// 0 = the active version; otherwise the version must be loaded.
    public var version: UInt64
    /// A stable key (user, application) for traffic splits; opaque to the server today.
    public var routingKey: UInt64
    /// 0 = every candidate, in request order; k > 0 = the best k, highest score first.
    public var topK: UInt32
    public var context: [Float]
    public var candidateIDs: [UInt64]
    /// Columns of the candidate matrix.
    public var candidateFeatureCount: Int
    /// Row-major, `candidateIDs.count × candidateFeatureCount`.
    public var candidateFeatures: [Float]
    /// Who the request is about — the user a ranking is for — when the model needs it (SCORE flag
    /// `SUBJECT`). Absent, the flag is clear and the field is not sent.
    public var subject: UInt64?

    public init(model: String, version: UInt64 = 0, routingKey: UInt64 = 0, topK: UInt32 = 0, subject: UInt64? = nil,
                context: [Float], candidateIDs: [UInt64], candidateFeatureCount: Int, candidateFeatures: [Float]) {
        self.model = model
        self.version = version
        self.routingKey = routingKey
        self.topK = topK
        self.subject = subject
        self.context = context
        self.candidateIDs = candidateIDs
        self.candidateFeatureCount = candidateFeatureCount
        self.candidateFeatures = candidateFeatures
    }
}

/// One extra column of a RESULT.
public struct ResultColumn: Equatable, Sendable {
    public enum Values: Equatable, Sendable {
        case float32([Float])
        case code([UInt8])
    }

    public var name: String
    public var labels: [String]
    public var values: Values

    public init(name: String, labels: [String] = [], values: Values) {
        self.name = name
        self.labels = labels
        self.values = values
    }

    /// The label of row `i` of a code column, or nil.
    public func label(at i: Int) -> String? {
        guard case .code(let codes) = values, i < codes.count, Int(codes[i]) < labels.count else { return nil }
        return labels[Int(codes[i])]
    }
}

/// RESULT: the answer to SCORE.
public struct ScoreResult: Equatable, Sendable {
    /// The version that served.
    public var version: UInt64
    /// Microseconds between the frame's arrival and the start of scoring.
    public var queueMicros: UInt32
    /// Microseconds spent scoring.
    public var computeMicros: UInt32
    /// Rows are best first: top-k, or the model's own order (otherwise: every candidate, in request order).
    public var sorted: Bool
    public var ids: [UInt64]
    public var scores: [Float]
    public var columns: [ResultColumn]

    public init(version: UInt64, queueMicros: UInt32, computeMicros: UInt32, sorted: Bool,
                ids: [UInt64], scores: [Float], columns: [ResultColumn]) {
        self.version = version
        self.queueMicros = queueMicros
        self.computeMicros = computeMicros
        self.sorted = sorted
        self.ids = ids
        self.scores = scores
        self.columns = columns
    }
}

/// ERROR body: a message for a person. The status travels in the header.
public struct ErrorBody: Equatable, Sendable {
    public var status: Status
    public var message: String

    public init(status: Status, message: String) {
        self.status = status
        self.message = message
    }

    /// The longest message sent, in bytes; longer ones are cut at a character boundary.
    public static let maxMessageBytes = 1024
}
