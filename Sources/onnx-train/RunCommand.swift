import ArgumentParser
import Foundation
import OnnxTrain

/// `onnx-train run PATH`: parses the flags, builds a `Trainer` and prints what it reports. The
/// training loop itself is the library's `Trainer`.
struct RunCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Train an onnxruntime artifact folder or a gradient graph.",
        discussion: """
            PATH is a folder from onnxruntime's generate_artifacts (checkpoint, training_model.onnx, \
            optimizer_model.onnx, eval_model.onnx) or a gradient graph .onnx (then --params gives the \
            parameters, else they are initialised as PyTorch initialises its layers). \
            Data: .npz or .safetensors (arrays named after the graph's user inputs, or --map), a CSV \
            table (--features, --label, --label-type), or a folder of TensorProto .pb files. \
            Batches: --batch-size examples (rows of the first user input, with their rows of every \
            other array); the last, smaller batch is used too unless --drop-last. The examples are \
            reshuffled every pass with --seed (or kept in order with --no-shuffle). \
            Each optimizer step follows --accumulate train steps, then a lazy gradient reset. \
            With eval data the eval graph runs before training, at every epoch end and every \
            --eval-every steps (loss; accuracy, top-k accuracy and a confusion matrix for class \
            labels; MAE and RMSE for float targets). \
            --out (default runs/<name>-<time>; an existing non-empty folder needs --overwrite or \
            --resume) receives checkpoint (saved at every epoch end and every --checkpoint-every \
            steps), metrics.csv (appended as the run goes), loss.svg, report.html, model.onnx, \
            params.safetensors and, with --keep-best, best/. A second run cannot write the same \
            folder at the same time. Ctrl-C or SIGTERM stops after the current step, saves, and \
            prints the command that resumes (exit code 130, or 143 for SIGTERM). If the loss stops \
            being finite, training stops and --out keeps the state after the last good step. \
            Started by mpirun, the processes train data-parallel: --batch-size examples each, the \
            gradients averaged, rank 0 printing and writing (README: Training on several machines).

            \(CLIFailure.exitCodeHelp)
            """
    )

    @Argument(help: "Artifact folder, or gradient graph .onnx file.")
    var path: String

    @Option(help: "Training data: .npz, .safetensors, .csv, or a folder of .pb TensorProto files.")
    var data: String

    @Option(help: "Graph inputs fed from arrays with other names: input=x,labels=y.")
    var map: String?

    @OptionGroup var csvOptions: CSVOptions

    @Option(name: .customLong("batch-size"), help: "Examples per train step.")
    var batchSize: Int

    @Option(help: "Optimizer steps to take (or give --epochs).")
    var steps: Int?

    @Option(help: "Passes over the training data.")
    var epochs: Int?

    @Flag(name: .customLong("drop-last"), help: "Leave out the examples past the last full batch (default: they form a last, smaller batch).")
    var dropLast = false

    @Option(name: .customLong("eval-data"), help: "Held-out data: the eval graph runs over it before training, after every epoch and every --eval-every steps.")
    var evalData: String?

    @Option(name: .customLong("eval-split"), help: "Hold out this fraction of --data (its last examples) as the eval set, e.g. 0.1.")
    var evalSplit: Double?

    @Option(name: .customLong("eval-every"), help: "Also evaluate every N optimizer steps (besides each epoch end).")
    var evalEvery: Int?

    @Option(name: .customLong("keep-best"), help: "Keep the checkpoint and model.onnx with the best eval metric in OUT/best/: eval_loss, eval_accuracy, eval_topk_accuracy, eval_mae or eval_rmse.")
    var keepBest: String?

    @Option(name: .customLong("early-stop"), help: "Stop when the eval metric (--keep-best's, else eval_loss) has not improved for PATIENCE evaluations.")
    var earlyStop: Int?

    @Option(name: .customLong("top-k"), help: "k of the top-k accuracy reported for class labels.")
    var topK: Int = 5

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

    @Option(name: .customLong("clip-grad-norm"), help: "Scale the accumulated gradients to this global L2 norm when above it, before each optimizer step (onnxruntime's InplaceClipGradNorm); the norm is printed and written to metrics.csv.")
    var clipGradNorm: Double?

    @Flag(name: .customLong("no-shuffle"), help: "Take the batches in file order (default: reshuffle the examples every pass).")
    var noShuffle = false

    @Option(help: "Seed for the batch order (without --no-shuffle), initialisation and random ops.")
    var seed: UInt64 = 0

    @Option(help: "Also write a CSV log here: step,loss,learning_rate,batch (one row per optimizer step).")
    var log: String?

    @Option(help: "Output folder (default runs/<name>-<UTC time>).")
    var out: String?

    @Flag(help: "Write into an --out folder that holds an earlier run (its run files are replaced).")
    var overwrite = false

    @Option(name: .customLong("checkpoint-every"), help: "Also save the checkpoint, metrics.csv and loss.svg every N steps (besides each epoch end), so a killed run loses at most N steps.")
    var checkpointEvery: Int?

    @Option(help: "Continue the run saved in this folder: parameters, optimizer state, step, data order and random state (same flags as the first run).")
    var resume: String?

    @Option(help: "Gradient graphs: initial parameters (.npz, .safetensors or an onnxruntime checkpoint). Artifact folders: a checkpoint to start from instead of PATH/checkpoint.")
    var params: String?

    @Option(help: "Gradient graphs and inference models: the optimizer graph to build (sgd, momentum, adamw).")
    var optimizer: OptimizerChoice?

    @Option(help: "Train an inference model .onnx directly: the loss to add (cross-entropy, mse, l1, bce-with-logits, output:NAME), as `onnx-train artifacts` does; the artifacts are saved in OUT/artifacts.")
    var loss: String?

    @Option(name: [.customLong("schedule"), .customLong("lr-schedule")], help: "Learning-rate schedule: constant, linear (onnxruntime's LinearLRScheduler) or cosine.")
    var schedule: Schedule = .constant

    @Option(help: "Linear warm-up steps before --schedule's decay (or before the constant rate).")
    var warmup: Int = 0

    @Option(name: .customLong("stop-after"), help: "Stop after this step and save, as Ctrl-C does (continue later with --resume; the schedule still spans --steps/--epochs).")
    var stopAfter: Int?

    @Option(name: .customLong("print-every"), help: "Without a terminal: print a line every N steps (default: 20 lines per run).")
    var printEvery: Int?

    @Flag(name: .customLong("log-scale"), help: "Draw loss.svg's loss axis logarithmic (default: when the loss spans more than two decades).")
    var logScale = false

    @Flag(name: .customLong("dry-run"), help: "Print what would be trained (parameters, inputs and their shapes, optimizer, schedule, steps and batches) and exit.")
    var dryRun = false

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
        for (flag, value) in [("--checkpoint-every", checkpointEvery), ("--print-every", printEvery), ("--eval-every", evalEvery),
                              ("--early-stop", earlyStop), ("--stop-after", stopAfter)] {
            if let value, value <= 0 { throw ValidationError("\(flag) must be positive") }
        }
        guard topK > 0 else { throw ValidationError("--top-k must be positive") }
        if let clipGradNorm, !(clipGradNorm.isFinite && clipGradNorm > 0) { throw ValidationError("--clip-grad-norm must be a positive number") }
        if let keepBest, MonitoredMetric(name: keepBest) == nil {
            throw ValidationError("--keep-best takes \(MonitoredMetric.allCases.map(\.rawValue).joined(separator: ", ")); got '\(keepBest)'")
        }
        if evalData != nil && evalSplit != nil { throw ValidationError("give --eval-data or --eval-split, not both") }
        if (keepBest != nil || earlyStop != nil || evalEvery != nil) && evalData == nil && evalSplit == nil {
            throw ValidationError("--keep-best, --early-stop and --eval-every need eval data: give --eval-data or --eval-split")
        }
        if let evalSplit, !(evalSplit > 0 && evalSplit < 1) { throw ValidationError("--eval-split must be between 0 and 1, like 0.1") }
        if weightDecay != nil || betas != nil, optimizer != .adamw { throw ValidationError("--weight-decay and --betas apply to --optimizer adamw") }
        if momentum != nil, optimizer != .momentum { throw ValidationError("--momentum applies to --optimizer momentum") }
        if let betas, parseBetas(betas) == nil { throw ValidationError("--betas takes two numbers in [0, 1), like 0.9,0.999") }
        if let weightDecay, !(weightDecay.isFinite && weightDecay >= 0) { throw ValidationError("--weight-decay must be a finite, non-negative number") }
        if let momentum, !(momentum >= 0 && momentum < 1) { throw ValidationError("--momentum must be in [0, 1)") }
        if resume != nil && params != nil { throw ValidationError("--resume brings its own parameters; drop --params") }
        if resume != nil && overwrite { throw ValidationError("--resume continues a run; --overwrite would replace it (give one)") }
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

    /// The learning-rate schedule over `total` optimizer steps: --warmup steps of linear warm-up
    /// to --lr, then --schedule's decay over the remaining steps.
    func learningRateSchedule(totalSteps total: Int) -> LearningRateSchedule {
        let decaySteps = max(total - warmup, 0)
        let after: LearningRateSchedule
        switch schedule {
        case .constant: after = .constant(lr)
        case .linear: after = .linearDecay(from: lr, steps: decaySteps)
        case .cosine: after = .cosineDecay(from: lr, steps: decaySteps)
        }
        return .warmup(steps: warmup, peak: lr, then: after)
    }

    func run() throws {
        // Under mpirun every process runs this command and they train data-parallel (ParallelJob).
        let group = try ParallelJob.join()
        try ParallelJob.run(group) {
            let isMain = group?.isMainProcess ?? true
            let reporter = RunReporter(mode: RunReporter.mode(quiet: quiet || !isMain), every: printEvery)
            // Every process sets up; a failure on any of them is reported once, by rank 0.
            guard let prepared = try ParallelJob.together(group, { () -> (Trainer, RunFolder?, String, LogFile?)? in
                // --resume: the checkpoint is read once, here, and the model is built on it.
                let resumed = try resume.map { try ResumePoint.load(from: $0) }
                let session = try TrainingRun.open(path: path, params: params, state: resumed?.state, optimizer: optimizerKind,
                                                   loss: try loss.map(TrainingArtifacts.Loss.init(parsing:)), seed: resumed?.progress.seed ?? seed,
                                                   withEval: evalData != nil || evalSplit != nil, say: { if isMain { reporter.say($0) } }, resuming: resume)
                let module = session.module
                let names = module.trainInputNames
                let dataMap = try map.map(DataSource.parseMap) ?? [:]
                let csv = csvOptions.columns
                var train = try DataSource.load(data, names: names, map: dataMap, csv: csv)
                var eval: [String: Tensor]?
                if let evalData {
                    eval = try DataSource.load(evalData, names: module.evalInputNames, map: dataMap, csv: csv)
                } else if let evalSplit {
                    (train, eval) = try DataSource.split(train, names: names, evalFraction: evalSplit, label: data)
                    if isMain { reporter.say("eval split: the last \(Int((evalSplit * 100).rounded()))% of \(data) is held out") }
                }

                var configuration = Trainer.Configuration(batchSize: batchSize, steps: steps, epochs: epochs, learningRate: lr)
                configuration.accumulate = accumulate
                configuration.shuffle = !noShuffle
                configuration.dropLast = dropLast
                configuration.seed = resumed?.progress.seed ?? seed
                configuration.evalEvery = evalEvery
                configuration.checkpointEvery = checkpointEvery
                configuration.keepBest = keepBest.flatMap(MonitoredMetric.init(name:))
                configuration.earlyStopPatience = earlyStop
                configuration.clipGradNorm = clipGradNorm
                configuration.stopAfter = stopAfter
                configuration.topK = topK
                configuration.logScale = logScale ? true : nil
                configuration.title = "\(URL(fileURLWithPath: path).lastPathComponent): loss"
                configuration.dataLabel = data
                if let resume { configuration.resumeLabel = "--resume \(resume)" }
                configuration.evalLabel = evalData ?? "\(data) (eval split)"
                configuration.reportSettings = [ReportSetting("command", ResumeCommand.commandLine()), ReportSetting("model", path),
                                                ReportSetting("data", data)] + (evalData.map { [ReportSetting("eval data", $0)] } ?? [])
                    + [ReportSetting("optimizer", session.optimizerDescription), ReportSetting("seed", "\(configuration.seed)")]

                if dryRun {
                    let trainer = try Trainer(module: module, optimizer: session.optimizer, train: train, eval: eval, configuration: configuration,
                                              resume: resumed != nil, dataParallel: group)
                    trainer.schedule = learningRateSchedule(totalSteps: trainer.totalSteps)
                    if isMain { DryRun.print(trainer, session: session, train: train, eval: eval) }
                    return nil
                }
                // The data is checked before the folder is touched.
                let trainer = try Trainer(module: module, optimizer: session.optimizer, train: train, eval: eval, configuration: configuration,
                                          resume: resumed != nil, history: resume, dataParallel: group)
                trainer.schedule = learningRateSchedule(totalSteps: trainer.totalSteps)
                let directory = out ?? resume ?? RunArtifacts.defaultDirectory(for: path)
                // Rank 0 alone writes (the folder, the --loss artifacts, the --log file).
                guard isMain else { return (trainer, nil, directory, nil) }
                let folder = try RunFolder(directory, existing: resumed != nil ? .resume : overwrite ? .overwrite : .refuse)
                // An inference model trained with --loss: the artifacts built for it go with the run.
                try session.artifacts?.write(to: URL(fileURLWithPath: directory).appendingPathComponent("artifacts").path)
                let logFile = try log.map { try LogFile(path: $0, header: "step,loss,learning_rate,batch\n") }
                return (trainer, folder, directory, logFile)
            }) else { return }
            let (trainer, folder, directory, logFile) = prepared
            trainer.onEvent = { event in
                if case .step(let s) = event { logFile?.write("\(s.step),\(Float(s.loss)),\(s.learningRate),\(s.batch - 1)\n") }
                reporter.handle(event)
            }
            if group == nil { StopRequest.install() }
            trainer.shouldStop = { StopRequest.requested }
            let outcome = try trainer.run(in: folder)
            try logFile?.check()
            guard isMain else { return }
            reporter.finish(outcome, folder: directory)
            if outcome.stop == .requested || outcome.stop == .stopAfter {
                let why = outcome.stop == .requested ? (StopRequest.signalNumber == SIGTERM ? "stopped (SIGTERM)" : "interrupted") : "stopped (--stop-after)"
                reporter.summary("\(why) at step \(outcome.step) of \(outcome.totalSteps); resume with: \(ResumeCommand.line(resumeDirectory: directory))")
                if outcome.stop == .requested { throw ExitCode(StopRequest.signalNumber == SIGTERM ? 143 : 130) }
            }
        }
    }
}

