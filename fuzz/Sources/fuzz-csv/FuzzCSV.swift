import FuzzDriver
import ArbiterTraining
import Foundation

/// CSV as the trainer reads it: rows to check an imported model against (the first byte picks a feature
/// count), and a leads CSV for `arbiter-train train`. Parsed, or refused with an error naming the line.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzCSV(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    guard size > 0 else { return 0 }
    let bytes = Data(bytes: data + 1, count: size - 1)
    let text = String(decoding: bytes, as: UTF8.self)
    _ = try? GbdtImport.parseRows(text, featureCount: Int(data[0] % 16) + 1, file: "fuzz")
    _ = try? LeadData.parseCSV(bytes, name: "fuzz.csv")
    return 0
}

@_cdecl("fuzz_csv_main")
public func entryPoint(_ argc: Int32, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> Int32 {
    runFuzzer(argc, argv, fuzzCSV)
}
