import AsyncHTTPClient
import Foundation
import NIOCore
import NIOConcurrencyHelpers
import NIOHTTP1

/// A key and value as etcd holds them, with the revisions the control plane compares.
public struct EtcdKeyValue: Sendable, Equatable {
    public var key: String
    public var value: [UInt8]
    public var createRevision: Int64
    public var modRevision: Int64
    public var version: Int64
    public var lease: Int64
}

/// One change a watch reports.
public struct EtcdEvent: Sendable, Equatable {
    public enum Kind: Sendable, Equatable { case put, delete }
    public var kind: Kind
    public var kv: EtcdKeyValue
}

/// A condition of a transaction (etcd's `Compare`): the key's (or, with `rangeEnd`, every key's in
/// [key, rangeEnd)) value, version, creation or modification revision, against a value.
public struct EtcdCompare: Sendable {
    public enum Target: String, Sendable { case version = "VERSION", create = "CREATE", mod = "MOD", value = "VALUE" }
    public enum Result: String, Sendable { case equal = "EQUAL", greater = "GREATER", less = "LESS", notEqual = "NOT_EQUAL" }
    public var key: String
    public var rangeEnd: String?
    public var target: Target
    public var result: Result
    public var revision: Int64 = 0
    public var value: [UInt8] = []

    /// The key's modification revision compared with `revision` (0: the key does not exist).
    public static func modRevision(_ key: String, _ result: Result, _ revision: Int64) -> EtcdCompare {
        EtcdCompare(key: key, rangeEnd: nil, target: .mod, result: result, revision: revision)
    }

    /// Every key under `prefix` was last modified before `revision` (none created or changed since).
    public static func unchangedSince(prefix: String, revision: Int64) -> EtcdCompare {
        EtcdCompare(key: prefix, rangeEnd: EtcdClient.prefixEnd(prefix), target: .mod, result: .less, revision: revision)
    }

    var json: [String: Any] {
        var o: [String: Any] = ["key": EtcdClient.b64(key), "target": target.rawValue, "result": result.rawValue]
        if let rangeEnd { o["range_end"] = EtcdClient.b64(rangeEnd) }
        switch target {
        case .version: o["version"] = String(revision)
        case .create: o["create_revision"] = String(revision)
        case .mod: o["mod_revision"] = String(revision)
        case .value: o["value"] = Data(value).base64EncodedString()
        }
        return o
    }
}

/// An operation inside a transaction.
public enum EtcdOperation: Sendable {
    case put(key: String, value: [UInt8], lease: Int64)

    var json: [String: Any] {
        switch self {
        case .put(let key, let value, let lease):
            var p: [String: Any] = ["key": EtcdClient.b64(key), "value": Data(value).base64EncodedString()]
            if lease != 0 { p["lease"] = String(lease) }
            return ["request_put": p]
        }
    }
}

public enum EtcdError: Error, CustomStringConvertible, Sendable, Equatable {
    /// No endpoint answered: etcd is unreachable (or has no quorum and timed out).
    case unavailable(String)
    /// etcd answered with an error (its gRPC code and message).
    case server(operation: String, code: Int, message: String)
    /// An answer that does not parse as etcd's.
    case malformed(String)
    /// The watch's start revision was compacted away: read afresh and watch from there.
    case compacted(revision: Int64)
    /// The lease is gone (expired or revoked).
    case leaseExpired(Int64)

    public var description: String {
        switch self {
        case .unavailable(let s): return "etcd is unavailable: \(s)"
        case .server(let op, let code, let message): return "etcd \(op) failed (code \(code)): \(message)"
        case .malformed(let s): return "etcd's answer is malformed: \(s)"
        case .compacted(let r): return "etcd compacted the history to revision \(r)"
        case .leaseExpired(let id): return "etcd lease \(id) has expired"
        }
    }
}

/// etcd's v3 API through its JSON gateway (`/v3/kv/range`, `/v3/kv/txn`, `/v3/watch`, `/v3/lease/...`), over
/// async-http-client, against several members: a request that cannot reach one member goes to the next.
/// Every request is bounded in time; watches stream until cancelled or the member goes away.
public final class EtcdClient: Sendable {
    public let endpoints: [String]
    let http: HTTPClient
    public let requestTimeout: TimeAmount
    /// The member to try first: the last one that answered.
    private let preferred = NIOLockedValueBox(0)

