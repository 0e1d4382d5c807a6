import ArgumentParser
import Foundation
import OnnxTrain

/// `onnx-train artifacts MODEL --loss ... --optimizer ... --out DIR`: makes any inference model
/// trainable, writing what onnxruntime-training's `generate_artifacts` writes.
struct ArtifactsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "artifacts",
        abstract: "Make an inference model trainable: write training_model.onnx, eval_model.onnx, optimizer_model.onnx and checkpoint.",
        discussion: """
            The loss reads the model's first output (or --output): cross-entropy adds an int64 \
            input 'labels' (class indices), mse, l1 and bce-with-logits add an input 'target' of \
            the output's shape; output:NAME uses a scalar the model already computes. By default \
            every floating-point initializer of rank >= 1 that reaches the loss is trained, except \
            BatchNormalization running statistics, which are kept in the checkpoint and updated in \
            place as in PyTorch's training mode. The files follow onnxruntime-training's \
            conventions, so onnxruntime-training 1.19.2 trains them too; train them here with \
            `onnx-train run DIR`.

            \(CLIFailure.exitCodeHelp)
            """
    )

    @Argument(help: "The inference model (.onnx).")
    var model: String

    @Option(help: "cross-entropy, mse, l1, bce-with-logits, or output:NAME.")
    var loss: String

    @Option(help: "adamw (AdamWOptimizer, onnxruntime's defaults) or sgd (SGDOptimizerV2).")
    var optimizer: String = "adamw"

    @Option(help: "The folder to write the artifacts into.")
    var out: String

    @Option(name: .customLong("requires-grad"), help: "Parameters to train, comma-separated (default: every eligible initializer).")
    var requiresGrad: String?

    @Option(help: "Initializers to keep fixed but store in the checkpoint, comma-separated.")
    var frozen: String?

    @Option(help: "The model output the loss reads (default: the first output).")
    var output: String?

    @Flag(name: .customLong("gradient-graph"), help: "Also write gradient_graph.onnx (export_gradient_graph's form).")
    var gradientGraph = false

    func run() throws {
        try CLIFailure.run {
            var options = TrainingArtifacts.Options(loss: try TrainingArtifacts.Loss(parsing: loss),
                                                    optimizer: try ArtifactsCommand.optimizerKind(optimizer),
                                                    requiresGrad: requiresGrad.map(ArtifactsCommand.list),
                                                    frozen: frozen.map(ArtifactsCommand.list) ?? [])
            options.output = output
            let artifacts = try TrainingArtifacts.build(from: try Model(contentsOf: model), options: options)
            try artifacts.write(to: out, gradientGraph: gradientGraph)
            for warning in artifacts.warnings { CLIFailure.warn(warning) }
            let count = artifacts.checkpoint.parameters.filter(\.requiresGrad).reduce(0) { $0 + $1.data.count }
            print("wrote \(out): training_model.onnx, eval_model.onnx, optimizer_model.onnx, checkpoint\(gradientGraph ? ", gradient_graph.onnx" : "")")
            print("trained: \(artifacts.trainable.count) parameters (\(count) values); frozen: \(artifacts.frozen.isEmpty ? "none" : artifacts.frozen.joined(separator: ", "))")
            let labels = artifacts.trainingModel.graph.feedInputs.map(\.name).filter { ["labels", "target"].contains($0) }
            print("loss: \(loss)\(labels.isEmpty ? "" : " (label input: \(labels.joined(separator: ", ")))"); optimizer: \(OptimizerDescription.describe(artifacts.optimizerModel))")
        }
    }

    static func list(_ text: String) -> [String] {
        text.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
    }

    static func optimizerKind(_ text: String) throws -> OptimizerGraph.Kind {
        switch text.lowercased() {
        case "adamw": return .adamW
        case "sgd": return .sgd
        default: throw OnnxTrainError.invalidInput("unknown optimizer '\(text)' (use adamw or sgd)")
        }
    }
}
