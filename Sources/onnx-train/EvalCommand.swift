import ArgumentParser
import Foundation
import OnnxTrain

/// `onnx-train eval PATH --data DATA`: the eval graph over a data set (loss, and accuracy for class labels).
struct EvalCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "eval",
        abstract: "Evaluate an artifact folder or a gradient graph on a data set: mean loss, and accuracy for integer labels.",
        discussion: """
            PATH is an artifact folder (its eval_model.onnx runs) or a gradient graph (its forward \
            part runs). --params picks the parameters: a run's checkpoint (runs/<name>/checkpoint), \
            an .npz or .safetensors file; by default the folder's own checkpoint.

            \(CLIFailure.exitCodeHelp)
            """
    )

    @Argument(help: "Artifact folder, or gradient graph .onnx file.")
    var path: String

    @Option(help: "Data: .npz, .safetensors, .csv, or a folder of .pb TensorProto files.")
    var data: String

    @Option(help: "Parameters: a checkpoint, .npz or .safetensors (required for gradient graphs).")
    var params: String?

    @Option(help: "Graph inputs fed from arrays with other names: input=x,labels=y.")
    var map: String?

    @OptionGroup var csvOptions: CSVOptions

    @Option(name: .customLong("batch-size"), help: "Examples per eval step (default 256; lowered to divide the data).")
    var batchSize: Int = 256

    func validate() throws {
        guard batchSize > 0 else { throw ValidationError("--batch-size must be positive") }
    }

    func run() throws {
        try CLIFailure.run {
            let module = try TrainingModule.forEvaluation(path: path, params: params)
            let csv = csvOptions.columns
            let arrays = try DataSource.load(data, names: module.evalInputNames, map: try map.map(DataSource.parseMap) ?? [:], csv: csv)
            let evaluation: Evaluation
            do {
                let n = arrays[module.evalInputNames.first ?? ""]?.shape.first ?? 0
                evaluation = try Evaluation(module: module, batches: try Batches(arrays: arrays, names: module.evalInputNames,
                                                                                  batchSize: DataSource.evalBatchSize(examples: n, preferred: batchSize)))
            } catch let error as OnnxTrainError {
                throw error.prefixed(data)
            }
            let result = try evaluation.run(module.eval())
            print("\(evaluation.batches.exampleCount) examples:" + result.line(prefix: ""))
            if let k = result.firstNonFiniteBatch {
                let b = evaluation.batches, first = k * b.batchSize
                throw OnnxTrainError.invalidInput("the eval loss is \(result.loss.isNaN ? "nan" : "\(result.loss)"): batch \(k + 1) of \(b.count) (examples \(first)..<\(first + b.examples(inBatch: k)) of \(data)) gave a non-finite loss; the parameters or the data hold NaN or infinite values, or the loss overflowed")
            }
        }
    }
}
