import ArgumentParser
import Foundation
import OnnxTrain

/// `onnx-train infer MODEL`: runs a model on feeds from files and writes every graph output.
struct InferCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "infer",
        abstract: "Run a model on inputs read from .npz/.npy/.pb files and write its outputs.",
        discussion: """
        Feeds come from --inputs (an .npz archive, a .safetensors file, or a folder of TensorProto \
        .pb files such as an ONNX test_data_set_N folder) and from --input NAME=FILE (.npy or .pb, \
        repeatable, overriding --inputs). In a .pb folder, a file whose TensorProto has no name \
        feeds the model input at its position (input_0.pb is the first input).

        Every graph output is written under its own name: to an .npz archive, a .safetensors file, \
        or (any other --output path) a folder of output_N.pb files. Without --output, a summary of \
        each output is printed.

        \(CLIFailure.exitCodeHelp)
        """
    )

    @Argument(help: "The .onnx model file.")
    var model: String

    @Option(name: .long, help: "Feeds: an .npz, a .safetensors, or a folder of .pb files.")
    var inputs: String?

    @Option(name: .customLong("input"), help: "One feed, NAME=FILE with FILE an .npy or .pb (repeatable).")
    var input: [String] = []

    @Option(name: .long, help: "Where to write the outputs: OUT.npz, OUT.safetensors, or a folder for .pb files.")
    var output: String?

    @Option(help: "Seed for random ops.")
    var seed: UInt64 = 0

    func validate() throws {
        for item in input where !item.contains("=") || item.hasPrefix("=") || item.hasSuffix("=") {
            throw ValidationError("--input expects NAME=FILE, got '\(item)'")
        }
    }

    func run() throws {
        try CLIFailure.run {
            let m = try Model(contentsOf: model)
            let feeds = try readFeeds(for: m)
            var options = SessionOptions()
            options.seed = seed
            let results = try runModel(m, feeds: feeds.mapValues { Value.tensor($0) }, options: options)
            try write(results)
        }
    }

    /// Feeds from --inputs, then --input on top.
    func readFeeds(for model: Model) throws -> [String: Tensor] {
        var feeds: [String: Tensor] = [:]
        let positional = model.graph.feedInputs.map(\.name)
        if let inputs {
            var isDirectory: ObjCBool = false
            guard FileManager.default.fileExists(atPath: inputs, isDirectory: &isDirectory) else {
                throw OnnxTrainError.io("\(inputs): no such file or folder")
            }
            if isDirectory.boolValue {
                for (i, entry) in try TensorProtoFiles.readFolder(inputs, feeds: true).enumerated() {
                    let name = entry.name.isEmpty ? (i < positional.count ? positional[i] : "") : entry.name
                    guard !name.isEmpty else {
                        throw OnnxTrainError.invalidInput("\(entry.file): unnamed tensor at position \(i), but the model takes only \(positional.count) inputs")
                    }
                    feeds[name] = entry.tensor
                }
            } else if inputs.hasSuffix(".safetensors") {
                feeds = try SafeTensors.read(contentsOf: inputs).dictionary
            } else {
                for (name, tensor) in try Npz.read(contentsOf: inputs) { feeds[name] = tensor }
            }
        }
        for item in input {
            guard let eq = item.firstIndex(of: "=") else { continue }
            let name = String(item[..<eq]), file = String(item[item.index(after: eq)...])
            feeds[name] = file.hasSuffix(".pb") ? try TensorProtoFiles.read(contentsOf: file).tensor : try Npy.read(contentsOf: file)
        }
        return feeds
    }

    func write(_ results: [(name: String, value: Value)]) throws {
        var tensors: [(name: String, tensor: Tensor)] = []
        for (name, value) in results {
            guard let t = value.tensor else {
                throw OnnxTrainError.unsupported("output '\(name)' is \(value.summary); only tensor outputs can be written")
            }
            tensors.append((name, t))
        }
        guard let output else {
            for (name, t) in tensors { print("\(name): \(t.description) \(preview(t))") }
            return
        }
        if output.hasSuffix(".npz") {
            try Npz.write(tensors, to: output)
        } else if output.hasSuffix(".safetensors") {
            try SafeTensors.write(SafeTensorsFile(tensors: tensors), to: output)
        } else {
            try TensorProtoFiles.writeFolder(tensors, to: output, prefix: "output")
        }
    }

    /// The first few elements, for the summary printed without --output.
    private func preview(_ t: Tensor) -> String {
        let n = min(t.count, 8)
        let items: [String]
        switch t.dtype {
        case .string: items = t.strings.prefix(n).map { "\"\($0)\"" }
        // 64-bit integers printed exactly: through Double, 2^63 - 1 rounds up to 2^63 and Int64() traps.
        case .int64: items = Batches.rows(of: t.reshaped([t.count]), from: 0, count: n).scalars(as: Int64.self).map { "\($0)" }
        case .uint64: items = Batches.rows(of: t.reshaped([t.count]), from: 0, count: n).scalars(as: UInt64.self).map { "\($0)" }
        default: items = (0..<n).map { i in t.scalarDouble(at: i).map { t.dtype.isFloatingPoint ? "\($0)" : "\(Int64($0))" } ?? "?" }
        }
        return "[" + items.joined(separator: ", ") + (t.count > n ? ", ..." : "") + "]"
    }
}
