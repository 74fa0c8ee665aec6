import ArbiterModels
import Foundation

/// One lender as the risk team configures it: its id, take rate, place in the current priority list, daily
/// capacity, and eligibility rules on applicant features — ranges on numeric ones, allowed codes of
/// categorical ones (absent: no rule).
public struct LenderSpec: Equatable, Sendable {
    public struct Range: Equatable, Sendable {
        public var min: Float
        public var max: Float
        public init(min: Float = -.infinity, max: Float = .infinity) {
            self.min = min
            self.max = max
        }
    }

    public var id: UInt64
    public var takeRate: Float
    public var priority: Int32
    public var dailyCapacity: Int
    public var ranges: [String: Range]
    public var allowed: [String: Set<Int>]

    public init(id: UInt64, takeRate: Float, priority: Int32, dailyCapacity: Int, ranges: [String: Range] = [:],
                allowed: [String: Set<Int>] = [:]) {
        self.id = id
        self.takeRate = takeRate
        self.priority = priority
        self.dailyCapacity = dailyCapacity
        self.ranges = ranges
        self.allowed = allowed
    }

    /// Whether an applicant (context features of `schema`) passes every rule — the reference the tests hold
    /// the plugin to, written apart from it.
    public func admits(_ applicant: [Float], schema: FeatureSchema) -> Bool {
        for (name, range) in ranges {
            guard let j = schema.context.firstIndex(where: { $0.name == name }) else { return false }
            let x = applicant[j]
            if x.isNaN { if range.min != -.infinity || range.max != .infinity { return false } else { continue } }
            if x < range.min || x > range.max { return false }
        }
        for (name, codes) in allowed {
            guard let j = schema.context.firstIndex(where: { $0.name == name }) else { return false }
            let x = applicant[j]
            if x.isNaN { if codes.count < schema.context[j].cardinality { return false } else { continue } }
            if !codes.contains(Int(x)) { return false }
        }
        return true
    }
}

/// One logged submission: an applicant sent to a lender, with the lender's state at that moment and the
/// outcome.
public struct Submission: Equatable, Sendable {
    public var applicant: UInt64
    /// Context features in `RoutingData.schema.context` order.
    public var applicantFeatures: [Float]
    public var lender: UInt64
    /// Candidate features in `RoutingData.schema.candidate` order.
    public var lenderFeatures: [Float]
    /// The probability that the logging policy sent this applicant to this lender.
    public var propensity: Float
    public var approved: Bool
    public var fundedAmount: Float
}

/// One routing request of a held-out applicant, as the replay and the tests make them: every lender, with
/// its state for this applicant.
public struct RoutingRequest: Sendable {
    public var applicant: UInt64
    public var features: [Float]
    public var lenders: [UInt64]
    /// Row-major, `lenders.count × schema.candidate.count`.
    public var lenderFeatures: [Float]

    public init(applicant: UInt64, features: [Float], lenders: [UInt64], lenderFeatures: [Float]) {
        self.applicant = applicant
        self.features = features
        self.lenders = lenders
        self.lenderFeatures = lenderFeatures
    }
}

/// A synthetic loan marketplace with planted structure: lenders with their own approval rules, appetite,
/// amounts and take rates; applicants from 24 intake channels; and the logs of a policy that sent each
/// applicant to up to three eligible lenders with capacity, chosen uniformly (so that any routing can be
/// evaluated on them by inverse propensity).
///
/// Approval depends on applicant × lender interactions: each lender weighs credit score, income and debt
/// differently (some take subprime applicants, most do not), likes some regions and channels more, favours
/// returning applicants by its own amount, and approves less as its day fills. The amount funded depends on
/// the lender's funding ratio and the applicant's credit. Deterministic by seed; the world (lenders, their
/// hidden parameters, channel quality) comes from the seed alone, the applicants from the seed and a stream.
public struct RoutingWorld: Sendable {
    public static let channels = 24
    public static let regions = 8

