import Allocation
import ArbiterStore
import ArbiterTraining
import ArgumentParser
import Foundation
import LeadGrading
import ArbiterModels
import Routing

#if canImport(Glibc)
import Glibc
#endif

struct ArbiterTrain: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "arbiter-train",
        abstract: "Generate data, train models and publish them as versions into an Arbiter store.",
        subcommands: [GenData.self, Train.self, Allocate.self, Import.self, Replay.self, Versions.self, Activate.self, Promote.self, Split.self, Shadow.self, Rollback.self, GC.self, Push.self, ClusterCommand.self])
}

/// Model kinds this trainer can produce.
enum Kind: String, ExpressibleByArgument, CaseIterable {
    case leadGrading = "lead-grading"
    case ranking
    case routing
    case allocation
}

struct StoreOptions: ParsableArguments {
    @Option(help: "The store directory (an LMDB environment).")
    var store: String

    @Option(help: ArgumentHelp(
        "Raise the store's map size to at least this many GiB (default: the size the store records; 32 for a new store).",
        discussion: "The store records its map size and every process adopts it; this flag can only raise it. Address space, not memory."))
    var mapSizeGib: Int?

    @Flag(help: ArgumentHelp(
        "Store every tensor of a new version, even one unchanged since the latest or active version.",
        discussion: "By default an unchanged tensor (an embedding table beside retrained heads) is stored once and shared (store format 3). Servers built before format 3 refuse such versions, naming the format: publish with this flag while they still serve the store."))
    var noShareTensors = false

    func validate() throws {
        if let m = mapSizeGib, !(1...4096).contains(m) { throw ValidationError("--map-size-gib must be in 1...4096") }
    }

    func open(create: Bool) throws -> Catalog {
        let env = try StoreEnvironment.open(path: store, configuration: StoreConfiguration(mapSize: mapSizeGib.map { $0 << 30 }, create: create))
        if env.mapSize > env.recordedMapSize {
            // Servers map the size recorded when they started: once data lies beyond it they keep serving what
            // they loaded, but need a restart to load newer versions.
            FileHandle.standardError.write(Data(
                "note: raising the store's map size from \(env.recordedMapSize >> 20) MiB to \(env.mapSize >> 20) MiB (recorded at the next commit); running servers load versions stored beyond their map only after a restart\n".utf8))
        }
        return Catalog(environment: env, sharesTensors: !noShareTensors)
    }
}

struct GenData: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "gen-data",
                                                    abstract: "Write synthetic training data with planted structure (CSV).")
    @Option(help: "Model kind.") var kind: Kind
    @Option(help: "Number of rows (lead-grading).") var rows: Int?
    @Option(help: "Lead grading: leads per job posting on average (consecutive rows sharing the posting's context and posting_id; 1: every lead its own posting, the default).") var leadsPerPosting: Int = 1
    @Option(help: "Users (ranking).") var users: Int = 2000
    @Option(help: "Items (ranking).") var items: Int = 1000
    @Option(help: "Impressions per user (ranking).") var perUser: Int = 40
    @Option(help: "Applicants (routing).") var applicants: Int = 20_000
    @Option(help: "Lenders (routing).") var lenders: Int = 30
    @Option(help: "Routing: where to write the lender table (ids, take rates, priorities, capacities, rules).") var lendersOut: String?
    @Option(help: "Allocation: leads a day.") var leads: Int = 2000
    @Option(help: "Allocation: agents (their capacities total about 1.2 × the leads a day).") var agents: Int = 200
    @Option(help: "Allocation: days of historical pairs (each lead given to a random allowed agent).") var days: Int = 30
    @Option(help: "Allocation: cities (a pair must share one; more cities, fewer allowed pairs: about coverage / cities of them).") var cities: Int = 12
    @Option(help: "Allocation: the probability that an agent covers a job category.") var coverage: Double = 0.45
    @Option(help: "Allocation: also write a held-out day (its leads and every agent, as `allocate --input` reads it) here.") var dayOut: String?
    @Option(help: "Random seed; the same seed writes the same file.") var seed: UInt64 = 1
    @Option(help: "Output CSV path.") var out: String

    func validate() throws {
        switch kind {
        case .leadGrading:
            guard let rows else { throw ValidationError("--rows is required for --kind lead-grading") }
            guard (1...50_000_000).contains(rows) else { throw ValidationError("--rows must be in 1...50000000") }
            guard (1...1000).contains(leadsPerPosting) else { throw ValidationError("--leads-per-posting must be in 1...1000") }
        case .ranking:
            guard (1...10_000_000).contains(users) else { throw ValidationError("--users must be in 1...10000000") }
            guard (1...10_000_000).contains(items) else { throw ValidationError("--items must be in 1...10000000") }
            guard (1...10_000).contains(perUser) else { throw ValidationError("--per-user must be in 1...10000") }
            guard users * min(perUser, items) <= 50_000_000 else { throw ValidationError("--users × --per-user must be at most 50000000 impressions") }
        case .routing:
            guard (1...5_000_000).contains(applicants) else { throw ValidationError("--applicants must be in 1...5000000") }
            guard (2...1000).contains(lenders) else { throw ValidationError("--lenders must be in 2...1000") }
            guard lendersOut != nil else { throw ValidationError("--lenders-out is required for --kind routing (the lender table training needs)") }
        case .allocation:
            guard (1...1_000_000).contains(leads) else { throw ValidationError("--leads must be in 1...1000000") }
            guard (1...100_000).contains(agents) else { throw ValidationError("--agents must be in 1...100000") }
            guard (1...1000).contains(days), days * leads <= 50_000_000 else { throw ValidationError("--days must be in 1...1000, and --days × --leads at most 50000000") }
            guard (1...10_000).contains(cities) else { throw ValidationError("--cities must be in 1...10000") }
            guard coverage > 0, coverage <= 1 else { throw ValidationError("--coverage must be in (0, 1]") }
        }
    }

    func run() throws {
        if kind == .allocation {
            let world = AllocationWorld(seed: seed, agents: agents, leadsPerDay: leads, cities: cities, coverage: coverage)
            let rows = world.history(days: days, leadsPerDay: leads, seed: seed)
            try AllocationData.writePairs(rows, to: URL(fileURLWithPath: out))
            print("wrote \(rows.count) historical pairs of \(days) days to \(out) (hired \(pct(rows.filter(\.hired).count, rows.count)))")
            if let dayOut {
                let (day, _) = world.request(day: 1, leads: leads)
                try AllocationData.writeDay(day, to: URL(fileURLWithPath: dayOut))
                print("wrote a held-out day of \(leads) leads and \(agents) agents (capacity \(world.agents.reduce(0) { $0 + $1.capacity })) to \(dayOut)")
            }
            return
        }
        if kind == .routing {
            let world = RoutingWorld(seed: seed, lenders: lenders)
            let rows = world.submissions(applicants: applicants, stream: seed)
            try RoutingData.writeCSV(rows, to: URL(fileURLWithPath: out))
            try RoutingData.writeLenders(world.lenders, to: URL(fileURLWithPath: lendersOut!))
            let approved = rows.filter(\.approved)
            print("wrote \(rows.count) submissions of \(Set(rows.map(\.applicant)).count) applicants to \(out) (approved \(pct(approved.count, rows.count)), "
                  + String(format: "mean funded %.0f", approved.map { Double($0.fundedAmount) }.reduce(0, +) / Double(max(approved.count, 1)))
                  + ") and \(lenders) lenders to \(lendersOut!)")
            return
        }
        if kind == .ranking {
            let data = RankingData.generate(users: users, items: items, perUser: perUser, seed: seed)
            try RankingData.writeCSV(data, to: URL(fileURLWithPath: out))
            let n = data.count
            print("wrote \(n) impressions of \(items) items to \(users) users to \(out) (viewed \(pct(data.filter(\.viewed).count, n)), "
                  + "chatted \(pct(data.filter(\.chatted).count, n)), replied \(pct(data.filter(\.replied).count, n)))")
            return
        }
        let rows = rows ?? 0
        let data = LeadData.generate(rows: rows, seed: seed, leadsPerPosting: leadsPerPosting)
        try LeadData.writeCSV(data, to: URL(fileURLWithPath: out))
        let c = data.filter(\.contacted).count, i = data.filter(\.interviewed).count, h = data.filter(\.hired).count
        print("wrote \(rows) leads of \(data.last?.posting ?? 0) postings to \(out) (contacted \(pct(c, rows)), interviewed \(pct(i, rows)), hired \(pct(h, rows)))")
    }
}

