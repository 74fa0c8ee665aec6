import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1

/// Where the objects live: an S3-compatible endpoint (`http://HOST:PORT` or `https://...`), addressed
/// path-style (`ENDPOINT/BUCKET/KEY`, which every S3-compatible server accepts), and the region signed into
/// each request (SeaweedFS and MinIO accept any; AWS needs the bucket's).
public struct S3Location: Sendable, Equatable {
    public var endpoint: String
    public var bucket: String
    public var region: String

    /// Checks the endpoint and the bucket name; the errors name what is wrong.
    public init(endpoint: String, bucket: String, region: String = "us-east-1") throws(ClusterError) {
        var e = endpoint
        while e.hasSuffix("/") { e.removeLast() }
        guard let url = URL(string: e), let scheme = url.scheme, scheme == "http" || scheme == "https",
              let host = url.host, !host.isEmpty, url.path.isEmpty, url.query == nil else {
            throw ClusterError.configuration("S3 endpoint '\(endpoint)' is not an http:// or https:// URL of a host and port alone (like http://127.0.0.1:8333)")
        }
        let allowed = Set("abcdefghijklmnopqrstuvwxyz0123456789.-".utf8)
        guard (3...63).contains(bucket.utf8.count), bucket.utf8.allSatisfy(allowed.contains),
              bucket.first != "-", bucket.first != ".", bucket.last != "-", bucket.last != "." else {
            throw ClusterError.configuration("bucket name '\(bucket)' is not valid: 3-63 characters of a-z 0-9 . - , starting and ending with a letter or digit")
        }
        guard !region.isEmpty, region.utf8.allSatisfy({ $0 > 32 && $0 < 127 && $0 != UInt8(ascii: "/") }) else {
            throw ClusterError.configuration("S3 region '\(region)' is not valid")
        }
        self.endpoint = e
        self.bucket = bucket
        self.region = region
    }

    /// The `Host` header the endpoint's URL implies (the port only when it is not the scheme's default).
    var hostHeader: String {
        let url = URL(string: endpoint)!
        let host = url.host!.contains(":") ? "[\(url.host!)]" : url.host!
        guard let port = url.port else { return host }
        if (url.scheme == "http" && port == 80) || (url.scheme == "https" && port == 443) { return host }
        return "\(host):\(port)"
    }
}

/// What a HEAD found.
public struct S3ObjectInfo: Sendable, Equatable {
    public var size: Int
    public var eTag: String
}

/// A small S3 client over async-http-client: the requests Arbiter's artifacts need (objects, multipart
/// upload, ranged download), each signed with SigV4 and its payload's SHA-256, retried on connection failures
/// and 5xx answers with backoff, and bounded in time.
public final class S3Client: Sendable {
    public let location: S3Location
    let signer: SigV4Signer
    let http: HTTPClient
    /// Attempts per request, the first included.
    public let attempts: Int
    /// A whole request's time bound (a 16 MiB part at a slow 20 MiB/s takes under 1 s).
    public let requestTimeout: TimeAmount

    public init(location: S3Location, credentials: S3Credentials, http: HTTPClient, attempts: Int = 4,
                requestTimeout: TimeAmount = .seconds(60)) {
        self.location = location
        self.signer = SigV4Signer(credentials: credentials, region: location.region, service: "s3")
        self.http = http
        self.attempts = max(1, attempts)
        self.requestTimeout = requestTimeout
    }

    /// An `HTTPClient` fit for S3: its own connection timeouts, no redirects followed (a signed request must
    /// not be replayed elsewhere), on the given event loop group.
    public static func makeHTTPClient(eventLoopGroup: any EventLoopGroup) -> HTTPClient {
        var configuration = HTTPClient.Configuration(redirectConfiguration: .disallow,
                                                     timeout: .init(connect: .seconds(2), read: .seconds(30)))
        configuration.connectionPool = .init(idleTimeout: .seconds(30))
        return HTTPClient(eventLoopGroup: eventLoopGroup, configuration: configuration)
    }

    // MARK: Objects

    /// Creates the bucket; an existing bucket of ours is not an error.
    public func createBucket() async throws(ClusterError) {
        let r = try await send("PUT", key: nil, body: nil, operation: "CreateBucket", accept: [200, 409])
        if r.status == 409, !r.body.contains("BucketAlreadyOwnedByYou") {
            throw Self.error(operation: "CreateBucket", object: location.bucket, status: 409, body: r.body)
        }
    }

