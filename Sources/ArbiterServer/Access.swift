import Crypto
import Foundation
import NIOConcurrencyHelpers
import NIOSSL

/// What a client may do, given by its token.
public struct Rights: OptionSet, Sendable, CustomStringConvertible {
    public let rawValue: UInt8
    public init(rawValue: UInt8) { self.rawValue = rawValue }

    /// SCORE.
    public static let score = Rights(rawValue: 1)
    /// LIST_MODELS and MODEL_INFO: read what is served.
    public static let info = Rights(rawValue: 2)
    /// Everything, including the operator's requests to come.
    public static let admin = Rights(rawValue: 4)
    public static let all: Rights = [.score, .info, .admin]

    static let names: [(String, Rights)] = [("score", .score), ("info", .info), ("admin", .admin)]

    /// Whether these rights allow what `needed` names (admin allows everything).
    public func allow(_ needed: Rights) -> Bool { contains(.admin) || isSuperset(of: needed) }

    public var description: String {
        let n = Self.names.filter { contains($0.1) }.map(\.0)
        return n.isEmpty ? "none" : n.joined(separator: ",")
    }
}

/// The tokens a server accepts: a file of SHA-256 hashes, each with its rights and a name for logs. Only
/// hashes are stored: the file does not let whoever reads it connect. Tokens are random strings made by
/// `arbiter token` (32 random bytes), so an unsalted hash is enough.
///
///     # sha256 of the token (64 hex digits)                          rights      name
///     9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08  score,info  pricing-svc
///
/// One entry a line; `#` starts a comment; blank lines are skipped. Rights are `score`, `info`, `admin`,
/// comma-separated. A malformed line, a duplicate hash or name, or a file with no entry is refused, naming
/// the line.
public struct TokenTable: Sendable {
    public struct Entry: Sendable {
        public let name: String
        public let rights: Rights
    }

    private let entries: [Data: Entry]
    public var count: Int { entries.count }

    public init(contentsOf path: String) throws(AccessError) {
        let text: String
        do {
            text = try String(contentsOfFile: path, encoding: .utf8)
        } catch {
            throw AccessError("cannot read the token file \(path): \((error as NSError).localizedDescription)")
        }
        try self.init(text: text, source: path)
    }

    public init(text: String, source: String = "tokens") throws(AccessError) {
        var entries: [Data: Entry] = [:]
        var names = Set<String>()
        for (i, raw) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let line = raw.split(separator: "#", maxSplits: 1, omittingEmptySubsequences: false).first ?? ""
            let fields = line.split(whereSeparator: { $0 == " " || $0 == "\t" || $0 == "\r" })
            if fields.isEmpty { continue }
            let at = "\(source) line \(i + 1)"
            guard fields.count == 3 else {
                throw AccessError("\(at): expected 'SHA256-HEX RIGHTS NAME', found \(fields.count) field\(fields.count == 1 ? "" : "s")")
            }
            guard let hash = Self.hex(fields[0]), hash.count == 32 else {
                throw AccessError("\(at): '\(fields[0].prefix(80))' is not a SHA-256 hash (64 hex digits); `arbiter token` prints one")
            }
            var rights: Rights = []
            for r in fields[1].split(separator: ",") {
                guard let (_, right) = Rights.names.first(where: { $0.0 == r }) else {
                    throw AccessError("\(at): unknown right '\(r.prefix(40))' (rights: score, info, admin)")
                }
                rights.insert(right)
            }
            guard !rights.isEmpty else { throw AccessError("\(at): no rights given (rights: score, info, admin)") }
            let name = String(fields[2])
            guard name.count <= 64, name.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || "._-".contains($0)) }) else {
                throw AccessError("\(at): the name '\(name.prefix(80))' must be 1 to 64 letters, digits, '.', '_' or '-'")
            }
            guard entries[hash] == nil else { throw AccessError("\(at): this hash is listed twice") }
            guard names.insert(name).inserted else { throw AccessError("\(at): the name '\(name)' is listed twice") }
            entries[hash] = Entry(name: name, rights: rights)
        }
        guard !entries.isEmpty else { throw AccessError("\(source) lists no token: every client would be refused") }
        self.entries = entries
    }

    /// The entry for a token presented by a client, if known.
    public func entry(for token: String) -> Entry? {
        entries[Self.hash(token)]
    }

    public static func hash(_ token: String) -> Data {
        Data(SHA256.hash(data: Data(token.utf8)))
    }

    /// The hash of `token` in hex, as a line of the token file holds it.
    public static func hashHex(_ token: String) -> String {
        hash(token).map { String(format: "%02x", $0) }.joined()
    }

    /// A new random token (32 bytes, base64url, prefixed `arb_`) and its hash in hex, for the token file.
    public static func newToken() -> (token: String, hashHex: String) {
        var rng = SystemRandomNumberGenerator()
        let bytes = (0..<32).map { _ in UInt8.random(in: 0...255, using: &rng) }
        let token = "arb_" + Data(bytes).base64EncodedString()
            .replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_").replacingOccurrences(of: "=", with: "")
        return (token, hashHex(token))
    }

    private static func hex(_ s: Substring) -> Data? {
        guard s.count % 2 == 0 else { return nil }
        var out = Data(capacity: s.count / 2)
        var it = s.utf8.makeIterator()
        while let a = it.next(), let b = it.next() {
            guard let hi = nibble(a), let lo = nibble(b) else { return nil }
            out.append(hi << 4 | lo)
        }
        return out
    }

    private static func nibble(_ c: UInt8) -> UInt8? {
        switch c {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): c - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): c - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): c - UInt8(ascii: "A") + 10
        default: nil
        }
    }
}