func pct(_ a: Int, _ b: Int) -> String { String(format: "%.1f%%", 100 * Double(a) / Double(max(b, 1))) }

struct Train: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Train a model on a CSV and publish it as a new active version.")
    @Option(help: "Model kind.") var kind: Kind
    @Option(help: "Training CSV (as written by gen-data).") var data: String
    @OptionGroup var storeOptions: StoreOptions
    @Option(help: "Model name in the store (a-z, 0-9, '-', '_', '.').") var model: String
    @Option(help: "Factor count of each factorization machine.") var factors: Int = 8
    @Option(help: "AdaGrad learning rate.") var learningRate: Float = 0.05
    @Option(help: "L2 penalty.") var l2: Float = 1e-5
    @Option(help: "Most epochs per stage (early stopping usually ends sooner).") var maxEpochs: Int = 30
    @Option(help: "Seed for initialization and shuffling.") var seed: UInt64 = 1
    @Flag(help: "Publish without making the new version active.") var noActivate = false
    @Option(help: "Also write the held-out metrics as JSON to this file.") var metricsOut: String?
    @Option(help: ArgumentHelp("Share of the input held back for the reported metrics (and lead grading's grade thresholds). Default 0.2 (allocation 0.1).",
                               discussion: "Lead grading places rows by their position in the file, spread evenly; ranking by user, routing by applicant, allocation by a hash of the row. With --validation-fraction, at most 0.9 may be held back."))
    var testFraction: Double?
    @Option(help: "Share of the input held back for early stopping (ranking: and the fusion weights' search). Default 0.1.") var validationFraction: Double?
    @Option(help: "Ranking: latent dimension of the matrix factorisation (served vectors carry 2 more: the biases).") var dimension: Int = 16
    @Option(help: "Ranking: a categorical item feature to diversify on (at most --diversity-max items per value in an answer).") var diversityFeature: String?
    @Option(help: "Ranking: most items sharing a value of --diversity-feature in an answer.") var diversityMax: Int = 2
    @Option(help: ArgumentHelp("Ranking, routing: take a head from a library instead of fitting it: HEAD=FORMAT:FILE (repeatable; routing's heads are approve and amount).",
                               discussion: "FORMAT is xgboost-json or lightgbm-text; the model takes the head row that --write-head-rows writes (ranking: user features, item features, dot; routing: applicant features, lender features, lender) and is a binary classifier (a regression for routing's amount)."))
    var head: [String] = []
    @Option(help: "Ranking: with --head, the library's predictions checked first: HEAD=ROWS.csv:PREDICTIONS (repeatable).") var headCheck: [String] = []
    @Option(help: "Ranking, routing: write every row's head input (split, ids, the heads' input features, labels) to this CSV.") var writeHeadRows: String?
    @Option(help: "Routing: the lender table (as gen-data writes it: lender_id,take_rate,priority,daily_capacity, then min:F, max:F, allow:F rules).") var lenders: String?
    @Option(help: "Routing: the model's share of every channel's applicants (the rest get the baseline).") var share: Float = 0.1
    @Option(help: "Routing: a channel's own share, CODE=SHARE (repeatable).") var channelShare: [String] = []
    @Option(help: "Routing: probability that a model-arm applicant gets one eligible lender below the top promoted to the top.") var epsilon: Double = 0.05
    @Option(help: "Routing: answer at most this many eligible lenders (withdrawal mode; 0: no cap).") var maxProducts: Int = 0
    @Option(help: "Routing: what a lender is worth: revenue (p × amount × take rate), funded (p × amount) or approval (p).") var value: String = "revenue"
    @Option(help: "Routing: the baseline arm's order: priority (the table's list) or rules (average amount × take rate).") var baseline: String = "priority"
    @Option(help: "Routing: the traffic split's salt (keep it to keep applicants on their arms across versions).") var splitSalt: UInt64 = 0
    @Flag(help: "Routing: separate heads for new and returning applicants.") var splitReturning = false
    @Option(help: "Allocation: the cities the data was generated with (gen-data --cities).") var cities: Int = 12
    @Option(help: "Routing: the seed the data was generated with: replay fresh applicants of that world before publishing, and record the result.") var replaySeed: UInt64?

    func validate() throws {
        guard (1...256).contains(factors) else { throw ValidationError("--factors must be in 1...256") }
        guard learningRate > 0, learningRate.isFinite else { throw ValidationError("--learning-rate must be positive") }
        guard l2 >= 0, l2.isFinite else { throw ValidationError("--l2 must be >= 0") }
        guard (1...1000).contains(maxEpochs) else { throw ValidationError("--max-epochs must be in 1...1000") }
        try StoreKeys.validate(model: model)
        _ = try holdout
    }

    /// The fractions held back, as given or the kind's defaults; refused, naming the flags, when out of range.
    var holdout: Holdout {
        get throws {
            let defaults = kind == .allocation ? AllocationTrainer.defaultHoldout : Holdout()
            do {
                return try Holdout(test: testFraction ?? defaults.test, validation: validationFraction ?? defaults.validation)
            } catch {
                throw ValidationError("--test-fraction / --validation-fraction: \(error)")
            }
        }
    }

    func run() throws {
        if kind == .ranking { return try runRanking() }
        if kind == .routing { return try runRouting() }
        if kind == .allocation { return try runAllocation() }
        let rows = try LeadData.readCSV(URL(fileURLWithPath: data))
        let o = fmOptions
        // Per-epoch progress only on a terminal: CI and pipes get the summary alone.
        let tty = isatty(STDERR_FILENO) == 1
        let start = Date()
        let trained = try LeadGradingTrainer.train(rows: rows, options: o, holdout: try holdout) { event in
            guard tty else { return }
            switch event {
            case .stageStarted(let s, let tr, let va):
                FileHandle.standardError.write(Data("stage \(s): \(tr) training rows, \(va) validation rows\n".utf8))
            case .epoch(let s, let r):
                let line = String(format: "  %@ epoch %2d  train logloss %.4f  validation logloss %.4f%@\n",
                                  s, r.epoch, r.trainLogLoss, r.validationLogLoss, r.improved ? "" : "  (no gain)")
                FileHandle.standardError.write(Data(line.utf8))
            }
        }
        let h = try holdout
        print(String(format: "trained on %d leads in %.1f s (%.0f%% held out for test, %.0f%% for validation); held-out (test split):",
                     rows.count, Date().timeIntervalSince(start), h.test * 100, h.validation * 100))
        for m in trained.metrics {
            print(String(format: "  %-10@ AUC %.4f  logloss %.4f  (%d rows, %d epochs)", m.stage, m.auc, m.logLoss, m.rows, m.epochs))
        }
        print(String(format: "  chained p_hire vs hired: AUC %.4f", trained.overallHireAUC))
        print("  grade thresholds on p_hire: A >= \(trained.thresholds[0]), B >= \(trained.thresholds[1]), C >= \(trained.thresholds[2])")
        if let metricsOut {
            let data = try JSONSerialization.data(withJSONObject: trained.metricsDictionary, options: [.prettyPrinted, .sortedKeys])
            try data.write(to: URL(fileURLWithPath: metricsOut))
        }
        let pause = try FaultInjection.publishPause()
        let catalog = try storeOptions.open(create: true)
        let v = try LeadGradingTrainer.publish(trained, model: model, catalog: catalog, activate: !noActivate) { version in
            // A marker, flushed before anything else happens, so that a test that kills this process knows the
            // kill landed inside the write transaction.
            print("publishing \(model) v\(version): write transaction open")
            fflush(nil)
            if pause > 0 { Thread.sleep(forTimeInterval: Double(pause) / 1000) }
        }
        print("published \(model) v\(v) to \(storeOptions.store)\(noActivate ? " (not active)" : " (active)")")
    }

    /// The factorization machine's options from the flags.
    var fmOptions: FMTrainingOptions {
        var o = FMTrainingOptions()
        o.factors = factors
        o.learningRate = learningRate
        o.l2 = l2
        o.maxEpochs = maxEpochs
        o.seed = seed
        return o
    }

    func runAllocation() throws {
        guard (1...10_000).contains(cities) else { throw ValidationError("--cities must be in 1...10000") }
        let schema = AllocationWorld.schema(cities: cities)
        let rows = try AllocationData.readPairs(URL(fileURLWithPath: data), schema: schema)
        let o = fmOptions
        let tty = isatty(STDERR_FILENO) == 1
        let start = Date()
        let trained = try AllocationTrainer.train(rows: rows, schema: schema, options: o, holdout: try holdout) { r in
            guard tty else { return }
            FileHandle.standardError.write(Data(String(format: "  epoch %2d  train logloss %.4f  validation logloss %.4f\n",
                                                       r.epoch, r.trainLogLoss, r.validationLogLoss).utf8))
        }
        print(String(format: "trained the pair model on %d pairs in %.1f s; held-out (test split, %d pairs): AUC %.4f  logloss %.4f",
                     rows.count, Date().timeIntervalSince(start), trained.testRows, trained.auc, trained.logLoss))
        let golden = try trained.version.goldenCases([AllocationTrainer.goldenRequest(cities: cities)])
        let catalog = try storeOptions.open(create: true)
        let v = try trained.version.publish(model: model, golden: golden, catalog: catalog,
                                            metrics: ["auc": trained.auc, "logloss": trained.logLoss], activate: !noActivate)
        print("published \(model) v\(v) to \(storeOptions.store)\(noActivate ? " (not active)" : " (active)")")
    }

    func runRanking() throws {
        guard (1...256).contains(dimension) else { throw ValidationError("--dimension must be in 1...256") }
        guard diversityMax >= 1 else { throw ValidationError("--diversity-max must be at least 1") }
        let rows = try RankingData.readCSV(URL(fileURLWithPath: data))
        var o = RankingTrainingOptions()
        let h = try holdout
        (o.testShare, o.validationShare) = (h.test, h.validation)
        o.dimension = dimension
        o.headFactors = factors
        o.headEpochs = maxEpochs
        o.seed = seed
        o.diversity = diversityFeature.map { ($0, diversityMax) }
        o.headRowsOut = writeHeadRows.map { URL(fileURLWithPath: $0) }
        func pair(_ item: String, _ flag: String) throws -> (String, String) {
            guard let eq = item.firstIndex(of: "="), item[..<eq].count > 0 else { throw ValidationError("\(flag) takes HEAD=..., got '\(item)'") }
            return (String(item[..<eq]), String(item[item.index(after: eq)...]))
        }
        for item in head {
            let (name, spec) = try pair(item, "--head")
            guard let colon = spec.firstIndex(of: ":"), let format = ForestFormat(rawValue: String(spec[..<colon])) else {
                throw ValidationError("--head takes HEAD=FORMAT:FILE with FORMAT one of \(ForestFormat.allCases.map(\.rawValue).joined(separator: ", ")), got '\(item)'")
            }
            let file = String(spec[spec.index(after: colon)...])
            let forest = try ImportedForest.read(format, file: file)
            if let check = headCheck.first(where: { $0.hasPrefix(name + "=") }) {
                let (_, files) = try pair(check, "--head-check")
                let parts = files.split(separator: ":", maxSplits: 1).map(String.init)
                guard parts.count == 2 else { throw ValidationError("--head-check takes HEAD=ROWS.csv:PREDICTIONS, got '\(check)'") }
                let rows = try GbdtImport.readRows(parts[0], featureCount: forest.featureCount)
                let worst = try GbdtImport.check(forest, rows: rows, expected: try GbdtImport.readPredictions(parts[1]), file: parts[1])
                print(String(format: "head %@: checked %d rows against the library's predictions: largest difference %.3g", name, rows.count, worst))
            }
            o.importedHeads[name] = forest
        }
        if let d = o.diversity, !RankingData.schema.candidate.contains(where: { $0.name == d.feature }) {
            // Refused before training, as publishing would refuse it.
            throw ValidationError("--diversity-feature '\(d.feature)' is not an item feature; the item features are \(RankingData.schema.candidate.map(\.name).joined(separator: ", "))")
        }
        let tty = isatty(STDERR_FILENO) == 1
        let start = Date()
        let trained = try RankingTrainer.train(rows: rows, options: o) { line in
            if tty { FileHandle.standardError.write(Data("\(line)\n".utf8)) }
        }
        let q = trained.test
        print(String(format: "trained on %d impressions in %.1f s; NDCG@10 of replies on held-out impressions (%d test users):",
                     rows.count, Date().timeIntervalSince(start), q.users))
        print(String(format: "  fused (weights by cross-entropy search)  %.4f", q.fused))
        print(String(format: "  fused, equal weights                     %.4f", q.equalWeights))
        for name in RankingTrainer.headNames { print(String(format: "  %-40@ %.4f", "head \(name) alone" as NSString, q.heads[name] ?? 0)) }
        print(String(format: "  popularity                               %.4f", q.popularity))
        for h in trained.version.heads {
            if case .trees(let forest) = h.model { print("  head \(h.name): imported, \(forest.source), \(forest.trees.count) trees") }
        }
        print("  fusion weights: \(trained.version.heads.map { "\($0.name) \(String(format: "%.3f", $0.weight))" }.joined(separator: ", "))")
        if let metricsOut {
            let data = try JSONSerialization.data(withJSONObject: q.metrics, options: [.prettyPrinted, .sortedKeys])
            try data.write(to: URL(fileURLWithPath: metricsOut))
        }
        let golden = try trained.version.goldenCases(trained.goldenRequests)
        let catalog = try storeOptions.open(create: true)
        let v = try trained.version.publish(model: model, golden: golden, catalog: catalog, metrics: q.metrics, activate: !noActivate)
        print("published \(model) v\(v) to \(storeOptions.store)\(noActivate ? " (not active)" : " (active)")")
    }

    func runRouting() throws {
        guard let lenders else { throw ValidationError("--lenders is required for --kind routing (the lender table: ids, take rates, priorities, rules)") }
        guard (0...1).contains(share) else { throw ValidationError("--share must be in 0...1") }
        guard (0...1).contains(epsilon) else { throw ValidationError("--epsilon must be in 0...1") }
        guard maxProducts >= 0 else { throw ValidationError("--max-products must be ≥ 0") }
        guard splitSalt < 1 << 53 else { throw ValidationError("--split-salt must be below 2^53") }
        var o = RoutingTrainingOptions()
        let h = try holdout
        (o.testShare, o.validationShare) = (h.test, h.validation)
        o.factors = factors
        o.maxEpochs = maxEpochs
        o.learningRate = learningRate
        o.seed = seed
        o.share = share
        o.epsilon = epsilon
        o.maxProducts = maxProducts
        o.salt = splitSalt
        o.splitReturning = splitReturning
        o.headRowsOut = writeHeadRows.map { URL(fileURLWithPath: $0) }
        switch value {
        case "revenue": o.value = .revenue
        case "funded": o.value = .fundedAmount
        case "approval": o.value = .approval
        default: throw ValidationError("--value must be revenue, funded or approval, got '\(value)'")
        }
        switch baseline {
        case "priority": o.baseline = .priority
        case "rules": o.baseline = .staticValue
        default: throw ValidationError("--baseline must be priority or rules, got '\(baseline)'")
        }
        for item in channelShare {
            let parts = item.split(separator: "=")
            guard parts.count == 2, let c = Int(parts[0]), let v = Float(parts[1]), (0...1).contains(v) else {
                throw ValidationError("--channel-share takes CODE=SHARE with SHARE in 0...1, got '\(item)'")
            }
            o.channelShares[c] = v
        }
        for item in head {
            guard let eq = item.firstIndex(of: "="), let role = ["approve": RoutingLayout.Role.approve, "amount": .amount][String(item[..<eq])] else {
                throw ValidationError("--head takes approve=FORMAT:FILE or amount=FORMAT:FILE for routing, got '\(item)'")
            }
            let spec = item[item.index(after: eq)...]
            guard let colon = spec.firstIndex(of: ":"), let format = ForestFormat(rawValue: String(spec[..<colon])) else {
                throw ValidationError("--head takes ROLE=FORMAT:FILE with FORMAT one of \(ForestFormat.allCases.map(\.rawValue).joined(separator: ", ")), got '\(item)'")
            }
            o.importedHeads[role] = try ImportedForest.read(format, file: String(spec[spec.index(after: colon)...]))
        }
        let table = try RoutingData.readLenders(URL(fileURLWithPath: lenders))
        let rows = try RoutingData.readCSV(URL(fileURLWithPath: data))
        let tty = isatty(STDERR_FILENO) == 1
        let start = Date()
        let trained = try RoutingTrainer.train(rows: rows, lenders: table, options: o) { line in
            if tty { FileHandle.standardError.write(Data("\(line)\n".utf8)) }
        }
        let q = trained.test
        print(String(format: "trained on %d submissions to %d lenders in %.1f s; held-out (test applicants, %d submissions):",
                     rows.count, table.count, Date().timeIntervalSince(start), q.submissions))
        print(String(format: "  p(approve)  AUC %.4f  logloss %.4f", q.approveAUC, q.approveLogLoss))
        print(String(format: "  amount      RMSE %.1f  (each lender's average: %.1f)", q.amountRMSE, q.lenderAverageRMSE))
        var metrics = q.metrics
        var version = trained.version
        if let replaySeed {
            let replay = try RoutingReplay.run(model: try version.model(), seed: replaySeed, applicants: 20_000)
            print(replay.report)
            metrics.merge(replay.metrics) { $1 }
            version.notes["replay"] = replay.report
        }
        if let metricsOut {
            let data = try JSONSerialization.data(withJSONObject: metrics, options: [.prettyPrinted, .sortedKeys])
            try data.write(to: URL(fileURLWithPath: metricsOut))
        }
        let golden = try version.goldenCases(trained.goldenRequests)
        let catalog = try storeOptions.open(create: true)
        let v = try version.publish(model: model, golden: golden, catalog: catalog, metrics: metrics, activate: !noActivate)
        print("published \(model) v\(v) to \(storeOptions.store)\(noActivate ? " (not active)" : " (active)")")
    }
}

