import ArbiterModels
import ArbiterStore
import Foundation

// Two measurements for issue 14's embedding tables, printed as Markdown:
//   lookups: ns per random lookup over N ids, EmbeddingTable (hash index, read from the map) against a
//            branch-free binary search over the same ids sorted (the layout not taken);
//   memory:  resident memory of this process before loading a table of N ids × D floats, after loading it,
//            after the server gives back the pages those checks read (LoadedVersion.releaseResidentPages),
//            and after touching every row (the table is a view into the map: it costs what is touched).
// Usage: embedding-bench STORE_DIR [N] [D]   (STORE_DIR is created, and removed afterwards)

@inline(never) func keep(_ x: Int) { if x == 42_424_242 { print("") } }

func residentMiB() -> Double {
    guard let text = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8),
          let line = text.split(separator: "\n").first(where: { $0.hasPrefix("VmRSS:") }),
          let kb = Double(line.split(separator: " ").dropFirst().first ?? "") else { return 0 }
    return kb / 1024
}

func nanos() -> UInt64 { DispatchTime.now().uptimeNanoseconds }

let args = CommandLine.arguments
guard args.count >= 2 else {
    FileHandle.standardError.write(Data("usage: embedding-bench STORE_DIR [ids, default 1000000] [dimension, default 64]\n".utf8))
    exit(2)
}
let dir = args[1]
let n = args.count > 2 ? Int(args[2]) ?? 1_000_000 : 1_000_000
let d = args.count > 3 ? Int(args[3]) ?? 64 : 64
var rng = SystemRandomNumberGenerator()
var idSet = Set<UInt64>(minimumCapacity: n)
while idSet.count < n { idSet.insert(UInt64.random(in: 0 ... .max, using: &rng)) }
let ids = Array(idSet)
idSet = []

// Publish in slices of rows so this process never holds the whole float table twice.
do {
    var vectors = [Float](repeating: 0, count: n * d)
    for i in 0..<vectors.count { vectors[i] = Float(i % 1000) / 1000 }
    let tensors = try EmbeddingTable.tensors(name: "items", ids: ids, dimension: d, vectors: vectors, defaultRow: [Float](repeating: 0, count: d))
    vectors = []
    let bytes = tensors.reduce(0) { $0 + $1.bytes.count }
    let env = try StoreEnvironment.open(path: dir, configuration: StoreConfiguration(mapSize: max(1 << 30, 4 * bytes), create: true))
    let schema = FeatureSchema(context: [], candidate: [.numeric("x")], outputs: [])
    let golden = [GoldenCase(context: [], candidates: [2], candidateCount: 1, scores: [2], floatColumns: [], codeColumns: [])]
    let manifest = ModelManifest(kind: "embeddings", schema: schema, parameters: [:], golden: golden)
    try Catalog(environment: env).publish(model: "m", kind: "embeddings", manifest: manifest.encoded(), tensors: tensors, metrics: [:])
}
defer { try? FileManager.default.removeItem(atPath: dir) }

// A fresh environment, as a server opens it.
let env = try StoreEnvironment.open(path: dir)
let before = residentMiB()
let version = try LoadedVersion(environment: env, model: "m")
let table = try EmbeddingTable(version: version, name: "items")
let checked = residentMiB()
// As the server does once a version has passed its checks: give back the pages the checks read.
version.releaseResidentPages()
let loaded = residentMiB()
var sum: Float = 0
for id in ids { sum += table.vector(of: id)[d - 1] }
keep(Int(sum))
let touched = residentMiB()

let queries = (0..<2_000_000).map { _ in ids[Int.random(in: 0..<n, using: &rng)] }
func best(_ body: () -> Int) -> Double {
    var b = Double.infinity
    for _ in 0..<5 {
        let t = nanos()
        keep(body())
        b = min(b, Double(nanos() - t) / Double(queries.count))
    }
    return b
}
let hashNs = best {
    var s = 0
    for q in queries { s &+= Int(table.vector(of: q).pointee) }
    return s
}
// The same probe without reading the row: the index's own cost, comparable with the search below.
let probeNs = best {
    var s = 0
    for q in queries { s &+= table.row(of: q) ?? 0 }
    return s
}
let sorted = ids.sorted()
let searchNs = sorted.withUnsafeBufferPointer { p in
    best {
        var s = 0
        for q in queries {
            var base = 0, len = p.count
            while len > 1 {
                let half = len / 2
                base = p[base + half - 1] < q ? base + half : base
                len -= half
            }
            s &+= base
        }
        return s
    }
}
let tableMiB = Double((n + 1) * d * 4) / 1_048_576
print("""
| | |
| --- | --- |
| table | \(n) ids × \(d) floats: \(String(format: "%.0f", tableMiB)) MiB of vectors, \(String(format: "%.0f", Double(n * 32) / 1_048_576)) MiB of index (mapped: \(table.isMapped)) |
| lookup, EmbeddingTable (hash index), reading the row's first value | \(String(format: "%.1f", hashNs)) ns |
| lookup, hash index alone (the same probe, no row read) | \(String(format: "%.1f", probeNs)) ns |
| lookup, binary search over the sorted ids alone (the layout not taken) | \(String(format: "%.1f", searchNs)) ns |
| resident memory: before load / after the load's checks / after releasing their pages (as the server does) / after touching every row | \(String(format: "%.0f", before)) / \(String(format: "%.0f", checked)) / \(String(format: "%.0f", loaded)) / \(String(format: "%.0f", touched)) MiB |
""")
