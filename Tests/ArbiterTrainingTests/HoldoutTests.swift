import ArbiterTestSupport
import ArbiterTraining
import Foundation
import Testing

/// The shares of the input `train` holds back (issue 17: a user who brings their own split should not lose
/// 30% of it).
@Suite struct HoldoutTests {
    /// The default is the rule the LightGBM reference and every figure so far used: `i % 10` in {0, 1} test,
    /// 2 validation.
    @Test func theDefaultIsTheTenthsRule() {
        for i in 0..<200_000 {
            let expected: DataSplit = switch i % 10 { case 0, 1: .test; case 2: .validation; default: .train }
            guard DataSplit.of(row: i) == expected else {
                Issue.record("row \(i): \(DataSplit.of(row: i)), expected \(expected)")
                return
            }
        }
    }

    /// Other fractions hold back their share, spread evenly through the file.
    @Test func fractionsAreHeldBackEvenly() throws {
        let h = try Holdout(test: 0.05, validation: 0.03)
        var test = 0, validation = 0
        for i in 0..<100_000 {
            switch DataSplit.of(row: i, holdout: h) {
            case .test: test += 1
            case .validation: validation += 1
            case .train: break
            }
            if i % 1000 == 999 {
                // Every thousand rows hold their share exactly (the radical inverse fills each block evenly).
                #expect(test == (i + 1) / 1000 * 50 && validation == (i + 1) / 1000 * 30, "after \(i + 1) rows: \(test), \(validation)")
            }
        }
    }

    @Test func outOfRangeFractionsAreRefused() {
        #expect(throws: DataError("the test fraction must be above 0 and below 1, got 0.0")) { try Holdout(test: 0, validation: 0.1) }
        #expect(throws: DataError("the validation fraction must be above 0 and below 1, got -0.1")) { try Holdout(test: 0.1, validation: -0.1) }
        #expect(throws: DataError("the test and validation fractions leave 5% to train on; they may hold back at most 90%")) {
            try Holdout(test: 0.5, validation: 0.45)
        }
    }

    /// Through the CLI: `--test-fraction` and `--validation-fraction` reach the trainer, and bad ones are
    /// refused naming the flags.
    @Test func trainTakesTheFractions() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("holdout-\(getpid())-\(UInt32.random(in: 0...UInt32.max))")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let csv = dir.appendingPathComponent("leads.csv").path, store = dir.appendingPathComponent("store").path
        let metrics = dir.appendingPathComponent("metrics.json").path
        _ = try OtherProcess.run(OtherProcess.trainer, ["gen-data", "--kind", "lead-grading", "--rows", "2000", "--seed", "5", "--out", csv])
        let out = try OtherProcess.run(OtherProcess.trainer, ["train", "--kind", "lead-grading", "--data", csv, "--store", store, "--model", "leads",
                                                              "--max-epochs", "2", "--test-fraction", "0.05", "--validation-fraction", "0.05",
                                                              "--metrics-out", metrics])
        #expect(out.contains("5% held out for test, 5% for validation"), "\(out)")
        let m = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: metrics))) as? [String: Double]
        #expect(m?["contact.test_rows"] == 100)   // 5% of 2,000

        let bad = try OtherProcess.capture(OtherProcess.trainer, ["train", "--kind", "lead-grading", "--data", csv, "--store", store, "--model", "leads",
                                                                 "--test-fraction", "0.5", "--validation-fraction", "0.5"])
        #expect(bad.status != 0)
        #expect(bad.output.contains("--test-fraction / --validation-fraction") && bad.output.contains("at most 90%"), "\(bad.output)")
    }
}
