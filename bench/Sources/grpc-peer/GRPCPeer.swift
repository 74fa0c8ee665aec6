// A grpc-swift-2 server that scores with the same ArbiterModels and plugin code as arbiterd, reading the
// same LMDB store: the peer that shows what Arbiter's own protocol buys over gRPC. It loads each model's
// active version once at start (no hot swap: it exists to be measured).
import ArbiterModels
import Gbdt
import LeadGrading
import ArbiterStore
import ArgumentParser
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import GRPCProtobuf
import ScorerMessages

@main
struct GRPCPeer: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "grpc-peer",
        abstract: "Serve an Arbiter store's models over gRPC (bench/proto/scorer.proto), for benchmarks.")

    @Option(help: "The LMDB store directory (written by arbiter-train).") var store: String
    @Option(help: "Address to listen on, HOST:PORT (IPv4).") var listen = "127.0.0.1:7879"
    @Option(help: "LMDB map size in GiB (as arbiterd's).") var mapSizeGib = 32

    func run() async throws {
        let parts = listen.split(separator: ":")
        guard parts.count == 2, let port = Int(parts[1]), (1...65535).contains(port) else {
            throw ValidationError("--listen must be HOST:PORT, e.g. 127.0.0.1:7879")
        }
        let env = try StoreEnvironment.open(path: store, configuration: StoreConfiguration(mapSize: mapSizeGib << 30))
        var registry = ModelRegistry()
        registry.register(kind: LeadGradingLayout.kind, factory: LeadGradingModel.factory)
        registry.register(kind: GbdtLayout.kind, factory: GbdtModel.factory)
        var models: [String: any ScoringModel] = [:]
        for name in try Catalog(environment: env).models() {
            let loaded = try LoadedVersion(environment: env, model: name)
            let model = try registry.load(loaded)
            try model.checkGolden()
            models[name] = model
            print("grpc-peer: loaded \(name) v\(model.version.meta.version)")
        }
        guard !models.isEmpty else { throw ValidationError("the store at \(store) has no active model") }
        let server = GRPCServer(
            transport: .http2NIOPosix(address: .ipv4(host: String(parts[0]), port: port), transportSecurity: .plaintext),
            services: [Scorer(models: models)])
        try await withThrowingDiscardingTaskGroup { group in
            group.addTask { try await server.serve() }
            if let address = try await server.listeningAddress {
                print("grpc-peer: listening on \(address)")
            }
        }
    }
}

struct Scorer: Arbiter_Bench_V1_Scorer.SimpleServiceProtocol {
    let models: [String: any ScoringModel]

    func ping(request: Arbiter_Bench_V1_PingRequest, context: ServerContext) async throws -> Arbiter_Bench_V1_PingReply {
        var reply = Arbiter_Bench_V1_PingReply()
        reply.payload = request.payload
        return reply
    }

    func score(request: Arbiter_Bench_V1_ScoreRequest, context: ServerContext) async throws -> Arbiter_Bench_V1_ScoreReply {
        let started = DispatchTime.now().uptimeNanoseconds
        guard let model = models[request.model] else {
            throw RPCError(code: .notFound, message: "unknown model '\(request.model)'")
        }
        let schema = model.schema
        let n = request.candidateIds.count
        guard request.context.count == schema.context.count else {
            throw RPCError(code: .invalidArgument, message: "\(request.context.count) context features, the schema has \(schema.context.count)")
        }
        guard Int(request.candidateFeatureCount) == schema.candidate.count,
              request.candidateFeatures.count == n * schema.candidate.count else {
            throw RPCError(code: .invalidArgument, message: "candidate features do not match the schema's \(schema.candidate.count) per candidate")
        }
        let invalid = request.context.withUnsafeBufferPointer { ctx in
            request.candidateFeatures.withUnsafeBufferPointer { cand in
                schema.firstInvalidValue(context: ctx, candidates: cand, candidateCount: n)
            }
        }
        if let invalid { throw RPCError(code: .invalidArgument, message: invalid) }
        let r = model.score(context: request.context, candidates: request.candidateFeatures, candidateCount: n)
        var reply = Arbiter_Bench_V1_ScoreReply()
        reply.version = model.version.meta.version
        reply.scores = r.scores
        var floatIndex = 0, codeIndex = 0
        for c in schema.outputs {
            var column = Arbiter_Bench_V1_Column()
            column.name = c.name
            switch c.kind {
            case .float32:
                column.values = Array(r.floatColumns[floatIndex * n..<(floatIndex + 1) * n])
                floatIndex += 1
            case .code:
                column.labels = r.codeColumns[codeIndex * n..<(codeIndex + 1) * n].map { c.labels[Int($0)] }
                codeIndex += 1
            }
            reply.columns.append(column)
        }
        reply.computeMicros = UInt32((DispatchTime.now().uptimeNanoseconds - started) / 1000)
        return reply
    }
}
