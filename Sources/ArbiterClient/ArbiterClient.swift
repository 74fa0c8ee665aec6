import ArbiterWire
import Atomics
import NIOCore
import NIOPosix
import NIOSSL

/// Settings of a client connection.
public struct ClientConfiguration: Sendable {
    /// Offer zstd in HELLO; when the server accepts, request bodies of `compressionThreshold` bytes or more
    /// are compressed. Default off.
    public var compression = false
    public var compressionThreshold = 4096
    /// Largest response body accepted. Default 64 MiB.
    public var maxResponseBytes: UInt32 = 64 << 20
    /// Time allowed for connecting and the HELLO exchange. Default 5 s.
    public var connectTimeout: TimeAmount = .seconds(5)
    /// Default per-request timeout when none is given. Default 10 s.
    public var requestTimeout: TimeAmount = .seconds(10)
    public var clientName = "arbiter-swift"
    /// Speak TLS (nil: plain TCP).
    public var tls: ClientTLS?
    /// The access token sent in HELLO, for a server that requires one.
    public var token: String?

    public init() {}
}

/// TLS settings of a client: whom to trust, and for mutual TLS the client's own certificate.
public struct ClientTLS: Sendable {
    /// The CA (PEM) the server's certificate must chain to; nil: the system's trust store.
    public var caPath: String?
    /// The client's certificate chain and key (PEM), for a server that asks for one (mutual TLS).
    public var certificatePath: String?
    public var privateKeyPath: String?
    /// The name the server's certificate must carry (and SNI); nil: the host connected to — a name, or an
    /// address the certificate must list.
    public var serverName: String?

    public init(caPath: String? = nil, certificatePath: String? = nil, privateKeyPath: String? = nil, serverName: String? = nil) {
        self.caPath = caPath
        self.certificatePath = certificatePath
        self.privateKeyPath = privateKeyPath
        self.serverName = serverName
    }

    func makeContext() throws -> NIOSSLContext {
        var c = TLSConfiguration.makeClientConfiguration()
        c.minimumTLSVersion = .tlsv12
        do {
            if let caPath { c.trustRoots = .certificates(try NIOSSLCertificate.fromPEMFile(caPath)) }
            if let certificatePath {
                c.certificateChain = try NIOSSLCertificate.fromPEMFile(certificatePath).map { .certificate($0) }
                guard let privateKeyPath else { throw ClientError.tls("a client certificate needs its private key") }
                c.privateKey = .privateKey(try NIOSSLPrivateKey(file: privateKeyPath, format: .pem))
            }
            return try NIOSSLContext(configuration: c)
        } catch let e as ClientError {
            throw e
        } catch {
            throw ClientError.tls("cannot load the TLS files: \(error)")
        }
    }
}

/// Errors a client call can end with.
public enum ClientError: Error, Equatable, CustomStringConvertible {
    /// The server answered with an ERROR frame.
    case server(Status, String)
    /// No answer within the request's timeout.
    case timeout
    /// The connection closed before the answer came.
    case connectionClosed
    /// The server sent something this client cannot read.
    case protocolError(String)
    /// TLS failed: the files, the handshake, or the server refused this client's certificate.
    case tls(String)

    public var description: String {
        switch self {
        case .server(let s, let m): "server error \(s): \(m)"
        case .timeout: "the request timed out"
        case .connectionClosed: "the connection closed before the answer arrived"
        case .protocolError(let s): "protocol error: \(s)"
        case .tls(let s): "TLS: \(s)"
        }
    }

    static func isTLS(_ error: any Error) -> Bool {
        error is NIOSSLError || error is BoringSSLError || error is NIOSSLExtraError
    }

