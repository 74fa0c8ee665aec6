import ArbiterClient
import ArbiterModels
@testable import ArbiterServer
import ArbiterStore
import ArbiterTestSupport
import ArbiterTraining
import ArbiterWire
import Foundation
import NIOConcurrencyHelpers
import NIOCore
import Testing

/// What a calling service sees when everything is right.
@Suite struct ServingTests {
    @Test func scoresMatchTheModelAndCarryGrades() async throws {
        try await Fixture.withServer { _, port in
            let client = try await ArbiterClient.connect(port: port)
            let models = try await client.listModels()
            #expect(models.map(\.name) == ["leads"])
            #expect(models.first?.kind == "lead-grading")
            let schema = try await client.modelInfo("leads")
            #expect(schema.contextFeatures.map(\.name) == ["job_category", "job_salary"])
            #expect(schema.candidateFeatures.count == 6)
            #expect(schema.outputs.map(\.name) == ["p_contact", "p_interview", "p_hire", "grade"])

            let req = Fixture.scoreRequest(n: 20)
            let r = try await client.score(req)
            #expect(r.version == schema.version)
            #expect(r.ids == req.candidateIDs)
            #expect(!r.sorted)

            // The numbers an independent computation (the FM's pairwise definition, in Double) gives for the
            // stored parameters.
            let env = try StoreEnvironment.open(path: Fixture.store)
            let reference = try ReferenceLeadGrading(version: LoadedVersion(environment: env, model: "leads"))
            guard case .float32(let pContact) = r.columns[0].values, case .float32(let pInterview) = r.columns[1].values,
                  case .float32(let pHire) = r.columns[2].values, case .code(let grades) = r.columns[3].values else {
                Issue.record("unexpected column kinds"); return
            }
            #expect(pHire == r.scores)
            #expect(r.columns[3].labels == ["A", "B", "C", "D"])
            for i in 0..<20 {
                let row = Array(req.candidateFeatures[(i * 6)..<(i * 6 + 6)])
                let want = reference.score(context: req.context, candidate: row)
                #expect(abs(Double(pContact[i]) - want.pContact) < 1e-5)
                #expect(abs(Double(pInterview[i]) - want.pInterview) < 1e-5)
                #expect(abs(Double(pHire[i]) - want.pHire) < 1e-5)
                if !reference.nearThreshold(want.pHire) { #expect(grades[i] == want.grade) }
            }
            try await client.close()
        }
    }

    @Test func topKReturnsTheBestFirst() async throws {
        try await Fixture.withServer { _, port in
            let client = try await ArbiterClient.connect(port: port)
            let all = try await client.score(Fixture.scoreRequest(n: 50))
            let top = try await client.score(Fixture.scoreRequest(n: 50, topK: 5))
            #expect(top.sorted)
            #expect(top.ids.count == 5)
            let expected = zip(all.ids, all.scores).sorted { $0.1 > $1.1 || ($0.1 == $1.1 && $0.0 < $1.0) }.prefix(5)
            #expect(top.ids == expected.map(\.0))
            #expect(top.scores == expected.map(\.1))
            let more = try await client.score(Fixture.scoreRequest(n: 3, topK: 10))
            #expect(more.ids.count == 3)
            let none = try await client.score(Fixture.scoreRequest(n: 0))
            #expect(none.ids.isEmpty)
            try await client.close()
        }
    }

    @Test func oneConnectionPipelinesManyRequests() async throws {
        try await Fixture.withServer { _, port in
            let client = try await ArbiterClient.connect(port: port)
            try await withThrowingTaskGroup(of: (Int, ScoreResult).self) { group in
                for i in 0..<200 {
                    group.addTask { (i, try await client.score(Fixture.scoreRequest(n: 1 + i % 7))) }
                }
                var seen = 0
                for try await (i, r) in group {
                    #expect(r.ids.count == 1 + i % 7)
                    seen += 1
                }
                #expect(seen == 200)
            }
            try await client.close()
        }
    }

    @Test func aLargeRequestIsAnsweredAfterTheSmallOnesBehindIt() async throws {
        var config = Fixture.config()
        config.limits = Limits(maxFrameBytes: 4 << 20, maxCandidates: 50_000, maxInFlight: 8)
        config.offloadCandidates = 1_000
        try await Fixture.withServer(config) { _, port in
            let c = try RawConnection(port: port)
            try c.hello()
            var frames = ByteBuffer()
            Frame(requestID: 1, message: .score(Fixture.scoreRequest(n: 20_000))).encode(into: &frames)
            Frame(requestID: 2, message: .ping([1])).encode(into: &frames)
            Frame(requestID: 3, message: .score(Fixture.scoreRequest(n: 3))).encode(into: &frames)
            c.send(Array(frames.readableBytesView))
            var order: [UInt64] = []
            for _ in 0..<3 {
                let f = try #require(try c.readFrame())
                order.append(f.header.requestID)
                if f.header.requestID == 1 {
                    guard case .result(let r) = f.message else { Issue.record("expected RESULT, got \(f.message)"); return }
                    #expect(r.ids.count == 20_000)
                }
            }
            #expect(order == [2, 3, 1], "the small requests must not wait behind the large one")
            // Its values are checked like any other request's.
            var bad = Fixture.scoreRequest(n: 2_000)
            bad.candidateFeatures[1_000] = .nan
            c.send(Frame(requestID: 4, message: .score(bad)))
            _ = try c.expectError(.invalidFeature, requestID: 4)
            #expect(try c.pingWorks())
        }
    }

    @Test func compressionNegotiatedEndToEnd() async throws {
        try await Fixture.withServer { _, port in
            var cfg = ClientConfiguration()
            cfg.compression = true
            cfg.compressionThreshold = 256
            let client = try await ArbiterClient.connect(port: port, configuration: cfg)
            #expect(client.session.compression == .zstd)
            let r = try await client.score(Fixture.scoreRequest(n: 100))
            #expect(r.ids.count == 100)
            try await client.close()
        }
    }

    @Test func anExpiredDeadlineIsRefused() async throws {
        try await Fixture.withServer { _, port in
            let c = try RawConnection(port: port)
            try c.hello()
            // A budget of 1 µs cannot be met once queueing is measured.
            var frames = ByteBuffer()
            for i in 0..<50 {
                Frame(requestID: UInt64(100 + i), time: 1, message: .score(Fixture.scoreRequest(n: 100))).encode(into: &frames)
            }
            c.send(Array(frames.readableBytesView))
            var exceeded = 0
            for _ in 0..<50 {
                let f = try #require(try c.readFrame())
                if case .error(let e) = f.message {
                    #expect(e.status == .deadlineExceeded)
                    exceeded += 1
                }
            }
            #expect(exceeded > 0)
            #expect(try c.pingWorks())
        }
    }

    /// A request being scored when shutdown begins is answered in full before the connection closes. The
    /// request waits at a gate inside the model until the server has stopped accepting connections, so the
    /// order of events is fixed.
    @Test func shutdownAnswersWhatWasReadThenCloses() async throws {
        let dir = temporaryPath("shutdown")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try GateModel.publish(store: dir)
        let gate = Gate()
        var config = Fixture.config(store: dir)
        config.offloadCandidates = 2
        let server = try ArbiterServer(configuration: config, registry: GateModel.registry(gate))
        try await server.start()
        let port = server.port!
        let c = try RawConnection(port: port)
        try c.hello()
        var frames = ByteBuffer()
        // Request 1 (two candidates, scored on the pool) waits at the gate; 3 and 4 are scored inline.
        Frame(requestID: 1, message: .score(ScoreRequest(model: "gate", context: [1], candidateIDs: [10, 11],
                                                         candidateFeatureCount: 1, candidateFeatures: [0.5, 0.75]))).encode(into: &frames)
        for id: UInt64 in [3, 4] {
            Frame(requestID: id, message: .score(ScoreRequest(model: "gate", context: [0], candidateIDs: [id],
                                                               candidateFeatureCount: 1, candidateFeatures: [0.125]))).encode(into: &frames)
        }
        c.send(Array(frames.readableBytesView))
        for id: UInt64 in [3, 4] {
            let f = try #require(try c.readFrame())
            #expect(f.header.requestID == id)
        }
        try await waitUntil("the held request reaches the gate") { gate.waiting > 0 }

        let stopping = Task { try await server.shutdown() }
        // Shutdown has begun once the port refuses connections; the connection then learns it should close.
        try await waitUntil("the port refuses connections") { (try? RawConnection(port: port)) == nil }
        try await Task.sleep(for: .milliseconds(100))
        gate.open()

        let f = try #require(try c.readFrame(), "the connection closed before the request in flight was answered")
        #expect(f.header.requestID == 1)
        guard case .result(let r) = f.message else { Issue.record("expected RESULT, got \(f.message)"); return }
        #expect(r.ids == [10, 11])
        #expect(r.scores == [0.5, 0.75])
        // Then the server says it is closing (ERROR SHUTTING_DOWN, request id 0), ends its side cleanly (end
        // of stream, not a reset), and shutdown completes once the client closes too.
        let notice = try #require(try c.readFrame())
        #expect(notice.header.requestID == 0)
        guard case .error(let e) = notice.message else { Issue.record("expected ERROR, got \(notice.message)"); return }
        #expect(e.status == .shuttingDown)
        #expect(try c.readFrame() == nil)
        c.shutdownWrite()
        try await stopping.value
    }

    @Test func aNewlyPublishedVersionIsSwappedInAndABadOneNeverServes() async throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("arbiter-swap-\(UUID())").path
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let env = try StoreEnvironment.open(path: dir, configuration: StoreConfiguration(mapSize: 1 << 30, create: true))
        var o = FMTrainingOptions()
        o.maxEpochs = 2
        let trained = try LeadGradingTrainer.train(rows: LeadData.generate(rows: 1500, seed: 3), options: o)
        let catalog = Catalog(environment: env)
        try LeadGradingTrainer.publish(trained, model: "leads", catalog: catalog)
        try await Fixture.withServer(Fixture.config(store: dir)) { server, port in
            let client = try await ArbiterClient.connect(port: port)
            #expect(try await client.score(Fixture.scoreRequest(n: 3)).version == 1)

            try LeadGradingTrainer.publish(trained, model: "leads", catalog: catalog)
            try await server.reload()
            #expect(try await client.score(Fixture.scoreRequest(n: 3)).version == 2)

            // Version 3 lies in its golden outputs: it must not serve; v2 keeps serving.
            var bad = trained
            bad.golden[0].scores[0] += 0.5
            try LeadGradingTrainer.publish(bad, model: "leads", catalog: catalog)
            try await server.reload()
            #expect(try await client.score(Fixture.scoreRequest(n: 3)).version == 2)
            // The server recorded its verdicts in the store, for `arbiter-train versions`.
            server.waitForStoreRecords()
            let verdicts = try catalog.versions(model: "leads").map { $0.validation?.outcome }
            #expect(verdicts == [.passed, .passed, .rejected])
            let rejection = try #require(try catalog.validation(model: "leads", version: 3))
            #expect(rejection.reason?.contains("golden") == true, "\(rejection.reason ?? "")")
            #expect(rejection.by.hasPrefix("arbiterd pid "))
            #expect(try catalog.versions(model: "leads")[2].isActive, "a verdict never changes which version is active")

            // Rolling back is one activation.
            try catalog.activate(model: "leads", version: 1)
            try await server.reload()
            #expect(try await client.score(Fixture.scoreRequest(n: 3)).version == 1)
            try await client.close()
        }
    }

