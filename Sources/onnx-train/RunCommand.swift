import ArgumentParser
import Foundation
import OnnxTrain

/// `onnx-train run PATH`: trains onnxruntime artifacts or a gradient graph on an .npz file.
struct RunCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Train an onnxruntime artifact folder or a gradient graph.",
        discussion: """
            PATH is a folder from onnxruntime's generate_artifacts (checkpoint, training_model.onnx, \
            optimizer_model.onnx, eval_model.onnx) or a gradient graph .onnx (then --params gives the \
            parameters, else they are initialised as PyTorch initialises its layers). \
            Data: .npz or .safetensors (arrays named after the graph's user inputs, or --map), a CSV \
            table (--features, --label), or a folder of TensorProto .pb files. \
            Batches: the first user input's first axis divided by --batch-size gives the batch count; \
            every array is cut along its first axis into that many equal parts. The examples are \
            reshuffled every pass with --seed (or kept in order with --no-shuffle). \
            Each optimizer step follows --accumulate train steps, then a lazy gradient reset. \
            --out (default runs/<name>-<time>) receives checkpoint, metrics.csv, loss.svg, model.onnx \
            and params.safetensors. Ctrl-C stops after the current step, saves, and prints the \
            command that resumes (exit code 130). If the loss stops being finite, training stops and --out keeps \
            the state after the last good step.

            \(CLIFailure.exitCodeHelp)
            """
    )

    @Argument(help: "Artifact folder, or gradient graph .onnx file.")
    var path: String

    @Option(help: "Training data: .npz, .safetensors, .csv, or a folder of .pb TensorProto files.")
    var data: String

    @Option(help: "Graph inputs fed from arrays with other names: input=x,labels=y.")
    var map: String?

    @Option(help: "CSV data: the feature columns, comma-separated (default: every column but the label).")
    var features: String?

    @Option(help: "CSV data: the label column (default: the last column that is not a feature).")
    var label: String?

    @Option(name: .customLong("batch-size"), help: "Rows of the first user input per step.")
    var batchSize: Int

    @Option(help: "Optimizer steps to take (or give --epochs).")
    var steps: Int?

    @Option(help: "Passes over the training data.")
    var epochs: Int?

    @Flag(name: .customLong("drop-last"), help: "Drop the examples past the last whole batch (else they must divide evenly).")
    var dropLast = false

    @Option(name: .customLong("eval-data"), help: "Held-out data: the eval graph runs over it before training and after every epoch (loss, and accuracy for integer labels).")
    var evalData: String?

    @Option(name: .customLong("eval-split"), help: "Hold out this fraction of --data (its last examples) as the eval set, e.g. 0.1.")
    var evalSplit: Double?

    @Option(help: "Learning rate (the peak rate with --schedule linear/cosine).")
    var lr: Float

    @Option(name: .customLong("weight-decay"), help: "Gradient graphs with --optimizer adamw: weight decay (default 0).")
    var weightDecay: Float?

    @Option(help: "Gradient graphs with --optimizer momentum: the momentum (default 0.9).")
    var momentum: Float?

    @Option(help: "Gradient graphs with --optimizer adamw: beta1,beta2 (default 0.9,0.999).")
    var betas: String?

    @Option(help: "Train steps per optimizer step (gradient accumulation; the gradients add up).")
    var accumulate: Int = 1

    @Flag(name: .customLong("no-shuffle"), help: "Take the batches in file order (default: reshuffle the examples every pass).")
    var noShuffle = false

    @Option(help: "Seed for the batch order (without --no-shuffle), initialisation and random ops.")
    var seed: UInt64 = 0

    @Option(help: "Also write a CSV log here: step,loss,learning_rate,batch (one row per optimizer step).")
    var log: String?

    @Option(help: "Output folder (default runs/<name>-<UTC time>).")
    var out: String?

    @Option(name: .customLong("checkpoint-every"), help: "Also save --out every N steps (atomically), so an interrupted run loses at most N steps.")
    var checkpointEvery: Int?

    @Option(help: "Continue the run saved in this folder: parameters, optimizer state, step and data order (same flags as the first run).")
    var resume: String?

    @Option(help: "Gradient graphs: initial parameters (.npz, .safetensors or an onnxruntime checkpoint). Artifact folders: a checkpoint to start from instead of PATH/checkpoint.")
    var params: String?

    @Option(help: "Gradient graphs: the optimizer graph to build (sgd, momentum, adamw).")
    var optimizer: OptimizerChoice?

    @Option(name: [.customLong("schedule"), .customLong("lr-schedule")], help: "Learning-rate schedule: constant, linear (onnxruntime's LinearLRScheduler) or cosine.")
    var schedule: Schedule = .constant

    @Option(help: "Warm-up steps for --schedule linear/cosine.")
    var warmup: Int = 0

    @Option(name: .customLong("stop-after"), help: "Stop after this step and save, as Ctrl-C does (continue later with --resume; the schedule still spans --steps/--epochs).")
    var stopAfter: Int?

    @Option(name: .customLong("print-every"), help: "Without a terminal: print a line every N steps (default: 20 lines per run).")
    var printEvery: Int?

    @Flag(help: "Print only the final summary.")
    var quiet = false

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
        guard accumulate > 0 else { throw ValidationError("--accumulate must be positive") }
        if let checkpointEvery, checkpointEvery <= 0 { throw ValidationError("--checkpoint-every must be positive") }
        if let printEvery, printEvery <= 0 { throw ValidationError("--print-every must be positive") }
        if evalData != nil && evalSplit != nil { throw ValidationError("give --eval-data or --eval-split, not both") }
        if let evalSplit, !(evalSplit > 0 && evalSplit < 1) { throw ValidationError("--eval-split must be between 0 and 1, like 0.1") }
        if weightDecay != nil || betas != nil, optimizer != .adamw { throw ValidationError("--weight-decay and --betas apply to --optimizer adamw") }
        if momentum != nil, optimizer != .momentum { throw ValidationError("--momentum applies to --optimizer momentum") }
        if let betas, parseBetas(betas) == nil { throw ValidationError("--betas takes two numbers in [0, 1), like 0.9,0.999") }
        if let weightDecay, !(weightDecay.isFinite && weightDecay >= 0) { throw ValidationError("--weight-decay must be a finite, non-negative number") }
        if let momentum, !(momentum >= 0 && momentum < 1) { throw ValidationError("--momentum must be in [0, 1)") }
        if resume != nil && params != nil { throw ValidationError("--resume brings its own parameters; drop --params") }
        if let stopAfter, stopAfter <= 0 { throw ValidationError("--stop-after must be positive") }
    }

    func parseBetas(_ text: String) -> (Float, Float)? {
        let parts = text.split(separator: ",").map { Float($0.trimmingCharacters(in: .whitespaces)) }
        guard parts.count == 2, let b1 = parts[0], let b2 = parts[1], (0..<1).contains(b1), (0..<1).contains(b2) else { return nil }
        return (b1, b2)
    }

    var optimizerKind: OptimizerGraph.Kind? {
        switch optimizer {
        case nil: return nil
        case .sgd: return .sgd
        case .momentum: return .sgdMomentum(momentum: momentum ?? 0.9)
        case .adamw:
            let (b1, b2) = betas.flatMap(parseBetas) ?? (0.9, 0.999)
            return .adamW(beta1: b1, beta2: b2, weightDecay: weightDecay ?? 0)
        }
    }

    func run() throws {
        try CLIFailure.run {
            let reporter = RunReporter(mode: RunReporter.mode(quiet: quiet), totalSteps: steps ?? 0, every: printEvery)
            let resumed = try resume.map { try ResumePoint.load(from: $0) }
            let session = try TrainingRun.open(path: path, params: resumed?.checkpointPath ?? params, optimizer: optimizerKind, seed: seed,
                                               withEval: evalData != nil || evalSplit != nil, say: reporter.say, resuming: resume)
            let names = session.module.trainInputNames
            let dataMap = try map.map(DataSource.parseMap) ?? [:]
            let csv = DataSource.CSVColumns(features: features.map { $0.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) } }, label: label)
            var train = try DataSource.load(data, names: names, map: dataMap, csv: csv)
            var eval: [String: Tensor]?
            if let evalData {
                eval = try DataSource.load(evalData, names: session.module.evalInputNames, map: dataMap, csv: csv)
            } else if let evalSplit {
                (train, eval) = try DataSource.split(train, names: names, evalFraction: evalSplit, label: data)
                reporter.say("eval split: the last \(Int((evalSplit * 100).rounded()))% of \(data) is held out")
            }
            if dropLast { train = try DataSource.dropLast(train, names: names, batchSize: batchSize, label: data) }
            let directory = out ?? resume ?? RunArtifacts.defaultDirectory(for: path)
            try RunArtifacts.prepare(directory: directory)
            var settings = RunSettings(batchSize: batchSize, steps: steps, epochs: epochs, lr: lr, shuffle: !noShuffle, seed: resumed?.seed ?? seed,
                                       schedule: schedule.rawValue, warmup: warmup, logPath: log, outDirectory: directory,
                                       checkpointEvery: checkpointEvery, accumulate: accumulate)
            settings.resume = resumed
            settings.stopAfter = stopAfter
            settings.dataLabel = data
            settings.evalLabel = evalData ?? (evalSplit != nil ? "\(data) (eval split)" : nil)
            try session.train(train: train, eval: eval, settings: settings, reporter: reporter)
        }
    }
}

