import ArbiterModels
import ArbiterStore
import ArbiterTraining
import Foundation
import Routing

// Publishes the route-30 scenario's model: a `routing` version over the 30 lenders (and their rules) of the
// marketplace `arbiter-train gen-data --kind routing --seed 1` generates, with two heads that are random tree
// ensembles (T perfect trees of depth 6 each) over the head row — 8 applicant features, 2 lender features and
// the lender: p(approve) (logistic) and the amount (identity). Quality is measured on generated data elsewhere
// (`arbiter-train train --kind routing`); this is the size, for speed.
// arbiter-bench's route-30 scenario sends requests that fit it.
// Usage: route-store STORE MODEL TREES          route-store --time STORE MODEL

let args = CommandLine.arguments
let world = RoutingWorld(seed: 1, lenders: 30)

/// The scenario's kind of request: an applicant of the world, every lender with a random state.
func requests(_ count: Int) -> [RoutingRequest] { world.requests(count: count, firstID: 1, stream: 77) }

// `route-store --time STORE MODEL`: the model's own cost, in this process and one thread — score the
// scenario's kind of request (30 lenders, top 5) from the map, and print the median µs per call over 5,000
// calls after 500 to warm up.
if args.count == 4 && args[1] == "--time" {
    let env = try StoreEnvironment.open(path: args[2])
    let loaded = try LoadedVersion(environment: env, model: args[3])
    let model = try RoutingModel(version: loaded, manifest: try ModelManifest.decode(loaded.manifest))
    let qs = requests(256)
    var times: [Double] = []
    for k in 0..<5500 {
        let q = qs[k % qs.count]
        let t = DispatchTime.now().uptimeNanoseconds
        _ = try model.score(context: q.features, candidates: q.lenderFeatures, candidateCount: q.lenders.count, ids: q.lenders,
                            routingKey: UInt64(k) &* 0x9E37_79B9_7F4A_7C15, topK: 5)
        if k >= 500 { times.append(Double(DispatchTime.now().uptimeNanoseconds - t) / 1000) }
    }
    times.sort()
    print(String(format: "%@: median %.1f µs per call (p90 %.1f), through the array helper (its copies included)",
                 args[3], times[times.count / 2], times[times.count * 9 / 10]))
    exit(0)
}
guard args.count == 4, let trees = Int(args[3]), trees >= 1 else {
    FileHandle.standardError.write(Data("usage: route-store STORE MODEL TREES | route-store --time STORE MODEL\n".utf8))
    exit(2)
}
let store = args[1], name = args[2]
let schema = RoutingData.schema
let fields = RoutingLayout.headFields(schema, lenders: world.lenders.count)
nonisolated(unsafe) var r = SplitMix64(seed: 2027)  // one thread: this script's own

/// A perfect tree of depth 6 with random splits, thresholds drawn within each field's range of the scenario's
/// values, leaves scaled for the head (log-odds, or an amount).
func tree(leafScale: Double) -> ImportedForest.Tree {
    let ranges: [String: ClosedRange<Double>] = [
        "credit_score": 300...850, "income": 800...15_000, "requested_amount": 500...30_000, "employment_years": 0...40,
        "debt_ratio": 0...0.95, "capacity": 0...400, "load": 0...1,
    ]
    var nodes: [ImportedForest.Node] = []
    func grow(_ depth: Int) -> Int {
        let index = nodes.count
        nodes.append(.leaf(0))
        if depth == 6 {
            nodes[index] = .leaf(Float(r.normal() * leafScale))
            return index
        }
        let f = Int(r.next() % UInt64(fields.count))
        let threshold: Float
        switch fields[f].kind {
        case .categorical: threshold = Float(Int(r.next() % UInt64(fields[f].cardinality))) + 0.5
        case .numeric:
            let range = ranges[fields[f].name]!
            threshold = Float(range.lowerBound + r.uniform() * (range.upperBound - range.lowerBound))
        }
        let missingRight = r.next() & 1 == 1
        let left = grow(depth + 1), right = grow(depth + 1)
        nodes[index] = .split(feature: f, threshold: threshold, missingRight: missingRight, left: left, right: right)
        return index
    }
    _ = grow(0)
    return ImportedForest.Tree(nodes: nodes)
}

let start = Date()
let approve = ImportedForest(trees: (0..<trees).map { _ in tree(leafScale: 0.1) }, featureNames: fields.map(\.name), baseMargin: 0,
                             transform: .logistic, sigmoidScale: 1, source: "random trees (bench/route)")
let amount = ImportedForest(trees: (0..<trees).map { _ in tree(leafScale: 100) }, featureNames: fields.map(\.name), baseMargin: 4000,
                            transform: .identity, sigmoidScale: 1, source: "random trees (bench/route)")
var version = RoutingVersion(features: schema, channelFeature: "channel", returningFeature: "returning", capacityFeature: "capacity",
                             lenders: world.lenders, averageAmounts: Dictionary(uniqueKeysWithValues: world.lenders.map { ($0.id, 4000) }),
                             heads: [.init(role: .approve, model: .trees(approve)), .init(role: .amount, model: .trees(amount))],
                             shares: [Float](repeating: 0.5, count: RoutingWorld.channels), epsilon: 0.05, salt: 0)
version.exploreSalt = 5
version.notes = ["source": "bench/route: the lenders of gen-data seed 1, random trees, \(trees) per head"]
let golden = try version.goldenCases(requests(3).enumerated().map { ($1, UInt64($0) &* 7919 + 1, 5) })
let env = try StoreEnvironment.open(path: store, configuration: StoreConfiguration(create: true))
let v = try version.publish(model: name, golden: golden, catalog: Catalog(environment: env))
print(String(format: "published %@ v%llu: %d lenders, 2 heads of %d trees, in %.1f s", name, v, world.lenders.count, trees, Date().timeIntervalSince(start)))