    /// `endpoints`: each `http://HOST:PORT` of a member's client URL.
    public init(endpoints: [String], http: HTTPClient, requestTimeout: TimeAmount = .seconds(3)) throws(ClusterError) {
        var cleaned: [String] = []
        for e in endpoints {
            var s = e.trimmingCharacters(in: .whitespaces)
            while s.hasSuffix("/") { s.removeLast() }
            guard let url = URL(string: s), url.scheme == "http" || url.scheme == "https", url.host != nil, url.path.isEmpty else {
                throw ClusterError.configuration("etcd endpoint '\(e)' is not an http:// URL of a host and port (like http://127.0.0.1:2379)")
            }
            cleaned.append(s)
        }
        guard !cleaned.isEmpty else { throw ClusterError.configuration("no etcd endpoint given") }
        self.endpoints = cleaned
        self.http = http
        self.requestTimeout = requestTimeout
    }

    /// `http://a:1,http://b:2` split at commas.
    public static func parseEndpoints(_ list: String) -> [String] {
        list.split(separator: ",").map(String.init).filter { !$0.isEmpty }
    }

    /// An `HTTPClient` for etcd: short connect timeout and no retried connection attempts (a dead member is
    /// skipped at once: by default async-http-client retries a refused connection with backoff until the
    /// request's deadline, which cost a lease renewal its whole timeout when a member was killed), no read
    /// timeout (watches are long-lived; unary requests carry their own deadline).
    public static func makeHTTPClient(eventLoopGroup: any EventLoopGroup) -> HTTPClient {
        var configuration = HTTPClient.Configuration(redirectConfiguration: .disallow, timeout: .init(connect: .milliseconds(500)))
        configuration.connectionPool = .init(idleTimeout: .seconds(60))
        configuration.connectionPool.retryConnectionEstablishment = false
        return HTTPClient(eventLoopGroup: eventLoopGroup, configuration: configuration)
    }

    // MARK: KV

    /// The value at `key`, or every key under it when `prefix`; and the store's revision at the read.
    public func range(_ key: String, prefix: Bool = false) async throws -> (kvs: [EtcdKeyValue], revision: Int64) {
        var body: [String: Any] = ["key": Self.b64(key)]
        if prefix { body["range_end"] = Self.b64(Self.prefixEnd(key)) }
        let r = try await call("/v3/kv/range", body, operation: "range \(key)")
        return (try Self.kvs(r["kvs"]), try Self.revision(r))
    }

    public func get(_ key: String) async throws -> EtcdKeyValue? {
        try await range(key).kvs.first
    }

    /// Puts `value` at `key` (attached to `lease` when nonzero); returns the revision of the write.
    @discardableResult
    public func put(_ key: String, _ value: [UInt8], lease: Int64 = 0) async throws -> Int64 {
        var body: [String: Any] = ["key": Self.b64(key), "value": Data(value).base64EncodedString()]
        if lease != 0 { body["lease"] = String(lease) }
        return try Self.revision(try await call("/v3/kv/put", body, operation: "put \(key)"))
    }

    /// Runs `success` if every comparison holds, else `failure`; returns whether they held and the revision.
    public func txn(_ compare: [EtcdCompare], success: [EtcdOperation], failure: [EtcdOperation] = []) async throws -> (succeeded: Bool, revision: Int64) {
        let body: [String: Any] = ["compare": compare.map(\.json), "success": success.map(\.json), "failure": failure.map(\.json)]
        let r = try await call("/v3/kv/txn", body, operation: "txn")
        return ((r["succeeded"] as? Bool) ?? false, try Self.revision(r))
    }

    // MARK: Leases

    /// A new lease of `ttl` seconds; returns its ID.
    public func grantLease(ttl: Int) async throws -> Int64 {
        let r = try await call("/v3/lease/grant", ["TTL": String(ttl)], operation: "lease grant")
        guard let id = Self.int64(r["ID"]), id != 0 else { throw EtcdError.malformed("lease grant answered no ID") }
        return id
    }

