import ArbiterModels
import Foundation
import LeadGrading

/// One lead: the job posting it applied to (context), its own fields (candidate), and its stage labels.
public struct LeadRow: Equatable, Sendable {
    /// Context features in `LeadGradingLayout.defaultSchema.context` order.
    public var context: [Float]
    /// Candidate features in `LeadGradingLayout.defaultSchema.candidate` order.
    public var candidate: [Float]
    public var contacted: Bool
    public var interviewed: Bool
    public var hired: Bool
    /// The job posting it applied to (the CSV's posting_id; 0 when the CSV has none). Rows of one posting share
    /// their context.
    public var posting: Int = 0
}

/// An error in a leads CSV, naming the line and the problem.
public struct DataError: Error, CustomStringConvertible, Equatable {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// Synthetic leads with planted structure, and their CSV form.
///
/// The structure (stage effects and interactions) is fixed — drawn from an internal seed — so every data
/// seed samples the same population; `seed` only changes which leads are drawn.
public enum LeadData {
    public static let schema = LeadGradingLayout.defaultSchema
    public static let labelColumns = ["contacted", "interviewed", "hired"]
    /// The columns a leads CSV must have (in any order); `writeCSV` puts `idColumns` before them.
    public static var header: [String] { schema.context.map(\.name) + schema.candidate.map(\.name) + labelColumns }
    /// The posting a lead applied to, and the lead's own id (its row number from 1): what `arbiter score
    /// --group-by posting_id --id-column lead_id` groups and names rows by. Training ignores them.
    public static let idColumns = ["posting_id", "lead_id"]

    /// The planted population.
    struct Population {
        var channelWeights: [Double] = [0.35, 0.25, 0.20, 0.12, 0.08]
        var categorySalary: [Double] = []
        var channelContact: [Double] = []
        var channelHire: [Double] = []
        var channelByCategory: [[Double]] = []
        var cityAffinity: [Double] = []
        var categoryAffinity: [Double] = []
        var categoryExperience: [Double] = []
        var cityContact: [Double] = []

        init() {
            var r = SplitMix64(seed: 0xA2B1_7E2D)
            categorySalary = (0..<8).map { _ in 2500 + 3500 * r.uniform() }
            channelContact = [0.4, 0.9, -0.2, -0.5, 0.2]
            channelHire = [0.1, 0.6, -0.3, -0.2, 0.3]
            channelByCategory = (0..<5).map { _ in (0..<8).map { _ in 0.6 * r.normal() } }
            cityAffinity = (0..<12).map { _ in r.normal() }
            categoryAffinity = (0..<8).map { _ in 0.7 * r.normal() }
            categoryExperience = (0..<8).map { _ in 0.08 * r.normal() }
            cityContact = (0..<12).map { _ in 0.3 * r.normal() }
        }
    }

    /// Generates `rows` leads, deterministic by `seed`. With `leadsPerPosting` above 1, consecutive leads apply
    /// to the same job posting (its category and salary), 1 to 2K−1 of them (K on average); with 1 (the
    /// default) every lead is its own posting, and the rows are those of earlier releases for the same seed.
    public static func generate(rows: Int, seed: UInt64, leadsPerPosting: Int = 1) -> [LeadRow] {
        let pop = Population()
        var r = SplitMix64(seed: seed)
        var out: [LeadRow] = []
        out.reserveCapacity(rows)
        func sig(_ x: Double) -> Double { 1 / (1 + _exp(-x)) }
        var posting = 0, left = 0
        var job = 0, salary = 0.0
        for _ in 0..<rows {
            if left == 0 {
                job = Int(r.next() % 8)
                salary = (pop.categorySalary[job] * _exp(0.15 * r.normal())).rounded()
                posting += 1
                left = leadsPerPosting <= 1 ? 1 : 1 + Int(r.next() % UInt64(2 * leadsPerPosting - 1))
            }
            left -= 1
            let channel = r.categorical(pop.channelWeights)
            let city = Int(r.next() % 12)
            let distance = min(100, -15 * _log(max(1e-9, 1 - r.uniform())))
            let gap = max(-0.6, min(0.8, 0.15 * r.normal() + 0.02))
            let activity = Double(min(30, Int(-8 * _log(max(1e-9, 1 - r.uniform())))))
            let experience = Double(min(25, Int(-5 * _log(max(1e-9, 1 - r.uniform())))))

            let zContact = -0.1 + pop.channelContact[channel] + pop.channelByCategory[channel][job]
                + 0.07 * (activity - 8) - 0.03 * (distance - 15) + pop.cityContact[city]
            let zInterview = 0.0 - 3.0 * gap + 0.06 * (experience - 5)
                + pop.cityAffinity[city] * pop.categoryAffinity[job] - 0.01 * (distance - 15)
            let zHire = -0.3 + 0.10 * (experience - 5) * (1 + 10 * pop.categoryExperience[job])
                - 2.0 * gap + pop.channelHire[channel] + 0.000_15 * (salary - 4000)
            let contacted = r.uniform() < sig(zContact)
            let interviewed = contacted && r.uniform() < sig(zInterview)
            let hired = interviewed && r.uniform() < sig(zHire)
            out.append(LeadRow(
                context: [Float(job), Float(salary)],
                candidate: [Float(channel), Float(city), Float((distance * 10).rounded() / 10),
                            Float((gap * 1000).rounded() / 1000), Float(activity), Float(experience)],
                contacted: contacted, interviewed: interviewed, hired: hired, posting: posting))
        }
        return out
    }

