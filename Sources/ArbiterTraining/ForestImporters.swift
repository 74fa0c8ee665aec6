import ArbiterModels
import Foundation

/// Model file formats `arbiter-train import` reads.
public enum ForestFormat: String, CaseIterable, Sendable {
    /// XGBoost's JSON model (`Booster.save_model("m.json")`), format of XGBoost 1.x to 3.x.
    case xgboostJSON = "xgboost-json"
    /// LightGBM's text model (`Booster.save_model("m.txt")`), version v3 or v4.
    case lightgbmText = "lightgbm-text"
}

extension ImportedForest {
    /// The most features an imported model may declare: a row of more would not fit a SCORE frame with any
    /// room for candidates (4 MiB by default), and a file declaring millions must not make the importer
    /// allocate for them (found by fuzz-import: a LightGBM header with max_feature_idx 3,836,700,428).
    public static let maxFeatures = 100_000

    /// Reads a model file of `format`. Every problem is an ``ImportError`` naming the file and what is
    /// wrong with it.
    public static func read(_ format: ForestFormat, file: String) throws(ImportError) -> ImportedForest {
        let data: Data
        do { data = try Data(contentsOf: URL(fileURLWithPath: file)) } catch {
            throw ImportError(file: file, "cannot read the file: \(error.localizedDescription)")
        }
        return try parse(format, data: data, file: file)
    }

    /// Parses and validates a model file's bytes (as `read` does); `file` names it in errors.
    public static func parse(_ format: ForestFormat, data: Data, file: String) throws(ImportError) -> ImportedForest {
        let forest = switch format {
        case .xgboostJSON: try XGBoostJSON.parse(data, file: file)
        case .lightgbmText: try LightGBMText.parse(data, file: file)
        }
        try forest.validate(file: file)
        return forest
    }

    /// Checks that every tree is a tree: children in range, no node reached twice, splits on features the
    /// model has, finite leaves and thresholds that are numbers, depth at most 64.
    public func validate(file: String) throws(ImportError) {
        guard !trees.isEmpty else { throw ImportError(file: file, "the model has no trees") }
        guard featureCount >= 1 else { throw ImportError(file: file, "the model has no features") }
        guard baseMargin.isFinite, sigmoidScale.isFinite, sigmoidScale > 0 else {
            throw ImportError(file: file, "the base score or the sigmoid scale is not a finite number")
        }
        for (t, tree) in trees.enumerated() {
            guard !tree.nodes.isEmpty else { throw ImportError(file: file, "tree \(t) has no nodes") }
            var seen = [Bool](repeating: false, count: tree.nodes.count)
            var stack = [(node: 0, depth: 0)]
            while let (i, depth) = stack.popLast() {
                guard i >= 0, i < tree.nodes.count else { throw ImportError(file: file, "tree \(t) refers to node \(i) of \(tree.nodes.count)") }
                guard !seen[i] else { throw ImportError(file: file, "tree \(t) reaches node \(i) twice: not a tree") }
                guard depth <= 64 else { throw ImportError(file: file, "tree \(t) is deeper than 64 levels") }
                seen[i] = true
                switch tree.nodes[i] {
                case .split(let f, let threshold, _, let l, let r):
                    guard f >= 0, f < featureCount else {
                        throw ImportError(file: file, "tree \(t) node \(i) splits on feature \(f); the model has \(featureCount) features")
                    }
                    guard !threshold.isNaN else { throw ImportError(file: file, "tree \(t) node \(i) has a NaN threshold") }
                    stack.append((l, depth + 1))
                    stack.append((r, depth + 1))
                case .leaf(let v):
                    guard v.isFinite else { throw ImportError(file: file, "tree \(t) node \(i) has leaf value \(v)") }
                }
            }
        }
    }
}

