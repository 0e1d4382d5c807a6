import ArgumentParser
import Foundation
import OnnxTrain

/// `onnx-train run PATH`: trains onnxruntime artifacts or a gradient graph on an .npz file.
struct RunCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Train an onnxruntime artifact folder or a gradient graph on data from an .npz file.",
        discussion: """
            PATH is a folder from onnxruntime's generate_artifacts (checkpoint, training_model.onnx, \
            optimizer_model.onnx) or a gradient graph .onnx (then --params gives the parameters). \
            Batches: the first user input's first axis divided by --batch-size gives the batch count; \
            every array is cut along its first axis into that many equal parts. --steps cycles \
            through the batches (in order with --no-shuffle, else the examples are reshuffled every pass \
            with a seeded generator). \
            Each step is a train step, an optimizer step and a lazy gradient reset. The checkpoint \
            (with optimizer state) goes to --out; if the loss stops being finite, training stops and \
            --out keeps the state after the last good step.

            \(CLIFailure.exitCodeHelp)
            """
    )

    @Argument(help: "Artifact folder, or gradient graph .onnx file.")
    var path: String

    @Option(help: "Training data: an .npz with one array per user input of the training graph.")
    var data: String

    @Option(name: .customLong("batch-size"), help: "Rows of the first user input per step.")
    var batchSize: Int

    @Option(help: "Optimizer steps to take (or give --epochs).")
    var steps: Int?

    @Option(help: "Passes over the training data (steps = epochs x batches).")
    var epochs: Int?

    @Option(name: .customLong("eval-data"), help: "Held-out .npz: the eval graph runs over it before training and after every epoch (loss, and accuracy for class labels).")
    var evalData: String?

    @Option(help: "Learning rate (the peak rate with --schedule linear/cosine).")
    var lr: Float

    @Flag(name: .customLong("no-shuffle"), help: "Take the batches in file order (default: reshuffle the examples every pass).")
    var noShuffle = false

    @Option(help: "Seed for the batch order (without --no-shuffle) and random ops.")
    var seed: UInt64 = 0

    @Option(help: "Write a CSV log here: step,loss,learning_rate,batch (one row per optimizer step).")
    var log: String?

    @Option(help: "Folder that receives the checkpoint after the run.")
    var out: String?

    @Option(name: .customLong("checkpoint-every"), help: "Also write --out's checkpoint every N steps (atomically), so an interrupted run loses at most N steps.")
    var checkpointEvery: Int?

    @Option(help: "Gradient graphs: initial parameters (.npz, .safetensors or an onnxruntime checkpoint). Artifact folders: a checkpoint to start from instead of PATH/checkpoint.")
    var params: String?

    @Option(help: "Gradient graphs: the optimizer graph to build (sgd, momentum, adamw).")
    var optimizer: OptimizerChoice?

    @Option(help: "Learning-rate schedule: constant, linear (onnxruntime's LinearLRScheduler) or cosine.")
    var schedule: Schedule = .constant

    @Option(help: "Warm-up steps for --schedule linear/cosine.")
    var warmup: Int = 0

    enum OptimizerChoice: String, ExpressibleByArgument, CaseIterable {
        case sgd, momentum, adamw
    }

    enum Schedule: String, ExpressibleByArgument, CaseIterable {
        case constant, linear, cosine
    }

    func validate() throws {
        guard batchSize > 0 else { throw ValidationError("--batch-size must be positive") }
        switch (steps, epochs) {
        case (nil, nil): throw ValidationError("give --steps or --epochs")
        case (.some, .some): throw ValidationError("give --steps or --epochs, not both")
        case (let s?, nil) where s <= 0: throw ValidationError("--steps must be positive")
        case (nil, let e?) where e <= 0: throw ValidationError("--epochs must be positive")
        default: break
        }
        guard lr.isFinite, lr >= 0 else { throw ValidationError("--lr must be a finite, non-negative number") }
        guard warmup >= 0 else { throw ValidationError("--warmup must not be negative") }
        if let checkpointEvery {
            guard checkpointEvery > 0 else { throw ValidationError("--checkpoint-every must be positive") }
            guard out != nil else { throw ValidationError("--checkpoint-every needs --out") }
        }
    }

    func run() throws {
        try CLIFailure.run {
            let session = try TrainingRun.open(path: path, params: params, optimizer: optimizer?.kind, seed: seed, withEval: evalData != nil)
            try session.train(dataPath: data, evalPath: evalData, batchSize: batchSize, steps: steps, epochs: epochs, lr: lr,
                              shuffle: !noShuffle, seed: seed, schedule: schedule.rawValue, warmup: warmup, logPath: log, outDirectory: out,
                              checkpointEvery: checkpointEvery)
        }
    }
}

