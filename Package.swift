// swift-tools-version:6.1
import PackageDescription

let strict: [SwiftSetting] = [.swiftLanguageMode(.v6)]

let package = Package(
    name: "Strongbox",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "strongbox", targets: ["strongbox"]),
        .library(name: "RESP", targets: ["RESP"]),
        .library(name: "StrongboxServer", targets: ["StrongboxServer"]),
        .library(name: "HashRing", targets: ["HashRing"]),
        .library(name: "StrongboxClient", targets: ["StrongboxClient"]),
        .library(name: "Redlock", targets: ["Redlock"]),
        .executable(name: "redlock-bench", targets: ["redlock-bench"]),
        .executable(name: "withlock-example", targets: ["withlock-example"]),
        .executable(name: "strongbox-stress", targets: ["strongbox-stress"]),
        .executable(name: "order-demo", targets: ["order-demo"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-crypto", from: "3.12.3"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
        .package(url: "https://github.com/HdrHistogram/hdrhistogram-swift", from: "0.2.0"),
        .package(url: "https://github.com/groue/GRDB.swift", from: "7.10.0"),
    ],
    targets: [
        .target(
            name: "RESP",
            dependencies: [.product(name: "NIOCore", package: "swift-nio")],
            swiftSettings: strict
        ),
        .target(name: "HashRing", swiftSettings: strict),
        .target(
            name: "StrongboxClient",
            dependencies: [
                "RESP", "HashRing",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Crypto", package: "swift-crypto"),
            ],
            swiftSettings: strict
        ),
        .target(
            name: "Redlock",
            dependencies: [
                "StrongboxClient",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "Metrics", package: "swift-metrics"),
            ],
            swiftSettings: strict
        ),
        .executableTarget(
            name: "redlock-bench",
            dependencies: [
                "Redlock", "StrongboxClient",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Histogram", package: "hdrhistogram-swift"),
            ],
            swiftSettings: strict
        ),
        .target(
            name: "StressKit",
            dependencies: [
                "Redlock", "StrongboxClient", "HashRing", "RESP",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "Histogram", package: "hdrhistogram-swift"),
            ],
            swiftSettings: strict
        ),
        .executableTarget(
            name: "strongbox-stress",
            dependencies: [
                "StressKit",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: strict
        ),
        .executableTarget(
            name: "order-demo",
            dependencies: [
                "StressKit", "Redlock", "StrongboxClient", "RESP",
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Histogram", package: "hdrhistogram-swift"),
                .product(name: "NIOCore", package: "swift-nio"),
            ],
            swiftSettings: strict
        ),
        .testTarget(
            name: "OrderDemoTests",
            dependencies: ["TestSupport"],
            swiftSettings: strict
        ),
        .testTarget(
            name: "StressTests",
            dependencies: ["StressKit", "TestSupport"],
            swiftSettings: strict
        ),
        .executableTarget(
            name: "withlock-example",
            dependencies: ["Redlock", "StrongboxClient"],
            path: "Examples/withlock-example",
            swiftSettings: strict
        ),
        .target(
            name: "Keyspace",
            dependencies: ["CMalloc", .product(name: "NIOCore", package: "swift-nio")],
            swiftSettings: strict
        ),
        .systemLibrary(name: "CMalloc"),
        .systemLibrary(
            name: "CXXHash",
            providers: [.apt(["libxxhash-dev"])]
        ),
        // Redis's `struct` and `cmsgpack` Lua libraries, written here (Debian has no package).
        .target(name: "CLuaLibs", dependencies: ["CLua"]),
        .systemLibrary(
            name: "CLua",
            providers: [.apt(["liblua5.1-0-dev", "lua-cjson-dev", "lua-bitop-dev"])]
        ),
        .target(
            name: "Engine",
            dependencies: [
                "RESP", "Keyspace", "HashRing", "CXXHash", "CLua", "CLuaLibs",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "Crypto", package: "swift-crypto"),
            ],
            swiftSettings: strict
        ),
        .target(
            name: "StrongboxServer",
            dependencies: [
                "Engine", "RESP", "Keyspace", "HashRing", "StrongboxClient",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: strict
        ),
        .executableTarget(
            name: "strongbox",
            dependencies: [
                "StrongboxServer", "Engine", "Keyspace", "HashRing",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: strict
        ),
        // libFuzzer targets (Tools/fuzz builds them with -sanitize=fuzzer,address -DFUZZING);
        // a plain build replays a corpus: `strongbox-fuzz request Tests/Fuzz/corpus/request`.
        .executableTarget(
            name: "strongbox-fuzz",
            dependencies: ["RESP", "Engine", "Keyspace", .product(name: "NIOCore", package: "swift-nio")],
            path: "Tests/Fuzz/strongbox-fuzz",
            swiftSettings: strict
        ),
        .systemLibrary(
            name: "CHiredis",
            providers: [.apt(["libhiredis-dev"])]
        ),
        .target(
            name: "TestSupport",
            dependencies: ["StrongboxServer", "Engine", "RESP", "Keyspace", .product(name: "NIOCore", package: "swift-nio")],
            path: "Tests/TestSupport",
            swiftSettings: strict
        ),
        .testTarget(
            name: "RESPTests",
            dependencies: ["RESP", .product(name: "NIOTestUtils", package: "swift-nio")],
            swiftSettings: strict
        ),
        .testTarget(name: "HashRingTests", dependencies: ["HashRing"], swiftSettings: strict),
        .testTarget(
            name: "ClientTests",
            dependencies: [
                "StrongboxClient", "Redlock", "HashRing", "RESP", "TestSupport",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "MetricsTestKit", package: "swift-metrics"),
            ],
            swiftSettings: strict
        ),
        .testTarget(
            name: "KeyspaceTests",
            dependencies: ["Keyspace"],
            swiftSettings: strict
        ),
        .testTarget(
            name: "StrongboxServerTests",
            dependencies: [
                "StrongboxServer", "Engine", "RESP", "Keyspace", "TestSupport",
                .product(name: "NIOPosix", package: "swift-nio"),
            ],
            resources: [.copy("Corpus")],
            swiftSettings: strict
        ),
        .testTarget(
            name: "HiredisTests",
            dependencies: ["CHiredis", "StrongboxServer", "TestSupport"],
            swiftSettings: strict
        ),
    ]
)
