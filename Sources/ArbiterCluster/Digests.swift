import Crypto
import Foundation

/// SHA-256 as lower-case hex, in one call or fed in pieces.
public enum Digests {
    public static func sha256Hex<D: DataProtocol>(_ data: D) -> String {
        SigV4Signer.hex(SHA256.hash(data: data))
    }

    /// SHA-256 of a whole file, read 4 MiB at a time, and its size.
    static func sha256Hex(file path: String) throws(ClusterError) -> (hex: String, bytes: Int) {
        let file = try PosixFile(reading: path)
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 4 << 20, alignment: 64)
        defer { buffer.deallocate() }
        var hash = StreamingSHA256()
        while true {
            let n = try file.read(into: buffer, at: hash.byteCount)
            if n == 0 { break }
            hash.update(UnsafeRawBufferPointer(rebasing: buffer[0..<n]))
        }
        return (hash.hex(), hash.byteCount)
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