/// A problem with the server's credentials: its certificate, key, client CA or token file.
public struct AccessError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// Files that give the server TLS: its certificate chain and private key (PEM), and optionally the CA that
/// client certificates must chain to (mutual TLS: a client without such a certificate is refused).
public struct TLSFiles: Sendable, Equatable {
    public var certificatePath: String
    public var privateKeyPath: String
    public var clientCAPath: String?

    public init(certificatePath: String, privateKeyPath: String, clientCAPath: String? = nil) {
        self.certificatePath = certificatePath
        self.privateKeyPath = privateKeyPath
        self.clientCAPath = clientCAPath
    }

    /// Reads the files and builds the TLS context: TLS 1.2 or later, and with a client CA, a client
    /// certificate required and verified against it.
    func makeContext() throws(AccessError) -> NIOSSLContext {
        do {
            let chain = try NIOSSLCertificate.fromPEMFile(certificatePath)
            guard !chain.isEmpty else { throw AccessError("\(certificatePath) holds no PEM certificate") }
            let key: NIOSSLPrivateKey
            do {
                key = try NIOSSLPrivateKey(file: privateKeyPath, format: .pem)
            } catch {
                throw AccessError("cannot read the private key \(privateKeyPath): \(error)")
            }
            var tls = TLSConfiguration.makeServerConfiguration(certificateChain: chain.map { .certificate($0) },
                                                               privateKey: .privateKey(key))
            tls.minimumTLSVersion = .tlsv12
            if let ca = clientCAPath {
                let roots = try NIOSSLCertificate.fromPEMFile(ca)
                guard !roots.isEmpty else { throw AccessError("\(ca) holds no PEM certificate") }
                tls.trustRoots = .certificates(roots)
                // Clients connect by address, not by a name the server could check.
                tls.certificateVerification = .noHostnameVerification
            }
            return try NIOSSLContext(configuration: tls)
        } catch let e as AccessError {
            throw e
        } catch {
            throw AccessError("cannot load TLS from \(certificatePath), \(privateKeyPath)\(clientCAPath.map { ", \($0)" } ?? ""): \(error)")
        }
    }
}

/// The server's credentials in force: its TLS context and token table, replaced whole by `reload` (SIGHUP
/// in arbiterd). Each new connection takes the ones in force when it is accepted; connections already open
/// keep theirs.
final class Credentials: Sendable {
    struct Current: Sendable {
        var tls: NIOSSLContext?
        var tokens: TokenTable?
    }

    private let tlsFiles: TLSFiles?
    private let tokenPath: String?
    private let state: NIOLockedValueBox<Current>

    init(tls: TLSFiles?, tokenPath: String?) throws(AccessError) {
        self.tlsFiles = tls
        self.tokenPath = tokenPath
        state = NIOLockedValueBox(try Self.load(tls: tls, tokenPath: tokenPath))
    }

    var current: Current { state.withLockedValue { $0 } }

    /// Reads every file again; on any error the credentials in force stay and the error is thrown.
    func reload() throws(AccessError) -> Current {
        let fresh = try Self.load(tls: tlsFiles, tokenPath: tokenPath)
        state.withLockedValue { $0 = fresh }
        return fresh
    }

    private static func load(tls: TLSFiles?, tokenPath: String?) throws(AccessError) -> Current {
        Current(tls: try tls?.makeContext(), tokens: try tokenPath.map { p throws(AccessError) in try TokenTable(contentsOf: p) })
    }
}