/// Where a saved run stopped (`--resume DIR`).
struct ResumePoint {
    let directory: String
    let checkpointPath: String
    let steps: Int
    let batches: Int
    let seed: UInt64
    let metrics: [RunMetric]
    let batching: String?

    static func load(from directory: String) throws -> ResumePoint {
        let path = URL(fileURLWithPath: directory).appendingPathComponent(RunArtifacts.checkpointName).path
        guard FileManager.default.fileExists(atPath: path) else {
            throw OnnxTrainError.io("--resume \(directory): no checkpoint there (expected the --out folder of an earlier onnx-train run)")
        }
        let state = try CheckpointState.load(from: path)
        guard case .int(let steps)? = state.properties[RunArtifacts.Resume.step], case .int(let batches)? = state.properties[RunArtifacts.Resume.batches],
              case .int(let seed)? = state.properties[RunArtifacts.Resume.seed] else {
            throw OnnxTrainError.invalidInput("--resume \(directory): the checkpoint was not saved by onnx-train run (no step count in its properties); start from it with --params instead")
        }
        let metricsPath = URL(fileURLWithPath: directory).appendingPathComponent(RunArtifacts.metricsName).path
        let metrics = (try? String(contentsOfFile: metricsPath, encoding: .utf8)).map { RunArtifacts.parseMetrics($0) }?.filter { $0.step <= Int(steps) } ?? []
        var batching: String?
        if case .string(let b)? = state.properties[RunArtifacts.Resume.batching] { batching = b }
        return ResumePoint(directory: directory, checkpointPath: path, steps: Int(steps), batches: Int(batches), seed: UInt64(bitPattern: seed),
                           metrics: metrics, batching: batching)
    }
}

