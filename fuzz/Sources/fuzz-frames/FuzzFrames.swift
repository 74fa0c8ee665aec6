import FuzzDriver
import ArbiterWire
import NIOCore

/// Bytes as a connection would deliver them: cut into frames (judging each header before its body), each
/// frame's body decoded as its opcode says, and a SCORE body also viewed in place as the server does.
/// Anything may be refused with an error; nothing may crash, hang or read out of bounds.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzFrames(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    var input = ByteBuffer(bytes: UnsafeBufferPointer(start: data, count: size))
    let decoder = FrameDecoder(maxBodyBytes: 1 << 20)
    while true {
        guard let raw = try? decoder.decodeFrame(&input) else { break }
        _ = try? Frame.decode(header: raw.header, body: raw.body)
        if raw.header.opcode == Opcode.score.rawValue, let view = try? ScoreRequestView(body: raw.body) {
            _ = view.trailingBytes
            _ = view.materialize()
        }
    }
    return 0
}

@_cdecl("fuzz_frames_main")
public func entryPoint(_ argc: Int32, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> Int32 {
    runFuzzer(argc, argv, fuzzFrames)
}
