import ArbiterWire
import ScorerMessages

extension Scenario {
    /// The protocol's own round trip: a 32-byte payload echoed back (Redis: PING → PONG).
    static let ping = Scenario(
        name: "ping", about: "PING with a 32-byte payload, echoed",
        arbiter: { _ in Frame(requestID: 0, message: .ping([UInt8](repeating: 0x5A, count: 32))) },
        grpc: { _ in
            var m = Arbiter_Bench_V1_PingRequest()
            m.payload = .init(repeating: 0x5A, count: 32)
            return ("/arbiter.bench.v1.Scorer/Ping", m.bytes)
        },
        resp: ["PING"])
}
