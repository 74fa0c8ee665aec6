import ArbiterModels
import Foundation
import Ranking

/// Hyper-parameters of `train --kind ranking`.
public struct RankingTrainingOptions: Sendable {
    /// Latent dimension of the matrix factorisation (the served vectors carry two more: the biases).
    public var dimension = 16
    public var mfEpochs = 12
    public var mfLearningRate: Float = 0.05
    public var mfL2: Float = 0.02
    /// Factors of each native head's factorization machine (0: logistic regression).
    public var headFactors = 4
    public var headEpochs = 12
    public var cemIterations = 15
    public var cemPopulation = 40
    public var cemElite = 8
    public var seed: UInt64 = 1
    /// The candidate feature capped in every answer, and the cap (none by default).
    public var diversity: (feature: String, max: Int)?
    /// Share of each user's impressions held out for validation (weight search, early stopping) and test.
    public var validationShare = 0.1
    public var testShare = 0.2
    /// Heads to take from a library instead of fitting them, by name (``RankingTrainer/headNames``): a tree
    /// model trained, for instance, with LightGBM on the rows `headRowsOut` wrote. It must take the head row
    /// (the context features, the candidate features, the dot product) and output a probability.
    public var importedHeads: [String: ImportedForest] = [:]
    /// Where to write every impression's head row (CSV: split, ids, the head's input features, the labels),
    /// for training a head outside (the dot products are this run's; the same data and seed give the same).
    public var headRowsOut: URL?

    public init() {}
}

/// The quality of a trained ranking on held-out impressions: mean NDCG@10 of the reply label over users
/// with at least one reply among their held-out impressions.
public struct RankingQuality: Sendable, Equatable {
    public var users: Int
    public var fused: Double
    public var equalWeights: Double
    public var popularity: Double
    /// Each head alone, by name.
    public var heads: [String: Double]

    public var metrics: [String: Double] {
        var m = ["ndcg10_fused": fused, "ndcg10_equal_weights": equalWeights, "ndcg10_popularity": popularity,
                 "test_users": Double(users)]
        for (name, v) in heads { m["ndcg10_head_\(name)"] = v }
        return m
    }
}

/// A trained ranking: the version to publish and how well it ranks.
public struct TrainedRanking: Sendable {
    public var version: RankingVersion
    public var validation: RankingQuality
    public var test: RankingQuality
    /// Requests from the test split to record as golden cases.
    public var goldenRequests: [(context: [Float], ids: [UInt64], candidates: [Float], subject: UInt64, topK: Int)]
}

/// Trains `ranking` versions: embeddings by logistic matrix factorisation of views, native heads (one
/// factorization machine per funnel label over the user features, the item features and the dot product),
/// and fusion weights searched with the cross-entropy method to maximise NDCG@10 of replies on validation.
public enum RankingTrainer {
    public static let headNames = ["p_view", "p_chat_given_view", "p_reply_given_chat"]

    /// Which split an impression falls in: by a hash of (user, item, seed), so a user's impressions are
    /// spread over train, validation and test in the given shares.
    enum Split { case train, validation, test }

    static func split(_ row: Impression, _ o: RankingTrainingOptions) -> Split {
        var h = SplitMix64(seed: row.user &* 0x9E37_79B9_7F4A_7C15 ^ row.item ^ o.seed)
        let u = h.uniform()
        return u < o.testShare ? .test : u < o.testShare + o.validationShare ? .validation : .train
    }

