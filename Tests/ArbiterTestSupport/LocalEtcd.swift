import Foundation

/// A real etcd cluster for tests: `members` etcd processes (Debian's `etcd-server`, which `make deps`
/// installs) on loopback ports, data in a temporary directory. Members can be killed, paused and restarted
/// to take quorum away and give it back. `stop()` kills them all and removes the directory.
public final class LocalEtcd: @unchecked Sendable {
    public struct Member {
        public var name: String
        public var clientPort: Int
        public var peerPort: Int
        public var clientURL: String { "http://127.0.0.1:\(clientPort)" }
    }

    public let members: [Member]
    public let directory: URL
    private var processes: [Process?]
    private let lock = NSLock()

    /// The members' client URLs, comma-separated (what `--cluster-etcd` takes).
    public var endpoints: String { members.map(\.clientURL).joined(separator: ",") }

    public init(members count: Int = 3) throws {
        guard FileManager.default.isExecutableFile(atPath: "/usr/bin/etcd") || Self.onPath("etcd") else {
            throw TestSupportError("etcd is not installed: `make deps` installs Debian's etcd-server")
        }
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("arbiter-etcd-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let ports = try LocalPorts.free(count: 2 * count)
        members = (0..<count).map { Member(name: "e\($0)", clientPort: ports[2 * $0], peerPort: ports[2 * $0 + 1]) }
        processes = Array(repeating: nil, count: count)
        for i in 0..<count { try start(i, initial: true) }
        try waitHealthy(seconds: 30)
    }

    static func onPath(_ name: String) -> Bool {
        (ProcessInfo.processInfo.environment["PATH"] ?? "").split(separator: ":").contains {
            FileManager.default.isExecutableFile(atPath: "\($0)/\(name)")
        }
    }

    private func start(_ i: Int, initial: Bool) throws {
        let m = members[i]
        let cluster = members.map { "\($0.name)=http://127.0.0.1:\($0.peerPort)" }.joined(separator: ",")
        let p = Process()
        p.executableURL = URL(fileURLWithPath: FileManager.default.isExecutableFile(atPath: "/usr/bin/etcd") ? "/usr/bin/etcd" : "etcd")
        p.arguments = [
            "--name", m.name, "--data-dir", directory.appendingPathComponent(m.name).path,
            "--listen-client-urls", m.clientURL, "--advertise-client-urls", m.clientURL,
            "--listen-peer-urls", "http://127.0.0.1:\(m.peerPort)", "--initial-advertise-peer-urls", "http://127.0.0.1:\(m.peerPort)",
            "--initial-cluster", cluster, "--initial-cluster-state", initial ? "new" : "existing",
            "--initial-cluster-token", directory.lastPathComponent,
            // Quick elections on loopback (a killed leader is replaced within about a second).
            "--heartbeat-interval", "50", "--election-timeout", "500",
        ]
        let log = directory.appendingPathComponent("\(m.name).log")
        if !FileManager.default.fileExists(atPath: log.path) { FileManager.default.createFile(atPath: log.path, contents: nil) }
        let handle = try FileHandle(forWritingTo: log)
        handle.seekToEndOfFile()
        p.standardOutput = handle
        p.standardError = handle
        try p.run()
        lock.lock()
        processes[i] = p
        lock.unlock()
    }

    /// Waits until every running member reports itself healthy (it has a leader).
    public func waitHealthy(seconds: Double) throws {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            let running = (0..<members.count).filter { isRunning($0) }
            if running.allSatisfy({ Self.healthy(port: members[$0].clientPort) }) { return }
            usleep(100_000)
        }
        throw TestSupportError("etcd members did not become healthy within \(Int(seconds)) s; logs in \(directory.path)")
    }

    func isRunning(_ i: Int) -> Bool {
        lock.lock()
        defer { lock.unlock() }
        return processes[i]?.isRunning == true
    }

    /// GET /health answers {"health":"true"} when the member has a leader.
    static func healthy(port: Int) -> Bool {
        LoopbackHTTP.get(port: port, path: "/health")?.body.contains("\"true\"") == true
    }

    /// SIGKILLs member `i`.
    public func kill(_ i: Int) {
        lock.lock()
        let p = processes[i]
        processes[i] = nil
        lock.unlock()
        guard let p, p.isRunning else { return }
        Foundation.kill(p.processIdentifier, SIGKILL)
        p.waitUntilExit()
    }

    /// Starts member `i` again on its data directory (after `kill`).
    public func restart(_ i: Int) throws {
        guard !isRunning(i) else { return }
        try start(i, initial: false)
    }

    public func stop() {
        for i in 0..<members.count { kill(i) }
        if ProcessInfo.processInfo.environment["ARBITER_KEEP_ETCD_LOGS"] == nil { try? FileManager.default.removeItem(at: directory) }
    }

    deinit { stop() }
}
