import ArbiterClient
@testable import ArbiterServer
import ArbiterTestSupport
import ArbiterWire
import Foundation
import NIOCore
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// The two memory faults from the resilience review, against a real server: clients that make the server
/// hold memory on their behalf (compressed requests with large answers they never read; frames stopped one
/// byte short) stay within the server's budget, and a well-behaved client is still served meanwhile.
// Serialized: each test measures the process's resident memory.
@Suite(.serialized) struct MemoryBudgetTests {
    static let budget = 64 << 20

    static func config() -> ServerConfiguration {
        var c = Fixture.config()
        c.limits = Limits(maxFrameBytes: 4 << 20, maxCandidates: 10_000, maxInFlight: 1_024)
        c.memoryBudgetBytes = budget
        c.sweepIntervalMillis = 20
        c.frameTimeoutMillis = 60_000
        return c
    }

    /// This process's resident memory, in bytes.
    static func rss() -> Int {
        guard let text = try? String(contentsOfFile: "/proc/self/statm", encoding: .utf8),
              let pages = Int(text.split(separator: " ")[1]) else { return 0 }
        return pages * Int(sysconf(Int32(_SC_PAGESIZE)))
    }

    /// A well-behaved client gets an answer to a small SCORE: a RESULT, or OVERLOADED while the server
    /// sheds (never silence).
    static func wellBehavedClientIsAnswered(_ port: Int) throws -> Bool {
        let c = try RawConnection(port: port)
        try c.hello()
        guard try c.pingWorks() else { return false }
        c.send(Frame(requestID: 5, message: .score(Fixture.scoreRequest(n: 3))))
        guard let f = try c.readFrame() else { return false }
        if case .result = f.message { return true }
        if case .error(let e) = f.message { return e.status == .overloaded }
        return false
    }

    /// 300 SCOREs of 10,000 identical candidates: 1.2 MB each that zstd makes a few hundred bytes, whose
    /// RESULTs (about 250 KB each) the client never reads.
    static let compressedPipeline: ByteBuffer = {
        var body = ByteBuffer()
        let n = 10_000
        let request = ScoreRequest(model: "leads", context: Fixture.context, candidateIDs: (0..<n).map { _ in 7 },
                                   candidateFeatureCount: 6, candidateFeatures: (0..<n).flatMap { _ in Fixture.lead(0) })
        Message.score(request).encodeBody(into: &body)
        let packed = ZstdCodec().compress(body, allocator: ByteBufferAllocator())
        var frames = ByteBuffer()
        for id in 1...300 {
            FrameHeader(opcode: Opcode.score.rawValue, flags: .zstd, requestID: UInt64(id), bodyLength: UInt32(packed.readableBytes)).write(to: &frames)
            frames.writeImmutableBuffer(packed)
        }
        return frames
    }()

