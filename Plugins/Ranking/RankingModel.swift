import ArbiterModels
import ArbiterStore

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#else
import Darwin
#endif

/// Kind `ranking`: candidates (items) ordered for a subject (a user) by a fused score of several heads, with
/// an optional diversity rerank, cut to top-k in the same call. See ``RankingLayout`` for what a version
/// holds and how it scores.
///
/// The embedding tables and every head's parameters are views into the map; a request makes no store call,
/// takes no lock and allocates nothing (its working memory is this thread's scratch).
// Unchecked: every pointer is read-only, into tensor views that `version` (and the tables) hold.
public final class RankingModel: ScoringModel, @unchecked Sendable {
    public let version: LoadedVersion
    public let manifest: ModelManifest
    public let users: EmbeddingTable
    public let items: EmbeddingTable
    let heads: [Head]
    let fusion: RankingLayout.Fusion
    /// The candidate feature whose values are capped in the answer, and the cap (nil: no diversity rule).
    let diversity: (feature: Int, max: Int)?
    let contextCount: Int
    let candidateCount: Int
    let fieldCount: Int
    let encoding: FieldEncoding
    /// The most factors of any linear head (their working sums come from scratch).
    let maxFactors: Int

    /// A head: its weight in the fusion and how it computes its probability.
    enum Head {
        case linear(weight: Float, machine: FactorizationMachine, norm: UnsafePointer<Float>)
        case trees(weight: Float, forest: LoadedForest)

        var weight: Float {
            switch self {
            case .linear(let w, _, _), .trees(let w, _): w
            }
        }
    }

    /// Subject ids the user table did not hold (scored with its default row), since load.
    public var unknownSubjects: Int { users.unknownLookups }
    /// Candidate ids the item table did not hold (scored with its default row), since load.
    public var unknownItems: Int { items.unknownLookups }

    /// The factory the registry calls.
    public static let factory: ModelFactory = { version, manifest in
        try RankingModel(version: version, manifest: manifest)
    }

    public init(version: LoadedVersion, manifest: ModelManifest) throws(ModelError) {
        let schema = manifest.schema
        let p = manifest.parameters
        func integer(_ name: String, _ range: ClosedRange<Int>) throws(ModelError) -> Int {
            guard let v = p[name], v == v.rounded(), v >= Double(range.lowerBound), v <= Double(range.upperBound) else {
                throw ModelError.invalidParameters("'\(name)' must be an integer in \(range), got \(p[name].map { "\($0)" } ?? "nothing")")
            }
            return Int(v)
        }
        func number(_ name: String) throws(ModelError) -> Float {
            guard let v = p[name], v.isFinite, abs(v) <= Double(Float.greatestFiniteMagnitude) else {
                throw ModelError.invalidParameters("'\(name)' must be a finite number, got \(p[name].map { "\($0)" } ?? "nothing")")
            }
            return Float(v)
        }
        let headCount = try integer(RankingLayout.headsParameter, 1...RankingLayout.maxHeads)
        guard let fusion = RankingLayout.Fusion(rawValue: try integer(RankingLayout.fusionParameter, 0...1)) else {
            throw ModelError.invalidParameters("unknown fusion")
        }
        // Output columns: one probability per head, then the dot product and the rank before the rerank.
        let outputs = schema.outputs
        guard outputs.count == headCount + 2, outputs.allSatisfy({ $0.kind == .float32 }),
              outputs[headCount].name == RankingLayout.dotColumn, outputs[headCount + 1].name == RankingLayout.rankColumn else {
            throw ModelError.invalidSchema("a ranking model with \(headCount) heads outputs \(headCount) f32 head columns, then '\(RankingLayout.dotColumn)' and '\(RankingLayout.rankColumn)'; this one outputs \(outputs.map(\.name))")
        }
        let diversityFeature = try integer(RankingLayout.diversityFeatureParameter, -1...max(-1, schema.candidate.count - 1))
        if diversityFeature >= 0 {
            let f = schema.candidate[diversityFeature]
            guard f.kind == .categorical else {
                throw ModelError.invalidSchema("the diversity feature '\(f.name)' is numeric; it must be a categorical candidate feature")
            }
            diversity = (diversityFeature, try integer(RankingLayout.diversityMaxParameter, 1...1_000_000))
        } else {
            diversity = nil
        }
        users = try EmbeddingTable(version: version, name: RankingLayout.userTable)
        items = try EmbeddingTable(version: version, name: RankingLayout.itemTable)
        guard users.dimension == items.dimension else {
            throw ModelError.invalidParameters("the user table's dimension is \(users.dimension), the item table's \(items.dimension)")
        }
        let fields = RankingLayout.headFields(schema)
        let encoding = FieldEncoding(fields: fields)
        func view(_ name: String, _ shape: [Int]) throws(ModelError) -> Tensor<Float> {
            do {
                let t = try version.tensor(name, shape: shape, as: Float.self)
                for i in 0..<t.count where !t[i].isFinite { throw ModelError.nonFinite("tensor '\(name)' holds \(t[i]) at \(i)") }
                return t
            } catch let e as ModelError {
                throw e
            } catch {
                throw ModelError.invalidParameters("\(error)")
            }
        }
        var heads: [Head] = []
        for k in 0..<headCount {
            let prefix = RankingLayout.headPrefix(k)
            let name = outputs[k].name
            let weight = try number(prefix + RankingLayout.weightParameter)
            switch RankingLayout.HeadType(rawValue: try integer(prefix + RankingLayout.typeParameter, 0...1)) {
            case .linear:
                let factorCount = try integer(prefix + RankingLayout.factorsParameter, 0...256)
                let norm = try view(prefix + RankingLayout.norm, [fields.count, 2])
                let linear = try view(prefix + RankingLayout.linear, [encoding.dimension])
                let factors = try view(prefix + RankingLayout.factors, [encoding.dimension, factorCount])
                heads.append(.linear(weight: weight, machine: FactorizationMachine(bias: try number(prefix + RankingLayout.biasParameter),
                                                                                    linear: linear.pointer, factors: factors.pointer,
                                                                                    factorCount: factorCount),
                                     norm: norm.pointer))
            case .trees:
                let forest = try LoadedForest(version: version, parameters: p, prefix: prefix, features: fields.count)
                guard forest.transform == .logistic else {
                    throw ModelError.invalidParameters("head '\(name)' is a tree ensemble without the logistic transform: a ranking head gives a probability")
                }
                heads.append(.trees(weight: weight, forest: forest))
            case nil:
                throw ModelError.invalidParameters("head '\(name)' has an unknown type")
            }
        }
        self.version = version
        self.manifest = manifest
        self.heads = heads
        self.fusion = fusion
        self.encoding = encoding
        contextCount = schema.context.count
        candidateCount = schema.candidate.count
        fieldCount = fields.count
        maxFactors = heads.reduce(0) { if case .linear(_, let fm, _) = $1 { max($0, fm.factorCount) } else { $0 } }
    }

