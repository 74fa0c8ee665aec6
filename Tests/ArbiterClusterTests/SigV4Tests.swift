import Foundation
import Testing
@testable import ArbiterCluster

/// AWS's published Signature Version 4 test suite (the `aws-sig-v4-test-suite` files: each case's request and
/// the `Authorization` header AWS computed for it, with credentials `AKIDEXAMPLE` at 2015-08-30T12:36:00Z in
/// `us-east-1` for the service `service`), and the S3 example of AWS's S3 API reference. The path-normalizing
/// cases of the suite are left out: S3 signs paths as sent, and so does `SigV4Signer`.
@Suite struct SigV4Tests {
    static let suiteSigner = SigV4Signer(
        credentials: S3Credentials(accessKeyID: "AKIDEXAMPLE", secretAccessKey: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"),
        region: "us-east-1", service: "service")
    static let date = "20150830T123600Z"
    static let host = ("Host", "example.amazonaws.com")
    static let xDate = ("X-Amz-Date", date)

    struct Case: Sendable, CustomStringConvertible {
        var name: String
        var method: String
        var path: String
        var query: [(String, String)] = []
        var headers: [(String, String)]
        var body = ""
        var signedHeaders: String
        var signature: String
        var description: String { name }
    }

    static let cases: [Case] = [
        Case(name: "get-vanilla-query-order-key-case", method: "GET", path: "/", query: [("Param2", "value2"), ("Param1", "value1")],
             headers: [host, xDate], signedHeaders: "host;x-amz-date",
             signature: "b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500"),
        Case(name: "get-vanilla-query-order-key", method: "GET", path: "/", query: [("Param1", "value2"), ("Param1", "Value1")],
             headers: [host, xDate], signedHeaders: "host;x-amz-date",
             signature: "eedbc4e291e521cf13422ffca22be7d2eb8146eecf653089df300a15b2382bd1"),
        Case(name: "get-unreserved", method: "GET", path: "/-._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz",
             headers: [host, xDate], signedHeaders: "host;x-amz-date",
             signature: "07ef7494c76fa4850883e2b006601f940f8a34d404d0cfa977f52a65bbf5f24f"),
        Case(name: "get-utf8", method: "GET", path: "/\u{1234}", headers: [host, xDate], signedHeaders: "host;x-amz-date",
             signature: "8318018e0b0f223aa2bbf98705b62bb787dc9c0e678f255a891fd03141be5d85"),
        Case(name: "get-vanilla-empty-query-key", method: "GET", path: "/", query: [("Param1", "value1")],
             headers: [host, xDate], signedHeaders: "host;x-amz-date",
             signature: "a67d582fa61cc504c4bae71f336f98b97f1ea3c7a6bfe1b6e45aec72011b9aeb"),
        Case(name: "get-vanilla-query-unreserved", method: "GET", path: "/",
             query: [("-._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz",
                      "-._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")],
             headers: [host, xDate], signedHeaders: "host;x-amz-date",
             signature: "9c3e54bfcdf0b19771a7f523ee5669cdf59bc7cc0884027167c21bb143a40197"),
        Case(name: "get-vanilla-utf8-query", method: "GET", path: "/", query: [("\u{1234}", "bar")],
             headers: [host, xDate], signedHeaders: "host;x-amz-date",
             signature: "2cdec8eed098649ff3a119c94853b13c643bcf08f8b0a1d91e12c9027818dd04"),
        Case(name: "get-header-value-trim", method: "GET", path: "/",
             headers: [host, ("My-Header1", " value1"), ("My-Header2", " \"a   b   c\""), xDate],
             signedHeaders: "host;my-header1;my-header2;x-amz-date",
             signature: "acc3ed3afb60bb290fc8d2dd0098b9911fcaa05412b367055dee359757a9c736"),
        Case(name: "get-header-key-duplicate", method: "GET", path: "/",
             headers: [host, ("My-Header1", "value2"), ("My-Header1", "value2"), ("My-Header1", "value1"), xDate],
             signedHeaders: "host;my-header1;x-amz-date",
             signature: "c9d5ea9f3f72853aea855b47ea873832890dbdd183b4468f858259531a5138ea"),
        Case(name: "post-vanilla", method: "POST", path: "/", headers: [host, xDate], signedHeaders: "host;x-amz-date",
             signature: "5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b"),
        Case(name: "post-header-key-sort", method: "POST", path: "/", headers: [host, ("My-Header1", "value1"), xDate],
             signedHeaders: "host;my-header1;x-amz-date",
             signature: "c5410059b04c1ee005303aed430f6e6645f61f4dc9e1461ec8f8916fdf18852c"),
        Case(name: "post-header-value-case", method: "POST", path: "/", headers: [host, ("My-Header1", "VALUE1"), xDate],
             signedHeaders: "host;my-header1;x-amz-date",
             signature: "cdbc9802e29d2942e5e10b5bccfdd67c5f22c7c4e8ae67b53629efa58b974b7d"),
        Case(name: "post-x-www-form-urlencoded", method: "POST", path: "/",
             headers: [("Content-Type", "application/x-www-form-urlencoded"), host, xDate], body: "Param1=value1",
             signedHeaders: "content-type;host;x-amz-date",
             signature: "ff11897932ad3f4e8b18135d722051e5ac45fc38421b1da7b9d196a0fe09473a"),
        Case(name: "post-sts-header-before", method: "POST", path: "/",
             headers: [host, xDate, ("X-Amz-Security-Token", "AQoDYXdzEPT//////////wEXAMPLEtc764bNrC9SAPBSM22wDOk4x4HIZ8j4FZTwdQWLWsKWHGBuFqwAeMicRXmxfpSPfIeoIYRqTflfKD8YUuwthAx7mSEI/qkPpKPi/kMcGdQrmGdeehM4IC1NtBmUpp2wUE8phUZampKsburEDy0KPkyQDYwT7WZ0wq5VSXDvp75YU9HFvlRd8Tx6q6fE8YQcHNVXAkiY9q6d+xo0rKwT38xVqr7ZD0u0iPPkUL64lIZbqBAz+scqKmlzm8FDrypNC9Yjc8fPOLn9FX9KSYvKTr4rvx3iSIlTJabIQwj2ICCR/oLxBA==")],
             signedHeaders: "host;x-amz-date;x-amz-security-token",
             signature: "85d96828115b5dc0cfc3bd16ad9e210dd772bbebba041836c64533a82be05ead"),
    ]

    @Test(arguments: cases)
    func publishedSuite(_ c: Case) {
        let request = SigV4Signer.Request(method: c.method, path: c.path, query: c.query.map { (name: $0.0, value: $0.1) },
                                          headers: c.headers.map { (name: $0.0, value: $0.1) },
                                          payloadHash: Digests.sha256Hex(Data(c.body.utf8)))
        let expected = "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=\(c.signedHeaders), Signature=\(c.signature)"
        #expect(Self.suiteSigner.authorization(for: request, amzDate: Self.date) == expected)
    }

    /// The suite's intermediate files for two cases: the canonical request and the string to sign.
    @Test func canonicalRequestAndStringToSign() {
        let r = SigV4Signer.Request(method: "GET", path: "/", query: [(name: "Param1", value: "value2"), (name: "Param1", value: "Value1")],
                                    headers: [(name: "Host", value: "example.amazonaws.com"), (name: "X-Amz-Date", value: Self.date)],
                                    payloadHash: SigV4Signer.emptyPayloadHash)
        let (creq, _) = Self.suiteSigner.canonicalRequest(r)
        #expect(creq == "GET\n/\nParam1=Value1&Param1=value2\nhost:example.amazonaws.com\nx-amz-date:20150830T123600Z\n\nhost;x-amz-date\ne3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        #expect(Self.suiteSigner.stringToSign(canonicalRequest: creq, amzDate: Self.date)
                == "AWS4-HMAC-SHA256\n20150830T123600Z\n20150830/us-east-1/service/aws4_request\n704b4cef673542d84cdff252633f065e8daeba5f168b77116f8b1bcaf3d38f89")

        let form = SigV4Signer.Request(method: "POST", path: "/",
                                       headers: [(name: "Content-Type", value: "application/x-www-form-urlencoded"),
                                                 (name: "Host", value: "example.amazonaws.com"), (name: "X-Amz-Date", value: Self.date)],
                                       payloadHash: Digests.sha256Hex(Data("Param1=value1".utf8)))
        #expect(Self.suiteSigner.canonicalRequest(form).text
                == "POST\n/\n\ncontent-type:application/x-www-form-urlencoded\nhost:example.amazonaws.com\nx-amz-date:20150830T123600Z\n\ncontent-type;host;x-amz-date\n9095672bbd1f56dfc5b65f3e153adc8731a4a654192329106275f4c7b24d0b6e")
    }

    /// The GET-object example of AWS's S3 reference ("Signature Calculations for the Authorization Header"):
    /// bucket `examplebucket`, key `test.txt`, a Range header, signed as S3 in us-east-1 on 2013-05-24.
    @Test func s3GetObjectExample() {
        let signer = SigV4Signer(credentials: S3Credentials(accessKeyID: "AKIAIOSFODNN7EXAMPLE",
                                                            secretAccessKey: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"),
                                 region: "us-east-1", service: "s3")
        let r = SigV4Signer.Request(method: "GET", path: "/test.txt",
                                    headers: [(name: "Host", value: "examplebucket.s3.amazonaws.com"), (name: "Range", value: "bytes=0-9"),
                                              (name: "x-amz-content-sha256", value: SigV4Signer.emptyPayloadHash),
                                              (name: "x-amz-date", value: "20130524T000000Z")],
                                    payloadHash: SigV4Signer.emptyPayloadHash)
        #expect(signer.authorization(for: r, amzDate: "20130524T000000Z")
                == "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41")
    }

    @Test func amzDateAndEncoding() {
        #expect(SigV4Signer.amzDate(Date(timeIntervalSince1970: 1_440_938_160)) == "20150830T123600Z")
        #expect(SigV4Signer.uriEncode("models/a b/ü+x", keepSlash: true) == "models/a%20b/%C3%BC%2Bx")
        #expect(SigV4Signer.uriEncode("a/b", keepSlash: false) == "a%2Fb")
    }

    @Test func credentialsFromEnvironment() throws {
        #expect(throws: ClusterError.self) { try S3Credentials.fromEnvironment([:]) }
        #expect(throws: ClusterError.self) { try S3Credentials.fromEnvironment(["AWS_ACCESS_KEY_ID": "a", "AWS_SECRET_ACCESS_KEY": ""]) }
        let c = try S3Credentials.fromEnvironment(["AWS_ACCESS_KEY_ID": "a", "AWS_SECRET_ACCESS_KEY": "b", "AWS_SESSION_TOKEN": "t"])
        #expect(c == S3Credentials(accessKeyID: "a", secretAccessKey: "b", sessionToken: "t"))
    }
}
