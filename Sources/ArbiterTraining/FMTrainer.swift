import ArbiterModels

/// Rows encoded for the factorization machine: each row has exactly `fields` active (index, value) pairs.
public struct EncodedRows: Sendable {
    public let fields: Int
    public let dimension: Int
    public var indices: [Int32]
    public var values: [Float]

    public var count: Int { indices.count / max(fields, 1) }
}

extension EncodedRows {
    /// Each numeric field's mean and inverse standard deviation over `rows` of `inputs` (categorical fields: 0
    /// and 1): the `[fields × 2]` normalisation a linear head stores beside its machine.
    public static func normalisation(fields: [Feature], inputs: [[Float]], rows: [Int]) -> [Float] {
        var norm = [Float](repeating: 0, count: 2 * fields.count)
        for (j, f) in fields.enumerated() {
            guard f.kind == .numeric else {
                norm[2 * j + 1] = 1
                continue
            }
            let values = rows.map { Double(inputs[$0][j]) }
            let mean = values.reduce(0, +) / Double(max(values.count, 1))
            let variance = values.reduce(0) { $0 + ($1 - mean) * ($1 - mean) } / Double(max(values.count, 1))
            norm[2 * j] = Float(mean)
            norm[2 * j + 1] = Float(1 / max(variance.squareRoot(), 1e-6))
        }
        return norm
    }

    /// `inputs` (rows of raw field values) encoded by `encoding` with `norm`, as the serving code encodes them.
    public init(encoding: FieldEncoding, norm: [Float], inputs: [[Float]]) {
        let fields = encoding.fields.count
        self.init(fields: fields, dimension: encoding.dimension, indices: [], values: [])
        indices.reserveCapacity(inputs.count * fields)
        values.reserveCapacity(inputs.count * fields)
        for input in inputs {
            for j in 0..<fields {
                let (index, value) = encoding.encode(field: j, input[j], mean: norm[2 * j], invStd: norm[2 * j + 1])
                indices.append(Int32(index))
                values.append(value)
            }
        }
    }
}

/// Hyper-parameters of one factorization machine fit.
public struct FMTrainingOptions: Sendable {
    public var factors = 8
    public var learningRate: Float = 0.05
    /// L2 penalty, applied to the active parameters of each example.
    public var l2: Float = 1e-5
    public var maxEpochs = 30
    /// Stop after this many epochs without a better validation log loss (the best epoch is kept).
    public var patience = 2
    public var seed: UInt64 = 1
    public var initScale: Float = 0.01

    public init() {}
}

/// The parameters of one fitted machine.
public struct FMParameters: Sendable {
    public var bias: Float
    public var linear: [Float]
    public var factors: [Float]
    public let factorCount: Int

    public init(bias: Float, linear: [Float], factors: [Float], factorCount: Int) {
        self.bias = bias
        self.linear = linear
        self.factors = factors
        self.factorCount = factorCount
    }

    /// Runs `body` with the kernel over these parameters.
    public func withMachine<T>(_ body: (FactorizationMachine) throws -> T) rethrows -> T {
        try linear.withUnsafeBufferPointer { w in
            try factors.withUnsafeBufferPointer { v in
                try body(FactorizationMachine(bias: bias, linear: w.baseAddress!, factors: v.baseAddress!, factorCount: factorCount))
            }
        }
    }

    /// Predicted probabilities for `rows` of `data`.
    public func predict(_ data: EncodedRows, rows: [Int]) -> [Float] {
        predictRaw(data, rows: rows).map(Kernels.sigmoid)
    }

    /// The machine's raw outputs (logits, or a regression's values) for `rows` of `data`.
    public func predictRaw(_ data: EncodedRows, rows: [Int]) -> [Float] {
        withMachine { fm in
            withUnsafeTemporaryAllocation(of: Float.self, capacity: factorCount) { sums in
                rows.map { r in
                    var acc = FactorizationMachine.Accumulator(sums: sums.baseAddress!, factorCount: factorCount)
                    for j in 0..<data.fields {
                        fm.add(Int(data.indices[r * data.fields + j]), data.values[r * data.fields + j], to: &acc)
                    }
                    return fm.output(acc)
                }
            }
        }
    }
}

/// What happened in one epoch, for progress display.
public struct EpochReport: Sendable {
    public var epoch: Int
    public var trainLogLoss: Double
    public var validationLogLoss: Double
    public var improved: Bool
}

