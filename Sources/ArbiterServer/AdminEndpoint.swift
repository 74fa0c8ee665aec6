import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix

/// The operator's HTTP port (arbiterd `--metrics-listen`): `GET /metrics` (Prometheus text format),
/// `GET /live` and `GET /ready`. It runs on a thread of its own, so that a scrape never waits behind requests;
/// a scrape costs each event loop one short task (copying its counters).
///
/// It starts before the server loads its models, so that an orchestrator sees the process alive (`/live`
/// 200) and not ready (`/ready` 503, "loading models") while a large store is read and validated; `attach`
/// hands it the server once loaded.
///
/// Bounded like the protocol port: at most `maxConnections` connections (more are closed at once), each closed
/// after `idleTimeout` without a request; request bodies are discarded.
public final class AdminEndpoint: Sendable {
    /// Answered by /metrics once the server has shut down (its event loops may be gone).
    struct ShuttingDown: Error, CustomStringConvertible { var description: String { "the server is shutting down" } }

    private let group: MultiThreadedEventLoopGroup
    private let channel: any Channel
    private let server = NIOLockedValueBox<ArbiterServer?>(nil)
    private let open = NIOLockedValueBox(0)
    let logger: Logger
    static let maxConnections = 32
    static let idleTimeout = TimeAmount.seconds(10)
    /// An event loop that does not run a no-op task within this is reported not live.
    static let liveWithin = TimeAmount.seconds(2)

    /// Binds `host:port` (port 0 picks one) and starts answering.
    public static func start(host: String, port: Int, logger: Logger) async throws -> AdminEndpoint {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        do {
            return try await AdminEndpoint(group: group, host: host, port: port, logger: logger)
        } catch {
            try? await group.shutdownGracefully()
            throw error
        }
    }

    private init(group: MultiThreadedEventLoopGroup, host: String, port: Int, logger: Logger) async throws {
        self.group = group
        self.logger = logger
        let server = self.server, open = self.open
        channel = try await ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 64)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                let count = open.withLockedValue { n -> Int in
                    n += 1
                    return n
                }
                channel.closeFuture.whenComplete { _ in open.withLockedValue { $0 -= 1 } }
                guard count <= Self.maxConnections else { return channel.close() }
                return channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline(withErrorHandling: true)
                    try channel.pipeline.syncOperations.addHandler(IdleStateHandler(allTimeout: Self.idleTimeout))
                    try channel.pipeline.syncOperations.addHandler(AdminHTTPHandler(server: server))
                }
            }
            .bind(host: host, port: port).get()
    }

    /// The port bound.
    public var port: Int? { channel.localAddress?.port }

    /// From now on, answers for `server` (its models loaded).
    public func attach(_ server: ArbiterServer) {
        self.server.withLockedValue { $0 = server }
    }

    public func shutdown() async {
        try? await channel.close()
        server.withLockedValue { $0 = nil }
        try? await group.shutdownGracefully()
    }
}

/// Answers one HTTP connection's requests, one at a time.
private final class AdminHTTPHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private let server: NIOLockedValueBox<ArbiterServer?>
    private var head: HTTPRequestHead?

    init(server: NIOLockedValueBox<ArbiterServer?>) { self.server = server }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let h): head = h
        case .body: break  // no endpoint takes a body
        case .end:
            guard let h = head else { return }
            head = nil
            answer(h, context: context)
        }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is IdleStateHandler.IdleStateEvent {
            context.close(promise: nil)
        } else {
            context.fireUserInboundEventTriggered(event)
        }
    }

    private func answer(_ h: HTTPRequestHead, context: ChannelHandlerContext) {
        let path = h.uri.split(separator: "?", maxSplits: 1).first.map(String.init) ?? h.uri
        guard h.method == .GET || h.method == .HEAD else {
            respond(h, .methodNotAllowed, "only GET and HEAD are served here\n", context: context, extra: [("Allow", "GET, HEAD")])
            return
        }
        let server = self.server.withLockedValue { $0 }
        let loop = context.eventLoop
        let bound = NIOLoopBound((self, context), eventLoop: loop)
        switch path {
        case "/live":
            guard let server else {
                respond(h, .ok, "live: loading models\n", context: context)
                return
            }
            server.liveness(on: loop).whenComplete { outcome in
                let (handler, context) = bound.value
                switch outcome {
                case .success(let why): handler.respond(h, why == nil ? .ok : .serviceUnavailable, "\(why ?? "live")\n", context: context)
                case .failure(let e): handler.respond(h, .serviceUnavailable, "not live: \(e)\n", context: context)
                }
            }
        case "/ready":
            guard let server else {
                respond(h, .serviceUnavailable, "not ready: loading models\n", context: context)
                return
            }
            let r = server.readiness()
            respond(h, r.ready ? .ok : .serviceUnavailable, (r.ready ? "ready: " : "not ready: ") + r.detail + "\n", context: context)
        case "/metrics":
            guard let server else {
                respond(h, .serviceUnavailable, "# the server is loading its models\n", context: context)
                return
            }
            server.metricsText(on: loop).whenComplete { outcome in
                let (handler, context) = bound.value
                switch outcome {
                case .success(let text):
                    handler.respond(h, .ok, text, context: context, type: "text/plain; version=0.0.4; charset=utf-8")
                case .failure(let e):
                    handler.respond(h, .serviceUnavailable, "# metrics unavailable: \(e)\n", context: context)
                }
            }
        default:
            respond(h, .notFound, "no such endpoint: \(path) (served: /metrics, /live, /ready)\n", context: context)
        }
    }

    private func respond(_ request: HTTPRequestHead, _ status: HTTPResponseStatus, _ body: String, context: ChannelHandlerContext,
                         type: String = "text/plain; charset=utf-8", extra: [(String, String)] = []) {
        guard context.channel.isActive else { return }
        var headers = HTTPHeaders([("Content-Type", type), ("Content-Length", "\(body.utf8.count)")] + extra)
        let keepAlive = request.isKeepAlive
        if !keepAlive { headers.add(name: "Connection", value: "close") }
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: request.version, status: status, headers: headers))), promise: nil)
        if request.method != .HEAD {
            var buffer = context.channel.allocator.buffer(capacity: body.utf8.count)
            buffer.writeString(body)
            context.write(wrapOutboundOut(.body(.byteBuffer(buffer))), promise: nil)
        }
        let done = context.writeAndFlush(wrapOutboundOut(.end(nil)))
        if !keepAlive {
            let channel = context.channel
            done.whenComplete { _ in channel.close(promise: nil) }
        }
    }
}