/// XGBoost's JSON model format.
enum XGBoostJSON {
    static func parse(_ data: Data, file: String) throws(ImportError) -> ImportedForest {
        let root: [String: Any]
        do {
            guard let r = try JSONSerialization.jsonObject(with: data) as? [String: Any] else {
                throw ImportError(file: file, "not an XGBoost JSON model: the top level is not an object")
            }
            root = r
        } catch let e as ImportError {
            throw e
        } catch {
            throw ImportError(file: file, "not valid JSON (truncated, or not an XGBoost JSON model?): \(error.localizedDescription)")
        }
        func fail(_ s: String) -> ImportError { ImportError(file: file, s) }
        guard let learner = root["learner"] as? [String: Any] else {
            throw fail("not an XGBoost JSON model: no 'learner' object")
        }
        let version = (root["version"] as? [Any])?.compactMap { ($0 as? NSNumber)?.intValue }.map(String.init).joined(separator: ".") ?? "?"
        guard let params = learner["learner_model_param"] as? [String: Any],
              let booster = learner["gradient_booster"] as? [String: Any],
              let objective = (learner["objective"] as? [String: Any])?["name"] as? String else {
            throw fail("not an XGBoost JSON model: 'learner' lacks learner_model_param, gradient_booster or objective")
        }
        guard (booster["name"] as? String) == "gbtree" else {
            throw fail("booster '\(booster["name"] as? String ?? "?")' is not supported (only gbtree; dart and gblinear are not)")
        }
        func number(_ any: Any?) -> Double? {
            if let n = any as? NSNumber { return n.doubleValue }
            guard var s = any as? String else { return nil }
            // XGBoost 3 writes vector-valued parameters as "[5E-1]".
            if s.hasPrefix("[") && s.hasSuffix("]") { s = String(s.dropFirst().dropLast()) }
            guard !s.contains(",") else { return nil }
            return Double(s)
        }
        let numClass = number(params["num_class"]) ?? 0
        let numTarget = number(params["num_target"]) ?? 1
        guard numClass <= 1, numTarget == 1 else {
            // Printed as read: a file may hold any number there, and Int() of a huge one or NaN would trap.
            throw fail("multi-class or multi-target models (num_class \(numClass.formatted()), num_target \(numTarget.formatted())) are not supported")
        }
        guard let declared = number(params["num_feature"]), declared >= 1, declared <= Double(ImportedForest.maxFeatures) else {
            throw fail("learner_model_param.num_feature is missing, not a positive number, or over \(ImportedForest.maxFeatures) (the most an import accepts)")
        }
        let featureCount = Int(declared)
        guard let baseScore = number(params["base_score"]) else { throw fail("learner_model_param.base_score is missing or not a number") }
        let transform: OutputTransform
        let baseMargin: Double
        switch objective {
        case "binary:logistic", "reg:logistic":
            guard baseScore > 0, baseScore < 1 else { throw fail("base_score \(baseScore) is not a probability") }
            transform = .logistic
            baseMargin = log(baseScore / (1 - baseScore))
        case "binary:logitraw":
            guard baseScore > 0, baseScore < 1 else { throw fail("base_score \(baseScore) is not a probability") }
            transform = .identity
            baseMargin = log(baseScore / (1 - baseScore))
        case "reg:squarederror", "reg:linear", "reg:absoluteerror", "reg:pseudohubererror", "reg:quantileerror":
            transform = .identity
            baseMargin = baseScore
        default:
            throw fail("objective '\(objective)' is not supported (binary:logistic, binary:logitraw, reg:logistic and reg:squarederror-like regressions are)")
        }
        guard let model = booster["model"] as? [String: Any], let treeObjects = model["trees"] as? [[String: Any]] else {
            throw fail("gradient_booster.model.trees is missing")
        }
        var names = (learner["feature_names"] as? [String]) ?? []
        if names.isEmpty { names = (0..<featureCount).map { "f\($0)" } }
        guard names.count == featureCount else {
            throw fail("feature_names has \(names.count) names for num_feature \(featureCount)")
        }
        var trees: [ImportedForest.Tree] = []
        for (t, obj) in treeObjects.enumerated() {
            func ints(_ key: String) throws(ImportError) -> [Int] {
                guard let a = obj[key] as? [NSNumber] else { throw fail("tree \(t) lacks '\(key)'") }
                return a.map(\.intValue)
            }
            func floats(_ key: String) throws(ImportError) -> [Float] {
                guard let a = obj[key] as? [NSNumber] else { throw fail("tree \(t) lacks '\(key)'") }
                return a.map(\.floatValue)
            }
            let left = try ints("left_children"), right = try ints("right_children")
            let index = try ints("split_indices"), defaultLeft = try ints("default_left")
            let condition = try floats("split_conditions")
            let splitType = (obj["split_type"] as? [NSNumber])?.map(\.intValue) ?? []
            let n = left.count
            guard n >= 1, right.count == n, index.count == n, defaultLeft.count == n, condition.count == n,
                  splitType.isEmpty || splitType.count == n else {
                throw fail("tree \(t)'s node arrays have different lengths")
            }
            var nodes: [ImportedForest.Node] = []
            nodes.reserveCapacity(n)
            for i in 0..<n {
                if left[i] == -1 {
                    nodes.append(.leaf(condition[i]))
                } else {
                    guard splitType.isEmpty || splitType[i] == 0 else {
                        throw fail("tree \(t) node \(i) is a categorical split, which is not supported (train with numeric features)")
                    }
                    nodes.append(.split(feature: index[i], threshold: condition[i], missingRight: defaultLeft[i] == 0,
                                        left: left[i], right: right[i]))
                }
            }
            trees.append(ImportedForest.Tree(nodes: nodes))
        }
        return ImportedForest(trees: trees, featureNames: names, baseMargin: baseMargin, transform: transform, sigmoidScale: 1,
                              source: "xgboost \(version) \(objective)")
    }
}