    /// `reload()` returns only once every event loop serves the new table, so a request sent after it
    /// returns is answered by the new version. The loops are held busy while the loader swaps.
    @Test func reloadReturnsOnceEveryLoopServesTheNewVersion() async throws {
        let dir = temporaryPath("reload")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let env = try StoreEnvironment.open(path: dir, configuration: StoreConfiguration(mapSize: 1 << 30, create: true))
        var o = FMTrainingOptions()
        o.maxEpochs = 1
        let trained = try LeadGradingTrainer.train(rows: LeadData.generate(rows: 800, seed: 4), options: o)
        let catalog = Catalog(environment: env)
        try LeadGradingTrainer.publish(trained, model: "leads", catalog: catalog)
        try await Fixture.withServer(Fixture.config(store: dir)) { server, port in
            try LeadGradingTrainer.publish(trained, model: "leads", catalog: catalog)
            let gate = Gate()
            let loops = Array(server.group.makeIterator())
            for loop in loops { loop.execute { gate.pass() } }
            try await waitUntil("every loop is held") { gate.waiting == loops.count }

            let returned = NIOLockedValueBox(false)
            let reloading = Task {
                try await server.reload()
                returned.withLockedValue { $0 = true }
            }
            // The loader has built the new table (admin paths see it), but no loop can take it while held.
            try await waitUntil("the loader builds the new table") { server.served.first?.version == 2 }
            try await Task.sleep(for: .milliseconds(50))
            #expect(!returned.withLockedValue { $0 }, "reload() returned while the event loops still served v1")
            gate.open()
            try await reloading.value
            // Connections land on every loop; each is answered by v2.
            for _ in 0..<(2 * loops.count) {
                let client = try await ArbiterClient.connect(port: port)
                #expect(try await client.score(Fixture.scoreRequest(n: 2)).version == 2)
                try await client.close()
            }
        }
    }
}