    public static func train(rows: [Impression], options o: RankingTrainingOptions = RankingTrainingOptions(),
                             progress: (String) -> Void = { _ in }) throws -> TrainedRanking {
        guard !rows.isEmpty else { throw DataError("no impressions to train on") }
        let fields = RankingLayout.headFields(RankingData.schema)
        for (name, forest) in o.importedHeads {
            guard headNames.contains(name) else {
                throw DataError("there is no head '\(name)' to replace; the heads are \(headNames.joined(separator: ", "))")
            }
            guard forest.featureCount == fields.count else {
                throw DataError("the model for head '\(name)' takes \(forest.featureCount) features; a ranking head's row has \(fields.count): "
                                + fields.map(\.name).joined(separator: ", "))
            }
            guard forest.transform == .logistic else {
                throw DataError("the model for head '\(name)' is not a binary classifier (its output is not a probability)")
            }
        }
        let splits = rows.map { split($0, o) }
        let trainRows = rows.indices.filter { splits[$0] == .train }
        let validationRows = rows.indices.filter { splits[$0] == .validation }
        let testRows = rows.indices.filter { splits[$0] == .test }
        guard !trainRows.isEmpty, !validationRows.isEmpty, !testRows.isEmpty else {
            throw DataError("too few impressions to split into train, validation and test (\(rows.count))")
        }

        // 1. Embeddings: p(view) = σ(b + b_u + b_i + u·v), served as u' = (u, 1, b_u), v' = (v, b_i, 1).
        progress("embeddings: matrix factorisation of views, dimension \(o.dimension), \(trainRows.count) impressions")
        let (users, items) = factorise(rows: rows, train: trainRows, options: o)
        let userRow = Dictionary(uniqueKeysWithValues: users.ids.enumerated().map { ($1, $0) })
        let itemRow = Dictionary(uniqueKeysWithValues: items.ids.enumerated().map { ($1, $0) })
        let d = users.dimension
        func dot(_ r: Impression) -> Float {
            let u = userRow[r.user].map { Array(users.vectors[($0 * d)..<($0 * d + d)]) } ?? users.defaultRow
            let v = itemRow[r.item].map { Array(items.vectors[($0 * d)..<($0 * d + d)]) } ?? items.defaultRow
            var s: Float = 0
            for j in 0..<d { s += u[j] * v[j] }
            return s
        }

        // 2. Heads: a factorization machine per label over (user features, item features, dot).
        let features = RankingData.schema
        let encoding = FieldEncoding(fields: fields)
        let inputs = rows.map { $0.userFeatures + $0.itemFeatures + [dot($0)] }
        let norm = EncodedRows.normalisation(fields: fields, inputs: inputs, rows: trainRows)
        let encoded = EncodedRows(encoding: encoding, norm: norm, inputs: inputs)
        let labels: [[Bool]] = [rows.map(\.viewed), rows.map(\.chatted), rows.map(\.replied)]
        if let url = o.headRowsOut {
            try writeHeadRows(url, rows: rows, splits: splits, inputs: inputs, fields: fields)
            progress("head rows: wrote \(rows.count) to \(url.path)")
        }
        var heads: [RankingVersion.Head] = []
        for (k, name) in headNames.enumerated() {
            var fm = FMTrainingOptions()
            fm.factors = o.headFactors
            fm.maxEpochs = o.headEpochs
            fm.seed = o.seed &+ UInt64(k)
            // A funnel: each stage is fitted on the impressions that reached it (p_chat given a view, p_reply
            // given a chat), so the product of the heads is P(reply).
            let reached: (Int) -> Bool = { k == 0 ? true : labels[k - 1][$0] }
            if let forest = o.importedHeads[name] {
                progress("head \(name): \(forest.source), \(forest.trees.count) trees")
                heads.append(RankingVersion.Head(name: name, weight: 1, model: .trees(forest)))
                continue
            }
            let fitted = FMTrainer.fit(encoded, labels: labels[k], train: trainRows.filter(reached),
                                       validation: validationRows.filter(reached), options: fm)
            progress("head \(name): fitted")
            heads.append(RankingVersion.Head(name: name, weight: 1, model: .linear(fitted, norm: norm)))
        }
        var version = RankingVersion(features: features, users: users, items: items, heads: heads, diversity: o.diversity)

        // 3. Each held-out impression's head probabilities, from the serving code (no diversity: every row).
        var plain = version
        plain.diversity = nil
        let scorer = try plain.model()
        let validation = try requests(rows, validationRows)
        let test = try requests(rows, testRows)
        let validationHeads = try headProbabilities(scorer, rows, validation)
        let testHeads = try headProbabilities(scorer, rows, test)

        // 4. Fusion weights by the cross-entropy method on validation.
        progress("fusion: cross-entropy search over \(heads.count) weights on \(validation.count) validation users")
        let weights = searchWeights(validationHeads, rows: rows, requests: validation, options: o)
        for k in heads.indices { version.heads[k].weight = weights[k] }

        // 5. Quality on validation and test.
        var popularity: [UInt64: Double] = [:]
        for i in trainRows where rows[i].viewed { popularity[rows[i].item, default: 0] += 1 }
        func quality(_ probabilities: [[Float]], _ requests: [[Int]]) -> RankingQuality {
            func ndcg(_ score: (Int) -> Float) -> Double { meanNDCG(rows: rows, requests: requests, score: score) }
            let equal = [Float](repeating: 1, count: heads.count)
            var perHead: [String: Double] = [:]
            for (k, name) in headNames.enumerated() { perHead[name] = ndcg { probabilities[k][$0] } }
            return RankingQuality(users: requests.filter { $0.contains { rows[$0].replied } }.count,
                                  fused: ndcg { fuse(probabilities, $0, weights) },
                                  equalWeights: ndcg { fuse(probabilities, $0, equal) },
                                  popularity: ndcg { Float(popularity[rows[$0].item] ?? 0) }, heads: perHead)
        }
        let validationQuality = quality(validationHeads, validation)
        let testQuality = quality(testHeads, test)
        version.notes = [
            "impressions": "\(rows.count) (train \(trainRows.count), validation \(validationRows.count), test \(testRows.count))",
            "seed": "\(o.seed)", "dimension": "\(o.dimension)", "head factors": "\(o.headFactors)",
            "fusion weights": weights.map { String(format: "%.4f", $0) }.joined(separator: ", "),
        ]
        // Golden requests: a test user's impressions (top 5), the same with an unknown subject and every
        // row, and one with an item the table does not hold.
        var golden: [(context: [Float], ids: [UInt64], candidates: [Float], subject: UInt64, topK: Int)] = []
        if let first = test.first(where: { $0.count >= 3 }) {
            let sample = Array(first.prefix(12))
            let r0 = rows[sample[0]]
            let ids = sample.map { rows[$0].item }, candidates = sample.flatMap { rows[$0].itemFeatures }
            golden.append((r0.userFeatures, ids, candidates, r0.user, 5))
            var unknownUser = UInt64.max
            while userRow[unknownUser] != nil { unknownUser -= 1 }
            golden.append((r0.userFeatures, ids, candidates, unknownUser, 0))
            var unknownItem = UInt64.max
            while itemRow[unknownItem] != nil { unknownItem -= 1 }
            golden.append((r0.userFeatures, [unknownItem] + ids.dropFirst(), candidates, r0.user, 3))
        }
        return TrainedRanking(version: version, validation: validationQuality, test: testQuality, goldenRequests: golden)
    }

