@testable import ArbiterServer
import ArbiterWire
import Testing

/// The connection's life, event by event, with times given (ms → ns).
struct ConnectionStateMachineTests {
    static let timeouts = ConnectionStateMachine.Timeouts(hello: ms(5_000), idle: ms(60_000), frame: ms(10_000), grace: ms(3_000))

    static func ms(_ v: UInt64) -> UInt64 { v * 1_000_000 }
    func ms(_ v: UInt64) -> UInt64 { Self.ms(v) }

    func fresh(at t: UInt64 = 0) -> ConnectionStateMachine {
        ConnectionStateMachine(timeouts: Self.timeouts, now: ms(t))
    }

    func isTimeout(_ a: ConnectionStateMachine.Action, _ text: String) -> Bool {
        if case .fail(.timeout, let why) = a { return why.contains(text) }
        return false
    }

    @Test func helloMustComeInTime() {
        var sm = fresh()
        sm.read(now: ms(1_000), completedFrames: 1, partialFrame: false)  // a PING, say
        #expect(sm.tick(now: ms(4_999)) == .none)
        let a = sm.tick(now: ms(5_000))
        #expect(isTimeout(a, "no HELLO within 5000 ms"))
        #expect(sm.phase == .closing && sm.dropsInput)

        var ok = fresh()
        ok.helloCompleted()
        #expect(ok.tick(now: ms(5_000)) == .none, "after HELLO, only the idle timeout applies")
    }

    @Test func aStartedFrameMustComplete() {
        var sm = fresh()
        sm.helloCompleted()
        sm.read(now: ms(100), completedFrames: 0, partialFrame: true)
        // More bytes of the same frame do not restart its clock.
        sm.read(now: ms(9_000), completedFrames: 0, partialFrame: true)
        #expect(sm.tick(now: ms(10_099)) == .none)
        #expect(isTimeout(sm.tick(now: ms(10_100)), "no complete frame within 10000 ms of its first byte"))
    }

    @Test func aFrameCompletedRestartsTheClockForTheNextPartialOne() {
        var sm = fresh()
        sm.helloCompleted()
        sm.read(now: ms(0), completedFrames: 0, partialFrame: true)
        // The first frame completes at 9 s and the next one starts in the same read.
        sm.read(now: ms(9_000), completedFrames: 1, partialFrame: true)
        #expect(sm.tick(now: ms(18_999)) == .none)
        #expect(isTimeout(sm.tick(now: ms(19_000)), "no complete frame"))
    }

    @Test func idleConnectionsAreClosedButNotWhileTheServerWorks() {
        var sm = fresh()
        sm.helloCompleted()
        sm.read(now: ms(1_000), completedFrames: 1, partialFrame: false)
        sm.workStarted()
        #expect(sm.tick(now: ms(100_000)) == .none, "a request being scored is not idleness")
        #expect(sm.workFinished(now: ms(100_000)) == .none)
        sm.read(now: ms(100_000), completedFrames: 0, partialFrame: false)
        #expect(sm.tick(now: ms(159_999)) == .none)
        #expect(isTimeout(sm.tick(now: ms(160_000)), "idle for 60000 ms"))
        #expect(sm.tick(now: ms(160_001)) == .none, "one ERROR, then waiting for it to be written")
        #expect(sm.tick(now: ms(163_000)) == .close, "a client that does not read it is closed at the grace period's end")
        #expect(sm.phase == .closed)
    }

    @Test func shutdownWithNothingPendingSendsTheNoticeAtOnce() {
        var sm = fresh()
        sm.helloCompleted()
        #expect(sm.shutdownRequested(now: ms(1_000)) == .sendShutdownNoticeAndHalfClose)
        #expect(sm.phase == .halfClosed && sm.dropsInput && !sm.servesRequests)
        #expect(sm.shutdownRequested(now: ms(1_500)) == .none, "asked twice, acted once")
        #expect(sm.tick(now: ms(3_999)) == .none)
        #expect(sm.tick(now: ms(4_000)) == .close, "a client that never closes is closed after the grace period")
    }

    @Test func shutdownWaitsForWorkBeingScoredThenHalfCloses() {
        var sm = fresh()
        sm.helloCompleted()
        sm.workStarted()
        sm.workStarted()
        #expect(sm.shutdownRequested(now: ms(0)) == .none)
        #expect(sm.phase == .draining && !sm.servesRequests && !sm.dropsInput,
                "requests read while draining are read, and answered SHUTTING_DOWN")
        #expect(sm.workFinished(now: ms(100)) == .none)
        #expect(sm.workFinished(now: ms(200)) == .sendShutdownNoticeAndHalfClose)
        #expect(sm.tick(now: ms(2_999)) == .none, "the grace period counts from the shutdown, not the notice")
        #expect(sm.tick(now: ms(3_000)) == .close)
    }

    @Test func shutdownWhileWorkNeverEndsStillEndsAtTheGracePeriod() {
        var sm = fresh()
        sm.helloCompleted()
        sm.workStarted()
        #expect(sm.shutdownRequested(now: ms(0)) == .none)
        #expect(sm.tick(now: ms(3_000)) == .close)
    }

    @Test func aClosingErrorIsBoundedToo() {
        var sm = fresh()
        sm.helloCompleted()
        sm.closingErrorQueued(now: ms(10))
        #expect(sm.phase == .closing && sm.dropsInput)
        #expect(sm.shutdownRequested(now: ms(20)) == .none, "already closing")
        #expect(sm.tick(now: ms(3_009)) == .none)
        #expect(sm.tick(now: ms(3_010)) == .close)
    }

    @Test func zeroMeansNoTimeout() {
        var sm = ConnectionStateMachine(timeouts: .init(hello: 0, idle: 0, frame: 0, grace: ms(1)), now: 0)
        sm.read(now: 0, completedFrames: 0, partialFrame: true)
        #expect(sm.tick(now: .max / 2) == .none)
    }

    @Test func heldBackByTheServerTheIdleClockWaits() {
        var sm = fresh()
        sm.helloCompleted()
        sm.read(now: ms(0), completedFrames: 1, partialFrame: false)
        sm.heldBackByServer(now: ms(50_000))
        #expect(sm.tick(now: ms(100_000)) == .none, "idle counts from when the server let go, not from the last read")
        #expect(isTimeout(sm.tick(now: ms(110_000)), "idle for 60000 ms"))
    }

    @Test func evictionClosesWithATimeoutOnce() {
        var sm = fresh()
        sm.helloCompleted()
        #expect(isTimeout(sm.evict(now: ms(5), stalledFor: ms(1_500)), "answers unread for 1500 ms"))
        #expect(sm.evict(now: ms(6), stalledFor: ms(1_501)) == .none, "already closing")
        #expect(sm.tick(now: ms(3_005)) == .close, "and closed at the grace period's end if the ERROR is never read")
    }
}
