import ArbiterModels
import ArbiterStore
import ArbiterTraining
import Foundation
import Ranking

// Publishes the rank-200 scenario's model: a `ranking` version with random embeddings (dimension D) for
// user ids 1...U and item ids 1...N, and three heads that are random tree ensembles (T perfect trees of
// depth 6 each) over the head row — 4 user features, 8 item features and the dot product — fused by
// Σ w·log p, at most 3 items per category in an answer. Quality is measured on generated data elsewhere
// (`arbiter-train train --kind ranking`); this is the size, for speed and memory.
// The features match `RankStore.schema`; arbiter-bench's rank-200 scenario sends requests that fit it.
// Usage: rank-store STORE MODEL TREES [ITEMS USERS DIMENSION]

let args = CommandLine.arguments
// `rank-store --time STORE MODEL`: the model's own cost, in this process and one thread — score the scenario's
// kind of request (200 random items of the 1M for a random user, top 20) from the map, and print the median
// µs per call over 2,000 calls after 200 to warm up.
if args.count == 4 && args[1] == "--time" {
    let env = try StoreEnvironment.open(path: args[2])
    let loaded = try LoadedVersion(environment: env, model: args[3])
    let manifest = try ModelManifest.decode(loaded.manifest)
    let model = try RankingModel(version: loaded, manifest: manifest)
    loaded.releaseResidentPages()
    var g = SplitMix64(seed: 7)
    let n = 200
    let requests = (0..<256).map { _ -> (UInt64, [UInt64], [Float], [Float]) in
        let ids = (0..<n).map { _ in 1 + g.next() % 1_000_000 }
        var features: [Float] = []
        for _ in 0..<n {
            features.append(Float(g.next() % 50))
            features.append(Float(g.next() % 1000))
            for _ in 0..<6 { features.append(Float(g.next() % 100)) }
        }
        var context: [Float] = []
        for m in [100, 100, 8, 100] as [UInt64] { context.append(Float(g.next() % m)) }
        return (1 + g.next() % 100_000, ids, context, features)
    }
    var times: [Double] = []
    for k in 0..<2200 {
        let (user, ids, context, features) = requests[k % requests.count]
        let t = DispatchTime.now().uptimeNanoseconds
        _ = try model.score(context: context, candidates: features, candidateCount: n, ids: ids, subject: user, topK: 20)
        if k >= 200 { times.append(Double(DispatchTime.now().uptimeNanoseconds - t) / 1000) }
    }
    times.sort()
    print(String(format: "%@: median %.0f µs per call (p90 %.0f), through the array helper (its copies included)",
                 args[3], times[times.count / 2], times[times.count * 9 / 10]))
    exit(0)
}
guard args.count >= 4, let trees = Int(args[3]), trees >= 1 else {
    FileHandle.standardError.write(Data("usage: rank-store STORE MODEL TREES [ITEMS 1000000] [USERS 100000] [DIMENSION 64]\n".utf8))
    exit(2)
}
let store = args[1], model = args[2]
let items = args.count > 4 ? Int(args[4]) ?? 1_000_000 : 1_000_000
let users = args.count > 5 ? Int(args[5]) ?? 100_000 : 100_000
let dimension = args.count > 6 ? Int(args[6]) ?? 64 : 64

let schema = FeatureSchema(
    context: [.numeric("u_age"), .numeric("u_tenure"), .categorical("u_segment", 8), .numeric("u_activity")],
    candidate: [.categorical("category", 50), .categorical("seller", 1000), .numeric("price"), .numeric("quality"),
                .numeric("age_days"), .numeric("rating"), .numeric("distance_km"), .numeric("discount")],
    outputs: [])
let fields = RankingLayout.headFields(schema)
nonisolated(unsafe) var r = SplitMix64(seed: 2026)  // one thread: this script's own

func table(_ count: Int, firstID: UInt64) -> RankingVersion.Table {
    var vectors = [Float](repeating: 0, count: count * dimension)
    let scale = 1 / Float(dimension).squareRoot()
    for i in 0..<vectors.count { vectors[i] = Float(r.normal()) * scale }
    return RankingVersion.Table(ids: (0..<count).map { firstID + UInt64($0) }, dimension: dimension, vectors: vectors,
                                defaultRow: [Float](repeating: 0, count: dimension))
}

/// A perfect tree of depth 6 with random splits: thresholds drawn within each feature's range of the
/// scenario's values (categorical codes, or the numeric features' 0...100; the dot product about ±1).
func tree() -> ImportedForest.Tree {
    var nodes: [ImportedForest.Node] = []
    func grow(_ depth: Int) -> Int {
        let index = nodes.count
        nodes.append(.leaf(0))
        if depth == 6 {
            nodes[index] = .leaf(Float(r.normal() * 0.1))
            return index
        }
        let f = Int(r.next() % UInt64(fields.count))
        let threshold: Float
        switch fields[f].kind {
        case .categorical: threshold = Float(Int(r.next() % UInt64(fields[f].cardinality))) + 0.5
        case .numeric: threshold = f == fields.count - 1 ? Float(r.normal()) : Float(r.uniform() * 100)
        }
        let missingRight = r.next() & 1 == 1
        let left = grow(depth + 1), right = grow(depth + 1)
        nodes[index] = .split(feature: f, threshold: threshold, missingRight: missingRight, left: left, right: right)
        return index
    }
    _ = grow(0)
    return ImportedForest.Tree(nodes: nodes)
}

func head(_ name: String, weight: Float) -> RankingVersion.Head {
    let forest = ImportedForest(trees: (0..<trees).map { _ in tree() }, featureNames: fields.map(\.name), baseMargin: -1,
                                transform: .logistic, sigmoidScale: 1, source: "random trees (bench/rank)")
    return RankingVersion.Head(name: name, weight: weight, model: .trees(forest))
}

let start = Date()
var version = RankingVersion(features: schema, users: table(users, firstID: 1), items: table(items, firstID: 1),
                             heads: [head("p_view", weight: 0.5), head("p_chat", weight: 1), head("p_reply", weight: 1.5)],
                             diversity: (feature: "category", max: 3))
version.notes = ["source": "bench/rank: random embeddings and random trees, \(trees) per head"]
let context: [Float] = [34, 120, 3, 5.5]
let ids = (1...8).map { UInt64($0 * 1000) }
let candidates = (0..<8).flatMap { i -> [Float] in [Float(i % 3), Float(i * 7), 20, 50, 10, 4, 3, 0] }
let golden = try version.goldenCases([(context, ids, candidates, 42, 5)])
let env = try StoreEnvironment.open(path: store, configuration: StoreConfiguration(create: true))
let v = try version.publish(model: model, golden: golden, catalog: Catalog(environment: env))
print(String(format: "published %@ v%llu: %d items and %d users of dimension %d, 3 heads of %d trees, in %.1f s",
             model, v, items, users, dimension, trees, Date().timeIntervalSince(start)))
