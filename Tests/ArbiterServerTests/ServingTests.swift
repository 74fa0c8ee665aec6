import ArbiterClient
import ArbiterModels
import ArbiterServer
import ArbiterStore
import ArbiterTraining
import ArbiterWire
import Foundation
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

            // The same numbers as the model computes directly from the store.
            let env = try StoreEnvironment.open(path: Fixture.store, configuration: StoreConfiguration(mapSize: 1 << 30))
            let model = try BuiltinPlugins.registry().load(LoadedVersion(environment: env, model: "leads"))
            let direct = model.score(context: req.context, candidates: req.candidateFeatures, candidateCount: 20)
            #expect(r.scores == direct.scores)
            guard case .float32(let pHire) = r.columns[2].values, case .code(let grades) = r.columns[3].values else {
                Issue.record("unexpected column kinds"); return
            }
            #expect(pHire == r.scores)
            #expect(grades == direct.codeColumns)
            #expect(r.columns[3].labels == ["A", "B", "C", "D"])
            for i in 0..<20 {
                guard case .float32(let pc) = r.columns[0].values, case .float32(let pi) = r.columns[1].values else { return }
                #expect(pc[i] >= pi[i] && pi[i] >= pHire[i], "chained probabilities must not increase")
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

    @Test func shutdownAnswersWhatWasReadThenCloses() async throws {
        let server = try ArbiterServer(configuration: Fixture.config())
        try await server.start()
        let port = server.port!
        let c = try RawConnection(port: port)
        try c.hello()
        var frames = ByteBuffer()
        for i in 0..<50 { Frame(requestID: UInt64(i), message: .score(Fixture.scoreRequest(n: 10))).encode(into: &frames) }
        c.send(Array(frames.readableBytesView))
        // Once the first answer is here the server is working through what it read; stop it now.
        let first = try #require(try c.readFrame())
        guard case .result = first.message else { Issue.record("expected RESULT, got \(first.message)"); return }
        try await server.shutdown()
        var answered = 1
        while let f = try c.readFrame() {
            guard case .result = f.message else { Issue.record("expected RESULT, got \(f.message)"); return }
            answered += 1
        }
        // Every answer that came was complete, and the connection then closed cleanly.
        #expect(answered >= 1 && answered <= 50)
        #expect(throws: (any Error).self) { try RawConnection(port: port) }
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
            try await Task.sleep(for: .milliseconds(20))
            #expect(try await client.score(Fixture.scoreRequest(n: 3)).version == 2)

            // Version 3 lies in its golden outputs: it must not serve; v2 keeps serving.
            var bad = trained
            bad.golden[0].scores[0] += 0.5
            try LeadGradingTrainer.publish(bad, model: "leads", catalog: catalog)
            try await server.reload()
            try await Task.sleep(for: .milliseconds(20))
            #expect(try await client.score(Fixture.scoreRequest(n: 3)).version == 2)

            // Rolling back is one activation.
            try catalog.activate(model: "leads", version: 1)
            try await server.reload()
            try await Task.sleep(for: .milliseconds(20))
            #expect(try await client.score(Fixture.scoreRequest(n: 3)).version == 1)
            try await client.close()
        }
    }
}
