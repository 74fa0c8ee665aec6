import ArbiterClient
import ArbiterModels
import ArbiterStore
@testable import ArbiterServer
import ArbiterTestSupport
import ArbiterWire
import Foundation
import NIOConcurrencyHelpers
import NIOCore
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Offered three times what it can serve, the server sheds what waited too long with OVERLOADED and keeps
/// the latency of what it accepts bounded, instead of answering everything later and later.
///
/// The model busy-waits 2 ms per SCORE on one event loop: capacity is about 500/s whatever the machine, and
/// the client offers 1,500/s for 3 s. Without shedding the queue would grow by ~1,000 requests a second and
/// the last answers would come seconds late; with `maxQueueMillis` 50 an accepted request waited at most
/// ~50 ms before it was scored, and its answer is written within a millisecond of being ready. Measured here
/// (debug build, 2 cores): 1,462 accepted, 3,038 shed, accepted p99 52 ms. The bound checked, 500 ms, is far
/// below what an unshed queue reaches and far above that: it tells the two behaviours apart, it does not
/// measure speed.
@Suite struct OverloadTests {
    static let kind = "slow"

    static func registry() -> ModelRegistry {
        var r = ModelRegistry()
        r.register(kind: kind) { v, m in
            ScriptedModel(version: v, manifest: m) { batch, out in
                let until = DispatchTime.now().uptimeNanoseconds + 2_000_000
                while DispatchTime.now().uptimeNanoseconds < until {}
                for i in 0..<batch.candidateCount { out.scores[i] = batch.candidates[i] }
            }
        }
        return r
    }

    @Test func threeTimesCapacityIsShedAndAcceptedLatencyStaysBounded() async throws {
        let dir = temporaryPath("overload")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        do {
            let env = try StoreEnvironment.open(path: dir, configuration: StoreConfiguration(mapSize: 64 << 20, create: true))
            let golden = GoldenCase(context: [0], candidates: [0.5], candidateCount: 1, scores: [0.5], floatColumns: [], codeColumns: [])
            let manifest = ModelManifest(kind: Self.kind, schema: FeatureSchema(context: [.numeric("x")], candidate: [.numeric("y")], outputs: []),
                                         parameters: [:], golden: [golden])
            try Catalog(environment: env).publish(model: "slow", kind: Self.kind, manifest: manifest.encoded(), tensors: [], metrics: [:])
        }
        var config = Fixture.config(store: dir)
        config.threads = 1
        config.offloadCandidates = 0
        config.maxQueueMillis = 50
        config.shutdownGraceMillis = 1_000
        let server = try ArbiterServer(configuration: config, registry: Self.registry())
        try await server.start()
        let port = server.port!

        let c = try RawConnection(port: port)
        try c.hello()
        // Send times by request id; results: (latency ns, status).
        let sentAt = NIOLockedValueBox([UInt64: UInt64]())
        let outcomes = NIOLockedValueBox((accepted: [UInt64](), overloaded: 0, other: 0, firstOther: ""))
        let total = 4_500, handed = Handed(value: c)
        let reader = Thread {
            for _ in 0..<total {
                guard let f = try? handed.value.readFrame() else { return }
                let now = DispatchTime.now().uptimeNanoseconds
                let sent = sentAt.withLockedValue { $0[f.header.requestID] } ?? now
                outcomes.withLockedValue { o in
                    switch f.message {
                    case .result: o.accepted.append(now - sent)
                    case .error(let e) where e.status == .overloaded: o.overloaded += 1
                    default:
                        if o.other == 0 { o.firstOther = "\(f.message)" }
                        o.other += 1
                    }
                }
            }
        }
        reader.start()
        let held = Handed(value: c)
        let sender = Thread {
            let start = DispatchTime.now().uptimeNanoseconds
            for i in 0..<total {
                let due = start + UInt64(i) * 1_000_000_000 / 1_500
                while DispatchTime.now().uptimeNanoseconds < due { usleep(100) }
                var b = ByteBuffer()
                var frame = Frame(requestID: UInt64(i + 1), message: .score(ScoreRequest(model: "slow", context: [0], candidateIDs: [1],
                                                                                          candidateFeatureCount: 1, candidateFeatures: [0.5])))
                frame.header.sendStamp = FrameHeader.sendStampNow()
                frame.encode(into: &b)
                sentAt.withLockedValue { $0[UInt64(i + 1)] = DispatchTime.now().uptimeNanoseconds }
                guard sendAll(held.value, Array(b.readableBytesView)) else { return }
            }
        }
        sender.start()
        try await waitUntil("every request is answered", seconds: 60) {
            outcomes.withLockedValue { $0.accepted.count + $0.overloaded + $0.other } == total
        }
        let o = outcomes.withLockedValue { $0 }
        let sorted = o.accepted.sorted()
        let p99 = sorted.isEmpty ? 0 : sorted[min(sorted.count - 1, sorted.count * 99 / 100)]
        #expect(o.other == 0, "\(o.firstOther)")
        #expect(o.overloaded > total / 4, "shed \(o.overloaded) of \(total)")
        // Some are served (how many depends on the machine: under ThreadSanitizer, a few hundred).
        #expect(o.accepted.count > 0, "accepted \(o.accepted.count)")
        // The bound tells a queue that sheds (tens of ms) from one that grows with the backlog (seconds). Under
        // the sanitizers the whole test process stalls for longer than that while other suites compute, so
        // there the latency measures the process, not the server: only the shedding is checked.
        if !sanitized {
            #expect(p99 < 500_000_000, "accepted p99 \(p99 / 1_000_000) ms (accepted \(o.accepted.count), shed \(o.overloaded))")
        }
        c.shutdownWrite()
        try await server.shutdown()
        withExtendedLifetime(c) {}
    }
}