extension RunCommand.OptimizerChoice {
    var kind: OptimizerGraph.Kind {
        switch self {
        case .sgd: return .sgd
        case .momentum: return .sgdMomentum(momentum: 0.9)
        case .adamw: return .adamW
        }
    }
}

/// The training loop behind `run`, kept apart from argument parsing.
struct TrainingRun {
    let module: TrainingModule
    let optimizer: Optimizer
    let label: String

    static func open(path: String, params: String?, optimizer choice: OptimizerGraph.Kind?, seed: UInt64, withEval: Bool) throws -> TrainingRun {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
            throw OnnxTrainError.io("\(path): no such file or folder")
        }
        var options = SessionOptions()
        options.seed = seed
        if isDirectory.boolValue {
            if choice != nil {
                throw OnnxTrainError.invalidInput("--optimizer applies to gradient graphs; \(path) brings its own optimizer_model.onnx")
            }
            let folder = URL(fileURLWithPath: path)
            func file(_ name: String) throws -> String {
                let p = folder.appendingPathComponent(name).path
                guard FileManager.default.fileExists(atPath: p) else {
                    throw OnnxTrainError.io("\(path) is not an artifact folder: it has no \(name)")
                }
                return p
            }
            let state = try CheckpointState.load(from: try params ?? file("checkpoint"))
            // The eval model is loaded only when asked for: some valid artifact folders carry one
            // onnxruntime itself refuses (BatchNorm with running-stat outputs in eval mode).
            let evalModel = withEval ? try Model(contentsOf: try file("eval_model.onnx")) : nil
            let module = try TrainingModule(trainingModel: try Model(contentsOf: try file("training_model.onnx")), state: state,
                                            evalModel: evalModel, options: options)
            let optimizer = try Optimizer(path: try file("optimizer_model.onnx"), module: module, options: options)
            return TrainingRun(module: module, optimizer: optimizer, label: path)
        }
        let graph = try Model(contentsOf: path)
        let state: CheckpointState
        if let params {
            state = try CheckpointState.loadParameters(from: params)
        } else {
            state = try CheckpointState.initialized(for: graph, seed: seed)
            print("no --params: initialised \(state.parameters.count) parameters as PyTorch's Linear layers (uniform ±1/sqrt(fan_in)), seed \(seed)")
        }
        let module = try TrainingModule(gradientGraph: graph, state: state, options: options)
        let optimizer = try Optimizer(choice ?? .sgd, module: module, options: options)
        return TrainingRun(module: module, optimizer: optimizer, label: path)
    }

    func train(dataPath: String, evalPath: String?, batchSize: Int, steps requestedSteps: Int?, epochs: Int?, lr: Float,
               shuffle: Bool, seed: UInt64, schedule: String, warmup: Int, logPath: String?, outDirectory: String?,
               checkpointEvery: Int? = nil) throws {
        let arrays = try Npz.readDictionary(contentsOf: dataPath)
        let batches: Batches
        do {
            batches = try Batches(arrays: arrays, names: module.trainInputNames, batchSize: batchSize)
        } catch let error as OnnxTrainError {
            throw error.prefixed(dataPath)
        }
        try TrainingData.check(batches, module: module, dataPath: dataPath)
        let steps = requestedSteps ?? (epochs ?? 1) * batches.count
        var evaluation: Evaluation?
        if let evalPath {
            let arrays = try Npz.readDictionary(contentsOf: evalPath)
            do {
                evaluation = try Evaluation(module: module, batches: try Batches(arrays: arrays, names: module.evalInputNames, batchSize: batchSize))
            } catch let error as OnnxTrainError {
                throw error.prefixed(evalPath)
            }
            print(try evaluation!.run(module).line(prefix: "epoch 0 (initial):"))
        }
        var epochLosses: [Double] = []
        let clock = ContinuousClock()
        var epochStart = clock.now

        optimizer.learningRate = lr
        optimizer.initialLearningRate = lr
        let linear = schedule == "linear" ? LinearLRScheduler(optimizer: optimizer, warmupStepCount: Int64(warmup), totalStepCount: Int64(steps), initialLearningRate: lr) : nil
        let cosine = schedule == "cosine" ? CosineLRScheduler(optimizer: optimizer, warmupStepCount: Int64(warmup), totalStepCount: Int64(steps), initialLearningRate: lr) : nil

        for directory in [outDirectory, logPath.map { URL(fileURLWithPath: $0).deletingLastPathComponent().path }].compactMap({ $0 }) {
            do {
                try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            } catch {
                throw OnnxTrainError.io("cannot create the folder \(directory): \(error.localizedDescription)")
            }
        }
        var logFile: LogFile?
        if let logPath {
            logFile = try LogFile(path: logPath)
            try logFile?.write("step,loss,learning_rate,batch\n")
        }
        var random = RandomGenerator(seed: seed)
        // Shuffling permutes the examples every pass (or, when some array has rows that do not
        // split per example, the batch order).
        let perExample = batches.examplesSeparable
        var order = Array(0..<(perExample ? batches.exampleCount : batches.count))
        module.train()
        let frozen = module.parameters.filter { !$0.requiresGrad }
        for step in 0..<steps {
            let position = step % batches.count
            if shuffle && position == 0 {
                // Fisher-Yates with the seeded generator: one new order per pass over the data.
                for i in stride(from: order.count - 1, to: 0, by: -1) {
                    order.swapAt(i, Int(random.next() % UInt64(i + 1)))
                }
            }
            let batch = shuffle && perExample ? position : order[position]
            // Frozen parameters (BatchNorm running statistics) change in place during the
            // forward pass; keep them to restore if this step fails.
            let saved = frozen.map { $0.data.copied() }
            let lrUsed = optimizer.learningRate
            do {
                let outputs = try module.trainStep(named: shuffle && perExample ? batches.batch(position, order: order) : batches.batch(batch))
                let loss = outputs.loss
                guard loss.isFinite else {
                    throw OnnxTrainError.training("the loss is \(loss) at step \(step + 1) (batch \(batch))")
                }
                try optimizer.step()
                module.lazyResetGrad()
                try logFile?.write("\(step + 1),\(loss),\(lrUsed),\(batch)\n")
                epochLosses.append(Double(loss))
            } catch let error as OnnxTrainError {
                for (p, t) in zip(frozen, saved) { try? p.copy(from: t) }
                module.lazyResetGrad()
                var message = error.message
                if !message.contains("step \(step + 1)") { message = "step \(step + 1): \(message)" }
                if let outDirectory, step > 0 {
                    try save(to: outDirectory)
                    message += "; stopped, \(outDirectory)/checkpoint holds the state after step \(step)"
                } else {
                    message += "; stopped before any update, nothing was written"
                }
                throw OnnxTrainError(error.kind == .kernel || error.kind == .training ? .training : error.kind, message)
            }
            linear?.step()
            cosine?.step()
            if let outDirectory, let every = checkpointEvery, (step + 1) % every == 0, step + 1 < steps {
                try save(to: outDirectory)
            }
            if position == batches.count - 1 || step == steps - 1 {
                let epoch = step / batches.count + 1
                let seconds = (clock.now - epochStart).components
                let elapsed = Double(seconds.seconds) + Double(seconds.attoseconds) * 1e-18
                var line = "epoch \(epoch) (step \(step + 1)): train loss \(format(epochLosses.reduce(0, +) / Double(max(epochLosses.count, 1))))"
                if let evaluation { line += ", " + (try evaluation.run(module).line(prefix: "")).trimmingCharacters(in: .whitespaces) }
                print(line + String(format: " (%.2f s)", elapsed))
                epochLosses.removeAll()
                epochStart = clock.now
            }
        }
        if let outDirectory { try save(to: outDirectory) }
    }

    func save(to directory: String) throws {
        try module.state.save(to: URL(fileURLWithPath: directory).appendingPathComponent("checkpoint").path, includeOptimizerState: true)
    }
}

