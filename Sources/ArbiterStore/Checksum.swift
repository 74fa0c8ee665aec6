import CXXHash

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
}
