import Foundation
import XCTest
@testable import OnnxTrain
import OnnxTrainTestSupport

/// The library's training loop: schedules, metrics, gradient clipping, keep-best and early
/// stopping, step arithmetic, output folders, and resume bit for bit with Dropout.
final class TrainerTests: XCTestCase {
    static let repo: URL = {
        URL(fileURLWithPath: Fixtures.repository)
    }()
    static func path(_ relative: String) -> String { repo.appendingPathComponent(relative).path }
    static let dropout = path("Tests/Fixtures/training/mlp_dropout")
    static let digits = path("Examples/digits")

    var work: URL!

    override func setUpWithError() throws {
        work = FileManager.default.temporaryDirectory.appendingPathComponent("trainer-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: work, withIntermediateDirectories: true)
        addTeardownBlock { [work] in try? FileManager.default.removeItem(at: work!) }
    }

    func dir(_ name: String) -> String { work.appendingPathComponent(name).path }

    /// Module and optimizer over an artifact folder (or a given checkpoint), Dropout seeded by `seed`.
    func open(_ folder: String, checkpoint: String? = nil, seed: UInt64 = 0) throws -> (TrainingModule, Optimizer) {
        var options = SessionOptions()
        options.seed = seed
        let f = URL(fileURLWithPath: folder)
        let state = try CheckpointState.load(from: checkpoint ?? f.appendingPathComponent("checkpoint").path)
        let module = try TrainingModule(trainingModel: Model(contentsOf: f.appendingPathComponent("training_model.onnx").path), state: state,
                                        evalModel: Model(contentsOf: f.appendingPathComponent("eval_model.onnx").path), options: options)
        let optimizer = try Optimizer(path: f.appendingPathComponent("optimizer_model.onnx").path, module: module, options: options)
        return (module, optimizer)
    }

    // MARK: Schedules

    /// The schedules equal onnxruntime's LinearLRScheduler formula (and the cosine one) at every
    /// step, bit for bit, when joined after a warm-up.
    func testSchedulesAreComposedFunctionsOfTheStep() {
        let lr: Float = 0.01, warmup = 3, total = 11
        let linear = LearningRateSchedule.warmup(steps: warmup, then: .linearDecay(from: lr, steps: total - warmup))
        let cosine = LearningRateSchedule.warmup(steps: warmup, then: .cosineDecay(from: lr, steps: total - warmup))
        for s in 0...(total + 2) {
            XCTAssertEqual(linear(s), lr * LinearLRScheduler.factor(step: Int64(s), warmup: Int64(warmup), total: Int64(total)), "linear step \(s)")
            XCTAssertEqual(cosine(s), lr * CosineLRScheduler.factor(step: Int64(s), warmup: Int64(warmup), total: Int64(total), minRatio: 0), "cosine step \(s)")
        }
        XCTAssertEqual(linear(0), 0)
        XCTAssertEqual(linear(warmup), lr)
        XCTAssertEqual(linear(total), 0)
        XCTAssertEqual(cosine(warmup + (total - warmup) / 2) , lr * 0.5, accuracy: 1e-9)
        let joined = LearningRateSchedule.joined([.constant(1), .constant(2), .linearDecay(from: 4, steps: 4)], boundaries: [2, 5])
        XCTAssertEqual((0..<10).map { joined($0) }, [1, 1, 2, 2, 2, 4, 3, 2, 1, 0])
        XCTAssertEqual(LearningRateSchedule.cosineDecay(from: 1, steps: 10, minimum: 0.1)(10), 0.1, accuracy: 1e-7)
        XCTAssertTrue(linear.description.contains("linear warm-up to 0.01 over 3 steps"), linear.description)
    }

    // MARK: Metrics

    /// Accuracy, top-3 accuracy and the confusion matrix of the digits test set equal a count made
    /// here from the eval graph's logits over the whole set at once; the loss equals the
    /// whole-set loss (the Evaluator's batches are weighted by their examples).
    func testEvaluatorMetricsEqualAnIndependentCount() throws {
        let (module, _) = try open(Self.digits)
        let test = try Npz.readDictionary(contentsOf: Self.digits + "/test.npz")
        let evaluator = try Evaluator(module: module, batches: try Batches(arrays: test, names: module.evalInputNames, batchSize: 100), topK: 3)
        XCTAssertEqual(evaluator.labels, "labels")
        let result = try evaluator.run(module)
        XCTAssertEqual(evaluator.batches.count, 4)  // 100, 100, 100, 52

        let whole = try module.evalStep(named: ["input": test["input"]!, "labels": test["labels"]!])
        let logits = whole["output"]!.scalars(as: Float.self), labels = test["labels"]!.intValues()!
        var correct = 0, top3 = 0
        var confusion = [[Int]](repeating: [Int](repeating: 0, count: 10), count: 10)
        for (r, t) in labels.enumerated() {
            let row = Array(logits[(r * 10)..<(r * 10 + 10)])
            let ranked = row.indices.sorted { row[$0] > row[$1] }
            if ranked[0] == t { correct += 1 }
            if ranked.prefix(3).contains(t) { top3 += 1 }
            confusion[t][ranked[0]] += 1
        }
        XCTAssertEqual(result.examples, 352)
        XCTAssertEqual(result.accuracy, Double(correct) / 352)
        XCTAssertEqual(result.topK, 3)
        XCTAssertEqual(result.topKAccuracy, Double(top3) / 352)
        let m = try XCTUnwrap(result.confusion)
        for t in 0..<10 { for p in 0..<10 { XCTAssertEqual(m[t, p], confusion[t][p], "\(t) -> \(p)") } }
        XCTAssertEqual(m.support, (0..<10).map { c in labels.filter { $0 == c }.count })
        XCTAssertEqual(m.perClassAccuracy[3]!, Double(confusion[3][3]) / Double(m.support[3]), accuracy: 1e-15)
        // float32 batch means combined in double: a few float32 ulps apart at most.
        XCTAssertEqual(result.loss, Double(whole.loss), accuracy: 1e-6 * Double(whole.loss))
        XCTAssertNil(result.mae)
    }

    /// Float targets give MAE and RMSE. mlp_mse_sgd's eval graph outputs only the loss: the
    /// prediction is the value its MSELoss subtracts the targets from, fetched beside it.
    func testRegressionMetrics() throws {
        let folder = Self.path("Tests/Fixtures/training/mlp_mse_sgd")
        let (module, _) = try open(folder)
        let data = try Npz.readDictionary(contentsOf: folder + "/data.npz")
        let evaluator = try Evaluator(module: module, batches: try Batches(arrays: data, names: module.evalInputNames, batchSize: 8))
        XCTAssertEqual(evaluator.targets, "target")
        let fetched = try XCTUnwrap(evaluator.prediction)
        let result = try evaluator.run(module)
        let out = try module.evalStep(named: data, alsoFetching: [fetched])
        let prediction = try XCTUnwrap(out[fetched]).scalars(as: Float.self)
        XCTAssertEqual(prediction.count, 32 * 4)
        let target = "target"
        let truth = data[target]!.scalars(as: Float.self)
        let errors = zip(prediction, truth).map { Double($0) - Double($1) }
        // The evaluator's batches of 8 and this one batch of 32 are products of other sizes, which
        // may run on other kernels (OpenBLAS's Haswell kernels with `OPENBLAS_CORETYPE=Haswell`,
        // oneDNN's sgemm by block size beside them, `DnnlGemm`): predictions float32 rounding apart
        // (measured 1.3e-9 relative in the metrics); on OpenBLAS's AVX-512 kernels they agree.
        let mae = errors.map(abs).reduce(0, +) / Double(errors.count)
        let rmse = (errors.map { $0 * $0 }.reduce(0, +) / Double(errors.count)).squareRoot()
        XCTAssertEqual(result.mae!, mae, accuracy: 1e-7 * mae)
        XCTAssertEqual(result.rmse!, rmse, accuracy: 1e-7 * rmse)
        XCTAssertNil(result.accuracy)
    }

    // MARK: Gradient clipping

    /// The global norm reported equals a float64 sum over the gradients; after clipping the norm
    /// is bound·n/(n + 1e-6) and every gradient keeps its direction (InplaceClipGradNorm's rule).
    func testGradientClippingScalesToTheBound() throws {
        let (module, optimizer) = try open(Self.digits)
        let train = try Npz.readDictionary(contentsOf: Self.digits + "/train.npz")
        var c = Trainer.Configuration(batchSize: 32, steps: 1, learningRate: 0)
        c.shuffle = false
        let trainer = try Trainer(module: module, optimizer: optimizer, train: train, configuration: c)
        _ = try module.trainStep(named: trainer.batches.batch(0))
        func grads() -> [[Double]] { module.trainableParameters.map { $0.grad!.scalars(as: Float.self).map(Double.init) } }
        let before = grads()
        let norm = before.joined().map { $0 * $0 }.reduce(0, +).squareRoot()
        XCTAssertEqual(try trainer.clipGradients(to: norm * 2), norm, accuracy: 1e-9 * norm)
        XCTAssertEqual(grads(), before, "no change below the bound")
        let bound = norm / 4
        XCTAssertEqual(try trainer.clipGradients(to: bound), norm, accuracy: 1e-9 * norm)
        let after = grads()
        let clipped = after.joined().map { $0 * $0 }.reduce(0, +).squareRoot()
        // Each element is scaled in float32 (half an ulp, 6e-8 relative, per element).
        XCTAssertEqual(clipped, bound * norm / (norm + 1e-6), accuracy: 1e-6 * bound)
        let k = bound / (norm + 1e-6)
        for (a, b) in zip(after.joined(), before.joined()) { XCTAssertEqual(a, Double(Float(k) * Float(b)), accuracy: 0) }
    }

    // MARK: Resume bit for bit

    func dropoutConfiguration() -> Trainer.Configuration {
        // 60 examples in batches of 8: 7 full batches and one of 4, two batches per step (4 steps
        // an epoch); evaluations every 3 steps and at each epoch end.
        var c = Trainer.Configuration(batchSize: 8, steps: 30, learningRate: 0.02)
        c.accumulate = 2
        c.seed = 5
        c.clipGradNorm = 0.5
        c.evalEvery = 3
        c.keepBest = .evalLoss
        c.checkpointEvery = 4
        return c
    }

    func dropoutTrainer(_ c: Trainer.Configuration, checkpoint: String? = nil, seed: UInt64 = 9, resume: Bool = false) throws -> Trainer {
        let (module, optimizer) = try open(Self.dropout, checkpoint: checkpoint, seed: seed)
        let data = try Npz.readDictionary(contentsOf: Self.dropout + "/data.npz")
        let trainer = try Trainer(module: module, optimizer: optimizer, train: data, eval: data, configuration: c, resume: resume)
        trainer.schedule = .warmup(steps: 4, peak: c.learningRate, then: .cosineDecay(from: c.learningRate, steps: trainer.totalSteps - 4))
        return trainer
    }

    func files(_ folder: String) throws -> [String: Data] {
        var out: [String: Data] = [:]
        for name in ["metrics.csv", "params.safetensors", "best/checkpoint", "model.onnx", "loss.svg"] {
            out[name] = try Data(contentsOf: URL(fileURLWithPath: folder + "/" + name))
        }
        return out
    }

    /// A run with Dropout stopped at step 13 and resumed from its checkpoint in a new process-like
    /// setting (new module, new sessions) equals a straight run: metrics.csv, params, best/ and
    /// the plot byte for byte. Without the saved random state it would not: the check is sharp.
    func testDropoutRunStoppedAndResumedEqualsAStraightRun() throws {
        let c = dropoutConfiguration()
        let straight = try dropoutTrainer(c).run(in: try RunFolder(dir("straight"), existing: .refuse))
        XCTAssertEqual(straight.stop, .finished)
        XCTAssertEqual(straight.step, 30)
        XCTAssertEqual(straight.metrics.filter { $0.evalLoss != nil }.map(\.step), [0, 3, 4, 6, 8, 9, 12, 15, 16, 18, 20, 21, 24, 27, 28, 30])

        var first = c
        first.stopAfter = 13
        let half = try dropoutTrainer(first).run(in: try RunFolder(dir("halves"), existing: .refuse))
        XCTAssertEqual(half.stop, .stopAfter)
        XCTAssertEqual(half.step, 13)
        let checkpoint = dir("halves") + "/checkpoint"
        try FileManager.default.copyItem(atPath: dir("halves"), toPath: dir("norandom"))
        let resumed = try dropoutTrainer(c, checkpoint: checkpoint, resume: true)
        XCTAssertEqual(resumed.resumed?.step, 13)
        let rest = try resumed.run(in: try RunFolder(dir("halves"), existing: .resume))
        XCTAssertEqual(rest.startStep, 13)
        XCTAssertEqual(rest.step, 30)
        XCTAssertEqual(try files(dir("halves")), try files(dir("straight")))
        XCTAssertEqual(rest.metrics, straight.metrics)

        // The same resume without the saved random state draws other Dropout masks.
        let state = try CheckpointState.load(from: dir("norandom") + "/checkpoint")
        XCTAssertNotNil(state.properties[RunArtifacts.Resume.random])
        state.properties[RunArtifacts.Resume.random] = nil
        try state.save(to: dir("norandom") + "/checkpoint", includeOptimizerState: true)
        let other = try dropoutTrainer(c, checkpoint: dir("norandom") + "/checkpoint", resume: true).run(in: try RunFolder(dir("norandom"), existing: .resume))
        XCTAssertNotEqual(other.metrics.last?.loss, straight.metrics.last?.loss)
        XCTAssertEqual(Array(other.metrics.prefix(half.metrics.count)), half.metrics)
    }

    /// Early stopping: the eval loss of a far too large learning rate stops improving; the run
    /// stops after `patience` evaluations without a new best, and best/checkpoint holds the
    /// parameters whose eval loss was the best.
    func testEarlyStoppingKeepsTheBest() throws {
        var c = Trainer.Configuration(batchSize: 8, steps: 400, learningRate: 1.0)
        c.evalEvery = 2
        c.earlyStopPatience = 3
        c.keepBest = .evalLoss
        let trainer = try dropoutTrainer(c)
        trainer.schedule = .constant(1.0)
        var events: [String] = []
        trainer.onEvent = { if case .earlyStopped(let step, let metric, _, let patience) = $0 { events.append("\(step) \(metric.rawValue) \(patience)") } }
        let outcome = try trainer.run(in: try RunFolder(dir("early"), existing: .refuse))
        XCTAssertEqual(outcome.stop, .earlyStopped)
        XCTAssertLessThan(outcome.step, 400)
        let best = try XCTUnwrap(outcome.best)
        let evals = outcome.metrics.filter { $0.step > 0 && $0.evalLoss != nil }
        XCTAssertEqual(evals.suffix(3).map(\.step), [outcome.step - 4, outcome.step - 2, outcome.step])
        XCTAssertTrue(evals.suffix(3).allSatisfy { $0.evalLoss! >= best.value })
        XCTAssertEqual(evals.map(\.evalLoss!).min(), best.value)
        XCTAssertEqual(events, ["\(outcome.step) eval_loss 3"])
        // best/checkpoint evaluates to the best eval loss exactly.
        let (module, _) = try open(Self.dropout, checkpoint: dir("early") + "/best/checkpoint")
        let data = try Npz.readDictionary(contentsOf: Self.dropout + "/data.npz")
        let evaluator = try Evaluator(module: module, batches: trainer.evaluator!.batches)
        XCTAssertEqual(try evaluator.run(module.eval()).loss, best.value)
        XCTAssertEqual(data["input"]?.shape, [60, 16])
    }

    // MARK: Arithmetic and folders

    /// Step counts near Int.max are errors where they overflow, and checkpoints recording
    /// impossible progress (like step Int64.min) are refused.
    func testStepArithmeticAndRecordedProgressAreRangeChecked() throws {
        var c = Trainer.Configuration(batchSize: 8, epochs: Int.max, learningRate: 0.01)
        XCTAssertThrowsError(try dropoutTrainer(c)) { XCTAssertTrue("\($0)".contains("epochs of 8 batches are more steps than a run can count"), "\($0)") }
        c = Trainer.Configuration(batchSize: 8, steps: Int.max, learningRate: 0.01)
        c.accumulate = 2
        XCTAssertThrowsError(try dropoutTrainer(c)) { XCTAssertTrue("\($0)".contains("steps of 2 batches are more batches than a run can count"), "\($0)") }
        c.accumulate = 1
        c.stopAfter = 2
        let outcome = try dropoutTrainer(c).run()
        XCTAssertEqual(outcome.step, 2)
        XCTAssertEqual(outcome.totalSteps, Int.max)

        let state = try CheckpointState.load(from: Self.dropout + "/checkpoint")
        RunArtifacts.recordProgress(state, step: 3, batches: 3, seed: 1)
        XCTAssertEqual(try Trainer.Progress.read(state, label: "x")?.step, 3)
        state.properties[RunArtifacts.Resume.step] = .int(Int64.min)
        XCTAssertThrowsError(try Trainer.Progress.read(state, label: "--resume r")) {
            XCTAssertTrue("\($0)".contains("--resume r: the checkpoint's onnx_train.step property is -9223372036854775808, not a step count"), "\($0)")
        }
        // Resume reads progress through CheckpointState.runProgress(): a huge batch count is refused too.
        RunArtifacts.recordProgress(state, step: 3, batches: Int(Int64.max), seed: 1)
        XCTAssertThrowsError(try Trainer.Progress.read(state, label: "--resume r")) {
            XCTAssertTrue("\($0)".contains("--resume r: the checkpoint's onnx_train.batches property is 9223372036854775807"), "\($0)")
        }
    }

    /// An output folder: created, refused when it holds another run or a model's artifacts,
    /// locked while in use, and cleared of temporary files a killed save left.
    func testRunFolderRefusesLocksAndCleans() throws {
        let folder = dir("out")
        var held: RunFolder? = try RunFolder(folder, existing: .refuse)
        XCTAssertThrowsError(try RunFolder(folder, existing: .resume)) {
            XCTAssertTrue("\($0)".contains("--out \(folder) is being written by another onnx-train run (pid \(getpid()))"), "\($0)")
        }
        held = nil
        XCTAssertNil(held)
        try Data("x".utf8).write(to: URL(fileURLWithPath: folder + "/checkpoint"))
        try Data("partial".utf8).write(to: URL(fileURLWithPath: folder + "/checkpoint.tmp-4242"))
        XCTAssertThrowsError(try RunFolder(folder, existing: .refuse)) {
            XCTAssertTrue("\($0)".contains("already holds files (checkpoint, checkpoint.tmp-4242); give --overwrite"), "\($0)")
        }
        _ = try RunFolder(folder, existing: .resume)
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: folder).sorted(), [".onnx-train.lock", "checkpoint"])
        _ = try RunFolder(folder, existing: .overwrite)
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: folder), [".onnx-train.lock"])
        XCTAssertThrowsError(try RunFolder(Self.dropout, existing: .overwrite)) {
            XCTAssertTrue("\($0)".contains("holds training_model.onnx: it is a model's artifact folder"), "\($0)")
        }
    }

    /// metrics.csv rows reach the file as they are made (a kill keeps them), and a resumed run
    /// keeps exactly the rows its checkpoint covers.
    /// The per-epoch lines a program prints from `onEvent` (the examples do): the initial
    /// evaluation and every epoch's end, each one line with the epoch's mean train loss.
    func testEpochSummaries() throws {
        var c = dropoutConfiguration()
        c.steps = 8
        let trainer = try dropoutTrainer(c)
        var lines: [String] = []
        var trainLosses: [Double] = []
        trainer.onEvent = { event in
            if let line = event.epochSummary { lines.append(line) }
            if case .epochEnded(let e) = event { trainLosses.append(e.trainLoss ?? .nan) }
        }
        _ = try trainer.run()
        XCTAssertEqual(lines.count, 3, "\(lines)")
        XCTAssertTrue(lines[0].hasPrefix("epoch 0: eval loss "), lines[0])
        for (k, loss) in trainLosses.enumerated() {
            XCTAssertTrue(lines[k + 1].hasPrefix("epoch \(k + 1)/2 (step \(4 * (k + 1))): train loss \(String(format: "%.4f", loss)), eval loss "), lines[k + 1])
            XCTAssertFalse(lines[k + 1].contains("\n"))
        }
    }

    func testMetricsAreAppendedAsTheyCome() throws {
        let path = dir("m.csv")
        let log = try MetricsLog(path: path, rows: [RunMetric(step: 0, epoch: 0, loss: nil, learningRate: nil, evalLoss: 2)])
        try log.append(RunMetric(step: 1, epoch: 1, loss: 1.5, learningRate: 0.1))
        XCTAssertEqual(MetricsLog.read(path).map(\.step), [0, 1])
        try log.sync()
        XCTAssertEqual(try String(contentsOfFile: path, encoding: .utf8).split(separator: "\n").count, 3)
    }

    /// loss.svg: a log axis when the loss spans more than two decades (or when asked), and a
    /// second panel for the eval accuracy.
    func testPlotLogAxisAndMetricPanel() {
        var rows = (1...50).map { RunMetric(step: $0, epoch: 1, loss: 10 / Double($0 * $0), learningRate: 0.1) }
        rows[49].evalLoss = 0.01
        rows[49].evalAccuracy = 0.9
        let svg = LossPlot.svg(rows, title: "t")
        XCTAssertTrue(svg.contains(">loss (log)</text>"))
        XCTAssertTrue(svg.contains(">0.01</text>") && svg.contains(">10</text>"), "decade ticks")
        XCTAssertTrue(svg.contains(">accuracy (%)</text>") && svg.contains("eval accuracy (%)"))
        let flat = (1...5).map { RunMetric(step: $0, epoch: 1, loss: 2 - Double($0) * 0.1, learningRate: 0.1) }
        XCTAssertFalse(LossPlot.svg(flat, title: "t").contains("(log)"))
        XCTAssertTrue(LossPlot.svg(flat, title: "t", logScale: true).contains(">loss (log)</text>"))
        XCTAssertFalse(LossPlot.svg(flat, title: "t").contains("accuracy"))
    }
}