    /// Writes the head rows: `split,user_id,item_id,` the head's input fields, then `view,chat,reply`.
    static func writeHeadRows(_ url: URL, rows: [Impression], splits: [Split], inputs: [[Float]], fields: [Feature]) throws {
        var text = (["split", "user_id", "item_id"] + fields.map(\.name) + RankingData.labelColumns).joined(separator: ",") + "\n"
        text.reserveCapacity(rows.count * 96)
        for (i, r) in rows.enumerated() {
            let split = switch splits[i] { case .train: "train"; case .validation: "validation"; case .test: "test" }
            text += ([split, "\(r.user)", "\(r.item)"] + inputs[i].map { "\($0)" } + [r.viewed, r.chatted, r.replied].map { $0 ? "1" : "0" })
                .joined(separator: ",") + "\n"
        }
        do {
            try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
            try text.write(to: url, atomically: true, encoding: .utf8)
        } catch {
            throw DataError("cannot write \(url.path): \(error.localizedDescription)")
        }
    }

    /// One request per user: the user's impressions among `indices`.
    static func requests(_ rows: [Impression], _ indices: [Int]) throws -> [[Int]] {
        var byUser: [UInt64: [Int]] = [:]
        for i in indices { byUser[rows[i].user, default: []].append(i) }
        return byUser.keys.sorted().map { byUser[$0]! }
    }