    /// Renews the lease; returns its TTL in seconds. A lease that has expired throws ``EtcdError/leaseExpired(_:)``.
    @discardableResult
    public func keepAlive(lease: Int64) async throws -> Int64 {
        let r = try await call("/v3/lease/keepalive", ["ID": String(lease)], operation: "lease keepalive", streamed: true)
        let result = (r["result"] as? [String: Any]) ?? r
        let ttl = Self.int64(result["TTL"]) ?? 0
        guard ttl > 0 else { throw EtcdError.leaseExpired(lease) }
        return ttl
    }

    public func revokeLease(_ lease: Int64) async throws {
        _ = try await call("/v3/lease/revoke", ["ID": String(lease)], operation: "lease revoke")
    }

    // MARK: Watch

    /// Watches `key` (or every key under it) from `startRevision` (0: from now), calling `onEvents` with each
    /// batch and the revision it brings the watcher to, until the stream ends, the task is cancelled or
    /// `onEvents` throws. Returns the last revision seen, for the caller to resume from (+1). A start revision
    /// etcd has compacted throws ``EtcdError/compacted(revision:)``.
    public func watch(_ key: String, prefix: Bool, startRevision: Int64,
                      onEvents: @Sendable ([EtcdEvent], Int64) async throws -> Void) async throws -> Int64 {
        var create: [String: Any] = ["key": Self.b64(key), "progress_notify": true]
        if prefix { create["range_end"] = Self.b64(Self.prefixEnd(key)) }
        if startRevision > 0 { create["start_revision"] = String(startRevision) }
        let payload = try JSONSerialization.data(withJSONObject: ["create_request": create])
        var lastError: any Error = EtcdError.unavailable("no endpoint")
        for endpoint in orderedEndpoints() {
            var request = HTTPClientRequest(url: endpoint + "/v3/watch")
            request.method = .POST
            request.headers.add(name: "Content-Type", value: "application/json")
            request.body = .bytes(ByteBuffer(bytes: payload))
            let response: HTTPClientResponse
            do {
                response = try await http.execute(request, deadline: .distantFuture)
            } catch {
                lastError = error
                continue
            }
            guard response.status == .ok else {
                let text = (try? await response.body.collect(upTo: 64 << 10)).map { String(buffer: $0) } ?? ""
                throw EtcdError.server(operation: "watch \(key)", code: Int(response.status.code), message: text)
            }
            var last = startRevision > 0 ? startRevision - 1 : 0
            var pending: [UInt8] = []
            for try await chunk in response.body {
                pending += chunk.readableBytesView
                // One JSON message per line.
                while let newline = pending.firstIndex(of: UInt8(ascii: "\n")) {
                    let line = Array(pending[..<newline])
                    pending.removeSubrange(...newline)
                    guard !line.allSatisfy({ $0 == 32 || $0 == 13 }) else { continue }
                    guard let message = try JSONSerialization.jsonObject(with: Data(line)) as? [String: Any] else {
                        throw EtcdError.malformed("a watch message is not a JSON object")
                    }
                    if let error = message["error"] as? [String: Any] {
                        throw EtcdError.server(operation: "watch \(key)", code: Int(Self.int64(error["grpc_code"] ?? error["code"]) ?? 0),
                                               message: (error["message"] as? String) ?? "")
                    }
                    let result = (message["result"] as? [String: Any]) ?? [:]
                    if let compacted = Self.int64(result["compact_revision"]), compacted > 0 {
                        throw EtcdError.compacted(revision: compacted)
                    }
                    if (result["canceled"] as? Bool) == true {
                        throw EtcdError.server(operation: "watch \(key)", code: 0, message: (result["cancel_reason"] as? String) ?? "the watch was cancelled")
                    }
                    let revision = Self.int64((result["header"] as? [String: Any])?["revision"]) ?? last
                    var events: [EtcdEvent] = []
                    for e in (result["events"] as? [[String: Any]]) ?? [] {
                        let kind: EtcdEvent.Kind = (e["type"] as? String) == "DELETE" ? .delete : .put
                        guard let kv = try Self.kvs([e["kv"] as Any]).first else { continue }
                        events.append(EtcdEvent(kind: kind, kv: kv))
                    }
                    let reached = events.map(\.kv.modRevision).max() ?? revision
                    if !events.isEmpty || reached > last {
                        last = max(last, reached)
                        if !events.isEmpty { try await onEvents(events, last) }
                    }
                }
                guard pending.count <= 16 << 20 else { throw EtcdError.malformed("a watch message exceeds 16 MiB") }
            }
            return last
        }
        throw EtcdError.unavailable("watch \(key): \(lastError)")
    }

