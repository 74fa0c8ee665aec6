import ArbiterModels
import ArbiterStore
import Foundation

/// The lead-grading arithmetic written out a second time for tests, independently of the serving code:
/// the one-hot layout from the schema, each factorization machine from its pairwise definition
/// (Rendle 2010: y = w0 + Σ w_i x_i + Σ_{i<j} <v_i, v_j> x_i x_j, not the O(k·n) rewrite the server uses),
/// in Double, with the stages chained as a product of sigmoids and the grade cut from the thresholds.
/// Tensor names are spelled out here rather than taken from `LeadGradingLayout`.
public struct ReferenceLeadGrading: Sendable {
    public struct Stage: Sendable {
        public var bias: Float
        public var linear: [Float]
        /// Row-major `dimension × k`.
        public var factors: [Float]

        public init(bias: Float, linear: [Float], factors: [Float]) {
            self.bias = bias
            self.linear = linear
            self.factors = factors
        }
    }

    public var schema: FeatureSchema
    /// Mean and inverse standard deviation of each field (context fields, then candidate fields).
    public var norm: [Float]
    public var stages: [Stage]
    public var k: Int
    /// Descending p_hire cut-offs of grades A, B and C.
    public var thresholds: [Float]

    public init(schema: FeatureSchema, norm: [Float], stages: [Stage], k: Int, thresholds: [Float]) {
        self.schema = schema
        self.norm = norm
        self.stages = stages
        self.k = k
        self.thresholds = thresholds
    }

    /// Reads the parameters of a published lead-grading version.
    public init(version: LoadedVersion) throws {
        let manifest = try ModelManifest.decode(version.manifest)
        func floats(_ name: String) throws -> [Float] {
            guard let t = version.tensors[name] else { throw ReferenceError("no tensor \(name)") }
            return try t.typed(as: Float.self).withUnsafeBufferPointer { Array($0) }
        }
        let k = Int(manifest.parameters["factors"] ?? 0)
        var stages: [Stage] = []
        for s in ["contact", "interview", "hire"] {
            stages.append(Stage(bias: try floats("\(s).bias")[0], linear: try floats("\(s).linear"), factors: try floats("\(s).factors")))
        }
        self.init(schema: manifest.schema, norm: try floats("norm"), stages: stages, k: k, thresholds: try floats("thresholds"))
    }

    /// The active one-hot indices of a lead, with their values.
    public func active(context: [Float], candidate: [Float]) -> [(index: Int, x: Double)] {
        let fields = schema.context + schema.candidate
        let values = context + candidate
        var out: [(Int, Double)] = []
        var offset = 0
        for (j, f) in fields.enumerated() {
            if f.kind == .categorical {
                out.append((offset + Int(values[j]), 1))
                offset += f.cardinality
            } else {
                out.append((offset, (Double(values[j]) - Double(norm[2 * j])) * Double(norm[2 * j + 1])))
                offset += 1
            }
        }
        return out
    }

    /// The logit of one stage, by the pairwise definition.
    public func logit(stage s: Int, active: [(index: Int, x: Double)]) -> Double {
        let p = stages[s]
        var y = Double(p.bias)
        for a in active { y += Double(p.linear[a.index]) * a.x }
        for i in 0..<active.count {
            for j in (i + 1)..<active.count {
                var dot = 0.0
                for f in 0..<k { dot += Double(p.factors[active[i].index * k + f]) * Double(p.factors[active[j].index * k + f]) }
                y += dot * active[i].x * active[j].x
            }
        }
        return y
    }

    /// P(contact), P(contact and interview), P(contact, interview and hire), and the grade (0 = A ... 3 = D).
    public func score(context: [Float], candidate: [Float]) -> (pContact: Double, pInterview: Double, pHire: Double, grade: UInt8) {
        let a = active(context: context, candidate: candidate)
        var p = [Double]()
        var chained = 1.0
        for s in 0..<stages.count {
            chained *= 1 / (1 + Foundation.exp(-logit(stage: s, active: a)))
            p.append(chained)
        }
        let h = Float(p[2])
        let grade: UInt8 = h >= thresholds[0] ? 0 : h >= thresholds[1] ? 1 : h >= thresholds[2] ? 2 : 3
        return (p[0], p[1], p[2], grade)
    }

    /// Whether `p` lies so close to a grade threshold that float rounding may put it on either side.
    public func nearThreshold(_ p: Double, tolerance: Double = 1e-5) -> Bool {
        thresholds.contains { abs(Double($0) - p) <= tolerance }
    }
}

public struct ReferenceError: Error, CustomStringConvertible {
    public var description: String
    public init(_ s: String) { description = s }
}
