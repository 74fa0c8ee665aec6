import ArbiterModels
import Foundation
import Routing

/// Hyper-parameters and serving settings of `train --kind routing`.
public struct RoutingTrainingOptions: Sendable {
    /// Factors of each native head's factorization machine (0: logistic or linear regression).
    public var factors = 4
    public var maxEpochs = 20
    public var learningRate: Float = 0.05
    public var seed: UInt64 = 1
    /// Separate heads for new and returning applicants (else one of each role for all).
    public var splitReturning = false
    public var value: RoutingLayout.Value = .revenue
    public var baseline: RoutingLayout.Baseline = .priority
    /// The model's share of every channel, and overrides by channel code.
    public var share: Float = 0.1
    public var channelShares: [Int: Float] = [:]
    public var epsilon = 0.05
    public var maxProducts = 0
    public var salt: UInt64 = 0
    /// Share of applicants held out for validation (early stopping) and test (metrics).
    public var validationShare = 0.1
    public var testShare = 0.2
    /// Heads taken from a library instead of fitted, by role: a tree model trained on the rows
    /// `headRowsOut` wrote (a binary classifier for `approve`, a regression for `amount`).
    public var importedHeads: [RoutingLayout.Role: ImportedForest] = [:]
    /// Where to write every submission's head row (split, ids, the head's input fields, the labels).
    public var headRowsOut: URL?

    public init() {}
}

/// Held-out quality of the heads: p(approve) against approvals, the amount against funded amounts.
public struct RoutingHeadQuality: Sendable, Equatable {
    public var submissions: Int
    public var approveAUC: Double
    public var approveLogLoss: Double
    /// Root mean squared error of the amount head on approved submissions, and of the lender's average.
    public var amountRMSE: Double
    public var lenderAverageRMSE: Double

    public var metrics: [String: Double] {
        ["test.submissions": Double(submissions), "test.approve_auc": approveAUC, "test.approve_logloss": approveLogLoss,
         "test.amount_rmse": amountRMSE, "test.amount_rmse_lender_average": lenderAverageRMSE]
    }
}

/// A trained routing version and how good its heads are.
public struct TrainedRouting: Sendable {
    public var version: RoutingVersion
    public var test: RoutingHeadQuality
    /// Requests recorded as golden cases (with their routing keys and top_k).
    public var goldenRequests: [(request: RoutingRequest, routingKey: UInt64, topK: Int)]
}

/// Trains `routing` versions from logged submissions and the lender table: a p(approve) head (a
/// factorization machine on log loss, or per population) and an amount head (on squared error over
/// approved submissions), each over the applicant's features, the lender's request features and the lender.
public enum RoutingTrainer {
    enum Split { case train, validation, test }

    static func split(_ applicant: UInt64, _ o: RoutingTrainingOptions) -> Split {
        var h = SplitMix64(seed: applicant &* 0x9E37_79B9_7F4A_7C15 ^ o.seed)
        let u = h.uniform()
        return u < o.testShare ? .test : u < o.testShare + o.validationShare ? .validation : .train
    }

