import ArbiterTestSupport
import Foundation
import Testing
import Yams

/// The Kubernetes manifests in deploy/ (no Kubernetes runs here): they parse, hold what a deployment needs,
/// and agree with each other and with arbiterd — every flag they pass is one arbiterd takes, every port and
/// variable they name is defined.
@Suite struct DeployManifestTests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    static let deploy = root.appendingPathComponent("deploy")

    static func documents() throws -> [[String: Any]] {
        let kustomization = try #require(try Yams.load(yaml: String(contentsOf: deploy.appendingPathComponent("kustomization.yaml"), encoding: .utf8)) as? [String: Any])
        let files = try #require(kustomization["resources"] as? [String])
        var docs: [[String: Any]] = []
        for file in files {
            let text = try String(contentsOf: deploy.appendingPathComponent(file), encoding: .utf8)
            for doc in try Yams.load_all(yaml: text) {
                docs.append(try #require(doc as? [String: Any], "\(file) holds a document that is not a mapping"))
            }
        }
        return docs
    }

    static func arbiterdHelp() throws -> String {
        let p = Process()
        p.executableURL = OtherProcess.binDir.appendingPathComponent("arbiterd")
        p.arguments = ["--help"]
        let pipe = Pipe()
        p.standardOutput = pipe
        p.standardError = pipe
        try p.run()
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return String(decoding: data, as: UTF8.self)
    }

    @Test func manifestsParseAndAgreeWithEachOtherAndWithArbiterd() throws {
        let docs = try Self.documents()
        func of(_ kind: String) -> [[String: Any]] { docs.filter { $0["kind"] as? String == kind } }
        #expect(of("StatefulSet").count == 1 && of("ConfigMap").count == 1 && of("Secret").count == 1 && of("Service").count == 2)
        for d in docs {
            #expect(d["apiVersion"] is String && (d["metadata"] as? [String: Any])?["name"] is String, "\(d)")
        }

        let set = try #require(of("StatefulSet").first)
        let spec = try #require(set["spec"] as? [String: Any])
        let template = try #require((spec["template"] as? [String: Any])?["spec"] as? [String: Any])
        let container = try #require((template["containers"] as? [[String: Any]])?.first)
        let args = try #require(container["args"] as? [String])
        let ports = try #require(container["ports"] as? [[String: Any]])
        let portByName = Dictionary(uniqueKeysWithValues: ports.map { ($0["name"] as! String, $0["containerPort"] as! Int) })

        // Every flag is one arbiterd takes; the ones a replica needs are there.
        let help = try Self.arbiterdHelp()
        let flags = args.map { String($0.split(separator: "=").first!) }
        for flag in flags { #expect(help.contains(flag + " "), "arbiterd --help does not list \(flag)") }
        for needed in ["--store", "--listen", "--metrics-listen", "--cluster-etcd", "--cluster-s3", "--cluster-bucket", "--cluster-name", "--cluster-advertise"] {
            #expect(flags.contains(needed), "the StatefulSet does not pass \(needed)")
        }
        func value(_ flag: String) -> String? { args.first { $0.hasPrefix(flag + "=") }.map { String($0.dropFirst(flag.count + 1)) } }
        #expect(value("--listen")?.hasSuffix(":\(portByName["scoring"] ?? -1)") == true)
        #expect(value("--metrics-listen")?.hasSuffix(":\(portByName["admin"] ?? -1)") == true)
        #expect(value("--cluster-advertise")?.hasSuffix(":\(portByName["scoring"] ?? -1)") == true)

        // Readiness on /ready and liveness on /live, at the admin port.
        let readiness = try #require((container["readinessProbe"] as? [String: Any])?["httpGet"] as? [String: Any])
        #expect(readiness["path"] as? String == "/ready" && readiness["port"] as? String == "admin")
        let liveness = try #require((container["livenessProbe"] as? [String: Any])?["httpGet"] as? [String: Any])
        #expect(liveness["path"] as? String == "/live" && liveness["port"] as? String == "admin")

        // Every $(VAR) in the arguments is defined: in env, or a key of the ConfigMap or Secret it loads.
        let config = try #require(of("ConfigMap").first?["data"] as? [String: Any])
        let secret = try #require(of("Secret").first?["stringData"] as? [String: Any])
        var defined = Set(config.keys).union(secret.keys)
        for e in (container["env"] as? [[String: Any]]) ?? [] { if let n = e["name"] as? String { defined.insert(n) } }
        for arg in args {
            for m in arg.matches(of: /\$\(([A-Z_]+)\)/) { #expect(defined.contains(String(m.output.1)), "\(arg) names an undefined variable") }
        }
        let sources = try #require(container["envFrom"] as? [[String: Any]])
        let configName = (of("ConfigMap").first?["metadata"] as? [String: Any])?["name"] as? String
        let secretName = (of("Secret").first?["metadata"] as? [String: Any])?["name"] as? String
        #expect(sources.contains { ($0["configMapRef"] as? [String: Any])?["name"] as? String == configName })
        #expect(sources.contains { ($0["secretRef"] as? [String: Any])?["name"] as? String == secretName })

        // The store is on a volume claimed per replica and mounted where --store points.
        let mounts = try #require(container["volumeMounts"] as? [[String: Any]])
        let claims = try #require(spec["volumeClaimTemplates"] as? [[String: Any]])
        let claimName = (claims.first?["metadata"] as? [String: Any])?["name"] as? String
        let mount = try #require(mounts.first { $0["name"] as? String == claimName })
        #expect(value("--store")?.hasPrefix((mount["mountPath"] as? String ?? "?") + "/") == true)

        // Services select the pods and point at ports the container names; the headless one is the set's.
        let labels = try #require(((spec["template"] as? [String: Any])?["metadata"] as? [String: Any])?["labels"] as? [String: String])
        for service in of("Service") {
            let s = try #require(service["spec"] as? [String: Any])
            let selector = try #require(s["selector"] as? [String: String])
            #expect(selector.allSatisfy { labels[$0.key] == $0.value })
            for p in (s["ports"] as? [[String: Any]]) ?? [] {
                let target = p["targetPort"] as? String ?? ""
                #expect(portByName[target] != nil, "a Service targets port '\(target)', which the container does not name")
            }
        }
        let headless = of("Service").first { ($0["spec"] as? [String: Any])?["clusterIP"] as? String == "None" }
        #expect((headless?["metadata"] as? [String: Any])?["name"] as? String == spec["serviceName"] as? String)
    }
}
