import Crypto
import Foundation

/// SHA-256 as lower-case hex, in one call or fed in pieces.
public enum Digests {
    public static func sha256Hex<D: DataProtocol>(_ data: D) -> String {
        SigV4Signer.hex(SHA256.hash(data: data))
    }

    public static func sha256Hex(_ bytes: UnsafeRawBufferPointer) -> String {
        SigV4Signer.hex(SHA256.hash(data: bytes))
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

    public mutating func update<D: DataProtocol>(_ data: D) {
        hasher.update(data: data)
        byteCount += data.count
    }

    public func hex() -> String { SigV4Signer.hex(hasher.finalize()) }
}