/// Where a saved run stopped (`--resume DIR`): its checkpoint, read once, and its progress.
struct ResumePoint {
    let directory: String
    let state: CheckpointState
    let progress: Trainer.Progress

    static func load(from directory: String) throws -> ResumePoint {
        let path = URL(fileURLWithPath: directory).appendingPathComponent(RunArtifacts.checkpointName).path
        guard FileManager.default.fileExists(atPath: path) else {
            throw OnnxTrainError.io("--resume \(directory): no checkpoint there (expected the --out folder of an earlier onnx-train run)")
        }
        let state = try CheckpointState.load(from: path)
        guard let progress = try Trainer.Progress.read(state, label: "--resume \(directory)") else {
            throw OnnxTrainError.invalidInput("--resume \(directory): the checkpoint was not saved by onnx-train run (no step count in its properties); start from it with --params instead")
        }
        return ResumePoint(directory: directory, state: state, progress: progress)
    }
}

/// The model a run trains: the module and its optimizer, built from PATH (the one place `run`,
/// `eval` and `export` load a model).
struct TrainingRun {
    let module: TrainingModule
    let optimizer: Optimizer
    let label: String
    /// The optimizer and its hyperparameters, in one line.
    let optimizerDescription: String
    /// The artifacts built for an inference model (`run MODEL.onnx --loss ...`).
    var artifacts: TrainingArtifacts? = nil

