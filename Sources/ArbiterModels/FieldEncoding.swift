/// Maps raw feature values to the one active index (and its value) each field has in a one-hot feature
/// space: a numeric field is one index whose value is standardized, `(x - mean) / std`; a categorical
/// field with cardinality c takes c indices, and code k activates index `offset + k` with value 1.
///
/// This is the input layout of the factorization machine, shared by the trainer and the plugins.
public struct FieldEncoding: Sendable, Equatable {
    public let fields: [Feature]
    /// Start of each field's indices.
    public let offsets: [Int32]
    /// Each field's code count (0 for numeric fields), kept apart from `fields` so that the hot loop reads
    /// plain integers and never copies a `Feature` (whose name would be retained and released).
    @usableFromInline let cardinalities: [Int32]
    /// Size of the one-hot space.
    public let dimension: Int

    public init(fields: [Feature]) {
        self.fields = fields
        var offs: [Int32] = []
        var d = 0
        for f in fields {
            offs.append(Int32(d))
            d += f.kind == .categorical ? f.cardinality : 1
        }
        offsets = offs
        cardinalities = fields.map { $0.kind == .categorical ? Int32($0.cardinality) : 0 }
        dimension = d
    }

    /// Encodes field `j` with raw value `x`, given its normalization (mean, inverse std). Out-of-range codes
    /// are clamped; callers validate inputs first, this only keeps memory access in bounds.
    @inlinable
    public func encode(field j: Int, _ x: Float, mean: Float, invStd: Float) -> (index: Int, value: Float) {
        let cardinality = Int(cardinalities[j])
        if cardinality > 0 {
            var k = Int(x.isFinite ? x : 0)
            if k < 0 { k = 0 } else if k >= cardinality { k = cardinality - 1 }
            return (Int(offsets[j]) + k, 1)
        }
        return (Int(offsets[j]), (x - mean) * invStd)
    }
}
