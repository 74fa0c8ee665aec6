// A grpc-swift-2 server that scores with the same ArbiterModels and plugin code as arbiterd, reading the
// same LMDB store, and the same allocation-free path (see Scorer): the peer that shows what Arbiter's own
// protocol buys over gRPC. It loads each model's active version once at start (no hot swap: it exists to be
// measured).
import ArbiterModels
import Gbdt
import LeadGrading
import Ranking
import Routing
import ArbiterStore
import ArgumentParser
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import GRPCProtobuf
import NIOCore
import NIOPosix
import ScorerCodec
import ScorerMessages

@main
enum GRPCPeerMain {
    /// Swift concurrency's jobs run on NIO's event loops (swift-nio's own advice for servers built on it):
    /// a call then stays on the loop that read it, instead of hopping to the global pool and back, which
    /// costs each call two thread wake-ups. Installing the hook must happen on the main thread, before any
    /// task runs, so this entry point is synchronous.
    static func main() {
        let installed = NIOSingletons.unsafeTryInstallSingletonPosixEventLoopGroupAsConcurrencyGlobalExecutor()
        if !installed { print("grpc-peer: Swift concurrency keeps its own pool (the NIO executor hook was unavailable)") }
        Task {
            await GRPCPeer.main()
            exit(0)
        }
        // The main thread serves the main actor (ArgumentParser runs commands there) until the task exits.
        dispatchMain()
    }
}