    /// Rows of head input built and scored at a time.
    static let block = 64

    public func score(_ batch: ScoreBatch, into out: ScoreOutput) throws(ScoringError) -> RowOrder {
        guard let subject = batch.subject else {
            throw ScoringError(.invalidRequest, "model '\(version.model)' (kind ranking) ranks for a user: set the SUBJECT flag and send the user's id")
        }
        guard let order = out.order else {
            throw ScoringError(.internalError, "the caller gave a ranking model no room for its order")
        }
        let n = batch.candidateCount
        guard n > 0 else { return .ranked(count: 0) }
        guard batch.ids.count == n else {
            throw ScoringError(.internalError, "\(batch.ids.count) candidate ids for \(n) candidates")
        }
        let f = fieldCount, c = contextCount, m = candidateCount, d = users.dimension
        let k = batch.topK > 0 ? min(batch.topK, n) : n
        let factorMax = maxFactors
        // Scratch: rows (block × f f32), sums (block f64), a row's FM sums (factorMax, room for 2 ×
        // f32), the order by score and the passed-over rows (n i32 each), and the diversity counts.
        let slots = Self.diversitySlots(k)
        let rowsBytes = Self.up(Self.block * f * 4), sumsBytes = Self.up(Self.block * 8), fmBytes = Self.up(2 * max(factorMax, 1) * 4)
        let vectorBytes = Self.up(Self.block * 8)
        let orderBytes = Self.up(n * 4), countBytes = diversity == nil ? 0 : Self.up(slots * 16)
        ThreadScratch.with(bytes: rowsBytes + sumsBytes + fmBytes + 2 * orderBytes + countBytes + vectorBytes) { raw in
            let rows = raw.bindMemory(to: Float.self, capacity: Self.block * f)
            let sums = (raw + rowsBytes).bindMemory(to: Double.self, capacity: Self.block)
            let fmSums = (raw + rowsBytes + sumsBytes).bindMemory(to: Float.self, capacity: 2 * max(factorMax, 1))
            let byScore = (raw + rowsBytes + sumsBytes + fmBytes).bindMemory(to: Int32.self, capacity: n)
            let passed = (raw + rowsBytes + sumsBytes + fmBytes + orderBytes).bindMemory(to: Int32.self, capacity: n)
            let counts = raw + rowsBytes + sumsBytes + fmBytes + 2 * orderBytes
            let vectors = (counts + countBytes).bindMemory(to: UnsafePointer<Float>.self, capacity: Self.block)

            let user = users.vector(of: subject)
            let dots = out.floatColumn(heads.count)
            var start = 0
            while start < n {
                let count = min(Self.block, n - start)
                // The block's item rows first, then their dot products: lookups that do not wait on one another
                // let the core overlap their cache misses (the index and the rows are spread over the map).
                for r in 0..<count { items.prefetchSlot(of: batch.ids[start + r]) }
                for r in 0..<count {
                    vectors[r] = items.vector(of: batch.ids[start + r])
                    items.prefetchRow(vectors[r])
                }
                for r in 0..<count {
                    let i = start + r
                    let row = rows + r * f
                    for j in 0..<c { row[j] = batch.context[j] }
                    if m > 0 { (row + c).update(from: batch.candidates.baseAddress! + i * m, count: m) }
                    let dot = Self.dot(user, vectors[r], d)
                    row[f - 1] = dot
                    dots[i] = dot
                }
                for (h, head) in heads.enumerated() {
                    let p = out.floatColumn(h) + start
                    switch head {
                    case .trees(_, let forest):
                        forest.predict(rows: rows, count: count, sums: sums, into: p)
                    case .linear(_, let fm, let norm):
                        for r in 0..<count { p[r] = linearHead(fm, norm: norm, row: rows + r * f, sums: fmSums) }
                    }
                }
                start += count
            }
            // The fused score.
            for i in 0..<n {
                var s: Float = 0
                for (h, head) in heads.enumerated() {
                    let p = out.floatColumn(h)[i]
                    switch fusion {
                    case .logProduct:
                        s += head.weight * logf(min(max(p, RankingLayout.probabilityFloor), 1 - RankingLayout.probabilityFloor))
                    case .weightedSum:
                        s += head.weight * p
                    }
                }
                out.scores[i] = s
            }
            // Best first (ties to the lower position), and each candidate's rank before the rerank.
            for i in 0..<n { byScore[i] = Int32(i) }
            ScoreOrder.sortDescending(byScore, n, by: out.scores)
            let ranks = out.floatColumn(heads.count + 1)
            for r in 0..<n { ranks[Int(byScore[r])] = Float(r + 1) }

            guard let diversity else {
                order.update(from: byScore, count: k)
                return
            }
            // Diversity: walk the order, take a candidate unless `max` taken ones already share its value, and
            // fill what is left of k from the passed-over ones, best first. Missing values are not capped.
            let keys = counts.bindMemory(to: Int64.self, capacity: 2 * slots)
            for s in 0..<slots { keys[2 * s] = -1 }
            var taken = 0, passedCount = 0
            for r in 0..<n where taken < k {
                let i = Int(byScore[r])
                let value = batch.candidates[i * m + diversity.feature]
                if value.isNaN {
                    order[taken] = Int32(i)
                    taken += 1
                    continue
                }
                let key = Int64(value)
                var slot = Int(truncatingIfNeeded: UInt64(bitPattern: key) &* 0x9E37_79B9_7F4A_7C15 >> 40) & (slots - 1)
                while keys[2 * slot] != -1 && keys[2 * slot] != key { slot = (slot + 1) & (slots - 1) }
                if keys[2 * slot] == -1 {
                    keys[2 * slot] = key
                    keys[2 * slot + 1] = 0
                }
                if keys[2 * slot + 1] < Int64(diversity.max) {
                    keys[2 * slot + 1] += 1
                    order[taken] = Int32(i)
                    taken += 1
                } else {
                    passed[passedCount] = Int32(i)
                    passedCount += 1
                }
            }
            var q = 0
            while taken < k && q < passedCount {
                order[taken] = passed[q]
                taken += 1
                q += 1
            }
        }
        return .ranked(count: k)
    }

