import ArbiterModels
import Foundation

/// One impression: an item shown to a user, with both sides' features and the funnel's three labels
/// (view → chat → reply: each only after the one before).
public struct Impression: Equatable, Sendable {
    public var user: UInt64
    public var item: UInt64
    /// Context (user) features in `RankingData.schema.context` order.
    public var userFeatures: [Float]
    /// Candidate (item) features in `RankingData.schema.candidate` order.
    public var itemFeatures: [Float]
    public var viewed: Bool
    public var chatted: Bool
    public var replied: Bool
}

/// Synthetic impressions of a marketplace feed with planted structure, and their CSV form.
///
/// Users and items have latent factors (the affinity `u·v` drives every stage), items a hidden popularity
/// (it drives views, and which items get shown) and an observable quality and price; users an observable
/// segment with a taste per category. The stages weigh these differently — views follow popularity and
/// affinity, chats quality and price, replies quality and affinity — so no single head ranks by the deepest
/// label, and a popularity ranking does worse still. Deterministic by seed: the population (factors,
/// popularity, tastes) and the impressions both come from it.
public enum RankingData {
    public static let categories = 12
    public static let segments = 4
    public static let latentDimension = 8

    public static let schema = FeatureSchema(
        context: [.numeric("u_activity"), .categorical("u_segment", segments)],
        candidate: [.categorical("category", categories), .numeric("price"), .numeric("quality")],
        outputs: [])
    public static let labelColumns = ["view", "chat", "reply"]
    public static var header: [String] {
        ["user_id", "item_id"] + schema.context.map(\.name) + schema.candidate.map(\.name) + labelColumns
    }

    /// Generates `users` users with `perUser` impressions each over `items` items, deterministic by `seed`.
    /// User ids are `1...users`, item ids `1_000_001...1_000_000 + items`.
    public static func generate(users: Int, items: Int, perUser: Int, seed: UInt64) -> [Impression] {
        var r = SplitMix64(seed: seed)
        let d = latentDimension
        let scale = 1 / Double(d).squareRoot()
        let itemFactors = (0..<items).map { _ in (0..<d).map { _ in r.normal() * scale * 1.3 } }
        let popularity = (0..<items).map { _ in 0.9 * r.normal() }
        let category = (0..<items).map { _ in r.categorical((0..<categories).map { 1 + Double($0 % 3) }) }
        let quality = (0..<items).map { _ in r.normal() }
        let price = (0..<items).map { i in 50 * _exp(0.4 * r.normal() + 0.3 * quality[i]) }
        let taste = (0..<segments).map { _ in (0..<categories).map { _ in 0.6 * r.normal() } }
        // Items are shown in proportion to exp(popularity): the feed already favours popular items.
        let shown = popularity.map { _exp(0.7 * $0) }
        var cumulative = [Double](repeating: 0, count: items)
        var total = 0.0
        for i in 0..<items {
            total += shown[i]
            cumulative[i] = total
        }
        func sigmoid(_ x: Double) -> Double { 1 / (1 + _exp(-x)) }
        var out: [Impression] = []
        out.reserveCapacity(users * perUser)
        for u in 0..<users {
            let factors = (0..<d).map { _ in r.normal() * scale * 1.3 }
            let segment = r.categorical([0.4, 0.3, 0.2, 0.1])
            let activity = _exp(0.5 * r.normal())
            var seen = Set<Int>()
            var attempts = 0
            while seen.count < min(perUser, items) && attempts < 20 * perUser {
                attempts += 1
                let x = r.uniform() * total
                var lo = 0, hi = items - 1
                while lo < hi {
                    let mid = (lo + hi) / 2
                    if cumulative[mid] <= x { lo = mid + 1 } else { hi = mid }
                }
                let i = lo
                guard seen.insert(i).inserted else { continue }
                var affinity = 0.0
                for j in 0..<d { affinity += factors[j] * itemFactors[i][j] }
                affinity += taste[segment][category[i]]
                let priceZ = (_log(price[i]) - _log(50)) / 0.45
                let view = r.uniform() < sigmoid(-0.6 + 1.2 * affinity + 0.8 * popularity[i] + 0.3 * _log(activity))
                let chat = view && r.uniform() < sigmoid(-0.8 + 0.5 * affinity + 1.0 * quality[i] - 0.7 * priceZ)
                let reply = chat && r.uniform() < sigmoid(-0.3 + 1.0 * affinity + 1.2 * quality[i] - 0.3 * popularity[i])
                out.append(Impression(user: UInt64(u + 1), item: UInt64(1_000_001 + i),
                                      userFeatures: [Float(activity), Float(segment)],
                                      itemFeatures: [Float(category[i]), Float(price[i]), Float(quality[i])],
                                      viewed: view, chatted: chat, replied: reply))
            }
        }
        return out
    }

