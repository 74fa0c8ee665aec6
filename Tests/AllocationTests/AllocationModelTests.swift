import Allocation
import ArbiterModels
import ArbiterStore
import ArbiterTestSupport
import ArbiterTraining
import Foundation
import Testing

/// The `allocation` kind: the pairs it derives and their probabilities against a reference written from the
/// rules' meaning and the machine's definition, the answer's columns, determinism, and what it refuses.
@Suite struct AllocationModelTests {
    static let schema = AllocationLayout.defaultSchema(cities: 3, categories: 5, maxLeadSlots: 2)
    static let fields = schema.candidate.map(\.name)
    static func column(_ name: String) -> Int { fields.firstIndex(of: name)! }

    /// A hand-made version: a random factorization machine (k = 3) over the default sides, the default rules.
    static func version(seed: UInt64 = 11, blocklist: [(lead: UInt64, agent: UInt64)] = [], deadline: Double = 1_000) -> AllocationVersion {
        var r = SplitMix64(seed: seed)
        let rules = AllocationLayout.defaultRules(schema)
        let (lead, agent) = AllocationLayout.sides(schema, rules)
        let pairFields = (lead + agent).map { schema.candidate[$0] }
        let d = FieldEncoding(fields: pairFields).dimension
        var norm = [Float](repeating: 0, count: 2 * pairFields.count)
        for (j, f) in pairFields.enumerated() {
            norm[2 * j + 1] = 1
            if f.kind == .numeric { norm[2 * j] = 2; norm[2 * j + 1] = 0.5 }
        }
        let machine = FMParameters(bias: -1.5, linear: (0..<d).map { _ in Float(r.normal() * 0.4) },
                                   factors: (0..<(3 * d)).map { _ in Float(r.normal() * 0.3) }, factorCount: 3)
        var v = AllocationVersion(schema: schema, rules: rules, machine: machine, norm: norm)
        v.maxLeadSlots = 2
        v.blocklist = blocklist
        v.deadlineMilliseconds = deadline
        return v
    }

    /// A request of `leads` and `agents` rows (leads first, then agents, unless `interleave`), ids 1000 + row.
    static func request(leads: Int, agents: Int, seed: UInt64, minScore: Float = 0.05, interleave: Bool = false) -> AllocationRequest {
        var r = SplitMix64(seed: seed)
        let width = fields.count
        var rows: [Float] = []
        var roles = (0..<(leads + agents)).map { $0 < leads }
        if interleave { roles.shuffle(using: &r) }
        for isLead in roles {
            var row = [Float](repeating: .nan, count: width)
            row[column("role")] = isLead ? 0 : 1
            row[column("city")] = Float(r.next() % 3)
            if isLead {
                row[column("slots")] = Float(r.next() % 3)  // 0, 1 or 2
                row[column("category")] = Float(r.next() % 5)
                row[column("grade")] = Float(r.uniform())
                row[column("experience_years")] = r.uniform() < 0.2 ? .nan : Float(r.next() % 6)
            } else {
                row[column("slots")] = Float(r.next() % 4)
                row[column("agent_categories")] = Float(r.next() % 32)
                row[column("agent_specialty")] = Float(r.next() % 5)
                row[column("agent_skill")] = Float(r.normal())
                row[column("agent_tenure_years")] = Float(r.next() % 10)
            }
            rows += row
        }
        return AllocationRequest(context: [minScore], rows: rows, count: roles.count, ids: (0..<roles.count).map { 1000 + UInt64($0) })
    }

    /// The allowed pairs and their probabilities from the rules' meaning and the machine's definition.
    static func referencePairs(_ v: AllocationVersion, _ q: AllocationRequest) -> [Int: [(agent: Int, p: Double)]] {
        let width = fields.count
        func x(_ r: Int, _ name: String) -> Float { q.rows[r * width + column(name)] }
        let (leadSide, agentSide) = AllocationLayout.sides(schema, v.rules)
        let blocked = Set(v.blocklist.map { "\($0.lead)-\($0.agent)" })
        var pairs: [Int: [(agent: Int, p: Double)]] = [:]
        for l in 0..<q.count where x(l, "role") == 0 {
            pairs[l] = []
            for a in 0..<q.count where x(a, "role") == 1 {
                guard x(l, "city") == x(a, "city") else { continue }
                let set = x(a, "agent_categories")
                guard !set.isNaN, (Int(set) >> Int(x(l, "category"))) & 1 == 1 else { continue }
                guard !blocked.contains("\(q.ids[l])-\(q.ids[a])") else { continue }
                let row = leadSide.map { q.rows[l * width + $0] } + agentSide.map { q.rows[a * width + $0] }
                let logit = referenceFactorizationMachine(bias: v.machine.bias, linear: v.machine.linear, factors: v.machine.factors,
                                                          factorCount: v.machine.factorCount, fields: v.pairFields, norm: v.norm, row: row)
                let p = 1 / (1 + exp(-logit))
                if p >= Double(q.context[0]) { pairs[l]!.append((a, p)) }
            }
        }
        return pairs
    }

