import ArbiterModels
import ArbiterStore
import Foundation
import Testing

@Suite struct KernelTests {
    @Test func sigmoidIsStableAndSymmetric() {
        #expect(Kernels.sigmoid(0) == 0.5)
        #expect(Kernels.sigmoid(100) == 1)
        #expect(Kernels.sigmoid(-100) >= 0 && Kernels.sigmoid(-100) < 1e-40)
        for x: Float in [-5, -1, 0.3, 2, 7] {
            #expect(abs(Kernels.sigmoid(x) + Kernels.sigmoid(-x) - 1) < 1e-6)
        }
    }

    @Test func logisticMatchesItsDefinition() {
        let w: [Float] = [0.5, -1, 2, 0.25, 3]
        let x: [Float] = [1, 2, 3, 4, 5]
        let y = w.withUnsafeBufferPointer { wp in x.withUnsafeBufferPointer { xp in
            Kernels.logistic(bias: -1, weights: wp.baseAddress!, x: xp.baseAddress!, n: 5) } }
        let z: Float = -1 + 0.5 - 2 + 6 + 1 + 15
        #expect(abs(y - 1 / (1 + (-z).exp())) < 1e-6)
    }

    /// The O(k·n) factorization machine equals the pairwise definition Σ_{i<j} <v_i, v_j> x_i x_j.
    @Test func factorizationMachineMatchesThePairwiseDefinition() {
        let d = 9, k = 4
        var g = SystemRandomNumberGenerator()
        let w = (0..<d).map { _ in Float.random(in: -1...1, using: &g) }
        let v = (0..<d * k).map { _ in Float.random(in: -1...1, using: &g) }
        let active: [(Int, Float)] = [(0, 1), (3, 0.5), (4, -2), (8, 1.5)]
        var naive: Float = 0.1
        for (i, x) in active { naive += w[i] * x }
        for a in 0..<active.count {
            for b in (a + 1)..<active.count {
                var dot: Float = 0
                for f in 0..<k { dot += v[active[a].0 * k + f] * v[active[b].0 * k + f] }
                naive += dot * active[a].1 * active[b].1
            }
        }
        let fast: Float = w.withUnsafeBufferPointer { wp in
            v.withUnsafeBufferPointer { vp in
                withUnsafeTemporaryAllocation(of: Float.self, capacity: k) { sums in
                    let fm = FactorizationMachine(bias: 0.1, linear: wp.baseAddress!, factors: vp.baseAddress!, factorCount: k)
                    var acc = FactorizationMachine.Accumulator(sums: sums.baseAddress!, factorCount: k)
                    for (i, x) in active { fm.add(i, x, to: &acc) }
                    return fm.output(acc)
                }
            }
        }
        #expect(abs(fast - naive) < 1e-4)
    }

    @Test func fieldEncodingOneHotsCategoricalsAndStandardizesNumerics() {
        let e = FieldEncoding(fields: [.categorical("a", 3), .numeric("b"), .categorical("c", 2)])
        #expect(e.dimension == 6)
        #expect(e.encode(field: 0, 2, mean: 0, invStd: 1) == (2, 1))
        #expect(e.encode(field: 1, 5, mean: 3, invStd: 0.5) == (3, 1))
        #expect(e.encode(field: 2, 1, mean: 0, invStd: 1) == (5, 1))
        // Out-of-range codes stay inside the field's indices (inputs are validated before; memory stays safe).
        #expect(e.encode(field: 2, 9, mean: 0, invStd: 1).index == 5)
        #expect(e.encode(field: 0, -4, mean: 0, invStd: 1).index == 0)
    }

    @Test func schemaValidationNamesTheOffendingValue() {
        let s = FeatureSchema(context: [.numeric("ctx")], candidate: [.categorical("ch", 3), .numeric("x")], outputs: [])
        func check(_ ctx: [Float], _ cand: [Float]) -> String? {
            ctx.withUnsafeBufferPointer { c in cand.withUnsafeBufferPointer { m in
                s.firstInvalidValue(context: c, candidates: m, candidateCount: cand.count / 2) } }
        }
        #expect(check([1], [0, 1, 2, -3]) == nil)
        #expect(check([.nan], [0, 1])?.contains("ctx") == true)
        #expect(check([1], [0, 1, 1, .infinity])?.contains("row 1 feature 'x'") == true)
        #expect(check([1], [3, 1])?.contains("'ch'") == true)
        #expect(check([1], [1.5, 1])?.contains("'ch'") == true)
        #expect(check([1], [-1, 1])?.contains("'ch'") == true)

        // Features that allow missing values take NaN (and only NaN); the others still refuse it.
        let m = FeatureSchema(context: [.numeric("ctx", allowsMissing: true)],
                              candidate: [.categorical("ch", 3, allowsMissing: true), .numeric("x")], outputs: [])
        func checkM(_ ctx: [Float], _ cand: [Float]) -> String? {
            ctx.withUnsafeBufferPointer { c in cand.withUnsafeBufferPointer { mm in
                m.firstInvalidValue(context: c, candidates: mm, candidateCount: cand.count / 2) } }
        }
        #expect(checkM([.nan], [.nan, 1, 2, 0]) == nil)
        #expect(checkM([.infinity], [0, 1])?.contains("'ctx' is inf") == true)
        #expect(checkM([1], [.nan, .nan]) == "candidate row 0 feature 'x' is nan, not a finite number")
        #expect(checkM([1], [3, 1])?.contains("'ch'") == true)
    }

