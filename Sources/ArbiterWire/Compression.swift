import CZstd
import NIOCore

/// zstd for frame bodies. One instance per connection: it keeps its contexts between frames so that
/// compressing or decompressing allocates only the output.
public final class ZstdCodec {
    private let cctx: OpaquePointer
    private let dctx: OpaquePointer
    /// The compression level used for outgoing bodies (1 is fast; the wire is loopback or a LAN).
    public let level: Int32

    public init(level: Int32 = 1) {
        cctx = ZSTD_createCCtx()
        dctx = ZSTD_createDCtx()
        self.level = level
        // A content checksum in every frame we send, so corruption on the way is always detected.
        ZSTD_CCtx_setParameter(cctx, ZSTD_c_checksumFlag, 1)
        ZSTD_CCtx_setParameter(cctx, ZSTD_c_compressionLevel, level)
    }

    deinit {
        ZSTD_freeCCtx(cctx)
        ZSTD_freeDCtx(dctx)
    }

    /// Decompresses one zstd frame. The frame must declare its content size, and that size must be within
    /// `maxBytes`: the output is allocated only after that check.
    public func decompress(_ body: ByteBuffer, maxBytes: UInt32, allocator: ByteBufferAllocator) throws(WireError) -> ByteBuffer {
        let size: UInt64 = body.withUnsafeReadableBytes { src in
            ZSTD_getFrameContentSize(src.baseAddress, src.count)
        }
        // ZSTD_CONTENTSIZE_UNKNOWN = -1, ZSTD_CONTENTSIZE_ERROR = -2 (as unsigned).
        if size == UInt64.max - 1 {
            throw WireError(.badCompression, "body is not a zstd frame")
        }
        if size == UInt64.max {
            throw WireError(.badCompression, "zstd frame does not declare its decompressed size")
        }
        guard size <= UInt64(maxBytes) else {
            throw WireError(.frameTooLarge, "decompressed body of \(size) bytes is over the limit of \(maxBytes) bytes")
        }
        var out = allocator.buffer(capacity: Int(size))
        let dctx = self.dctx
        var failure: String?
        let expected = Int(size)
        body.withUnsafeReadableBytes { src in
            let written = out.writeWithUnsafeMutableBytes(minimumWritableBytes: expected) { dst in
                let r = ZSTD_decompressDCtx(dctx, dst.baseAddress, expected, src.baseAddress, src.count)
                if ZSTD_isError(r) != 0 {
                    failure = String(cString: ZSTD_getErrorName(r))
                    return 0
                }
                if r != expected {
                    failure = "decompressed to \(r) bytes, the frame declared \(expected)"
                    return 0
                }
                return r
            }
            _ = written
        }
        if let failure { throw WireError(.badCompression, "zstd body could not be decompressed: \(failure)") }
        return out
    }

    /// Compresses `body` into a new buffer.
    public func compress(_ body: ByteBuffer, allocator: ByteBufferAllocator) -> ByteBuffer {
        let bound = ZSTD_compressBound(body.readableBytes)
        var out = allocator.buffer(capacity: bound)
        let cctx = self.cctx
        body.withUnsafeReadableBytes { src in
            _ = out.writeWithUnsafeMutableBytes(minimumWritableBytes: bound) { dst in
                let r = ZSTD_compress2(cctx, dst.baseAddress, bound, src.baseAddress, src.count)
                precondition(ZSTD_isError(r) == 0, "zstd compression into a bound-sized buffer cannot fail")
                return r
            }
        }
        return out
    }
}
