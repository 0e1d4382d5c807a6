// TrainMLP: trains the `digits` example (onnxruntime artifacts for a 64-256-128-10 MLP) through the
// OnnxTrain library: the model as onnxruntime's Python API builds it, and the library's Trainer
// (the loop `onnx-train run` uses) for batching, shuffling, the schedule, evaluation and saving:
//
//     state = CheckpointState.load_checkpoint("checkpoint")
//     module = Module("training_model.onnx", state, "eval_model.onnx")
//     optimizer = Optimizer("optimizer_model.onnx", module)
//
// Usage: swift run -c release TrainMLP [ARTIFACT_DIR] [EPOCHS]   (default Examples/digits, 3 epochs)
// Writes runs/TrainMLP/ (checkpoint with optimizer state, metrics.csv, loss.svg, report.html,
// model.onnx, params.safetensors, best/).
import Foundation
import OnnxTrain

let arguments = CommandLine.arguments
let folder = arguments.count > 1 ? arguments[1]
    : URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("digits").path
let epochs = arguments.count > 2 ? Int(arguments[2]) ?? 3 : 3
let output = "runs/TrainMLP"

func path(_ name: String) -> String { URL(fileURLWithPath: folder).appendingPathComponent(name).path }

do {
    let state = try CheckpointState.load(from: path("checkpoint"))
    let module = try TrainingModule(trainingModelPath: path("training_model.onnx"), state: state,
                                    evalModelPath: path("eval_model.onnx"))
    let optimizer = try Optimizer(path: path("optimizer_model.onnx"), module: module)
    print("\(module.parameterCount()) trainable parameters; inputs \(module.trainInputNames); loss '\(module.lossName)'")

    var configuration = Trainer.Configuration(batchSize: 32, epochs: epochs, learningRate: 0.002)
    configuration.keepBest = .evalAccuracy
    configuration.clipGradNorm = 5
    configuration.title = "TrainMLP: digits"
    let trainer = try Trainer(module: module, optimizer: optimizer,
                              train: try Npz.readDictionary(contentsOf: path("train.npz")),
                              eval: try Npz.readDictionary(contentsOf: path("test.npz")),
                              configuration: configuration)
    // Half an epoch of linear warm-up, then onnxruntime's linear decay to 0.
    let warmup = trainer.batches.count / 2
    trainer.schedule = .warmup(steps: warmup, then: .linearDecay(from: 0.002, steps: trainer.totalSteps - warmup))
    trainer.onEvent = { event in if let line = event.epochSummary { print(line) } }
    let outcome = try trainer.run(in: try RunFolder(output, existing: .overwrite))
    if let best = outcome.best { print(String(format: "best accuracy %.1f%% at step %d", best.value * 100, best.step)) }
    print("wrote \(output)/: " + outcome.files.joined(separator: ", "))
} catch {
    FileHandle.standardError.write(Data("TrainMLP: error: \(error)\n".utf8))
    exit(1)
}
