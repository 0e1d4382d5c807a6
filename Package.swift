// swift-tools-version:6.0
import PackageDescription

// No target carries unsafeFlags: SwiftPM refuses them in a package used by version, and a library
// compiled for a newer CPU than its user's dies on an illegal instruction. OpenBLAS, which does the
// matrix products, picks its kernels for the CPU at run time; the Makefile builds the command, the
// tests and the benchmark for x86-64-v3 (SWIFT_CPU_FLAGS), which the remaining plain loops gain
// from (GELU and softmax: about 5% of the GPT benchmark's step).
let package = Package(
    name: "onnx-train",
    products: [
        .library(name: "OnnxTrain", targets: ["OnnxTrain"]),
        .library(name: "OnnxTrainNN", targets: ["OnnxTrainNN"]),
        .library(name: "OnnxTrainMPI", targets: ["OnnxTrainMPI"]),
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
        // oneDNN's matmul for products with a constant B, packed once (PackedWeights.swift).
        .systemLibrary(name: "CDNNL", providers: [.apt(["libdnnl-dev"])]),
        .systemLibrary(name: "CMPI", pkgConfig: "ompi-c", providers: [.apt(["libopenmpi-dev", "openmpi-bin"])]),
        // protoc-c output for Proto/onnx.proto and Proto/onnx-data.proto (regenerate with Proto/generate.sh).
        .target(name: "COnnxProto", dependencies: ["CProtobufC"]),
        .target(
            name: "OnnxTrain",
            dependencies: [
                "COnnxProto", "CProtobufC", "COpenBLAS", "CDNNL",
                .product(name: "ZIPFoundation", package: "ZIPFoundation"),
            ]
        ),
        // Data-parallel training over MPI (Open MPI); the core library needs no MPI.
        .target(name: "OnnxTrainMPI", dependencies: ["OnnxTrain", "CMPI"]),
        .executableTarget(
            name: "onnx-train",
            dependencies: ["OnnxTrain", "OnnxTrainMPI", .product(name: "ArgumentParser", package: "swift-argument-parser")]
        ),
        // PyTorch's model API in Swift: modules, tensors that record ONNX graphs, optimizers.
        .target(name: "OnnxTrainNN", dependencies: ["OnnxTrain"]),
        .executableTarget(name: "TrainMLP", dependencies: ["OnnxTrain"], path: "Examples/TrainMLP"),
        .executableTarget(name: "NetDigits", dependencies: ["OnnxTrainNN", "OnnxTrain"], path: "Examples/NetDigits"),
        .executableTarget(name: "CharTransformer", dependencies: ["OnnxTrainNN", "OnnxTrain"], path: "Examples/CharTransformer"),
        .executableTarget(name: "DCGAN", dependencies: ["OnnxTrainNN", "OnnxTrain"], path: "Examples/DCGAN"),
        .executableTarget(name: "TrainMPI", dependencies: ["OnnxTrain", "OnnxTrainMPI"], path: "Examples/TrainMPI"),
        .target(name: "OnnxTrainTestSupport", dependencies: ["OnnxTrain"], path: "Tests/Support"),
        .testTarget(name: "OnnxTrainTests", dependencies: ["OnnxTrain", "OnnxTrainTestSupport"]),
        .testTarget(name: "OnnxTrainNNTests", dependencies: ["OnnxTrainNN", "OnnxTrain", "OnnxTrainTestSupport"]),
    ],
    // Swift 6 for every target: the compiler checks concurrency (sessions run on several threads).
    swiftLanguageModes: [.v6]
)
