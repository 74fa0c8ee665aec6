import Allocation
import ArbiterModels
import Foundation

/// A synthetic recruiting business for the `allocation` kind (the effect sizes are assumptions): leads of a
/// job category in a city, graded by lead grading (a noisy view of their quality); agents in a city covering
/// some categories, of varied skill and tenure, with a daily capacity. A pair's hire probability grows with
/// the lead's quality and the agent's skill, more so together (good agents convert good leads best), with an
/// agent's affinity for the lead's category (its specialty), and with an agent's tenure on leads with
/// experience.
public struct AllocationWorld: Sendable {
    /// The default schema with `cities` cities (12 unless said).
    public static func schema(cities: Int = 12) -> FeatureSchema { AllocationLayout.defaultSchema(cities: cities) }
    public let schema: FeatureSchema
    public var rules: [String: Double] { AllocationLayout.defaultRules(schema) }
    public let cities: Int
    public let categories: Int
    public let agents: [Agent]

    public struct Lead: Sendable {
        public var id: UInt64
        public var city: Int
        public var category: Int
        public var quality: Double
        /// p_hire from lead grading: a noisy view of the quality.
        public var grade: Float
        public var experience: Float
    }

    public struct Agent: Sendable {
        public var id: UInt64
        public var city: Int
        /// Bit c set: covers category c.
        public var categories: UInt32
        /// The category it converts best (one it covers).
        public var specialty: Int
        public var skill: Double
        public var tenure: Float
        /// Leads a day.
        public var capacity: Int
    }

    /// A world of `agents` agents with capacity for about `leadsPerDay × 1.2` leads a day in all, each covering
    /// a category with probability `coverage` (so about `coverage / cities` of the pairs are allowed).
    public init(seed: UInt64, agents count: Int, leadsPerDay: Int, cities: Int = 12, coverage: Double = 0.45) {
        schema = Self.schema(cities: cities)
        self.cities = cities
        categories = schema.candidate.first { $0.name == "category" }!.cardinality
        var r = SplitMix64(seed: seed &* 0x2545_F491_4F6C_DD1D &+ 7)
        let mean = 1.2 * Double(leadsPerDay) / Double(max(count, 1))
        agents = (0..<count).map { j in
            var set: UInt32 = 0
            for c in 0..<8 where r.uniform() < coverage { set |= 1 << UInt32(c) }
            if set == 0 { set = 1 << UInt32(r.next() % 8) }
            let covered = (0..<8).filter { (set >> UInt32($0)) & 1 == 1 }
            let specialty = covered[Int(r.next() % UInt64(covered.count))]
            return Agent(id: 1_000_000 + UInt64(j), city: Int(r.next() % UInt64(cities)), categories: set, specialty: specialty,
                         skill: 0.6 * r.normal(),
                         tenure: Float(r.next() % 12), capacity: max(0, Int((mean * (0.5 + r.uniform())).rounded())))
        }
    }

    /// Day `day`'s leads (ids unique across days).
    public func leads(day: Int, count: Int) -> [Lead] {
        var r = SplitMix64(seed: UInt64(day) &* 0x9E37_79B9_7F4A_7C15 &+ 12_345)
        return (0..<count).map { i in
            let quality = r.normal()
            let grade = 1 / (1 + exp(-(-2.2 + quality + 0.4 * r.normal())))
            return Lead(id: UInt64(day) * 10_000_000 + UInt64(i), city: Int(r.next() % UInt64(cities)),
                        category: Int(r.next() % UInt64(categories)), quality: quality, grade: Float(grade),
                        experience: Float(r.next() % 10))
        }
    }

    /// The rules: same city, and the agent covers the lead's category.
    public func allowed(_ l: Lead, _ a: Agent) -> Bool { l.city == a.city && (a.categories >> UInt32(l.category)) & 1 == 1 }

    /// The true hire probability of a pair.
    public func probability(_ l: Lead, _ a: Agent) -> Double {
        let logit = -3.0 + 1.1 * l.quality + a.skill + 0.7 * l.quality * a.skill + (l.category == a.specialty ? 0.9 : 0)
            + 0.06 * Double(min(a.tenure, 8)) * Double(l.experience) / 5
        return 1 / (1 + exp(-logit))
    }

