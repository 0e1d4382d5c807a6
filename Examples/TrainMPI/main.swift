// TrainMPI: the digits MLP trained data-parallel through the library: the `Trainer` of TrainMLP
// with an `MPIGroup` (OnnxTrainMPI) as its `dataParallel` group. Each of the N processes takes 16
// examples of every global batch of 16 x N; their gradients are averaged before each optimizer
// step, so the parameters stay identical everywhere; rank 0 prints and writes.
//
// Usage: mpirun -np 2 .build/release/TrainMPI [ARTIFACT_DIR] [EPOCHS] [OUT]
//        (default Examples/digits, 2 epochs, runs/TrainMPI); without mpirun it trains alone.
import Foundation
import OnnxTrain
import OnnxTrainMPI

let arguments = CommandLine.arguments
let folder = arguments.count > 1 ? arguments[1]
    : URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("digits").path
let epochs = arguments.count > 2 ? Int(arguments[2]) ?? 2 : 2
let output = arguments.count > 3 ? arguments[3] : "runs/TrainMPI"

func path(_ name: String) -> String { URL(fileURLWithPath: folder).appendingPathComponent(name).path }

var group: MPIGroup?
do {
    group = try MPIGroup.joinIfLaunched()
    let isMain = group?.isMainProcess ?? true
    // Every process loads the same model and data; the Trainer broadcasts rank 0's parameters.
    let state = try CheckpointState.load(from: path("checkpoint"))
    let module = try TrainingModule(trainingModelPath: path("training_model.onnx"), state: state,
                                    evalModelPath: path("eval_model.onnx"))
    let optimizer = try Optimizer(path: path("optimizer_model.onnx"), module: module)

    var configuration = Trainer.Configuration(batchSize: 16, epochs: epochs, learningRate: 0.002)
    configuration.title = "TrainMPI: digits"
    let trainer = try Trainer(module: module, optimizer: optimizer,
                              train: try Npz.readDictionary(contentsOf: path("train.npz")),
                              eval: try Npz.readDictionary(contentsOf: path("test.npz")),
                              configuration: configuration, dataParallel: group)
    if isMain {
        print("\(group?.size ?? 1) process(es), global batch \(trainer.globalBatchSize), \(trainer.totalSteps) steps")
    }
    // Events reach rank 0 only.
    trainer.onEvent = { event in if let line = event.epochSummary { print(line) } }
    let outcome = try trainer.run(in: isMain ? try RunFolder(output, existing: .overwrite) : nil)
    if isMain { print("wrote \(output)/: " + outcome.files.joined(separator: ", ")) }
    group?.finish()
} catch {
    FileHandle.standardError.write(Data("TrainMPI: error: \(error)\n".utf8))
    // Other processes may be waiting for this one in a collective: end them all.
    group?.abort(code: 1)
    exit(1)
}
