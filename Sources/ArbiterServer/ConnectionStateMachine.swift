import ArbiterWire

/// The life of one connection apart from its I/O: whether HELLO is done, the deadlines that bound every
/// wait (HELLO, a frame's completion, idleness, a graceful close), and the steps of shutting down. The
/// handler feeds it what happened, with the time, and carries out the action it returns; nothing here does
/// I/O or reads a clock, so it is tested event by event (`ConnectionStateMachineTests`).
///
/// Phases, in order (a connection may skip ahead, never go back):
/// - `awaitingHello`: only HELLO and PING are served; HELLO must come within `timeouts.hello`.
/// - `open`: serving.
/// - `draining`: shutdown was asked while requests were still being scored off the event loop; their
///   answers are awaited, and requests read meanwhile are answered `SHUTTING_DOWN`.
/// - `halfClosed`: the shutdown notice (ERROR `SHUTTING_DOWN`, request id 0) was queued after every answer
///   and our side closed for writing once they were written; what the client still sends is read and
///   dropped, because closing with unread bytes would make the kernel reset the connection and destroy
///   answers the client has not read yet. It ends when the client closes or the grace period ends.
/// - `closing`: a closing ERROR was queued; the connection closes once it is written, or at the grace
///   period's end if the client does not read it.
/// - `closed`.
struct ConnectionStateMachine {
    /// Every wait's bound, in nanoseconds; 0 means none.
    struct Timeouts: Sendable, Equatable {
        /// From connecting to a complete HELLO.
        var hello: UInt64
        /// With nothing read and nothing being scored for this long, the connection is closed.
        var idle: UInt64
        /// A frame whose first byte has arrived must be complete within this.
        var frame: UInt64
        /// From shutdown (or a closing error) to the connection's close, whatever the client does.
        var grace: UInt64

        init(hello: UInt64, idle: UInt64, frame: UInt64, grace: UInt64) {
            self.hello = hello
            self.idle = idle
            self.frame = frame
            self.grace = grace
        }
    }

    enum Phase: Equatable {
        case awaitingHello, open, draining, halfClosed, closing, closed
    }

    enum Action: Equatable {
        case none
        /// Queue ERROR (request id 0) with this status and message, then close once it is written.
        case fail(Status, String)
        /// Queue ERROR `SHUTTING_DOWN` (request id 0) after every answer, then close our side for writing
        /// once they are written, and keep reading until the client closes.
        case sendShutdownNoticeAndHalfClose
        /// Close now.
        case close
    }

    private(set) var phase: Phase = .awaitingHello
    let timeouts: Timeouts
    private let openedAt: UInt64
    private var lastRead: UInt64
    /// When the first byte of the incomplete frame at the head of the input arrived.
    private var partialFrameSince: UInt64?
    /// Requests being scored off the event loop.
    private(set) var pending = 0
    /// When `draining`, `halfClosed` or `closing` began: the grace period counts from there.
    private var windingDownSince: UInt64 = 0

    init(timeouts: Timeouts, now: UInt64) {
        self.timeouts = timeouts
        openedAt = now
        lastRead = now
    }

    /// Whether a request read now is served; false once shutting down (it is answered `SHUTTING_DOWN`).
    var servesRequests: Bool { phase == .awaitingHello || phase == .open }

    /// Whether bytes read now are dropped unread (our side is closed or closing).
    var dropsInput: Bool { phase == .halfClosed || phase == .closing || phase == .closed }

    var helloDone: Bool { phase != .awaitingHello }

    mutating func helloCompleted() {
        if phase == .awaitingHello { phase = .open }
    }

    /// Bytes arrived and every complete frame among them was handled. `completedFrames` says how many;
    /// `partialFrame`, whether an incomplete frame is left buffered.
    mutating func read(now: UInt64, completedFrames: Int, partialFrame: Bool) {
        lastRead = now
        if !partialFrame {
            partialFrameSince = nil
        } else if completedFrames > 0 || partialFrameSince == nil {
            // The frame left over began in this read (any earlier partial frame was completed by it).
            partialFrameSince = now
        }
    }

    mutating func workStarted() {
        pending += 1
    }

    /// A request scored off the event loop was answered.
    mutating func workFinished(now: UInt64) -> Action {
        pending -= 1
        if phase == .draining && pending == 0 { return halfClose() }
        return .none
    }

    /// The server is shutting down.
    mutating func shutdownRequested(now: UInt64) -> Action {
        guard servesRequests else { return .none }
        windingDownSince = now
        if pending == 0 { return halfClose() }
        phase = .draining
        return .none
    }

    private mutating func halfClose() -> Action {
        phase = .halfClosed
        return .sendShutdownNoticeAndHalfClose
    }

    /// The handler queued an ERROR whose status closes the connection (from a frame it could not trust,
    /// or from `fail`).
    mutating func closingErrorQueued(now: UInt64) {
        guard phase != .closing && phase != .closed else { return }
        if phase != .halfClosed && phase != .draining { windingDownSince = now }
        phase = .closing
    }

    mutating func closed() {
        phase = .closed
    }

    /// The server is not reading this connection for a reason of its own (its memory budget, its own work
    /// in flight), between frames: the client is not idle, so the idle clock does not run meanwhile. (The
    /// server always reads a started frame to its end, so the frame clock only ever measures the client.)
    mutating func heldBackByServer(now: UInt64) {
        lastRead = now
    }

    /// The server needs the memory this connection holds in answers its client has not read for a while:
    /// close it (ERROR `TIMEOUT`), as the idle timeout would later.
    mutating func evict(now: UInt64, stalledFor: UInt64) -> Action {
        guard servesRequests else { return .none }
        return timedOut(now, "answers unread for \(stalledFor / 1_000_000) ms while the server's memory budget is in use; closing")
    }

    /// Checks the deadlines at `now`. The server calls it for every connection of an event loop a few
    /// times a second (one sweep per loop, no timer per connection), so a deadline is acted on within
    /// that period of passing.
    mutating func tick(now: UInt64) -> Action {
        func passed(_ since: UInt64, _ timeout: UInt64) -> Bool { timeout != 0 && now >= since &+ timeout }
        func ms(_ ns: UInt64) -> UInt64 { ns / 1_000_000 }
        switch phase {
        case .awaitingHello, .open:
            if phase == .awaitingHello && passed(openedAt, timeouts.hello) {
                return timedOut(now, "no HELLO within \(ms(timeouts.hello)) ms of connecting; closing")
            }
            if let since = partialFrameSince, passed(since, timeouts.frame) {
                return timedOut(now, "no complete frame within \(ms(timeouts.frame)) ms of its first byte; closing")
            }
            if pending == 0 && partialFrameSince == nil && passed(lastRead, timeouts.idle) {
                return timedOut(now, "idle for \(ms(timeouts.idle)) ms; closing")
            }
            return .none
        case .draining, .halfClosed, .closing:
            guard passed(windingDownSince, timeouts.grace) else { return .none }
            phase = .closed
            return .close
        case .closed:
            return .none
        }
    }

    private mutating func timedOut(_ now: UInt64, _ why: String) -> Action {
        windingDownSince = now
        phase = .closing
        return .fail(.timeout, why)
    }
}