    public let lenders: [LenderSpec]
    /// Hidden parameters per lender (the truth the data is drawn from).
    let base: [Double], creditSlope: [Double], incomeSlope: [Double], debtSlope: [Double], returningBonus: [Double]
    let regionAffinity: [[Double]], channelAffinity: [[Double]]
    let fundingBase: [Double], fundingCredit: [Double], maxAmount: [Float]
    let channelQuality: [Double], channelWeights: [Double]

    public init(seed: UInt64, lenders count: Int) {
        var r = SplitMix64(seed: seed ^ 0x5EED_0F_10A4)
        let n = count
        var specs: [LenderSpec] = []
        var base: [Double] = [], credit: [Double] = [], income: [Double] = [], debt: [Double] = [], returning: [Double] = []
        var regionAffinity: [[Double]] = [], channelAffinity: [[Double]] = []
        var fundingBase: [Double] = [], fundingCredit: [Double] = [], maxAmount: [Float] = []
        for i in 0..<n {
            let subprime = r.uniform() < 0.3
            base.append(subprime ? 0.2 + 0.4 * r.normal() : -0.6 + 0.6 * r.normal())
            credit.append(subprime ? 0.3 + 0.2 * r.normal() : 1.1 + 0.4 * r.normal())
            income.append(0.2 + 0.3 * r.normal())
            debt.append(-0.3 - 0.3 * abs(r.normal()))
            returning.append(0.4 + 0.4 * r.normal())
            regionAffinity.append((0..<Self.regions).map { _ in 0.5 * r.normal() })
            channelAffinity.append((0..<Self.channels).map { _ in 0.4 * r.normal() })
            fundingBase.append(0.6 + 0.6 * r.normal())
            fundingCredit.append(0.4 + 0.3 * r.normal())
            let cap = Float((8 + Int(r.uniform() * 23)) * 1000)
            maxAmount.append(cap)
            var ranges: [String: LenderSpec.Range] = [
                "credit_score": .init(min: Float(subprime ? 440 + Int(r.uniform() * 60) : 540 + Int(r.uniform() * 140))),
                "requested_amount": .init(max: cap),
            ]
            if r.uniform() < 0.6 { ranges["income"] = .init(min: Float(1500 + Int(r.uniform() * 20) * 100)) }
            if r.uniform() < 0.3 { ranges["debt_ratio"] = .init(max: Float(0.4 + 0.05 * Double(Int(r.uniform() * 8)))) }
            var allowed: [String: Set<Int>] = [:]
            let regions = Set((0..<Self.regions).filter { _ in r.uniform() < 0.75 })
            if regions.count < Self.regions { allowed["region"] = regions.isEmpty ? [0] : regions }
            let channels = Set((0..<Self.channels).filter { _ in r.uniform() < 0.85 })
            if channels.count < Self.channels { allowed["channel"] = channels.isEmpty ? [0] : channels }
            let take = Float(Int(20 + r.uniform() * 60)) / 1000
            specs.append(LenderSpec(id: 1000 + UInt64(i) * 17, takeRate: take, priority: 0,
                                    dailyCapacity: 50 + Int(r.uniform() * 350), ranges: ranges, allowed: allowed))
        }
        // Today's priority list: highest take rate first (the commercial default), ties by id.
        let byTake = specs.indices.sorted { specs[$0].takeRate > specs[$1].takeRate || (specs[$0].takeRate == specs[$1].takeRate && $0 < $1) }
        for (rank, i) in byTake.enumerated() { specs[i].priority = Int32(rank + 1) }
        lenders = specs
        self.base = base
        creditSlope = credit
        incomeSlope = income
        debtSlope = debt
        returningBonus = returning
        self.regionAffinity = regionAffinity
        self.channelAffinity = channelAffinity
        self.fundingBase = fundingBase
        self.fundingCredit = fundingCredit
        self.maxAmount = maxAmount
        channelQuality = (0..<Self.channels).map { _ in 0.5 * r.normal() }
        channelWeights = (0..<Self.channels).map { c in _exp(-Double(c) / 8) }
    }