    public static func train(rows: [Submission], lenders: [LenderSpec], options o: RoutingTrainingOptions = RoutingTrainingOptions(),
                             progress: (String) -> Void = { _ in }) throws -> TrainedRouting {
        guard !rows.isEmpty else { throw DataError("no submissions to train on") }
        let schema = RoutingData.schema
        let table = lenders.sorted { $0.id < $1.id }
        let lenderRow = Dictionary(uniqueKeysWithValues: table.enumerated().map { ($1.id, $0) })
        if let stray = rows.first(where: { lenderRow[$0.lender] == nil }) {
            throw DataError("submission of applicant \(stray.applicant) goes to lender \(stray.lender), which the lender table does not hold")
        }
        let fields = RoutingLayout.headFields(schema, lenders: table.count)
        for (role, forest) in o.importedHeads {
            guard forest.featureCount == fields.count else {
                throw DataError("the \(role) head's model takes \(forest.featureCount) features; a routing head's row has \(fields.count): "
                                + fields.map(\.name).joined(separator: ", "))
            }
            guard forest.transform == (role == .approve ? .logistic : .identity) else {
                throw DataError(role == .approve ? "the approve head's model must be a binary classifier" : "the amount head's model must be a regression")
            }
        }
        let splits = rows.map { split($0.applicant, o) }
        let trainRows = rows.indices.filter { splits[$0] == .train }
        let validationRows = rows.indices.filter { splits[$0] == .validation }
        let testRows = rows.indices.filter { splits[$0] == .test }
        guard !trainRows.isEmpty, !validationRows.isEmpty, !testRows.isEmpty else {
            throw DataError("too few applicants to split into train, validation and test (\(rows.count) submissions)")
        }
        let inputs = rows.map { $0.applicantFeatures + $0.lenderFeatures + [Float(lenderRow[$0.lender]!)] }
        if let url = o.headRowsOut {
            try writeHeadRows(url, rows: rows, splits: splits, inputs: inputs, fields: fields)
            progress("head rows: wrote \(rows.count) to \(url.path)")
        }

        // Field normalisation and the encoding, from the training rows.
        let encoding = FieldEncoding(fields: fields)
        let norm = EncodedRows.normalisation(fields: fields, inputs: inputs, rows: trainRows)
        let encoded = EncodedRows(encoding: encoding, norm: norm, inputs: inputs)
        var fm = FMTrainingOptions()
        fm.factors = o.factors
        fm.maxEpochs = o.maxEpochs
        fm.learningRate = o.learningRate
        fm.seed = o.seed

        // Heads.
        let approved = rows.map(\.approved)
        let returningIndex = schema.context.firstIndex { $0.name == "returning" }!
        let isReturning = { (i: Int) in rows[i].applicantFeatures[returningIndex] >= 0.5 }
        var heads: [RoutingVersion.Head] = []
        let populations: [RoutingLayout.Population] = o.splitReturning ? [.new, .returning] : [.all]
        if let forest = o.importedHeads[.approve] {
            progress("approve head: \(forest.source), \(forest.trees.count) trees")
            heads.append(RoutingVersion.Head(role: .approve, model: .trees(forest)))
        } else {
            for population in populations {
                let keep = { (i: Int) in population == .all || (population == .returning) == isReturning(i) }
                let fitted = FMTrainer.fit(encoded, labels: approved, train: trainRows.filter(keep), validation: validationRows.filter(keep), options: fm)
                progress("approve head (\(population)): fitted")
                heads.append(RoutingVersion.Head(role: .approve, population: population, model: .linear(fitted, norm: norm)))
            }
        }
        // The amount given approval, standardised for fitting.
        let funded = trainRows.filter { approved[$0] }.map { Double(rows[$0].fundedAmount) }
        guard !funded.isEmpty else { throw DataError("no approved submission in the training split: nothing to learn amounts from") }
        let mean = funded.reduce(0, +) / Double(funded.count)
        let sd = max((funded.reduce(0) { $0 + ($1 - mean) * ($1 - mean) } / Double(funded.count)).squareRoot(), 1)
        if let forest = o.importedHeads[.amount] {
            progress("amount head: \(forest.source), \(forest.trees.count) trees")
            heads.append(RoutingVersion.Head(role: .amount, model: .trees(forest)))
        } else {
            let targets = rows.map { Float((Double($0.fundedAmount) - mean) / sd) }
            for population in populations {
                let keep = { (i: Int) in approved[i] && (population == .all || (population == .returning) == isReturning(i)) }
                var regression = fm
                regression.learningRate = o.learningRate / 2
                let fitted = FMTrainer.fitRegression(encoded, targets: targets, train: trainRows.filter(keep),
                                                     validation: validationRows.filter(keep), options: regression)
                progress("amount head (\(population)): fitted")
                heads.append(RoutingVersion.Head(role: .amount, population: population,
                                                 model: .linear(fitted, norm: norm, scale: Float(sd), offset: Float(mean))))
            }
        }
        // Each lender's average funded amount on approval (training split; the overall mean for a lender
        // without an approval there).
        var sums: [UInt64: (Double, Int)] = [:]
        for i in trainRows where approved[i] {
            let s = sums[rows[i].lender] ?? (0, 0)
            sums[rows[i].lender] = (s.0 + Double(rows[i].fundedAmount), s.1 + 1)
        }
        let averages = Dictionary(uniqueKeysWithValues: table.map { l in (l.id, Float(sums[l.id].map { $0.0 / Double($0.1) } ?? mean)) })
        let channels = schema.context[schema.context.firstIndex { $0.name == "channel" }!].cardinality
        var shares = [Float](repeating: o.share, count: channels)
        for (c, s) in o.channelShares {
            guard c >= 0, c < channels else { throw DataError("channel \(c) is not a code of the channel feature (0..<\(channels))") }
            shares[c] = s
        }
        var version = RoutingVersion(features: schema, channelFeature: "channel", returningFeature: "returning", capacityFeature: "capacity",
                                     lenders: table, averageAmounts: averages, heads: heads, value: o.value, baseline: o.baseline,
                                     shares: shares, epsilon: o.epsilon, maxProducts: o.maxProducts, salt: o.salt)
        var saltSource = SplitMix64(seed: o.seed ^ 0xE7)
        version.exploreSalt = saltSource.next() >> 11

        // Held-out quality of the heads, scored by the serving code (every test submission as a one-lender
        // request of its applicant).
        let model = try version.model()
        var probabilities: [Float] = [], labels: [Bool] = [], squared = 0.0, squaredAverage = 0.0, approvedCount = 0
        for i in testRows {
            let r = rows[i]
            let out = try model.score(context: r.applicantFeatures, candidates: r.lenderFeatures, candidateCount: 1, ids: [r.lender])
            guard out.codeColumns[0] == 0 else { continue }
            probabilities.append(out.floatColumns[0])
            labels.append(r.approved)
            if r.approved {
                let e = Double(out.floatColumns[1] - r.fundedAmount), a = Double(averages[r.lender]! - r.fundedAmount)
                squared += e * e
                squaredAverage += a * a
                approvedCount += 1
            }
        }
        let quality = RoutingHeadQuality(submissions: labels.count, approveAUC: Metrics.auc(scores: probabilities, labels: labels),
                                         approveLogLoss: Metrics.logLoss(probabilities: probabilities, labels: labels),
                                         amountRMSE: (squared / Double(max(approvedCount, 1))).squareRoot(),
                                         lenderAverageRMSE: (squaredAverage / Double(max(approvedCount, 1))).squareRoot())
        version.notes = [
            "submissions": "\(rows.count) (train \(trainRows.count), validation \(validationRows.count), test \(testRows.count))",
            "seed": "\(o.seed)", "factors": "\(o.factors)", "lenders": "\(table.count)",
        ]

        // Golden requests: test applicants against every lender (states as logged where there are, a fresh
        // day otherwise) and an unknown lender; every row, and the top 3; keys on both arms.
        var golden: [(request: RoutingRequest, routingKey: UInt64, topK: Int)] = []
        var byApplicant: [UInt64: [Int]] = [:]
        for i in testRows { byApplicant[rows[i].applicant, default: []].append(i) }
        let unknown = (table.last?.id ?? 0) &+ 1
        for (n, applicant) in byApplicant.keys.sorted().prefix(3).enumerated() {
            let logged = byApplicant[applicant]!
            var states: [Float] = []
            for (k, l) in table.enumerated() {
                if let i = logged.first(where: { rows[$0].lender == l.id }) { states += rows[i].lenderFeatures } else { states += [k % 7 == 3 ? 0 : 20, 0.5] }
            }
            let request = RoutingRequest(applicant: applicant, features: rows[logged[0]].applicantFeatures,
                                         lenders: table.map(\.id) + [unknown], lenderFeatures: states + [5, 0.1])
            golden.append((request, UInt64(n) &* 0x1234_5678_9ABC + 7, 0))
            golden.append((request, UInt64(n) &* 0x1234_5678_9ABC + 7, 3))
        }
        if let request = golden.first?.request {
            // A key on each arm, and one that explores, when the version has them (as the served model says).
            let n = request.lenders.count
            var found: Set<String> = []
            for key in UInt64(1)...2_000 where found.count < 3 {
                let out = try model.score(context: request.features, candidates: request.lenderFeatures, candidateCount: n,
                                          ids: request.lenders, routingKey: key, topK: 5)
                let arm = out.codeColumns[n], explores = out.codeColumns[(2 * n)..<(3 * n)].contains(1)
                if found.insert(explores ? "explore" : arm == 0 ? "model" : "baseline").inserted { golden.append((request, key, 5)) }
            }
        }
        return TrainedRouting(version: version, test: quality, goldenRequests: golden)
    }

    /// Writes the head rows: `split,applicant_id,lender_id,` the head's input fields, then `approved,funded_amount`.
    static func writeHeadRows(_ url: URL, rows: [Submission], splits: [Split], inputs: [[Float]], fields: [Feature]) throws {
        var text = (["split", "applicant_id", "lender_id"] + fields.map(\.name) + ["approved", "funded_amount"]).joined(separator: ",") + "\n"
        text.reserveCapacity(rows.count * 96)
        for (i, r) in rows.enumerated() {
            let split = switch splits[i] { case .train: "train"; case .validation: "validation"; case .test: "test" }
            text += ([split, "\(r.applicant)", "\(r.lender)"] + inputs[i].map { "\($0)" } + [r.approved ? "1" : "0", "\(r.fundedAmount)"])
                .joined(separator: ",") + "\n"
        }
        do {
            try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
            try text.write(to: url, atomically: true, encoding: .utf8)
        } catch {
            throw DataError("cannot write \(url.path): \(error.localizedDescription)")
        }
    }
}