    /// The object's size and ETag, or nil when there is no such object.
    public func head(_ key: String) async throws(ClusterError) -> S3ObjectInfo? {
        let r = try await send("HEAD", key: key, body: nil, operation: "HeadObject", accept: [200, 404])
        guard r.status == 200 else { return nil }
        guard let size = r.headers.first(name: "content-length").flatMap(Int.init) else {
            throw ClusterError.s3(operation: "HeadObject", object: objectName(key), status: 200, code: "", message: "no Content-Length")
        }
        return S3ObjectInfo(size: size, eTag: r.headers.first(name: "etag") ?? "")
    }

    /// Writes a small object in one PUT.
    public func put(_ key: String, bytes: [UInt8], contentType: String = "application/octet-stream") async throws(ClusterError) {
        _ = try await send("PUT", key: key, body: bytes, operation: "PutObject", extraHeaders: [("Content-Type", contentType)])
    }

    /// Deletes an object (absent already: fine).
    public func delete(_ key: String) async throws(ClusterError) {
        _ = try await send("DELETE", key: key, body: nil, operation: "DeleteObject", accept: [200, 204, 404])
    }

    /// Reads a small object whole (at most `limit` bytes), or nil when there is none.
    public func get(_ key: String, limit: Int = 16 << 20) async throws(ClusterError) -> [UInt8]? {
        let r = try await send("GET", key: key, body: nil, operation: "GetObject", accept: [200, 404], bodyLimit: limit, rawBody: true)
        return r.status == 200 ? r.bytes : nil
    }

    /// Keys under `prefix` (ListObjectsV2, every page).
    public func list(prefix: String) async throws(ClusterError) -> [String] {
        var keys: [String] = []
        var token: String?
        repeat {
            var query = [(name: "list-type", value: "2"), (name: "prefix", value: prefix)]
            if let token { query.append((name: "continuation-token", value: token)) }
            let r = try await send("GET", key: nil, query: query, body: nil, operation: "ListObjectsV2")
            keys += XMLScan.values(of: "Key", in: r.body)
            token = XMLScan.values(of: "IsTruncated", in: r.body).first == "true"
                ? XMLScan.values(of: "NextContinuationToken", in: r.body).first : nil
        } while token != nil
        return keys
    }

    // MARK: Ranged download

    /// Streams the object to `consume` chunk by chunk, `expectedSize` bytes in all. A connection that breaks
    /// mid-object is resumed where it stopped (a `Range` request) up to `attempts` times, with backoff; the
    /// bytes `consume` saw are never sent twice. Returns the bytes read.
    @discardableResult
    public func download(_ key: String, expectedSize: Int,
                         consume: (ByteBuffer) async throws -> Void) async throws -> Int {
        var received = 0
        var failures = 0
        while true {
            do {
                try Task.checkCancellation()
                var headers: [(String, String)] = []
                if received > 0 { headers.append(("Range", "bytes=\(received)-")) }
                let request = try makeRequest("GET", key: key, query: [], body: nil, extraHeaders: headers)
                let response = try await http.execute(request, timeout: requestTimeout)
                guard response.status == .ok || response.status == .partialContent else {
                    let body = (try? await response.body.collect(upTo: 64 << 10)).map { String(buffer: $0) } ?? ""
                    let err = Self.error(operation: "GetObject", object: objectName(key), status: Int(response.status.code), body: body)
                    if response.status.code >= 500 { throw Retryable(error: err) }
                    throw err
                }
                if received > 0, response.status != .partialContent {
                    throw ClusterError.s3(operation: "GetObject", object: objectName(key), status: Int(response.status.code), code: "",
                                          message: "the server ignored the Range of a resumed download")
                }
                for try await chunk in response.body {
                    guard received + chunk.readableBytes <= expectedSize else {
                        throw ClusterError.corruptArtifact("\(objectName(key)) is longer than its manifest's \(expectedSize) bytes")
                    }
                    try await consume(chunk)
                    received += chunk.readableBytes
                }
                guard received == expectedSize else {
                    throw Retryable(error: ClusterError.s3Unreachable(operation: "GetObject", object: objectName(key),
                                                                      underlying: "the body ended at \(received) of \(expectedSize) bytes"))
                }
                return received
            } catch let error where Self.isRetryable(error) {
                failures += 1
                guard failures < attempts else {
                    throw (error as? Retryable)?.error
                        ?? ClusterError.s3Unreachable(operation: "GetObject", object: objectName(key), underlying: "\(error)")
                }
                try await Task.sleep(nanoseconds: Self.backoffNanos(failures))
            }
        }
    }