    /// A TLS failure as `.tls`, with what the peer or BoringSSL said; anything else that ended a write or a
    /// connection as `.connectionClosed`.
    static func tlsOrClosed(_ error: any Error) -> ClientError {
        guard isTLS(error) else { return .connectionClosed }
        var text = "\(error)"
        // BoringSSL's reason is the useful part: "...:SSL routines:OPENSSL_internal:TLSV1_ALERT_UNKNOWN_CA at ..."
        if let r = text.firstRange(of: "OPENSSL_internal:") {
            text = String(text[r.upperBound...].prefix { $0 == "_" || ($0.isASCII && ($0.isUppercase || $0.isNumber)) })
            switch text {
            case "TLSV1_ALERT_UNKNOWN_CA", "SSLV3_ALERT_BAD_CERTIFICATE", "TLSV1_CERTIFICATE_REQUIRED", "SSLV3_ALERT_CERTIFICATE_UNKNOWN":
                text += ": the server refused this client's certificate (mutual TLS: give one its CA signed)"
            case "CERTIFICATE_VERIFY_FAILED":
                text += ": this client does not trust the server's certificate (give the CA that signed it)"
            default: break
            }
        }
        return .tls(text)
    }
}

/// An async client for arbiterd. One connection carries many concurrent requests (pipelined, matched by
/// request id, so answers may arrive in any order). Safe to share between tasks.
public final class ArbiterClient: Sendable {
    let channel: any Channel
    let nextID = ManagedAtomic<UInt64>(1)
    let ownsGroup: (any EventLoopGroup)?
    public let configuration: ClientConfiguration
    /// What the server settled in HELLO_OK.
    public let session: HelloOK

    /// Connects and performs HELLO.
    public static func connect(host: String = "127.0.0.1", port: Int = 7878, configuration: ClientConfiguration = ClientConfiguration(),
                               group: (any EventLoopGroup)? = nil) async throws -> ArbiterClient {
        let g: any EventLoopGroup = group ?? MultiThreadedEventLoopGroup(numberOfThreads: 1)
        do {
            return try await open(host: host, port: port, configuration: configuration, loop: g.next(), ownsGroup: group == nil ? g : nil).get()
        } catch {
            if group == nil { try? await g.shutdownGracefully() }
            throw error
        }
    }

    /// Connects and performs HELLO without suspending: the client as a future on one of `group`'s loops.
    /// For callers that must not depend on Swift's task pool to make progress (`BalancedClient`, whose
    /// retries would otherwise wait for a pool kept busy elsewhere).
    public static func connectFuture(host: String, port: Int, configuration: ClientConfiguration = ClientConfiguration(),
                                     group: any EventLoopGroup) -> EventLoopFuture<ArbiterClient> {
        open(host: host, port: port, configuration: configuration, loop: group.next(), ownsGroup: nil)
    }

    /// The connection, TLS if configured, and the HELLO exchange, on `loop`; the channel is closed if any step fails.
    static func open(host: String, port: Int, configuration: ClientConfiguration, loop: any EventLoop,
                     ownsGroup: (any EventLoopGroup)?) -> EventLoopFuture<ArbiterClient> {
        let tlsContext: NIOSSLContext?
        do { tlsContext = try configuration.tls?.makeContext() } catch { return loop.makeFailedFuture(error) }
        let sniName = configuration.tls?.serverName ?? (Self.isAddress(host) ? nil : host)
        return ClientBootstrap(group: loop)
            .connectTimeout(configuration.connectTimeout)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelInitializer { ch in
                ch.eventLoop.makeCompletedFuture {
                    if let tlsContext {
                        try ch.pipeline.syncOperations.addHandler(NIOSSLClientHandler(context: tlsContext, serverHostname: sniName))
                    }
                    try ch.pipeline.syncOperations.addHandler(ClientHandler(maxResponseBytes: configuration.maxResponseBytes))
                }
            }
            .connect(host: host, port: port)
            .flatMap { channel -> EventLoopFuture<ArbiterClient> in
                let hello = Hello(maxFrameBytes: configuration.maxResponseBytes, compression: configuration.compression ? .zstd : [],
                                  clientName: configuration.clientName, token: configuration.token)
                return roundTripFuture(channel: channel, id: 0, message: .hello(hello), time: 0, timeout: configuration.connectTimeout,
                                       compress: nil)
                    .flatMapErrorThrowing { error -> Frame in
                        // A server that refuses the client's certificate (TLS 1.3: after the client has finished
                        // its side of the handshake) sends an alert and closes; the alert is lost when the close
                        // resets the connection under the HELLO just sent.
                        if case ClientError.connectionClosed = error, configuration.tls != nil {
                            throw ClientError.tls("the server closed the connection right after the TLS handshake: it did not accept this client's certificate, or wants one (mutual TLS); the server's log says which")
                        }
                        throw error
                    }
                    .flatMapThrowing { answer -> HelloOK in
                        guard case .helloOK(let ok) = answer.message else {
                            throw ClientError.protocolError("expected HELLO_OK, got \(answer.message.opcode)")
                        }
                        return ok
                    }
                    .flatMap { ok -> EventLoopFuture<ArbiterClient> in
                        let client = ArbiterClient(channel: channel, ownsGroup: ownsGroup, configuration: configuration, session: ok)
                        guard ok.compression.contains(.zstd) else { return channel.eventLoop.makeSucceededFuture(client) }
                        return channel.pipeline.handler(type: ClientHandler.self).map { $0.enableZstd() }.map { client }
                    }
                    .flatMapErrorThrowing { error in
                        channel.close(promise: nil)
                        throw error
                    }
            }
    }