    @Test func compressedRequestsWithAnswersNobodyReadsStayWithinTheBudget() async throws {
        try await Fixture.withServer(Self.config()) { server, port in
            let frames = Self.compressedPipeline
            let before = Self.rss()
            var clients: [RawConnection] = []
            for _ in 0..<8 {
                let c = try RawConnection(port: port)
                try c.hello(compression: .zstd)
                c.send(Array(frames.readableBytesView))  // ~100 KB each: the kernel takes it all
                clients.append(c)
            }
            // Let the server do all it will do for them.
            try await Task.sleep(for: .seconds(2))
            let grown = Self.rss() - before
            let held = server.budget.bytesInUse
            #expect(held <= Self.budget + Self.budget / 4 + 8 * (4 << 20),
                    "the server holds \(held >> 20) MiB for them; the budget is \(Self.budget >> 20) MiB")
            // Before the budget, each such connection grew the server by ~340 MiB (2.7 GB for eight).
            #expect(grown < 512 << 20, "resident memory grew by \(grown >> 20) MiB")
            #expect(try Self.wellBehavedClientIsAnswered(port))
            withExtendedLifetime(clients) {}
        }
    }

    @Test func framesStoppedShortOfTheirEndStayWithinTheBudget() async throws {
        var config = Self.config()
        config.frameTimeoutMillis = 4_000
        try await Fixture.withServer(config) { server, port in
            // 40 connections each announce a 4 MiB SCORE and send all of it but the last byte: 160 MB that the
            // server would hold until the frame timeout.
            let bodyLength = (4 << 20) - 64
            var header = ByteBuffer()
            FrameHeader(opcode: Opcode.score.rawValue, requestID: 1, bodyLength: UInt32(bodyLength)).write(to: &header)
            let partial = Array(header.readableBytesView) + [UInt8](repeating: 0, count: bodyLength - 1)
            let before = Self.rss()
            var clients: [RawConnection] = []
            for _ in 0..<40 {
                let c = try RawConnection(port: port)
                try c.hello()
                // Sent from a thread: once the server stops reading, the kernel's buffers fill and send blocks.
                sendOnThread(c, partial)
                clients.append(c)
            }
            try await Task.sleep(for: .seconds(2))
            let grown = Self.rss() - before
            let held = server.budget.bytesInUse
            // Over the budget, connections that hold much stop reading: each may have one read more.
            #expect(held <= Self.budget + Self.budget / 4 + 40 * (1 << 20),
                    "the server holds \(held >> 20) MiB for them; the budget is \(Self.budget >> 20) MiB")
            #expect(grown < 256 << 20, "resident memory grew by \(grown >> 20) MiB")
            #expect(try Self.wellBehavedClientIsAnswered(port))
            // Their frame timeout closes them, which frees what they held.
            try await waitUntil("the budget is free again", seconds: 20) { server.budget.bytesInUse < 1 << 20 }
            // Measured once (debug build): resident 38 MiB before, 113 at the peak, 55 once freed, 43 after
            // a malloc_trim (since then, only a server that counts its process, as arbiterd does, trims).
            withExtendedLifetime(clients) {}
        }
    }

    /// arbiterd counts its whole process against the budget, not only what connections hold: eight clients
    /// pipelining compressed requests they never read the answers of kept a release build at ~390 MiB of
    /// heap under a 256 MiB budget that counted connections alone (allocator slack, answers growing by
    /// doubling, decompressed bodies); now its resident memory stays under the budget. (A debug build is
    /// slower and keeps less slack — measured heap peaks 38 MiB counting the process, 41–45 without, under
    /// 48 — so the release soak, bench/soak, is where the difference shows; the log line proves the process
    /// is counted.)
    @Test(.disabled(if: sanitized, "a sanitizer's allocator keeps freed memory (ASan's quarantine holds 256 MB): resident memory does not measure what the server holds"))
    func arbiterdsResidentMemoryStaysUnderItsBudget() async throws {
        // The budget is the process's idle size plus 48 MiB: a build with sanitizers starts far larger than a
        // plain one, and a budget the idle process already fills would hold every connection back.
        let idle = try await Self.idleResidentMiB()
        let budgetMiB = max(64, idle + 48)
        let (p, log) = try ArbiterdProcess.start(["--memory-budget-mib", "\(budgetMiB)", "--threads", "2"])
        defer { if p.isRunning { kill(p.processIdentifier, SIGKILL) } }
        let port = try await ArbiterdProcess.port(p, log)
        #expect(log.withLockedValue { $0.contains("memory budget \(budgetMiB) MiB (the process uses") }, "\(log.withLockedValue { $0 })")
        // 600 requests each, sent for as long as the server reads them.
        let frames = Array([[UInt8]](repeating: Array(Self.compressedPipeline.readableBytesView), count: 2).joined())
        var clients: [RawConnection] = []
        for _ in 0..<8 {
            let c = try RawConnection(port: port)
            try c.hello(compression: .zstd)
            sendOnThread(c, frames)
            clients.append(c)
        }
        var peak = 0
        for _ in 0..<40 {
            peak = max(peak, ArbiterdProcess.resident(p.processIdentifier))
            try await Task.sleep(for: .milliseconds(100))
        }
        #expect(peak > 0)
        // The test store is a few hundred KB: its pages, which the budget leaves out, do not matter here.
        #expect(peak <= budgetMiB << 20, "arbiterd's resident memory reached \(peak >> 20) MiB; its budget is \(budgetMiB) MiB")
        #expect(try serverStillAnswers(port))
        withExtendedLifetime(clients) {}
    }

    /// arbiterd's resident memory once it listens, idle, in MiB.
    static func idleResidentMiB() async throws -> Int {
        let (p, log) = try ArbiterdProcess.start(["--threads", "2"])
        defer { if p.isRunning { kill(p.processIdentifier, SIGKILL) } }
        _ = try await ArbiterdProcess.port(p, log)
        try await Task.sleep(for: .milliseconds(300))
        return ArbiterdProcess.resident(p.processIdentifier) >> 20
    }

    /// The budget samples the process: memory the process takes outside any connection counts against it.
    @Test func theProcessItselfCountsAgainstTheBudget() throws {
        let probe = MemoryBudget(limit: 1 << 30, countsProcess: true)
        let before = probe.processBytes
        #expect(before > 0)
        // A limit whose soft line (70%) is 32 MiB above what the process holds now.
        let budget = MemoryBudget(limit: (before + (32 << 20)) / 7 * 10, countsProcess: true)
        #expect(!budget.isExhausted, "\(budget.bytesInUse >> 20) MiB in use of \(budget.limit >> 20)")
        // 128 MiB mapped and touched outside malloc (whose freed memory a sanitizer's allocator would keep).
        let size = 128 << 20
        let block = try #require(mmap(nil, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0))
        memset(block, 1, size)  // resident now
        budget.sample()
        #expect(budget.isExhausted, "\(budget.bytesInUse >> 20) MiB in use of \(budget.limit >> 20)")
        munmap(block, size)
        budget.sample()
        #expect(!budget.isExhausted, "\(budget.bytesInUse >> 20) MiB in use of \(budget.limit >> 20) after freeing")
    }
}

/// Whether this process runs under AddressSanitizer or ThreadSanitizer (their runtimes define these).
let sanitized: Bool = dlsym(nil, "__asan_init") != nil || dlsym(nil, "__tsan_init") != nil
