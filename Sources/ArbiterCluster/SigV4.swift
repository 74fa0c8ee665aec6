import Crypto
import Foundation

/// Credentials for S3-compatible storage. From the environment as every AWS tool reads them
/// (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, optionally `AWS_SESSION_TOKEN`): never from a command line,
/// where `ps` would show them.
public struct S3Credentials: Sendable, Equatable {
    public var accessKeyID: String
    public var secretAccessKey: String
    /// A temporary credential's token, sent (and signed) as `x-amz-security-token`.
    public var sessionToken: String?

    public init(accessKeyID: String, secretAccessKey: String, sessionToken: String? = nil) {
        self.accessKeyID = accessKeyID
        self.secretAccessKey = secretAccessKey
        self.sessionToken = sessionToken
    }

    /// The credentials in `environment`, or an error naming what is missing.
    public static func fromEnvironment(_ environment: [String: String] = ProcessInfo.processInfo.environment) throws(ClusterError) -> S3Credentials {
        guard let id = environment["AWS_ACCESS_KEY_ID"], !id.isEmpty,
              let secret = environment["AWS_SECRET_ACCESS_KEY"], !secret.isEmpty else {
            throw ClusterError.configuration("S3 credentials are read from AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY; set both")
        }
        let token = environment["AWS_SESSION_TOKEN"].flatMap { $0.isEmpty ? nil : $0 }
        return S3Credentials(accessKeyID: id, secretAccessKey: secret, sessionToken: token)
    }
}

/// AWS Signature Version 4 (header form): the canonical request, the string to sign and the signature, as
/// AWS specifies them. Checked against AWS's published test suite (`SigV4Tests`) and by a real S3 server,
/// which refuses a request whose signature it computes differently.
///
/// Paths are signed as given, each segment URI-encoded once and never normalized: S3 keys may contain `//`
/// or `.` segments, and S3 signs the path as sent.
public struct SigV4Signer: Sendable {
    public var credentials: S3Credentials
    public var region: String
    public var service: String

    public init(credentials: S3Credentials, region: String, service: String = "s3") {
        self.credentials = credentials
        self.region = region
        self.service = service
    }

    /// What is signed of a request. `path` and `query` are raw (not yet URI-encoded); `headers` are every
    /// header to sign, `host` and `x-amz-date` among them.
    public struct Request: Sendable {
        public var method: String
        public var path: String
        public var query: [(name: String, value: String)]
        public var headers: [(name: String, value: String)]
        /// Hex SHA-256 of the body, or `UNSIGNED-PAYLOAD`.
        public var payloadHash: String

        public init(method: String, path: String, query: [(name: String, value: String)] = [],
                    headers: [(name: String, value: String)], payloadHash: String) {
            self.method = method
            self.path = path
            self.query = query
            self.headers = headers
            self.payloadHash = payloadHash
        }
    }

    /// The hex SHA-256 of an empty body.
    public static let emptyPayloadHash = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

    /// The canonical request and the `SignedHeaders` list.
    public func canonicalRequest(_ r: Request) -> (text: String, signedHeaders: String) {
        let uri = Self.uriEncode(r.path.isEmpty ? "/" : r.path, keepSlash: true)
        var pairs: [(name: String, value: String)] = []
        for q in r.query {
            pairs.append((name: Self.uriEncode(q.name, keepSlash: false), value: Self.uriEncode(q.value, keepSlash: false)))
        }
        // Encoded names and values are ASCII: String's order is their byte order.
        pairs.sort { a, b in a.name == b.name ? a.value < b.value : a.name < b.name }
        let query = pairs.map { p in p.name + "=" + p.value }.joined(separator: "&")
        // Same-named headers are joined with commas in the order given; names sort as lowercase bytes.
        var merged: [String: [String]] = [:]
        for h in r.headers {
            merged[h.name.lowercased(), default: []].append(Self.trimHeaderValue(h.value))
        }
        let names = merged.keys.sorted { Array($0.utf8).lexicographicallyPrecedes(Array($1.utf8)) }
        let headerLines = names.map { "\($0):\(merged[$0]!.joined(separator: ","))\n" }.joined()
        let signed = names.joined(separator: ";")
        let text = [r.method, uri, query, headerLines, signed, r.payloadHash].joined(separator: "\n")
        return (text, signed)
    }