struct Allocate: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Allocate a whole day's leads to agents with an allocation model in the store (the solver the server runs).",
        discussion: """
            INPUT is a CSV with `id` and the model's candidate features by name (role `lead` or `agent`, slots, \
            the rest; an empty cell is a missing value), as `gen-data --kind allocation --day-out` writes. OUTPUT \
            gets one row per input row: id, role, the chosen agents' ids and the pairs' probabilities, load, \
            shadow price, and how the row was placed.
            """)
    @OptionGroup var storeOptions: StoreOptions
    @Option(help: "The allocation model in the store (its active version).") var model: String
    @Option(help: "The day's leads and agents (CSV).") var input: String
    @Option(help: "Where to write the allocation (CSV).") var output: String
    @Option(help: "Pairs below this probability are not allocated.") var minScore: Float = 0
    @Option(help: "Most allowed pairs the rules may derive (the server's bound is the model's max_pairs).") var maxPairs: Int = 50_000_000
    @Option(help: "Seconds the exact solve may take before the remaining leads are placed greedily (0: no limit; the server uses the model's deadline_ms).") var deadlineSeconds: Double = 0

    func validate() throws {
        guard minScore.isFinite, (0...1).contains(minScore) else { throw ValidationError("--min-score must be in 0...1") }
        guard (1...2_000_000_000).contains(maxPairs) else { throw ValidationError("--max-pairs must be in 1...2000000000") }
        guard deadlineSeconds.isFinite, (0...86_400).contains(deadlineSeconds) else { throw ValidationError("--deadline-seconds must be in 0...86400") }
        try StoreKeys.validate(model: model)
    }

    func run() throws {
        let tty = isatty(STDERR_FILENO) == 1
        func step(_ s: String) { if tty { FileHandle.standardError.write(Data((s + "\n").utf8)) } }
        let catalog = try storeOptions.open(create: false)
        let loaded = try LoadedVersion(environment: catalog.environment, model: model)
        let manifest = try ModelManifest.decode(Data(loaded.manifest))
        guard manifest.kind == AllocationLayout.kind else { throw ValidationError("\(model) v\(loaded.version) is a \(manifest.kind) model, not allocation") }
        let m = try AllocationModel(version: loaded, manifest: manifest)
        let t0 = Date()
        step("reading \(input)")
        let q = try AllocationData.readDay(URL(fileURLWithPath: input), schema: manifest.schema, minScore: minScore)
        let why = q.context.withUnsafeBufferPointer { c in
            q.rows.withUnsafeBufferPointer { manifest.schema.firstInvalidValue(context: c, candidates: $0, candidateCount: q.count) }
        }
        if let why { throw ValidationError("\(input): \(why)") }
        let t1 = Date()
        step("allocating \(q.count) rows")
        let n = q.count, schema = manifest.schema
        let (_, fc, cc) = try m.allocate(context: q.context, rows: q.rows, count: n, ids: q.ids, maxPairs: maxPairs,
                                         deadline: deadlineSeconds > 0 ? UInt64(deadlineSeconds * 1e9) : .max)
        let t2 = Date()
        step("writing \(output)")
        let M = m.maxLeadSlots, width = schema.candidate.count
        var text = "id,role," + (1...M).map { "agent_\($0)" }.joined(separator: ",") + "," + (1...M).map { "p_\($0)" }.joined(separator: ",")
            + ",load,shadow_price,allocation\n"
        var leads = 0, placed = 0, greedy = 0, stranded = 0
        for r in 0..<n {
            let isLead = q.rows[r * width] == AllocationLayout.leadRole
            text += "\(q.ids[r]),\(isLead ? "lead" : "agent")"
            for s in 0..<M {
                let a = fc[(2 * s) * n + r]
                text += a >= 0 ? ",\(q.ids[Int(a)])" : ","
            }
            for s in 0..<M {
                let p = fc[(2 * s + 1) * n + r]
                text += p > 0 ? ",\(p)" : ","
            }
            let kind = AllocationLayout.allocationLabels[Int(cc[r])]
            text += ",\(Int(fc[(2 * M) * n + r])),\(fc[(2 * M + 1) * n + r]),\(kind)\n"
            if isLead {
                leads += 1
                if fc[r] >= 0 { placed += 1 }
                if kind == "greedy" { greedy += 1 }
                if kind == "no_allowed_agent" { stranded += 1 }
            }
        }
        try Data(text.utf8).write(to: URL(fileURLWithPath: output), options: .atomic)
        let t3 = Date()
        let objective = n > 0 ? fc[(2 * M + 2) * n] : 0, greedyObjective = n > 0 ? fc[(2 * M + 3) * n] : 0
        var usage = rusage()
        getrusage(RUSAGE_SELF.rawValue, &usage)
        print("allocated \(leads) leads to \(n - leads) agents with \(model) v\(loaded.version): \(placed) placed, \(stranded) with no allowed agent"
              + (greedy > 0 ? ", \(greedy) placed greedily after the deadline" : ""))
        print(String(format: "expected hires %.2f (greedy on the same scores %.2f, %+.2f%%)", objective, greedyObjective,
                     greedyObjective > 0 ? 100 * Double(objective / greedyObjective - 1) : 0))
        print(String(format: "time: read %.2f s, allocate %.2f s, write %.2f s; peak RSS %d MiB", t1.timeIntervalSince(t0),
                     t2.timeIntervalSince(t1), t3.timeIntervalSince(t2), usage.ru_maxrss / 1024))
        print("wrote \(output)")
    }
}

