import ArbiterTestSupport
import Foundation
import Testing

/// `arbiter score` as a user runs it, against a running server.
@Suite struct ScoreCLITests {
    static func score(port: Int, json: String) throws -> (status: Int32, out: String, err: String) {
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("score-cli-\(getpid())-\(UInt32.random(in: 0...UInt32.max)).json")
        try Data(json.utf8).write(to: file)
        defer { try? FileManager.default.removeItem(at: file) }
        let p = Process()
        p.executableURL = OtherProcess.binDir.appendingPathComponent("arbiter")
        p.arguments = ["score", "--host", "127.0.0.1:\(port)", "--model", "leads", "--input", file.path]
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
}
