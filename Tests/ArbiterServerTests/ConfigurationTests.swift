@testable import ArbiterServer
import Foundation
import NIOCore
import NIOConcurrencyHelpers
import Testing
#if canImport(Glibc)
import Glibc
#endif

@Suite struct ConfigurationTests {
    /// A server started under `taskset -c N` gets one event loop, not one per core of the machine.
    @Test func defaultThreadsFollowTheAffinityMask() throws {
        #if os(Linux)
        let unrestricted = ServerConfiguration.usableCores()
        #expect(unrestricted >= 1 && unrestricted <= max(System.coreCount, 1))
        // On a thread of its own pinned to the first CPU it may use, the default drops to one.
        let seen = ThreadBox()
        let done = DispatchSemaphore(value: 0)
        let t = Thread {
            var mask = [UInt64](repeating: 0, count: 16)
            var pinned = mask.withUnsafeMutableBytes { testSchedAffinity(get: true, $0) } == 0
            if let word = mask.firstIndex(where: { $0 != 0 }) {
                let lowest = mask[word] & (~mask[word] &+ 1)
                for i in mask.indices { mask[i] = i == word ? lowest : 0 }
                pinned = pinned && mask.withUnsafeMutableBytes { testSchedAffinity(get: false, $0) } == 0
            } else {
                pinned = false
            }
            seen.set(pinned ? ServerConfiguration(storePath: "/unused").threads : -1)
            done.signal()
        }
        t.start()
        done.wait()
        #expect(seen.value == 1)
        #endif
    }
}

private final class ThreadBox: Sendable {
    private let v = NIOLockedValueBox(0)
    func set(_ x: Int) { v.withLockedValue { $0 = x } }
    var value: Int { v.withLockedValue { $0 } }
}

#if os(Linux)
@_silgen_name("sched_setaffinity")
private func testSchedSetaffinity(_ pid: Int32, _ size: Int, _ mask: UnsafeMutableRawPointer) -> Int32
@_silgen_name("sched_getaffinity")
private func testSchedGetaffinity(_ pid: Int32, _ size: Int, _ mask: UnsafeMutableRawPointer) -> Int32

/// The calling thread's CPU mask, read (`get`) or written.
private func testSchedAffinity(get: Bool, _ mask: UnsafeMutableRawBufferPointer) -> Int32 {
    get ? testSchedGetaffinity(0, mask.count, mask.baseAddress!) : testSchedSetaffinity(0, mask.count, mask.baseAddress!)
}
#endif

/// The work beside the event loops yields the cores to them: the loader in SCHED_IDLE (a waking loop takes its
/// core back at once), the records thread at the configured nice value on a thread of its own (a dispatch
/// queue ran them on a pool thread at nice -4, above the loops) — and with `backgroundNice` 0, both as the
/// loops run.
@Suite struct BackgroundPriorityTests {
    @Test func loaderIdlesAndRecordsAreNiced() async throws {
        #if os(Linux)
        var config = Fixture.config()
        config.backgroundNice = 10
        try await Fixture.withServer(config) { server, _ in
            let s = try await server.backgroundScheduling()
            #expect(s.loader.policy == 5)   // SCHED_IDLE
            #expect(s.records == ThreadScheduling(policy: 0, nice: 10))
        }
        try await Fixture.withServer(Fixture.config()) { server, _ in
            let s = try await server.backgroundScheduling()
            #expect(s.loader == ThreadScheduling(policy: 0, nice: 0))
            #expect(s.records == ThreadScheduling(policy: 0, nice: 0))
        }
        #endif
    }
}
