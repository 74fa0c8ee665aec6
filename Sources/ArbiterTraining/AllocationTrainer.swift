import Allocation
import ArbiterModels

/// Fits the `allocation` kind's pair model — a factorization machine on historical pairs, hired or not — and
/// makes the version around it: the default schema and rules, golden cases from a day of `world`.
public enum AllocationTrainer {
    public struct Result: Sendable {
        public var version: AllocationVersion
        /// Held-out (test split) AUC and log loss of the pair model, and the split sizes.
        public var auc: Double
        public var logLoss: Double
        public var trainRows: Int, validationRows: Int, testRows: Int
    }

    /// The default holdout: 10% test, 10% validation.
    public static let defaultHoldout = try! Holdout(test: 0.1, validation: 0.1)

    /// Trains on `rows` (the default schema, `schema` giving its city count), holding back `holdout` (test, and
    /// validation for early stopping) by row position hashed.
    public static func train(rows: [AllocationPairRow], schema: FeatureSchema = AllocationWorld.schema(), options: FMTrainingOptions,
                             holdout: Holdout = defaultHoldout, progress: (EpochReport) -> Void = { _ in }) throws -> Result {
        guard rows.count >= 20 else { throw DataError("\(rows.count) pairs: too few to train on (20 or more)") }
        let rules = AllocationLayout.defaultRules(schema)
        let (lead, agent) = AllocationLayout.sides(schema, rules)
        let fields = (lead + agent).map { schema.candidate[$0] }
        var train: [Int] = [], validation: [Int] = [], test: [Int] = []
        for i in rows.indices {
            var h = SplitMix64(seed: UInt64(i) &+ options.seed &* 31)
            // A place in [0, 1) from the hash: its tenth from the first draw (1 first, then 0: with the default
            // holdout the same rows as before fractions could be chosen — 1 test, 0 validation), the rest from
            // a second.
            let tenth = h.next() % 10
            let place = (Double(tenth == 0 ? 1 : tenth == 1 ? 0 : tenth) + Double(h.next() >> 11) / 9_007_199_254_740_992) / 10
            switch holdout.split(at: place) {
            case .validation: validation.append(i)
            case .test: test.append(i)
            case .train: train.append(i)
            }
        }
        let inputs = rows.map(\.input)
        let labels = rows.map(\.hired)
        let norm = EncodedRows.normalisation(fields: fields, inputs: inputs, rows: train)
        let encoded = EncodedRows(encoding: FieldEncoding(fields: fields), norm: norm, inputs: inputs)
        let machine = FMTrainer.fit(encoded, labels: labels, train: train, validation: validation, options: options, progress: progress)
        let predicted = machine.predict(encoded, rows: test)
        let testLabels = test.map { labels[$0] }
        var version = AllocationVersion(schema: schema, rules: rules, machine: machine, norm: norm)
        version.notes = ["pairs": String(rows.count), "factors": String(options.factors), "seed": String(options.seed)]
        return Result(version: version, auc: Metrics.auc(scores: predicted, labels: testLabels),
                      logLoss: Metrics.logLoss(probabilities: predicted, labels: testLabels),
                      trainRows: train.count, validationRows: validation.count, testRows: test.count)
    }

    /// A small day of a generated world, as golden input: every answer column is exercised (placed leads,
    /// leads without an allowed agent, full agents).
    public static func goldenRequest(cities: Int = 12) -> AllocationRequest {
        let world = AllocationWorld(seed: 77, agents: 24, leadsPerDay: 60, cities: cities)
        return world.request(day: 1, leads: 60, minScore: 0.01).request
    }
}