struct GRPCPeer: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "grpc-peer",
        abstract: "Serve an Arbiter store's models over gRPC (bench/proto/scorer.proto), for benchmarks.")

    @Option(help: "The LMDB store directory (written by arbiter-train).") var store: String
    @Option(help: "Address to listen on, HOST:PORT (IPv4).") var listen = "127.0.0.1:7879"
    @Option(help: "LMDB map size in GiB (as arbiterd's; by default the size the store records).") var mapSizeGib: Int?

    func run() async throws {
        let parts = listen.split(separator: ":")
        guard parts.count == 2, let port = Int(parts[1]), (1...65535).contains(port) else {
            throw ValidationError("--listen must be HOST:PORT, e.g. 127.0.0.1:7879")
        }
        let env = try StoreEnvironment.open(path: store, configuration: StoreConfiguration(mapSize: mapSizeGib.map { $0 << 30 }))
        var registry = ModelRegistry()
        registry.register(kind: LeadGradingLayout.kind, factory: LeadGradingModel.factory)
        registry.register(kind: GbdtLayout.kind, factory: GbdtModel.factory)
        registry.register(kind: RankingLayout.kind, factory: RankingModel.factory)
        registry.register(kind: RoutingLayout.kind, factory: RoutingModel.factory)
        var models: [String: any ScoringModel] = [:]
        for name in try Catalog(environment: env).models() {
            let loaded = try LoadedVersion(environment: env, model: name)
            let model = try registry.load(loaded)
            try model.checkGolden()
            loaded.releaseResidentPages()  // as arbiterd does: large tables cost what requests touch
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

/// The message bytes as the transport delivered them (one copy, which grpc-swift's deserializer API makes
/// every service take), and the reply as written.
struct RawMessage: Sendable {
    var bytes: [UInt8]
}

struct RawDeserializer: MessageDeserializer {
    func deserialize<Bytes: GRPCContiguousBytes>(_ serializedMessageBytes: Bytes) throws -> RawMessage {
        serializedMessageBytes.withUnsafeBytes { RawMessage(bytes: Array($0)) }
    }
}

struct RawSerializer: MessageSerializer {
    func serialize<Bytes: GRPCContiguousBytes>(_ message: RawMessage) throws -> Bytes {
        Bytes(message.bytes)
    }
}

/// Serves scorer.proto with the hand-written codec (ScorerCodec): the same per-request work as arbiterd's
/// connection handler — view the request, copy and check the inputs, score into per-thread scratch, encode
/// the answer once — so that what differs from arbiterd is gRPC and HTTP/2, not the peer's own code.
struct Scorer: RegistrableRPCService {
    struct Entry: Sendable {
        let name: [UInt8]
        let model: any ScoringModel
        let writer: ScoreReplyWriter
    }
    let entries: [Entry]
    /// Inputs and outputs of the request being scored on this thread (models use ThreadScratch.models).
    static let scratch = ThreadLocalBuffer()

    init(models: [String: any ScoringModel]) {
        entries = models.map { name, model in
            var floatIndex = 0, codeIndex = 0
            let columns = model.schema.outputs.map { c -> ReplyColumn in
                switch c.kind {
                case .float32:
                    defer { floatIndex += 1 }
                    return ReplyColumn(name: c.name, kind: .float(index: floatIndex))
                case .code:
                    defer { codeIndex += 1 }
                    return ReplyColumn(name: c.name, kind: .code(index: codeIndex, labels: c.labels.map { Array($0.utf8) }))
                }
            }
            return Entry(name: Array(name.utf8), model: model, writer: ScoreReplyWriter(columns: columns))
        }
    }

    func registerMethods<Transport: ServerTransport>(with router: inout RPCRouter<Transport>) {
        router.registerHandler(forMethod: Arbiter_Bench_V1_Scorer.Method.Ping.descriptor,
                               deserializer: RawDeserializer(), serializer: RawSerializer()) { request, _ in
            // PingReply has PingRequest's one field (bytes payload = 1): the request's bytes are the reply.
            let single = try await ServerRequest(stream: request)
            return StreamingServerResponse(single: ServerResponse(message: single.message, metadata: [:]))
        }
        router.registerHandler(forMethod: Arbiter_Bench_V1_Scorer.Method.Score.descriptor,
                               deserializer: RawDeserializer(), serializer: RawSerializer()) { request, _ in
            let single = try await ServerRequest(stream: request)
            let reply = try score(single.message.bytes)
            return StreamingServerResponse(single: ServerResponse(message: reply, metadata: [:]))
        }
    }

    func entry(named range: Range<Int>, in message: UnsafeRawBufferPointer) -> Entry? {
        let name = UnsafeRawBufferPointer(rebasing: message[range])
        return entries.first { e in e.name.withUnsafeBytes { $0.elementsEqual(name) } }
    }

    func score(_ bytes: [UInt8]) throws -> RawMessage {
        let started = DispatchTime.now().uptimeNanoseconds
        return try bytes.withUnsafeBytes { message -> RawMessage in
            let f: ScoreRequestFields
            do { f = try ScoreRequestFields.parse(message) } catch {
                throw RPCError(code: .invalidArgument, message: "malformed ScoreRequest: \(error)")
            }
            guard let entry = entry(named: f.model, in: message) else {
                throw RPCError(code: .notFound, message: "unknown model '\(String(decoding: message[f.model], as: UTF8.self))'")
            }
            let schema = entry.model.schema
            let n = f.candidateCount, nc = schema.context.count, m = schema.candidate.count
            guard f.contextCount == nc else {
                throw RPCError(code: .invalidArgument, message: "\(f.contextCount) context features, the schema has \(nc)")
            }
            guard f.candidateFeatureCount == m, f.candidateFeatureValues == n * m else {
                throw RPCError(code: .invalidArgument, message: "candidate features do not match the schema's \(m) per candidate")
            }
            // Scratch: context, candidates, ids, scores, float columns, code columns, the model's order, and the
            // gathered rows of an answer in the model's order (ids, scores, float and code columns); each
            // 64-byte aligned.
            func up(_ x: Int) -> Int { (x + 63) & ~63 }
            let fc = schema.floatColumnCount, cc = schema.codeColumnCount
            let ctxBytes = up(4 * nc), candBytes = up(4 * n * m), idBytes = up(8 * n), scoreBytes = up(4 * n)
            let floatBytes = up(4 * n * fc), codeBytes = up(max(1, n * cc)), orderBytes = up(4 * n)
            let rowBytes = idBytes + scoreBytes + floatBytes + codeBytes
            return try Self.scratch.with(bytes: ctxBytes + candBytes + idBytes + scoreBytes + floatBytes + codeBytes + orderBytes + rowBytes) { p in
                var at = 0
                func take<T>(_ bytes: Int, _ type: T.Type, _ count: Int) -> UnsafeMutablePointer<T> {
                    defer { at += bytes }
                    return (p + at).bindMemory(to: T.self, capacity: max(count, 1))
                }
                let ctx = take(ctxBytes, Float.self, nc), cand = take(candBytes, Float.self, n * m), ids = take(idBytes, UInt64.self, n)
                let scores = take(scoreBytes, Float.self, n), floats = take(floatBytes, Float.self, n * fc)
                let codes = take(codeBytes, UInt8.self, n * cc), order = take(orderBytes, Int32.self, n)
                let rowIDs = take(idBytes, UInt64.self, n), rowScores = take(scoreBytes, Float.self, n)
                let rowFloats = take(floatBytes, Float.self, n * fc), rowCodes = take(codeBytes, UInt8.self, n * cc)
                if nc > 0 { UnsafeMutableRawPointer(ctx).copyMemory(from: message.baseAddress! + f.context.lowerBound, byteCount: 4 * nc) }
                if n * m > 0 { UnsafeMutableRawPointer(cand).copyMemory(from: message.baseAddress! + f.candidateFeatures.lowerBound, byteCount: 4 * n * m) }
                f.decodeIDs(message, into: ids)
                let context = UnsafeBufferPointer(start: ctx, count: nc), candidates = UnsafeBufferPointer(start: cand, count: n * m)
                if let invalid = schema.firstInvalidValue(context: context, candidates: candidates, candidateCount: n) {
                    throw RPCError(code: .invalidArgument, message: invalid)
                }
                let answer: RowOrder
                do throws(ScoringError) {
                    answer = try entry.model.score(ScoreBatch(context: context, candidates: candidates, candidateCount: n,
                                                              ids: UnsafeBufferPointer(start: ids, count: n), routingKey: f.routingKey,
                                                              subject: f.subject, topK: f.topK),
                                                   into: ScoreOutput(scores: scores, floatColumns: floats, codeColumns: codes,
                                                                     candidateCount: n, order: order))
                } catch {
                    throw RPCError(code: error.kind == .internalError ? .internalError : .invalidArgument, message: error.message)
                }
                // The rows answered: every candidate in request order, or the model's own order and cut, gathered
                // as arbiterd gathers them.
                var rows = n
                var outIDs = ids, outScores = scores, outFloats = floats, outCodes = codes
                var sorted = false
                if case .ranked(let count) = answer {
                    guard count >= 0, count <= n, (0..<count).allSatisfy({ order[$0] >= 0 && Int(order[$0]) < n }) else {
                        throw RPCError(code: .internalError, message: "the model answered an order outside its \(n) candidates")
                    }
                    rows = count
                    sorted = true
                    for r in 0..<rows {
                        let i = Int(order[r])
                        rowIDs[r] = ids[i]
                        rowScores[r] = scores[i]
                        for c in 0..<fc { rowFloats[c * rows + r] = floats[c * n + i] }
                        for c in 0..<cc { rowCodes[c * rows + r] = codes[c * n + i] }
                    }
                    outIDs = rowIDs; outScores = rowScores; outFloats = rowFloats; outCodes = rowCodes
                }
                let micros = UInt32(clamping: (DispatchTime.now().uptimeNanoseconds - started) / 1000)
                let reply = [UInt8](unsafeUninitializedCapacity: entry.writer.maxSize(candidates: rows)) { out, count in
                    count = entry.writer.write(into: out.baseAddress!, version: entry.model.version.meta.version, candidates: rows,
                                               scores: outScores, floatColumns: outFloats, codeColumns: outCodes, computeMicros: micros,
                                               ids: outIDs, sorted: sorted)
                }
                return RawMessage(bytes: reply)
            }
        }
    }
}