    /// Writes impressions as CSV with `header`.
    public static func writeCSV(_ rows: [Impression], to url: URL) throws {
        var text = header.joined(separator: ",") + "\n"
        text.reserveCapacity(rows.count * 64)
        for row in rows {
            let values = ["\(row.user)", "\(row.item)"] + (row.userFeatures + row.itemFeatures).map { "\($0)" }
                + [row.viewed, row.chatted, row.replied].map { $0 ? "1" : "0" }
            text += values.joined(separator: ",") + "\n"
        }
        try text.write(to: url, atomically: true, encoding: .utf8)
    }

    /// Reads impressions from CSV: the header must be exactly `header`; every value is checked (ids are
    /// non-negative integers, features finite and categorical codes in range, labels 0 or 1, and a later
    /// stage only after the earlier one). Errors name the line.
    public static func readCSV(_ url: URL) throws -> [Impression] {
        let text: String
        do {
            text = try String(contentsOf: url, encoding: .utf8)
        } catch {
            throw DataError("cannot read \(url.path): \(error.localizedDescription)")
        }
        var lines = text.split(whereSeparator: \.isNewline).makeIterator()
        guard let first = lines.next() else { throw DataError("\(url.path) is empty") }
        let columns = first.split(separator: ",", omittingEmptySubsequences: false).map { $0.trimmingCharacters(in: .whitespaces) }
        guard columns == header else {
            throw DataError("\(url.path): the header is \(columns.joined(separator: ",")); expected \(header.joined(separator: ","))")
        }
        let c = schema.context.count, m = schema.candidate.count
        var out: [Impression] = []
        var number = 1
        while let line = lines.next() {
            number += 1
            let cells = line.split(separator: ",", omittingEmptySubsequences: false)
            guard cells.count == header.count else {
                throw DataError("\(url.path) line \(number): \(cells.count) values, expected \(header.count)")
            }
            func id(_ k: Int) throws -> UInt64 {
                guard let v = UInt64(cells[k].trimmingCharacters(in: .whitespaces)) else {
                    throw DataError("\(url.path) line \(number): \(header[k]) '\(cells[k])' is not a non-negative integer")
                }
                return v
            }
            func feature(_ k: Int, _ f: Feature) throws -> Float {
                guard let v = Float(cells[k].trimmingCharacters(in: .whitespaces)), v.isFinite else {
                    throw DataError("\(url.path) line \(number): \(f.name) '\(cells[k])' is not a finite number")
                }
                if f.kind == .categorical {
                    guard v == v.rounded(), v >= 0, Int(v) < f.cardinality else {
                        throw DataError("\(url.path) line \(number): \(f.name) \(v) is not a code in 0..<\(f.cardinality)")
                    }
                }
                return v
            }
            func label(_ k: Int) throws -> Bool {
                switch cells[k].trimmingCharacters(in: .whitespaces) {
                case "1": return true
                case "0": return false
                default: throw DataError("\(url.path) line \(number): \(header[k]) '\(cells[k])' is not 0 or 1")
                }
            }
            var userFeatures: [Float] = [], itemFeatures: [Float] = []
            for (j, f) in schema.context.enumerated() { userFeatures.append(try feature(2 + j, f)) }
            for (j, f) in schema.candidate.enumerated() { itemFeatures.append(try feature(2 + c + j, f)) }
            let view = try label(2 + c + m), chat = try label(3 + c + m), reply = try label(4 + c + m)
            guard (view || !chat) && (chat || !reply) else {
                throw DataError("\(url.path) line \(number): a later stage without the earlier one (view \(view), chat \(chat), reply \(reply))")
            }
            out.append(Impression(user: try id(0), item: try id(1), userFeatures: userFeatures, itemFeatures: itemFeatures,
                                  viewed: view, chatted: chat, replied: reply))
        }
        return out
    }
}
