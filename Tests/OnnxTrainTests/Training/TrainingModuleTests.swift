import Foundation
import XCTest
@testable import OnnxTrain

/// The training API's semantics, point by point against onnxruntime's (module.cc, optimizer.cc,
/// lr_scheduler.cc) on the committed fixtures.
final class TrainingModuleTests: XCTestCase {
    static let root = TrainingFixtureTests.root

    func folder(_ name: String) -> URL { Self.root.appendingPathComponent("training/\(name)") }

    func artifact(_ name: String, checkpoint: String = "checkpoint", eval: Bool = false) throws -> (TrainingModule, Optimizer, [String: Tensor]) {
        let f = folder(name)
        let state = try CheckpointState.load(from: f.appendingPathComponent(checkpoint).path)
        let module = try TrainingModule(trainingModelPath: f.appendingPathComponent("training_model.onnx").path, state: state,
                                        evalModelPath: eval ? f.appendingPathComponent("eval_model.onnx").path : nil)
        let optimizer = try Optimizer(path: f.appendingPathComponent("optimizer_model.onnx").path, module: module)
        let data = try Npz.readDictionary(contentsOf: f.appendingPathComponent("data.npz").path)
        return (module, optimizer, try Batches(arrays: data, names: module.trainInputNames, batchSize: 8).batch(0))
    }

    func grads(_ module: TrainingModule) -> [[Float]] { module.trainableParameters.map { $0.grad!.scalars(as: Float.self) } }