    /// A lead's row in an allocation request (and in the day CSV): role 0, slots 1.
    public func row(_ l: Lead) -> [Float] {
        [0, 1, Float(l.city), Float(l.category), l.grade, l.experience, .nan, .nan, .nan, .nan]
    }

    /// An agent's row: role 1, slots its capacity.
    public func row(_ a: Agent) -> [Float] {
        [1, Float(a.capacity), Float(a.city), .nan, .nan, .nan, Float(a.categories), Float(a.specialty), Float(a.skill), a.tenure]
    }

    /// The pair model's input for a pair: the lead side's fields, then the agent side's (as the plugin builds it).
    public func pairInput(_ l: Lead, _ a: Agent) -> [Float] {
        [Float(l.city), Float(l.category), l.grade, l.experience, Float(a.categories), Float(a.specialty), Float(a.skill), a.tenure]
    }

    /// One day's allocation request: its leads then every agent.
    public func request(day: Int, leads count: Int, minScore: Float = 0) -> (request: AllocationRequest, leads: [Lead]) {
        let leads = leads(day: day, count: count)
        var rows: [Float] = []
        rows.reserveCapacity((leads.count + agents.count) * schema.candidate.count)
        for l in leads { rows += row(l) }
        for a in agents { rows += row(a) }
        return (AllocationRequest(context: [minScore], rows: rows, count: leads.count + agents.count,
                                  ids: leads.map(\.id) + agents.map(\.id)), leads)
    }

    /// Historical pairs for training: on each of `days` days, each lead goes to one allowed agent chosen at
    /// random (so the data is not shaped by an earlier model), and is hired or not.
    public func history(days: Int, leadsPerDay: Int, seed: UInt64) -> [AllocationPairRow] {
        var r = SplitMix64(seed: seed)
        var byCity = [[Int]](repeating: [], count: cities)
        for (j, a) in agents.enumerated() { byCity[a.city].append(j) }
        var rows: [AllocationPairRow] = []
        for day in 0..<days {
            for l in leads(day: 1_000 + day, count: leadsPerDay) {
                let options = byCity[l.city].filter { self.allowed(l, agents[$0]) }
                guard !options.isEmpty else { continue }
                let a = agents[options[Int(r.next() % UInt64(options.count))]]
                rows.append(AllocationPairRow(input: pairInput(l, a), hired: r.uniform() < probability(l, a)))
            }
        }
        return rows
    }
}

/// One historical pair: the pair model's input and whether the lead was hired.
public struct AllocationPairRow: Sendable {
    public var input: [Float]
    public var hired: Bool
}

/// The CSV files of the allocation kind: historical pairs (training) and a day's leads and agents (`allocate`).
public enum AllocationData {
    public static let pairFields = ["city", "category", "grade", "experience_years", "agent_categories", "agent_specialty", "agent_skill", "agent_tenure_years"]
    public static let pairHeader = pairFields + ["hired"]
    public static let dayHeader = ["id"] + AllocationWorld.schema().candidate.map(\.name)

    static func format(_ v: Float) -> String {
        v.isNaN ? "" : (v == v.rounded() && abs(v) < 1e7 ? String(Int(v)) : String(v))
    }

    public static func writePairs(_ rows: [AllocationPairRow], to url: URL) throws {
        var s = pairHeader.joined(separator: ",") + "\n"
        for row in rows {
            for v in row.input { s += format(v) + "," }
            s += row.hired ? "1\n" : "0\n"
        }
        try Data(s.utf8).write(to: url, options: .atomic)
    }

    /// Reads a pairs CSV, validating its header, numbers and codes against the schema.
    public static func readPairs(_ url: URL, schema: FeatureSchema) throws -> [AllocationPairRow] {
        let (names, lines) = try lines(url)
        let position = try positions(of: pairHeader, in: names, url: url)
        let features = pairFields.map { name in schema.candidate.first { $0.name == name }! }
        var rows: [AllocationPairRow] = []
        rows.reserveCapacity(lines.count)
        for (n, line) in lines.enumerated() {
            let cells = line.split(separator: ",", omittingEmptySubsequences: false)
            guard cells.count == names.count else { throw DataError("\(url.path) line \(n + 2): \(cells.count) cells, the header has \(names.count)") }
            var input: [Float] = []
            for (j, f) in features.enumerated() { input.append(try parse(cells[position[j]], f, url: url, line: n + 2)) }
            let label = cells[position[features.count]].trimmingCharacters(in: .whitespaces)
            guard label == "0" || label == "1" else { throw DataError("\(url.path) line \(n + 2): hired is '\(label)', not 0 or 1") }
            rows.append(AllocationPairRow(input: input, hired: label == "1"))
        }
        return rows
    }