    /// `allowsMissing` round-trips through a manifest, and manifests written before it existed decode
    /// with it off (and are written back without the key).
    @Test func missingValuesInManifests() throws {
        let old = #"{"name":"x","kind":"numeric","cardinality":0}"#
        let f = try JSONDecoder().decode(Feature.self, from: Data(old.utf8))
        #expect(!f.allowsMissing)
        #expect(String(decoding: try JSONEncoder().encode(f), as: UTF8.self).contains("allowsMissing") == false)
        let g = Feature.numeric("y", allowsMissing: true)
        #expect(try JSONDecoder().decode(Feature.self, from: JSONEncoder().encode(g)) == g)
    }

    @Test func schemaCheckRefusesBrokenSchemas() {
        #expect(throws: ModelError.self) {
            try FeatureSchema(context: [.numeric("a")], candidate: [.numeric("a")], outputs: []).check()
        }
        #expect(throws: ModelError.self) {
            try FeatureSchema(context: [.categorical("a", 0)], candidate: [], outputs: []).check()
        }
        #expect(throws: ModelError.self) {
            try FeatureSchema(context: [], candidate: [], outputs: [OutputColumn(name: "g", kind: .code)]).check()
        }
    }

    /// A version whose manifest names a kind nobody registered is refused, naming the kinds that exist;
    /// the registered kind next to it loads.
    @Test func registryRefusesUnknownKinds() throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("arbiter-registry-\(UUID())").path
        defer { try? FileManager.default.removeItem(atPath: path) }
        let env = try StoreEnvironment.open(path: path, configuration: StoreConfiguration(mapSize: 16 << 20, create: true))
        let catalog = Catalog(environment: env)
        let schema = FeatureSchema(context: [], candidate: [.numeric("x")], outputs: [])
        let golden = [GoldenCase(context: [], candidates: [2], candidateCount: 1, scores: [2], floatColumns: [], codeColumns: [])]
        for (model, kind) in [("known", "echo"), ("stranger", "mystery")] {
            let manifest = ModelManifest(kind: kind, schema: schema, parameters: [:], golden: golden)
            try catalog.publish(model: model, kind: kind, manifest: manifest.encoded(), tensors: [], metrics: [:])
        }
        var r = ModelRegistry()
        #expect(r.kinds.isEmpty)
        r.register(kind: "echo") { v, m in EchoModel(version: v, manifest: m) }
        r.register(kind: "other") { v, m in EchoModel(version: v, manifest: m) }
        #expect(r.kinds == ["echo", "other"])
        #expect(throws: ModelError.unknownKind("mystery", known: ["echo", "other"])) {
            try r.load(LoadedVersion(environment: env, model: "stranger"))
        }
        #expect(ModelError.unknownKind("mystery", known: ["echo", "other"]).description.contains("echo, other"))
        let known = try r.load(LoadedVersion(environment: env, model: "known"))
        #expect(known is EchoModel)
    }
}

/// A model whose score is its first candidate feature.
final class EchoModel: ScoringModel, Sendable {
    let version: LoadedVersion
    let manifest: ModelManifest

    init(version: LoadedVersion, manifest: ModelManifest) {
        self.version = version
        self.manifest = manifest
    }

    func score(_ batch: ScoreBatch, into output: ScoreOutput) -> RowOrder {
        let f = schema.candidate.count
        for r in 0..<batch.candidateCount { output.scores[r] = batch.candidates[r * f] }
        return .requestOrder
    }
}

extension Float {
    func exp() -> Float { Float(_exp(Double(self))) }
}

#if canImport(Glibc)
import Glibc
private func _exp(_ x: Double) -> Double { Glibc.exp(x) }
#endif