    /// - Parameters:
    ///   - params: a checkpoint or parameter file to start from instead of the model's own.
    ///   - state: an already loaded checkpoint to start from (`--resume`).
    static func open(path: String, params: String?, state: CheckpointState? = nil, optimizer choice: OptimizerGraph.Kind?,
                     loss: TrainingArtifacts.Loss? = nil, seed: UInt64, withEval: Bool,
                     say: (String) -> Void = { print($0) }, resuming: String? = nil) throws -> TrainingRun {
        do {
            if let loss {
                return try openInferenceModel(path: path, params: params, state: state, optimizer: choice, loss: loss, seed: seed, say: say)
            }
            return try openArtifactsOrGradientGraph(path: path, params: params, state: state, optimizer: choice, seed: seed, withEval: withEval, say: say, initialise: resuming == nil)
        } catch let error as OnnxTrainError where resuming != nil && (error.kind == .training || error.kind == .invalidModel
                                                                      || error.message.contains(TrainingModule.checkpointMismatch)) {
            throw OnnxTrainError.invalidInput("--resume \(resuming!): its checkpoint does not fit \(path) (\(error.message)); resume from a run of the same model")
        } catch let error as OnnxTrainError where params != nil && error.message.contains(TrainingModule.checkpointMismatch) {
            throw error.prefixed("--params \(params!)")
        }
    }

