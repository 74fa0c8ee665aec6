import ArbiterModels
import ArbiterStore
import ArbiterTraining
import Foundation
import Gbdt

/// Times Arbiter's tree kernel as the server runs it (a `gbdt` version published into a store, loaded
/// from the map, scored through `ScoringModel.score` with reused buffers), one thread, at batch sizes 1,
/// 200 and 10,000 over the same rows as bench/gbdt/kernel_peers.py. Prints one JSON line per batch size.
///
///   gbdt-kernel MODEL_FILE (xgboost .json | lightgbm .txt) ROWS.csv [SECONDS]
@main
enum GbdtKernel {
    static func main() throws {
        let args = CommandLine.arguments
        guard args.count >= 3 else {
            FileHandle.standardError.write(Data("usage: gbdt-kernel MODEL_FILE ROWS.csv [SECONDS]\n".utf8))
            exit(2)
        }
        let file = args[1]
        let seconds = args.count > 3 ? Double(args[3]) ?? 2 : 2
        let format: ForestFormat = file.hasSuffix(".json") ? .xgboostJSON : .lightgbmText
        let forest = try ImportedForest.read(format, file: file)
        let rows = try GbdtImport.readRows(args[2], featureCount: forest.featureCount)
        let schema = try GbdtImport.schema(for: forest, options: GbdtImportOptions(), file: file)
        let store = FileManager.default.temporaryDirectory.appendingPathComponent("gbdt-kernel-\(getpid())").path
        defer { try? FileManager.default.removeItem(atPath: store) }
        let env = try StoreEnvironment.open(path: store, configuration: StoreConfiguration(mapSize: 1 << 30, create: true))
        try GbdtImport.publish(forest, schema: schema, golden: GbdtImport.goldenCases(forest, schema: schema, rows: []), model: "m",
                               catalog: Catalog(environment: env))
        var registry = ModelRegistry()
        registry.register(kind: GbdtLayout.kind, factory: GbdtModel.factory)
        let model = try registry.load(LoadedVersion(environment: env, model: "m"))
        let layout = (model.manifest.parameters[GbdtLayout.depthParameter] ?? 0) > 0 ? "perfect" : "general"
        let flat = rows.flatMap { $0 }
        let f = forest.featureCount
        var scores = [Float](repeating: 0, count: rows.count)
        var dummyF = [Float](repeating: 0, count: 1)
        var dummyC = [UInt8](repeating: 0, count: 1)
        // The largest difference from the reference walk, as a check that the timed path is the right one.
        var worst = 0.0
        for batch in [1, 200, 10_000] {
            let starts = Array(stride(from: 0, through: rows.count - batch, by: batch).prefix(50))
            var samples: [Double] = []
            let clock = ContinuousClock()
            let begin = clock.now
            var k = 0
            flat.withUnsafeBufferPointer { all in
                scores.withUnsafeMutableBufferPointer { sp in
                    dummyF.withUnsafeMutableBufferPointer { fp in
                        dummyC.withUnsafeMutableBufferPointer { cp in
                            while clock.now - begin < .seconds(seconds) || samples.count < 15 {
                                let s = starts[k % starts.count]
                                let input = UnsafeBufferPointer(rebasing: all[(s * f)..<((s + batch) * f)])
                                let t0 = clock.now
                                _ = try? model.score(ScoreBatch(context: UnsafeBufferPointer(start: nil, count: 0), candidates: input, candidateCount: batch),
                                            into: ScoreOutput(scores: sp.baseAddress! + s, floatColumns: fp.baseAddress!,
                                                              codeColumns: cp.baseAddress!, candidateCount: batch))
                                let d = clock.now - t0
                                samples.append(Double(d.components.seconds) + Double(d.components.attoseconds) * 1e-18)
                                k += 1
                            }
                        }
                    }
                }
            }
            for s in starts.prefix(3) {
                for r in s..<(s + batch) { worst = max(worst, abs(Double(scores[r]) - forest.predict(rows[r]))) }
            }
            samples.sort()
            let median = samples[samples.count / 2]
            print("{\"library\": \"arbiter gbdt kernel (\(layout) layout)\", \"batch\": \(batch), \"us_per_call\": \(median * 1e6), \"ns_per_row\": \(median * 1e9 / Double(batch)), \"trees\": \(forest.trees.count), \"depth\": \(forest.maxDepth), \"max_abs_diff_from_reference\": \(worst)}")
        }
    }
}
