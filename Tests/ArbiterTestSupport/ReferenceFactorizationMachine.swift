import ArbiterModels

/// A factorization machine's output computed from its definition, in Double, for one row of raw field values:
/// the row one-hot encoded by hand (a categorical field's code at its field's offset; a numeric field
/// standardised with `norm`'s mean and inverse deviation), a missing value (NaN) adding nothing; then
/// `bias + Σ wᵢxᵢ + ½ Σ_f [(Σᵢ vᵢf xᵢ)² − Σᵢ vᵢf² xᵢ²]`. Written apart from the serving kernel, which the tests
/// hold to it.
public func referenceFactorizationMachine(bias: Float, linear: [Float], factors: [Float], factorCount: Int,
                                          fields: [Feature], norm: [Float], row: [Float]) -> Double {
    var active: [(Int, Double)] = []
    var offset = 0
    for (j, f) in fields.enumerated() {
        let x = row[j]
        if f.kind == .categorical {
            if !x.isNaN { active.append((offset + Int(x), 1)) }
            offset += f.cardinality
        } else {
            if !x.isNaN { active.append((offset, (Double(x) - Double(norm[2 * j])) * Double(norm[2 * j + 1]))) }
            offset += 1
        }
    }
    var y = Double(bias)
    for (i, x) in active { y += Double(linear[i]) * x }
    for f in 0..<factorCount {
        var s = 0.0, sq = 0.0
        for (i, x) in active {
            let vx = Double(factors[i * factorCount + f]) * x
            s += vx
            sq += vx * vx
        }
        y += 0.5 * (s * s - sq)
    }
    return y
}