struct Replay: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Replay a published routing or allocation version on fresh data of the generated world it was trained for.",
        discussion: """
            Routing: the world is the one `gen-data --kind routing --seed SEED` generated the training data from; \
            its applicants here are new ones. Each policy routes every applicant down its order of eligible lenders \
            until one approves (at most --tries), and earns the world's true expected funded amount and revenue. \
            Allocation: fresh days of the world `gen-data --kind allocation --seed SEED --leads N --agents A \
            --cities C --coverage V` made (give the same values), allocated exactly, greedily on the same scores and \
            by grade alone, each earning the world's true expected hires; and the model's calibration among the \
            pairs the exact allocation chose.
            """)
    @Option(help: "Model kind (routing, allocation).") var kind: Kind
    @OptionGroup var storeOptions: StoreOptions
    @Option(help: "Model name.") var model: String
    @Option(help: "Version (default: the active one).") var version: UInt64 = 0
    @Option(help: "The seed the training data was generated with.") var seed: UInt64
    @Option(help: "Routing: fresh applicants to replay.") var applicants: Int = 20_000
    @Option(help: "Routing: lenders an applicant is sent to, in order, until one approves.") var tries: Int = 3
    @Option(help: "Allocation: held-out days to replay.") var days: Int = 5
    @Option(help: "Allocation: leads a day (as gen-data had them).") var leads: Int = 2000
    @Option(help: "Allocation: agents (as gen-data had them).") var agents: Int = 200
    @Option(help: "Allocation: cities (as gen-data had them).") var cities: Int = 12
    @Option(help: "Allocation: category coverage (as gen-data had it).") var coverage: Double = 0.45

    func validate() throws {
        guard kind == .routing || kind == .allocation else { throw ValidationError("replay is for --kind routing or allocation") }
        if kind == .allocation {
            guard (1...1000).contains(days), (1...1_000_000).contains(leads), (1...100_000).contains(agents), (1...10_000).contains(cities),
                  coverage > 0, coverage <= 1 else { throw ValidationError("--days 1...1000, --leads 1...1000000, --agents 1...100000, --cities 1...10000, --coverage (0, 1]") }
            return
        }
        guard (1...5_000_000).contains(applicants) else { throw ValidationError("--applicants must be in 1...5000000") }
        guard (1...100).contains(tries) else { throw ValidationError("--tries must be in 1...100") }
    }

    func run() throws {
        let catalog = try storeOptions.open(create: false)
        let loaded = try LoadedVersion(environment: catalog.environment, model: model, version: version)
        let manifest = try ModelManifest.decode(loaded.manifest)
        if kind == .allocation {
            guard manifest.kind == AllocationLayout.kind else { throw ValidationError("\(model) v\(loaded.version) is a \(manifest.kind) model, not allocation") }
            let m = try AllocationModel(version: loaded, manifest: manifest)
            let world = AllocationWorld(seed: seed, agents: agents, leadsPerDay: leads, cities: cities, coverage: coverage)
            print("\(model) v\(loaded.version):")
            print(try AllocationReplay.run(model: m, world: world, days: days, leadsPerDay: leads).text, terminator: "")
            return
        }
        guard manifest.kind == RoutingLayout.kind else { throw ValidationError("\(model) v\(loaded.version) is a \(manifest.kind) model, not routing") }
        let routing = try RoutingModel(version: loaded, manifest: manifest)
        print("\(model) v\(loaded.version):")
        print(try RoutingReplay.run(model: routing, seed: seed, applicants: applicants, tries: tries).report)
    }
}

