// TrainMLP: trains the `digits` example (onnxruntime artifacts for a 64-256-128-10 MLP) through the
// OnnxTrain training API, the way onnxruntime's Python API would:
//
//     state = CheckpointState.load_checkpoint("checkpoint")
//     module = Module("training_model.onnx", state, "eval_model.onnx")
//     optimizer = Optimizer("optimizer_model.onnx", module)
//     scheduler = LinearLRScheduler(optimizer, warmup, total, lr)
//     for batch in batches: module(*batch); optimizer.step(); scheduler.step(); module.lazy_reset_grad()
//
// Usage: swift run TrainMLP [ARTIFACT_DIR] [EPOCHS]   (default Examples/digits, 3 epochs)
// Writes runs/TrainMLP/checkpoint (with optimizer state) and runs/TrainMLP/inference.onnx.
import Foundation
import OnnxTrain

let arguments = CommandLine.arguments
let folder = arguments.count > 1 ? arguments[1]
    : URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("digits").path
let epochs = arguments.count > 2 ? Int(arguments[2]) ?? 3 : 3
let batchSize = 32
let output = "runs/TrainMLP"

func path(_ name: String) -> String { URL(fileURLWithPath: folder).appendingPathComponent(name).path }

do {
    let state = try CheckpointState.load(from: path("checkpoint"))
    let module = try TrainingModule(trainingModelPath: path("training_model.onnx"), state: state,
                                    evalModelPath: path("eval_model.onnx"))
    let optimizer = try Optimizer(path: path("optimizer_model.onnx"), module: module)
    print("\(module.parameterCount()) trainable parameters; inputs \(module.trainInputNames); loss '\(module.lossName)'")

    let train = try Batches(arrays: try Npz.readDictionary(contentsOf: path("train.npz")), names: module.trainInputNames, batchSize: batchSize)
    let test = try Batches(arrays: try Npz.readDictionary(contentsOf: path("test.npz")), names: module.evalInputNames, batchSize: batchSize)
    let totalSteps = Int64(epochs * train.count)
    let scheduler = LinearLRScheduler(optimizer: optimizer, warmupStepCount: Int64(train.count / 2),
                                      totalStepCount: totalSteps, initialLearningRate: 0.002)

    /// Mean eval loss and accuracy over the test set (argmax of the `output` logits).
    func evaluate() throws -> (Float, Float) {
        module.eval()
        defer { module.train() }
        var loss: Float = 0, correct = 0, total = 0
        for k in 0..<test.count {
            let batch = test.batch(k)
            let out = try module(module.evalInputNames.map { batch[$0]! })
            loss += out.loss
            guard let logits = out["output"], let labels = batch["labels"]?.intValues() else { continue }
            let scores = logits.scalars(as: Float.self), classes = logits.shape[1]
            for (row, label) in labels.enumerated() {
                let slice = scores[(row * classes)..<((row + 1) * classes)]
                if slice.firstIndex(of: slice.max()!)! - row * classes == label { correct += 1 }
                total += 1
            }
        }
        return (loss / Float(test.count), Float(correct) / Float(max(total, 1)))
    }

    var (loss, accuracy) = try evaluate()
    print("epoch 0: test loss \(loss), accuracy \(accuracy * 100)%")
    module.train()
    for epoch in 1...epochs {
        var trainLoss: Float = 0
        for k in 0..<train.count {
            trainLoss += try module.trainStep(named: train.batch(k)).loss
            try optimizer.step()
            scheduler.step()
            module.lazyResetGrad()
        }
        (loss, accuracy) = try evaluate()
        print("epoch \(epoch): train loss \(trainLoss / Float(train.count)), test loss \(loss), accuracy \(accuracy * 100)%, lr \(optimizer.learningRate)")
    }

    try FileManager.default.createDirectory(atPath: output, withIntermediateDirectories: true)
    state.properties["epochs"] = .int(Int64(epochs))
    state.properties["test_accuracy"] = .float(accuracy)
    try state.save(to: "\(output)/checkpoint", includeOptimizerState: true)
    try module.exportModelForInferencing(to: "\(output)/inference.onnx", outputs: ["output"])
    print("wrote \(output)/checkpoint and \(output)/inference.onnx")
} catch {
    FileHandle.standardError.write(Data("TrainMLP: error: \(error)\n".utf8))
    exit(1)
}
