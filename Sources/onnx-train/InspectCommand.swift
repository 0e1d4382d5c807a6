import ArgumentParser
import OnnxTrain

/// `onnx-train inspect MODEL`: what a model declares and which of its ops have kernels.
struct InspectCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "inspect",
        abstract: "Print a model's metadata, inputs, outputs, initializers and operators.",
        discussion: CLIFailure.exitCodeHelp
    )

    @Argument(help: "The .onnx model file.")
    var model: String

    func run() throws {
        try CLIFailure.run {
            let m = try Model(contentsOf: model)
            print("ir_version: \(m.irVersion)")
        }
    }
}
