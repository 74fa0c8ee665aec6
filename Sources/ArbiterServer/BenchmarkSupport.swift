import ArbiterModels
import ArbiterWire
import NIOCore

/// The server's per-request work for one SCORE — cut the frame, view its body, copy and check the inputs,
/// score, select top-k, encode the RESULT into a reused buffer — without a socket, for the allocation
/// benchmarks (bench/alloc): the functions the connection handler calls for a SCORE, in its order (its
/// model lookup and feature-count checks aside, which allocate only to word an error), the loop's request
/// counters included.
@_spi(Benchmarks)
public struct ScorePath: ~Copyable {
    let model: ServingModel
    let decoder: FrameDecoder
    var scratch = ScoringScratch()
    var outbox = ByteBufferAllocator().buffer(capacity: 1024)
    let metrics = LoopMetrics()

    public init(name: String, model: any ScoringModel, maxFrameBytes: UInt32 = 4 << 20) {
        self.model = ServingModel(name: name, model: model)
        decoder = FrameDecoder(maxBodyBytes: maxFrameBytes)
    }

    /// Answers the SCORE frame at the front of `input` (consuming it); returns the RESULT's size in bytes.
    public mutating func answer(_ input: inout ByteBuffer) throws -> Int {
        guard let frame = try decoder.decodeFrame(&input) else { throw WireError(.malformed, "incomplete frame") }
        let view = try ScoreRequestView(body: frame.body)
        outbox.clear()
        let timing = try ResultEncoder.scoreAndEncode(view, model: model, requestID: frame.header.requestID, budget: 0,
                                                      receivedAt: ServerClock.system.nanoseconds(), scratch: &scratch,
                                                      clientMaxFrame: 0, clock: .system, into: &outbox)
        metrics.scored(series: model.seriesNumber, candidates: view.candidateCount, timing: timing)
        return outbox.readableBytes
    }
}