    // MARK: Requests

    /// POSTs `body` to `path` on the preferred member, then on each other member if it cannot be reached or
    /// answers 5xx; returns the answer's JSON. `streamed` answers are `{"result": ...}` lines: the first is taken.
    func call(_ path: String, _ body: [String: Any], operation: String, streamed: Bool = false) async throws -> [String: Any] {
        let payload = try JSONSerialization.data(withJSONObject: body)
        var failures: [String] = []
        for (index, endpoint) in orderedEndpoints().enumerated() {
            var request = HTTPClientRequest(url: endpoint + path)
            request.method = .POST
            request.headers.add(name: "Content-Type", value: "application/json")
            request.body = .bytes(ByteBuffer(bytes: payload))
            do {
                let response = try await http.execute(request, timeout: requestTimeout)
                var text = String(buffer: try await response.body.collect(upTo: 64 << 20))
                if streamed, let newline = text.firstIndex(of: "\n") { text = String(text[..<newline]) }
                let json = (try? JSONSerialization.jsonObject(with: Data(text.utf8))) as? [String: Any]
                if response.status == .ok, let json {
                    if let error = json["error"] as? [String: Any] {
                        throw EtcdError.server(operation: operation, code: Int(Self.int64(error["grpc_code"] ?? error["code"]) ?? 0),
                                               message: (error["message"] as? String) ?? text)
                    }
                    preferred.withLockedValue { $0 = ($0 + index) % endpoints.count }
                    return json
                }
                let message = (json?["message"] as? String) ?? (json?["error"] as? String) ?? text
                let code = Int(Self.int64(json?["code"]) ?? Int64(response.status.code))
                // No leader, timeouts inside etcd: another member may do better.
                if response.status.code >= 500 {
                    failures.append("\(endpoint): \(message)")
                    continue
                }
                throw EtcdError.server(operation: operation, code: code, message: message)
            } catch let error as EtcdError {
                throw error
            } catch {
                failures.append("\(endpoint): \(error)")
            }
        }
        throw EtcdError.unavailable("\(operation): " + failures.joined(separator: "; "))
    }

    func orderedEndpoints() -> [String] {
        let start = preferred.withLockedValue { $0 } % endpoints.count
        return Array(endpoints[start...] + endpoints[..<start])
    }

    static func b64(_ s: String) -> String { Data(s.utf8).base64EncodedString() }

    /// The end of the range of keys starting with `prefix`: its last byte that is not 0xff, incremented.
    public static func prefixEnd(_ prefix: String) -> String {
        var bytes = Array(prefix.utf8)
        while let last = bytes.last {
            if last < 0xff {
                bytes[bytes.count - 1] = last + 1
                return String(decoding: bytes, as: UTF8.self)
            }
            bytes.removeLast()
        }
        return "\0"
    }

    static func int64(_ any: Any?) -> Int64? {
        if let s = any as? String { return Int64(s) }
        if let n = any as? NSNumber { return n.int64Value }
        return nil
    }

    static func revision(_ r: [String: Any]) throws -> Int64 {
        guard let rev = int64((r["header"] as? [String: Any])?["revision"]) else {
            throw EtcdError.malformed("no header revision")
        }
        return rev
    }

    static func kvs(_ any: Any?) throws -> [EtcdKeyValue] {
        guard let list = any as? [Any] else { return [] }
        return try list.compactMap { item in
            guard let kv = item as? [String: Any] else { return nil }
            guard let k = kv["key"] as? String, let keyData = Data(base64Encoded: k) else {
                throw EtcdError.malformed("a key is not base64")
            }
            let value = (kv["value"] as? String).flatMap { Data(base64Encoded: $0) } ?? Data()
            return EtcdKeyValue(key: String(decoding: keyData, as: UTF8.self), value: Array(value),
                                createRevision: int64(kv["create_revision"]) ?? 0, modRevision: int64(kv["mod_revision"]) ?? 0,
                                version: int64(kv["version"]) ?? 0, lease: int64(kv["lease"]) ?? 0)
        }
    }
}