    // MARK: Multipart upload

    public func createMultipartUpload(_ key: String) async throws(ClusterError) -> String {
        let r = try await send("POST", key: key, query: [(name: "uploads", value: "")], body: nil, operation: "CreateMultipartUpload")
        guard let id = XMLScan.values(of: "UploadId", in: r.body).first, !id.isEmpty else {
            throw ClusterError.s3(operation: "CreateMultipartUpload", object: objectName(key), status: r.status, code: "",
                                  message: "the answer has no UploadId")
        }
        return id
    }

    /// Uploads one part; returns its ETag.
    public func uploadPart(_ key: String, uploadID: String, partNumber: Int, bytes: [UInt8]) async throws(ClusterError) -> String {
        let r = try await send("PUT", key: key, query: [(name: "partNumber", value: String(partNumber)), (name: "uploadId", value: uploadID)],
                               body: bytes, operation: "UploadPart")
        guard let etag = r.headers.first(name: "etag"), !etag.isEmpty else {
            throw ClusterError.s3(operation: "UploadPart", object: objectName(key), status: r.status, code: "", message: "the answer has no ETag")
        }
        return etag
    }

    public func completeMultipartUpload(_ key: String, uploadID: String, parts: [(number: Int, eTag: String)]) async throws(ClusterError) {
        var xml = "<CompleteMultipartUpload>"
        for p in parts.sorted(by: { $0.number < $1.number }) {
            xml += "<Part><PartNumber>\(p.number)</PartNumber><ETag>\(XMLScan.escape(p.eTag))</ETag></Part>"
        }
        xml += "</CompleteMultipartUpload>"
        let r = try await send("POST", key: key, query: [(name: "uploadId", value: uploadID)], body: Array(xml.utf8),
                               operation: "CompleteMultipartUpload", extraHeaders: [("Content-Type", "application/xml")])
        // S3 may answer 200 and then report the failure in the body.
        if r.body.contains("<Error>") {
            throw Self.error(operation: "CompleteMultipartUpload", object: objectName(key), status: r.status, body: r.body)
        }
    }

    public func abortMultipartUpload(_ key: String, uploadID: String) async throws(ClusterError) {
        _ = try await send("DELETE", key: key, query: [(name: "uploadId", value: uploadID)], body: nil,
                           operation: "AbortMultipartUpload", accept: [200, 204, 404])
    }

    // MARK: Requests

    struct Answer {
        var status: Int
        var headers: HTTPHeaders
        var body: String
        var bytes: [UInt8]
    }

    /// Raised inside a retry loop for an answer worth trying again (5xx, a body cut short).
    struct Retryable: Error {
        var error: ClusterError
    }

    func objectName(_ key: String?) -> String {
        key.map { "s3://\(location.bucket)/\($0)" } ?? "s3://\(location.bucket)"
    }

    func makeRequest(_ method: String, key: String?, query: [(name: String, value: String)], body: [UInt8]?,
                     extraHeaders: [(String, String)]) throws(ClusterError) -> HTTPClientRequest {
        if let key {
            guard !key.isEmpty, key.utf8.count <= 1024, !key.hasPrefix("/") else {
                throw ClusterError.configuration("S3 key '\(key)' is empty, longer than 1024 bytes or starts with '/'")
            }
        }
        let path = "/" + location.bucket + (key.map { "/" + $0 } ?? "")
        let amzDate = SigV4Signer.amzDate(Date())
        let payloadHash = body.map { Digests.sha256Hex($0) } ?? SigV4Signer.emptyPayloadHash
        var signed: [(name: String, value: String)] = [
            (name: "host", value: location.hostHeader),
            (name: "x-amz-content-sha256", value: payloadHash),
            (name: "x-amz-date", value: amzDate),
        ]
        if let token = signer.credentials.sessionToken { signed.append((name: "x-amz-security-token", value: token)) }
        let authorization = signer.authorization(
            for: SigV4Signer.Request(method: method, path: path, query: query, headers: signed, payloadHash: payloadHash),
            amzDate: amzDate)
        var url = location.endpoint + SigV4Signer.uriEncode(path, keepSlash: true)
        if !query.isEmpty {
            url += "?" + query.map { q in
                SigV4Signer.uriEncode(q.name, keepSlash: false) + (q.value.isEmpty && q.name == "uploads" ? "" : "=" + SigV4Signer.uriEncode(q.value, keepSlash: false))
            }.joined(separator: "&")
        }
        var request = HTTPClientRequest(url: url)
        request.method = HTTPMethod(rawValue: method)
        for h in signed { request.headers.replaceOrAdd(name: h.name, value: h.value) }
        request.headers.add(name: "Authorization", value: authorization)
        for (n, v) in extraHeaders { request.headers.add(name: n, value: v) }
        if let body {
            request.body = .bytes(ByteBuffer(bytes: body))
            request.headers.replaceOrAdd(name: "Content-Length", value: String(body.count))
        } else if method == "PUT" || method == "POST" {
            request.headers.replaceOrAdd(name: "Content-Length", value: "0")
        }
        return request
    }

