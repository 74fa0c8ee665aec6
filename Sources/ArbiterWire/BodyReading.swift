import NIOCore

/// Reading helpers that turn a short or inconsistent body into `Status.malformed` with a message naming
/// the field, instead of a crash or a silent default.
extension ByteBuffer {
    @inlinable
    mutating func readLE<T: FixedWidthInteger>(_: T.Type, _ field: StaticString) throws(WireError) -> T {
        guard let v = readInteger(endianness: .little, as: T.self) else {
            throw WireError(.malformed, "body ends before field '\(field)'")
        }
        return v
    }

    /// A `u16` length followed by that many bytes of UTF-8.
    @inlinable
    mutating func readShortString(_ field: StaticString, max: Int = 1024) throws(WireError) -> String {
        let n = Int(try readLE(UInt16.self, field))
        guard n <= max else { throw WireError(.malformed, "field '\(field)' is \(n) bytes, over its limit of \(max)") }
        guard readableBytes >= n else { throw WireError(.malformed, "body ends inside string '\(field)'") }
        guard let s = readString(length: n) else {
            throw WireError(.malformed, "string '\(field)' is not UTF-8")
        }
        return s
    }

    @inlinable
    mutating func writeShortString(_ s: String) {
        let lenIndex = writerIndex
        writeInteger(UInt16(0), endianness: .little)
        let n = writeString(s)
        setInteger(UInt16(truncatingIfNeeded: n), at: lenIndex, endianness: .little)
    }

    /// Skips zero padding up to a multiple of `alignment` measured from `origin` (the body's start).
    @inlinable
    mutating func skipPadding(from origin: Int, to alignment: Int) throws(WireError) {
        let used = readerIndex - origin
        let pad = (alignment - used % alignment) % alignment
        guard readableBytes >= pad else { throw WireError(.malformed, "body ends inside padding") }
        moveReaderIndex(forwardBy: pad)
    }

    @inlinable
    mutating func writePadding(from origin: Int, to alignment: Int) {
        let used = writerIndex - origin
        let pad = (alignment - used % alignment) % alignment
        if pad > 0 { writeRepeatingByte(0, count: pad) }
    }

    /// Reads `count` little-endian float32s.
    @inlinable
    mutating func readFloats(count: Int, _ field: StaticString) throws(WireError) -> [Float] {
        let bytes = count.multipliedReportingOverflow(by: 4)
        guard !bytes.overflow, readableBytes >= bytes.partialValue else {
            throw WireError(.malformed, "body ends inside array '\(field)' (\(count) float32 declared)")
        }
        let out = [Float](unsafeUninitializedCapacity: count) { dst, initialized in
            withUnsafeReadableBytes { src in
                UnsafeMutableRawBufferPointer(dst).copyMemory(from: UnsafeRawBufferPointer(rebasing: src[0..<count * 4]))
            }
            initialized = count
        }
        moveReaderIndex(forwardBy: count * 4)
        return out
    }

    @inlinable
    mutating func readUInt64s(count: Int, _ field: StaticString) throws(WireError) -> [UInt64] {
        let bytes = count.multipliedReportingOverflow(by: 8)
        guard !bytes.overflow, readableBytes >= bytes.partialValue else {
            throw WireError(.malformed, "body ends inside array '\(field)' (\(count) u64 declared)")
        }
        let out = [UInt64](unsafeUninitializedCapacity: count) { dst, initialized in
            withUnsafeReadableBytes { src in
                UnsafeMutableRawBufferPointer(dst).copyMemory(from: UnsafeRawBufferPointer(rebasing: src[0..<count * 8]))
            }
            initialized = count
        }
        moveReaderIndex(forwardBy: count * 8)
        return out.map { UInt64(littleEndian: $0) }
    }

    @inlinable
    mutating func writeFloats<C: Collection>(_ values: C) where C.Element == Float {
        for v in values { writeInteger(v.bitPattern, endianness: .little) }
    }

    @inlinable
    mutating func writeFloats(_ values: UnsafeBufferPointer<Float>) {
        #if _endian(little)
        writeBytes(UnsafeRawBufferPointer(values))
        #else
        for v in values { writeInteger(v.bitPattern, endianness: .little) }
        #endif
    }

    @inlinable
    mutating func writeUInt64s(_ values: UnsafeBufferPointer<UInt64>) {
        #if _endian(little)
        writeBytes(UnsafeRawBufferPointer(values))
        #else
        for v in values { writeInteger(v, endianness: .little) }
        #endif
    }
}