    static func isAddress(_ host: String) -> Bool {
        (try? SocketAddress(ipAddress: host, port: 0)) != nil
    }

    init(channel: any Channel, ownsGroup: (any EventLoopGroup)?, configuration: ClientConfiguration, session: HelloOK) {
        self.channel = channel
        self.ownsGroup = ownsGroup
        self.configuration = configuration
        self.session = session
    }

    /// Sends any request and returns the answering frame. ERROR answers throw `ClientError.server`.
    /// `deadline` is sent to the server as the request's budget, and also bounds the wait here.
    public func send(_ message: Message, deadline: TimeAmount? = nil) async throws -> Frame {
        let id = nextID.loadThenWrappingIncrement(ordering: .relaxed)
        let budget = deadline.map { UInt64(max($0.nanoseconds / 1000, 1)) } ?? 0
        let compress = session.compression.contains(.zstd) ? configuration.compressionThreshold : nil
        return try await Self.roundTrip(channel: channel, id: id, message: message, time: budget,
                                        timeout: deadline ?? configuration.requestTimeout, compress: compress)
    }

    static func roundTrip(channel: any Channel, id: UInt64, message: Message, time: UInt64, timeout: TimeAmount,
                          compress: Int?) async throws -> Frame {
        try await roundTripFuture(channel: channel, id: id, message: message, time: time, timeout: timeout, compress: compress).get()
    }

    /// The round trip as a future on the channel's event loop, failed with `ClientError.server` for an ERROR.
    static func roundTripFuture(channel: any Channel, id: UInt64, message: Message, time: UInt64, timeout: TimeAmount,
                                compress: Int?) -> EventLoopFuture<Frame> {
        var buffer = channel.allocator.buffer(capacity: 64)
        Frame(requestID: id, time: time, message: message).encode(into: &buffer)
        // Stamped, so that the server can tell how long the request waited before it was read.
        FrameHeader.patchSendStamp(FrameHeader.sendStampNow(), in: &buffer, headerAt: 0)
        let promise = channel.eventLoop.makePromise(of: Frame.self)
        // A write that fails (the connection closed meanwhile) must fail the request, or it would wait forever.
        let written = channel.eventLoop.makePromise(of: Void.self)
        written.futureResult.whenFailure { promise.fail(($0 as? ClientError) ?? ClientError.tlsOrClosed($0)) }
        channel.writeAndFlush(ClientRequest(id: id, frame: buffer, promise: promise, timeout: timeout, compressAbove: compress),
                              promise: written)
        return promise.futureResult.flatMapThrowing { frame in
            if case .error(let e) = frame.message { throw ClientError.server(e.status, e.message) }
            return frame
        }
    }

