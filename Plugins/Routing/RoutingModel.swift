import ArbiterModels
import ArbiterStore

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#else
import Darwin
#endif

/// Kind `routing`: an applicant's lenders (or products) ordered by expected value, with hard eligibility
/// rules and reason codes, per-channel traffic shares between the model and a baseline, sticky by routing
/// key, and reproducible exploration. See ``RoutingLayout`` for what a version holds and how it answers.
///
/// Every parameter is a view into the map or a small table built at load; a request makes no store call,
/// takes no lock and allocates nothing (its working memory is this thread's scratch).
// Unchecked: every pointer is read-only, into tensor views that `version` holds or into buffers this object
// owns and never writes after init.
public final class RoutingModel: ScoringModel, @unchecked Sendable {
    public let version: LoadedVersion
    public let manifest: ModelManifest

    let lenderCount: Int
    let ids: UnsafePointer<UInt64>
    let amounts: UnsafePointer<Float>
    let takeRates: UnsafePointer<Float>
    let priorities: UnsafePointer<Int32>
    let minimums: UnsafePointer<Float>
    let maximums: UnsafePointer<Float>
    let allowed: UnsafePointer<UInt8>
    let shares: UnsafePointer<Float>
    let channelCardinality: Int

    /// The rules, in reason-code order: allowed-values rules (context feature, offset in a lender's allowed
    /// bytes, cardinality), then range rules (context feature, column).
    let allowRules: UnsafeMutableBufferPointer<(feature: Int, offset: Int, cardinality: Int)>
    let rangeRules: UnsafeMutableBufferPointer<(feature: Int, column: Int)>
    /// Per lender and allowed-values rule: whether every code is allowed (then a missing value passes too).
    let unrestricted: UnsafeMutableBufferPointer<Bool>
    let rangeCount: Int
    let allowedWidth: Int

    let channelFeature: Int
    let returningFeature: Int?
    let capacityFeature: Int
    let value: RoutingLayout.Value
    let baseline: RoutingLayout.Baseline
    let epsilon: Double
    let maxProducts: Int
    let salt: UInt64
    let exploreSalt: UInt64

    let heads: [Head]
    /// The heads that apply to new (0) and returning (1) applicants.
    let approveHead: (Int, Int)
    let amountHead: (Int?, Int?)
    let contextCount: Int
    let candidateFeatureCount: Int
    let fieldCount: Int
    let encoding: FieldEncoding
    let maxFactors: Int

    enum Head {
        /// A factorization machine; its output is `σ(y)` (`logistic`) or `offset + scale × y`.
        case linear(FactorizationMachine, norm: UnsafePointer<Float>, logistic: Bool, scale: Float, offset: Float)
        case trees(LoadedForest)
    }

    /// The factory the registry calls.
    public static let factory: ModelFactory = { version, manifest in
        try RoutingModel(version: version, manifest: manifest)
    }