    /// An inference model made trainable in memory (`TrainingArtifacts`, as `onnx-train artifacts`);
    /// `params` is a checkpoint to start from instead of the model's own initializers.
    static func openInferenceModel(path: String, params: String?, state given: CheckpointState?, optimizer choice: OptimizerGraph.Kind?,
                                   loss: TrainingArtifacts.Loss, seed: UInt64, say: (String) -> Void) throws -> TrainingRun {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory), !isDirectory.boolValue else {
            throw OnnxTrainError.invalidInput("--loss makes an inference model trainable: \(path) is not a model file (artifact folders bring their own loss)")
        }
        let kind = choice ?? .adamW
        let artifacts = try TrainingArtifacts.build(from: try Model(contentsOf: path), options: .init(loss: loss, optimizer: kind))
        let state = try given ?? params.map { try CheckpointState.load(from: $0) } ?? artifacts.checkpoint
        var options = SessionOptions()
        options.seed = seed
        let module = try TrainingModule(trainingModel: artifacts.trainingModel, state: state, evalModel: artifacts.evalModel, options: options)
        let optimizer = try Optimizer(model: artifacts.optimizerModel, module: module, options: options)
        let description = OptimizerDescription.describe(kind)
        say("artifacts built from \(path): loss \(loss), \(artifacts.trainable.count) trained parameters" + (artifacts.frozen.isEmpty ? "" : ", frozen: \(artifacts.frozen.joined(separator: ", "))"))
        say("optimizer: " + description)
        var run = TrainingRun(module: module, optimizer: optimizer, label: path, optimizerDescription: description)
        run.artifacts = artifacts
        return run
    }

    /// A training run from an artifact folder (training, eval and optimizer models and a
    /// checkpoint) or from a gradient graph file (`--optimizer` builds its optimizer); `open`
    /// dispatches here for everything but an inference model.
    static func openArtifactsOrGradientGraph(path: String, params: String?, state given: CheckpointState?, optimizer choice: OptimizerGraph.Kind?, seed: UInt64, withEval: Bool,
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
            let state = try given ?? CheckpointState.load(from: try params ?? file("checkpoint"))
            let trainingModel = try Model(contentsOf: try file("training_model.onnx"))
            let module: TrainingModule
            if withEval {
                module = try TrainingModule(trainingModel: trainingModel, state: state,
                                            evalModel: try Model(contentsOf: try file("eval_model.onnx")), options: options)
            } else {
                // Without evaluation the eval model only serves model.onnx: some valid artifact
                // folders carry one that cannot run (BatchNorm with running-stat outputs in eval
                // mode); then the run goes on without it, and says why.
                let evalPath = folder.appendingPathComponent("eval_model.onnx").path
                do {
                    module = try TrainingModule(trainingModel: trainingModel, state: state, evalModel: try Model(contentsOf: evalPath), options: options)
                } catch let error as OnnxTrainError {
                    if FileManager.default.fileExists(atPath: evalPath) {
                        say("eval_model.onnx is left out, so no model.onnx will be written: \(error.message)")
                    }
                    module = try TrainingModule(trainingModel: trainingModel, state: state, options: options)
                }
            }
            let optimizerModel = try Model(contentsOf: try file("optimizer_model.onnx"))
            let optimizer = try Optimizer(model: optimizerModel, module: module, options: options)
            let description = OptimizerDescription.describe(optimizerModel)
            say("optimizer (from optimizer_model.onnx): " + description)
            return TrainingRun(module: module, optimizer: optimizer, label: path, optimizerDescription: description)
        }
        let graph = try Model(contentsOf: path)
        let state: CheckpointState
        if let given {
            state = given
        } else if let params {
            state = try CheckpointState.loadParameters(from: params)
        } else {
            let (initialised, roles) = try ParameterInitialisation.pytorchDefaults(for: graph, seed: seed)
            state = initialised
            say("no --params: initialised \(state.parameters.count) parameters as PyTorch does (seed \(seed)): " + roles)
        }
        let module = try TrainingModule(gradientGraph: graph, state: state, options: options)
        let kind = choice ?? .sgd
        let optimizer = try Optimizer(kind, module: module, options: options)
        let description = OptimizerDescription.describe(kind)
        if initialise { say("optimizer: " + description) }
        return TrainingRun(module: module, optimizer: optimizer, label: path, optimizerDescription: description)
    }
}

