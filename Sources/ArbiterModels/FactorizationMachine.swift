/// A second-order factorization machine over a one-hot field space (Rendle 2010):
///
///     y(x) = w0 + Σ w_i x_i + ½ Σ_f [ (Σ_i v_if x_i)² − Σ_i v_if² x_i² ]
///
/// Parameters are views (zero-copy into the store at serving time, arrays while training).
public struct FactorizationMachine {
    public let bias: Float
    public let linear: UnsafePointer<Float>
    /// Row-major `dimension × factors`.
    public let factors: UnsafePointer<Float>
    public let factorCount: Int

    @inlinable
    public init(bias: Float, linear: UnsafePointer<Float>, factors: UnsafePointer<Float>, factorCount: Int) {
        self.bias = bias
        self.linear = linear
        self.factors = factors
        self.factorCount = factorCount
    }

    /// Running sums of a partial input: the linear part, Σ v x per factor (`sums`, `factorCount` floats
    /// owned by the caller) and Σ v² x².
    public struct Accumulator {
        public var linear: Float = 0
        public var squares: Float = 0
        public let sums: UnsafeMutablePointer<Float>

        @inlinable
        public init(sums: UnsafeMutablePointer<Float>, factorCount: Int) {
            self.sums = sums
            sums.initialize(repeating: 0, count: factorCount)
        }
    }

    /// Adds one active index with its value.
    @inlinable
    public func add(_ index: Int, _ x: Float, to acc: inout Accumulator) {
        acc.linear += linear[index] * x
        let row = factors + index * factorCount
        var sq: Float = 0
        for f in 0..<factorCount {
            let vx = row[f] * x
            acc.sums[f] += vx
            sq += vx * vx
        }
        acc.squares += sq
    }

    /// Copies `from` into `to` (whose `sums` must be a different buffer), so a request's context can be
    /// accumulated once and extended per candidate.
    @inlinable
    public func copy(_ from: Accumulator, into to: inout Accumulator) {
        to.linear = from.linear
        to.squares = from.squares
        to.sums.update(from: from.sums, count: factorCount)
    }

    /// The machine's output for one row of `fieldCount` raw field values: each field encoded by `encoding`
    /// (a one-hot code, or a number standardised with `norm`'s mean and inverse deviation per field), a missing
    /// value (NaN) adding nothing — the field's mean. `sums`: room for `factorCount` floats.
    @inlinable
    public func output(row: UnsafePointer<Float>, fieldCount: Int, encoding: FieldEncoding, norm: UnsafePointer<Float>,
                       sums: UnsafeMutablePointer<Float>) -> Float {
        var acc = Accumulator(sums: sums, factorCount: factorCount)
        for j in 0..<fieldCount {
            let x = row[j]
            if x.isNaN { continue }
            let (index, value) = encoding.encode(field: j, x, mean: norm[2 * j], invStd: norm[2 * j + 1])
            add(index, value, to: &acc)
        }
        return output(acc)
    }

    /// The model's output (a logit) for the accumulated input.
    @inlinable
    public func output(_ acc: Accumulator) -> Float {
        var pair: Float = 0
        for f in 0..<factorCount { pair += acc.sums[f] * acc.sums[f] }
        return bias + acc.linear + 0.5 * (pair - acc.squares)
    }
}
