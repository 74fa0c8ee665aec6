import FuzzDriver
import ArbiterTraining
import Foundation

/// A model file as a user may give `arbiter-train import`: the first byte picks the format (even: XGBoost
/// JSON, odd: LightGBM text), the rest is the file. It parses and validates, or is refused with an
/// `ImportError`; an accepted forest is then laid out and asked for a prediction, as import does.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzImport(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    guard size > 0 else { return 0 }
    let format: ForestFormat = data[0] % 2 == 0 ? .xgboostJSON : .lightgbmText
    let file = Data(bytes: data + 1, count: size - 1)
    guard let forest = try? ImportedForest.parse(format, data: file, file: "fuzz") else { return 0 }
    _ = forest.layout()
    _ = forest.predict([Float](repeating: 0.5, count: forest.featureCount))
    _ = forest.predict([Float](repeating: .nan, count: forest.featureCount))
    return 0
}

@_cdecl("fuzz_import_main")
public func entryPoint(_ argc: Int32, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> Int32 {
    runFuzzer(argc, argv, fuzzImport)
}
