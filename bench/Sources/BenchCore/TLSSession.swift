import NIOCore
import NIOEmbedded
import NIOSSL

/// TLS files for the harness's connections: the CA the server's certificate must chain to, and for mutual
/// TLS the client's certificate and key (PEM).
public struct BenchTLS: Sendable {
    public var caPath: String
    public var certificatePath: String?
    public var privateKeyPath: String?

    public init(caPath: String, certificatePath: String? = nil, privateKeyPath: String? = nil) {
        self.caPath = caPath
        self.certificatePath = certificatePath
        self.privateKeyPath = privateKeyPath
    }

    public func makeContext() throws -> NIOSSLContext {
        var c = TLSConfiguration.makeClientConfiguration()
        c.minimumTLSVersion = .tlsv12
        c.trustRoots = .certificates(try NIOSSLCertificate.fromPEMFile(caPath))
        if let certificatePath, let privateKeyPath {
            c.certificateChain = try NIOSSLCertificate.fromPEMFile(certificatePath).map { .certificate($0) }
            c.privateKey = .privateKey(try NIOSSLPrivateKey(file: privateKeyPath, format: .pem))
        }
        return try NIOSSLContext(configuration: c)
    }
}

/// A TLS client session over a socket the harness drives itself: swift-nio-ssl's handler (BoringSSL) in an
/// `EmbeddedChannel`, fed the bytes the socket reads and giving the bytes to write. It runs on the
/// generator's one thread (an embedded channel must stay on the thread that made it), so TLS costs the
/// client what it costs any single-threaded TLS client: encryption and decryption in line with its I/O.
final class TLSSession {
    private let channel: EmbeddedChannel
    /// Ciphertext waiting for the socket, and what of it was written.
    private(set) var pending: [UInt8] = []
    private var pendingOffset = 0
    private var failure: (any Error)?

    var hasPending: Bool { pendingOffset < pending.count }

    init(context: NIOSSLContext, peer: SocketAddress) throws {
        channel = EmbeddedChannel()
        channel.remoteAddress = peer
        // Validates the server's certificate against the address connected to (its IP SAN).
        try channel.pipeline.syncOperations.addHandler(NIOSSLClientHandler(context: context, serverHostname: nil))
        try channel.pipeline.syncOperations.addHandler(ErrorCatcher { [unowned self] in self.failure = $0 })
        try channel.connect(to: peer).wait()  // starts the handshake: the ClientHello is now outbound
        try collect()
    }

    /// Encrypts `bytes` (buffered by the handler until the handshake is done) into `pending`.
    func encrypt(_ bytes: ArraySlice<UInt8>) throws {
        var b = channel.allocator.buffer(capacity: bytes.count)
        b.writeBytes(bytes)
        // Not waited for: until the handshake is done the handler holds the write and its promise.
        channel.writeAndFlush(b, promise: nil)
        try collect()
    }

    /// Decrypts what the socket read into `inbox`; handshake replies go to `pending`.
    func decrypt(_ bytes: ArraySlice<UInt8>, into inbox: inout ByteBuffer) throws {
        var b = channel.allocator.buffer(capacity: bytes.count)
        b.writeBytes(bytes)
        try channel.writeInbound(b)
        while var plain = try channel.readInbound(as: ByteBuffer.self) { inbox.writeBuffer(&plain) }
        try collect()
    }

    /// Marks `n` bytes of `pending` written.
    func wrote(_ n: Int) {
        pendingOffset += n
        if pendingOffset == pending.count {
            pending.removeAll(keepingCapacity: true)
            pendingOffset = 0
        }
    }

    var unwritten: ArraySlice<UInt8> { pending[pendingOffset...] }

    private func collect() throws {
        if let failure { throw BenchError("TLS: \(failure)") }
        while let out = try channel.readOutbound(as: ByteBuffer.self) { pending.append(contentsOf: out.readableBytesView) }
    }
}

private final class ErrorCatcher: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    let onError: (any Error) -> Void
    init(_ onError: @escaping (any Error) -> Void) { self.onError = onError }
    func errorCaught(context: ChannelHandlerContext, error: any Error) { onError(error) }
}
