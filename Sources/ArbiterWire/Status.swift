/// Status codes carried in the header's status byte of ERROR frames (0 on every other frame).
///
/// `closesConnection` and `isRetryable` are normative: see `proto-spec/PROTOCOL.md`, "Status codes".
public enum Status: UInt8, CaseIterable, Sendable, CustomStringConvertible {
    case ok = 0
    case badMagic = 1
    case unsupportedVersion = 2
    case frameTooLarge = 3
    case unknownOpcode = 4
    case malformed = 5
    case helloRequired = 6
    case unknownModel = 7
    case unknownVersion = 8
    case schemaMismatch = 9
    case tooManyCandidates = 10
    case invalidFeature = 11
    case compressionNotNegotiated = 12
    case badCompression = 13
    case overloaded = 14
    case deadlineExceeded = 15
    case shuttingDown = 16
    case internalError = 17
    case protocolViolation = 18
    case timeout = 19
    case tooManyConnections = 20
    case unauthenticated = 21
    case forbidden = 22
    case invalidRequest = 23

    /// After sending an ERROR with this status the server closes the connection: the byte stream can no
    /// longer be trusted to be in step, or the server is going away.
    public var closesConnection: Bool {
        switch self {
        case .badMagic, .unsupportedVersion, .frameTooLarge, .shuttingDown, .timeout, .tooManyConnections, .unauthenticated: true
        default: false
        }
    }

    /// The same request may succeed if sent again unchanged (later, or on another connection).
    public var isRetryable: Bool {
        switch self {
        case .overloaded, .deadlineExceeded, .shuttingDown, .internalError, .timeout, .tooManyConnections: true
        default: false
        }
    }

    public var description: String {
        switch self {
        case .ok: "OK"
        case .badMagic: "BAD_MAGIC"
        case .unsupportedVersion: "UNSUPPORTED_VERSION"
        case .frameTooLarge: "FRAME_TOO_LARGE"
        case .unknownOpcode: "UNKNOWN_OPCODE"
        case .malformed: "MALFORMED"
        case .helloRequired: "HELLO_REQUIRED"
        case .unknownModel: "UNKNOWN_MODEL"
        case .unknownVersion: "UNKNOWN_VERSION"
        case .schemaMismatch: "SCHEMA_MISMATCH"
        case .tooManyCandidates: "TOO_MANY_CANDIDATES"
        case .invalidFeature: "INVALID_FEATURE"
        case .compressionNotNegotiated: "COMPRESSION_NOT_NEGOTIATED"
        case .badCompression: "BAD_COMPRESSION"
        case .overloaded: "OVERLOADED"
        case .deadlineExceeded: "DEADLINE_EXCEEDED"
        case .shuttingDown: "SHUTTING_DOWN"
        case .internalError: "INTERNAL"
        case .protocolViolation: "PROTOCOL_VIOLATION"
        case .timeout: "TIMEOUT"
        case .tooManyConnections: "TOO_MANY_CONNECTIONS"
        case .unauthenticated: "UNAUTHENTICATED"
        case .forbidden: "FORBIDDEN"
        case .invalidRequest: "INVALID_REQUEST"
        }
    }

    /// Parses the spec's upper-case name.
    public init?(name: String) {
        guard let s = Status.allCases.first(where: { $0.description == name }) else { return nil }
        self = s
    }
}
