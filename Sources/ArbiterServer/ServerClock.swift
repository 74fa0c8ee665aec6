import NIOCore

/// Where the server reads the time for a request's queue, compute and server-held times. The system clock
/// in production; tests script it so that the times in an encoded frame are exact.
struct ServerClock: Sendable {
    private let scripted: (@Sendable () -> UInt64)?

    /// The monotonic system clock (`NIODeadline.now()`).
    static let system = ServerClock(scripted: nil)

    /// A clock whose readings come from `read` (nanoseconds on any monotonic scale).
    static func scripted(_ read: @escaping @Sendable () -> UInt64) -> ServerClock {
        ServerClock(scripted: read)
    }

    /// Nanoseconds on a monotonic scale.
    @inline(__always)
    func nanoseconds() -> UInt64 {
        if let scripted { return scripted() }
        return NIODeadline.now().uptimeNanoseconds
    }
}