    deinit {
        allowRules.deallocate()
        rangeRules.deallocate()
        unrestricted.deallocate()
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
        func number(_ name: String, _ range: ClosedRange<Double>? = nil) throws(ModelError) -> Float {
            guard let v = p[name], v.isFinite, abs(v) <= Double(Float.greatestFiniteMagnitude), range.map({ $0.contains(v) }) ?? true else {
                throw ModelError.invalidParameters("'\(name)' must be a finite number\(range.map { " in \($0)" } ?? ""), got \(p[name].map { "\($0)" } ?? "nothing")")
            }
            return Float(v)
        }
        func tensor<T: TensorElement>(_ name: String, _ shape: [Int], as: T.Type) throws(ModelError) -> Tensor<T> {
            do {
                return try version.tensor(name, shape: shape, as: T.self)
            } catch {
                throw ModelError.invalidParameters("\(error)")
            }
        }
        let context = schema.context, candidate = schema.candidate
        // The applicant's channel, the returning flag, the lenders' capacity.
        channelFeature = try integer(RoutingLayout.channelFeatureParameter, 0...max(0, context.count - 1))
        guard channelFeature < context.count, context[channelFeature].kind == .categorical else {
            throw ModelError.invalidSchema("the channel feature must be a categorical applicant (context) feature; feature \(channelFeature) of \(context.map(\.name)) is not")
        }
        channelCardinality = context[channelFeature].cardinality
        let r = try integer(RoutingLayout.returningFeatureParameter, -1...max(-1, context.count - 1))
        returningFeature = r >= 0 ? r : nil
        capacityFeature = try integer(RoutingLayout.capacityFeatureParameter, 0...max(0, candidate.count - 1))
        guard capacityFeature < candidate.count, candidate[capacityFeature].kind == .numeric else {
            throw ModelError.invalidSchema("the capacity feature must be a numeric lender (candidate) feature; feature \(capacityFeature) of \(candidate.map(\.name)) is not")
        }
        guard let value = RoutingLayout.Value(rawValue: try integer(RoutingLayout.valueParameter, 0...2)),
              let baseline = RoutingLayout.Baseline(rawValue: try integer(RoutingLayout.baselineParameter, 0...1)) else {
            throw ModelError.invalidParameters("unknown value or baseline")
        }
        self.value = value
        self.baseline = baseline
        epsilon = Double(try number(RoutingLayout.epsilonParameter, 0...1))
        maxProducts = try integer(RoutingLayout.maxProductsParameter, 0...1_000_000)
        salt = UInt64(try integer(RoutingLayout.saltParameter, 0...(1 << 53)))
        exploreSalt = UInt64(try integer(RoutingLayout.exploreSaltParameter, 0...(1 << 53)))

        // The lender table.
        let l = try integer(RoutingLayout.lendersParameter, 1...RoutingLayout.maxLenders)
        let idTensor = try tensor(RoutingLayout.lenderID, [l], as: UInt64.self)
        for i in 1..<max(l, 1) where idTensor[i] <= idTensor[i - 1] {
            throw ModelError.invalidParameters("the lender ids must be sorted and distinct; id \(idTensor[i]) at row \(i) follows \(idTensor[i - 1])")
        }
        let amountTensor = try tensor(RoutingLayout.lenderAmount, [l], as: Float.self)
        let takeTensor = try tensor(RoutingLayout.lenderTakeRate, [l], as: Float.self)
        for i in 0..<l {
            guard amountTensor[i].isFinite, amountTensor[i] >= 0, takeTensor[i].isFinite, takeTensor[i] >= 0, takeTensor[i] <= 1 else {
                throw ModelError.invalidParameters("lender \(idTensor[i]): amount \(amountTensor[i]) must be a finite number ≥ 0 and take rate \(takeTensor[i]) in 0...1")
            }
        }
        let priorityTensor = try tensor(RoutingLayout.lenderPriority, [l], as: Int32.self)

        // Rules, by feature name.
        var allow: [(feature: Int, offset: Int, cardinality: Int, name: String)] = []
        var ranges: [(feature: Int, column: Int, name: String)] = []
        let rangeCount = try integer(RoutingLayout.rangesParameter, 0...context.count)
        let allowedWidth = try integer(RoutingLayout.allowedWidthParameter, 0...1 << 20)
        for key in p.keys.sorted() {
            if key.hasPrefix(RoutingLayout.rangePrefix) {
                let name = String(key.dropFirst(RoutingLayout.rangePrefix.count))
                guard let j = context.firstIndex(where: { $0.name == name }) else {
                    throw ModelError.invalidSchema("the lender table has a range rule on '\(name)', which is not an applicant (context) feature of this schema (\(context.map(\.name).joined(separator: ", ")))")
                }
                guard context[j].kind == .numeric else {
                    throw ModelError.invalidSchema("the lender table has a range rule on '\(name)', a categorical feature; ranges apply to numeric features (use allowed values)")
                }
                ranges.append((j, try integer(key, 0...max(0, rangeCount - 1)), name))
            } else if key.hasPrefix(RoutingLayout.allowPrefix) {
                let name = String(key.dropFirst(RoutingLayout.allowPrefix.count))
                guard let j = context.firstIndex(where: { $0.name == name }) else {
                    throw ModelError.invalidSchema("the lender table has an allowed-values rule on '\(name)', which is not an applicant (context) feature of this schema (\(context.map(\.name).joined(separator: ", ")))")
                }
                guard context[j].kind == .categorical else {
                    throw ModelError.invalidSchema("the lender table has an allowed-values rule on '\(name)', a numeric feature; allowed values apply to categorical features (use a range)")
                }
                let offset = try integer(key, 0...allowedWidth)
                guard offset + context[j].cardinality <= allowedWidth else {
                    throw ModelError.invalidParameters("the allowed values of '\(name)' (\(context[j].cardinality) codes from byte \(offset)) overrun the table's \(allowedWidth) bytes per lender")
                }
                allow.append((j, offset, context[j].cardinality, name))
            }
        }
        guard ranges.count == rangeCount, Set(ranges.map(\.column)).count == rangeCount else {
            throw ModelError.invalidParameters("the lender table declares \(rangeCount) range columns; its rules use columns \(ranges.map(\.column).sorted())")
        }
        allow.sort { $0.offset < $1.offset }
        ranges.sort { $0.column < $1.column }
        for (a, b) in zip(allow, allow.dropFirst()) where a.offset + a.cardinality > b.offset {
            throw ModelError.invalidParameters("the allowed values of '\(a.name)' and '\(b.name)' overlap in the lender table")
        }
        let minTensor = try tensor(RoutingLayout.lenderMin, [l, rangeCount], as: Float.self)
        let maxTensor = try tensor(RoutingLayout.lenderMax, [l, rangeCount], as: Float.self)
        for i in 0..<(l * rangeCount) where !minTensor[i].isFinite || !maxTensor[i].isFinite || minTensor[i] > maxTensor[i] {
            throw ModelError.invalidParameters("lender \(idTensor[i / rangeCount]): the range on '\(ranges[i % rangeCount].name)' is [\(minTensor[i]), \(maxTensor[i])]; bounds must be finite (∓\(RoutingLayout.noBound) for none) with min ≤ max")
        }
        let allowedTensor = try tensor(RoutingLayout.lenderAllowed, [l, allowedWidth], as: UInt8.self)
        for i in 0..<(l * allowedWidth) where allowedTensor[i] > 1 {
            throw ModelError.invalidParameters("lender \(idTensor[i / max(allowedWidth, 1)]): allowed-value bytes are 0 or 1, found \(allowedTensor[i])")
        }
        let shareTensor = try tensor(RoutingLayout.channelShare, [channelCardinality], as: Float.self)
        for c in 0..<channelCardinality where !(shareTensor[c] >= 0 && shareTensor[c] <= 1) {
            throw ModelError.invalidParameters("channel \(c)'s model share is \(shareTensor[c]); shares are in 0...1")
        }

        // The output columns this table implies.
        let expected = RoutingLayout.outputs(allowed: allow.map(\.name), ranges: ranges.map(\.name))
        guard schema.outputs == expected else {
            throw ModelError.invalidSchema("a routing version with these rules outputs \(expected.map { $0.labels.isEmpty ? $0.name : "\($0.name) \($0.labels)" }); this one declares \(schema.outputs.map { $0.labels.isEmpty ? $0.name : "\($0.name) \($0.labels)" })")
        }
        guard expected[2].labels.count <= 256 else {
            throw ModelError.invalidSchema("\(expected[2].labels.count) reason codes; a code column holds at most 256")
        }

        // Heads.
        let fields = RoutingLayout.headFields(schema, lenders: l)
        let encoding = FieldEncoding(fields: fields)
        let headCount = try integer(RoutingLayout.headsParameter, 1...RoutingLayout.maxHeads)
        var heads: [Head] = []
        var roles: [(role: RoutingLayout.Role, population: RoutingLayout.Population)] = []
        for k in 0..<headCount {
            let prefix = RoutingLayout.headPrefix(k)
            guard let role = RoutingLayout.Role(rawValue: try integer(prefix + RoutingLayout.roleParameter, 0...1)),
                  let population = RoutingLayout.Population(rawValue: try integer(prefix + RoutingLayout.populationParameter, 0...2)) else {
                throw ModelError.invalidParameters("head \(k): unknown role or population")
            }
            switch RoutingLayout.HeadType(rawValue: try integer(prefix + RoutingLayout.typeParameter, 0...1)) {
            case .linear:
                let factorCount = try integer(prefix + RoutingLayout.factorsParameter, 0...256)
                func view(_ name: String, _ shape: [Int]) throws(ModelError) -> Tensor<Float> {
                    let t = try tensor(prefix + name, shape, as: Float.self)
                    for i in 0..<t.count where !t[i].isFinite { throw ModelError.nonFinite("tensor '\(prefix + name)' holds \(t[i]) at \(i)") }
                    return t
                }
                let norm = try view(RoutingLayout.norm, [fields.count, 2])
                let linear = try view(RoutingLayout.linear, [encoding.dimension])
                let factors = try view(RoutingLayout.factors, [encoding.dimension, factorCount])
                let fm = FactorizationMachine(bias: try number(prefix + RoutingLayout.biasParameter), linear: linear.pointer,
                                              factors: factors.pointer, factorCount: factorCount)
                if role == .approve {
                    heads.append(.linear(fm, norm: norm.pointer, logistic: true, scale: 1, offset: 0))
                } else {
                    heads.append(.linear(fm, norm: norm.pointer, logistic: false, scale: try number(prefix + RoutingLayout.outputScaleParameter),
                                         offset: try number(prefix + RoutingLayout.outputOffsetParameter)))
                }
            case .trees:
                let forest = try LoadedForest(version: version, parameters: p, prefix: prefix, features: fields.count)
                guard forest.transform == (role == .approve ? .logistic : .identity) else {
                    throw ModelError.invalidParameters(role == .approve
                        ? "head \(k) gives p(approve) but is a tree ensemble without the logistic transform"
                        : "head \(k) gives an amount (a regression) but is a tree ensemble with the logistic transform")
                }
                heads.append(.trees(forest))
            case nil:
                throw ModelError.invalidParameters("head \(k) has an unknown type")
            }
            roles.append((role, population))
        }
        // Which heads apply to each population: its own before an `all` head; exactly one approve head.
        func pick(_ role: RoutingLayout.Role, _ population: RoutingLayout.Population) throws(ModelError) -> Int? {
            let own = roles.indices.filter { roles[$0].role == role && roles[$0].population == population }
            let all = roles.indices.filter { roles[$0].role == role && roles[$0].population == .all }
            guard own.count <= 1, all.count <= 1 else {
                throw ModelError.invalidParameters("two \(role) heads for the same applicants (heads \(own + all))")
            }
            return own.first ?? all.first
        }
        guard let approveNew = try pick(.approve, .new), let approveReturning = try pick(.approve, .returning) else {
            throw ModelError.invalidParameters("every applicant needs a p(approve) head: one for all, or one each for new and returning")
        }
        approveHead = (approveNew, approveReturning)
        amountHead = (try pick(.amount, .new), try pick(.amount, .returning))

        self.version = version
        self.manifest = manifest
        lenderCount = l
        ids = idTensor.pointer
        amounts = amountTensor.pointer
        takeRates = takeTensor.pointer
        priorities = priorityTensor.pointer
        minimums = minTensor.pointer
        maximums = maxTensor.pointer
        allowed = allowedTensor.pointer
        shares = shareTensor.pointer
        self.rangeCount = rangeCount
        self.allowedWidth = allowedWidth
        allowRules = .allocate(capacity: allow.count)
        for (i, a) in allow.enumerated() { allowRules[i] = (a.feature, a.offset, a.cardinality) }
        rangeRules = .allocate(capacity: ranges.count)
        for (i, r) in ranges.enumerated() { rangeRules[i] = (r.feature, r.column) }
        unrestricted = .allocate(capacity: l * allow.count)
        for row in 0..<l {
            for (i, a) in allow.enumerated() {
                unrestricted[row * allow.count + i] = (0..<a.cardinality).allSatisfy { allowedTensor[row * allowedWidth + a.offset + $0] == 1 }
            }
        }
        self.heads = heads
        self.encoding = encoding
        contextCount = context.count
        candidateFeatureCount = candidate.count
        fieldCount = fields.count
        maxFactors = heads.reduce(0) { if case .linear(let fm, _, _, _, _) = $1 { max($0, fm.factorCount) } else { $0 } }
    }