    func testGradientsAccumulateUntilLazyReset() throws {
        let (module, _, batch) = try artifact("mlp_ce_sgd")
        XCTAssertEqual(module.trainableParameters.map(\.name), ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"])
        _ = try module.trainStep(named: batch)
        let once = grads(module)
        let expected = try Npz.readDictionary(contentsOf: folder("mlp_ce_sgd").appendingPathComponent("expected.npz").path)
        for (p, g) in zip(module.trainableParameters, once) {
            let want = expected["grad0:\(p.name)"]!.scalars(as: Float.self)
            XCTAssertLessThanOrEqual(TrainingFixtureTests.relativeDifference(g, want), 1e-5, p.name)
        }
        _ = try module.trainStep(named: batch)
        for (twice, g) in zip(grads(module), once) {
            XCTAssertLessThanOrEqual(TrainingFixtureTests.relativeDifference(twice, g.map { 2 * $0 }), 1e-6, "second step adds")
        }
        module.lazyResetGrad()
        XCTAssertEqual(grads(module)[0], zip(once[0], once[0]).map { $0 + $1 }, "lazyResetGrad zeroes nothing by itself")
        _ = try module.trainStep(named: batch)
        for (again, g) in zip(grads(module), once) {
            XCTAssertLessThanOrEqual(TrainingFixtureTests.relativeDifference(again, g), 1e-6, "the step after a reset overwrites")
        }
    }

    func testOptimizerStepAliasesParametersAndCountsSteps() throws {
        let (module, optimizer, batch) = try artifact("mlp_ce_sgd")
        XCTAssertEqual(optimizer.stateKeys, ["momentum0"])
        XCTAssertEqual(optimizer.learningRate, 1e-3)  // onnxruntime's default group lr
        optimizer.learningRate = 0.5
        let before = module.trainableParameters.map { $0.data.scalars(as: Float.self) }
        let storage = module.trainableParameters.map { $0.data.storage }
        _ = try module.trainStep(named: batch)
        XCTAssertTrue(try optimizer.step())
        XCTAssertEqual(optimizer.stepCount, 1)
        for (i, p) in module.trainableParameters.enumerated() {
            XCTAssertTrue(p.data.storage === storage[i], "updated in place")
            let g = p.grad!.scalars(as: Float.self)
            let want = zip(before[i], g).map { $0 - 0.5 * $1 }
            XCTAssertLessThanOrEqual(TrainingFixtureTests.relativeDifference(p.data.scalars(as: Float.self), want), 1e-6, p.name)
        }
        XCTAssertEqual(module.state.optimizerGroups["group0"]?.step, 1)
    }

    func testEvalStepAndExportForInference() throws {
        let (module, _, batch) = try artifact("mlp_ce_adamw", eval: true)
        XCTAssertEqual(module.evalInputNames, ["input", "labels"])
        let train = try module.trainStep(named: batch)
        module.eval()
        let eval = try module(module.evalInputNames.map { batch[$0]! })
        XCTAssertEqual(eval.loss, train.loss, accuracy: 1e-6 * abs(train.loss), "same forward, same parameters")

        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("export-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = dir.appendingPathComponent("inference.onnx").path
        try module.exportModelForInferencing(to: path, outputs: ["output"])
        let exported = try Model(contentsOf: path)
        XCTAssertEqual(exported.graph.inputs.map(\.name), ["input"], "labels are not needed for the logits")
        XCTAssertEqual(Set(exported.graph.initializerNames).isSuperset(of: ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"]), true)
        let logits = try InferenceSession(model: exported).run(tensors: ["input": batch["input"]!])["output"]!
        // Reference: the MLP written out, relu(x W1^T + b1) W2^T + b2, in Double.
        func p(_ n: String) -> Tensor { module.state.parameter(n)!.data }
        let x = batch["input"]!.scalars(as: Float.self), w1 = p("fc1.weight"), b1 = p("fc1.bias").scalars(as: Float.self)
        let w2 = p("fc2.weight"), b2 = p("fc2.bias").scalars(as: Float.self)
        let (h, d) = (w1.shape[0], w1.shape[1]), c = w2.shape[0]
        let W1 = w1.scalars(as: Float.self), W2 = w2.scalars(as: Float.self)
        var want: [Float] = []
        for r in 0..<8 {
            var hidden = [Double](repeating: 0, count: h)
            for j in 0..<h {
                var s = Double(b1[j])
                for k in 0..<d { s += Double(x[r * d + k]) * Double(W1[j * d + k]) }
                hidden[j] = max(0, s)
            }
            for j in 0..<c {
                var s = Double(b2[j])
                for k in 0..<h { s += hidden[k] * Double(W2[j * h + k]) }
                want.append(Float(s))
            }
        }
        XCTAssertEqual(logits.shape, [8, c])
        XCTAssertLessThanOrEqual(TrainingFixtureTests.relativeDifference(logits.scalars(as: Float.self), want), 1e-5)
        XCTAssertThrowsError(try module.exportModelForInferencing(outputs: ["nope"]))
    }

    func testContiguousBufferAndNominalCheckpoint() throws {
        let (module, _, batch) = try artifact("mlp_ce_adamw")
        XCTAssertEqual(module.parameterCount(), 32 * 16 + 32 + 4 * 32 + 4)
        let flat = try module.contiguousParameters()
        XCTAssertEqual(Array(flat.scalars(as: Float.self).prefix(3)), Array(module.parameters[0].data.scalars(as: Float.self).prefix(3)))
        let loss = try module.trainStep(named: batch).loss

        // A nominal checkpoint gets its shapes from the graph and its values from the buffer.
        let (nominal, _, _) = try artifact("mlp_ce_adamw", checkpoint: "nominal_checkpoint")
        XCTAssertEqual(nominal.state.parameter("fc1.weight")?.data.shape, [32, 16])
        XCTAssertThrowsError(try nominal.copyBufferToParameters(Tensor(zeros: .float32, shape: [3])))
        try nominal.copyBufferToParameters(flat)
        XCTAssertFalse(nominal.state.isNominal)
        XCTAssertEqual(try nominal.trainStep(named: batch).loss, loss)

        // Writing the buffer reaches the very tensors the graphs are fed (in place).
        let storage = module.parameters[0].data.storage
        try module.copyBufferToParameters(Tensor(zeros: .float32, shape: flat.shape))
        XCTAssertTrue(module.parameters[0].data.storage === storage)
        XCTAssertTrue(module.parameters.allSatisfy { $0.data.scalars(as: Float.self).allSatisfy { $0 == 0 } })
    }

    func testResumeFromSwiftCheckpointContinuesOnnxRuntimeTrajectory() throws {
        let f = folder("mlp_ce_adamw")
        let expected = try Npz.readDictionary(contentsOf: f.appendingPathComponent("expected.npz").path)
        let losses = expected["losses"]!.scalars(as: Float.self)
        let data = try Npz.readDictionary(contentsOf: f.appendingPathComponent("data.npz").path)
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("resume-\(UUID().uuidString).ckpt").path
        defer { try? FileManager.default.removeItem(atPath: path) }
        var start = "checkpoint"
        for half in 0..<2 {
            let state = try CheckpointState.load(from: half == 0 ? f.appendingPathComponent(start).path : path)
            let module = try TrainingModule(trainingModelPath: f.appendingPathComponent("training_model.onnx").path, state: state)
            let optimizer = try Optimizer(path: f.appendingPathComponent("optimizer_model.onnx").path, module: module)
            XCTAssertEqual(optimizer.stepCount, Int64(15 * half))
            optimizer.learningRate = 0.01  // not persisted, as in onnxruntime
            let batches = try Batches(arrays: data, names: module.trainInputNames, batchSize: 8)
            for step in (15 * half)..<(15 * half + 15) {
                let loss = try module.trainStep(named: batches.batch(step % batches.count)).loss
                try optimizer.step()
                module.lazyResetGrad()
                XCTAssertEqual(loss, losses[step], accuracy: 1e-6 * abs(losses[step]), "step \(step)")
            }
            try state.save(to: path, includeOptimizerState: true)
            start = path
        }
    }

    func testLinearSchedulerMatchesOnnxRuntime() throws {
        struct Reference: Decodable { let warmup: Int64; let total: Int64; let initial_lr: Float; let rates: [Double] }
        let ref = try JSONDecoder().decode(Reference.self, from: Data(contentsOf: Self.root.appendingPathComponent("optimizer_graphs/linear_lr.json")))
        let (module, optimizer, batch) = try artifact("mlp_ce_sgd")
        let scheduler = LinearLRScheduler(optimizer: optimizer, warmupStepCount: ref.warmup, totalStepCount: ref.total, initialLearningRate: ref.initial_lr)
        var rates = [optimizer.learningRate]
        for _ in 0..<(ref.rates.count - 1) {
            _ = try module.trainStep(named: batch)
            try optimizer.step()
            module.lazyResetGrad()
            scheduler.step()
            rates.append(optimizer.learningRate)
        }
        XCTAssertEqual(rates, ref.rates.map { Float($0) })
    }

    func testCosineSchedulerShape() throws {
        let (_, optimizer, _) = try artifact("mlp_ce_sgd")
        _ = CosineLRScheduler(optimizer: optimizer, warmupStepCount: 2, totalStepCount: 12, initialLearningRate: 0.2, minLearningRateRatio: 0.1)
        XCTAssertEqual(optimizer.learningRate, 0)
        XCTAssertEqual(CosineLRScheduler.factor(step: 1, warmup: 2, total: 12, minRatio: 0.1), 0.5)
        XCTAssertEqual(CosineLRScheduler.factor(step: 2, warmup: 2, total: 12, minRatio: 0.1), 1)
        XCTAssertEqual(CosineLRScheduler.factor(step: 7, warmup: 2, total: 12, minRatio: 0.1), 0.55, accuracy: 1e-6)  // half way: (1 + 0.1) / 2
        XCTAssertEqual(CosineLRScheduler.factor(step: 12, warmup: 2, total: 12, minRatio: 0.1), 0.1, accuracy: 1e-7)
        XCTAssertEqual(CosineLRScheduler.factor(step: 40, warmup: 2, total: 12, minRatio: 0.1), 0.1, accuracy: 1e-7)
    }

    /// The in-memory momentum and AdamW graphs against torch.optim.SGD(momentum=0.9) and a numpy
    /// Hugging Face AdamW (Tests/Fixtures/scripts/make_optimizer_graph_fixtures.py).
    func testBuiltOptimizerGraphsMatchReferences() throws {
        let g = Self.root.appendingPathComponent("gradient/mlp")
        let data = try Npz.readDictionary(contentsOf: g.appendingPathComponent("data.npz").path)
        for (name, kind, lr) in [("mlp_momentum", OptimizerGraph.Kind.sgdMomentum(momentum: 0.9), Float(0.1)), ("mlp_adamw", .adamW, 0.01)] {
            let expected = try Npz.readDictionary(contentsOf: Self.root.appendingPathComponent("optimizer_graphs/\(name).npz").path)
            let state = try CheckpointState.loadParameters(from: g.appendingPathComponent("params.npz").path)
            let module = try TrainingModule(gradientGraph: try Model(contentsOf: g.appendingPathComponent("gradient_graph.onnx").path), state: state)
            let optimizer = try Optimizer(kind, module: module)
            optimizer.learningRate = lr
            let batches = try Batches(arrays: data, names: module.trainInputNames, batchSize: 6)
            let losses = expected["losses"]!.scalars(as: Float.self)
            for step in 0..<losses.count {
                let loss = try module.trainStep(named: batches.batch(step % batches.count)).loss
                try optimizer.step()
                module.lazyResetGrad()
                XCTAssertEqual(loss, losses[step], accuracy: 1e-6 * abs(losses[step]), "\(name) step \(step)")
            }
            var worst = 0.0
            for p in state.parameters {
                let d = TrainingFixtureTests.relativeDifference(p.data.scalars(as: Float.self), expected["param:\(p.name)"]!.scalars(as: Float.self))
                worst = max(worst, d)
                XCTAssertLessThanOrEqual(d, 1e-4, "\(name) \(p.name)")
            }
            print("[optimizer graph \(name)] \(losses.count) steps: max relative parameter difference \(worst)")
        }
    }

    func testConstructionErrorsNameTheProblem() throws {
        let f = folder("mlp_ce_sgd")
        let wrong = try CheckpointState.load(from: Self.root.appendingPathComponent("checkpoint/mlp/ort_full.ckpt").path)
        XCTAssertThrowsError(try TrainingModule(trainingModelPath: f.appendingPathComponent("training_model.onnx").path, state: wrong)) { error in
            XCTAssertTrue("\(error)".contains("'fc1.weight' has shape [5, 4], the graph expects [32, 16]"), "\(error)")
        }
        let (module, _, batch) = try artifact("mlp_ce_sgd")
        XCTAssertThrowsError(try module.trainStep(named: ["input": batch["input"]!])) { error in
            XCTAssertTrue("\(error)".contains("missing input 'labels' (it takes: input, labels)"), "\(error)")
        }
        XCTAssertThrowsError(try module.evalStep([]))  // no eval model
    }

    func testGradientGraphParametersMustCoverTheGraph() throws {
        let g = Self.root.appendingPathComponent("gradient/mlp")
        let graph = try Model(contentsOf: g.appendingPathComponent("gradient_graph.onnx").path)
        let all = try Npz.read(contentsOf: g.appendingPathComponent("params.npz").path)
        let partial = try CheckpointState(trainable: all.filter { $0.name != "fc2.bias" }.map { ($0.name, $0.tensor) })
        XCTAssertThrowsError(try TrainingModule(gradientGraph: graph, state: partial)) { error in
            XCTAssertTrue("\(error)".contains("the parameters do not fit this graph: they lack 'fc2.bias'"), "\(error)")
        }
        // A frozen parameter is fed but not trained.
        let mixed = try CheckpointState(trainable: all.filter { $0.name != "fc1.bias" }.map { ($0.name, $0.tensor) },
                                        frozen: all.filter { $0.name == "fc1.bias" }.map { ($0.name, $0.tensor) })
        let module = try TrainingModule(gradientGraph: graph, state: mixed)
        XCTAssertEqual(module.trainableParameters.map(\.name), ["fc1.weight", "fc2.weight", "fc2.bias"])
        let optimizer = try Optimizer(.sgd, module: module)
        optimizer.learningRate = 0.5
        let data = try Npz.readDictionary(contentsOf: g.appendingPathComponent("data.npz").path)
        let before = mixed.parameter("fc1.bias")!.data.scalars(as: Float.self)
        _ = try module.trainStep(named: try Batches(arrays: data, names: module.trainInputNames, batchSize: 6).batch(0))
        try optimizer.step()
        XCTAssertEqual(mixed.parameter("fc1.bias")!.data.scalars(as: Float.self), before)
        XCTAssertNotEqual(mixed.parameter("fc1.weight")!.data.scalars(as: Float.self), all[0].tensor.scalars(as: Float.self))
    }
}
