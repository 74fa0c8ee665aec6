import ArbiterClient
@testable import ArbiterServer
import ArbiterTestSupport
import ArbiterWire
import Foundation
import NIOCore
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// TLS, mutual TLS and tokens against a real server over real sockets: the certificates are test-only
/// (Fixtures/tls/make_certs.sh), the tokens are hashed in a file as an operator writes it.
@Suite struct TLSTests {
    static let tls = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Fixtures/tls").path
    static func file(_ name: String) -> String { "\(tls)/\(name)" }

    /// Tokens and the file that lists their hashes.
    static let scorer = "arb_scorer-\(UUID().uuidString)"
    static let reader = "arb_reader-\(UUID().uuidString)"
    static func hex(_ token: String) -> String { TokenTable.hashHex(token) }
    static func tokenFile(_ lines: [String]) throws -> String {
        let path = NSTemporaryDirectory() + "arbiter-tokens-\(UUID().uuidString)"
        try lines.joined(separator: "\n").write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }
    static let tokens = try! tokenFile(["# test tokens", "\(hex(scorer)) score,info pricing-svc", "\(hex(reader)) info  reporting"])

    static func config(mutual: Bool = true, tokens: String? = TLSTests.tokens) -> ServerConfiguration {
        var c = Fixture.config()
        c.tls = TLSFiles(certificatePath: file("server.pem"), privateKeyPath: file("server.key"),
                         clientCAPath: mutual ? file("ca.pem") : nil)
        c.tokenFile = tokens
        return c
    }

    static func client(port: Int, certificate: String? = "client", ca: String? = "ca.pem", token: String? = scorer,
                       host: String = "127.0.0.1") async throws -> ArbiterClient {
        var c = ClientConfiguration()
        c.connectTimeout = .seconds(10)
        c.tls = ClientTLS(caPath: ca.map(file), certificatePath: certificate.map { file("\($0).pem") },
                          privateKeyPath: certificate.map { file("\($0).key") })
        c.token = token
        return try await ArbiterClient.connect(host: host, port: port, configuration: c)
    }

    /// What a failed connect threw, as text (nil: it connected).
    static func refusal(_ connect: () async throws -> ArbiterClient) async -> (any Error)? {
        do {
            let c = try await connect()
            try? await c.close()
            return nil
        } catch {
            return error
        }
    }

    @Test func mutualTLSRoundTripWithAToken() async throws {
        try await Fixture.withServer(Self.config()) { _, port in
            let c = try await Self.client(port: port)
            _ = try await c.ping()
            #expect(try await c.listModels().map(\.name).contains("leads"))
            let r = try await c.score(Fixture.scoreRequest(n: 5))
            #expect(r.ids.count == 5)
            // And by name: the server's certificate names localhost too.
            let byName = try await Self.client(port: port, host: "localhost")
            _ = try await byName.ping()
            try await byName.close()
            try await c.close()
        }
    }

    @Test func aClientCertificateFromAnotherCAIsRefused() async throws {
        try await Fixture.withServer(Self.config()) { _, port in
            let error = await Self.refusal { try await Self.client(port: port, certificate: "stranger") }
            let e = try #require(error as? ClientError, "connected with a certificate the server's CA did not sign (\(String(describing: error)))")
            guard case .tls(let why) = e else { Issue.record("expected a TLS error, got \(e)"); return }
            #expect(why.contains("CERTIFICATE") || why.contains("certificate") || why.contains("CA"), "\(why)")
            // No certificate at all is refused too; the server still serves a client that has one.
            let none = await Self.refusal { try await Self.client(port: port, certificate: nil) }
            #expect(none != nil)
            let ok = try await Self.client(port: port)
            _ = try await ok.ping()
            try await ok.close()
        }
    }

    @Test func aServerTheClientDoesNotTrustIsRefused() async throws {
        try await Fixture.withServer(Self.config(mutual: false)) { _, port in
            // The system's CAs did not sign the test server's certificate.
            let error = await Self.refusal { try await Self.client(port: port, certificate: nil, ca: nil) }
            guard case .tls(let why)? = error as? ClientError else { Issue.record("expected a TLS error, got \(String(describing: error))"); return }
            #expect(why.lowercased().contains("certificate"), "\(why)")
        }
    }

    @Test func aWrongOrMissingTokenIsRefusedWithUnauthenticated() async throws {
        try await Fixture.withServer(Self.config()) { _, port in
            let wrong = await Self.refusal { try await Self.client(port: port, token: "arb_not-a-token") }
            #expect(wrong as? ClientError == .server(.unauthenticated, "this server requires a token in HELLO, and this one is not known to it"))
            let missing = await Self.refusal { try await Self.client(port: port, token: nil) }
            #expect(missing as? ClientError == .server(.unauthenticated, "this server requires a token in HELLO; none was sent"))
        }
    }