    public static let schema = FeatureSchema(
        context: [.categorical("channel", channels), .categorical("returning", 2), .categorical("region", regions),
                  .numeric("credit_score"), .numeric("income"), .numeric("requested_amount"), .numeric("employment_years"),
                  .numeric("debt_ratio")],
        candidate: [.numeric("capacity"), .numeric("load")],
        outputs: [])

    /// Draws one applicant's features (context order of `schema`).
    func applicant(_ r: inout SplitMix64) -> [Float] {
        let channel = r.categorical(channelWeights)
        let returning = r.uniform() < 0.3 ? 1 : 0
        let region = Int(r.uniform() * Double(Self.regions))
        let credit = min(850, max(300, 650 + 75 * r.normal()))
        let income = min(30_000, max(800, 4000 * _exp(0.45 * r.normal())))
        let requested = min(30_000, max(500, 5000 * _exp(0.7 * r.normal())))
        let employment = min(40, -5 * _log(max(r.uniform(), 1e-9)))
        let debt = min(0.95, max(0, 0.3 + 0.15 * r.normal()))
        return [Float(channel), Float(returning), Float(region), Float(credit.rounded()), Float(income.rounded()),
                Float((requested / 50).rounded() * 50), Float((employment * 10).rounded() / 10), Float((debt * 100).rounded() / 100)]
    }

    /// Each lender's state for one request: remaining capacity (none for about one lender in ten) and the
    /// share of its day used.
    func lenderStates(_ r: inout SplitMix64) -> [Float] {
        var out: [Float] = []
        for l in lenders {
            let remaining = r.uniform() < 0.1 ? 0 : 1 + Int(r.uniform() * Double(l.dailyCapacity))
            out += [Float(remaining), Float(1 - Double(remaining) / Double(l.dailyCapacity + 1))]
        }
        return out
    }

    /// The true probability that lender `l` approves this applicant in this state, and the amount it funds
    /// if it does.
    public func truth(lender l: Int, applicant a: [Float], load: Float) -> (pApprove: Double, amount: Double) {
        let zc = (Double(a[3]) - 650) / 75, zi = (_log(Double(a[4])) - _log(4000)) / 0.45, zd = (Double(a[7]) - 0.3) / 0.15
        let logit = base[l] + creditSlope[l] * zc + incomeSlope[l] * zi + debtSlope[l] * zd + returningBonus[l] * Double(a[1])
            + channelQuality[Int(a[0])] + channelAffinity[l][Int(a[0])] + regionAffinity[l][Int(a[2])] - 0.8 * Double(load)
        let ratio = 1 / (1 + _exp(-(fundingBase[l] + fundingCredit[l] * zc + 0.3 * Double(a[1]))))
        return (1 / (1 + _exp(-logit)), Double(min(a[5], maxAmount[l])) * ratio)
    }

    /// Indices of the lenders eligible for this applicant (rules) with capacity in `states`.
    func open(_ a: [Float], states: [Float]) -> [Int] {
        lenders.indices.filter { lenders[$0].admits(a, schema: Self.schema) && states[2 * $0] > 0 }
    }

    /// Logged submissions of `applicants` applicants (ids from `firstID`): each sent to up to three open
    /// lenders drawn uniformly, with the outcomes drawn from the truth.
    public func submissions(applicants: Int, firstID: UInt64 = 1, stream: UInt64) -> [Submission] {
        var r = SplitMix64(seed: stream &* 0xA24B_AED4_963E_E407 ^ 0x10_65)
        var out: [Submission] = []
        out.reserveCapacity(applicants * 3)
        for k in 0..<applicants {
            let a = applicant(&r)
            let states = lenderStates(&r)
            var open = self.open(a, states: states)
            guard !open.isEmpty else { continue }
            let sent = min(3, open.count)
            let propensity = Float(sent) / Float(open.count)
            for s in 0..<sent {
                let pick = s + Int(r.uniform() * Double(open.count - s))
                open.swapAt(s, pick)
                let l = open[s]
                let t = truth(lender: l, applicant: a, load: states[2 * l + 1])
                let approved = r.uniform() < t.pApprove
                let funded = approved ? Float((t.amount * _exp(0.1 * r.normal()) / 10).rounded() * 10) : 0
                out.append(Submission(applicant: firstID + UInt64(k), applicantFeatures: a, lender: lenders[l].id,
                                      lenderFeatures: [states[2 * l], states[2 * l + 1]], propensity: propensity,
                                      approved: approved, fundedAmount: funded))
            }
        }
        return out
    }

