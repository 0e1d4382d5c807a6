import Foundation
@testable import OnnxTrain

/// libFuzzer entry points, one per reader, chosen by `ONNX_TRAIN_FUZZ_TARGET` (see `FuzzTarget`).
///
/// Every target feeds the bytes to one public reader and accepts exactly two outcomes: a value or
/// an `OnnxTrainError`/`KernelError`. Anything else (another error type, a trap, a leak, a hang,
/// an address-sanitizer report) is a finding that libFuzzer saves under Fuzz/crashes/<target>/.
enum FuzzTarget: String, CaseIterable {
    /// ModelProto bytes: load, then build an inference session (kernels built for every node).
    case model
    /// ModelProto bytes loaded from a folder holding external data files, a symbolic link that
    /// leaves the folder, and a named pipe: no tensor may ever be read through the link.
    case external
    /// onnxruntime training checkpoints (FlatBuffers), with and without a `.data` sidecar.
    case checkpoint
    case npy, npz, safetensors, csv
    /// TensorProto, SequenceProto and OptionalProto files (`.pb`), selected by the first byte.
    case tensorproto

    static let current: FuzzTarget = {
        let name = ProcessInfo.processInfo.environment["ONNX_TRAIN_FUZZ_TARGET"] ?? ""
        guard let target = FuzzTarget(rawValue: name) else {
            FileHandle.standardError.write(Data("set ONNX_TRAIN_FUZZ_TARGET to one of: \(FuzzTarget.allCases.map(\.rawValue).joined(separator: ", "))\n".utf8))
            exit(2)
        }
        return target
    }()
}

/// A folder for the `external` target: `weights.bin` (256 bytes) and `sub/more.bin` inside,
/// `escape.bin` -> a file outside, and `pipe`, a FIFO (reading it would block forever).
let externalFolder: String = {
    let root = FileManager.default.temporaryDirectory.appendingPathComponent("onnx-train-fuzz-\(getpid())").path
    let inside = root + "/model"
    try? FileManager.default.createDirectory(atPath: inside + "/sub", withIntermediateDirectories: true)
    let bytes = Data((0..<256).map { UInt8($0) })
    try? bytes.write(to: URL(fileURLWithPath: inside + "/weights.bin"))
    try? bytes.write(to: URL(fileURLWithPath: inside + "/sub/more.bin"))
    try? Data(repeating: 0xEE, count: 256).write(to: URL(fileURLWithPath: root + "/secret.bin"))
    try? FileManager.default.createSymbolicLink(atPath: inside + "/escape.bin", withDestinationPath: root + "/secret.bin")
    mkfifo(inside + "/pipe", 0o600)
    atexit { try? FileManager.default.removeItem(atPath: FileManager.default.temporaryDirectory.appendingPathComponent("onnx-train-fuzz-\(getpid())").path) }
    return inside
}()

func expected(_ body: () throws -> Void) {
    do {
        try body()
    } catch is OnnxTrainError {
    } catch is KernelError {
    } catch is FlatBufferError {
        // CheckpointFile.decode's own error; CheckpointState.load turns it into an OnnxTrainError.
    } catch {
        fatalError("unexpected error type \(type(of: error)): \(error)")
    }
}

func fuzzOne(_ data: Data) {
    switch FuzzTarget.current {
    case .model:
        expected {
            let model = try data.withUnsafeBytes { try Model(bytes: $0) }
            _ = try InferenceSession(model: model)
        }
    case .external:
        expected {
            let model = try data.withUnsafeBytes { try Model(bytes: $0, directory: externalFolder) }
            for (name, t) in model.graph.initializers where t.dtype != .string && t.byteCount > 0 {
                // 0xEE bytes only come from the file outside the folder.
                if t.rawBytes.allSatisfy({ $0 == 0xEE }) && t.byteCount >= 4 { fatalError("initializer '\(name)' was read from outside the model folder") }
            }
        }
    case .checkpoint:
        expected {
            let bytes = [UInt8](data)
            // The first half of the input is the checkpoint, the rest its `.data` sidecar.
            _ = try CheckpointFile.decode(bytes, externalData: { Array(bytes.suffix(bytes.count / 2)) })
            _ = try CheckpointFile.decode(bytes, externalData: { [] })
            _ = try CheckpointFile.decode(bytes, externalData: { [] }).runProgress()
        }
    case .npy: expected { _ = try Npy.decode(data, name: "fuzz.npy") }
    case .npz: expected { _ = try Npz.decode(data, name: "fuzz.npz") }
    case .safetensors: expected { _ = try SafeTensors.decode(data, name: "fuzz.safetensors") }
    case .csv:
        expected {
            let text = String(decoding: data, as: UTF8.self)
            _ = try CSVData.parse(text, columns: DataSource.CSVColumns(), label: "fuzz.csv")
            _ = try CSVData.parse(text, columns: DataSource.CSVColumns(features: ["a", "b"], label: "y"), label: "fuzz.csv")
        }
    case .tensorproto:
        guard let first = data.first else { return }
        let rest = data.dropFirst()
        expected {
            try Data(rest).withUnsafeBytes { bytes in
                switch first % 3 {
                case 0: _ = try Tensor.named(protobuf: bytes)
                case 1: _ = try Value(protobuf: bytes, kind: .sequence)
                default: _ = try Value(protobuf: bytes, kind: .optional)
                }
            }
        }
    }
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzerTestOneInput(_ bytes: UnsafePointer<UInt8>?, _ count: Int) -> CInt {
    let data = count > 0 && bytes != nil ? Data(bytes: bytes!, count: count) : Data()
    fuzzOne(data)
    return 0
}
