// swift-tools-version:6.1
// Allocation counts of the hot paths, with ordo-one/benchmark and its MallocInterposer trait: scoring a
// batch must allocate nothing per candidate. `swift package benchmark` runs it; thresholds in
// Thresholds/ fail the run when a count changes (see bench/alloc/README.md).
import PackageDescription

let package = Package(
    name: "ArbiterAllocations",
    platforms: [.macOS(.v15)],
    dependencies: [
        .package(name: "Arbiter", path: "../.."),
        .package(url: "https://github.com/ordo-one/benchmark", from: "1.38.1", traits: ["MallocInterposer"]),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
    ],
    targets: [
        .executableTarget(
            name: "Allocations",
            dependencies: [
                .product(name: "Benchmark", package: "benchmark"),
                .product(name: "ArbiterModels", package: "Arbiter"),
                .product(name: "ArbiterStore", package: "Arbiter"),
                .product(name: "ArbiterTraining", package: "Arbiter"),
                .product(name: "Gbdt", package: "Arbiter"),
                .product(name: "LeadGrading", package: "Arbiter"),
                .product(name: "Ranking", package: "Arbiter"),
                .product(name: "Routing", package: "Arbiter"),
                .product(name: "ArbiterServer", package: "Arbiter"),
                .product(name: "ArbiterWire", package: "Arbiter"),
                .product(name: "NIOCore", package: "swift-nio"),
            ],
            path: "Benchmarks/Allocations",
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]
        ),
    ]
)