    /// Sends one request, retrying connection failures and 5xx answers; any status outside `accept` is an
    /// error carrying S3's code and message.
    func send(_ method: String, key: String?, query: [(name: String, value: String)] = [], body: [UInt8]?, operation: String,
              accept: Set<Int> = [200], extraHeaders: [(String, String)] = [], bodyLimit: Int = 1 << 20,
              rawBody: Bool = false) async throws(ClusterError) -> Answer {
        var failures = 0
        while true {
            do {
                // Signed anew each attempt: the date is part of the signature.
                let request = try makeRequest(method, key: key, query: query, body: body, extraHeaders: extraHeaders)
                let response = try await http.execute(request, timeout: requestTimeout)
                let status = Int(response.status.code)
                let buffer = method == "HEAD" ? ByteBuffer() : try await response.body.collect(upTo: bodyLimit)
                let bytes = Array(buffer.readableBytesView)
                let text = rawBody && accept.contains(status) ? "" : String(decoding: bytes, as: UTF8.self)
                if accept.contains(status) {
                    return Answer(status: status, headers: response.headers, body: text, bytes: bytes)
                }
                let err = Self.error(operation: operation, object: objectName(key), status: status, body: text)
                if status >= 500 || status == 429 { throw Retryable(error: err) }
                throw err
            } catch let error as ClusterError {
                throw error
            } catch {
                failures += 1
                let final = (error as? Retryable)?.error
                    ?? ClusterError.s3Unreachable(operation: operation, object: objectName(key), underlying: "\(error)")
                guard failures < attempts, !Task.isCancelled else { throw final }
                do { try await Task.sleep(nanoseconds: Self.backoffNanos(failures)) } catch { throw final }
            }
        }
    }

    static func isRetryable(_ error: any Error) -> Bool {
        if error is Retryable { return true }
        if error is ClusterError || error is CancellationError { return false }
        return true  // connection refused, reset, timed out: async-http-client's and NIO's errors
    }

    /// 100 ms, 200 ms, 400 ms, ... (at most 5 s), each with up to half again of random jitter.
    static func backoffNanos(_ failures: Int) -> UInt64 {
        let base = min(5_000, 100 << min(failures - 1, 6))
        return UInt64(base + Int.random(in: 0...(base / 2))) * 1_000_000
    }

    static func error(operation: String, object: String, status: Int, body: String) -> ClusterError {
        ClusterError.s3(operation: operation, object: object, status: status,
                        code: XMLScan.values(of: "Code", in: body).first ?? "",
                        message: XMLScan.values(of: "Message", in: body).first ?? "")
    }
}

/// The few elements Arbiter reads from S3's XML answers (UploadId, Key, Code, Message), found by their tags.
/// S3's answers never nest an element inside one of the same name, and their text is escaped XML.
enum XMLScan {
    static func values(of tag: String, in xml: String) -> [String] {
        var out: [String] = []
        var rest = xml[...]
        let open = "<\(tag)>", close = "</\(tag)>"
        while let start = rest.range(of: open) {
            guard let end = rest.range(of: close, range: start.upperBound..<rest.endIndex) else { break }
            out.append(unescape(String(rest[start.upperBound..<end.lowerBound])))
            rest = rest[end.upperBound...]
        }
        return out
    }

    static func escape(_ s: String) -> String {
        s.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;")
            .replacingOccurrences(of: ">", with: "&gt;").replacingOccurrences(of: "\"", with: "&quot;")
    }

    static func unescape(_ s: String) -> String {
        guard s.contains("&") else { return s }
        return s.replacingOccurrences(of: "&quot;", with: "\"").replacingOccurrences(of: "&apos;", with: "'")
            .replacingOccurrences(of: "&lt;", with: "<").replacingOccurrences(of: "&gt;", with: ">")
            .replacingOccurrences(of: "&amp;", with: "&")
    }
}
