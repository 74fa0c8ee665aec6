import Crypto
import Foundation

/// SHA-256 as lower-case hex, in one call or fed in pieces.
public enum Digests {
    public static func sha256Hex<D: DataProtocol>(_ data: D) -> String {
        SigV4Signer.hex(SHA256.hash(data: data))
    }
}

/// A SHA-256 fed in pieces (a file streamed through it once).
public struct StreamingSHA256: Sendable {
    private var hasher = SHA256()
    public private(set) var byteCount = 0

    public init() {}

    public mutating func update(_ bytes: UnsafeRawBufferPointer) {
        hasher.update(bufferPointer: bytes)
        byteCount += bytes.count
    }

    public func hex() -> String { SigV4Signer.hex(hasher.finalize()) }
}