/// The settings of one training run.
struct RunSettings {
    var batchSize: Int
    var steps: Int?
    var epochs: Int?
    var lr: Float
    var shuffle: Bool
    var seed: UInt64
    var schedule: String
    var warmup: Int
    var logPath: String?
    var outDirectory: String
    var checkpointEvery: Int?
    var accumulate: Int = 1
    var resume: ResumePoint?
    var dataLabel = "data"
    var evalLabel: String?
    var stopAfter: Int?

    /// What fixes the data order besides the seed; `--resume` insists on the same.
    var batching: String {
        "--batch-size \(batchSize) --accumulate \(accumulate)" + (shuffle ? "" : " --no-shuffle")
    }
}

/// The training loop behind `run`, kept apart from argument parsing.
struct TrainingRun {
    let module: TrainingModule
    let optimizer: Optimizer
    let label: String

    static func open(path: String, params: String?, optimizer choice: OptimizerGraph.Kind?, seed: UInt64, withEval: Bool,
                     say: (String) -> Void = { print($0) }, resuming: String? = nil) throws -> TrainingRun {
        do {
            return try openUnchecked(path: path, params: params, optimizer: choice, seed: seed, withEval: withEval, say: say, initialise: resuming == nil)
        } catch let error as OnnxTrainError where resuming != nil && (error.kind == .training || error.kind == .invalidModel) {
            throw OnnxTrainError.invalidInput("--resume \(resuming!): its checkpoint does not fit \(path) (\(error.message)); resume from a run of the same model")
        }
    }

