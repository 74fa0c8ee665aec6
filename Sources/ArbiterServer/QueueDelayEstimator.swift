/// How long a request waited — in the client's send buffer, the network and this server's socket — before
/// the server read it, from the client's send stamps (FrameHeader.sendStamp: its own clock, µs, low 32 bits).
///
/// The clocks are unrelated, so each difference `read − stamp` is their offset plus the wait. The smallest
/// difference seen lately is taken as the offset plus the shortest wait (close to zero on a connection that
/// is ever served promptly), and a request's wait is its difference less that. "Lately" is the last 10 to 20
/// seconds (two rotating windows), so that clock drift (about 100 ppm at worst) adds at most ~2 ms.
/// Differences are unwrapped across the 32-bit stamps' wrap (every ~71 minutes) by accumulating signed steps.
/// If a connection is only ever read late, the offset absorbs that lateness and waits are underestimated:
/// the error is never a shed request that did not wait.
struct QueueDelayEstimator {
    private var started = false
    private var lastDifference: UInt32 = 0
    private var unwrapped: Int64 = 0
    private var minCurrent = Int64.max
    private var minPrevious = Int64.max
    private var windowStart: UInt64 = 0
    static let window: UInt64 = 10_000_000_000

    /// The wait, in µs, of a request stamped `stamp` and read at `now` (server ns); nil if not stamped.
    mutating func observe(stamp: UInt32, now: UInt64) -> UInt64? {
        guard stamp != 0 else { return nil }
        let difference = UInt32(truncatingIfNeeded: now / 1_000) &- stamp
        if started {
            unwrapped += Int64(Int32(bitPattern: difference &- lastDifference))
        } else {
            started = true
            windowStart = now
        }
        lastDifference = difference
        if now &- windowStart >= Self.window {
            minPrevious = minCurrent
            minCurrent = .max
            windowStart = now
        }
        minCurrent = min(minCurrent, unwrapped)
        return UInt64(unwrapped - min(minCurrent, minPrevious))
    }
}