    /// A linear head's probability for one input row: its factorization machine over the row's encoding.
    @inline(__always)
    func linearHead(_ fm: FactorizationMachine, norm: UnsafePointer<Float>, row: UnsafePointer<Float>, sums: UnsafeMutablePointer<Float>) -> Float {
        1 / (1 + expf(-fm.output(row: row, fieldCount: fieldCount, encoding: encoding, norm: norm, sums: sums)))
    }

    /// `Σ a[j]·b[j]` over `d` values, in eight lanes (summed pairwise at the end): vectorized, where one
    /// running sum would wait on every add in turn.
    @inline(__always)
    static func dot(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, _ d: Int) -> Float {
        var acc = SIMD8<Float>()
        var j = 0
        while j + 8 <= d {
            let x = UnsafeRawPointer(a + j).loadUnaligned(as: SIMD8<Float>.self)
            let y = UnsafeRawPointer(b + j).loadUnaligned(as: SIMD8<Float>.self)
            acc += x * y
            j += 8
        }
        var s = acc.sum()
        while j < d {
            s += a[j] * b[j]
            j += 1
        }
        return s
    }

    /// Slots of the diversity counts for an answer of `k` rows: a power of two, at least twice `k` (every
    /// distinct value taken occupies one).
    static func diversitySlots(_ k: Int) -> Int {
        var s = 16
        while s < 2 * k { s <<= 1 }
        return s
    }

    static func up(_ x: Int) -> Int { (x + 63) & ~63 }
}
