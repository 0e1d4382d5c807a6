import Foundation
import XCTest
@testable import OnnxTrain

/// Artifacts built by onnx-train (`TrainingArtifacts.build`) from the same inference model that
/// onnxruntime-training 1.19.2's `generate_artifacts` was given train like onnxruntime's own
/// artifacts: the 30-step losses and final parameters of Tests/Fixtures/training/<case> match
/// within the fixture tests' bounds, and the first-step gradients match onnxruntime's.
extension TrainingFixtureTests {
    /// The inference model behind a fixture: onnxruntime's eval graph up to the model output
    /// ("output", as the fixture script exports it), with the checkpoint's parameters as initializers.
    static func inferenceModel(_ folder: URL) throws -> Model {
        var model = try Model(contentsOf: folder.appendingPathComponent("eval_model.onnx").path)
        let state = try CheckpointState.load(from: folder.appendingPathComponent("checkpoint").path)
        var (graph, needed) = try model.graph.pruned(to: ["output"], label: "eval model", outputsForHelp: [])
        graph.outputs = [ValueInfo(name: "output", type: nil)]
        var inputs: [ValueInfo] = []
        for info in graph.inputs where needed.contains(info.name) {
            if let p = state.parameter(info.name) { graph.setInitializer(info.name, p.data.copied()) } else { inputs.append(info) }
        }
        graph.inputs = inputs
        model.graph = graph
        model.path = nil
        return model
    }

    func builtArtifact(_ name: String, file: StaticString = #filePath, line: UInt = #line) throws {
        let folder = Self.root.appendingPathComponent("training/\(name)")
        let (meta, data, expected) = try load(folder)
        let json = try JSONSerialization.jsonObject(with: Data(contentsOf: folder.appendingPathComponent("meta.json"))) as? [String: Any]
        let loss: TrainingArtifacts.Loss = try {
            switch json?["loss"] as? String {
            case "CrossEntropyLoss": return .crossEntropy
            case "MSELoss": return .mse
            case "L1Loss": return .l1
            case "BCEWithLogitsLoss": return .bceWithLogits
            case let other: throw OnnxTrainError.invalidInput("unknown fixture loss \(other ?? "nil")")
            }
        }()
        let kind: OptimizerGraph.Kind = meta.optimizer == "sgd" ? .sgd : .adamW
        let artifacts = try TrainingArtifacts.build(from: try Self.inferenceModel(folder), options: .init(loss: loss, optimizer: kind))
        let ortState = try CheckpointState.load(from: folder.appendingPathComponent("checkpoint").path)
        XCTAssertEqual(artifacts.checkpoint.parameterNames, ortState.parameterNames, "\(name): parameters", file: file, line: line)
        XCTAssertEqual(artifacts.trainable, ortState.parameters.filter(\.requiresGrad).map(\.name), "\(name): trainable", file: file, line: line)
        let module = try TrainingModule(trainingModel: artifacts.trainingModel, state: artifacts.checkpoint, evalModel: artifacts.evalModel)
        XCTAssertEqual(module.trainInputNames, meta.user_inputs, file: file, line: line)
        let optimizer = try Optimizer(model: artifacts.optimizerModel, module: module)
        _ = try replay(module, optimizer, meta: meta, data: data, expected: expected, name: "built " + name, file: file, line: line)
    }

    func testBuiltArtifactsMLPCrossEntropyAdamW() throws { try builtArtifact("mlp_ce_adamw") }
    func testBuiltArtifactsMLPCrossEntropySGD() throws { try builtArtifact("mlp_ce_sgd") }
    func testBuiltArtifactsMLPMSEAdamW() throws { try builtArtifact("mlp_mse_adamw") }
    func testBuiltArtifactsMLPMSESGD() throws { try builtArtifact("mlp_mse_sgd") }
    func testBuiltArtifactsMLPL1AdamW() throws { try builtArtifact("mlp_l1_adamw") }
    func testBuiltArtifactsMLPL1SGD() throws { try builtArtifact("mlp_l1_sgd") }
    func testBuiltArtifactsMLPBCEAdamW() throws { try builtArtifact("mlp_bce_adamw") }
    func testBuiltArtifactsMLPBCESGD() throws { try builtArtifact("mlp_bce_sgd") }
    func testBuiltArtifactsCNN() throws { try builtArtifact("cnn_nobias_ce_adamw") }
    func testBuiltArtifactsCNNWithConvBias() throws { try builtArtifact("cnn_ce_adamw") }
    func testBuiltArtifactsGPT() throws { try builtArtifact("gpt_ce_adamw") }
    func testBuiltArtifactsLSTM() throws { try builtArtifact("lstm_ce_adamw") }
    func testBuiltArtifactsGRU() throws { try builtArtifact("gru_ce_adamw") }
    func testBuiltArtifactsBidirectionalLSTM() throws { try builtArtifact("bilstm2_ce_adamw") }
    func testBuiltArtifactsBidirectionalGRU() throws { try builtArtifact("bigru2_ce_adamw") }
    func testBuiltArtifactsResNet() throws { try builtArtifact("resnet_ce_adamw") }
}
