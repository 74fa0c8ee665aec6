import CZstd
import Foundation

/// A file opened for reading or writing with POSIX calls, closed when dropped; errors name the path.
final class PosixFile {
    let fd: Int32
    let path: String

    init(reading path: String) throws(ClusterError) {
        fd = open(path, O_RDONLY | O_CLOEXEC)
        self.path = path
        guard fd >= 0 else { throw ClusterError.io("cannot open \(path): \(String(cString: strerror(errno)))") }
    }

    init(creating path: String) throws(ClusterError) {
        fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        self.path = path
        guard fd >= 0 else { throw ClusterError.io("cannot create \(path): \(String(cString: strerror(errno)))") }
    }

    deinit { close(fd) }

    var size: Int {
        var st = stat()
        return fstat(fd, &st) == 0 ? Int(st.st_size) : 0
    }

    /// Reads up to `count` bytes at `offset` into `buffer`; returns how many (0 at the end).
    func read(into buffer: UnsafeMutableRawBufferPointer, at offset: Int) throws(ClusterError) -> Int {
        var done = 0
        while done < buffer.count {
            let n = pread(fd, buffer.baseAddress! + done, buffer.count - done, off_t(offset + done))
            if n < 0 {
                if errno == EINTR { continue }
                throw ClusterError.io("reading \(path) failed: \(String(cString: strerror(errno)))")
            }
            if n == 0 { break }
            done += n
        }
        return done
    }

    func write(_ bytes: UnsafeRawBufferPointer) throws(ClusterError) {
        var done = 0
        while done < bytes.count {
            let n = Foundation.write(fd, bytes.baseAddress! + done, bytes.count - done)
            if n < 0 {
                if errno == EINTR { continue }
                throw ClusterError.io("writing \(path) failed: \(String(cString: strerror(errno)))")
            }
            done += n
        }
    }

    func sync() throws(ClusterError) {
        guard fsync(fd) == 0 else { throw ClusterError.io("fsync of \(path) failed: \(String(cString: strerror(errno)))") }
    }
}

/// What one pass of compression read and wrote, with each side's SHA-256.
public struct CompressionSummary: Sendable, Equatable {
    public var rawBytes: Int
    public var rawSHA256: String
    public var compressedBytes: Int
    public var compressedSHA256: String
}

public enum ZstdFiles {
    /// Compresses the file at `input` into a new file at `output` (one zstd frame with its content size and
    /// checksum), hashing both sides in the same pass. `workers` > 0 compresses on that many threads of
    /// libzstd's own.
    public static func compress(_ input: String, to output: String, level: Int32 = 3, workers: Int32 = 2, sync: Bool = true) throws(ClusterError) -> CompressionSummary {
        let source = try PosixFile(reading: input)
        let sink = try PosixFile(creating: output)
        guard let cctx = ZSTD_createCCtx() else { throw ClusterError.compression("ZSTD_createCCtx failed") }
        defer { ZSTD_freeCCtx(cctx) }
        ZSTD_CCtx_setParameter(cctx, ZSTD_c_compressionLevel, level)
        ZSTD_CCtx_setParameter(cctx, ZSTD_c_checksumFlag, 1)
        // Multithreading is available only when libzstd was built with it (Debian's is); otherwise one thread.
        if workers > 0 { _ = ZSTD_CCtx_setParameter(cctx, ZSTD_c_nbWorkers, workers) }
        let total = source.size
        ZSTD_CCtx_setPledgedSrcSize(cctx, UInt64(total))
        let inSize = 4 << 20
        let outSize = ZSTD_CStreamOutSize() * 8
        let inBuffer = UnsafeMutableRawBufferPointer.allocate(byteCount: inSize, alignment: 64)
        let outBuffer = UnsafeMutableRawBufferPointer.allocate(byteCount: outSize, alignment: 64)
        defer { inBuffer.deallocate(); outBuffer.deallocate() }
        var rawHash = StreamingSHA256()
        var outHash = StreamingSHA256()
        var offset = 0
        var finished = false
        while !finished {
            let n = try source.read(into: inBuffer, at: offset)
            offset += n
            rawHash.update(UnsafeRawBufferPointer(rebasing: inBuffer[0..<n]))
            let last = n < inSize || offset >= total
            var src = ZSTD_inBuffer(src: inBuffer.baseAddress, size: n, pos: 0)
            var flushing = true
            while flushing {
                var output = ZSTD_outBuffer(dst: outBuffer.baseAddress, size: outSize, pos: 0)
                let remaining = ZSTD_compressStream2(cctx, &output, &src, last ? ZSTD_e_end : ZSTD_e_continue)
                if ZSTD_isError(remaining) != 0 {
                    throw ClusterError.compression("compressing \(input) failed: \(String(cString: ZSTD_getErrorName(remaining)))")
                }
                let produced = UnsafeRawBufferPointer(rebasing: outBuffer[0..<output.pos])
                try sink.write(produced)
                outHash.update(produced)
                flushing = last ? remaining != 0 : src.pos < src.size
            }
            finished = last
        }
        if sync { try sink.sync() }
        guard offset == total else { throw ClusterError.io("\(input) changed size while it was compressed") }
        return CompressionSummary(rawBytes: rawHash.byteCount, rawSHA256: rawHash.hex(),
                                  compressedBytes: outHash.byteCount, compressedSHA256: outHash.hex())
    }
}

