import ArbiterModels
import ArbiterStore
import ArbiterWire
import Logging
import NIOCore
import NIOPosix

/// Serves one connection: cuts frames, enforces HELLO and the limits, scores inline on the event loop,
/// and answers every bad frame with an ERROR frame (closing where the spec says so). Its life — HELLO,
/// the deadlines, shutting down — is kept by a `ConnectionStateMachine`; this handler does the I/O.
///
/// Inline scoring is deliberate (DESIGN.md, decision 8): no thread hop per request. Small requests are
/// answered in the order they are read; a SCORE with `offloadCandidates` or more candidates is scored on the
/// thread pool and answered when done, after the requests behind it.
final class ConnectionHandler: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private let config: ServerConfiguration
    private let loopTable: LoopTable
    private let logger: Logger
    private let decoder: FrameDecoder
    private var cumulation: ByteBuffer?
    private var life: ConnectionStateMachine
    private var queueDelay = QueueDelayEstimator()
    private var zstd: ZstdCodec?
    private var clientMaxFrame: UInt32 = 0
    private var scratch = ScoringScratch()
    private var readPending = false
    /// Set while the handler is in a pipeline (the deadline sweep and shutdown act through it).
    private var context: ChannelHandlerContext?
    /// Frames handled so far, and the connection's phase (for tests and diagnostics; read on the loop).
    private(set) var framesHandled = 0
    var phase: ConnectionStateMachine.Phase { life.phase }
    /// Answers not yet handed to the channel. Every answer to one read batch is encoded straight into this
    /// buffer, which is written once, at `channelReadComplete`. Once the socket has taken it, the buffer is
    /// ours alone again and is reused: no allocation per answer, one write and one syscall per batch.
    private var outbox = ByteBufferAllocator().buffer(capacity: 1024)
    /// Above this capacity the outbox is let go after a batch rather than kept for the connection's life.
    private static let outboxKeepBytes = 64 << 10
    private let pool: NIOThreadPool?
    private let clock: ServerClock
    private let budget: MemoryBudget
    /// The tokens this server accepts (nil: none is asked for), and what this connection's token allows.
    private let tokens: TokenTable?
    private var rights: Rights
    private var tokenName = "-"
    private let authLog: RateLimitedLog?
    /// What this connection last counted against `budget`.
    private var charged = 0
    /// Requests being scored off the loop: their bodies and estimated answers, in bytes.
    private var offloadedBytes = 0
    /// Frames are left unread in `cumulation` until the client reads its answers, offloaded work finishes
    /// or the server's budget frees; `pausedAt` is when they were read.
    private var paused = false
    private var pausedAt: UInt64 = 0
    /// Answers are handed to the channel every this many bytes within a batch (so that a batch of many
    /// small requests with large answers meets back-pressure part-way instead of after the whole batch).
    private static let writeEveryBytes = 64 << 10
    /// ... and at least every millisecond of a batch (requests that take long to score must not hold the
    /// answers before them until the whole batch is done). `lastAnswerAt` is the clock read that stamped the
    /// last answer's time (no extra clock read per frame).
    private static let writeEveryNanos: UInt64 = 1_000_000
    /// When its answers have gone unread this long while the memory budget is in use, a connection is closed.
    private static let evictAfterNanos: UInt64 = 1_000_000_000
    /// The answer bytes queued for the socket at the last sweep, and when the client was last seen reading
    /// them (the queue fell, or was empty).
    private var lastQueued = 0
    private var answersReadAt: UInt64 = 0
    /// Whether the client was seen reading its answers within `readingWithinNanos` at the last sweep: over
    /// the memory budget, such a client is not held back (until the hard limit).
    private var readsAnswers = true
    private static let readingWithinNanos: UInt64 = 300_000_000
    private var lastAnswerAt: UInt64 = 0
    private var lastWriteAt: UInt64 = 0
    private let admin: AdminHooks?
    /// The shadow sample's draw: a SplitMix64 sequence seeded per connection.
    private var shadowDraw: UInt64

    init(config: ServerConfiguration, loopTable: LoopTable, pool: NIOThreadPool?, logger: Logger, clock: ServerClock = .system,
         budget: MemoryBudget? = nil, tokens: TokenTable? = nil, authLog: RateLimitedLog? = nil, admin: AdminHooks? = nil) {
        self.authLog = authLog
        self.admin = admin
        self.shadowDraw = UInt64(truncatingIfNeeded: clock.nanoseconds())
        self.budget = budget ?? MemoryBudget(limit: config.memoryBudgetBytes)
        self.tokens = tokens
        self.rights = tokens == nil ? .all : []
        self.config = config
        self.clock = clock
        self.pool = pool
        self.loopTable = loopTable
        self.logger = logger
        self.decoder = FrameDecoder(maxBodyBytes: config.limits.maxFrameBytes)
        self.life = ConnectionStateMachine(timeouts: config.connectionTimeouts, now: clock.nanoseconds())
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        loopTable.add(self)
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        loopTable.remove(self)
        self.context = nil
    }

    // MARK: inbound

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let receivedAt = clock.nanoseconds()
        var incoming = unwrapInboundIn(data)
        // Closed or closing for writing: what the client still sends is read (so that closing does not
        // reset the connection under answers it has not read) and dropped.
        if life.dropsInput { return }
        if var c = cumulation {
            cumulation = nil
            c.writeBuffer(&incoming)
            incoming = c
        }
        if paused {
            // Bytes NIO had already read before the pause: keep them with the rest. (A paused connection is
            // not waiting for a frame to complete: the frame timeout does not run; the idle one does.)
            cumulation = incoming
            life.read(now: receivedAt, completedFrames: 0, partialFrame: false)
            return
        }
        process(&incoming, context: context, readAt: receivedAt, now: receivedAt)
    }

    /// Handles the complete frames at the front of `incoming` (read at `readAt`) and keeps the rest. Stops
    /// early — pauses — when the channel holds more answers than its watermark or this connection has its
    /// most bytes being scored off the loop; `resumeIfPossible` carries on.
    private func process(_ incoming: inout ByteBuffer, context: ChannelHandlerContext, readAt: UInt64, now: UInt64) {
        reuseOutbox()
        var completed = 0
        while !life.dropsInput {
            if outbox.readableBytes >= Self.writeEveryBytes
                || (outbox.readableBytes > 0 && lastAnswerAt &- max(lastWriteAt, readAt) > Self.writeEveryNanos && lastAnswerAt > readAt) {
                lastWriteAt = lastAnswerAt
                writeOutbox(context)
                context.flush()
            }
            if !context.channel.isWritable || offloadedBytes >= config.maxOffloadedBytesPerConnection {
                if incoming.readableBytes > 0 {
                    paused = true
                    pausedAt = readAt
                }
                break
            }
            let frame: RawFrame?
            do {
                frame = try decoder.decodeFrame(&incoming)
            } catch {
                fail(error, context: context)
                return
            }
            guard let frame else { break }
            completed += 1
            framesHandled += 1
            handle(frame, context: context, receivedAt: readAt)
        }
        if life.dropsInput { return }
        life.read(now: now, completedFrames: completed, partialFrame: incoming.readableBytes > 0 && !paused)
        if incoming.readableBytes > 0 {
            // Keep only the partial frame; copy it out so the large read buffer can be freed.
            if incoming.readerIndex > 0 && incoming.readableBytes < 4096 {
                var fresh = context.channel.allocator.buffer(capacity: max(incoming.readableBytes, 256))
                fresh.writeBuffer(&incoming)
                cumulation = fresh
            } else {
                cumulation = incoming
            }
        }
    }

    /// Carries on with frames left unread by a pause once the reason is gone, then reads again.
    private func resumeIfPossible(_ context: ChannelHandlerContext) {
        guard !life.dropsInput else { return }
        if paused && context.channel.isWritable && offloadedBytes < config.maxOffloadedBytesPerConnection {
            paused = false
            if var c = cumulation {
                cumulation = nil
                process(&c, context: context, readAt: pausedAt, now: clock.nanoseconds())
                writeOutbox(context)
                context.flush()
            }
        }
        if readPending && mayRead(context) {
            readPending = false
            context.read()
        }
        recount(context)
    }

    private func mayRead(_ context: ChannelHandlerContext) -> Bool {
        // Half-closed, nothing more is written: keep reading (and dropping) until the client closes.
        if life.phase == .halfClosed { return true }
        // Over the memory budget, a connection that holds much is held back at its next frame boundary: a
        // frame already started is read to its end (at most the frame limit), so that the frame timeout
        // only ever measures the client.
        let midFrame = (cumulation?.readableBytes ?? 0) > 0
        return !paused && context.channel.isWritable && (midFrame || !budget.holdsBack(charged, readsAnswers: readsAnswers))
    }

    /// Counts what this connection holds now against the server's budget.
    private func recount(_ context: ChannelHandlerContext) {
        let queued = (try? context.channel.syncOptions?.getOption(ChannelOptions.bufferedWritableBytes)) ?? 0
        let holding = life.phase == .closed ? 0 : queued + outbox.capacity + (cumulation?.capacity ?? 0) + offloadedBytes
        budget.add(holding - charged)
        charged = holding
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        writeOutbox(context)
        context.flush()
        recount(context)
    }

    func channelInactive(context: ChannelHandlerContext) {
        if let c = cumulation, c.readableBytes > 0 {
            logger.debug("connection closed inside a frame", metadata: ["bytes": "\(c.readableBytes)"])
        }
        life.closed()
        cumulation = nil
        outbox.clear()
        loopTable.remove(self)
        budget.add(-charged)
        charged = 0
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        logger.debug("connection error: \(error)")
        context.close(promise: nil)
    }

    // MARK: deadlines and shutdown (called on this connection's event loop)

    /// Acts on any deadline that has passed (the loop's sweep calls this a few times a second).
    func tick(now: UInt64) {
        if let context, life.servesRequests {
            // Whether the client reads its answers: the bytes queued for it fell, or none are queued.
            let queued = (try? context.channel.syncOptions?.getOption(ChannelOptions.bufferedWritableBytes)) ?? 0
            if queued == 0 || queued < lastQueued { answersReadAt = now }
            lastQueued = queued
            let unreadFor = now &- answersReadAt
            readsAnswers = unreadFor < Self.readingWithinNanos
            if budget.isExhausted && unreadFor >= Self.evictAfterNanos {
                // The budget is in use and this client has not read its answers for a while: its memory goes
                // back to the clients that read theirs.
                perform(life.evict(now: now, stalledFor: unreadFor))
                return
            }
            // Not reading it because of the server's budget or its own work in flight, while its client reads
            // its answers: the client is not idle.
            if readPending && unreadFor < Self.evictAfterNanos && (paused || budget.holdsBack(charged, readsAnswers: readsAnswers)) {
                life.heldBackByServer(now: now)
            }
        }
        perform(life.tick(now: now))
        // The channel's queue drains without telling us (between watermarks), and the budget may have freed.
        if let context, life.phase != .closed { resumeIfPossible(context) }
    }

    /// The server is shutting down: answer what was read, then say so and close (see the state machine).
    func shutdown(now: UInt64) {
        perform(life.shutdownRequested(now: now))
    }

    /// Closes now, whatever is queued (the server's grace period is over).
    func forceClose() {
        guard let context, life.phase != .closed else { return }
        life.closed()
        context.close(promise: nil)
    }

    private func perform(_ action: ConnectionStateMachine.Action) {
        guard let context else { return }
        switch action {
        case .none:
            break
        case .fail(let status, let message):
            logger.debug("closing connection", metadata: ["status": "\(status)", "message": "\(message)"])
            loopTable.metrics.failed(status)
            cumulation = nil
            reuseOutbox()
            ResultEncoder.encodeError(WireError(status, message), into: &outbox)
            closeWhenWritten(context)
        case .sendShutdownNoticeAndHalfClose:
            reuseOutbox()
            // Complete frames read but left unhandled by a pause are answered too: not served.
            if var c = cumulation {
                cumulation = nil
                while let frame = try? decoder.decodeFrame(&c) {
                    framesHandled += 1
                    loopTable.metrics.failed(.shuttingDown)
                    ResultEncoder.encodeError(WireError(.shuttingDown, "the server is shutting down; resend this request on a new connection",
                                                        requestID: frame.header.requestID), into: &outbox)
                }
            }
            paused = false
            ResultEncoder.encodeError(WireError(.shuttingDown, "the server is shutting down; resend unanswered requests on a new connection"),
                                      into: &outbox)
            writeOutbox(context)
            context.flush()
            // Once every answer and the notice are written, close our side; keep reading until the client
            // closes (the sweep closes at the grace period's end if it does not).
            context.close(mode: .output, promise: nil)
            context.read()
        case .close:
            context.close(promise: nil)
        }
    }

    /// Writes what is queued, then closes.
    private func closeWhenWritten(_ context: ChannelHandlerContext) {
        let channel = context.channel
        let out = outbox
        outbox.moveReaderIndex(to: outbox.writerIndex)
        context.writeAndFlush(wrapOutboundOut(out)).whenComplete { _ in channel.close(promise: nil) }
    }

    // MARK: back-pressure: stop reading while the socket does not drain our answers

    func read(context: ChannelHandlerContext) {
        if mayRead(context) {
            context.read()
        } else {
            readPending = true
        }
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable { resumeIfPossible(context) }
        context.fireChannelWritabilityChanged()
    }

    // MARK: frames

    private func handle(_ frame: RawFrame, context: ChannelHandlerContext, receivedAt: UInt64) {
        let h = frame.header
        let start = outbox.writerIndex
        do {
            try dispatch(frame, context: context, receivedAt: receivedAt)
        } catch {
            // Nothing of a failed answer goes out: only the ERROR.
            outbox.moveWriterIndex(to: start)
            var e = error
            e.requestID = h.requestID
            fail(e, context: context, receivedAt: receivedAt)
        }
    }

    private func dispatch(_ frame: RawFrame, context: ChannelHandlerContext, receivedAt: UInt64) throws(WireError) {
        let h = frame.header
        guard life.servesRequests else {
            // Shutting down, with answers still being scored: say so, and close once they are sent.
            loopTable.metrics.failed(.shuttingDown)
            ResultEncoder.encodeError(WireError(.shuttingDown, "the server is shutting down; resend this request on a new connection",
                                                requestID: h.requestID), into: &outbox)
            return
        }
        guard let op = Opcode(rawValue: h.opcode) else {
            throw WireError(.unknownOpcode, "opcode 0x\(String(h.opcode, radix: 16)) is not defined in protocol v1")
        }
        guard op.isRequest else {
            throw WireError(.protocolViolation, "\(op) is a response opcode; a client may not send it")
        }
        guard FrameFlags.known.isSuperset(of: h.flags) else {
            throw WireError(.malformed, "flags 0x\(String(h.flags.rawValue, radix: 16)) include bits protocol v1 does not define")
        }
        // A stamped request's wait before it was read counts against its budget, and sheds it when long.
        var sentAt = receivedAt
        if let waited = queueDelay.observe(stamp: h.sendStamp, now: receivedAt), op == .score {
            // Shed by the whole wait so far: before the read, and behind the requests read with it.
            let sinceRead = (clock.nanoseconds() &- receivedAt) / 1_000
            if config.maxQueueMillis > 0 && waited + sinceRead > UInt64(config.maxQueueMillis) * 1_000 {
                loopTable.metrics.shed(.queue)
                throw WireError(.overloaded, "the request waited about \((waited + sinceRead) / 1_000) ms before the server could score it, over its limit of \(config.maxQueueMillis) ms; retry")
            }
            if h.time > 0 && waited >= h.time {
                throw WireError(.deadlineExceeded, "the request waited about \(waited) µs before the server read it, over its budget of \(h.time) µs")
            }
            sentAt -= waited * 1_000
        }
        if op == .score && budget.holdsBack(charged, readsAnswers: readsAnswers) {
            // Shed before decompressing or scoring anything: the answer costs a few bytes.
            loopTable.metrics.shed(.memory)
            throw WireError(.overloaded, "the server's memory budget (\(budget.limit >> 20) MiB) is in use; retry later")
        }
        var body = frame.body
        if h.flags.contains(.zstd) {
            guard let z = zstd else {
                throw WireError(.compressionNotNegotiated, "the zstd flag is set but this connection did not negotiate zstd in HELLO")
            }
            body = try z.decompress(body, maxBytes: config.limits.maxFrameBytes, allocator: context.channel.allocator)
        }
        switch op {
        case .hello:
            try hello(h, body, context: context)
        case .ping:
            let at = outbox.writerIndex
            ResultEncoder.encodePong(requestID: h.requestID, payload: body, into: &outbox)
            finishFrame(at: at, in: &outbox, receivedAt: receivedAt, allocator: context.channel.allocator)
        case .listModels, .modelInfo, .score, .modelStatus, .reload:
            guard life.helloDone else { throw WireError(.helloRequired, "send HELLO before \(op)") }
            let needed: Rights = op == .score ? .score : op == .reload ? .admin : .info
            guard rights.allow(needed) else {
                throw WireError(.forbidden, "the token '\(tokenName)' may not \(op) (its rights: \(rights))")
            }
            switch op {
            case .listModels:
                guard body.readableBytes == 0 else { throw WireError(.malformed, "LIST_MODELS has an empty body") }
                let list = loopTable.table.models.values.map(\.active.summary).sorted { $0.name < $1.name }
                reply(h, .models(list), context: context, receivedAt: receivedAt)
            case .modelStatus:
                guard case .modelStatus(let name) = try Message.decodeBody(opcode: .modelStatus, status: 0, body: body) else { return }
                var list = admin?.status() ?? []
                if !name.isEmpty {
                    list = list.filter { $0.name == name }
                    guard !list.isEmpty else {
                        throw WireError(.unknownModel, "no model named '\(name)' is known to this server (known: \(loopTable.table.models.keys.sorted().joined(separator: ", ")))")
                    }
                }
                reply(h, .status(list), context: context, receivedAt: receivedAt)
            case .reload:
                guard body.readableBytes == 0 else { throw WireError(.malformed, "RELOAD has an empty body") }
                try reload(h, context: context, receivedAt: receivedAt)
            case .modelInfo:
                guard case .modelInfo(let r) = try Message.decodeBody(opcode: .modelInfo, status: 0, body: body) else { return }
                let (_, m) = try servingModel(r.model, version: r.version)
                reply(h, .schema(m.wireSchema), context: context, receivedAt: receivedAt)
            default:
                try score(h, body, context: context, receivedAt: receivedAt, sentAt: sentAt)
            }
        default:
            throw WireError(.protocolViolation, "\(op) is not a request")
        }
    }

    private func hello(_ h: FrameHeader, _ body: ByteBuffer, context: ChannelHandlerContext) throws(WireError) {
        guard !life.helloDone else { throw WireError(.protocolViolation, "HELLO was already completed on this connection") }
        guard case .hello(let hello) = try Message.decodeBody(opcode: .hello, status: 0, body: body) else { return }
        let ours = UInt16(FrameHeader.currentVersion)
        guard hello.minVersion <= ours, ours <= hello.maxVersion else {
            throw WireError(.unsupportedVersion,
                            "client speaks protocol versions \(hello.minVersion)...\(hello.maxVersion); this server speaks \(ours)")
        }
        if let tokens {
            let entry = hello.token.flatMap { tokens.entry(for: $0) }
            guard let entry else {
                let why = hello.token?.isEmpty ?? true ? "this server requires a token in HELLO; none was sent"
                                                       : "this server requires a token in HELLO, and this one is not known to it"
                let peer = context.channel.remoteAddress?.description ?? "?"
                authLog?.log { suppressed in
                    logger.warning("refused HELLO from \(peer) (client '\(hello.clientName)'): \(why)\(suppressed > 0 ? " (\(suppressed) more refused since the last report)" : "")")
                }
                throw WireError(.unauthenticated, why)
            }
            rights = entry.rights
            tokenName = entry.name
        }
        var compression: CompressionSet = []
        if config.allowCompression && hello.compression.contains(.zstd) {
            compression = .zstd
            zstd = ZstdCodec()
        }
        clientMaxFrame = hello.maxFrameBytes
        life.helloCompleted()
        logger.debug("HELLO", metadata: ["client": "\(hello.clientName)", "zstd": "\(compression.contains(.zstd))", "token": "\(tokenName)"])
        reply(h, .helloOK(HelloOK(version: ours, limits: config.limits, compression: compression, serverName: config.serverName)),
              context: context, receivedAt: 0)
    }

    /// The model named, and the version of it that serves this request: the pinned one, or the split's
    /// choice for the routing key, or the active one.
    private func servingModel(_ name: String, version: UInt64, routingKey: UInt64 = 0) throws(WireError) -> (ServedModel, ServingModel) {
        let table = loopTable.table
        guard let served = table.models[name] else {
            let known = table.models.keys.sorted().joined(separator: ", ")
            var why = "no model named '\(name)' is served (served: \(known.isEmpty ? "none" : known))"
            if let failure = table.failures[name] { why = "model '\(name)' is not served: \(failure)" }
            throw WireError(.unknownModel, why)
        }
        guard let m = served.serving(version: version, routingKey: routingKey) else {
            throw WireError(.unknownVersion, served.notLoaded(version))
        }
        return (served, m)
    }

    /// RELOAD: the store is checked now, on the loader thread; the answer goes out when every event loop
    /// serves what it loaded. Only from loopback unless `remoteAdmin`.
    private func reload(_ h: FrameHeader, context: ChannelHandlerContext, receivedAt: UInt64) throws(WireError) {
        guard let admin else { throw WireError(.forbidden, "this server does not take RELOAD") }
        if !config.remoteAdmin && !Self.isLoopback(context.channel.remoteAddress) {
            throw WireError(.forbidden, "RELOAD is taken from loopback only (this connection is from \(context.channel.remoteAddress?.ipAddress ?? "?")); start arbiterd with --remote-admin to allow it")
        }
        guard life.pending < Int(config.limits.maxInFlight) else {
            throw WireError(.overloaded, "\(life.pending) requests are already being worked on off the event loop for this connection; retry later")
        }
        life.workStarted()
        let requestID = h.requestID
        let bound = NIOLoopBound(OffloadTarget(handler: self, context: context), eventLoop: context.eventLoop)
        admin.reload().hop(to: context.eventLoop).whenComplete { outcome in
            let handler = bound.value.handler, context = bound.value.context
            let next = handler.life.workFinished(now: handler.clock.nanoseconds())
            defer { if handler.life.phase != .closed { handler.resumeIfPossible(context) } }
            guard !handler.life.dropsInput || next != .none else { return }
            handler.reuseOutbox()
            switch outcome {
            case .success(let report):
                handler.reply(FrameHeader(opcode: Opcode.reload.rawValue, requestID: requestID), .reloaded(report),
                              context: context, receivedAt: receivedAt)
            case .failure(let error):
                handler.fail(WireError(.internalError, "RELOAD failed: \(error); what was serving keeps serving", requestID: requestID), context: context)
            }
            handler.writeOutbox(context)
            context.flush()
            handler.perform(next)
        }
    }

    static func isLoopback(_ address: SocketAddress?) -> Bool {
        switch address {
        case .v4(let a): return UInt32(bigEndian: a.address.sin_addr.s_addr) >> 24 == 127
        case .v6: return address?.ipAddress == "::1" || (address?.ipAddress?.hasPrefix("::ffff:127.") ?? false)
        case .unixDomainSocket: return true
        case nil: return false
        }
    }

    // MARK: SCORE, the hot path

    /// `sentAt` is when the client sent it, as far as the server can tell (its send stamp), else `receivedAt`:
    /// the budget and RESULT's `queue_us` count from there; the header's time counts from the read.
    private func score(_ h: FrameHeader, _ body: ByteBuffer, context: ChannelHandlerContext, receivedAt: UInt64, sentAt: UInt64) throws(WireError) {
        let view = try ScoreRequestView(body: body)
        guard view.trailingBytes == 0 else {
            throw WireError(.malformed, "SCORE body has \(view.trailingBytes) bytes after the candidate matrix")
        }
        let (served, m) = try servingModel(view.model, version: view.version, routingKey: view.routingKey)
        let n = view.candidateCount
        if let own = m.maxCandidates {
            guard n <= own else {
                throw WireError(.tooManyCandidates, "\(n) candidates, over \(m.name) v\(m.version)'s limit of \(own) (its max_candidates)")
            }
        } else {
            guard n <= Int(config.limits.maxCandidates) else {
                throw WireError(.tooManyCandidates, "\(n) candidates, over the limit of \(config.limits.maxCandidates)")
            }
        }
        guard view.contextCount == m.contextCount else {
            throw WireError(.schemaMismatch, "SCORE carries \(view.contextCount) context features; \(m.name) v\(m.version) takes \(m.contextCount): \(m.wireSchema.contextFeatures.map(\.name).joined(separator: ", "))")
        }
        guard view.candidateFeatureCount == m.candidateFeatureCount else {
            throw WireError(.schemaMismatch, "SCORE carries \(view.candidateFeatureCount) features per candidate; \(m.name) v\(m.version) takes \(m.candidateFeatureCount): \(m.wireSchema.candidateFeatures.map(\.name).joined(separator: ", "))")
        }
        if let pool, n >= m.offloadCandidates ?? (config.offloadCandidates > 0 ? config.offloadCandidates : Int.max) {
            try offload(view, body: body, model: m, served: served, requestID: h.requestID, budget: h.time, receivedAt: receivedAt, sentAt: sentAt, pool: pool, context: context)
            return
        }
        let at = outbox.writerIndex
        let timing = try ResultEncoder.scoreAndEncode(view, model: m, requestID: h.requestID, budget: h.time, receivedAt: sentAt,
                                                      scratch: &scratch, clientMaxFrame: clientMaxFrame, clock: clock, into: &outbox)
        loopTable.metrics.scored(series: m.seriesNumber, candidates: n, timing: timing)
        finishFrame(at: at, in: &outbox, receivedAt: receivedAt, allocator: context.channel.allocator)
        if let shadow = served.shadow, view.version == 0 { sampleForShadow(body, served: m, shadow: shadow) }
    }

    /// Hands a copy of an answered request to the shadow thread, for a `sample` share of them. Costs the
    /// event loop one draw per request, and a copy of the body for those sampled.
    @inline(__always)
    private func sampleForShadow(_ body: ByteBuffer, served: ServingModel, shadow: ShadowTarget) {
        shadowDraw = shadowDraw &+ 0x9E37_79B9_7F4A_7C15
        guard TrafficSplit.bucket(key: shadowDraw, salt: 0) < shadow.threshold || shadow.threshold == UInt64.max,
              let admin, served !== shadow.model else { return }
        admin.shadow.submit(ByteBuffer(buffer: body), served: served, shadow: shadow)
    }

    /// Scores a large request on the thread pool, so the requests behind it on this connection are answered
    /// meanwhile (its answer then comes out of order).
    private func offload(_ view: ScoreRequestView, body: ByteBuffer, model m: ServingModel, served: ServedModel, requestID: UInt64, budget: UInt64, receivedAt: UInt64,
                         sentAt: UInt64, pool: NIOThreadPool, context: ChannelHandlerContext) throws(WireError) {
        guard life.pending < Int(config.limits.maxInFlight) else {
            throw WireError(.overloaded, "\(life.pending) large requests are already being scored on this connection; retry later")
        }
        life.workStarted()
        loopTable.metrics.offloadStarted()
        // Held until answered: the request's inputs and its answer (ids, score and columns per candidate),
        // and while it runs, its scratch (a copy of as much again).
        let n = view.candidateCount
        let answerBytes = 256 + n * (12 + 4 * m.floatColumnCount + m.codeColumnCount)
        let held = 2 * (4 * (view.contextCount + n * view.candidateFeatureCount) + 8 * n + answerBytes)
        offloadedBytes += held
        recount(context)  // at once: a batch of large requests must meet the server's budget part-way
        let allocator = context.channel.allocator
        let limit = clientMaxFrame
        let clock = self.clock
        let job = pool.runIfActive(eventLoop: context.eventLoop) { () -> Result<(ByteBuffer, ScoreTiming), WireError> in
            var scratch = ScoringScratch()
            var out = allocator.buffer(capacity: answerBytes)  // sized once: no doubling as it grows
            do throws(WireError) {
                let timing = try ResultEncoder.scoreAndEncode(view, model: m, requestID: requestID, budget: budget,
                                                              receivedAt: sentAt, scratch: &scratch, clientMaxFrame: limit,
                                                              clock: clock, into: &out)
                return .success((out, timing))
            } catch {
                return .failure(error)
            }
        }
        let bound = NIOLoopBound(OffloadTarget(handler: self, context: context), eventLoop: context.eventLoop)
        job.whenComplete { (outcome: Result<Result<(ByteBuffer, ScoreTiming), WireError>, any Error>) in
            let handler = bound.value.handler, context = bound.value.context
            handler.offloadedBytes -= held
            handler.loopTable.metrics.offloadFinished()
            let next = handler.life.workFinished(now: handler.clock.nanoseconds())
            defer { if handler.life.phase != .closed { handler.resumeIfPossible(context) } }
            // Closed meanwhile (a timeout, the grace period, the client): the answer has no one to go to.
            guard !handler.life.dropsInput || next != .none else { return }
            handler.reuseOutbox()
            switch outcome {
            case .success(.success(let (answer, timing))):
                var out = answer
                handler.loopTable.metrics.scored(series: m.seriesNumber, candidates: n, timing: timing)
                // Whatever is already in the outbox was answered first: keep that order on the wire.
                handler.writeOutbox(context)
                handler.finishFrame(at: out.readerIndex, in: &out, receivedAt: receivedAt, allocator: context.channel.allocator)
                context.writeAndFlush(handler.wrapOutboundOut(out), promise: nil)
                if let shadow = served.shadow, view.version == 0 { handler.sampleForShadow(body, served: m, shadow: shadow) }
            case .success(.failure(var e)):
                e.requestID = requestID
                handler.fail(e, context: context)
                handler.writeOutbox(context)
                context.flush()
            case .failure:
                handler.fail(WireError(.shuttingDown, "the server is shutting down; retry on a new connection", requestID: requestID), context: context)
                handler.writeOutbox(context)
                context.flush()
            }
            handler.perform(next)
        }
    }

    // MARK: writing

    /// Encodes a response to `request` into the outbox.
    private func reply(_ request: FrameHeader, _ message: Message, context: ChannelHandlerContext, receivedAt: UInt64) {
        let at = outbox.writerIndex
        Frame(requestID: request.requestID, message: message).encode(into: &outbox)
        finishFrame(at: at, in: &outbox, receivedAt: receivedAt, allocator: context.channel.allocator)
    }

    /// Finishes the frame that starts at `at` in `buffer`: compresses its body when zstd was negotiated and
    /// the body is large enough to gain, then stamps the server-held time.
    private func finishFrame(at: Int, in buffer: inout ByteBuffer, receivedAt: UInt64, allocator: ByteBufferAllocator) {
        let bodyStart = at + FrameHeader.size
        let bodyLength = buffer.writerIndex - bodyStart
        if let z = zstd, bodyLength >= config.compressionThreshold {
            let packed = z.compress(buffer.getSlice(at: bodyStart, length: bodyLength)!, allocator: allocator)
            if packed.readableBytes < bodyLength {
                buffer.moveWriterIndex(to: bodyStart)
                buffer.writeImmutableBuffer(packed)
                buffer.setInteger(FrameFlags.zstd.rawValue, at: at + 6)
                FrameHeader.patchBodyLength(UInt32(packed.readableBytes), in: &buffer, headerAt: at)
            }
        }
        if receivedAt > 0 {
            lastAnswerAt = clock.nanoseconds()
            FrameHeader.patchTime((lastAnswerAt &- receivedAt) / 1000, in: &buffer, headerAt: at)
        }
    }

    /// Hands the outbox's unwritten answers to the channel (the caller flushes).
    private func writeOutbox(_ context: ChannelHandlerContext) {
        guard outbox.readableBytes > 0 else { return }
        context.write(wrapOutboundOut(outbox), promise: nil)
        // Mark it written without touching its storage, which the channel holds until the socket takes it.
        outbox.moveReaderIndex(to: outbox.writerIndex)
    }

    /// Makes the written outbox ready for the next answers: rewinds it in place once the channel has let
    /// it go (a copy-on-write clear gives a fresh buffer while the socket has not yet taken it all).
    private func reuseOutbox() {
        guard outbox.readableBytes == 0, outbox.writerIndex > 0 else { return }
        if outbox.capacity > Self.outboxKeepBytes {
            outbox = ByteBufferAllocator().buffer(capacity: 1024)
        } else {
            outbox.clear()
        }
    }

    /// Answers a protocol error; closes the connection when the status says so.
    /// `receivedAt` (when the request was read) gives the ERROR's header time, as for any answer; 0 leaves
    /// it 0 (errors that answer no request, or a frame whose header cannot be trusted).
    private func fail(_ error: WireError, context: ChannelHandlerContext, receivedAt: UInt64 = 0) {
        logger.debug("protocol error", metadata: ["status": "\(error.status)", "message": "\(error.message)"])
        loopTable.metrics.failed(error.status)
        let at = outbox.writerIndex
        ResultEncoder.encodeError(error, into: &outbox)
        if receivedAt > 0 {
            FrameHeader.patchTime((clock.nanoseconds() &- receivedAt) / 1000, in: &outbox, headerAt: at)
        }
        if error.status.closesConnection {
            life.closingErrorQueued(now: clock.nanoseconds())
            cumulation = nil
            closeWhenWritten(context)
        }
    }
}

/// What the server lends its connections for the operator's requests and the shadow.
struct AdminHooks: Sendable {
    let shadow: ShadowScorer
    /// Checks the store now (RELOAD).
    let reload: @Sendable () -> EventLoopFuture<ReloadReport>
    /// Every model's deployment (MODEL_STATUS).
    let status: @Sendable () -> [ModelStatus]
}

/// What an offloaded job's completion needs, bound to the connection's event loop.
private struct OffloadTarget {
    let handler: ConnectionHandler
    let context: ChannelHandlerContext
}