    /// Writes a day's request: one row per lead and agent, `id` first; a role as `lead` or `agent`; missing
    /// values empty.
    public static func writeDay(_ q: AllocationRequest, to url: URL) throws {
        let width = dayHeader.count - 1
        var s = dayHeader.joined(separator: ",") + "\n"
        for r in 0..<q.count {
            s += String(q.ids[r])
            for j in 0..<width {
                let v = q.rows[r * width + j]
                s += "," + (j == 0 ? (v == 0 ? "lead" : "agent") : format(v))
            }
            s += "\n"
        }
        try Data(s.utf8).write(to: url, options: .atomic)
    }

    /// Reads a day's leads and agents for `schema` (columns by name, in any order; `id` and `role` required;
    /// role `lead`/`agent` or 0/1; an empty cell is a missing value, where the schema allows one).
    public static func readDay(_ url: URL, schema: FeatureSchema, minScore: Float) throws -> AllocationRequest {
        let (names, lines) = try lines(url)
        let position = try positions(of: ["id"] + schema.candidate.map(\.name), in: names, url: url)
        var rows: [Float] = [], ids: [UInt64] = []
        rows.reserveCapacity(lines.count * schema.candidate.count)
        for (n, line) in lines.enumerated() {
            let cells = line.split(separator: ",", omittingEmptySubsequences: false)
            guard cells.count == names.count else { throw DataError("\(url.path) line \(n + 2): \(cells.count) cells, the header has \(names.count)") }
            guard let id = UInt64(cells[position[0]].trimmingCharacters(in: .whitespaces)) else {
                throw DataError("\(url.path) line \(n + 2): id '\(cells[position[0]])' is not an unsigned integer")
            }
            ids.append(id)
            for (j, f) in schema.candidate.enumerated() {
                let cell = cells[position[j + 1]].trimmingCharacters(in: .whitespaces)
                if f.name == AllocationLayout.roleFeature, cell == "lead" || cell == "agent" {
                    rows.append(cell == "lead" ? 0 : 1)
                } else {
                    rows.append(try parse(cells[position[j + 1]], f, url: url, line: n + 2))
                }
            }
        }
        return AllocationRequest(context: [minScore], rows: rows, count: ids.count, ids: ids)
    }

    static func lines(_ url: URL) throws -> (header: [String], lines: [Substring]) {
        let data: Data
        do { data = try Data(contentsOf: url) } catch { throw DataError("cannot read \(url.path): \(error.localizedDescription)") }
        guard let text = String(data: data, encoding: .utf8) else { throw DataError("\(url.path) is not UTF-8 text") }
        var lines = text.split(separator: "\n", omittingEmptySubsequences: false).map { $0.hasSuffix("\r") ? $0.dropLast() : $0 }
        while lines.last?.isEmpty == true { lines.removeLast() }
        guard let head = lines.first else { throw DataError("\(url.path) is empty") }
        return (head.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }, Array(lines.dropFirst()))
    }

    static func positions(of wanted: [String], in names: [String], url: URL) throws -> [Int] {
        try wanted.map { name in
            guard let i = names.firstIndex(of: name) else {
                throw DataError("\(url.path): header lacks column '\(name)' (expected: \(wanted.joined(separator: ",")))")
            }
            return i
        }
    }

    static func parse(_ cell: Substring, _ f: Feature, url: URL, line: Int) throws -> Float {
        let text = cell.trimmingCharacters(in: .whitespaces)
        if text.isEmpty {
            guard f.allowsMissing else { throw DataError("\(url.path) line \(line): '\(f.name)' is empty and may not be missing") }
            return .nan
        }
        guard let v = Float(text), v.isFinite else { throw DataError("\(url.path) line \(line): '\(f.name)' is '\(text)', not a finite number") }
        if f.kind == .categorical, v != v.rounded() || v < 0 || Int(v) >= f.cardinality {
            throw DataError("\(url.path) line \(line): '\(f.name)' is \(text), not a code in 0..<\(f.cardinality)")
        }
        return v
    }
}
