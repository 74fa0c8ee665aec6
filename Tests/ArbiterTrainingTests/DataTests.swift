import ArbiterTraining
import Foundation
import Testing

@Suite struct DataTests {
    func tempFile(_ text: String) throws -> URL {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("leads-\(UUID()).csv")
        try Data(text.utf8).write(to: url)
        return url
    }

    @Test func generationIsDeterministicBySeedAndFollowsTheChain() throws {
        let a = LeadData.generate(rows: 500, seed: 4), b = LeadData.generate(rows: 500, seed: 4)
        #expect(a == b)
        #expect(a != LeadData.generate(rows: 500, seed: 5))
        for r in a {
            #expect(!r.interviewed || r.contacted)
            #expect(!r.hired || r.interviewed)
        }
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("gen-\(UUID()).csv")
        defer { try? FileManager.default.removeItem(at: url) }
        try LeadData.writeCSV(a, to: url)
        #expect(try LeadData.readCSV(url) == a)
    }

    @Test func badCSVsAreRefusedWithTheLineAndTheProblem() throws {
        let header = LeadData.header.joined(separator: ",")
        let cases: [(String, String)] = [
            ("", "is empty"),
            ("job_category,channel\n1,2\n", "header lacks column 'job_salary'"),
            (header + "\n", "no rows"),
            (header + "\n1,4000,1,2,3.5,0.1,4,5,1,0\n", "line 2: 10 fields"),
            (header + "\n1,4000,1,2,abc,0.1,4,5,1,0,0\n", "line 2: 'distance_km' is 'abc'"),
            (header + "\n9,4000,1,2,3,0.1,4,5,1,0,0\n", "'job_category' is 9, not a code in 0..<8"),
            (header + "\n1,nan,1,2,3,0.1,4,5,1,0,0\n", "'job_salary' is 'nan'"),
            (header + "\n1,4000,1,2,3,0.1,4,5,0,1,0\n", "stages out of order"),
            (header + "\n1,4000,1,2,3,0.1,4,5,1,1,2\n", "'hired' is '2'"),
        ]
        for (text, expected) in cases {
            let url = try tempFile(text)
            defer { try? FileManager.default.removeItem(at: url) }
            do {
                _ = try LeadData.readCSV(url)
                Issue.record("accepted: \(expected)")
            } catch let e as DataError {
                #expect(e.message.contains(expected), "\(e.message)")
            }
        }
    }

    @Test func metrics() {
        #expect(Metrics.auc(scores: [0.1, 0.4, 0.35, 0.8], labels: [false, false, true, true]) == 0.75)
        #expect(Metrics.auc(scores: [1, 1], labels: [true, false]) == 0.5)
        #expect(Metrics.auc(scores: [1, 2], labels: [true, true]).isNaN)
        #expect(abs(Metrics.logLoss(probabilities: [0.5, 0.5], labels: [true, false]) - 0.693147) < 1e-5)
        #expect(Metrics.quantile([1, 2, 3, 4, 5], 0.5) == 3)
        #expect(Metrics.quantile([1, 2, 3, 4, 5], 0.9) == 4.6)
    }

    @Test func splitIsByRowIndex() {
        let splits = (0..<10).map { DataSplit.of(row: $0) }
        #expect(splits.filter { $0 == .test }.count == 2)
        #expect(splits.filter { $0 == .validation }.count == 1)
        #expect(splits.filter { $0 == .train }.count == 7)
    }
}