    /// Writes rows as CSV with a header line.
    public static func writeCSV(_ rows: [LeadRow], to url: URL) throws {
        var s = (idColumns + header).joined(separator: ",") + "\n"
        s.reserveCapacity(rows.count * 60)
        for (i, row) in rows.enumerated() {
            s += String(row.posting); s += ","
            s += String(i + 1); s += ","
            for v in row.context { s += format(v); s += "," }
            for v in row.candidate { s += format(v); s += "," }
            s += row.contacted ? "1," : "0,"
            s += row.interviewed ? "1," : "0,"
            s += row.hired ? "1\n" : "0\n"
        }
        try Data(s.utf8).write(to: url, options: .atomic)
    }

    static func format(_ v: Float) -> String {
        v == v.rounded() && abs(v) < 1e7 ? String(Int(v)) : String(v)
    }

    /// Reads and validates a leads CSV: the header must name exactly the schema's columns (in any order),
    /// every value must parse, categorical codes must be in range, and labels must follow the stage chain.
    public static func readCSV(_ url: URL) throws -> [LeadRow] {
        let data: Data
        do { data = try Data(contentsOf: url) } catch {
            throw DataError("cannot read \(url.path): \(error.localizedDescription)")
        }
        return try parseCSV(data, name: url.path)
    }

    /// The rows of a leads CSV held in `data` (as `readCSV` reads a file); `name` names it in errors.
    public static func parseCSV(_ data: Data, name: String) throws -> [LeadRow] {
        let url = URL(fileURLWithPath: name)
        guard let text = String(data: data, encoding: .utf8) else { throw DataError("\(url.path) is not UTF-8 text") }
        var lines = text.split(separator: "\n", omittingEmptySubsequences: false).map { $0.hasSuffix("\r") ? $0.dropLast() : $0 }
        while lines.last?.isEmpty == true { lines.removeLast() }
        guard let head = lines.first else { throw DataError("\(url.path) is empty") }
        let names = head.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
        let expected = header
        var position: [Int] = []
        for name in expected {
            guard let i = names.firstIndex(of: name) else {
                throw DataError("\(url.path): header lacks column '\(name)' (expected: \(expected.joined(separator: ",")))")
            }
            position.append(i)
        }
        let postingColumn = names.firstIndex(of: idColumns[0])
        let features = schema.context + schema.candidate
        var rows: [LeadRow] = []
        rows.reserveCapacity(lines.count - 1)
        for (ln, line) in lines.enumerated().dropFirst() {
            let cells = line.split(separator: ",", omittingEmptySubsequences: false)
            guard cells.count == names.count else {
                throw DataError("\(url.path) line \(ln + 1): \(cells.count) fields, the header has \(names.count)")
            }
            var values: [Float] = []
            values.reserveCapacity(features.count)
            for (j, f) in features.enumerated() {
                let cell = cells[position[j]].trimmingCharacters(in: .whitespaces)
                guard let v = Float(cell), v.isFinite else {
                    throw DataError("\(url.path) line \(ln + 1): '\(f.name)' is '\(cell)', not a finite number")
                }
                if f.kind == .categorical, v < 0 || v >= Float(f.cardinality) || v != v.rounded() {
                    throw DataError("\(url.path) line \(ln + 1): '\(f.name)' is \(cell), not a code in 0..<\(f.cardinality)")
                }
                values.append(v)
            }
            var labels: [Bool] = []
            for (j, name) in labelColumns.enumerated() {
                let cell = cells[position[features.count + j]].trimmingCharacters(in: .whitespaces)
                guard cell == "0" || cell == "1" else {
                    throw DataError("\(url.path) line \(ln + 1): '\(name)' is '\(cell)', expected 0 or 1")
                }
                labels.append(cell == "1")
            }
            guard (!labels[1] || labels[0]) && (!labels[2] || labels[1]) else {
                throw DataError("\(url.path) line \(ln + 1): stages out of order (interviewed needs contacted, hired needs interviewed)")
            }
            var posting = 0
            if let postingColumn {
                let cell = cells[postingColumn].trimmingCharacters(in: .whitespaces)
                guard let p = Int(cell), p >= 0 else {
                    throw DataError("\(url.path) line \(ln + 1): 'posting_id' is '\(cell)', not a non-negative integer")
                }
                posting = p
            }
            let nc = schema.context.count
            rows.append(LeadRow(context: Array(values[..<nc]), candidate: Array(values[nc...]),
                                contacted: labels[0], interviewed: labels[1], hired: labels[2], posting: posting))
        }
        guard !rows.isEmpty else { throw DataError("\(url.path) has a header but no rows") }
        return rows
    }
}