struct Versions: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "List a model's versions: what each is for (active, split weight, shadow, retained by a server), its validation, its metrics.",
        discussion: "Rejected versions are listed with the reason a server gave; shadow versions with how their scores differed on live traffic.")
    @OptionGroup var storeOptions: StoreOptions
    @Option(help: "Model name.") var model: String

    func run() throws {
        let catalog = try storeOptions.open(create: false)
        let list = try catalog.versions(model: model)
        guard !list.isEmpty else { throw StoreError.unknownModel(model) }
        let f = ISO8601DateFormatter()
        print("VERSION  SERVING               CREATED               KIND          STORED      SHARED      VALIDATION  METRICS")
        var rejected: [VersionListing] = []
        for v in list {
            let created = f.string(from: Date(timeIntervalSince1970: Double(v.meta.createdUnixMillis) / 1000))
            // The headline metrics: held-out AUCs (lead grading, routing's approve head), NDCG@10 of the fused order and
            // of popularity (ranking), the replay's funded amount per applicant by the model and the baseline (routing).
            let auc = v.meta.metrics.keys.sorted().filter { $0.hasSuffix(".auc") || $0.hasSuffix("_auc") || $0 == "ndcg10_fused" || $0 == "ndcg10_popularity"
                || $0 == "replay.model.funded" || $0 == "replay.baseline.funded" }
                .map { String(format: "%@=%.4f", $0, v.meta.metrics[$0]!) }.joined(separator: " ")
            let verdict = v.validation?.outcome.rawValue ?? "-"
            if v.validation?.outcome == .rejected { rejected.append(v) }
            // Padded by hand: Foundation's %@ ignores widths on Linux.
            func pad(_ s: String, _ n: Int) -> String { s.padding(toLength: max(n, s.count), withPad: " ", startingAt: 0) }
            var roles: [String] = []
            if v.isActive { roles.append("active") }
            if let w = v.splitWeight { roles.append("split \(Self.percent(w))") }
            if v.isShadow { roles.append("shadow") }
            if roles.isEmpty && v.isRetained { roles.append("retained") }
            // STORED: the bytes of the tensors this version wrote; SHARED: those it reads from an earlier version's.
            let own = v.meta.tensors.filter { $0.storedIn == nil }.reduce(0) { $0 + $1.byteCount }
            let shared = v.meta.tensors.filter { $0.storedIn != nil }.reduce(0) { $0 + $1.byteCount }
            let line = String(format: "%7llu  ", v.meta.version) + pad(roles.joined(separator: ","), 20) + "  " + pad(created, 20) + "  "
                + pad(v.meta.kind, 12) + "  " + pad(Self.bytes(own), 10) + "  " + pad(shared > 0 ? Self.bytes(shared) : "-", 10) + "  "
                + pad(verdict, 10) + "  " + auc
            print(line.replacingOccurrences(of: "\\s+$", with: "", options: .regularExpression))
        }
        // "-": no server has recorded loading it (not loaded yet, or only by read-only servers).
        for v in rejected {
            let when = f.string(from: Date(timeIntervalSince1970: Double(v.validation!.unixMillis) / 1000))
            print("v\(v.meta.version) was rejected by \(v.validation!.by) at \(when)\(v.isActive ? " (active: servers keep serving an earlier version)" : ""): \(v.validation!.reason ?? "no reason given")")
        }
        for v in list {
            guard let record = v.shadowRecord else { continue }
            for c in record.comparisons {
                var parts = ["\(c.requests) requests", "\(c.rows) rows", "mean |Δscore| \(String(format: "%.6g", c.meanAbsDifference))",
                             "max \(String(format: "%.6g", c.maxAbsDifference))"]
                if c.rankedRequests > 0 { parts.append("rank correlation \(String(format: "%.4f", c.meanRankCorrelation))") }
                if c.codeRows > 0, let col = c.codeColumn { parts.append("\(col) changed \(Self.percent(c.changedCodeShare))") }
                if c.dropped > 0 { parts.append("\(c.dropped) dropped") }
                if c.failed > 0 { parts.append("\(c.failed) not scored") }
                print("v\(v.meta.version) in the shadow of v\(c.served): " + parts.joined(separator: ", "))
            }
        }
    }

    static func bytes(_ n: Int) -> String {
        if n < 1 << 10 { return "\(n) B" }
        if n < 1 << 20 { return String(format: "%.1f KiB", Double(n) / 1024) }
        if n < 1 << 30 { return String(format: "%.1f MiB", Double(n) / 1048576) }
        return String(format: "%.2f GiB", Double(n) / 1073741824)
    }

    static func percent(_ x: Double) -> String {
        let p = x * 100
        return p == p.rounded() ? "\(Int(p))%" : String(format: "%.2f%%", p)
    }
}