/// `run --dry-run`: what would be trained, then nothing.
enum DryRun {
    static func print(_ trainer: Trainer, session: TrainingRun, train: [String: Tensor], eval: [String: Tensor]?) {
        let module = trainer.module, c = trainer.configuration
        var lines = ["dry run of \(session.label): nothing is trained or written"]
        let trainable = module.trainableParameters, frozen = module.parameters.filter { !$0.requiresGrad }
        lines.append("parameters: \(module.parameterCount()) trainable in \(trainable.count) tensors" + (frozen.isEmpty ? "" : ", \(module.parameterCount(trainableOnly: false) - module.parameterCount()) frozen in \(frozen.count)"))
        for p in module.parameters { lines.append("  \(p.name) \(p.data.dtype) \(p.data.shape)\(p.requiresGrad ? "" : " (frozen)")") }
        let declared = Dictionary(module.trainingModel.graph.inputs.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
        lines.append("inputs (graph type; data array; one batch):")
        let first = trainer.batches.batch(0)
        for name in module.trainInputNames {
            let type = declared[name]?.type.map { "\($0)" } ?? "?"
            let array = train[name].map { "\($0.dtype) \($0.shape)" } ?? "-"
            lines.append("  \(name): \(type); \(array); \(first[name].map { "\($0.shape)" } ?? "-")")
        }
        lines.append("optimizer: \(session.optimizerDescription)")
        lines.append("learning rate: \(trainer.schedule.description)")
        let b = trainer.batches
        let partial = b.exampleCount % c.batchSize
        lines.append("batches: \(b.count) per epoch of \(c.batchSize) examples" + (partial > 0 ? " (the last one \(partial))" : "")
                     + (b.totalExamples > b.exampleCount ? ", \(b.totalExamples - b.exampleCount) examples dropped (--drop-last)" : "")
                     + (c.shuffle ? ", reshuffled every epoch (seed \(c.seed))" : ", in file order"))
        lines.append("steps: \(trainer.totalSteps) optimizer steps over \(trainer.epochs) epochs, \(c.accumulate) batch(es) each"
                     + (trainer.resumed.map { ", resuming after step \($0.step)" } ?? ""))
        if let e = trainer.evaluator {
            lines.append("eval: \(e.batches.exampleCount) examples in batches of \(e.batches.batchSize), at every epoch end" + (c.evalEvery.map { " and every \($0) steps" } ?? ""))
        } else {
            lines.append("eval: none")
        }
        for line in lines { Swift.print(line) }
    }
}

/// The command line that continues an interrupted run: the same arguments with `--resume DIR`.
enum ResumeCommand {
    /// This command line, quoted for a shell.
    static func commandLine() -> String {
        (["onnx-train"] + CommandLine.arguments.dropFirst()).map(quote).joined(separator: " ")
    }

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

/// `eval`'s evaluation: the library's `Evaluator`.
typealias Evaluation = Evaluator

extension EvaluationResult {
    /// "<prefix> eval loss 0.1234, accuracy 97.2%, ..."
    func line(prefix: String) -> String { "\(prefix) \(summary)" }
}

/// The `--log` CSV: appended and flushed row by row, so a crash keeps every logged row. A failed
/// write is remembered and reported once the run ends.
final class LogFile {
    let handle: FileHandle
    let path: String
    private var failure: String?

    init(path: String, header: String) throws {
        self.path = path
        let directory = URL(fileURLWithPath: path).deletingLastPathComponent().path
        do {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        } catch {
            throw OnnxTrainError.io("cannot create the folder \(directory): \(error.localizedDescription)")
        }
        guard FileManager.default.createFile(atPath: path, contents: Data(header.utf8)), let handle = FileHandle(forWritingAtPath: path) else {
            throw OnnxTrainError.io("cannot create the log file \(path)")
        }
        self.handle = handle
        _ = try? handle.seekToEnd()
    }

    func write(_ text: String) {
        guard failure == nil else { return }
        do {
            try handle.write(contentsOf: Data(text.utf8))
        } catch {
            failure = error.localizedDescription
        }
    }

    /// Throws if a write failed.
    func check() throws {
        if let failure { throw OnnxTrainError.io("cannot write the log file \(path): \(failure)") }
    }

    deinit { try? handle.close() }
}
