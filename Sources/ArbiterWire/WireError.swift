/// A protocol error found while decoding: it carries the status to answer with and a message a person can
/// act on. The request id is the offending frame's, or 0 when the header itself could not be trusted.
public struct WireError: Error, Equatable, Sendable, CustomStringConvertible {
    public var status: Status
    public var message: String
    public var requestID: UInt64

    public init(_ status: Status, _ message: String, requestID: UInt64 = 0) {
        self.status = status
        self.message = message
        self.requestID = requestID
    }

    public var description: String { "\(status): \(message)" }
}