    /// Routing requests of `count` fresh applicants (every lender a candidate), for replay with the truth.
    public func requests(count: Int, firstID: UInt64, stream: UInt64) -> [RoutingRequest] {
        var r = SplitMix64(seed: stream &* 0xA24B_AED4_963E_E407 ^ 0x10_65)
        return (0..<count).map { k in
            let a = applicant(&r)
            return RoutingRequest(applicant: firstID + UInt64(k), features: a, lenders: lenders.map(\.id), lenderFeatures: lenderStates(&r))
        }
    }
}

/// The CSV forms of routing data: logged submissions, and the lender table a risk team keeps.
public enum RoutingData {
    public static var schema: FeatureSchema { RoutingWorld.schema }
    public static var header: [String] {
        ["applicant_id"] + schema.context.map(\.name) + ["lender_id"] + schema.candidate.map(\.name) + ["propensity", "approved", "funded_amount"]
    }

    public static func writeCSV(_ rows: [Submission], to url: URL) throws {
        var text = header.joined(separator: ",") + "\n"
        text.reserveCapacity(rows.count * 80)
        for row in rows {
            text += (["\(row.applicant)"] + row.applicantFeatures.map { "\($0)" } + ["\(row.lender)"] + row.lenderFeatures.map { "\($0)" }
                + ["\(row.propensity)", row.approved ? "1" : "0", "\(row.fundedAmount)"]).joined(separator: ",") + "\n"
        }
        try write(text, to: url)
    }

    static func write(_ text: String, to url: URL) throws {
        do {
            try text.write(to: url, atomically: true, encoding: .utf8)
        } catch {
            throw DataError("cannot write \(url.path): \(error.localizedDescription)")
        }
    }

    static func lines(_ url: URL) throws -> [Substring] {
        let text: String
        do {
            text = try String(contentsOf: url, encoding: .utf8)
        } catch {
            throw DataError("cannot read \(url.path): \(error.localizedDescription)")
        }
        let lines = text.split(whereSeparator: \.isNewline)
        guard !lines.isEmpty else { throw DataError("\(url.path) is empty") }
        return lines
    }

