import ArbiterClient
import ArbiterTestSupport
import ArbiterTraining
import ArbiterWire
import Foundation
import Testing

/// `arbiter score` as a user runs it, against a running server.
@Suite struct ScoreCLITests {
    static func score(port: Int, json: String, _ extra: [String] = [], ext: String = "json") throws -> (status: Int32, out: String, err: String) {
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("score-cli-\(getpid())-\(UInt32.random(in: 0...UInt32.max)).\(ext)")
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

    /// A CSV of leads grouped by posting: one request per posting, every row answered with what the posting's
    /// request scored alone gets; bad rows named by line.
    @Test func csvRowsAreGroupedIntoRequestsAndAnsweredAsCSV() async throws {
        let leads = LeadData.generate(rows: 400, seed: 3, leadsPerPosting: 4)
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("score-cli-leads-\(getpid()).csv")
        defer { try? FileManager.default.removeItem(at: url) }
        try LeadData.writeCSV(leads, to: url)
        let csv = try String(contentsOf: url, encoding: .utf8)
        let postings = Dictionary(grouping: leads.indices, by: { leads[$0].posting })
        try await Fixture.withServer { _, port in
            let r = try Self.score(port: port, json: csv, ["--group-by", "posting_id", "--id-column", "lead_id", "--connections", "3", "--in-flight", "4"], ext: "csv")
            #expect(r.status == 0, "\(r.err)")
            #expect(r.err.contains("scored \(postings.count) requests (400 candidates)"), "\(r.err)")
            #expect(r.err.contains("ignoring columns contacted, interviewed, hired"), "\(r.err)")
            let lines = r.out.split(separator: "\n")
            #expect(lines.first == "posting_id,id,score,p_contact,p_interview,p_hire,grade,version")
            #expect(lines.count == 401)
            // Every posting scored alone, through the client: the same numbers, row for row, in input order.
            let client = try await ArbiterClient.connect(port: port)
            var expected: [String] = []
            for p in postings.keys.sorted() {
                let rows = postings[p]!
                let req = ScoreRequest(model: "leads", context: leads[rows[0]].context, candidateIDs: rows.map { UInt64($0 + 1) },
                                       candidateFeatureCount: 6, candidateFeatures: rows.flatMap { leads[$0].candidate })
                let a = try await client.score(req)
                for i in a.ids.indices {
                    guard case .float32(let pc) = a.columns[0].values, case .float32(let pi) = a.columns[1].values,
                          case .float32(let ph) = a.columns[2].values else { Issue.record("columns"); return }
                    expected.append("\(p),\(a.ids[i]),\(a.scores[i]),\(pc[i]),\(pi[i]),\(ph[i]),\(a.columns[3].label(at: i) ?? ""),\(a.version)")
                }
            }
            try await client.close()
            #expect(Array(lines.dropFirst().map(String.init)) == expected)

            // JSON Lines out: one line per posting, naming it.
            let j = try Self.score(port: port, json: csv, ["--group-by", "posting_id", "--id-column", "lead_id", "--output-format", "jsonl"], ext: "csv")
            #expect(j.status == 0, "\(j.err)")
            let first = try JSONSerialization.jsonObject(with: Data(j.out.split(separator: "\n")[0].utf8)) as? [String: Any]
            #expect(first?["posting_id"] as? String == "1" && (first?["rows"] as? [Any])?.count == postings[1]?.count)

            // Bad input, named by line: answers before it are written, the exit status says it failed.
            let header = csv.prefix { $0 != "\n" }
            let body = Array(csv.split(separator: "\n").dropFirst())
            // Two rows of one posting, and a row of another.
            let pair = try #require(postings.keys.sorted().lazy.compactMap { postings[$0]!.count >= 2 ? postings[$0]! : nil }.first)
            let other = try #require(leads.indices.first { leads[$0].posting != leads[pair[0]].posting })
            let salary = { (i: Int) in ",\(Int(leads[i].context[1]))," }
            let cases: [(String, [String], String)] = [
                (csv, ["--group-by", "posting"], "has no column 'posting' (--group-by)"),
                (csv, ["--group-by", "posting_id"], "has no column 'id'"),
                (header + "\n" + body[pair[0]] + "\n" + body[other] + "\n" + body[pair[1]] + "\n",
                 ["--group-by", "posting_id", "--id-column", "lead_id"], "line 4: posting_id '\(leads[pair[0]].posting)' comes back after other rows"),
                (header + "\n" + body[pair[0]] + "\n" + String(body[pair[1]]).replacingOccurrences(of: salary(pair[1]), with: ",1,") + "\n",
                 ["--group-by", "posting_id", "--id-column", "lead_id"], "line 3: job_salary is 1 here but"),
                (header + "\n" + String(body[0]).replacingOccurrences(of: salary(0), with: ",x,") + "\n",
                 ["--id-column", "lead_id"], "line 2: 'job_salary' is 'x', not a number"),
                (header + "\n1,1,2\n", ["--id-column", "lead_id"], "line 2: 3 fields, the header has 13"),
            ]
            for (text, flags, message) in cases {
                let bad = try Self.score(port: port, json: String(text), flags, ext: "csv")
                #expect(bad.status != 0 && bad.err.contains(message), "\(flags): \(bad.err)")
            }
        }
    }
}