    /// The lenders the table holds, by id (ascending).
    public var lenderIDs: UnsafeBufferPointer<UInt64> { UnsafeBufferPointer(start: ids, count: lenderCount) }

    /// The table's entry for a lender id (nil: not in the table): its average funded amount, take rate and
    /// place in the baseline's priority list. For tools (the replay); requests read the table directly.
    public func lender(_ id: UInt64) -> (amount: Float, takeRate: Float, priority: Int32)? {
        let r = row(of: id)
        return r < 0 ? nil : (amounts[r], takeRates[r], priorities[r])
    }

    /// The table row of a lender id, or -1: a branch-free binary search over the sorted ids.
    @inline(__always)
    func row(of id: UInt64) -> Int {
        var base = 0, n = lenderCount
        while n > 1 {
            let half = n / 2
            base = ids[base + half] <= id ? base + half : base
            n -= half
        }
        return ids[base] == id ? base : -1
    }

    /// The reason code of a known lender (`row`) for this applicant and candidate: 0 eligible, or the first
    /// rule it fails (codes as ``RoutingLayout/reasonLabels(allowed:ranges:)`` lists them).
    @inline(__always)
    func reason(row: Int, context: UnsafeBufferPointer<Float>, capacity: Float) -> UInt8 {
        var code = 2
        for i in 0..<allowRules.count {
            let rule = allowRules[i]
            let x = context[rule.feature]
            if x.isNaN {
                if !unrestricted[row * allowRules.count + i] { return UInt8(code) }
            } else {
                let c = Int(x)
                if c < 0 || c >= rule.cardinality || allowed[row * allowedWidth + rule.offset + c] == 0 { return UInt8(code) }
            }
            code += 1
        }
        for i in 0..<rangeRules.count {
            let rule = rangeRules[i]
            let x = context[rule.feature]
            let lo = minimums[row * rangeCount + rule.column], hi = maximums[row * rangeCount + rule.column]
            if x.isNaN {
                if lo > -RoutingLayout.noBound || hi < RoutingLayout.noBound { return UInt8(code) }
            } else if x < lo || x > hi {
                return UInt8(code)
            }
            code += 1
        }
        return capacity > 0 ? 0 : UInt8(code)
    }

