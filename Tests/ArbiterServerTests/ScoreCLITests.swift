import ArbiterTestSupport
import Foundation
import Testing

/// `arbiter score` as a user runs it, against a running server.
@Suite struct ScoreCLITests {
    static func score(port: Int, json: String, _ extra: [String] = []) throws -> (status: Int32, out: String, err: String) {
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("score-cli-\(getpid())-\(UInt32.random(in: 0...UInt32.max)).json")
        try Data(json.utf8).write(to: file)
        defer { try? FileManager.default.removeItem(at: file) }
        let p = Process()
        p.executableURL = OtherProcess.binDir.appendingPathComponent("arbiter")
        p.arguments = ["score", "--host", "127.0.0.1:\(port)", "--model", "leads", "--input", file.path] + extra
        let out = Pipe(), err = Pipe()
        p.standardOutput = out
        p.standardError = err
        try p.run()
        let o = out.fileHandleForReading.readDataToEndOfFile(), e = err.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return (p.terminationStatus, String(decoding: o, as: UTF8.self), String(decoding: e, as: UTF8.self))
    }

    static func request(_ candidates: [String]) -> String {
        #"{"context": {"job_category": 3, "job_salary": 4200}, "candidates": ["# + candidates.joined(separator: ", ") + "]}"
    }

    static let features = #""features": {"channel": 1, "city": 4, "distance_km": 3.5, "salary_gap": -0.05, "activity": 22, "experience_years": 9}"#

    /// A candidate without an id is refused, naming it — not given a made-up id its caller could mistake.
    @Test func aCandidateWithoutAnIdIsRefusedByRow() async throws {
        try await Fixture.withServer { _, port in
            let ok = try Self.score(port: port, json: Self.request(["{\"id\": 1001, \(Self.features)}", "{\"id\": 7, \(Self.features)}"]))
            #expect(ok.status == 0, "\(ok.err)")
            #expect(ok.out.contains("1001") && ok.out.contains("\"id\" : 7"), "\(ok.out)")

            let missing = try Self.score(port: port, json: Self.request(["{\"id\": 1001, \(Self.features)}", "{\(Self.features)}"]))
            #expect(missing.status != 0)
            #expect(missing.err.contains("candidate 1 has no \"id\""), "\(missing.err)")

            let fractional = try Self.score(port: port, json: Self.request(["{\"id\": 1.5, \(Self.features)}"]))
            #expect(fractional.status != 0)
            #expect(fractional.err.contains("candidate 0: \"id\" must be a non-negative integer"), "\(fractional.err)")
        }
    }

    /// Many requests as JSON Lines: every line answered, in order, each answer what the request alone gets.
    @Test func jsonLinesAreScoredInOrder() async throws {
        try await Fixture.withServer { _, port in
            var lines: [String] = []
            var ids: [[Int]] = []
            for k in 0..<300 {
                let n = 1 + k % 3
                let cands = (0..<n).map { j in
                    "{\"id\": \(k * 10 + j), \"features\": {\"channel\": \(j % 3), \"city\": \(k % 7), \"distance_km\": \(Double(k % 13) * 0.7), \"salary_gap\": -0.05, \"activity\": \(k % 40), \"experience_years\": \(j + 1)}}"
                }
                lines.append(#"{"context": {"job_category": "# + "\(k % 5)" + #", "job_salary": 4200}, "candidates": ["# + cands.joined(separator: ", ") + "]}")
                ids.append((0..<n).map { k * 10 + $0 })
            }
            // A blank line is skipped.
            let text = lines[..<150].joined(separator: "\n") + "\n\n" + lines[150...].joined(separator: "\n") + "\n"
            let r = try Self.score(port: port, json: text, ["--connections", "3", "--in-flight", "8"])
            #expect(r.status == 0, "\(r.err)")
            #expect(r.err.contains("scored 300 requests (600 candidates)"), "\(r.err)")
            let answers = r.out.split(separator: "\n").map { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
            #expect(answers.count == 300)
            for (k, a) in answers.enumerated() {
                let rows = a?["rows"] as? [[String: Any]] ?? []
                guard rows.compactMap({ ($0["id"] as? NSNumber)?.intValue }) == ids[k] else {
                    Issue.record("line \(k + 1): ids \(rows.map { $0["id"] ?? "?" }), expected \(ids[k])")
                    return
                }
            }
            // Each answer is the one its request gets alone.
            for k in [0, 151, 299] {
                let alone = try Self.score(port: port, json: lines[k])
                let one = try JSONSerialization.jsonObject(with: Data(alone.out.utf8)) as? [String: Any]
                // Every field of every row (scores, stage probabilities, grade), and the version.
                let a = one?["rows"] as? NSArray, b = answers[k]?["rows"] as? NSArray
                #expect(a != nil && a == b, "line \(k + 1): \(String(describing: a)) against \(String(describing: b))")
                #expect((one?["version"] as? NSNumber) == (answers[k]?["version"] as? NSNumber) && answers[k]?["model"] as? String == "leads")
            }

            // A bad line is named and nothing is scored.
            let badJSON = try Self.score(port: port, json: lines[0] + "\n" + lines[1] + "\n[1, 2]\n")
            #expect(badJSON.status != 0 && badJSON.out.isEmpty)
            #expect(badJSON.err.contains("line 3 of") && badJSON.err.contains("is not a JSON object"), "\(badJSON.err)")
            let withoutID = Self.request(["{" + Self.features + "}"])
            let noID = try Self.score(port: port, json: lines[0] + "\n" + withoutID + "\n")
            #expect(noID.status != 0 && noID.out.isEmpty)
            #expect(noID.err.contains("line 2: candidate 0 has no \"id\""), "\(noID.err)")
        }
    }
}