    @Test func aTokenIsRefusedOverPlainTCPTooAndTheConnectionIsClosed() async throws {
        var config = Fixture.config()
        config.tokenFile = Self.tokens
        try await Fixture.withServer(config) { _, port in
            let c = try RawConnection(port: port)
            // Before HELLO, only PING: the token comes with HELLO.
            c.send(Frame(requestID: 2, message: .listModels))
            _ = try c.expectError(.helloRequired, requestID: 2)
            c.send(Frame(requestID: 3, message: .hello(Hello(clientName: "t", token: "arb_wrong"))))
            _ = try c.expectError(.unauthenticated, requestID: 3)
            #expect(try c.isClosedByServer())
            let ok = try RawConnection(port: port)
            ok.send(Frame(requestID: 1, message: .hello(Hello(clientName: "t", token: Self.scorer))))
            guard case .helloOK = try #require(try ok.readFrame()).message else { Issue.record("no HELLO_OK"); return }
        }
    }

    @Test func eachRequestNeedsItsTokensRight() async throws {
        try await Fixture.withServer(Self.config()) { _, port in
            let c = try await Self.client(port: port, token: Self.reader)
            #expect(try await c.listModels().map(\.name).contains("leads"))
            _ = try await c.modelInfo("leads")
            do {
                _ = try await c.score(Fixture.scoreRequest(n: 2))
                Issue.record("a token with only 'info' scored")
            } catch let e as ClientError {
                #expect(e == .server(.forbidden, "the token 'reporting' may not SCORE (its rights: info)"))
            }
            // FORBIDDEN keeps the connection.
            _ = try await c.ping()
            #expect(try await c.listModels().count >= 1)
            try await c.close()
        }
    }