    /// Reads submissions: the header must be exactly `header`; every value is checked (ids non-negative
    /// integers, features finite with categorical codes in range, propensity in (0, 1], approved 0 or 1, a
    /// funded amount ≥ 0 and 0 unless approved). Errors name the line.
    public static func readCSV(_ url: URL) throws -> [Submission] {
        let lines = try lines(url)
        let columns = lines[0].split(separator: ",", omittingEmptySubsequences: false).map { $0.trimmingCharacters(in: .whitespaces) }
        guard columns == header else {
            throw DataError("\(url.path): the header is \(columns.joined(separator: ",")); expected \(header.joined(separator: ","))")
        }
        let c = schema.context.count, m = schema.candidate.count
        var out: [Submission] = []
        out.reserveCapacity(lines.count - 1)
        for (index, line) in lines.dropFirst().enumerated() {
            let number = index + 2
            let cells = line.split(separator: ",", omittingEmptySubsequences: false).map { $0.trimmingCharacters(in: .whitespaces) }
            guard cells.count == header.count else {
                throw DataError("\(url.path) line \(number): \(cells.count) values, expected \(header.count)")
            }
            func id(_ k: Int) throws -> UInt64 {
                guard let v = UInt64(cells[k]) else { throw DataError("\(url.path) line \(number): \(header[k]) '\(cells[k])' is not a non-negative integer") }
                return v
            }
            func finite(_ k: Int) throws -> Float {
                guard let v = Float(cells[k]), v.isFinite else { throw DataError("\(url.path) line \(number): \(header[k]) '\(cells[k])' is not a finite number") }
                return v
            }
            func feature(_ k: Int, _ f: Feature) throws -> Float {
                let v = try finite(k)
                if f.kind == .categorical {
                    guard v == v.rounded(), v >= 0, Int(v) < f.cardinality else {
                        throw DataError("\(url.path) line \(number): \(f.name) \(v) is not a code in 0..<\(f.cardinality)")
                    }
                }
                return v
            }
            let applicant = try (0..<c).map { try feature(1 + $0, schema.context[$0]) }
            let lender = try id(1 + c)
            let state = try (0..<m).map { try feature(2 + c + $0, schema.candidate[$0]) }
            let propensity = try finite(2 + c + m)
            guard propensity > 0, propensity <= 1 else {
                throw DataError("\(url.path) line \(number): propensity \(propensity) is not in (0, 1]")
            }
            let approved: Bool
            switch cells[3 + c + m] {
            case "1": approved = true
            case "0": approved = false
            default: throw DataError("\(url.path) line \(number): approved '\(cells[3 + c + m])' is not 0 or 1")
            }
            let funded = try finite(4 + c + m)
            guard funded >= 0, approved || funded == 0 else {
                throw DataError("\(url.path) line \(number): funded_amount \(funded) must be ≥ 0, and 0 when not approved")
            }
            out.append(Submission(applicant: try id(0), applicantFeatures: applicant, lender: lender, lenderFeatures: state,
                                  propensity: propensity, approved: approved, fundedAmount: funded))
        }
        return out
    }

    /// The lender table's fixed columns; rule columns follow: `min:<feature>`, `max:<feature>` (numeric
    /// applicant features; empty: no bound) and `allow:<feature>` (categorical ones: codes separated by `|`;
    /// empty: every code).
    public static let lenderColumns = ["lender_id", "take_rate", "priority", "daily_capacity"]

    /// Writes a lender table with a column for every rule any lender has (sorted by feature).
    public static func writeLenders(_ lenders: [LenderSpec], to url: URL) throws {
        let mins = Set(lenders.flatMap { $0.ranges.filter { $0.value.min != -.infinity }.keys }).sorted()
        let maxs = Set(lenders.flatMap { $0.ranges.filter { $0.value.max != .infinity }.keys }).sorted()
        let allows = Set(lenders.flatMap { $0.allowed.keys }).sorted()
        var text = (lenderColumns + mins.map { "min:\($0)" } + maxs.map { "max:\($0)" } + allows.map { "allow:\($0)" }).joined(separator: ",") + "\n"
        for l in lenders {
            var cells = ["\(l.id)", "\(l.takeRate)", "\(l.priority)", "\(l.dailyCapacity)"]
            cells += mins.map { f in l.ranges[f].flatMap { $0.min == -.infinity ? nil : "\($0.min)" } ?? "" }
            cells += maxs.map { f in l.ranges[f].flatMap { $0.max == .infinity ? nil : "\($0.max)" } ?? "" }
            cells += allows.map { f in l.allowed[f].map { $0.sorted().map(String.init).joined(separator: "|") } ?? "" }
            text += cells.joined(separator: ",") + "\n"
        }
        try write(text, to: url)
    }

