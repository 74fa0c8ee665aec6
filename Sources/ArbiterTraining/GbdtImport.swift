import ArbiterModels
import ArbiterStore
import Foundation
import Gbdt

/// How an imported tree model's features become a `gbdt` schema.
public struct GbdtImportOptions: Sendable {
    /// The first this many features are the request's context; the rest are each candidate's. Default 0.
    public var contextFeatures = 0
    /// Names for the features, in the model's order; nil keeps the model file's (default).
    public var featureNames: [String]?
    /// Features sent as integer codes, with their cardinality (validated like any categorical feature; the
    /// trees still split on the code's value). Default none.
    public var categorical: [String: Int] = [:]
    /// Features for which NaN is refused. Default none: every feature accepts missing values, which the
    /// trees send to each split's default side.
    public var refuseMissing: Set<String> = []

    public init() {}
}

/// Importing a library's tree model as a `gbdt` version: schema, checks against the library's own
/// predictions, golden cases, publishing.
public enum GbdtImport {
    /// Largest absolute difference allowed between Arbiter's prediction and the library's, on the output
    /// scale.
    public static let tolerance = 1e-5

    /// The schema the options describe for `forest`.
    public static func schema(for forest: ImportedForest, options: GbdtImportOptions, file: String) throws(ImportError) -> FeatureSchema {
        let names = options.featureNames ?? forest.featureNames
        guard names.count == forest.featureCount else {
            throw ImportError(file: file, "\(names.count) feature names given; the model has \(forest.featureCount) features (\(forest.featureNames.prefix(8).joined(separator: ", "))\(forest.featureCount > 8 ? ", …" : ""))")
        }
        guard (0...names.count).contains(options.contextFeatures) else {
            throw ImportError(file: file, "--context-features \(options.contextFeatures) is more than the model's \(names.count) features")
        }
        for n in options.categorical.keys where !names.contains(n) {
            throw ImportError(file: file, "categorical feature '\(n)' is not one of the model's features")
        }
        for n in options.refuseMissing where !names.contains(n) {
            throw ImportError(file: file, "feature '\(n)' (refusing missing values) is not one of the model's features")
        }
        let features = names.map { n -> Feature in
            let missing = !options.refuseMissing.contains(n)
            if let card = options.categorical[n] { return .categorical(n, card, allowsMissing: missing) }
            return .numeric(n, allowsMissing: missing)
        }
        let schema = FeatureSchema(context: Array(features.prefix(options.contextFeatures)),
                                   candidate: Array(features.dropFirst(options.contextFeatures)), outputs: [])
        do { try schema.check() } catch { throw ImportError(file: file, "\(error)") }
        return schema
    }

    /// Rows from a CSV file: one row per line, `featureCount` comma-separated values; an empty field, `nan`
    /// or `NaN` is a missing value. A first line that is not numbers is taken as a header and skipped.
    public static func readRows(_ file: String, featureCount: Int) throws(ImportError) -> [[Float]] {
        let text: String
        do { text = try String(contentsOfFile: file, encoding: .utf8) } catch {
            throw ImportError(file: file, "cannot read the rows: \(error.localizedDescription)")
        }
        return try parseRows(text, featureCount: featureCount, file: file)
    }

    /// The rows of CSV `text` (as `readRows` reads a file); `file` names it in errors.
    public static func parseRows(_ text: String, featureCount: Int, file: String) throws(ImportError) -> [[Float]] {
        var rows: [[Float]] = []
        for (n, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let l = line.hasSuffix("\r") ? line.dropLast() : line
            if l.isEmpty { continue }
            let fields = l.split(separator: ",", omittingEmptySubsequences: false)
            guard fields.count == featureCount else {
                throw ImportError(file: file, "line \(n + 1) has \(fields.count) values; the model has \(featureCount) features")
            }
            var row: [Float] = []
            row.reserveCapacity(featureCount)
            var header = false
            for (c, f) in fields.enumerated() {
                let s = f.trimmingCharacters(in: .whitespaces)
                if s.isEmpty || s == "nan" || s == "NaN" { row.append(.nan); continue }
                guard let v = Float(s), v.isFinite else {
                    if n == 0 { header = true; break }
                    throw ImportError(file: file, "line \(n + 1) column \(c + 1): '\(s)' is not a finite number")
                }
                row.append(v)
            }
            if !header { rows.append(row) }
        }
        return rows
    }