struct Promote: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Make a version active and end any traffic split (and a shadow of that version).",
        discussion: "One transaction. A version a server rejected is refused. Servers swap at their next poll, or at once after `arbiter reload`.")
    @OptionGroup var storeOptions: StoreOptions
    @Option(help: "Model name.") var model: String
    @Option(help: "Version to promote.") var version: UInt64

    func run() throws {
        let catalog = try storeOptions.open(create: false)
        let before = try catalog.deployment(model: model)
        try catalog.promote(model: model, version: version)
        var note = ""
        if let split = before.split { note = "; the split \(split.description) ended" }
        print("\(model) v\(version) is now active\(note)")
    }
}

struct Split: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Split the traffic of a model that pins no version between versions, by routing key.",
        discussion: """
            --weights 7=0.9,8=0.1 sends each routing key to one version for as long as the split holds (a hash of \
            the key and the model's name, laid over the versions oldest first), so changing 90/10 to 80/20 moves \
            only the keys that must move. One transaction; `promote` (or a publish that activates) ends it. Every \
            version must exist and none may have been rejected by a server; a share whose version fails \
            validation on a server is served by the active version there.
            """)
    @OptionGroup var storeOptions: StoreOptions
    @Option(help: "Model name.") var model: String
    @Option(help: "VERSION=WEIGHT pairs, comma-separated, summing to 1 (for example 7=0.9,8=0.1).") var weights: String

    func run() throws {
        let split = try TrafficSplit(parsing: weights)
        let catalog = try storeOptions.open(create: false)
        try catalog.split(model: model, split)
        print("\(model): unpinned traffic split \(split.shares.map { "v\($0.version) \(Versions.percent($0.weight))" }.joined(separator: ", ")) by routing key")
    }
}