    @Test func aPlainClientAtATLSServerGetsAClearError() async throws {
        try await Fixture.withServer(Self.config(mutual: false)) { _, port in
            var c = ClientConfiguration()
            c.token = Self.scorer
            c.connectTimeout = .seconds(5)
            let error = await Self.refusal { try await ArbiterClient.connect(host: "127.0.0.1", port: port, configuration: c) }
            #expect(error as? ClientError == .tls("the server speaks TLS and this connection does not: connect with TLS"),
                    "\(String(describing: error))")
            let ok = try await Self.client(port: port, certificate: nil)
            _ = try await ok.ping()
            try await ok.close()
        }
    }

    @Test func credentialsReloadForNewConnectionsAndABadFileChangesNothing() async throws {
        let path = try Self.tokenFile(["\(Self.hex(Self.scorer)) score pricing-svc"])
        try await Fixture.withServer(Self.config(tokens: path)) { server, port in
            let before = try await Self.client(port: port)
            let fresh = "arb_fresh-\(UUID().uuidString)"
            #expect(await Self.refusal { try await Self.client(port: port, token: fresh) } != nil)
            try "\(Self.hex(fresh)) admin ops".write(toFile: path, atomically: true, encoding: .utf8)
            #expect(try server.reloadCredentials() == "TLS, 1 token")
            let after = try await Self.client(port: port, token: fresh)
            _ = try await after.score(Fixture.scoreRequest(n: 1))  // admin may do everything
            // The old token is gone for new connections; the connection it opened keeps working.
            #expect(await Self.refusal { try await Self.client(port: port) } as? ClientError
                    == .server(.unauthenticated, "this server requires a token in HELLO, and this one is not known to it"))
            _ = try await before.score(Fixture.scoreRequest(n: 1))
            // A broken file is refused and the tokens in force stay.
            try "not a line of the token file".write(toFile: path, atomically: true, encoding: .utf8)
            #expect(throws: AccessError.self) { try server.reloadCredentials() }
            let still = try await Self.client(port: port, token: fresh)
            _ = try await still.ping()
            for c in [before, after, still] { try await c.close() }
        }
    }

    @Test func aServerWithBadCredentialFilesDoesNotStart() throws {
        var c = Self.config()
        c.tls?.privateKeyPath = Self.file("missing.key")
        #expect { try ArbiterServer(configuration: c, registry: Fixture.registry) } throws: { "\($0)".contains("missing.key") }
        c = Self.config()
        c.tls?.certificatePath = Self.file("server.key")  // a key where the certificate should be
        #expect { try ArbiterServer(configuration: c, registry: Fixture.registry) } throws: { "\($0)".contains("server.key") }
        c = Self.config(tokens: "/nonexistent/tokens")
        #expect { try ArbiterServer(configuration: c, registry: Fixture.registry) } throws: { "\($0)".contains("/nonexistent/tokens") }
    }

    @Test func theTokenFileIsCheckedLineByLine() throws {
        let h = Self.hex("t")
        let cases: [(String, String)] = [
            ("\(h) score", "line 1: expected 'SHA256-HEX RIGHTS NAME', found 2 fields"),
            ("abc score svc", "line 1: 'abc' is not a SHA-256 hash"),
            ("# header\n\(h) score,fly svc", "line 2: unknown right 'fly'"),
            ("\(h) score svc\n\(h) info other", "line 2: this hash is listed twice"),
            ("\(h) score svc\n\(Self.hex("u")) info svc", "line 2: the name 'svc' is listed twice"),
            ("\(h) score sv/c", "line 1: the name 'sv/c' must be"),
            ("# nothing\n\n", "lists no token"),
        ]
        for (text, expected) in cases {
            #expect { try TokenTable(text: text) } throws: { "\($0)".contains(expected) }
        }
        let table = try TokenTable(text: "\(h)\tscore,info  svc   # trailing comment\n")
        #expect(table.entry(for: "t")?.rights.description == "score,info")
        #expect(table.entry(for: "T") == nil)
        let made = TokenTable.newToken()
        #expect(made.token.hasPrefix("arb_") && made.token.count == 47)
        #expect(try TokenTable(text: "\(made.hashHex) admin ops").entry(for: made.token)?.name == "ops")
    }

    /// As an operator does it: `arbiter token` appends a line, arbiterd serves mutual TLS with that file,
    /// the CLI connects with the CA, its certificate and the token; a token added later works after SIGHUP,
    /// and a file broken later is refused by SIGHUP while the server keeps the tokens it had.
    @Test func theOperatorsWayWithTheExecutables() async throws {
        let cli = OtherProcess.binDir.appendingPathComponent("arbiter").path
        let tokens = NSTemporaryDirectory() + "arbiter-tokens-\(UUID().uuidString)"
        let first = try await offPool { try OtherProcess.run(cli, ["token", "--rights", "score,info", "--name", "svc-a", "--append-to", tokens]) }
        let tokenA = first.trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(tokenA.hasPrefix("arb_"))
        let attrs = try FileManager.default.attributesOfItem(atPath: tokens)
        #expect((attrs[.posixPermissions] as? Int) == 0o600)
        let (p, log) = try ArbiterdProcess.start(["--tls-cert", Self.file("server.pem"), "--tls-key", Self.file("server.key"),
                                                  "--tls-client-ca", Self.file("ca.pem"), "--tokens", tokens])
        defer { if p.isRunning { kill(p.processIdentifier, SIGKILL) } }
        let port = try await ArbiterdProcess.port(p, log)
        #expect(log.withLockedValue { $0.contains("(TLS, 1 token)") })
        let tokenFileA = NSTemporaryDirectory() + "arbiter-token-\(UUID().uuidString)"
        try tokenA.write(toFile: tokenFileA, atomically: true, encoding: .utf8)
        let tls = ["--host", "127.0.0.1:\(port)", "--tls-ca", Self.file("ca.pem"), "--tls-cert", Self.file("client.pem"), "--tls-key", Self.file("client.key")]
        let models = try await offPool { try OtherProcess.capture(cli, ["models"] + tls + ["--token-file", tokenFileA]) }
        #expect(models.status == 0 && models.output.contains("leads"), "\(models.output)")
        // No token: refused, and the CLI says how to give one.
        let none = try await offPool { try OtherProcess.capture(cli, ["models"] + tls) }
        #expect(none.status != 0 && none.output.contains("UNAUTHENTICATED") && none.output.contains("--token-file"), "\(none.output)")
        // Plain TCP at a TLS server: the CLI says the server may require TLS.
        let plain = try await offPool { try OtherProcess.capture(cli, ["models", "--host", "127.0.0.1:\(port)", "--token-file", tokenFileA]) }
        #expect(plain.status != 0 && plain.output.contains("TLS"), "\(plain.output)")
        // A token added to the file works once arbiterd has reread it.
        let second = try await offPool { try OtherProcess.run(cli, ["token", "--rights", "info", "--name", "svc-b", "--append-to", tokens]) }
        let tokenFileB = NSTemporaryDirectory() + "arbiter-token-\(UUID().uuidString)"
        try second.trimmingCharacters(in: .whitespacesAndNewlines).write(toFile: tokenFileB, atomically: true, encoding: .utf8)
        kill(p.processIdentifier, SIGHUP)
        try await waitUntil("arbiterd rereads its credentials", seconds: 10) { log.withLockedValue { $0.contains("credentials reloaded; new connections get TLS, 2 tokens") } }
        let info = try await offPool { try OtherProcess.capture(cli, ["models"] + tls + ["--token-file", tokenFileB]) }
        #expect(info.status == 0, "\(info.output)")
        // A broken file: SIGHUP says why and keeps both tokens.
        try "\(String(repeating: "ab", count: 32)) score,scroe svc-c\n".write(toFile: tokens, atomically: true, encoding: .utf8)
        kill(p.processIdentifier, SIGHUP)
        try await waitUntil("arbiterd refuses the broken file", seconds: 10) { log.withLockedValue { $0.contains("line 1: unknown right 'scroe'") } }
        let still = try await offPool { try OtherProcess.capture(cli, ["models"] + tls + ["--token-file", tokenFileB]) }
        #expect(still.status == 0, "\(still.output)")
        // SIGTERM over TLS: a connected client is told (SHUTTING_DOWN, then close_notify and a half-close),
        // and the process ends within its grace period.
        let client = try await Self.client(port: port, token: second.trimmingCharacters(in: .whitespacesAndNewlines))
        _ = try await client.ping()
        kill(p.processIdentifier, SIGTERM)
        try await waitUntil("arbiterd exits", seconds: 15) { !p.isRunning }
        #expect(p.terminationStatus == 0)
        await #expect(throws: ClientError.self) { _ = try await client.ping() }
        try? await client.close()
    }
}