    struct Arrays: Equatable {
        var scores: [Float]
        var floatColumns: [Float]
        var codeColumns: [UInt8]
    }

    struct Answer {
        let out: Arrays
        let n: Int
        func float(_ c: Int, _ r: Int) -> Float { out.floatColumns[c * n + r] }
        func agents(_ r: Int) -> [Int] { (0..<2).map { Int(float(2 * $0, r)) }.filter { $0 >= 0 } }
        func p(_ s: Int, _ r: Int) -> Float { float(2 * s + 1, r) }
        func load(_ r: Int) -> Float { float(4, r) }
        func price(_ r: Int) -> Float { float(5, r) }
        var objective: Float { float(6, 0) }
        var greedyObjective: Float { float(7, 0) }
        func kind(_ r: Int) -> String { AllocationLayout.allocationLabels[Int(out.codeColumns[r])] }
    }

    static func answer(_ m: AllocationModel, _ q: AllocationRequest) throws -> Answer {
        let s = try m.score(context: q.context, candidates: q.rows, candidateCount: q.count, ids: q.ids)
        #expect(s.rows == Array(0..<q.count))
        return Answer(out: Arrays(scores: s.scores, floatColumns: s.floatColumns, codeColumns: s.codeColumns), n: q.count)
    }

    @Test func theAnswerIsAnOptimumOverThePairsTheRulesAllow() throws {
        var checkedLeads = 0, placed = 0
        for seed in UInt64(1)...12 {
            let q = Self.request(leads: 30, agents: 12, seed: seed, interleave: seed % 2 == 0)
            let v = Self.version(blocklist: [(1000 + 3, 1000 + 35), (1000 + 4, 1000 + 31)])
            let m = try v.model()
            let a = try Self.answer(m, q)
            let reference = Self.referencePairs(v, q)
            let width = Self.fields.count
            // Feasible, and every chosen pair allowed with the reference's probability.
            var load = [Int: Int]()
            for (l, allowed) in reference {
                checkedLeads += 1
                let chosen = a.agents(l)
                #expect(chosen.count <= Int(q.rows[l * width + Self.column("slots")]))
                #expect(a.load(l) == Float(chosen.count))
                for (s, agent) in chosen.enumerated() {
                    let match = allowed.first { $0.agent == agent }
                    #expect(match != nil, "seed \(seed): lead \(l) given agent \(agent), not an allowed pair")
                    if let match { #expect(abs(Double(a.p(s, l)) - match.p) < 2e-6, "seed \(seed) lead \(l) agent \(agent)") }
                    load[agent, default: 0] += 1
                }
                placed += chosen.count
                #expect(a.kind(l) == (allowed.isEmpty ? "no_allowed_agent" : "exact"))
                #expect(abs(a.out.scores[l] - (0..<chosen.count).reduce(0) { $0 + a.p($1, l) }) < 1e-6)
            }
            for r in 0..<q.count where q.rows[r * width + Self.column("role")] == 1 {
                #expect(a.kind(r) == "agent" && a.agents(r).isEmpty)
                #expect(a.load(r) == Float(load[r] ?? 0) && a.load(r) <= q.rows[r * width + Self.column("slots")])
                #expect(a.out.scores[r] == a.price(r) && a.price(r) >= 0)
            }
            // The optimum over the reference's pairs (quantised as the kind does): the same total.
            var slots: [Int32] = [], leadRows: [Int] = [], agentRows: [Int] = [], capacity: [Int32] = []
            for r in 0..<q.count {
                if q.rows[r * width + Self.column("role")] == 0 { leadRows.append(r); slots.append(Int32(q.rows[r * width + Self.column("slots")])) }
                else { agentRows.append(r); capacity.append(Int32(q.rows[r * width + Self.column("slots")])) }
            }
            let problem = try AllocationProblem(leadSlots: slots, agentCapacity: capacity, pairs: leadRows.map { l in
                reference[l]!.map { (Int32(agentRows.firstIndex(of: $0.agent)!), max(1, Int64(($0.p * v.scale).rounded()))) }
            })
            let best = AllocationSolver.solve(problem)
            #expect(abs(Double(a.objective) - Double(best.objective) / v.scale) < 1e-4, "seed \(seed)")
            #expect(abs(Double(a.greedyObjective) - Double(AllocationSolver.greedy(problem).objective) / v.scale) < 1e-4)
            #expect(a.greedyObjective <= a.objective)
            // Whose capacity is worth raising: the shadow prices, as the solver finds them on the same pairs.
            for (j, r) in agentRows.enumerated() { #expect(abs(Double(a.price(r)) - Double(best.shadowPrice[j]) / v.scale) < 1e-4) }
        }
        #expect(checkedLeads == 360 && placed > 100, "\(placed) placed")
    }

    /// With no factors the pair model is a logistic regression over the pair's fields; the rules and the solve
    /// are the same.
    @Test func aLogisticPairModelServesToo() throws {
        var v = Self.version()
        let d = v.machine.linear.count
        v.machine = FMParameters(bias: v.machine.bias, linear: v.machine.linear, factors: [], factorCount: 0)
        #expect(d > 0)
        let m = try v.model()
        let q = Self.request(leads: 40, agents: 12, seed: 4)
        let a = try Self.answer(m, q)
        let reference = Self.referencePairs(v, q)
        var placed = 0
        for (l, allowed) in reference {
            for (s, agent) in a.agents(l).enumerated() {
                let match = try #require(allowed.first { $0.agent == agent })
                #expect(abs(Double(a.p(s, l)) - match.p) < 2e-6)
                placed += 1
            }
        }
        #expect(placed > 10)
    }

    @Test func theSameRequestGivesTheSameBytes() throws {
        let m = try Self.version().model()
        let q = Self.request(leads: 200, agents: 40, seed: 5)
        #expect(try Self.answer(m, q).out == Self.answer(m, q).out)
        // And a version built again from the same parameters.
        #expect(try Self.answer(Self.version().model(), q).out == Self.answer(m, q).out)
    }

    @Test func theBlocklistKeepsPairsApart() throws {
        let q = Self.request(leads: 40, agents: 10, seed: 3)
        let free = try Self.answer(Self.version().model(), q)
        // Block every pair the unblocked answer chose: none of them may be chosen again.
        var blocked: [(lead: UInt64, agent: UInt64)] = []
        for l in 0..<40 { for agent in free.agents(l) { blocked.append((q.ids[l], q.ids[agent])) } }
        #expect(blocked.count > 5)
        let a = try Self.answer(Self.version(blocklist: blocked).model(), q)
        for l in 0..<40 { for agent in a.agents(l) { #expect(!blocked.contains { $0 == (q.ids[l], q.ids[agent]) }) } }
        #expect(a.objective < free.objective)
    }

    @Test func aPassedDeadlinePlacesTheRestGreedilyAndSaysSo() throws {
        let m = try Self.version(deadline: 0.001).model()
        let q = Self.request(leads: 300, agents: 30, seed: 9)
        var ticks: UInt64 = 0
        let out = try Self.allocating(m, q) { ticks += 10_000_000; return ticks }
        let a = Answer(out: out, n: q.count)
        let kinds = (0..<300).map { a.kind($0) }
        #expect(kinds.contains("greedy"))
        #expect(a.objective <= (try Self.answer(m, q)).objective)
    }

    @Test func badRequestsAreRefusedByName() throws {
        let m = try Self.version().model()
        let width = Self.fields.count
        var q = Self.request(leads: 5, agents: 3, seed: 1)
        // An agent with negative capacity.
        q.rows[6 * width + Self.column("slots")] = -1
        #expect { try Self.answer(m, q) } throws: { "\($0)".contains("row 6 (agent): slots -1") }
        // A lead with more slots than the version answers.
        q = Self.request(leads: 5, agents: 3, seed: 1)
        q.rows[2 * width + Self.column("slots")] = 3
        #expect { try Self.answer(m, q) } throws: { "\($0)".contains("row 2 (lead): slots 3") && "\($0)".contains("0...2") }
        // Ids repeated.
        q = Self.request(leads: 5, agents: 3, seed: 1)
        q.ids[7] = q.ids[1]
        #expect { try Self.answer(m, q) } throws: { "\($0)".contains("candidate id 1001 is given twice (rows 1 and 7)") }
        // A row without a role: the schema refuses it before the model sees it.
        q = Self.request(leads: 5, agents: 3, seed: 1)
        q.rows[4 * width + Self.column("role")] = .nan
        let why = q.context.withUnsafeBufferPointer { c in
            q.rows.withUnsafeBufferPointer { Self.schema.firstInvalidValue(context: c, candidates: $0, candidateCount: q.count) }
        }
        #expect(why?.contains("role") == true, "\(why ?? "accepted")")
        // A bit set that is not one.
        q = Self.request(leads: 5, agents: 3, seed: 1)
        q.rows[5 * width + Self.column("agent_categories")] = 2.5
        #expect { try Self.answer(m, q) } throws: { "\($0)".contains("'agent_categories' is 2.5") }
    }

    @Test func leadsNobodyMayTakeAndAgentsWithoutRoomAreAnswersNotErrors() throws {
        let m = try Self.version().model()
        let width = Self.fields.count
        var q = Self.request(leads: 12, agents: 6, seed: 2, minScore: 0)
        let agentRows = 12..<18
        // Lead 0 in a city no agent is in (cities 0-2; move the agents out of city 2 and the lead into it);
        // agents covering every category.
        for r in agentRows {
            if q.rows[r * width + Self.column("city")] == 2 { q.rows[r * width + Self.column("city")] = 1 }
            q.rows[r * width + Self.column("agent_categories")] = 31
        }
        q.rows[Self.column("city")] = 2
        q.rows[Self.column("slots")] = 1
        // Every agent full.
        for r in agentRows { q.rows[r * width + Self.column("slots")] = 0 }
        let a = try Self.answer(m, q)
        #expect(a.kind(0) == "no_allowed_agent" && a.agents(0).isEmpty && a.out.scores[0] == 0)
        #expect((0..<12).allSatisfy { a.agents($0).isEmpty } && a.objective == 0)
        // No agent has room: one more unit of an agent's capacity is worth its best pair with a lead that has a slot.
        let v = Self.version()
        var best = [Int: Double]()
        for (l, pairs) in Self.referencePairs(v, q) where q.rows[l * width + Self.column("slots")] > 0 {
            for p in pairs { best[p.agent] = max(best[p.agent] ?? 0, (p.p * v.scale).rounded() / v.scale) }
        }
        #expect(best.count >= 3)
        for r in agentRows { #expect(abs(Double(a.price(r)) - (best[r] ?? 0)) < 1e-6, "agent row \(r)") }
        // An empty request and one without agents.
        let none = AllocationRequest(context: [0.1], rows: [], count: 0, ids: [])
        #expect(try Self.answer(m, none).out.scores.isEmpty)
        let leadsOnly = Self.request(leads: 3, agents: 0, seed: 4)
        #expect(try Self.answer(m, leadsOnly).objective == 0)
    }

    @Test func versionsWhoseRulesNameFeaturesTheSchemaLacksAreRefused() throws {
        var v = Self.version()
        v.rules[AllocationLayout.equalPrefix + "region"] = 2
        #expect { try v.model() } throws: { "\($0)".contains("rule 'equal.region' names 'region'") }
        v = Self.version()
        v.rules[AllocationLayout.memberPrefix + "category"] = Double(Self.column("agent_skill") + 100)
        #expect { try v.model() } throws: { "\($0)".contains("not the index of an agent feature") }
        v = Self.version()
        v.rules[AllocationLayout.equalPrefix + "city"] = Double(Self.column("agent_skill"))
        #expect { try v.model() } throws: { "\($0)".contains("not categorical with 3 codes") }
        // A version whose manifest lost a side (the trainer would not build it).
        let (manifest, tensors) = try Self.version().build(golden: [])
        var edited = manifest
        edited.parameters[AllocationLayout.sidePrefix + "agent_skill"] = nil
        let loaded = try LoadedVersion(detachedModel: "allocation", kind: AllocationLayout.kind, manifest: edited.encoded(), tensors: tensors)
        #expect { try AllocationModel(version: loaded, manifest: edited) } throws: { "\($0)".contains("'agent_skill' has no side") }
        v = Self.version()
        v.rules[AllocationLayout.sidePrefix + "tenure"] = 1
        #expect { try v.model() } throws: { "\($0)".contains("'side.tenure' names 'tenure'") }
        v = Self.version()
        v.rules["max_lead_slot"] = 2
        #expect { try v.model() } throws: { "\($0)".contains("unknown parameter 'max_lead_slot'") }
    }

    /// An allocation answered with a clock of the test's (to pass the deadline on purpose).
    static func allocating(_ m: AllocationModel, _ q: AllocationRequest, clock: @escaping () -> UInt64) throws -> Arrays {
        let (scores, floats, codes) = try m.allocate(context: q.context, rows: q.rows, count: q.count, ids: q.ids, maxPairs: m.maxPairs, clock: clock)
        return Arrays(scores: scores, floatColumns: floats, codeColumns: codes)
    }
}

/// `arbiter-train` end to end: generated history, a trained pair model published, a held-out day allocated
/// from a CSV into a CSV; a day with an agent of negative capacity is refused by name.
@Suite struct AllocationCLITests {
    @Test func aDayIsAllocatedFromTheCommandLine() async throws {
        let dir = temporaryPath("allocation-cli")
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let pairs = dir + "/pairs.csv", day = dir + "/day.csv", store = dir + "/store", out = dir + "/out.csv"
        let trainer = OtherProcess.trainer
        _ = try await offPool {
            try OtherProcess.run(trainer, ["gen-data", "--kind", "allocation", "--leads", "400", "--agents", "40", "--days", "10",
                                           "--cities", "5", "--seed", "3", "--out", pairs, "--day-out", day])
        }
        let trained = try await offPool {
            try OtherProcess.run(trainer, ["train", "--kind", "allocation", "--data", pairs, "--cities", "5", "--store", store,
                                           "--model", "alloc", "--max-epochs", "4", "--factors", "4"])
        }
        #expect(trained.contains("published alloc v1"), "\(trained)")
        let said = try await offPool {
            try OtherProcess.run(trainer, ["allocate", "--store", store, "--model", "alloc", "--input", day, "--output", out])
        }
        #expect(said.contains("allocated 400 leads to 40 agents") && said.contains("expected hires"), "\(said)")
        // Every lead's agent shares its city and covers its category; no agent over capacity.
        let input = try String(contentsOfFile: day, encoding: .utf8).split(separator: "\n").dropFirst().map { $0.split(separator: ",", omittingEmptySubsequences: false) }
        let output = try String(contentsOfFile: out, encoding: .utf8).split(separator: "\n").map { $0.split(separator: ",", omittingEmptySubsequences: false) }
        #expect(output.first?.joined(separator: ",") == "id,role,agent_1,p_1,load,shadow_price,allocation")
        #expect(output.count == input.count + 1)
        let header = AllocationData.dayHeader
        func cell(_ row: [Substring], _ name: String) -> Substring { row[header.firstIndex(of: name)!] }
        let agents = Dictionary(uniqueKeysWithValues: input.filter { cell($0, "role") == "agent" }.map { (cell($0, "id"), $0) })
        var load = [Substring: Int](), placed = 0
        for (row, answer) in zip(input, output.dropFirst()) where cell(row, "role") == "lead" {
            #expect(answer[0] == cell(row, "id") && answer[1] == "lead")
            guard !answer[2].isEmpty else { continue }
            let agent = try #require(agents[answer[2]])
            #expect(cell(agent, "city") == cell(row, "city"))
            #expect((Int(cell(agent, "agent_categories"))! >> Int(cell(row, "category"))!) & 1 == 1)
            load[answer[2], default: 0] += 1
            placed += 1
        }
        #expect(placed > 200)
        for (id, n) in load { #expect(n <= Int(cell(agents[id]!, "slots"))!) }
        // The replay on fresh days of the same world: three policies and ten calibration deciles.
        let replay = try await offPool {
            try OtherProcess.run(trainer, ["replay", "--kind", "allocation", "--store", store, "--model", "alloc", "--seed", "3", "--days", "2",
                                           "--leads", "400", "--agents", "40", "--cities", "5"])
        }
        #expect(replay.contains("2 held-out days of 400 leads and 40 agents") && replay.contains("grading only"), "\(replay)")
        #expect(replay.split(separator: "\n").filter { $0.hasPrefix("    ") }.count == 10, "\(replay)")
        // A day with an agent of negative capacity.
        var lines = try String(contentsOfFile: day, encoding: .utf8).split(separator: "\n").map(String.init)
        let agentLine = try #require(lines.firstIndex { $0.contains(",agent,") })
        var cells = lines[agentLine].split(separator: ",", omittingEmptySubsequences: false).map(String.init)
        cells[header.firstIndex(of: "slots")!] = "-2"
        lines[agentLine] = cells.joined(separator: ",")
        try (lines.joined(separator: "\n") + "\n").write(toFile: day, atomically: true, encoding: .utf8)
        let refused = try await offPool { try OtherProcess.capture(trainer, ["allocate", "--store", store, "--model", "alloc", "--input", day, "--output", out]) }
        #expect(refused.status != 0 && refused.output.contains("row \(agentLine - 1) (agent): slots -2"), "\(refused.output)")
    }
}
