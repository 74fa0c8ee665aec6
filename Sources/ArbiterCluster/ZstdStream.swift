import ArbiterStore
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
        try Self.readFully(fd, into: buffer, at: offset, name: path)
    }

    /// Reads from `fd` until `buffer` is full or the input ends — `pread` at `offset`, or `read` from where the
    /// descriptor stands (a pipe) when it is nil — retrying interrupted calls; returns how many bytes. Errors
    /// name `name`.
    static func readFully(_ fd: Int32, into buffer: UnsafeMutableRawBufferPointer, at offset: Int?, name: String) throws(ClusterError) -> Int {
        var done = 0
        while done < buffer.count {
            let n = if let offset {
                pread(fd, buffer.baseAddress! + done, buffer.count - done, off_t(offset + done))
            } else {
                Foundation.read(fd, buffer.baseAddress! + done, buffer.count - done)
            }
            if n < 0 {
                if errno == EINTR { continue }
                throw ClusterError.io("reading \(name) failed: \(String(cString: strerror(errno)))")
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

/// Compresses a file or stream into one zstd frame (its content size and checksum in it), handed out as
/// consecutive parts of `partSize` bytes, the last shorter: the parts of a multipart upload, each sent while the
/// next is compressed, so that no compressed copy is ever written. The compressed bytes are hashed in order as
/// they are handed out, the raw ones checksummed (XXH3) as they are read. Used by one thread at a time.
public final class ZstdPartCompressor: @unchecked Sendable {
    let source: any ByteSource
    let cctx: OpaquePointer
    public let partSize: Int
    /// The input's size (pledged to zstd: input of another size is an error).
    public let rawBytes: Int
    /// XXH3-64 of the input read so far.
    public let rawChecksum = StreamingXXH3()
    let inBuffer: UnsafeMutableRawBufferPointer
    var inFilled = 0
    var inPos = 0
    var offset = 0
    var inputEnded = false
    /// The frame is complete: every part has been handed out.
    public private(set) var isFinished = false
    /// The compressed bytes handed out so far: their SHA-256 and count.
    public private(set) var compressed = StreamingSHA256()

    /// `rawBytes` from `source`. `workers` > 0 compresses on that many threads of libzstd's own (when it was
    /// built with them; Debian's is).
    init(source: any ByteSource, rawBytes: Int, partSize: Int, level: Int32 = 3, workers: Int32 = 2) throws(ClusterError) {
        guard partSize > 0 else { throw ClusterError.configuration("a compressed part must be at least one byte") }
        self.source = source
        guard let c = ZSTD_createCCtx() else { throw ClusterError.compression("ZSTD_createCCtx failed") }
        cctx = c
        self.partSize = partSize
        self.rawBytes = rawBytes
        ZSTD_CCtx_setParameter(cctx, ZSTD_c_compressionLevel, level)
        ZSTD_CCtx_setParameter(cctx, ZSTD_c_checksumFlag, 1)
        if workers > 0 { _ = ZSTD_CCtx_setParameter(cctx, ZSTD_c_nbWorkers, workers) }
        ZSTD_CCtx_setPledgedSrcSize(cctx, UInt64(rawBytes))
        inBuffer = .allocate(byteCount: 4 << 20, alignment: 64)
    }

    deinit {
        ZSTD_freeCCtx(cctx)
        inBuffer.deallocate()
    }

    /// The next part: `partSize` bytes, or fewer for the last; nil once the frame is complete.
    public func nextPart() throws(ClusterError) -> [UInt8]? {
        guard !isFinished else { return nil }
        var failure: ClusterError?
        let part = [UInt8](unsafeUninitializedCapacity: partSize) { buffer, count in
            var output = ZSTD_outBuffer(dst: buffer.baseAddress, size: buffer.count, pos: 0)
            while true {
                if inPos == inFilled && !inputEnded {
                    let n: Int
                    do throws(ClusterError) { n = try source.read(into: inBuffer) } catch { failure = error; break }
                    rawChecksum.update(UnsafeRawBufferPointer(rebasing: inBuffer[0..<n]))
                    offset += n
                    inFilled = n
                    inPos = 0
                    inputEnded = n < inBuffer.count || offset >= rawBytes
                }
                var input = ZSTD_inBuffer(src: inBuffer.baseAddress, size: inFilled, pos: inPos)
                // Once ending, every later call ends too (zstd's rule), whichever part it fills.
                let r = ZSTD_compressStream2(cctx, &output, &input, inputEnded ? ZSTD_e_end : ZSTD_e_continue)
                inPos = input.pos
                if ZSTD_isError(r) != 0 {
                    failure = .compression("compressing \(source.name) failed: \(String(cString: ZSTD_getErrorName(r)))")
                    break
                }
                if inputEnded && inPos == inFilled && r == 0 {
                    isFinished = true
                    break
                }
                if output.pos == output.size { break }
            }
            count = output.pos
        }
        if let failure { throw failure }
        if isFinished, offset != rawBytes { throw ClusterError.io("\(source.name) was not \(rawBytes) bytes when compressed") }
        part.withUnsafeBytes { compressed.update($0) }
        return part.isEmpty && isFinished ? nil : part
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