/// LightGBM's text model format.
enum LightGBMText {
    static func parse(_ data: Data, file: String) throws(ImportError) -> ImportedForest {
        func fail(_ s: String) -> ImportError { ImportError(file: file, s) }
        guard let text = String(data: data, encoding: .utf8) else { throw fail("not UTF-8 text: not a LightGBM text model") }
        let lines = text.split(separator: "\n", omittingEmptySubsequences: false).map { $0.hasSuffix("\r") ? $0.dropLast() : $0 }
        guard lines.first.map({ $0 == "tree" }) == true else {
            throw fail("not a LightGBM text model: it does not start with the line 'tree'")
        }
        // Header: key=value lines up to the first "Tree=".
        var header: [Substring: Substring] = [:]
        var i = 1
        while i < lines.count, !lines[i].hasPrefix("Tree=") {
            if let eq = lines[i].firstIndex(of: "=") {
                header[lines[i][..<eq]] = lines[i][lines[i].index(after: eq)...]
            } else if !lines[i].isEmpty {
                header[lines[i]] = ""  // a bare flag, such as average_output
            }
            if lines[i] == "end of trees" { break }
            i += 1
        }
        guard let version = header["version"] else { throw fail("the header has no 'version'") }
        guard header["num_class"].map({ $0 == "1" }) ?? false, header["num_tree_per_iteration"].map({ $0 == "1" }) ?? true else {
            throw fail("multi-class models (num_class \(header["num_class"] ?? "?")) are not supported")
        }
        guard let maxFeature = header["max_feature_idx"].flatMap({ Int($0) }), maxFeature >= 0 else {
            throw fail("the header has no valid 'max_feature_idx'")
        }
        if header["average_output"] != nil {
            throw fail("the model averages its trees (random forest mode), which is not supported")
        }
        guard maxFeature < ImportedForest.maxFeatures else {
            throw fail("max_feature_idx \(maxFeature) declares more than \(ImportedForest.maxFeatures) features, the most an import accepts")
        }
        let featureCount = maxFeature + 1
        var names = header["feature_names"].map { $0.split(separator: " ").map(String.init) } ?? []
        if names.isEmpty { names = (0..<featureCount).map { "Column_\($0)" } }
        guard names.count == featureCount else {
            throw fail("feature_names has \(names.count) names for max_feature_idx \(maxFeature)")
        }
        let objectiveLine = header["objective"].map(String.init) ?? ""
        let objectiveWords = objectiveLine.split(separator: " ")
        let objective = objectiveWords.first.map(String.init) ?? ""
        var transform = OutputTransform.identity
        var sigmoid = 1.0
        switch objective {
        case "binary", "cross_entropy", "xentropy":
            transform = .logistic
            if objective == "binary" {
                guard let s = objectiveWords.first(where: { $0.hasPrefix("sigmoid:") }).flatMap({ Double($0.dropFirst(8)) }), s > 0 else {
                    throw fail("objective '\(objectiveLine)' has no valid sigmoid parameter")
                }
                sigmoid = s
            }
        case "regression", "regression_l2", "l2", "mean_squared_error", "mse", "regression_l1", "l1", "huber", "fair",
             "quantile", "mape":
            transform = .identity
        default:
            throw fail("objective '\(objectiveLine)' is not supported (binary, cross_entropy and the identity-link regressions are)")
        }

        var trees: [ImportedForest.Tree] = []
        while i < lines.count, lines[i].hasPrefix("Tree=") {
            let name = lines[i]
            var fields: [Substring: Substring] = [:]
            i += 1
            while i < lines.count, !lines[i].isEmpty {
                if let eq = lines[i].firstIndex(of: "=") { fields[lines[i][..<eq]] = lines[i][lines[i].index(after: eq)...] }
                i += 1
            }
            while i < lines.count, lines[i].isEmpty { i += 1 }
            trees.append(try tree(fields, name: String(name), fail: fail))
        }
        guard i < lines.count, lines[i] == "end of trees" else {
            throw fail("the file ends before 'end of trees' (truncated?) after \(trees.count) trees")
        }
        return ImportedForest(trees: trees, featureNames: names, baseMargin: 0, transform: transform, sigmoidScale: sigmoid,
                              source: "lightgbm \(version) \(objective)")
    }

