import ArbiterStore
import ArbiterTestSupport
import ArbiterTraining
import Foundation
import Testing

/// `arbiter-train import` refuses a bad model file with a message naming the file and what is wrong, exits
/// non-zero, and publishes nothing: one test per class of problem, through the real executable.
@Suite struct GbdtImportErrorTests {
    static func fixture(_ name: String) -> String { GbdtImportTests.path(name) }

    /// A store holding one good version, and a function that runs a failing import against it and checks
    /// that the store did not change.
    final class Setup {
        let dir = temporaryPath("import-errors")
        var store: String { dir + "/store" }

        init() throws {
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            let good = try OtherProcess.capture(OtherProcess.trainer, ["import", "--format", "xgboost-json", "--file",
                                                                       fixture("xgboost-binary.json"), "--store", store, "--model", "m"])
            #expect(good.status == 0, "\(good.output)")
        }

        deinit { try? FileManager.default.removeItem(atPath: dir) }

        /// Writes `text` to a file in the test folder and returns its path.
        func file(_ name: String, _ text: String) throws -> String {
            let path = dir + "/" + name
            try text.write(toFile: path, atomically: true, encoding: .utf8)
            return path
        }

        func refuses(_ format: String, _ file: String, _ extra: [String] = [], saying: [String],
                     sourceLocation: SourceLocation = #_sourceLocation) throws {
            let r = try OtherProcess.capture(OtherProcess.trainer, ["import", "--format", format, "--file", file, "--store", store,
                                                                    "--model", "m"] + extra)
            #expect(r.status != 0, "the import succeeded: \(r.output)", sourceLocation: sourceLocation)
            for phrase in saying {
                #expect(r.output.contains(phrase), "'\(phrase)' not in: \(r.output)", sourceLocation: sourceLocation)
            }
            let env = try StoreEnvironment.open(path: store)
            #expect(try Catalog(environment: env).versions(model: "m").count == 1, "something was published", sourceLocation: sourceLocation)
            #expect(try Catalog(environment: env).generation() == 1, sourceLocation: sourceLocation)
        }
    }

    static let xgb = try! String(contentsOfFile: fixture("xgboost-binary.json"), encoding: .utf8)
    static let lgb = try! String(contentsOfFile: fixture("lightgbm-binary.txt"), encoding: .utf8)

    @Test func aTruncatedFile() throws {
        let s = try Setup()
        try s.refuses("xgboost-json", try s.file("cut.json", String(Self.xgb.prefix(Self.xgb.count / 2))), saying: ["cut.json", "not valid JSON"])
        try s.refuses("lightgbm-text", try s.file("cut.txt", String(Self.lgb.prefix(Self.lgb.count / 2))), saying: ["cut.txt", "Tree="])
        // Cut between two trees: the trees read so far are whole, but the end marker is missing.
        let end = try #require(Self.lgb.range(of: "Tree=30"))
        try s.refuses("lightgbm-text", try s.file("cut30.txt", String(Self.lgb[..<end.lowerBound])), saying: ["cut30.txt", "truncated"])
    }

    /// Headers that declare absurd sizes (found by fuzz-import: a LightGBM max_feature_idx of 3,836,700,428
    /// made the importer allocate for billions of feature names) are refused before anything is allocated,
    /// and numbers no integer can hold are named, not trapped on.
    @Test func absurdDeclaredSizes() throws {
        let s = try Setup()
        try s.refuses("lightgbm-text", try s.file("wide.txt", Self.lgb.replacingOccurrences(of: "max_feature_idx=11", with: "max_feature_idx=3836700428")),
                      saying: ["wide.txt", "max_feature_idx 3836700428", "100000"])
        try s.refuses("xgboost-json", try s.file("wide.json", Self.xgb.replacingOccurrences(of: "\"num_feature\":\"12\",\"num_target\"", with: "\"num_feature\":\"1e300\",\"num_target\"")),
                      saying: ["wide.json", "num_feature"])
        try s.refuses("xgboost-json", try s.file("classes.json", Self.xgb.replacingOccurrences(of: "\"num_class\":\"0\"", with: "\"num_class\":\"1e300\"")),
                      saying: ["classes.json", "multi-class"])
    }

    @Test func aDifferentFormat() throws {
        let s = try Setup()
        try s.refuses("lightgbm-text", Self.fixture("xgboost-binary.json"), saying: ["xgboost-binary.json", "not a LightGBM text model"])
        try s.refuses("xgboost-json", Self.fixture("lightgbm-binary.txt"), saying: ["lightgbm-binary.txt", "not valid JSON"])
        try s.refuses("xgboost-json", try s.file("other.json", #"{"model": {"trees": []}}"#), saying: ["other.json", "not an XGBoost JSON model"])
    }

    @Test func anUnsupportedObjective() throws {
        let s = try Setup()
        let multi = Self.xgb.replacingOccurrences(of: #""name":"binary:logistic""#, with: #""name":"multi:softprob""#)
        #expect(multi != Self.xgb)
        try s.refuses("xgboost-json", try s.file("multi.json", multi), saying: ["multi.json", "objective 'multi:softprob' is not supported"])
        let poisson = Self.lgb.replacingOccurrences(of: "objective=binary sigmoid:1", with: "objective=poisson")
        try s.refuses("lightgbm-text", try s.file("poisson.txt", poisson), saying: ["poisson.txt", "objective 'poisson' is not supported"])
    }

    @Test func aFeatureCountThatDoesNotMatchTheSchema() throws {
        let s = try Setup()
        try s.refuses("xgboost-json", Self.fixture("xgboost-binary.json"), ["--feature-names", "a,b,c"],
                      saying: ["xgboost-binary.json", "3 feature names given; the model has 12 features"])
        let rows = try s.file("rows.csv", "1,2,3\n4,5,6\n")
        try s.refuses("xgboost-json", Self.fixture("xgboost-binary.json"),
                      ["--check-rows", rows, "--check-predictions", Self.fixture("xgboost-binary.predictions")],
                      saying: ["rows.csv", "line 1 has 3 values; the model has 12 features"])
    }

    @Test func aTreeThatReferencesAFeatureOutOfRange() throws {
        let s = try Setup()
        let bad = Self.xgb.replacingOccurrences(of: #""split_indices":[0,"#, with: #""split_indices":[99,"#)
        #expect(bad != Self.xgb)
        try s.refuses("xgboost-json", try s.file("feature99.json", bad), saying: ["feature99.json", "splits on feature 99; the model has 12 features"])
        let line = try #require(Self.lgb.split(separator: "\n").first { $0.hasPrefix("split_feature=") })
        let badText = Self.lgb.replacingOccurrences(of: String(line), with: "split_feature=99" + line.dropFirst("split_feature=".count).drop { $0 != " " })
        try s.refuses("lightgbm-text", try s.file("feature99.txt", badText), saying: ["feature99.txt", "splits on feature 99"])
    }

    @Test func predictionsThatDisagreeAndCategoricalSplits() throws {
        let s = try Setup()
        // Another model's predictions: the check names the first row that differs.
        try s.refuses("xgboost-json", Self.fixture("xgboost-binary.json"),
                      ["--check-rows", Self.fixture("rows.csv"), "--check-predictions", Self.fixture("lightgbm-binary.predictions")],
                      saying: ["lightgbm-binary.predictions", "row 1: Arbiter predicts"])
        try s.refuses("lightgbm-text", Self.fixture("lightgbm-categorical.txt"),
                      saying: ["lightgbm-categorical.txt", "categorical split", "not supported"])
    }
}