func format(_ x: Double) -> String { String(format: "%.4f", x) }

/// The eval graph over held-out data: mean loss, and accuracy when the labels are class indices
/// and an output holds one row of scores per label.
struct Evaluation {
    let batches: Batches
    let labels: String?

    struct Result {
        let loss: Double
        let accuracy: Double?
        func line(prefix: String) -> String {
            "\(prefix) eval loss \(format(loss))" + (accuracy.map { String(format: ", accuracy %.1f%%", $0 * 100) } ?? "")
        }
    }

    init(module: TrainingModule, batches: Batches) throws {
        guard module.evalModel != nil else { throw OnnxTrainError.invalidInput("--eval-data needs an eval model") }
        self.batches = batches
        // Labels: what a SoftmaxCrossEntropyLoss / NegativeLogLikelihoodLoss reads from the data.
        let graph = module.evalModel!.graph
        labels = graph.nodes.first { ($0.opType == "SoftmaxCrossEntropyLoss" || $0.opType == "NegativeLogLikelihoodLoss") && $0.inputs.count > 1 && batches.names.contains($0.inputs[1]) }?.inputs[1]
            ?? batches.names.first { $0 == "labels" && batches.arrays[$0]?.dtype.isInteger == true }
    }

    func run(_ module: TrainingModule) throws -> Result {
        var loss = 0.0, correct = 0, counted = 0
        for k in 0..<batches.count {
            let batch = batches.batch(k)
            let out = try module.evalStep(named: batch)
            loss += Double(out.loss)
            guard let labels, let truth = batch[labels]?.intValues() else { continue }
            // Scores: the first output other than the loss with one row per label.
            guard let i = out.names.indices.first(where: { out.names[$0] != out.lossName && out.values[$0].rank == 2 && out.values[$0].shape[0] == truth.count && out.values[$0].dtype == .float32 }) else { continue }
            let scores = out.values[i], classes = scores.shape[1]
            scores.withUnsafeBufferPointer(as: Float.self) { s in
                for (r, t) in truth.enumerated() where t >= 0 && t < classes {
                    var best = 0
                    for c in 1..<max(classes, 1) where s[r * classes + c] > s[r * classes + best] { best = c }
                    if best == t { correct += 1 }
                    counted += 1
                }
            }
        }
        return Result(loss: loss / Double(max(batches.count, 1)), accuracy: counted > 0 ? Double(correct) / Double(counted) : nil)
    }
}