    /// Each head's probability for every impression of `requests`, scored as the server scores them:
    /// `[head][row]`, indexed by impression.
    static func headProbabilities(_ model: RankingModel, _ rows: [Impression], _ requests: [[Int]]) throws -> [[Float]] {
        let h = model.manifest.schema.outputs.count - 2
        var out = [[Float]](repeating: [Float](repeating: 0, count: rows.count), count: h)
        for request in requests {
            let first = rows[request[0]]
            let r = try model.score(context: first.userFeatures, candidates: request.flatMap { rows[$0].itemFeatures },
                                    candidateCount: request.count, ids: request.map { rows[$0].item }, subject: first.user)
            for k in 0..<h {
                for (j, i) in request.enumerated() { out[k][i] = r.floatColumns[k * request.count + j] }
            }
        }
        return out
    }

    /// The fused score of impression `i` (as the plugin fuses: `Σ wₖ·log pₖ`, p clamped).
    static func fuse(_ p: [[Float]], _ i: Int, _ w: [Float]) -> Float {
        var s: Float = 0
        for k in w.indices {
            s += w[k] * Float(_log(Double(min(max(p[k][i], RankingLayout.probabilityFloor), 1 - RankingLayout.probabilityFloor))))
        }
        return s
    }

    /// Mean NDCG@10 of replies over the requests that hold at least one reply, ranking by `score` (ties to
    /// the earlier impression, as the server breaks them).
    static func meanNDCG(rows: [Impression], requests: [[Int]], score: (Int) -> Float) -> Double {
        var total = 0.0, counted = 0
        for request in requests {
            let relevant = request.filter { rows[$0].replied }.count
            guard relevant > 0 else { continue }
            let scores = request.map(score)
            let order = request.indices.sorted { scores[$0] > scores[$1] || (scores[$0] == scores[$1] && $0 < $1) }
            var dcg = 0.0, ideal = 0.0
            for r in 0..<min(10, order.count) {
                if rows[request[order[r]]].replied { dcg += 1 / _log2(Double(r + 2)) }
                if r < relevant { ideal += 1 / _log2(Double(r + 2)) }
            }
            total += dcg / ideal
            counted += 1
        }
        return counted == 0 ? 0 : total / Double(counted)
    }

    /// The cross-entropy method over the fusion weights: sample a population from a diagonal Gaussian, keep
    /// the elite by validation NDCG@10, refit the Gaussian to it, repeat; the best weights seen win.
    static func searchWeights(_ p: [[Float]], rows: [Impression], requests: [[Int]], options o: RankingTrainingOptions) -> [Float] {
        let k = p.count
        var rng = SplitMix64(seed: o.seed &+ 0xCE)
        var mean = [Double](repeating: 1, count: k), sd = [Double](repeating: 1, count: k)
        var best = [Float](repeating: 1, count: k)
        var bestScore = meanNDCG(rows: rows, requests: requests) { fuse(p, $0, best) }
        for _ in 0..<o.cemIterations {
            var population: [([Float], Double)] = []
            for _ in 0..<o.cemPopulation {
                let w = (0..<k).map { Float(max(0, mean[$0] + sd[$0] * rng.normal())) }
                population.append((w, meanNDCG(rows: rows, requests: requests) { fuse(p, $0, w) }))
            }
            population.sort { $0.1 > $1.1 }
            let elite = population.prefix(o.cemElite)
            if let top = elite.first, top.1 > bestScore {
                best = top.0
                bestScore = top.1
            }
            for j in 0..<k {
                let values = elite.map { Double($0.0[j]) }
                mean[j] = values.reduce(0, +) / Double(values.count)
                let v = values.reduce(0) { $0 + ($1 - mean[j]) * ($1 - mean[j]) } / Double(values.count)
                sd[j] = max(v.squareRoot(), 0.02)
            }
        }
        return best
    }

