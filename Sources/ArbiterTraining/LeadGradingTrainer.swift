import ArbiterModels
import ArbiterStore
import Foundation
import LeadGrading

/// Which split a row belongs to.
public enum DataSplit: Sendable {
    case train, validation, test

    /// Lead grading's rule, by the row's index in the file: with the default holdout (20% test, 10%
    /// validation) `i % 10` in {0, 1} is the test split (the reported metrics and the grade thresholds), 2 the
    /// validation split (early stopping), the rest trains — `scripts/lightgbm_reference.py` uses the same rule.
    /// Other fractions place row `i` by the radical inverse of `i` in base 10 (its digits reversed after the
    /// point: 0.d₀d₁d₂…, d₀ = i % 10), which spreads each split evenly through the file and reduces to the
    /// rule above for whole tenths.
    public static func of(row i: Int, holdout: Holdout = .init()) -> DataSplit {
        holdout.split(at: radicalInverse10(i))
    }

    static func radicalInverse10(_ i: Int) -> Double {
        var n = i, u = 0.0, scale = 0.1
        while n > 0 {
            u += Double(n % 10) * scale
            n /= 10
            scale /= 10
        }
        return u
    }
}

/// The shares of the input held back from training: `test` for the reported metrics (and lead grading's grade
/// thresholds), `validation` for early stopping. Both above 0 and together at most 0.9.
public struct Holdout: Sendable, Equatable {
    public let test: Double
    public let validation: Double

    /// 20% test, 10% validation.
    public init() {
        test = 0.2
        validation = 0.1
    }

    public init(test: Double, validation: Double) throws(DataError) {
        guard test.isFinite, test > 0, test < 1 else { throw DataError("the test fraction must be above 0 and below 1, got \(test)") }
        guard validation.isFinite, validation > 0, validation < 1 else {
            throw DataError("the validation fraction must be above 0 and below 1, got \(validation)")
        }
        guard test + validation <= 0.9 + 1e-12 else {
            throw DataError("the test and validation fractions leave \(Int(((1 - test - validation) * 100).rounded()))% to train on; they may hold back at most 90%")
        }
        self.test = test
        self.validation = validation
    }

    /// The split of a row placed at `u` in [0, 1): test below `test`, then validation, then train.
    public func split(at u: Double) -> DataSplit {
        u < test - 1e-12 ? .test : u < test + validation - 1e-12 ? .validation : .train
    }
}

/// Held-out figures of one stage.
public struct StageMetrics: Sendable, Equatable {
    public var stage: String
    public var rows: Int
    public var auc: Double
    public var logLoss: Double
    public var epochs: Int
}

/// A trained lead-grading model, ready to publish.
public struct TrainedLeadModel: Sendable {
    public var schema: FeatureSchema
    public var norm: [Float]
    public var stages: [FMParameters]
    public var thresholds: [Float]
    public var metrics: [StageMetrics]
    /// AUC of the chained p_hire against `hired` over every test row.
    public var overallHireAUC: Double
    public var golden: [GoldenCase]
    public var trainingNotes: [String: String]

    public var metricsDictionary: [String: Double] {
        var m: [String: Double] = ["hire_overall.auc": overallHireAUC]
        for s in metrics {
            m["\(s.stage).auc"] = s.auc
            m["\(s.stage).logloss"] = s.logLoss
            m["\(s.stage).test_rows"] = Double(s.rows)
            m["\(s.stage).epochs"] = Double(s.epochs)
        }
        return m
    }
}

public enum LeadGradingTrainer {
    /// Progress events, for a terminal.
    public enum Event: Sendable {
        case stageStarted(String, trainRows: Int, validationRows: Int)
        case epoch(String, EpochReport)
    }

