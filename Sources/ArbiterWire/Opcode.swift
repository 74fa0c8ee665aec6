/// Frame opcodes. A response's opcode is its request's with bit 7 set; ERROR answers any request.
public enum Opcode: UInt8, CaseIterable, Sendable, CustomStringConvertible {
    case hello = 0x01
    case ping = 0x02
    case listModels = 0x03
    case modelInfo = 0x04
    case score = 0x05
    case modelStatus = 0x06
    case reload = 0x07

    case helloOK = 0x81
    case pong = 0x82
    case models = 0x83
    case schema = 0x84
    case result = 0x85
    case status = 0x86
    case reloaded = 0x87

    case error = 0xFF

    /// Whether a client may send this opcode.
    public var isRequest: Bool { rawValue & 0x80 == 0 }

    public var description: String {
        switch self {
        case .hello: "HELLO"
        case .ping: "PING"
        case .listModels: "LIST_MODELS"
        case .modelInfo: "MODEL_INFO"
        case .score: "SCORE"
        case .modelStatus: "MODEL_STATUS"
        case .reload: "RELOAD"
        case .helloOK: "HELLO_OK"
        case .pong: "PONG"
        case .models: "MODELS"
        case .schema: "SCHEMA"
        case .result: "RESULT"
        case .status: "STATUS"
        case .reloaded: "RELOADED"
        case .error: "ERROR"
        }
    }

    /// Parses the spec's upper-case name (as used in the golden vectors).
    public init?(name: String) {
        guard let op = Opcode.allCases.first(where: { $0.description == name }) else { return nil }
        self = op
    }
}
