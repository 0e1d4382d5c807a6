// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "onnx-train",
    products: [
        .library(name: "OnnxTrain", targets: ["OnnxTrain"]),
        .executable(name: "onnx-train", targets: ["onnx-train"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/weichsel/ZIPFoundation", exact: "0.9.20"),
    ],
    targets: [
        // System libraries, found through pkg-config; the Makefile installs their apt providers.
        .systemLibrary(name: "CProtobufC", pkgConfig: "libprotobuf-c", providers: [.apt(["libprotobuf-c-dev"])]),
        .systemLibrary(name: "COpenBLAS", pkgConfig: "openblas", providers: [.apt(["libopenblas-dev"])]),
        // protoc-c output for Proto/onnx.proto and Proto/onnx-data.proto (regenerate with Proto/generate.sh).
        .target(name: "COnnxProto", dependencies: ["CProtobufC"]),
        .target(
            name: "OnnxTrain",
            dependencies: [
                "COnnxProto", "CProtobufC", "COpenBLAS",
                .product(name: "ZIPFoundation", package: "ZIPFoundation"),
            ],
            swiftSettings: [.unsafeFlags(["-enforce-exclusivity=unchecked"])]
        ),
        .executableTarget(
            name: "onnx-train",
            dependencies: ["OnnxTrain", .product(name: "ArgumentParser", package: "swift-argument-parser")]
        ),
        .executableTarget(name: "TrainMLP", dependencies: ["OnnxTrain"], path: "Examples/TrainMLP"),
        .target(name: "OnnxTrainTestSupport", dependencies: ["OnnxTrain"], path: "Tests/Support"),
        .testTarget(name: "OnnxTrainTests", dependencies: ["OnnxTrain", "OnnxTrainTestSupport"]),
    ],
    swiftLanguageModes: [.v5]
)
