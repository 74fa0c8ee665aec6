// swift-tools-version:6.0
// The benchmark harness: a package of its own so the main build stays light. It depends on Arbiter by path.
import PackageDescription

let package = Package(
    name: "ArbiterBench",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "arbiter-bench", targets: ["arbiter-bench"]),
    ],
    dependencies: [
        .package(name: "Arbiter", path: ".."),
        .package(url: "https://github.com/HdrHistogram/hdrhistogram-swift", from: "0.2.0"),
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
    ],
    targets: [
        .target(name: "BenchCore", dependencies: [
            .product(name: "ArbiterWire", package: "Arbiter"),
            .product(name: "Histogram", package: "hdrhistogram-swift"),
            .product(name: "NIOCore", package: "swift-nio"),
        ]),
        .executableTarget(name: "arbiter-bench", dependencies: [
            "BenchCore",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),
        .testTarget(name: "BenchCoreTests", dependencies: ["BenchCore"]),
    ],
    swiftLanguageModes: [.v6]
)