    /// Reads a lender table, checking each rule against `schema`: a rule on a feature the schema lacks, a range
    /// on a categorical feature, allowed values on a numeric one or a code out of range are refused with the
    /// line and the column. Ids must be distinct; take rates in 0...1.
    public static func readLenders(_ url: URL, schema: FeatureSchema = RoutingData.schema) throws -> [LenderSpec] {
        let lines = try lines(url)
        let columns = lines[0].split(separator: ",", omittingEmptySubsequences: false).map { $0.trimmingCharacters(in: .whitespaces) }
        guard Array(columns.prefix(lenderColumns.count)) == lenderColumns else {
            throw DataError("\(url.path): the header must start with \(lenderColumns.joined(separator: ",")), then rule columns (min:F, max:F, allow:F); it is \(columns.joined(separator: ","))")
        }
        let names = schema.context.map(\.name).joined(separator: ", ")
        for column in columns.dropFirst(lenderColumns.count) {
            let parts = column.split(separator: ":", maxSplits: 1).map(String.init)
            guard parts.count == 2, ["min", "max", "allow"].contains(parts[0]) else {
                throw DataError("\(url.path): column '\(column)' is not a rule column (min:FEATURE, max:FEATURE or allow:FEATURE)")
            }
            guard let f = schema.context.first(where: { $0.name == parts[1] }) else {
                throw DataError("\(url.path): column '\(column)' names '\(parts[1])', which is not an applicant feature (\(names))")
            }
            guard (parts[0] == "allow") == (f.kind == .categorical) else {
                throw DataError("\(url.path): column '\(column)': \(parts[0] == "allow" ? "allowed values apply to categorical features; '\(f.name)' is numeric" : "ranges apply to numeric features; '\(f.name)' is categorical")")
            }
        }
        guard Set(columns).count == columns.count else { throw DataError("\(url.path): a column appears twice") }
        var out: [LenderSpec] = []
        for (index, line) in lines.dropFirst().enumerated() {
            let number = index + 2
            let cells = line.split(separator: ",", omittingEmptySubsequences: false).map { $0.trimmingCharacters(in: .whitespaces) }
            guard cells.count == columns.count else {
                throw DataError("\(url.path) line \(number): \(cells.count) values, expected \(columns.count)")
            }
            guard let id = UInt64(cells[0]) else { throw DataError("\(url.path) line \(number): lender_id '\(cells[0])' is not a non-negative integer") }
            guard let take = Float(cells[1]), take >= 0, take <= 1 else { throw DataError("\(url.path) line \(number): take_rate '\(cells[1])' is not in 0...1") }
            guard let priority = Int32(cells[2]) else { throw DataError("\(url.path) line \(number): priority '\(cells[2])' is not an integer") }
            guard let capacity = Int(cells[3]), capacity >= 0 else { throw DataError("\(url.path) line \(number): daily_capacity '\(cells[3])' is not an integer ≥ 0") }
            var spec = LenderSpec(id: id, takeRate: take, priority: priority, dailyCapacity: capacity)
            for (k, column) in columns.enumerated().dropFirst(lenderColumns.count) where !cells[k].isEmpty {
                let parts = column.split(separator: ":", maxSplits: 1).map(String.init)
                let f = schema.context.first { $0.name == parts[1] }!
                if parts[0] == "allow" {
                    var codes = Set<Int>()
                    for item in cells[k].split(separator: "|") {
                        guard let code = Int(item), code >= 0, code < f.cardinality else {
                            throw DataError("\(url.path) line \(number): \(column) '\(item)' is not a code in 0..<\(f.cardinality)")
                        }
                        codes.insert(code)
                    }
                    spec.allowed[f.name] = codes
                } else {
                    guard let v = Float(cells[k]), v.isFinite else { throw DataError("\(url.path) line \(number): \(column) '\(cells[k])' is not a finite number") }
                    var range = spec.ranges[f.name] ?? LenderSpec.Range()
                    if parts[0] == "min" { range.min = v } else { range.max = v }
                    guard range.min <= range.max else { throw DataError("\(url.path) line \(number): the range on \(f.name) is empty (min \(range.min) > max \(range.max))") }
                    spec.ranges[f.name] = range
                }
            }
            out.append(spec)
        }
        guard Set(out.map(\.id)).count == out.count else { throw DataError("\(url.path): a lender id appears twice") }
        guard !out.isEmpty else { throw DataError("\(url.path) holds no lenders") }
        return out
    }
}