    public static func train(rows: [LeadRow], options: FMTrainingOptions = FMTrainingOptions(), holdout: Holdout = Holdout(),
                             progress: (Event) -> Void = { _ in }) throws -> TrainedLeadModel {
        let schema = LeadData.schema
        let fields = schema.context + schema.candidate
        let encoding = FieldEncoding(fields: fields)
        var train: [Int] = [], validation: [Int] = [], test: [Int] = []
        for i in rows.indices {
            switch DataSplit.of(row: i, holdout: holdout) {
            case .train: train.append(i)
            case .validation: validation.append(i)
            case .test: test.append(i)
            }
        }
        guard train.count >= 20, !validation.isEmpty, test.count >= 2 else {
            throw DataError("too few rows to train (\(rows.count)); use at least 100")
        }

        // Standardize numeric fields with training-split statistics.
        var norm = [Float](repeating: 0, count: fields.count * 2)
        for (j, f) in fields.enumerated() {
            norm[2 * j] = 0
            norm[2 * j + 1] = 1
            guard f.kind == .numeric else { continue }
            var s = 0.0, ss = 0.0
            for r in train {
                let x = Double(value(rows[r], field: j, contextCount: schema.context.count))
                s += x
                ss += x * x
            }
            let n = Double(train.count)
            let mean = s / n
            let std = max((ss / n - mean * mean).squareRoot(), 1e-6)
            norm[2 * j] = Float(mean)
            norm[2 * j + 1] = Float(1 / std)
        }

        var enc = EncodedRows(fields: fields.count, dimension: encoding.dimension,
                              indices: [], values: [])
        enc.indices.reserveCapacity(rows.count * fields.count)
        enc.values.reserveCapacity(rows.count * fields.count)
        for row in rows {
            for j in fields.indices {
                let x = value(row, field: j, contextCount: schema.context.count)
                let (i, v) = encoding.encode(field: j, x, mean: norm[2 * j], invStd: norm[2 * j + 1])
                enc.indices.append(Int32(i))
                enc.values.append(v)
            }
        }

        // Each stage learns on the rows that reached it: contact on all, interview on contacted, hire on
        // interviewed.
        let reached: [(LeadRow) -> Bool] = [{ _ in true }, { $0.contacted }, { $0.interviewed }]
        let label: [(LeadRow) -> Bool] = [{ $0.contacted }, { $0.interviewed }, { $0.hired }]
        var stages: [FMParameters] = []
        var metrics: [StageMetrics] = []
        for (s, name) in LeadGradingLayout.stages.enumerated() {
            let tr = train.filter { reached[s](rows[$0]) }
            let va = validation.filter { reached[s](rows[$0]) }
            let te = test.filter { reached[s](rows[$0]) }
            let labels = rows.map(label[s])
            progress(.stageStarted(name, trainRows: tr.count, validationRows: va.count))
            var o = options
            o.seed = options.seed &+ UInt64(s)
            var epochs = 0
            let params = FMTrainer.fit(enc, labels: labels, train: tr, validation: va, options: o) { report in
                epochs = report.epoch
                progress(.epoch(name, report))
            }
            stages.append(params)
            let pred = params.predict(enc, rows: te)
            let y = te.map { labels[$0] }
            metrics.append(StageMetrics(stage: name, rows: te.count, auc: Metrics.auc(scores: pred, labels: y),
                                        logLoss: Metrics.logLoss(probabilities: pred, labels: y), epochs: epochs))
        }

        // Chained p_hire on the whole test split: the grade thresholds and the overall AUC.
        let perStage = stages.map { $0.predict(enc, rows: test) }
        let pHire = test.indices.map { perStage[0][$0] * perStage[1][$0] * perStage[2][$0] }
        var cumulative = 0.0
        var thresholds: [Float] = []
        for share in LeadGradingLayout.gradeShares {
            cumulative += share
            thresholds.append(Metrics.quantile(pHire, 1 - cumulative))
        }
        let overall = Metrics.auc(scores: pHire, labels: test.map { rows[$0].hired })

        var model = TrainedLeadModel(schema: schema, norm: norm, stages: stages, thresholds: thresholds,
                                     metrics: metrics, overallHireAUC: overall, golden: [],
                                     trainingNotes: ["rows": String(rows.count), "factors": String(options.factors),
                                                     "optimizer": "adagrad", "learning_rate": String(options.learningRate),
                                                     "l2": String(options.l2), "seed": String(options.seed)])
        model.golden = makeGolden(model, rows: test.prefix(15).map { rows[$0] })
        return model
    }

    @inline(__always)
    static func value(_ row: LeadRow, field j: Int, contextCount: Int) -> Float {
        j < contextCount ? row.context[j] : row.candidate[j - contextCount]
    }