    /// Rows of head input built and scored at a time.
    static let block = 64

    public func score(_ batch: ScoreBatch, into out: ScoreOutput) throws(ScoringError) -> RowOrder {
        guard let order = out.order else {
            throw ScoringError(.internalError, "the caller gave a routing model no room for its order")
        }
        let n = batch.candidateCount
        guard n > 0 else { return .ranked(count: 0) }
        guard batch.ids.count == n else {
            throw ScoringError(.invalidRequest, "model '\(version.model)' (kind routing) routes to lenders by id: send each candidate's lender id (\(batch.ids.count) ids for \(n) candidates)")
        }
        let ctx = batch.context, m = candidateFeatureCount, f = fieldCount, c = contextCount
        // The applicant's arm and population.
        let channel = ctx[channelFeature]
        let share: Float = channel.isNaN ? 0 : shares[min(max(Int(channel), 0), channelCardinality - 1)]
        let modelArm = RoutingLayout.onModelArm(key: batch.routingKey, salt: salt, share: share)
        let returning = returningFeature.map { ctx[$0] >= 0.5 } ?? false
        let approve = heads[returning ? approveHead.1 : approveHead.0]
        let amountIndex = returning ? amountHead.1 : amountHead.0

        let up = { (x: Int) in (x + 63) & ~63 }
        let orderBytes = up(n * 4), rowsBytes = up(Self.block * f * 4), sumsBytes = up(Self.block * 8)
        let fmBytes = up(max(maxFactors, 1) * 4), blockBytes = up(Self.block * 4)
        return ThreadScratch.with(bytes: 4 * orderBytes + rowsBytes + sumsBytes + fmBytes + 2 * blockBytes) { raw in
            let lenderRows = raw.bindMemory(to: Int32.self, capacity: n)
            let eligible = (raw + orderBytes).bindMemory(to: Int32.self, capacity: n)
            let ineligible = (raw + 2 * orderBytes).bindMemory(to: Int32.self, capacity: n)
            let keys = (raw + 3 * orderBytes).bindMemory(to: Float.self, capacity: n)
            var at = 4 * orderBytes
            let rows = (raw + at).bindMemory(to: Float.self, capacity: Self.block * f); at += rowsBytes
            let sums = (raw + at).bindMemory(to: Double.self, capacity: Self.block); at += sumsBytes
            let fmSums = (raw + at).bindMemory(to: Float.self, capacity: max(maxFactors, 1)); at += fmBytes
            let blockP = (raw + at).bindMemory(to: Float.self, capacity: Self.block); at += blockBytes
            let blockA = (raw + at).bindMemory(to: Float.self, capacity: Self.block)

            let p = out.floatColumn(0), amount = out.floatColumn(1)
            let reasons = out.codeColumn(0), arms = out.codeColumn(1), explored = out.codeColumn(2)
            // 1. Eligibility.
            var e = 0, x = 0
            for i in 0..<n {
                let row = self.row(of: batch.ids[i])
                lenderRows[i] = Int32(row)
                let code: UInt8 = row < 0 ? 1 : reason(row: row, context: ctx, capacity: batch.candidates[i * m + capacityFeature])
                reasons[i] = code
                arms[i] = modelArm ? 0 : 1
                explored[i] = 0
                p[i] = 0
                amount[i] = 0
                out.scores[i] = RoutingLayout.ineligibleScore
                if code == 0 {
                    eligible[e] = Int32(i)
                    e += 1
                } else {
                    ineligible[x] = Int32(i)
                    x += 1
                }
            }
            // 2. Heads and value, for eligible candidates only, a block of rows at a time.
            var start = 0
            while start < e {
                let count = min(Self.block, e - start)
                for r in 0..<count {
                    let i = Int(eligible[start + r])
                    let rowPtr = rows + r * f
                    for j in 0..<c { rowPtr[j] = ctx[j] }
                    if m > 0 { (rowPtr + c).update(from: batch.candidates.baseAddress! + i * m, count: m) }
                    rowPtr[f - 1] = Float(lenderRows[i])
                }
                evaluate(approve, rows: rows, count: count, sums: sums, fmSums: fmSums, into: blockP)
                if let a = amountIndex {
                    evaluate(heads[a], rows: rows, count: count, sums: sums, fmSums: fmSums, into: blockA)
                }
                for r in 0..<count {
                    let i = Int(eligible[start + r]), lender = Int(lenderRows[i])
                    let a = max(0, amountIndex == nil ? amounts[lender] : blockA[r])
                    p[i] = blockP[r]
                    amount[i] = a
                    let v: Float = switch value {
                    case .revenue: blockP[r] * a * takeRates[lender]
                    case .fundedAmount: blockP[r] * a
                    case .approval: blockP[r]
                    }
                    // A head that outputs NaN must not break the order: it values the lender at 0.
                    out.scores[i] = v.isNaN ? 0 : max(v, 0)
                }
                start += count
            }
            // 3. The order: eligible first, by value (model) or the baseline; then the ineligible, as sent.
            if modelArm {
                ScoreOrder.sortDescending(eligible, e, by: out.scores)
                if e >= 2 && epsilon > 0 {
                    let draw = batch.routingKey ^ (exploreSalt &* 0xD6E8_FEB8_6659_FD93)
                    if RoutingLayout.uniform(draw, salt &+ 1) < epsilon {
                        let j = 1 + Int(RoutingLayout.mix(draw ^ salt) % UInt64(e - 1))
                        let promoted = eligible[j]
                        var q = j
                        while q > 0 {
                            eligible[q] = eligible[q - 1]
                            q -= 1
                        }
                        eligible[0] = promoted
                        explored[Int(promoted)] = 1
                    }
                }
            } else {
                for q in 0..<e {
                    let lender = Int(lenderRows[Int(eligible[q])])
                    keys[Int(eligible[q])] = switch baseline {
                    case .priority: -Float(priorities[lender])
                    case .staticValue: amounts[lender] * takeRates[lender]
                    }
                }
                ScoreOrder.sortDescending(eligible, e, by: keys)
            }
            var k: Int
            if batch.topK > 0 || maxProducts > 0 {
                k = e
                if batch.topK > 0 { k = min(k, batch.topK) }
                if maxProducts > 0 { k = min(k, maxProducts) }
            } else {
                k = n
            }
            order.update(from: eligible, count: min(k, e))
            if k > e { (order + e).update(from: ineligible, count: k - e) }
            return .ranked(count: k)
        }
    }

    /// One head's outputs for `count` rows.
    @inline(__always)
    func evaluate(_ head: Head, rows: UnsafePointer<Float>, count: Int, sums: UnsafeMutablePointer<Double>,
                  fmSums: UnsafeMutablePointer<Float>, into out: UnsafeMutablePointer<Float>) {
        switch head {
        case .trees(let forest):
            forest.predict(rows: rows, count: count, sums: sums, into: out)
        case .linear(let fm, let norm, let logistic, let scale, let offset):
            for r in 0..<count {
                let y = fm.output(row: rows + r * fieldCount, fieldCount: fieldCount, encoding: encoding, norm: norm, sums: fmSums)
                out[r] = logistic ? 1 / (1 + expf(-y)) : offset + scale * y
            }
        }
    }
}
