import ArbiterModels
import ArbiterWire
import NIOCore

extension ScoringError.Kind {
    /// The ERROR status a model's refusal is answered with.
    var status: Status {
        switch self {
        case .invalidRequest: .invalidRequest
        case .invalidFeature: .invalidFeature
        case .internalError: .internalError
        }
    }
}

/// Scores a checked SCORE and encodes its RESULT frame: the hot path, shared by inline and pooled scoring.
enum ResultEncoder {
    /// Appends an ERROR frame carrying `error` (its status, message and request id) to `out`.
    static func encodeError(_ error: WireError, into out: inout ByteBuffer) {
        Frame(requestID: error.requestID, message: .error(ErrorBody(status: error.status, message: error.message))).encode(into: &out)
    }

    /// Appends a PONG echoing `payload` for `requestID` to `out` (header time not yet stamped), without
    /// materializing the payload.
    static func encodePong(requestID: UInt64, payload: ByteBuffer, into out: inout ByteBuffer) {
        FrameHeader(opcode: Opcode.pong.rawValue, requestID: requestID, bodyLength: UInt32(payload.readableBytes)).write(to: &out)
        out.writeImmutableBuffer(payload)
    }

    /// Copies the request into `scratch`, checks every value, scores, selects top-k, and appends the
    /// RESULT frame to `out` (header time not yet stamped). On error nothing is appended. Allocates nothing
    /// once `scratch` and `out` have grown to the request sizes seen. Returns the wait and compute times the
    /// answer reports (for the metrics).
    @discardableResult
    static func scoreAndEncode(_ view: ScoreRequestView, model m: ServingModel, requestID: UInt64, budget: UInt64,
                               receivedAt: UInt64, scratch: inout ScoringScratch, clientMaxFrame: UInt32,
                               clock: ServerClock, into out: inout ByteBuffer) throws(WireError) -> ScoreTiming {
        let n = view.candidateCount
        let start = clock.nanoseconds()
        let queueMicros = (start &- receivedAt) / 1000
        if budget > 0 && queueMicros >= budget {
            throw WireError(.deadlineExceeded, "request waited \(queueMicros) µs, over its budget of \(budget) µs")
        }
        let f = m.candidateFeatureCount
        let ctx = scratch.context.reserve(m.contextCount)
        let mat = scratch.matrix.reserve(n * f)
        let ids = scratch.ids.reserve(n)
        view.copyContext(into: ctx)
        view.copyCandidateMatrix(into: mat)
        view.copyCandidateIDs(into: ids)
        let ctxBuf = UnsafeBufferPointer(start: ctx, count: m.contextCount)
        let matBuf = UnsafeBufferPointer(start: mat, count: n * f)
        if let problem = m.schema.firstInvalidValue(context: ctxBuf, candidates: matBuf, candidateCount: n) {
            throw WireError(.invalidFeature, problem)
        }
        let scores = scratch.scores.reserve(n)
        let floats = scratch.floatColumns.reserve(n * m.floatColumnCount)
        let codes = scratch.codeColumns.reserve(n * m.codeColumnCount)
        let order = scratch.order.reserve(n)
        let answer: RowOrder
        do throws(ScoringError) {
            answer = try m.model.score(ScoreBatch(context: ctxBuf, candidates: matBuf, candidateCount: n,
                                                  ids: UnsafeBufferPointer(start: ids, count: n), routingKey: view.routingKey,
                                                  subject: view.subject, topK: Int(view.topK)),
                                       into: ScoreOutput(scores: scores, floatColumns: floats, codeColumns: codes,
                                                         candidateCount: n, order: order))
        } catch {
            throw WireError(error.kind.status, error.message)
        }
        let computeMicros = (clock.nanoseconds() &- start) / 1000

        // Rows to return: all in request order, the best k gathered into the top-k scratch, or the model's
        // own order and cut.
        var rows = n
        var outIDs = ids, outScores = scores, outFloats = floats, outCodes = codes
        var sorted = view.topK > 0
        if case .ranked(let count) = answer {
            // The model's order is trusted only as far as it can be checked cheaply: a count in range and
            // every index in range (a duplicate would only repeat a row).
            guard count >= 0, count <= n, (0..<count).allSatisfy({ order[$0] >= 0 && Int(order[$0]) < n }) else {
                throw WireError(.internalError, "model \(m.name) v\(m.version) answered an order outside its \(n) candidates")
            }
            sorted = true
            rows = count
        } else if sorted {
            rows = TopK.select(scores: scores, n: n, k: Int(view.topK), into: order)
        }
        if sorted {
            outIDs = scratch.gatherIDs.reserve(rows)
            outScores = scratch.gatherFloats.reserve(rows * (1 + m.floatColumnCount))
            outFloats = outScores + rows
            outCodes = scratch.gatherCodes.reserve(rows * m.codeColumnCount)
            for r in 0..<rows {
                let src = Int(order[r])
                outIDs[r] = ids[src]
                outScores[r] = scores[src]
                for c in 0..<m.floatColumnCount { outFloats[c * rows + r] = floats[c * n + src] }
                for c in 0..<m.codeColumnCount { outCodes[c * rows + r] = codes[c * n + src] }
            }
        }

        let frameStart = out.writerIndex
        out.reserveCapacity(minimumWritableBytes: FrameHeader.size + 24 + rows * (12 + 4 * m.floatColumnCount + m.codeColumnCount) + 64 * m.columns.count)
        FrameHeader(opcode: Opcode.result.rawValue, requestID: requestID).write(to: &out)
        ScoreCodec.writeResultHead(version: m.version, queueMicros: UInt32(clamping: queueMicros),
                                   computeMicros: UInt32(clamping: computeMicros), sorted: sorted,
                                   columnCount: m.columns.count, ids: UnsafeBufferPointer(start: outIDs, count: rows),
                                   scores: UnsafeBufferPointer(start: outScores, count: rows), into: &out)
        for c in m.columns {
            if c.isCode {
                ScoreCodec.writeCodeColumn(prologue: c.prologue, values: UnsafeBufferPointer(start: outCodes + c.index * rows, count: rows), into: &out)
            } else {
                ScoreCodec.writeFloatColumn(prologue: c.prologue, values: UnsafeBufferPointer(start: outFloats + c.index * rows, count: rows), into: &out)
            }
        }
        let bodyLength = out.writerIndex - frameStart - FrameHeader.size
        if clientMaxFrame > 0 && bodyLength > Int(clientMaxFrame) {
            out.moveWriterIndex(to: frameStart)
            throw WireError(.tooManyCandidates, "the RESULT would be \(bodyLength) bytes, over this client's max_frame_bytes of \(clientMaxFrame); send fewer candidates or set top_k")
        }
        FrameHeader.patchBodyLength(UInt32(bodyLength), in: &out, headerAt: frameStart)
        return ScoreTiming(queueMicros: queueMicros, computeMicros: computeMicros)
    }
}
