import Foundation
import Testing

@testable import ArbiterCluster

/// The host-wide download slots (flock on shared lock files): held ones are not handed out again until
/// released, a wait ends, bad configurations are refused.
@Suite struct DownloadSlotsTests {
    static func directory() throws -> String {
        let dir = NSTemporaryDirectory() + "arbiter-slots-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        return dir
    }

    @Test func slotsAreHeldUntilReleasedAndAWaitEnds() async throws {
        let dir = try Self.directory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var slots = try DownloadSlots(path: dir + "/slot", count: 2)
        slots.maximumWait = .milliseconds(150)
        slots.pollInterval = .milliseconds(10)
        let a = try await slots.acquire()
        let b = try await slots.acquire()
        #expect(a.slot != nil && b.slot != nil && a.slot != b.slot)
        // Both held (flock conflicts between open files even in one process): the third waits, then goes without.
        let c = try await slots.acquire()
        #expect(c.slot == nil)
        #expect(c.waited >= .milliseconds(150))
        c.release()
        b.release()
        let d = try await slots.acquire()
        #expect(d.slot == b.slot)
        #expect(d.waited < .milliseconds(150))
        // A waiter takes a slot as soon as it is released.
        slots.maximumWait = .seconds(10)
        let patient = slots
        let waiter = Task { try await patient.acquire() }
        try await Task.sleep(for: .milliseconds(50))
        a.release()
        let e = try await waiter.value
        #expect(e.slot == a.slot)
        d.release()
        e.release()
    }

    @Test func releasingTwiceLeavesAReusedDescriptorAloneAndDroppingReleases() async throws {
        let dir = try Self.directory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var slots = try DownloadSlots(path: dir + "/slot", count: 1)
        slots.maximumWait = .milliseconds(100)
        slots.pollInterval = .milliseconds(10)
        let a = try await slots.acquire()
        #expect(a.slot == 0 && a.isHeld)
        a.release()
        #expect(!a.isHeld)
        // The lowest free number is the one just closed: this file most likely takes it (tests running beside
        // this one may take it first; then this check proves less, but it never fails wrongly).
        let other = open(dir + "/other", O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        #expect(other >= 0)
        a.release()
        #expect(fcntl(other, F_GETFD) >= 0, "a second release closed a descriptor it no longer owned")
        close(other)
        // A held slot whose last reference goes is released.
        do {
            let dropped = try await slots.acquire()
            #expect(dropped.slot == 0)
        }
        let again = try await slots.acquire()
        #expect(again.slot == 0)
        again.release()
    }

    @Test func badConfigurationsAreRefused() throws {
        let dir = try Self.directory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        #expect(throws: ClusterError.self) { try DownloadSlots(path: dir + "/slot", count: 0) }
        #expect(throws: ClusterError.self) { try DownloadSlots(path: dir + "/missing/slot", count: 1) }
    }
}
