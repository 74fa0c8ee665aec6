import Allocation
import ArbiterClient
import ArbiterModels
import ArbiterServer
import ArbiterStore
import ArbiterTestSupport
import ArbiterTraining
import ArbiterWire
import Foundation
import Testing

/// An allocation version served over the wire: a request of leads and agents larger than the server's own
/// candidate limit (the version sets its own) is answered off the event loop exactly as the model answers it;
/// one over the version's limit, or with an id repeated, is refused by name and the connection carries on.
@Suite struct AllocationServingTests {
    static let schema = AllocationLayout.defaultSchema(cities: 4, categories: 6)

    static func version() -> AllocationVersion {
        var r = SplitMix64(seed: 8)
        let rules = AllocationLayout.defaultRules(schema)
        let (lead, agent) = AllocationLayout.sides(schema, rules)
        let fields = (lead + agent).map { schema.candidate[$0] }
        let d = FieldEncoding(fields: fields).dimension
        var norm = [Float](repeating: 0, count: 2 * fields.count)
        for j in fields.indices { norm[2 * j + 1] = 1 }
        var v = AllocationVersion(schema: schema, rules: rules,
                                  machine: FMParameters(bias: -2, linear: (0..<d).map { _ in Float(r.normal() * 0.5) },
                                                        factors: (0..<(2 * d)).map { _ in Float(r.normal() * 0.3) }, factorCount: 2),
                                  norm: norm)
        v.maxCandidates = 3_000
        // The exact search must finish on both sides of the comparison: under the default 1,300 ms deadline a
        // slow build (ThreadSanitizer, 5-15x slower) placed some leads greedily on one side and not the other.
        v.deadlineMilliseconds = 600_000
        return v
    }

    /// `leads` leads then `agents` agents; ids 1 + row.
    static func request(leads: Int, agents: Int) -> AllocationRequest {
        var r = SplitMix64(seed: 3)
        var rows: [Float] = []
        for i in 0..<(leads + agents) {
            if i < leads {
                rows += [0, 1, Float(r.next() % 4), Float(r.next() % 6), Float(r.uniform()), Float(r.next() % 8), .nan, .nan, .nan, .nan]
            } else {
                rows += [1, Float(r.next() % 5), Float(r.next() % 4), .nan, .nan, .nan, Float(r.next() % 64), Float(r.next() % 6), Float(r.normal()), Float(r.next() % 9)]
            }
        }
        return AllocationRequest(context: [0.02], rows: rows, count: leads + agents, ids: (0..<(leads + agents)).map { UInt64($0 + 1) })
    }

    @Test func anAllocationLargerThanTheServersLimitIsServedAsTheModelAnswersIt() async throws {
        let dir = temporaryPath("allocation-serving")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let env = try StoreEnvironment.open(path: dir, configuration: StoreConfiguration(mapSize: 1 << 28, create: true))
        let v = Self.version()
        let golden = try v.goldenCases([Self.request(leads: 30, agents: 8)])
        try v.publish(model: "alloc", golden: golden, catalog: Catalog(environment: env))
        let model = try v.model()
        var config = Fixture.config(store: dir)
        config.limits = Limits(maxFrameBytes: 4 << 20, maxCandidates: 100, maxInFlight: 64)

        try await Fixture.withServer(config) { _, port in
            let client = try await ArbiterClient.connect(port: port)
            let schema = try await client.modelInfo("alloc")
            #expect(schema.kind == "allocation")
            #expect(schema.candidateFeatures.count == Self.schema.candidate.count)
            #expect(schema.outputs.map(\.name) == ["agent_1", "p_1", "load", "shadow_price", "objective", "greedy_objective", "allocation"])
            // 2,400 leads and 500 agents: over the server's 100, within the version's 3,000.
            let q = Self.request(leads: 2_400, agents: 500)
            let want = try model.score(context: q.context, candidates: q.rows, candidateCount: q.count, ids: q.ids)
            func ask(_ q: AllocationRequest) async throws -> ScoreResult {
                try await client.score(ScoreRequest(model: "alloc", context: q.context, candidateIDs: q.ids,
                                                    candidateFeatureCount: Self.schema.candidate.count, candidateFeatures: q.rows))
            }
            let r = try await ask(q)
            #expect(!r.sorted && r.ids == q.ids && r.scores == want.scores)
            for (c, column) in r.columns.enumerated() {
                switch column.values {
                case .float32(let values): #expect(values == Array(want.floatColumns[(c * q.count)..<((c + 1) * q.count)]), "\(column.name)")
                case .code(let codes): #expect(codes == want.codeColumns, "\(column.name)")
                }
            }
            guard case .float32(let agentColumn) = r.columns[0].values else { Issue.record("no agent column"); return }
            #expect(agentColumn.filter { $0 >= 0 }.count > 100)
            // Over the version's own limit: refused naming it.
            await #expect {
                _ = try await ask(Self.request(leads: 2_600, agents: 401))
            } throws: { error in
                guard case ClientError.server(let status, let message) = error else { return false }
                return status == .tooManyCandidates && message.contains("limit of 3000 (its max_candidates)")
            }
            // An id given twice.
            var twice = Self.request(leads: 20, agents: 5)
            twice.ids[24] = twice.ids[3]
            await #expect {
                _ = try await ask(twice)
            } throws: { error in
                guard case ClientError.server(let status, let message) = error else { return false }
                return status == .invalidRequest && message.contains("candidate id 4 is given twice")
            }
            // A row without a role: the server's schema check names the feature.
            var roleless = Self.request(leads: 20, agents: 5)
            roleless.rows[7 * Self.schema.candidate.count] = .nan
            await #expect {
                _ = try await ask(roleless)
            } throws: { error in
                guard case ClientError.server(let status, let message) = error else { return false }
                return status == .invalidFeature && message.contains("role")
            }
            #expect(try await ask(Self.request(leads: 20, agents: 5)).ids.count == 25)
            try await client.close()
        }
    }
}