    /// The string to sign for a canonical request made at `amzDate` (`yyyyMMdd'T'HHmmss'Z'`).
    public func stringToSign(canonicalRequest: String, amzDate: String) -> String {
        let hash = Self.hex(SHA256.hash(data: Data(canonicalRequest.utf8)))
        return ["AWS4-HMAC-SHA256", amzDate, scope(amzDate: amzDate), hash].joined(separator: "\n")
    }

    /// The `Authorization` header's value for `r`, made at `amzDate`.
    public func authorization(for r: Request, amzDate: String) -> String {
        let (canonical, signedHeaders) = canonicalRequest(r)
        let toSign = stringToSign(canonicalRequest: canonical, amzDate: amzDate)
        let signature = Self.hex(HMAC<SHA256>.authenticationCode(for: Data(toSign.utf8), using: signingKey(dateStamp: String(amzDate.prefix(8)))))
        return "AWS4-HMAC-SHA256 Credential=\(credentials.accessKeyID)/\(scope(amzDate: amzDate)), SignedHeaders=\(signedHeaders), Signature=\(signature)"
    }

    func scope(amzDate: String) -> String {
        "\(amzDate.prefix(8))/\(region)/\(service)/aws4_request"
    }

    func signingKey(dateStamp: String) -> SymmetricKey {
        func mac(_ key: SymmetricKey, _ text: String) -> SymmetricKey {
            SymmetricKey(data: Data(HMAC<SHA256>.authenticationCode(for: Data(text.utf8), using: key)))
        }
        var key = SymmetricKey(data: Data(("AWS4" + credentials.secretAccessKey).utf8))
        for part in [dateStamp, region, service, "aws4_request"] { key = mac(key, part) }
        return key
    }

    /// `yyyyMMdd'T'HHmmss'Z'` in UTC.
    public static func amzDate(_ date: Date) -> String {
        var t = time_t(date.timeIntervalSince1970.rounded(.down))
        var tm = tm()
        gmtime_r(&t, &tm)
        func pad(_ v: Int32, _ width: Int) -> String {
            let s = String(v)
            return String(repeating: "0", count: max(0, width - s.count)) + s
        }
        return pad(tm.tm_year + 1900, 4) + pad(tm.tm_mon + 1, 2) + pad(tm.tm_mday, 2) + "T"
            + pad(tm.tm_hour, 2) + pad(tm.tm_min, 2) + pad(tm.tm_sec, 2) + "Z"
    }

    /// URI-encodes every byte but the unreserved `A-Z a-z 0-9 - _ . ~` (and `/` when `keepSlash`), with
    /// upper-case hex, as SigV4 requires.
    public static func uriEncode(_ s: String, keepSlash: Bool) -> String {
        let hexDigits = Array("0123456789ABCDEF".utf8)
        var out: [UInt8] = []
        out.reserveCapacity(s.utf8.count)
        for b in s.utf8 {
            switch b {
            case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"),
                 UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "-"), UInt8(ascii: "_"), UInt8(ascii: "."), UInt8(ascii: "~"):
                out.append(b)
            case UInt8(ascii: "/") where keepSlash:
                out.append(b)
            default:
                out.append(UInt8(ascii: "%"))
                out.append(hexDigits[Int(b >> 4)])
                out.append(hexDigits[Int(b & 15)])
            }
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// Leading and trailing spaces removed, runs of spaces inside made one.
    static func trimHeaderValue(_ v: String) -> String {
        var out = ""
        var pendingSpace = false
        for c in v.trimmingCharacters(in: .whitespaces) {
            if c == " " || c == "\t" {
                pendingSpace = true
                continue
            }
            if pendingSpace { out.append(" ") }
            pendingSpace = false
            out.append(c)
        }
        return out
    }

    static func hex<D: Sequence>(_ digest: D) -> String where D.Element == UInt8 {
        let digits = Array("0123456789abcdef".utf8)
        var out: [UInt8] = []
        for b in digest {
            out.append(digits[Int(b >> 4)])
            out.append(digits[Int(b & 15)])
        }
        return String(decoding: out, as: UTF8.self)
    }
}
