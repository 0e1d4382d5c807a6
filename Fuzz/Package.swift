// swift-tools-version:6.0
import PackageDescription

// Coverage-guided fuzz targets for onnx-train's file readers (libFuzzer). Built apart from the
// main package because a libFuzzer executable has no `main` of its own:
//     swift build -c release --sanitize=fuzzer --sanitize=address -Xswiftc -enable-testing
// `make fuzz` (FUZZ_SECONDS per target) and `make fuzz-check` (run by `make test`) drive it; see README.md.
let package = Package(
    name: "onnx-train-fuzz",
    dependencies: [.package(name: "onnx-train", path: "..")],
    targets: [
        .executableTarget(
            name: "OnnxTrainFuzz",
            dependencies: [.product(name: "OnnxTrain", package: "onnx-train")],
            swiftSettings: [.unsafeFlags(["-parse-as-library"])]
        ),
    ],
    swiftLanguageModes: [.v6]
)