    static func openUnchecked(path: String, params: String?, optimizer choice: OptimizerGraph.Kind?, seed: UInt64, withEval: Bool,
                              say: (String) -> Void, initialise: Bool) throws -> TrainingRun {
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
            let checkpoint = try params ?? file("checkpoint")
            let trainingModel = try Model(contentsOf: try file("training_model.onnx"))
            let module: TrainingModule
            if withEval {
                module = try TrainingModule(trainingModel: trainingModel, state: try CheckpointState.load(from: checkpoint),
                                            evalModel: try Model(contentsOf: try file("eval_model.onnx")), options: options)
            } else {
                // Without evaluation the eval model only serves model.onnx: some valid artifact
                // folders carry one that cannot run (BatchNorm with running-stat outputs in eval
                // mode), and then the run goes on without it.
                let evalPath = folder.appendingPathComponent("eval_model.onnx").path
                if let withEvalModel = try? TrainingModule(trainingModel: trainingModel, state: try CheckpointState.load(from: checkpoint),
                                                           evalModel: try Model(contentsOf: evalPath), options: options) {
                    module = withEvalModel
                } else {
                    module = try TrainingModule(trainingModel: trainingModel, state: try CheckpointState.load(from: checkpoint), options: options)
                }
            }
            let optimizerModel = try Model(contentsOf: try file("optimizer_model.onnx"))
            let optimizer = try Optimizer(model: optimizerModel, module: module, options: options)
            say("optimizer (from optimizer_model.onnx): " + OptimizerDescription.describe(optimizerModel))
            return TrainingRun(module: module, optimizer: optimizer, label: path)
        }
        let graph = try Model(contentsOf: path)
        let state: CheckpointState
        if let params {
            state = try CheckpointState.loadParameters(from: params)
        } else {
            let (initialised, roles) = try ParameterInitialisation.pytorchDefaults(for: graph, seed: seed)
            state = initialised
            say("no --params: initialised \(state.parameters.count) parameters as PyTorch does (seed \(seed)): " + roles)
        }
        let module = try TrainingModule(gradientGraph: graph, state: state, options: options)
        let kind = choice ?? .sgd
        let optimizer = try Optimizer(kind, module: module, options: options)
        if initialise { say("optimizer: " + OptimizerDescription.describe(kind)) }
        return TrainingRun(module: module, optimizer: optimizer, label: path)
    }

    func train(train arrays: [String: Tensor], eval evalArrays: [String: Tensor]?, settings: RunSettings, reporter: RunReporter) throws {
        let dataPath = settings.dataLabel
        let batchSize = settings.batchSize
        let batches: Batches
        do {
            batches = try Batches(arrays: arrays, names: module.trainInputNames, batchSize: batchSize)
        } catch let error as OnnxTrainError {
            let hint = error.message.contains("does not divide") ? " (--drop-last drops the examples past the last whole batch)" : ""
            throw OnnxTrainError(error.kind, error.prefixed(dataPath).message + hint)
        }
        try TrainingData.check(batches, module: module, dataPath: dataPath)
        let accumulate = settings.accumulate
        let steps = settings.steps ?? (settings.epochs ?? 1) * batches.count / accumulate
        guard steps > 0 else {
            throw OnnxTrainError.invalidInput("\(dataPath): \(batches.count) batches per epoch make no optimizer step with --accumulate \(accumulate)")
        }
        let totalBatches = steps * accumulate
        let epochs = (totalBatches + batches.count - 1) / batches.count
        let resumeSteps = settings.resume?.steps ?? 0, resumeBatches = settings.resume?.batches ?? 0
        if let resume = settings.resume, let used = resume.batching, used != settings.batching {
            throw OnnxTrainError.invalidInput("--resume \(resume.directory): that run used \(used); give the same to continue its trajectory")
        }
        guard resumeSteps <= steps else {
            throw OnnxTrainError.invalidInput("--resume \(settings.resume!.directory): that run already took \(resumeSteps) steps, more than the \(steps) asked for")
        }
        var evaluation: Evaluation?
        var metrics = settings.resume?.metrics ?? []
        let out = settings.outDirectory
        let title = "\(URL(fileURLWithPath: label).lastPathComponent): loss"
        if let evalArrays {
            let evalLabel = settings.evalLabel ?? "eval data"
            do {
                let n = evalArrays[module.evalInputNames.first ?? ""]?.shape.first ?? 0
                let size = DataSource.evalBatchSize(examples: n, preferred: batchSize)
                evaluation = try Evaluation(module: module, batches: try Batches(arrays: evalArrays, names: module.evalInputNames, batchSize: size))
            } catch let error as OnnxTrainError {
                throw error.prefixed(evalLabel)
            }
            let result = try evaluation!.run(module)
            if settings.resume == nil { metrics.append(RunMetric(step: 0, epoch: 0, loss: nil, learningRate: nil, evalLoss: result.loss, evalAccuracy: result.accuracy)) }
            reporter.say(result.line(prefix: resumeSteps > 0 ? "resumed at step \(resumeSteps):" : "epoch 0 (initial):"))
        }
        var lastEval: Evaluation.Result?
        var epochLosses: [Double] = []

        optimizer.learningRate = settings.lr
        optimizer.initialLearningRate = settings.lr
        let warmup = Int64(settings.warmup)
        let linear = settings.schedule == "linear" ? LinearLRScheduler(optimizer: optimizer, warmupStepCount: warmup, totalStepCount: Int64(steps), initialLearningRate: settings.lr) : nil
        let cosine = settings.schedule == "cosine" ? CosineLRScheduler(optimizer: optimizer, warmupStepCount: warmup, totalStepCount: Int64(steps), initialLearningRate: settings.lr) : nil

        if let logPath = settings.logPath {
            let directory = URL(fileURLWithPath: logPath).deletingLastPathComponent().path
            do {
                try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            } catch {
                throw OnnxTrainError.io("cannot create the folder \(directory): \(error.localizedDescription)")
            }
        }
        var logFile: LogFile?
        if let logPath = settings.logPath {
            logFile = try LogFile(path: logPath)
            try logFile?.write("step,loss,learning_rate,batch\n")
        }
        var random = RandomGenerator(seed: settings.seed)
        let shuffle = settings.shuffle
        // Shuffling permutes the examples every pass (or, when some array has rows that do not
        // split per example, the batch order).
        let perExample = batches.examplesSeparable
        var order = Array(0..<(perExample ? batches.exampleCount : batches.count))
        module.train()
        let frozen = module.parameters.filter { !$0.requiresGrad }
        var step = resumeSteps
        var microLosses: [Double] = []
        var interrupted = false
        StopRequest.install()
        reporter.begin(totalSteps: steps - resumeSteps, lastStep: steps)
        func saveAll(checkpointOnly: Bool = false) throws {
            RunArtifacts.recordProgress(module.state, step: step, batches: step * accumulate, seed: settings.seed, batching: settings.batching)
            try RunArtifacts.save(module: module, metrics: metrics, title: title, to: out, checkpointOnly: checkpointOnly)
        }
        for b in 0..<totalBatches {
            let position = b % batches.count
            if shuffle && position == 0 {
                // Fisher-Yates with the seeded generator: one new order per pass over the data
                // (replayed for the passes a resumed run already made).
                for i in stride(from: order.count - 1, to: 0, by: -1) {
                    order.swapAt(i, Int(random.next() % UInt64(i + 1)))
                }
            }
            if b < resumeBatches { continue }
            let batch = shuffle && perExample ? position : order[position]
            // Frozen parameters (BatchNorm running statistics) change in place during the
            // forward pass; keep them to restore if this step fails.
            let saved = frozen.map { $0.data.copied() }
            let lrUsed = optimizer.learningRate
            let isUpdate = (b + 1) % accumulate == 0
            do {
                let outputs = try module.trainStep(named: shuffle && perExample ? batches.batch(position, order: order) : batches.batch(batch))
                let loss = outputs.loss
                guard loss.isFinite else {
                    throw OnnxTrainError.training("the loss is \(loss) at step \(step + 1) (batch \(batch))")
                }
                microLosses.append(Double(loss))
                if isUpdate {
                    try optimizer.step()
                    module.lazyResetGrad()
                }
            } catch let error as OnnxTrainError {
                for (p, t) in zip(frozen, saved) { try? p.copy(from: t) }
                module.lazyResetGrad()
                var message = error.message
                if !message.contains("step \(step + 1)") { message = "step \(step + 1): \(message)" }
                if step > 0 {
                    try saveAll()
                    message += "; stopped, \(out)/checkpoint holds the state after step \(step)"
                } else {
                    message += "; stopped before any update, nothing was written"
                }
                throw OnnxTrainError(error.kind == .kernel || error.kind == .training ? .training : error.kind, message)
            }
            let epoch = b / batches.count + 1
            if isUpdate {
                step += 1
                let loss = microLosses.reduce(0, +) / Double(microLosses.count)
                microLosses.removeAll()
                try logFile?.write("\(step),\(Float(loss)),\(lrUsed),\(batch)\n")
                epochLosses.append(loss)
                metrics.append(RunMetric(step: step, epoch: epoch, loss: loss, learningRate: Double("\(lrUsed)")))
                linear?.step()
                cosine?.step()
                reporter.step(step, epoch: epoch, epochs: epochs, position: position + 1, perEpoch: batches.count, loss: loss, lr: Double(lrUsed))
                if let every = settings.checkpointEvery, step % every == 0, step < steps {
                    try saveAll(checkpointOnly: true)
                }
            }
            if position == batches.count - 1 || b == totalBatches - 1 {
                var line = "epoch \(epoch)/\(epochs) (step \(step)): train loss \(format(epochLosses.reduce(0, +) / Double(max(epochLosses.count, 1))))"
                if let evaluation {
                    let result = try evaluation.run(module)
                    lastEval = result
                    line += ", " + result.line(prefix: "").trimmingCharacters(in: .whitespaces)
                    if var last = metrics.last, last.step == step {
                        last.evalLoss = result.loss
                        last.evalAccuracy = result.accuracy
                        metrics[metrics.count - 1] = last
                    }
                }
                reporter.epochEnd(line + String(format: " (%.1f s)", reporter.elapsed))
                epochLosses.removeAll()
            }
            if isUpdate && step < steps && (StopRequest.requested || step == settings.stopAfter) {
                interrupted = true
                break
            }
        }
        try saveAll()
        let files = [RunArtifacts.checkpointName, RunArtifacts.metricsName, RunArtifacts.plotName] + (module.evalModel != nil ? [RunArtifacts.modelName] : []) + [RunArtifacts.paramsName]
        let lastLoss = metrics.last(where: { $0.loss != nil })?.loss
        var summary = (interrupted ? "stopped after " : "trained ") + String(format: "%d steps in %.1f s (%.1f steps/s)", step - resumeSteps, reporter.elapsed, reporter.rate)
        if let lastLoss { summary += ", last train loss " + format(lastLoss) }
        if let lastEval { summary += ", " + lastEval.line(prefix: "").trimmingCharacters(in: .whitespaces) }
        reporter.summary(summary)
        reporter.summary("saved to \(out)/: \(files.joined(separator: ", "))")
        if interrupted {
            let why = StopRequest.requested ? "interrupted" : "stopped (--stop-after)"
            reporter.summary("\(why) at step \(step) of \(steps); resume with: \(ResumeCommand.line(resumeDirectory: out))")
            if StopRequest.requested { throw ExitCode(130) }
        }
    }
}

/// The command line that continues an interrupted run: the same arguments with `--resume DIR`.
enum ResumeCommand {
    static func line(resumeDirectory: String) -> String {
        var args = Array(CommandLine.arguments.dropFirst())
        var kept: [String] = []
        var i = 0
        while i < args.count {
            if ["--resume", "--params", "--stop-after"].contains(args[i]) { i += 2; continue }
            if ["--resume=", "--params=", "--stop-after="].contains(where: args[i].hasPrefix) { i += 1; continue }
            kept.append(args[i]); i += 1
        }
        args = kept + ["--resume", resumeDirectory]
        return (["onnx-train"] + args).map(quote).joined(separator: " ")
    }

    static func quote(_ s: String) -> String {
        s.allSatisfy({ $0.isLetter || $0.isNumber || "-_./=,:+".contains($0) }) && !s.isEmpty ? s : "'" + s.replacingOccurrences(of: "'", with: "'\\''") + "'"
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
            try scores.withUnsafeBufferPointer(as: Float.self) { s in
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