    /// Scores without suspending: the answer as a future on this connection's event loop (for callers that
    /// race several requests, like `BalancedClient`'s hedges).
    public func scoreFuture(_ request: ScoreRequest, deadline: TimeAmount) -> EventLoopFuture<ScoreResult> {
        let id = nextID.loadThenWrappingIncrement(ordering: .relaxed)
        let compress = session.compression.contains(.zstd) ? configuration.compressionThreshold : nil
        return Self.roundTripFuture(channel: channel, id: id, message: .score(request), time: UInt64(max(deadline.nanoseconds / 1000, 1)),
                                    timeout: deadline, compress: compress).flatMapThrowing { f in
            guard case .result(let r) = f.message else { throw ClientError.protocolError("expected RESULT, got \(f.message.opcode)") }
            return r
        }
    }

    /// Whether the connection is still open.
    public var isOpen: Bool { channel.isActive }

    /// The event loop this connection's I/O runs on.
    public var eventLoop: any EventLoop { channel.eventLoop }

    /// Round-trip time of a PING with `payload`.
    public func ping(payload: [UInt8] = []) async throws -> Duration {
        let clock = ContinuousClock()
        let start = clock.now
        let f = try await send(.ping(payload))
        guard case .pong(let p) = f.message, p == payload else { throw ClientError.protocolError("PONG did not echo the payload") }
        return clock.now - start
    }

    /// The models the server serves.
    public func listModels() async throws -> [ModelSummary] {
        let f = try await send(.listModels)
        guard case .models(let list) = f.message else { throw ClientError.protocolError("expected MODELS, got \(f.message.opcode)") }
        return list
    }

    /// A model's schema (of the active version, or of `version`).
    public func modelInfo(_ model: String, version: UInt64 = 0) async throws -> ModelSchema {
        let f = try await send(.modelInfo(ModelInfoRequest(model: model, version: version)))
        guard case .schema(let s) = f.message else { throw ClientError.protocolError("expected SCHEMA, got \(f.message.opcode)") }
        return s
    }

    /// Every model's deployment as the server serves it (or one model's): the versions loaded and what each is
    /// for, a split's weights, the shadow's comparisons, the versions rejected and why.
    public func status(model: String = "") async throws -> [ModelStatus] {
        let f = try await send(.modelStatus(model))
        guard case .status(let list) = f.message else { throw ClientError.protocolError("expected STATUS, got \(f.message.opcode)") }
        return list
    }

    /// Asks the server to check the store now; returns once what it loaded serves (or what it rejected).
    /// Needs a loopback connection (unless the server takes remote RELOADs) and, with tokens, the admin right.
    public func reload(deadline: TimeAmount? = .seconds(60)) async throws -> ReloadReport {
        let f = try await send(.reload, deadline: deadline)
        guard case .reloaded(let r) = f.message else { throw ClientError.protocolError("expected RELOADED, got \(f.message.opcode)") }
        return r
    }

    /// Scores a batch of candidates.
    public func score(_ request: ScoreRequest, deadline: TimeAmount? = nil) async throws -> ScoreResult {
        let f = try await send(.score(request), deadline: deadline)
        guard case .result(let r) = f.message else { throw ClientError.protocolError("expected RESULT, got \(f.message.opcode)") }
        return r
    }

    /// Closes the connection; pending requests fail with `connectionClosed`.
    public func close() async throws {
        try? await channel.close()
        if let g = ownsGroup { try await g.shutdownGracefully() }
    }
}

/// A request on its way out: the encoded frame and the promise its answer completes.
struct ClientRequest {
    var id: UInt64
    var frame: ByteBuffer
    var promise: EventLoopPromise<Frame>
    var timeout: TimeAmount
    var compressAbove: Int?
}