    /// One prediction per line.
    public static func readPredictions(_ file: String) throws(ImportError) -> [Double] {
        let text: String
        do { text = try String(contentsOfFile: file, encoding: .utf8) } catch {
            throw ImportError(file: file, "cannot read the predictions: \(error.localizedDescription)")
        }
        var out: [Double] = []
        for (n, line) in text.split(separator: "\n").enumerated() {
            let s = line.trimmingCharacters(in: .whitespacesAndNewlines)
            if s.isEmpty { continue }
            guard let v = Double(s), v.isFinite else { throw ImportError(file: file, "line \(n + 1): '\(s)' is not a finite number") }
            out.append(v)
        }
        return out
    }

    /// Checks `forest`'s predictions for `rows` against the library's; returns the largest absolute
    /// difference, or throws naming the first row off by more than ``tolerance``.
    @discardableResult
    public static func check(_ forest: ImportedForest, rows: [[Float]], expected: [Double], file: String) throws(ImportError) -> Double {
        guard rows.count == expected.count else {
            throw ImportError(file: file, "\(expected.count) predictions for \(rows.count) rows")
        }
        var worst = 0.0
        for (i, row) in rows.enumerated() {
            let d = abs(forest.predict(row) - expected[i])
            guard d <= tolerance else {
                throw ImportError(file: file, "row \(i + 1): Arbiter predicts \(forest.predict(row)), the library \(expected[i]) (difference \(d), over \(tolerance))")
            }
            worst = max(worst, d)
        }
        return worst
    }

    /// Golden cases: four requests of four candidates each, from `rows` when given (the library-checked
    /// rows), else from rows made to sit on and next to the model's thresholds, with missing values where
    /// the schema allows them. Expected outputs are the forest's own predictions (checked against the
    /// library's when rows were given).
    public static func goldenCases(_ forest: ImportedForest, schema: FeatureSchema, rows given: [[Float]]) -> [GoldenCase] {
        let features = schema.context + schema.candidate
        var rows = Array(given.prefix(16))
        if rows.count < 16 {
            var thresholds = [[Float]](repeating: [], count: forest.featureCount)
            for t in forest.trees {
                for case .split(let f, let thr, _, _, _) in t.nodes where thr.isFinite && thresholds[f].count < 64 { thresholds[f].append(thr) }
            }
            var rng = SplitMix64(seed: 0x6762_6474)
            while rows.count < 16 {
                rows.append(features.enumerated().map { j, f -> Float in
                    if f.allowsMissing && rng.uniform() < 0.15 { return .nan }
                    if f.kind == .categorical { return Float(Int(rng.next() % UInt64(f.cardinality))) }
                    let ts = thresholds[j]
                    guard !ts.isEmpty else { return 0 }
                    let t = ts[Int(rng.next() % UInt64(ts.count))]
                    switch rng.next() % 3 {
                    case 0: return t
                    case 1: return t.nextDown
                    default: return t.nextUp
                    }
                })
            }
        }
        let c = schema.context.count
        return (0..<4).map { k in
            let block = rows[(4 * k)..<(4 * k + 4)]
            let context = Array(block.first!.prefix(c))
            let candidates = block.flatMap { $0.dropFirst(c) }
            let scores = block.map { Float(forest.predict(context + Array($0.dropFirst(c)))) }
            return GoldenCase(context: context, candidates: candidates, candidateCount: 4, scores: scores, floatColumns: [], codeColumns: [])
        }
    }

    /// Publishes `forest` as a `gbdt` version of `model` in one write transaction.
    @discardableResult
    public static func publish(_ forest: ImportedForest, schema: FeatureSchema, golden: [GoldenCase], model: String,
                               catalog: Catalog, activate: Bool = true, metrics: [String: Double] = [:],
                               notes: [String: String] = [:], inTransaction: ((UInt64) throws -> Void)? = nil) throws -> UInt64 {
        let (tensors, parameters) = forest.layout()
        var training = notes
        training["source"] = forest.source
        let manifest = ModelManifest(kind: GbdtLayout.kind, schema: schema, parameters: parameters, golden: golden,
                                     goldenTolerance: Float(tolerance), training: training)
        return try catalog.publish(model: model, kind: GbdtLayout.kind, manifest: manifest.encoded(), tensors: tensors,
                                   metrics: metrics, activate: activate, inTransaction: inTransaction)
    }
}
