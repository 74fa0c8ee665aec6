// swift-tools-version:6.0
import PackageDescription

/// The serving path's modules are built without the runtime exclusivity checks in release builds: the
/// compiler still proves exclusivity statically, and perf showed the dynamic checks (swift_beginAccess)
/// at 3-4% of the server's cycles at capacity. Debug builds and tests keep them.
let servingPath: [SwiftSetting] = [.unsafeFlags(["-enforce-exclusivity=unchecked"], .when(configuration: .release))]

let package = Package(
    name: "Arbiter",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "arbiterd", targets: ["arbiterd"]),
        .executable(name: "arbiter-train", targets: ["arbiter-train"]),
        .executable(name: "arbiter", targets: ["arbiter"]),
        .library(name: "ArbiterWire", targets: ["ArbiterWire"]),
        .library(name: "ArbiterClient", targets: ["ArbiterClient"]),
        .library(name: "ArbiterModels", targets: ["ArbiterModels"]),
        .library(name: "ArbiterStore", targets: ["ArbiterStore"]),
        .library(name: "ArbiterServer", targets: ["ArbiterServer"]),
        .library(name: "ArbiterTraining", targets: ["ArbiterTraining"]),
        .library(name: "LeadGrading", targets: ["LeadGrading"]),
        .library(name: "Gbdt", targets: ["Gbdt"]),
        .library(name: "Ranking", targets: ["Ranking"]),
        .library(name: "Allocation", targets: ["Allocation"]),
        .library(name: "Routing", targets: ["Routing"]),
        .library(name: "ArbiterCluster", targets: ["ArbiterCluster"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-atomics", from: "1.3.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-nio-ssl", from: "2.37.6"),
        .package(url: "https://github.com/apple/swift-crypto", "3.12.3"..<"5.0.0"),
        // The admin HTTP port's metrics (arbiterd --metrics-listen).
        .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
        // More than one machine (ArbiterCluster): S3 and etcd over HTTP. Never on the serving path.
        .package(url: "https://github.com/swift-server/async-http-client", from: "1.37.0"),
        // Tests only: the deploy/ manifests are parsed (DeployTests).
        .package(url: "https://github.com/jpsim/Yams", from: "5.0.1"),
        // Tests only: property-based checks (the routing kind's eligibility).
        .package(url: "https://github.com/x-sheep/swift-property-based", from: "2.0.1"),
    ],
    targets: [
        // System libraries, found through pkg-config (Debian: liblmdb-dev, libzstd-dev, libxxhash-dev).
        .systemLibrary(name: "CLMDB", path: "Sources/CLMDB", pkgConfig: "lmdb",
                       providers: [.apt(["liblmdb-dev"])]),
        .systemLibrary(name: "CZstd", path: "Sources/CZstd", pkgConfig: "libzstd",
                       providers: [.apt(["libzstd-dev"])]),
        .systemLibrary(name: "CXXHash", path: "Sources/CXXHash", pkgConfig: "libxxhash",
                       providers: [.apt(["libxxhash-dev"])]),

        .target(name: "ArbiterWire", dependencies: [
            "CZstd",
            .product(name: "NIOCore", package: "swift-nio"),
        ], swiftSettings: servingPath),
        .target(name: "ArbiterStore", dependencies: [
            "CLMDB", "CXXHash",
            .product(name: "Atomics", package: "swift-atomics"),
            .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
        ], swiftSettings: servingPath),
        .target(name: "CPrefetch"),
        .target(name: "ArbiterModels", dependencies: [
            "ArbiterStore", "CPrefetch", .product(name: "Atomics", package: "swift-atomics"),
        ], swiftSettings: servingPath),
        .target(name: "LeadGrading", dependencies: ["ArbiterModels", "ArbiterStore"],
                path: "Plugins/LeadGrading", swiftSettings: servingPath),
        .target(name: "Gbdt", dependencies: ["ArbiterModels", "ArbiterStore"],
                path: "Plugins/Gbdt", swiftSettings: servingPath),
        .target(name: "Ranking", dependencies: ["ArbiterModels", "ArbiterStore"],
                path: "Plugins/Ranking", swiftSettings: servingPath),
        .target(name: "Routing", dependencies: ["ArbiterModels", "ArbiterStore"],
                path: "Plugins/Routing", swiftSettings: servingPath),
        .target(name: "Allocation", dependencies: ["ArbiterModels", "ArbiterStore", "CPrefetch"],
                path: "Plugins/Allocation", swiftSettings: servingPath),
        .target(name: "ArbiterServer", dependencies: [
            "ArbiterWire", "ArbiterStore", "ArbiterModels",
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "Atomics", package: "swift-atomics"),
            .product(name: "Logging", package: "swift-log"),
            .product(name: "NIOSSL", package: "swift-nio-ssl"),
            .product(name: "NIOHTTP1", package: "swift-nio"),
            .product(name: "Crypto", package: "swift-crypto"),
            .product(name: "CoreMetrics", package: "swift-metrics"),
            .product(name: "Prometheus", package: "swift-prometheus"),
        ], swiftSettings: servingPath),
        .target(name: "ArbiterClient", dependencies: [
            "ArbiterWire",
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "Atomics", package: "swift-atomics"),
            .product(name: "NIOSSL", package: "swift-nio-ssl"),
        ]),
        .target(name: "ArbiterTraining", dependencies: [
            "ArbiterStore", "ArbiterModels", "LeadGrading", "Gbdt", "Ranking", "Routing", "Allocation",
        ]),
        // More than one machine: artifacts in S3-compatible storage (SigV4), the control plane in etcd.
        .target(name: "ArbiterCluster", dependencies: [
            "ArbiterStore", "ArbiterClient", "ArbiterWire", "CZstd",
            .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            .product(name: "AsyncHTTPClient", package: "async-http-client"),
            .product(name: "Crypto", package: "swift-crypto"),
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "NIOHTTP1", package: "swift-nio"),
            .product(name: "Logging", package: "swift-log"),
        ]),
        // The composition root: links the plugins and hands their factories to the server (ServedKinds.swift).
        .executableTarget(name: "arbiterd", dependencies: [
            "ArbiterServer", "ArbiterModels", "LeadGrading", "Gbdt", "Ranking", "Routing", "Allocation", "ArbiterCluster",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
            .product(name: "Logging", package: "swift-log"),
            .product(name: "AsyncHTTPClient", package: "async-http-client"),
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "Metrics", package: "swift-metrics"),
            .product(name: "Prometheus", package: "swift-prometheus"),
        ]),
        .executableTarget(name: "arbiter-train", dependencies: [
            "ArbiterTraining", "ArbiterStore", "ArbiterModels", "Routing", "Allocation", "ArbiterCluster",
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),
        .executableTarget(name: "arbiter", dependencies: [
            // ArbiterServer for the token file's format (`arbiter token` writes what the server reads).
            "ArbiterClient", "ArbiterWire", "ArbiterServer",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),

        // Test helpers shared by the test targets: an independent reference computation, other processes.
        .target(name: "ArbiterTestSupport", dependencies: ["ArbiterModels", "ArbiterStore"], path: "Tests/ArbiterTestSupport"),
        .testTarget(name: "ArbiterWireTests", dependencies: [
            "ArbiterWire", .product(name: "NIOCore", package: "swift-nio"),
        ]),
        .testTarget(name: "ArbiterStoreTests", dependencies: ["ArbiterStore", "ArbiterTestSupport"]),
        .testTarget(name: "ArbiterClusterTests", dependencies: [
            "ArbiterCluster", "ArbiterStore", "ArbiterTestSupport",
            .product(name: "AsyncHTTPClient", package: "async-http-client"),
            .product(name: "NIOPosix", package: "swift-nio"),
        ]),
        .testTarget(name: "DeployTests", dependencies: ["ArbiterTestSupport", .product(name: "Yams", package: "Yams")]),
        .testTarget(name: "ArbiterModelsTests", dependencies: ["ArbiterModels", "ArbiterStore"]),
        .testTarget(name: "LeadGradingTests", dependencies: ["LeadGrading", "ArbiterTraining", "ArbiterModels", "ArbiterStore", "ArbiterTestSupport"],
                    exclude: ["Fixtures"]),
        .testTarget(name: "ArbiterTrainingTests", dependencies: ["ArbiterTraining", "ArbiterStore", "ArbiterModels", "Gbdt", "ArbiterTestSupport"],
                    exclude: ["Fixtures"]),
        .testTarget(name: "RankingTests", dependencies: ["Ranking", "ArbiterTraining", "ArbiterModels", "ArbiterStore", "Gbdt", "ArbiterTestSupport"],
                    exclude: ["Fixtures"]),
        .testTarget(name: "RoutingTests", dependencies: [
            "Routing", "ArbiterTraining", "ArbiterModels", "ArbiterStore", "Gbdt", "ArbiterTestSupport",
            .product(name: "PropertyBased", package: "swift-property-based"),
        ], exclude: ["Fixtures"]),
        .testTarget(name: "AllocationTests", dependencies: ["Allocation", "ArbiterModels", "ArbiterStore", "ArbiterTraining", "ArbiterTestSupport"], exclude: ["Fixtures"]),
        .testTarget(name: "ArbiterServerTests", dependencies: [
            "ArbiterServer", "ArbiterClient", "ArbiterWire", "ArbiterTraining", "ArbiterStore", "ArbiterTestSupport",
            "ArbiterModels", "LeadGrading", "Gbdt", "Ranking", "Routing", "Allocation", "ArbiterCluster",
            .product(name: "AsyncHTTPClient", package: "async-http-client"),
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "NIOEmbedded", package: "swift-nio"),
            .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
        ], exclude: ["Fixtures"]),
    ],
    swiftLanguageModes: [.v6]
)
