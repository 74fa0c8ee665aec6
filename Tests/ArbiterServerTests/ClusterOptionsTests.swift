import ArbiterTestSupport
import Foundation
import Testing

/// arbiterd's cluster options are checked before anything starts, each refusal naming the option and what is
/// wrong (no etcd or S3 is reached: the endpoints below listen nowhere).
@Suite struct ClusterOptionsTests {
    @Test func downloadSlotOptionsAreChecked() async throws {
        let arbiterd = OtherProcess.binDir.appendingPathComponent("arbiterd").path
        let dir = NSTemporaryDirectory() + "arbiter-cluster-options-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let base = ["--store", dir + "/store", "--cluster-etcd", "http://127.0.0.1:1", "--cluster-s3", "http://127.0.0.1:1",
                    "--cluster-bucket", "b", "--cluster-name", "r0"]
        let cases: [(arguments: [String], says: String)] = [
            (["--cluster-download-slots", "3"], "--cluster-download-slots needs --cluster-download-lock"),
            (["--cluster-download-lock", dir + "/missing/slot"], "does not exist"),
            (["--cluster-download-lock", dir + "/slot", "--cluster-download-slots", "0"], "must be 1...64, got 0"),
            (["--cluster-download-lock", dir + "/slot", "--cluster-download-slots", "65"], "must be 1...64, got 65"),
        ]
        for c in cases {
            let r = try await offPool { try OtherProcess.capture(arbiterd, base + c.arguments) }
            #expect(r.status != 0, "\(c.arguments)")
            #expect(r.output.contains(c.says), "\(c.arguments): \(r.output)")
        }
        // Refused before the server started: no store was created.
        #expect(!FileManager.default.fileExists(atPath: dir + "/store"))
    }
}