/// Decompresses a zstd stream fed in pieces into a file, hashing both sides, and refusing to write more than
/// the expected size (a damaged or hostile object must not fill the disk).
// Unchecked: used by one task at a time (the fetch hands it from the download to the background thread in turn).
public final class ZstdFileDecoder: @unchecked Sendable {
    let dctx: OpaquePointer
    let sink: PosixFile
    let limit: Int
    let outBuffer: UnsafeMutableRawBufferPointer
    public private(set) var compressed = StreamingSHA256()
    /// The output's SHA-256, when the decoder hashes it (`hashesOutput`).
    public private(set) var raw = StreamingSHA256()
    /// Bytes written out.
    public private(set) var outputBytes = 0
    private let hashesOutput: Bool
    private var frameEnded = false

    public init(writingTo path: String, expectedBytes: Int, hashesOutput: Bool = true) throws(ClusterError) {
        self.hashesOutput = hashesOutput
        guard let d = ZSTD_createDCtx() else { throw ClusterError.compression("ZSTD_createDCtx failed") }
        dctx = d
        sink = try PosixFile(creating: path)
        limit = expectedBytes
        outBuffer = .allocate(byteCount: ZSTD_DStreamOutSize() * 8, alignment: 64)
    }

    deinit {
        ZSTD_freeDCtx(dctx)
        outBuffer.deallocate()
    }

    public func feed(_ bytes: UnsafeRawBufferPointer) throws(ClusterError) {
        compressed.update(bytes)
        var input = ZSTD_inBuffer(src: bytes.baseAddress, size: bytes.count, pos: 0)
        while input.pos < input.size || !frameEnded {
            if frameEnded {
                throw ClusterError.corruptArtifact("\(sink.path): the compressed object continues after its zstd frame ended")
            }
            var output = ZSTD_outBuffer(dst: outBuffer.baseAddress, size: outBuffer.count, pos: 0)
            let r = ZSTD_decompressStream(dctx, &output, &input)
            if ZSTD_isError(r) != 0 {
                throw ClusterError.corruptArtifact("decompressing into \(sink.path) failed: \(String(cString: ZSTD_getErrorName(r)))")
            }
            let produced = UnsafeRawBufferPointer(rebasing: outBuffer[0..<output.pos])
            guard outputBytes + produced.count <= limit else {
                throw ClusterError.corruptArtifact("\(sink.path): the object decompresses to more than the manifest's \(limit) bytes")
            }
            try sink.write(produced)
            outputBytes += produced.count
            if hashesOutput { raw.update(produced) }
            if r == 0 { frameEnded = true }
            // Output filled: loop for more. Input consumed and nothing more to flush: wait for the next piece.
            if output.pos < output.size && input.pos == input.size { break }
        }
    }

    /// Checks the frame ended (and zstd's checksum of the content with it) and, when `sync`, flushes the file
    /// to disk (a scratch file that is read at once and removed needs no flush).
    public func finish(sync: Bool = true) throws(ClusterError) {
        guard frameEnded else { throw ClusterError.corruptArtifact("\(sink.path): the compressed object ends inside its zstd frame") }
        if sync { try sink.sync() }
    }
}
