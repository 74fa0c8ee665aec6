/// The limits a server announces in HELLO_OK and enforces.
public struct Limits: Equatable, Sendable {
    /// Largest body a request frame may carry, in bytes, before and after decompression. Default 4 MiB.
    public var maxFrameBytes: UInt32
    /// Largest candidate count in one SCORE. Default 10,000.
    public var maxCandidates: UInt32
    /// Most requests a client may have outstanding on one connection; beyond it the server stops reading
    /// that connection until responses drain. Default 1,024.
    public var maxInFlight: UInt32

    public init(maxFrameBytes: UInt32 = 4 << 20, maxCandidates: UInt32 = 10_000, maxInFlight: UInt32 = 1_024) {
        self.maxFrameBytes = maxFrameBytes
        self.maxCandidates = maxCandidates
        self.maxInFlight = maxInFlight
    }

    public static let `default` = Limits()
}