/// Checks the data against the training graph before any step runs.
enum TrainingData {
    static func check(_ batches: Batches, module: TrainingModule, dataPath: String) throws {
        let graph = module.trainingModel.graph
        let declared = Dictionary(graph.inputs.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
        let first = batches.batch(0)
        for name in batches.names {
            guard let t = first[name], case .tensor(let dtype, let dims)? = declared[name]?.type else { continue }
            let whole = batches.arrays[name]!
            let expected = "\(dtype.map { "tensor(\($0))" } ?? "tensor") [\(dims?.map(\.description).joined(separator: ", ") ?? "...")]"
            if let dtype, dtype != t.dtype {
                throw OnnxTrainError.invalidInput("\(dataPath): array '\(name)' is tensor(\(t.dtype)) \(whole.shape); the graph input '\(name)' is \(expected)")
            }
            if let dims {
                let fits = dims.count == t.rank && zip(dims, t.shape).allSatisfy { d, n in
                    if case .value(let v) = d { return v == n } else { return true }
                }
                guard fits else {
                    throw OnnxTrainError.invalidInput("\(dataPath): array '\(name)' \(whole.shape) gives batches of shape \(t.shape) (\(batches.rows[name]!) rows each); the graph input '\(name)' is \(expected)")
                }
            }
        }
        try checkLabels(batches, module: module, dataPath: dataPath)
    }

    /// Labels of SoftmaxCrossEntropyLoss / NegativeLogLikelihoodLoss fed straight from the data
    /// must be class indices (or the node's ignore_index). The class count comes from a forward
    /// pass of the nodes that compute the scores, on copies of the parameters (so nothing that
    /// updates in place, like BatchNorm statistics, is touched).
    static func checkLabels(_ batches: Batches, module: TrainingModule, dataPath: String) throws {
        let graph = module.trainingModel.graph
        for node in graph.nodes where node.domain.isEmpty && (node.opType == "SoftmaxCrossEntropyLoss" || node.opType == "NegativeLogLikelihoodLoss") {
            guard node.inputs.count >= 2, batches.names.contains(node.inputs[1]), let labels = batches.arrays[node.inputs[1]] else { continue }
            guard let values = labels.intValues() else { continue }
            let ignore: Int? = {
                if case .int(let v)? = node.attributes["ignore_index"] { return v }
                return nil
            }()
            let scores = try module.probe(node.inputs[0], feeds: batches.batch(0))
            guard scores.rank >= 2 else { continue }
            let classes = scores.shape[1]
            for (i, v) in values.enumerated() where v != ignore && (v < 0 || v >= classes) {
                let what = node.opType + (node.name.isEmpty ? "" : " '\(node.name)'")
                throw OnnxTrainError.invalidInput("\(dataPath): array '\(node.inputs[1])' holds label \(v) at element \(i), outside the \(classes) classes of \(what)\(ignore.map { " (ignore_index \($0))" } ?? "")")
            }
        }
    }
}

/// An append-only text file flushed after every write, so a crash keeps every logged row.
final class LogFile {
    let handle: FileHandle
    let path: String

    init(path: String) throws {
        self.path = path
        guard FileManager.default.createFile(atPath: path, contents: nil), let handle = FileHandle(forWritingAtPath: path) else {
            throw OnnxTrainError.io("cannot create the log file \(path)")
        }
        self.handle = handle
    }

    func write(_ text: String) throws {
        do {
            try handle.write(contentsOf: Data(text.utf8))
            try handle.synchronize()
        } catch {
            throw OnnxTrainError.io("cannot write the log file \(path): \(error.localizedDescription)")
        }
    }

    deinit { try? handle.close() }
}