/// Matches answers to requests by id, on the channel's event loop.
final class ClientHandler: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = ClientRequest
    typealias OutboundOut = ByteBuffer

    private var pending: [UInt64: (EventLoopPromise<Frame>, Scheduled<Void>)] = [:]
    private var cumulation: ByteBuffer?
    private let decoder: FrameDecoder
    private var zstd: ZstdCodec?
    private let maxResponseBytes: UInt32
    /// Why the connection failed (a TLS error, say), for the requests that come after: a HELLO written once
    /// the handshake has already failed must say why, not only that the connection is closed.
    private var failure: (any Error)?

    init(maxResponseBytes: UInt32) {
        self.maxResponseBytes = maxResponseBytes
        decoder = FrameDecoder(maxBodyBytes: maxResponseBytes)
    }

    func enableZstd() { zstd = ZstdCodec() }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let req = unwrapOutboundIn(data)
        guard context.channel.isActive else {
            req.promise.fail(failure ?? ClientError.connectionClosed)
            promise?.fail(failure ?? ClientError.connectionClosed)
            return
        }
        let id = req.id
        let timer = context.eventLoop.assumeIsolated().scheduleTask(in: req.timeout) { [weak self] () -> Void in
            self?.pending.removeValue(forKey: id)?.0.fail(ClientError.timeout)
        }
        pending[id] = (req.promise, timer)
        var frame = req.frame
        if let z = zstd, let threshold = req.compressAbove, frame.readableBytes - FrameHeader.size >= threshold {
            let body = frame.getSlice(at: frame.readerIndex + FrameHeader.size, length: frame.readableBytes - FrameHeader.size)!
            var packed = z.compress(body, allocator: context.channel.allocator)
            var c = context.channel.allocator.buffer(capacity: FrameHeader.size + packed.readableBytes)
            c.writeBytes(frame.readableBytesView.prefix(FrameHeader.size))
            c.setInteger(FrameFlags.zstd.rawValue, at: 6)
            FrameHeader.patchBodyLength(UInt32(packed.readableBytes), in: &c, headerAt: 0)
            c.writeBuffer(&packed)
            frame = c
        }
        context.write(wrapOutboundOut(frame), promise: promise)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var incoming = unwrapInboundIn(data)
        if var c = cumulation {
            cumulation = nil
            c.writeBuffer(&incoming)
            incoming = c
        }
        do {
            while let raw = try decoder.decodeFrame(&incoming) {
                var body = raw.body
                if raw.header.flags.contains(.zstd) {
                    guard let z = zstd else { throw WireError(.compressionNotNegotiated, "server sent a compressed frame unasked") }
                    body = try z.decompress(body, maxBytes: maxResponseBytes, allocator: context.channel.allocator)
                }
                let frame = try Frame.decode(header: raw.header, body: body)
                guard let (promise, timer) = pending.removeValue(forKey: raw.header.requestID) else {
                    // An ERROR for a request id we never sent (0: the server could not read our header).
                    if case .error(let e) = frame.message {
                        failAll(ClientError.server(e.status, e.message))
                    }
                    continue
                }
                timer.cancel()
                promise.succeed(frame)
            }
        } catch {
            // A TLS record (an alert 0x15 or a handshake 0x16, then version 3.x) where a frame should be: the
            // server speaks TLS and this client does not.
            let v = incoming.readableBytesView
            if v.count >= 2 && (v.first == 0x15 || v.first == 0x16) && v[v.startIndex + 1] == 0x03 {
                failAll(ClientError.tls("the server speaks TLS and this connection does not: connect with TLS"))
            } else {
                failAll(ClientError.protocolError("\(error)"))
            }
            context.close(promise: nil)
            return
        }
        if incoming.readableBytes > 0 { cumulation = incoming }
    }

    func channelInactive(context: ChannelHandlerContext) {
        failAll(failure ?? ClientError.connectionClosed)
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        let e = ClientError.isTLS(error) ? ClientError.tlsOrClosed(error) : error
        failure = failure ?? e
        failAll(e)
        context.close(promise: nil)
    }

    private func failAll(_ error: any Error) {
        let all = pending
        pending.removeAll()
        for (_, (p, t)) in all {
            t.cancel()
            p.fail(error)
        }
    }
}