/// The README's Trainer snippet, as written there (run from a folder whose Examples/ is the repository's).
final class ReadmeTrainerExampleTests: XCTestCase {
    func testReadmeTrainerSnippet() throws {
        let work = FileManager.default.temporaryDirectory.appendingPathComponent("readme-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: work, withIntermediateDirectories: true)
        try FileManager.default.createSymbolicLink(atPath: work.appendingPathComponent("Examples").path, withDestinationPath: TrainerTests.path("Examples"))
        let previous = FileManager.default.currentDirectoryPath
        FileManager.default.changeCurrentDirectoryPath(work.path)
        defer {
            FileManager.default.changeCurrentDirectoryPath(previous)
            try? FileManager.default.removeItem(at: work)
        }

        let folder = "Examples/digits"   // an artifact folder from generate_artifacts
        let state = try CheckpointState.load(from: folder + "/checkpoint")
        let module = try TrainingModule(trainingModelPath: folder + "/training_model.onnx", state: state,
                                        evalModelPath: folder + "/eval_model.onnx")
        let optimizer = try Optimizer(path: folder + "/optimizer_model.onnx", module: module)

        // The loop `onnx-train run` uses: batching, shuffling, evaluation, checkpoints, resume.
        var configuration = Trainer.Configuration(batchSize: 32, epochs: 10, learningRate: 2e-3)
        configuration.keepBest = .evalAccuracy
        configuration.clipGradNorm = 5
        let trainer = try Trainer(module: module, optimizer: optimizer,
                                  train: try Npz.readDictionary(contentsOf: folder + "/train.npz"),
                                  eval: try Npz.readDictionary(contentsOf: folder + "/test.npz"),
                                  configuration: configuration)
        trainer.schedule = .warmup(steps: 45, then: .cosineDecay(from: 2e-3, steps: trainer.totalSteps - 45))
        trainer.onEvent = { if let line = $0.epochSummary { print(line) } }   // "epoch 1/10 (step 45): train loss ..."
        let outcome = try trainer.run(in: try RunFolder("runs/digits-swift", existing: .overwrite))
        if let best = outcome.best { print("best accuracy \(best.value) at step \(best.step)") }

        // Or one step at a time, as onnxruntime's Python API does:
        let batch = trainer.batches.batch(0)                       // ["input": [32, 64], "labels": [32]]
        let loss = try module.trainStep(named: batch).loss         // gradients accumulate until lazyResetGrad()
        try optimizer.step(); module.lazyResetGrad()
        try module.exportModelForInferencing(to: "model.onnx", outputs: ["output"])

        XCTAssertEqual(outcome.step, 450)
        XCTAssertGreaterThan(try XCTUnwrap(outcome.best).value, 0.95)
        XCTAssertTrue(loss.isFinite)
        XCTAssertEqual(batch["input"]?.shape, [32, 64])
        for name in ["checkpoint", "metrics.csv", "loss.svg", "report.html", "model.onnx", "params.safetensors", "best/checkpoint"] {
            XCTAssertTrue(FileManager.default.fileExists(atPath: "runs/digits-swift/" + name), name)
        }
        XCTAssertTrue(FileManager.default.fileExists(atPath: "model.onnx"))
    }
}