    /// Golden cases: a few test leads grouped under one context each, scored by the serving code.
    static func makeGolden(_ m: TrainedLeadModel, rows: [LeadRow]) -> [GoldenCase] {
        var cases: [GoldenCase] = []
        var i = 0
        while i + 5 <= rows.count {
            let group = rows[i..<i + 5]
            let ctx = group.first!.context
            let cand = group.flatMap(\.candidate)
            let r = score(m, context: ctx, candidates: cand, count: group.count)
            cases.append(GoldenCase(context: ctx, candidates: cand, candidateCount: group.count,
                                    scores: r.scores, floatColumns: r.floats, codeColumns: r.codes))
            i += 5
        }
        return cases
    }

    /// Scores with `LeadGradingScorer` over the trained arrays: exactly what the server will run.
    public static func score(_ m: TrainedLeadModel, context: [Float], candidates: [Float], count: Int)
        -> (scores: [Float], floats: [Float], codes: [UInt8]) {
        let k = m.stages[0].factorCount
        let encoding = FieldEncoding(fields: m.schema.context + m.schema.candidate)
        var scores = [Float](repeating: 0, count: count)
        var floats = [Float](repeating: 0, count: count * 3)
        var codes = [UInt8](repeating: 0, count: count)
        m.stages[0].withMachine { a in
            m.stages[1].withMachine { b in
                m.stages[2].withMachine { c in
                    m.norm.withUnsafeBufferPointer { norm in
                        m.thresholds.withUnsafeBufferPointer { t in
                            let scorer = LeadGradingScorer(encoding: encoding, contextFields: m.schema.context.count, k: k,
                                                           norm: norm.baseAddress!, thresholds: t.baseAddress!,
                                                           machines: [a, b, c])
                            context.withUnsafeBufferPointer { ctx in
                                candidates.withUnsafeBufferPointer { cand in
                                    scores.withUnsafeMutableBufferPointer { sp in
                                        floats.withUnsafeMutableBufferPointer { fp in
                                            codes.withUnsafeMutableBufferPointer { cp in
                                                scorer.score(ScoreBatch(context: ctx, candidates: cand, candidateCount: count),
                                                             into: ScoreOutput(scores: sp.baseAddress!, floatColumns: fp.baseAddress!,
                                                                               codeColumns: cp.baseAddress!, candidateCount: count))
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        return (scores, floats, codes)
    }

    /// Publishes `m` as a new version of `model` (and makes it active) in one write transaction.
    /// `inTransaction` is passed to ``Catalog/publish(model:kind:manifest:tensors:metrics:activate:now:inTransaction:)``.
    @discardableResult
    public static func publish(_ m: TrainedLeadModel, model: String, catalog: Catalog, activate: Bool = true,
                               inTransaction: ((UInt64) throws -> Void)? = nil) throws -> UInt64 {
        let manifest = ModelManifest(kind: LeadGradingLayout.kind, schema: m.schema,
                                     parameters: [LeadGradingLayout.factorsParameter: Double(m.stages[0].factorCount)],
                                     golden: m.golden, goldenTolerance: 1e-5, training: m.trainingNotes)
        let d = FieldEncoding(fields: m.schema.context + m.schema.candidate).dimension
        var tensors: [TensorData] = [
            TensorData(name: LeadGradingLayout.norm, shape: [m.schema.context.count + m.schema.candidate.count, 2], values: m.norm),
            TensorData(name: LeadGradingLayout.thresholds, shape: [3], values: m.thresholds),
        ]
        for (s, name) in LeadGradingLayout.stages.enumerated() {
            let p = m.stages[s]
            tensors.append(TensorData(name: LeadGradingLayout.bias(name), shape: [1], values: [p.bias]))
            tensors.append(TensorData(name: LeadGradingLayout.linear(name), shape: [d], values: p.linear))
            tensors.append(TensorData(name: LeadGradingLayout.factors(name), shape: [d, p.factorCount], values: p.factors))
        }
        return try catalog.publish(model: model, kind: LeadGradingLayout.kind, manifest: manifest.encoded(),
                                   tensors: tensors, metrics: m.metricsDictionary, activate: activate,
                                   inTransaction: inTransaction)
    }
}
