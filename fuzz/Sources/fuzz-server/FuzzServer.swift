import FuzzDriver
import ArbiterModels
@testable import ArbiterServer
import ArbiterStore
import ArbiterWire
import Foundation
import Logging
import NIOCore
import NIOEmbedded

/// A whole connection, fed arbitrary bytes: the server's own handler (framing, HELLO, limits, zstd,
/// SCORE through a real loaded model, errors, the connection's state machine) on an embedded channel. The
/// first byte sets the size of the pieces the rest arrives in, so that frames split across reads are
/// covered. It may answer anything and close; it may not crash.
final class EchoModel: ScoringModel, Sendable {
    static let kind = "fuzz-echo"
    static let schema = FeatureSchema(context: [.numeric("a"), .numeric("b")], candidate: [.numeric("x"), .categorical("c", 4)],
                                      outputs: [OutputColumn(name: "grade", kind: .code, labels: ["A", "B"])])
    let version: LoadedVersion
    let manifest: ModelManifest

    init(version: LoadedVersion, manifest: ModelManifest) {
        self.version = version
        self.manifest = manifest
    }

    func score(_ batch: ScoreBatch, into output: ScoreOutput) -> RowOrder {
        for i in 0..<batch.candidateCount {
            output.scores[i] = batch.candidates[2 * i] + batch.context[0]
            output.codeColumn(0)[i] = output.scores[i] > 0 ? 1 : 0
        }
        return .requestOrder
    }
}

/// The model `leads` (the name in the protocol's vectors, so that their SCOREs reach scoring), loaded
/// once from a store made for the run.
let table: ModelTable = {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("arbiter-fuzz-\(getpid())").path
    do {
        let env = try StoreEnvironment.open(path: dir, configuration: StoreConfiguration(mapSize: 16 << 20, create: true))
        let golden = GoldenCase(context: [1, 0], candidates: [0.5, 1], candidateCount: 1, scores: [1.5], floatColumns: [], codeColumns: [1])
        let manifest = ModelManifest(kind: EchoModel.kind, schema: EchoModel.schema, parameters: [:], golden: [golden])
        try Catalog(environment: env).publish(model: "leads", kind: EchoModel.kind, manifest: manifest.encoded(), tensors: [], metrics: [:])
        var registry = ModelRegistry()
        registry.register(kind: EchoModel.kind) { v, m in EchoModel(version: v, manifest: m) }
        let model = try registry.load(try LoadedVersion(environment: env, model: "leads"))
        try model.checkGolden()
        var t = ModelTable()
        let m = ServingModel(name: "leads", model: model)
        t.models["leads"] = ServedModel(name: "leads", active: m, loaded: [m], split: nil, shadow: nil, latest: m.version)
        return t
    } catch {
        fatalError("fuzz-server setup: \(error)")
    }
}()

let config: ServerConfiguration = {
    var c = ServerConfiguration(storePath: "/unused")
    c.limits = Limits(maxFrameBytes: 64 << 10, maxCandidates: 256, maxInFlight: 16)
    c.offloadCandidates = 0
    c.memoryBudgetBytes = 1 << 30
    return c
}()

/// Half the inputs meet a server that requires a token (bit 7 of the first byte): the token of the vector
/// `hello_token` may score (not read model info); the seeds send it, or a HELLO without one.
let tokens = try! TokenTable(text: "\(TokenTable.hashHex("arb_3q2-7wEAAAAb8ZQ1sTjLrXy0vH4mKpNc")) score fuzz")

let logger: Logger = {
    var l = Logger(label: "fuzz")
    l.logLevel = .critical
    return l
}()

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzServer(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    guard size > 0 else { return 0 }
    let piece = [1, 7, 64, 512, 4_096, Int.max][Int(data[0] & 0x7f) % 6]
    let channel = EmbeddedChannel()
    let handler = ConnectionHandler(config: config, loopTable: LoopTable(loop: channel.eventLoop, table: table), pool: nil, logger: logger,
                                    tokens: data[0] & 0x80 != 0 ? tokens : nil)
    do {
        try channel.pipeline.syncOperations.addHandler(handler)
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        var offset = 1
        while offset < size, channel.isActive {
            let n = min(piece, size - offset)
            try channel.writeInbound(ByteBuffer(bytes: UnsafeBufferPointer(start: data + offset, count: n)))
            offset += n
            while let _ = try channel.readOutbound(as: ByteBuffer.self) {}
        }
        handler.tick(now: ServerClock.system.nanoseconds())
        handler.shutdown(now: ServerClock.system.nanoseconds())
        while let _ = try channel.readOutbound(as: ByteBuffer.self) {}
    } catch {
        // A closed channel refuses further input: that is an answer, not a fault.
    }
    _ = try? channel.finish()
    // An embedded channel closed by the handler (a closing error, the half-close of shutdown) tears its
    // pipeline down in a task on its loop, which runs only when asked.
    channel.embeddedEventLoop.run()
    return 0
}

@_cdecl("fuzz_server_main")
public func entryPoint(_ argc: Int32, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> Int32 {
    _ = table  // loaded before the first input, so that it is not counted as that input's allocation
    _ = tokens  // likewise
    return runFuzzer(argc, argv, fuzzServer)
}
