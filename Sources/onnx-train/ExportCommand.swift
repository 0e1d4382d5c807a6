import ArgumentParser
import Foundation
import OnnxTrain

/// `onnx-train export PATH --output model.onnx`: an inference model with trained weights as initializers.
struct ExportCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "export",
        abstract: "Write an inference model: the eval graph (or a gradient graph's forward part) with the parameters as initializers.",
        discussion: """
            The model keeps the graph's outputs except the loss (or those given with --outputs) and \
            only the inputs they need. --params picks the parameters (a run's checkpoint, .npz or \
            .safetensors); by default an artifact folder's own checkpoint.

            \(CLIFailure.exitCodeHelp)
            """
    )

    @Argument(help: "Artifact folder, or gradient graph .onnx file.")
    var path: String

    @Option(help: "The .onnx file to write.")
    var output: String

    @Option(help: "Parameters: a checkpoint, .npz or .safetensors (required for gradient graphs).")
    var params: String?

    @Option(help: "Outputs to keep, comma-separated (default: every output but the loss).")
    var outputs: String?

    func run() throws {
        try CLIFailure.run {
            let module = try TrainingModule.forEvaluation(path: path, params: params)
            let chosen = outputs.map { $0.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) } } ?? RunArtifacts.inferenceOutputs(of: module)
            let directory = URL(fileURLWithPath: output).deletingLastPathComponent().path
            try? FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            try RunArtifacts.writeInferenceModel(module, to: output, outputs: chosen)
            print("wrote \(output): outputs \(chosen.joined(separator: ", ")), \(module.parameters.count) parameters as initializers")
        }
    }
}