    /// One tree: `num_leaves - 1` internal nodes (children ≥ 0 internal, < 0 leaf `~c`).
    static func tree(_ f: [Substring: Substring], name: String, fail: (String) -> ImportError) throws(ImportError) -> ImportedForest.Tree {
        func list<T>(_ key: Substring, _ count: Int, _ parse: (Substring) -> T?) throws(ImportError) -> [T] {
            guard let line = f[key] else { throw fail("\(name) lacks '\(key)'") }
            let parts = line.split(separator: " ")
            guard parts.count == count else { throw fail("\(name) '\(key)' has \(parts.count) values, expected \(count)") }
            var out: [T] = []
            out.reserveCapacity(count)
            for p in parts {
                guard let v = parse(p) else { throw fail("\(name) '\(key)' has '\(p)', which is not a number") }
                out.append(v)
            }
            return out
        }
        guard let leaves = f["num_leaves"].flatMap({ Int($0) }), leaves >= 1 else { throw fail("\(name) has no valid 'num_leaves'") }
        if let cats = f["num_cat"].flatMap({ Int($0) }), cats > 0 {
            throw fail("\(name) has \(cats) categorical split(s); LightGBM categorical splits are not supported (encode the feature as numeric, or one-hot)")
        }
        if let linear = f["is_linear"], linear != "0" { throw fail("\(name) is a linear tree, which is not supported") }
        let leafValues = try list("leaf_value", leaves) { Double($0) }
        // Leaf values in the file already include the tree's shrinkage.
        if leaves == 1 {
            return ImportedForest.Tree(nodes: [.leaf(Float(leafValues[0]))])
        }
        let inner = leaves - 1
        let feature = try list("split_feature", inner) { Int($0) }
        let threshold = try list("threshold", inner) { Double($0) }
        let decision = try list("decision_type", inner) { Int($0) }
        let left = try list("left_child", inner) { Int($0) }
        let right = try list("right_child", inner) { Int($0) }
        // Internal node k is node k; leaf j is node inner + j.
        func ref(_ c: Int) -> Int { c >= 0 ? c : inner + ~c }
        var nodes: [ImportedForest.Node] = []
        nodes.reserveCapacity(2 * leaves - 1)
        for k in 0..<inner {
            let d = decision[k]
            guard d & 1 == 0 else { throw fail("\(name) node \(k) is a categorical split, which is not supported") }
            let defaultLeft = d & 2 != 0
            let missingType = (d >> 2) & 3  // 0 none, 1 zero, 2 NaN
            guard missingType != 1 else {
                throw fail("\(name) node \(k) treats zero as missing (zero_as_missing=true), which is not supported")
            }
            guard c(left[k], inner, leaves), c(right[k], inner, leaves) else {
                throw fail("\(name) node \(k) refers to a child out of range")
            }
            let t = threshold[k]
            // LightGBM sends x left when x <= t, comparing in double. For a float x that is x < t', where t' is
            // the least float above t (t rounded down to a float, then one ulp up).
            var below = Float(t)
            if Double(below) > t { below = below.nextDown }
            // Parameters are finite: a threshold at or above the largest float keeps it, which sends every
            // finite value left but that largest float itself (3.4e38), the one value it misplaces.
            let strict = min(below.nextUp, .greatestFiniteMagnitude)
            // Missing type NaN: NaN takes the default side. Type none: NaN is treated as 0, so it goes where 0 goes.
            let missingRight = missingType == 2 ? !defaultLeft : !(0 <= t)
            nodes.append(.split(feature: feature[k], threshold: strict, missingRight: missingRight, left: ref(left[k]), right: ref(right[k])))
        }
        for v in leafValues { nodes.append(.leaf(Float(v))) }
        return ImportedForest.Tree(nodes: nodes)
    }

    private static func c(_ child: Int, _ inner: Int, _ leaves: Int) -> Bool {
        child >= 0 ? child < inner : ~child < leaves
    }
}
