/// libFuzzer's driver, started from each target's entry point. SwiftPM links an executable target with
/// `main` defined as `<module>_main`, so each target exports that name and hands libFuzzer its own
/// `LLVMFuzzerTestOneInput` through `LLVMFuzzerRunDriver` (libFuzzer's documented way to be driven from
/// a `main` that is not its own).
public typealias FuzzCallback = @convention(c) (UnsafePointer<UInt8>, Int) -> Int32

@_silgen_name("LLVMFuzzerRunDriver")
private func llvmFuzzerRunDriver(_ argc: UnsafeMutablePointer<Int32>,
                                 _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>,
                                 _ callback: FuzzCallback) -> Int32

public func runFuzzer(_ argc: Int32, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?, _ callback: FuzzCallback) -> Int32 {
    var count = argc
    var values = argv
    return llvmFuzzerRunDriver(&count, &values, callback)
}
