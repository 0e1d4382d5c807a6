import ArgumentParser
import OnnxTrain

/// `onnx-train inspect MODEL`: what a model declares and which of its ops have kernels.
struct InspectCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "inspect",
        abstract: "Print a model's metadata, inputs, outputs, initializers and operators.",
        discussion: """
        Operators are counted per domain, including the nodes of subgraphs (If/Loop/Scan bodies) \
        and of model-local functions. Operators without a kernel for the model's opset are listed \
        under "not yet supported"; inspect still succeeds.

        \(CLIFailure.exitCodeHelp)
        """
    )

    @Argument(help: "The .onnx model file.")
    var model: String

    func run() throws {
        try CLIFailure.run {
            let m = try Model(contentsOf: model)
            print(ModelSummary(m).text(path: model), terminator: "")
        }
    }
}
