import FuzzDriver
import ArbiterWire
import NIOCore

/// A compressed body as a client may send it: decompressed under the frame limit, or refused with
/// `BAD_COMPRESSION` / `FRAME_TOO_LARGE`.
nonisolated(unsafe) let codec = ZstdCodec()

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzZstd(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    let body = ByteBuffer(bytes: UnsafeBufferPointer(start: data, count: size))
    if let out = try? codec.decompress(body, maxBytes: 1 << 20, allocator: ByteBufferAllocator()) {
        precondition(out.readableBytes <= 1 << 20, "decompressed past the limit")
    }
    return 0
}

@_cdecl("fuzz_zstd_main")
public func entryPoint(_ argc: Int32, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> Int32 {
    runFuzzer(argc, argv, fuzzZstd)
}