/// Fits a factorization machine with AdaGrad, with L2 and early stopping on a validation set: on log loss
/// (``fit(_:labels:train:validation:options:progress:)``) or on squared error (``fitRegression``).
public enum FMTrainer {
    public static func fit(_ data: EncodedRows, labels: [Bool], train: [Int], validation: [Int],
                           options o: FMTrainingOptions, progress: (EpochReport) -> Void = { _ in }) -> FMParameters {
        // Start the bias at the base rate's logit.
        let pos = train.reduce(0) { $0 + (labels[$1] ? 1 : 0) }
        let rate = min(max(Double(pos) / Double(max(train.count, 1)), 1e-4), 1 - 1e-4)
        let validationLabels = validation.map { labels[$0] }
        return fit(data, train: train, options: o, bias: Float(_log(rate / (1 - rate))), progress: progress,
                   step: { r, y in
                       let prob = Kernels.sigmoid(y)
                       let q = Double(min(max(prob, 1e-7), 1 - 1e-7))
                       return (labels[r] ? -_log(q) : -_log(1 - q), prob - (labels[r] ? 1 : 0))
                   },
                   validationLoss: validation.isEmpty ? nil : { p in
                       Metrics.logLoss(probabilities: p.predict(data, rows: validation), labels: validationLabels)
                   })
    }

    /// Fits the machine's raw output to `targets` by squared error (a regression; scale the targets first —
    /// the learning rate assumes values of order 1). The reported losses are mean squared errors.
    public static func fitRegression(_ data: EncodedRows, targets: [Float], train: [Int], validation: [Int],
                                     options o: FMTrainingOptions, progress: (EpochReport) -> Void = { _ in }) -> FMParameters {
        let mean = train.reduce(0.0) { $0 + Double(targets[$1]) } / Double(max(train.count, 1))
        return fit(data, train: train, options: o, bias: Float(mean), progress: progress,
                   step: { r, y in
                       let e = y - targets[r]
                       return (Double(e * e), e)
                   },
                   validationLoss: validation.isEmpty ? nil : { p in
                       let y = p.predictRaw(data, rows: validation)
                       return zip(y, validation).reduce(0.0) { $0 + Double(($1.0 - targets[$1.1]) * ($1.0 - targets[$1.1])) } / Double(validation.count)
                   })
    }

    /// The AdaGrad loop: `step(row, output)` gives the example's loss and the loss's derivative in the output.
    static func fit(_ data: EncodedRows, train: [Int], options o: FMTrainingOptions, bias: Float, progress: (EpochReport) -> Void,
                    step: (Int, Float) -> (loss: Double, gradient: Float), validationLoss: ((FMParameters) -> Double)?) -> FMParameters {
        let d = data.dimension, k = o.factors, F = data.fields
        var rng = SplitMix64(seed: o.seed)
        var p = FMParameters(bias: 0, linear: [Float](repeating: 0, count: d),
                             factors: (0..<d * k).map { _ in Float(rng.normal()) * o.initScale }, factorCount: k)
        p.bias = bias

        var gBias: Float = 1e-8
        var gLinear = [Float](repeating: 1e-8, count: d)
        var gFactors = [Float](repeating: 1e-8, count: d * k)
        var best = p
        var bestLoss = Double.infinity
        var stale = 0
        var order = train
        let lr = o.learningRate, l2 = o.l2
        var sums = [Float](repeating: 0, count: k)

        for epoch in 1...max(1, o.maxEpochs) {
            order.shuffle(using: &rng)
            var lossSum = 0.0
            data.indices.withUnsafeBufferPointer { idx in
                data.values.withUnsafeBufferPointer { val in
                    for r in order {
                        let base = r * F
                        // Forward.
                        var lin = p.bias
                        var sq: Float = 0
                        for f in 0..<k { sums[f] = 0 }
                        for j in 0..<F {
                            let i = Int(idx[base + j]), x = val[base + j]
                            lin += p.linear[i] * x
                            for f in 0..<k {
                                let vx = p.factors[i * k + f] * x
                                sums[f] += vx
                                sq += vx * vx
                            }
                        }
                        var pair: Float = 0
                        for f in 0..<k { pair += sums[f] * sums[f] }
                        let (loss, g) = step(r, lin + 0.5 * (pair - sq))
                        lossSum += loss
                        // Backward, AdaGrad.
                        gBias += g * g
                        p.bias -= lr * g / gBias.squareRoot()
                        for j in 0..<F {
                            let i = Int(idx[base + j]), x = val[base + j]
                            let gw = g * x + l2 * p.linear[i]
                            gLinear[i] += gw * gw
                            p.linear[i] -= lr * gw / gLinear[i].squareRoot()
                            for f in 0..<k {
                                let v = p.factors[i * k + f]
                                let gv = g * x * (sums[f] - v * x) + l2 * v
                                gFactors[i * k + f] += gv * gv
                                p.factors[i * k + f] = v - lr * gv / gFactors[i * k + f].squareRoot()
                            }
                        }
                    }
                }
            }
            let vloss = validationLoss?(p) ?? lossSum / Double(max(order.count, 1))
            let improved = vloss < bestLoss - 1e-5
            progress(EpochReport(epoch: epoch, trainLogLoss: lossSum / Double(max(order.count, 1)),
                                 validationLogLoss: vloss, improved: improved))
            if improved {
                bestLoss = vloss
                best = p
                stale = 0
            } else {
                stale += 1
                if stale >= o.patience { break }
            }
        }
        return best
    }
}