struct Shadow: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Score a sampled share of a model's live requests with another version as well, and record how its scores differ.",
        discussion: """
            Servers score the sample off their event loops after answering the caller, and record per served version: \
            requests and rows compared, mean and largest |score difference|, rank correlation within requests, and the \
            share of changed grades or arms. `arbiter models` shows it live; `versions` shows what was recorded. \
            --off stops it (what was recorded stays).
            """)
    @OptionGroup var storeOptions: StoreOptions
    @Option(help: "Model name.") var model: String
    @Option(help: "The version to score in the shadow.") var version: UInt64?
    @Option(help: "Share of unpinned requests to sample, in (0, 1].") var sample: Double = 0.05
    @Flag(help: "Stop shadow scoring.") var off = false

    func validate() throws {
        guard off != (version != nil) else { throw ValidationError("give --version N (with --sample), or --off") }
    }

    func run() throws {
        let catalog = try storeOptions.open(create: false)
        if off {
            print(try catalog.clearShadow(model: model) ? "\(model): shadow scoring stopped" : "\(model): no shadow was set")
            return
        }
        let config = try ShadowConfig(version: version!, sample: sample)
        try catalog.setShadow(model: model, config)
        print("\(model): v\(config.version) scores \(Versions.percent(config.sample)) of unpinned requests in the shadow")
    }
}

struct Activate: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Make a published version active (roll back or forward), ending any split.",
        discussion: "Unlike promote, it does not look at servers' validation records.")
    @OptionGroup var storeOptions: StoreOptions
    @Option(help: "Model name.") var model: String
    @Option(help: "Version to activate.") var version: UInt64

    func run() throws {
        let catalog = try storeOptions.open(create: false)
        try catalog.activate(model: model, version: version)
        print("\(model) v\(version) is now active")
    }
}

struct Rollback: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Make active the newest version older than the active one that a server validated.",
        discussion: "Versions no server has loaded, and rejected ones, are passed over. One transaction; servers swap at their next poll.")
    @OptionGroup var storeOptions: StoreOptions
    @Option(help: "Model name.") var model: String

    func run() throws {
        let catalog = try storeOptions.open(create: false)
        let before = try catalog.activeVersion(model: model)
        let v = try catalog.rollback(model: model)
        print("\(model): rolled back from v\(before.map(String.init) ?? "-") to v\(v), now active")
    }
}

