import ArbiterClient
@testable import ArbiterServer
import ArbiterWire
import Testing

/// Send stamps: the server learns how long a request waited before it read it, counts that against the
/// budget, and sheds requests that waited too long.
struct QueueDelayTests {
    static let ms: UInt64 = 1_000_000

    @Test func theEstimatorFindsTheWaitWhateverTheClocksOffset() {
        var e = QueueDelayEstimator()
        #expect(e.observe(stamp: 0, now: 5 * Self.ms) == nil, "0 means not stamped")
        // The client's clock reads 1,000,000 µs ahead of the server's (any offset works, wrap included).
        let offset: UInt32 = 1_000_000
        func stamp(sentAtServerMicros t: UInt64) -> UInt32 { UInt32(truncatingIfNeeded: t) &+ offset }
        #expect(e.observe(stamp: stamp(sentAtServerMicros: 10_000), now: 10_050 * 1_000) == 0, "the first sets the base")
        #expect(e.observe(stamp: stamp(sentAtServerMicros: 20_000), now: 20_070 * 1_000) == 20)
        // A request that waited 300 ms.
        #expect(e.observe(stamp: stamp(sentAtServerMicros: 30_000), now: 330_050 * 1_000) == 300_000)
        // A faster one lowers the base.
        #expect(e.observe(stamp: stamp(sentAtServerMicros: 400_000), now: 400_010 * 1_000) == 0)
        #expect(e.observe(stamp: stamp(sentAtServerMicros: 500_000), now: 500_050 * 1_000) == 40)
    }

    @Test func stampsThatWrapAreUnwrapped() {
        var e = QueueDelayEstimator()
        // The client's 32-bit microsecond clock wraps between these two requests.
        let nearWrap = UInt32.max - 500
        #expect(e.observe(stamp: nearWrap, now: 1_000 * Self.ms) == 0)
        #expect(e.observe(stamp: nearWrap &+ 2_000, now: 1_002 * Self.ms + 5_000) == 5)
    }

    @Test func oldMinimaAgeOutSoDriftDoesNotAccumulate() {
        var e = QueueDelayEstimator()
        // The client's clock runs slow: each second the difference grows by 100 µs (100 ppm).
        for second in 0..<60 {
            let t = UInt64(second) * 1_000_000  // server µs
            let stamp = UInt32(truncatingIfNeeded: t - UInt64(second) * 100) &+ 7
            let wait = e.observe(stamp: stamp, now: t * 1_000)!
            #expect(wait <= 2_100, "after \(second) s the drift reads as a wait of \(wait) µs")
        }
    }

    @Test func aStampedRequestThatWaitedTooLongIsShedAndItsWaitCountsAgainstItsBudget() async throws {
        var config = Fixture.config()
        config.maxQueueMillis = 100
        try await Fixture.withServer(config) { _, port in
            let c = try RawConnection(port: port)
            try c.hello()
            // Promptly read requests set the connection's base.
            for _ in 0..<3 { #expect(try c.pingWorks()) }
            // Stamped 300 ms ago: it waited that long (as far as the server can tell) before it was read.
            var late = Frame(requestID: 11, message: .score(Fixture.scoreRequest(n: 3)))
            late.header.sendStamp = FrameHeader.sendStampNow() &- 300_000
            c.send(late)
            let why = try c.expectError(.overloaded, requestID: 11)
            // At least the 300 ms it was stamped with (more on a busy machine, never less).
            let waited = why.split(separator: " ").drop { $0 != "about" }.dropFirst().first.flatMap { Int($0) } ?? 0
            #expect(waited >= 299 && why.contains("limit of 100 ms"), "\(why)")
            // Stamped 60 ms ago with a 50 ms budget: the budget was spent before the read.
            var spent = Frame(requestID: 12, time: 50_000, message: .score(Fixture.scoreRequest(n: 3)))
            spent.header.sendStamp = FrameHeader.sendStampNow() &- 60_000
            c.send(spent)
            let why2 = try c.expectError(.deadlineExceeded, requestID: 12)
            #expect(why2.contains("over its budget of 50000 µs"), "\(why2)")
            // A fresh stamp is served.
            c.send(Frame(requestID: 13, time: 50_000, message: .score(Fixture.scoreRequest(n: 3))))
            let f = try #require(try c.readFrame())
            guard case .result = f.message else { Issue.record("expected RESULT, got \(f.message)"); return }
        }
    }
}
