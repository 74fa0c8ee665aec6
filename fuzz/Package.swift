// swift-tools-version:6.0
// libFuzzer targets for every decoder of outside input: frames and their bodies, zstd bodies, a whole
// connection (the server's handler, fed arbitrary bytes), model files (XGBoost JSON, LightGBM text) and the
// trainers' CSVs. A package of its own because the targets are built with `-sanitize=fuzzer,address`
// (fuzz/run.sh, `make fuzz`), which must not touch the main build. Each target exports
// `LLVMFuzzerTestOneInput` and starts libFuzzer from its entry point (Sources/FuzzDriver).
import PackageDescription

let package = Package(
    name: "ArbiterFuzz",
    platforms: [.macOS(.v15)],
    dependencies: [
        .package(name: "Arbiter", path: ".."),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
    ],
    targets: [
        .target(name: "FuzzDriver"),
        .executableTarget(name: "fuzz-frames", dependencies: [
            "FuzzDriver",
            .product(name: "ArbiterWire", package: "Arbiter"),
            .product(name: "NIOCore", package: "swift-nio"),
        ]),
        .executableTarget(name: "fuzz-zstd", dependencies: [
            "FuzzDriver",
            .product(name: "ArbiterWire", package: "Arbiter"),
            .product(name: "NIOCore", package: "swift-nio"),
        ]),
        .executableTarget(name: "fuzz-server", dependencies: [
            "FuzzDriver",
            .product(name: "ArbiterServer", package: "Arbiter"),
            .product(name: "ArbiterModels", package: "Arbiter"),
            .product(name: "ArbiterStore", package: "Arbiter"),
            .product(name: "ArbiterWire", package: "Arbiter"),
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOEmbedded", package: "swift-nio"),
            .product(name: "Logging", package: "swift-log"),
        ]),
        .executableTarget(name: "fuzz-import", dependencies: [
            "FuzzDriver",
            .product(name: "ArbiterTraining", package: "Arbiter"),
        ]),
        .executableTarget(name: "fuzz-csv", dependencies: [
            "FuzzDriver",
            .product(name: "ArbiterTraining", package: "Arbiter"),
        ]),
    ],
    swiftLanguageModes: [.v6]
)