    /// Logistic matrix factorisation of the view label on `train`, by SGD. Returns the user and item tables
    /// (vectors with the biases folded in), each with the mean vector as its default row.
    static func factorise(rows: [Impression], train: [Int], options o: RankingTrainingOptions)
        -> (users: RankingVersion.Table, items: RankingVersion.Table) {
        let userIDs = Array(Set(train.map { rows[$0].user })).sorted()
        let itemIDs = Array(Set(train.map { rows[$0].item })).sorted()
        let ui = Dictionary(uniqueKeysWithValues: userIDs.enumerated().map { ($1, $0) })
        let ii = Dictionary(uniqueKeysWithValues: itemIDs.enumerated().map { ($1, $0) })
        let k = o.dimension
        var rng = SplitMix64(seed: o.seed &+ 0x3F)
        var u = (0..<userIDs.count * k).map { _ in Float(rng.normal()) * 0.1 }
        var v = (0..<itemIDs.count * k).map { _ in Float(rng.normal()) * 0.1 }
        var bu = [Float](repeating: 0, count: userIDs.count), bi = [Float](repeating: 0, count: itemIDs.count)
        let views = train.reduce(0) { $0 + (rows[$1].viewed ? 1 : 0) }
        let rate = min(max(Double(views) / Double(train.count), 1e-4), 1 - 1e-4)
        let b = Float(_log(rate / (1 - rate)))
        var order = train
        let lr = o.mfLearningRate, l2 = o.mfL2
        for _ in 0..<o.mfEpochs {
            order.shuffle(using: &rng)
            for i in order {
                let a = ui[rows[i].user]!, c = ii[rows[i].item]!
                var s = b + bu[a] + bi[c]
                for j in 0..<k { s += u[a * k + j] * v[c * k + j] }
                let g = Kernels.sigmoid(s) - (rows[i].viewed ? 1 : 0)
                bu[a] -= lr * (g + l2 * bu[a])
                bi[c] -= lr * (g + l2 * bi[c])
                for j in 0..<k {
                    let uj = u[a * k + j], vj = v[c * k + j]
                    u[a * k + j] -= lr * (g * vj + l2 * uj)
                    v[c * k + j] -= lr * (g * uj + l2 * vj)
                }
            }
        }
        // Served vectors: u' = (u, 1, b_u), v' = (v, b_i, 1), so that u'·v' = u·v + b_u + b_i.
        let d = k + 2
        var users = [Float](), items = [Float]()
        users.reserveCapacity(userIDs.count * d)
        items.reserveCapacity(itemIDs.count * d)
        for a in 0..<userIDs.count { users += u[(a * k)..<(a * k + k)] + [1, bu[a]] }
        for c in 0..<itemIDs.count { items += v[(c * k)..<(c * k + k)] + [bi[c], 1] }
        func mean(_ m: [Float], _ n: Int) -> [Float] {
            (0..<d).map { j in n == 0 ? 0 : (0..<n).reduce(Float(0)) { $0 + m[$1 * d + j] } / Float(n) }
        }
        return (RankingVersion.Table(ids: userIDs, dimension: d, vectors: users, defaultRow: mean(users, userIDs.count)),
                RankingVersion.Table(ids: itemIDs, dimension: d, vectors: items, defaultRow: mean(items, itemIDs.count)))
    }
}

#if canImport(Glibc)
import Glibc
@inline(__always) func _log2(_ x: Double) -> Double { Glibc.log2(x) }
#else
import Darwin
@inline(__always) func _log2(_ x: Double) -> Double { Darwin.log2(x) }
#endif
