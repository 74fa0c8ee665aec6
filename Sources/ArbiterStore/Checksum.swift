import CXXHash

/// XXH3-64 fed in pieces (a stream read once).
public final class StreamingXXH3 {
    private let state: OpaquePointer

    public init() {
        state = XXH3_createState()!
        XXH3_64bits_reset(state)
    }

    deinit { XXH3_freeState(state) }

    public func update(_ bytes: UnsafeRawBufferPointer) {
        XXH3_64bits_update(state, bytes.baseAddress, bytes.count)
    }

    public var digest: UInt64 { XXH3_64bits_digest(state) }
}

/// XXH3-64 (Debian's libxxhash) of a byte range, as 16 lower-case hex digits.
public enum Checksum {
    public static func xxh3(_ bytes: UnsafeRawBufferPointer) -> UInt64 {
        XXH3_64bits(bytes.baseAddress, bytes.count)
    }

    public static func hex(_ bytes: UnsafeRawBufferPointer) -> String {
        hex(xxh3(bytes))
    }

    public static func hex(_ v: UInt64) -> String {
        let s = String(v, radix: 16)
        return String(repeating: "0", count: 16 - s.count) + s
    }

    /// Bytes hashed per step of ``scan(_:float32:)``: small enough that a block is still in the core's
    /// cache when its floats are checked, so the tensor is read from memory once.
    static let scanBlock = 256 << 10

    /// The XXH3-64 of `bytes` and, when they are float32 values (`float32`), the index of the first one that
    /// is not finite (NaN or ±infinity) — both in one pass over the bytes, a block at a time. The checksum
    /// equals ``xxh3(_:)``'s.
    public static func scan(_ bytes: UnsafeRawBufferPointer, float32: Bool) -> (checksum: UInt64, firstNonFinite: Int?) {
        guard bytes.count > scanBlock, let base = bytes.baseAddress else {
            return (xxh3(bytes), float32 ? firstNonFinite(bytes) : nil)
        }
        guard let state = XXH3_createState() else {
            return (xxh3(bytes), float32 ? firstNonFinite(bytes) : nil)
        }
        defer { XXH3_freeState(state) }
        XXH3_64bits_reset(state)
        var bad: Int?
        var offset = 0
        while offset < bytes.count {
            let n = min(scanBlock, bytes.count - offset)
            XXH3_64bits_update(state, base + offset, n)
            if float32, bad == nil, let i = firstNonFinite(UnsafeRawBufferPointer(start: base + offset, count: n)) {
                bad = offset / 4 + i
            }
            offset += n
        }
        return (XXH3_64bits_digest(state), bad)
    }

    /// The index of the first float32 in `bytes` (little-endian, `count / 4` of them, any alignment) that is
    /// NaN or infinite. Blocks of 16 are checked without a branch per value: a value's exponent bits plus one
    /// in the lowest exponent bit carry into the sign bit exactly when the exponent is all ones.
    public static func firstNonFinite(_ bytes: UnsafeRawBufferPointer) -> Int? {
        let count = bytes.count / 4
        guard count > 0, let p = bytes.baseAddress else { return nil }
        let exponent = SIMD16<UInt32>(repeating: 0x7F80_0000), carry = SIMD16<UInt32>(repeating: 0x0080_0000)
        var i = 0
        while i + 256 <= count {
            var acc = SIMD16<UInt32>(repeating: 0)
            for j in stride(from: i, to: i + 256, by: 16) {
                acc |= (p.loadUnaligned(fromByteOffset: 4 * j, as: SIMD16<UInt32>.self) & exponent) &+ carry
            }
            if (acc & 0x8000_0000).max() != 0 { break }
            i += 256
        }
        while i < count {
            if p.loadUnaligned(fromByteOffset: 4 * i, as: UInt32.self) & 0x7F80_0000 == 0x7F80_0000 { return i }
            i += 1
        }
        return nil
    }
}