struct GC: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "gc",
        abstract: "Delete a model's old versions in one transaction: the active one and the newest --keep others stay.",
        discussion: """
            LMDB does not shrink data.mdb: the freed pages are reused by later publishes, so a store under a \
            publish–gc loop stops growing. Servers that still have a deleted version loaded keep serving it \
            until they swap; its pages are reused only after.
            """)
    @OptionGroup var storeOptions: StoreOptions
    @Option(help: "Model name.") var model: String
    @Option(help: "Versions to keep besides the active one (the newest; what a rollback or a pin can use).") var keep: Int = 2

    func validate() throws {
        guard (0...1_000_000).contains(keep) else { throw ValidationError("--keep must be in 0...1000000") }
    }

    func run() throws {
        let catalog = try storeOptions.open(create: false)
        let before = catalog.environment.pageStatistics()
        let collected = try catalog.gc(model: model, keep: keep)
        let after = catalog.environment.pageStatistics()
        if collected.versions.isEmpty {
            print("\(model): nothing to delete (kept v\(collected.kept.map(String.init).joined(separator: ", v")))")
        } else {
            print(String(format: "%@: deleted %d version(s) (v%@), %.1f MiB of tensors and manifests; kept v%@", model, collected.versions.count,
                         collected.versions.map(String.init).joined(separator: ", v"), Double(collected.bytes) / 1_048_576,
                         collected.kept.map(String.init).joined(separator: ", v")))
        }
        // As `mdb_stat -e` shows them: the high-water mark does not drop; freed pages wait on LMDB's free list.
        print(String(format: "store: %d pages of %d bytes in use before and %d after (data.mdb %.1f MiB); freed pages are reused by later writes",
                     before.pagesUsed, before.pageSize, after.pagesUsed, Double(after.fileBytes) / 1_048_576))
    }
}

extension ForestFormat: ExpressibleByArgument {}

struct Import: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Import an XGBoost or LightGBM tree model as a new `gbdt` version.",
        discussion: """
            The model's features are the request's context features (the first --context-features of them)             followed by each candidate's. Every feature accepts missing values (NaN) unless --refuse-missing             names it. With --check-rows and --check-predictions (the library's own predictions for those rows,             one per line), every row is scored and compared before anything is published, and the first 16             rows become the version's golden cases.
            """)
    @Option(help: "Model file format: \(ForestFormat.allCases.map(\.rawValue).joined(separator: ", ")).") var format: ForestFormat
    @Option(help: "The model file (XGBoost: save_model(\"m.json\"); LightGBM: save_model(\"m.txt\")).") var file: String
    @OptionGroup var storeOptions: StoreOptions
    @Option(help: "Model name in the store (a-z, 0-9, '-', '_', '.').") var model: String
    @Option(help: "How many of the model's first features are the request's context.") var contextFeatures = 0
    @Option(help: "Comma-separated feature names, in the model's order (default: the file's).") var featureNames: String?
    @Option(help: "Comma-separated NAME=CARDINALITY: features sent as integer codes.") var categorical: String?
    @Option(help: "Comma-separated features for which NaN is refused.") var refuseMissing: String?
    @Option(help: "CSV of rows to check (one row per line; empty or nan = missing; a header line is skipped).") var checkRows: String?
    @Option(help: "The library's predictions for --check-rows, one per line.") var checkPredictions: String?
    @Flag(help: "Publish without making the new version active.") var noActivate = false

    func validate() throws {
        try StoreKeys.validate(model: model)
        guard contextFeatures >= 0 else { throw ValidationError("--context-features must be >= 0") }
        guard (checkRows == nil) == (checkPredictions == nil) else {
            throw ValidationError("--check-rows and --check-predictions go together")
        }
    }

    func run() throws {
        let forest = try ImportedForest.read(format, file: file)
        var options = GbdtImportOptions()
        options.contextFeatures = contextFeatures
        options.featureNames = featureNames.map { $0.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) } }
        if let categorical {
            for item in categorical.split(separator: ",") {
                let parts = item.split(separator: "=")
                guard parts.count == 2, let card = Int(parts[1]), card >= 1 else {
                    throw ValidationError("--categorical takes NAME=CARDINALITY items, got '\(item)'")
                }
                options.categorical[String(parts[0])] = card
            }
        }
        options.refuseMissing = Set((refuseMissing ?? "").split(separator: ",").map(String.init))
        let schema = try GbdtImport.schema(for: forest, options: options, file: file)
        var rows: [[Float]] = []
        var metrics: [String: Double] = [:]
        if let checkRows, let checkPredictions {
            rows = try GbdtImport.readRows(checkRows, featureCount: forest.featureCount)
            let expected = try GbdtImport.readPredictions(checkPredictions)
            let worst = try GbdtImport.check(forest, rows: rows, expected: expected, file: checkPredictions)
            metrics["check.rows"] = Double(rows.count)
            metrics["check.max_abs_diff"] = worst
            print(String(format: "checked %d rows against the library's predictions: largest difference %.3g", rows.count, worst))
        }
        let golden = GbdtImport.goldenCases(forest, schema: schema, rows: rows)
        print("\(forest.source): \(forest.trees.count) trees, depth \(forest.maxDepth), \(forest.featureCount) features (\(contextFeatures) context)")
        let pause = try FaultInjection.publishPause()
        let catalog = try storeOptions.open(create: true)
        let v = try GbdtImport.publish(forest, schema: schema, golden: golden, model: model, catalog: catalog,
                                       activate: !noActivate, metrics: metrics, notes: ["file": file]) { version in
            print("publishing \(model) v\(version): write transaction open")
            fflush(nil)
            if pause > 0 { Thread.sleep(forTimeInterval: Double(pause) / 1000) }
        }
        print("published \(model) v\(v) to \(storeOptions.store)\(noActivate ? " (not active)" : " (active)")")
    }
}

/// Fault injection for crash tests, off unless its environment variable is set.
enum FaultInjection {
    /// `ARBITER_FAULT_PUBLISH_PAUSE_MS`: stay this long inside the publishing write transaction (after the
    /// version's tensors are written, before its commit), so that a test can kill the trainer there.
    static func publishPause() throws -> Int {
        guard let raw = ProcessInfo.processInfo.environment["ARBITER_FAULT_PUBLISH_PAUSE_MS"] else { return 0 }
        guard let ms = Int(raw), (0...600_000).contains(ms) else {
            throw ValidationError("ARBITER_FAULT_PUBLISH_PAUSE_MS must be a whole number of milliseconds in 0...600000, got '\(raw)'")
        }
        return ms
    }
}

ArbiterTrain.main()
