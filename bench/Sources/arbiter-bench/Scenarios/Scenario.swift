import ArbiterWire
import BenchCore
import ScorerMessages
import SwiftProtobuf

/// How a target is spoken to.
enum WireProtocol: String, CaseIterable, Sendable {
    /// Arbiter's frames: arbiterd, and the C floor (which echoes them).
    case arbiter
    /// gRPC with bench/proto/scorer.proto: the grpc-swift and Python peers.
    case grpc
    /// Redis's RESP.
    case resp
}

/// A benchmark scenario: one request, written once in each protocol that can carry it.
///
/// Adding a scenario is one file that defines a `static let` on `Scenario`, plus its name in `all` below.
struct Scenario: Sendable {
    let name: String
    let about: String
    /// The request as an Arbiter frame (its id is patched per send).
    let arbiter: @Sendable (_ model: String) -> Frame
    /// The same request over gRPC: the method's path and the serialized message; nil if none.
    let grpc: (@Sendable (_ model: String) -> (path: String, message: [UInt8]))?
    /// The same request as a RESP command's arguments; nil if none.
    let resp: [String]?
    /// Several Arbiter requests of one size, sent in turn instead of `arbiter`'s one (nil: `arbiter` only).
    var arbiterVariants: (@Sendable (_ model: String) -> [Frame])? = nil
    /// The same requests over gRPC (one method, messages of one size), instead of `grpc`'s one.
    var grpcVariants: (@Sendable (_ model: String) -> (path: String, messages: [[UInt8]]))? = nil

    static let all: [Scenario] = [.ping, .lead1, .lead100, .gbdt200, .rank200, .route30, .alloc500x200, .alloc20kx2k]

    static func named(_ name: String) -> Scenario? { all.first { $0.name == name } }

    func target(_ wire: WireProtocol, model: String, host: String, port: Int, token: String? = nil) throws -> any Target {
        switch wire {
        case .arbiter:
            if let arbiterVariants { return ArbiterTarget(name: name, frames: arbiterVariants(model), token: token) }
            return ArbiterTarget(name: name, frame: arbiter(model), token: token)
        case .grpc:
            if let grpcVariants {
                let (path, messages) = grpcVariants(model)
                return GRPCTarget(name: name, path: path, messages: messages, authority: "\(host):\(port)")
            }
            guard let grpc else { throw BenchError("scenario \(name) has no gRPC form") }
            let (path, message) = grpc(model)
            return GRPCTarget(name: name, path: path, message: message, authority: "\(host):\(port)")
        case .resp:
            guard let resp else { throw BenchError("scenario \(name) has no RESP form") }
            return RESPTarget(name: name, arguments: resp)
        }
    }
}

extension SwiftProtobuf.Message {
    var bytes: [UInt8] { (try? serializedBytes()) ?? [] }
}
