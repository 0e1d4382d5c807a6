import Foundation
import Synchronization

/// The training loop: batches (shuffled every pass with a seeded generator, the last partial batch
/// kept unless `dropLast`), gradient accumulation, gradient-norm clipping, a learning-rate schedule,
/// evaluation every N steps and at each epoch end, checkpoints at each epoch end (and every N
/// steps), the best checkpoint kept apart, early stopping, resume and a stop request that finishes
/// the current step and saves. The `onnx-train run` command, the bench command, the TrainMLP
/// example and the tests all train through it.
///
///     let trainer = try Trainer(module: module, optimizer: optimizer, train: arrays, eval: held,
///                               configuration: .init(batchSize: 32, epochs: 10, learningRate: 2e-3))
///     trainer.schedule = .warmup(steps: 50, then: .cosineDecay(from: 2e-3, steps: trainer.totalSteps - 50))
///     trainer.onEvent = { event in if case .step(let s) = event { print(s.step, s.loss) } }
///     let outcome = try trainer.run(in: try RunFolder("runs/mlp", existing: .refuse))
///
/// A run is a pure function of the checkpoint it starts from, the data, the configuration and the
/// seed: a run stopped (or killed) and resumed from its last checkpoint takes the same steps, with
/// the same Dropout masks, as one that was never interrupted.
///
/// Data-parallel training (`dataParallel:`, as PyTorch's DistributedDataParallel): every process
/// of the group runs the same Trainer over the same data. Rank 0's parameters are broadcast first;
/// a global batch is `batchSize` examples per process, cut from the same shuffled order a single
/// process with the global batch would use, and each process takes its own even share of it; the
/// gradients (each process's weighted by its share of the batch, so an uneven last batch counts
/// every example once) are averaged over the group before each optimizer step, so the
/// parameters stay identical everywhere and the run takes the steps of one process with the
/// global batch, up to float summation order. BatchNorm keeps per-process batch statistics, and
/// rank 0's running statistics are broadcast after every optimizer step (DDP's
/// `broadcast_buffers`). Evaluation is shared out by batch and summed. Rank 0 alone reports events
/// and writes the folder. A failure on any process (a non-finite loss, bad data, a failing
/// kernel) is agreed on at the end of the train step, so every process throws the same error.
public final class Trainer {
    public struct Configuration: Sendable {
        /// Examples per train step (per process in data-parallel training).
        public var batchSize: Int
        /// Optimizer steps to take; when nil, `epochs` passes over the data.
        public var steps: Int?
        public var epochs: Int?
        /// The learning rate of the default (constant) schedule.
        public var learningRate: Float
        /// Train steps per optimizer step (their gradients add up).
        public var accumulate = 1
        /// Reshuffle the examples every pass (else file order).
        public var shuffle = true
        /// Leave out the examples past the last full batch.
        public var dropLast = false
        /// Seeds the data order (Dropout draws from the session's own generator, seeded by
        /// `SessionOptions.seed`).
        public var seed: UInt64 = 0
        /// Also evaluate every N optimizer steps (besides each epoch end).
        public var evalEvery: Int?
        /// Save a checkpoint at each epoch end.
        public var checkpointAtEpochEnd = true
        /// Also save a checkpoint every N optimizer steps.
        public var checkpointEvery: Int?
        /// Keep the checkpoint and model.onnx with the best value of this metric in `best/`.
        public var keepBest: MonitoredMetric?
        /// Stop when the monitored metric (`keepBest`, else the eval loss) has not improved for
        /// this many evaluations.
        public var earlyStopPatience: Int?
        /// Scale the accumulated gradients so their global L2 norm is at most this, before each
        /// optimizer step (onnxruntime's InplaceClipGradNorm); the norm is reported per step.
        public var clipGradNorm: Double?
        /// Stop (and save) after this optimizer step, as a stop request would.
        public var stopAfter: Int?
        /// k of the top-k accuracy.
        public var topK = 5
        /// Title of the plot and the report.
        public var title = "training"
        /// loss.svg's axis: nil picks a log axis when the loss spans more than two decades.
        public var logScale: Bool?
        /// Names for error messages.
        public var dataLabel = "training data"
        public var evalLabel = "eval data"
        public var resumeLabel = "resume"
        /// Run settings shown in report.html (name, value).
        public var reportSettings: [ReportSetting] = []

        public init(batchSize: Int, steps: Int? = nil, epochs: Int? = nil, learningRate: Float) {
            self.batchSize = batchSize
            self.steps = steps
            self.epochs = epochs
            self.learningRate = learningRate
        }
    }

    /// Where a saved run stands, from its checkpoint's property bag.
    public struct Progress: Equatable, Sendable {
        public var step: Int
        public var batches: Int
        public var seed: UInt64
        public var batching: String?
        public var random: UInt64?
        public var metricsRows: Int?
        public var bestValue: Double?
        public var bestStep: Int?
        public var staleEvaluations: Int

        /// Reads (and range-checks) the progress a run recorded in `state`; nil when the checkpoint
        /// was not saved by a run.
        public static func read(_ state: CheckpointState, label: String) throws -> Progress? {
            let p = state.properties
            // Step, batches and seed are range-checked where they enter, in runProgress().
            let recorded: RunProgress?
            do { recorded = try state.runProgress() } catch let error as OnnxTrainError { throw error.prefixed(label) }
            guard let recorded else { return nil }
            func int(_ key: String) -> Int64? { if case .int(let v)? = p[key] { return v } else { return nil } }
            for key in [RunArtifacts.Resume.metricsRows, RunArtifacts.Resume.bestStep, RunArtifacts.Resume.staleEvaluations] {
                if let v = int(key), v < 0 || v > CheckpointState.maximumRecordedSteps {
                    throw OnnxTrainError.invalidInput("\(label): the checkpoint's \(key) is \(v), not a count")
                }
            }
            var progress = Progress(step: recorded.step, batches: recorded.batches, seed: recorded.seed,
                                    staleEvaluations: Int(int(RunArtifacts.Resume.staleEvaluations) ?? 0))
            if case .string(let b)? = p[RunArtifacts.Resume.batching] { progress.batching = b }
            progress.random = int(RunArtifacts.Resume.random).map { UInt64(bitPattern: $0) }
            progress.metricsRows = int(RunArtifacts.Resume.metricsRows).map(Int.init)
            if case .float(let v)? = p[RunArtifacts.Resume.bestValue] { progress.bestValue = Double(v) }
            if case .string(let v)? = p[RunArtifacts.Resume.bestValue] { progress.bestValue = Double(v) }
            progress.bestStep = int(RunArtifacts.Resume.bestStep).map(Int.init)
            return progress
        }
    }

    /// Why a run ended.
    public enum Stop: Equatable, Sendable {
        /// Every step was taken.
        case finished
        /// `requestStop()` (Ctrl-C, SIGTERM in the command).
        case requested
        /// `Configuration.stopAfter`.
        case stopAfter
        /// The monitored metric stopped improving.
        case earlyStopped
    }

    /// What a run did.
    public struct Outcome {
        public var stop: Stop
        /// The step the run started from (0, or the resumed step) and the last one taken.
        public var startStep: Int
        public var step: Int
        public var totalSteps: Int
        public var lastEvaluation: EvaluationResult?
        /// The best monitored value and its step (keep-best or early stopping).
        public var best: (step: Int, value: Double)?
        /// The metric `best` is of (keep-best's, or the eval loss for early stopping).
        public var monitored: MonitoredMetric?
        public var metrics: [RunMetric]
        public var seconds: Double
        /// Files written to the output folder.
        public var files: [String]
    }

    public let module: TrainingModule
    public let optimizer: Optimizer
    public let configuration: Configuration
    public let batches: Batches
    public let evaluator: Evaluator?
    /// Optimizer steps of the whole run (a resumed run counts the steps already taken).
    public let totalSteps: Int
    /// Train steps (batches) of the whole run.
    public let totalBatches: Int
    /// Epochs the run spans (the last one possibly cut short by `steps`).
    public let epochs: Int
    /// Where a resumed run starts (nil for a new run).
    public let resumed: Progress?
    /// The learning rate as a function of the completed optimizer steps.
    public var schedule: LearningRateSchedule
    /// Called on the training thread for every event.
    public var onEvent: ((TrainerEvent) -> Void)?
    /// Polled after every optimizer step; true stops the run as `requestStop()` does.
    public var shouldStop: (() -> Bool)?
    /// The process group of a data-parallel run (nil: this process trains alone).
    public let dataParallel: DataParallel?
    /// Examples per global batch: `batchSize` times the processes.
    public let globalBatchSize: Int
    /// What fixes the data order besides the seed (the global batch); a resumed run must use the same.
    public var batching: String { Trainer.batching(globalBatchSize: globalBatchSize, configuration) }

    private static func batching(globalBatchSize: Int, _ c: Configuration) -> String {
        "--batch-size \(globalBatchSize) --accumulate \(c.accumulate)" + (c.shuffle ? "" : " --no-shuffle") + (c.dropLast ? " --drop-last" : "")
    }

    private let history: String?
    private let stopFlag = Atomic<Bool>(false)

    /// - Parameters:
    ///   - train: the training arrays, named after `module.trainInputNames`.
    ///   - eval: held-out arrays for the eval graph (nil: no evaluation).
    ///   - resume: continue the run recorded in `module.state` (a checkpoint a run saved).
    ///   - history: the folder whose metrics.csv a resumed run continues (default: the folder it runs in).
    ///   - dataParallel: train data-parallel in this group of processes (see the type's summary).
    public init(module: TrainingModule, optimizer: Optimizer, train: [String: Tensor], eval: [String: Tensor]? = nil,
                configuration: Configuration, resume: Bool = false, history: String? = nil, dataParallel: DataParallel? = nil) throws {
        let c = configuration
        guard c.batchSize > 0 else { throw OnnxTrainError.invalidInput("the batch size must be positive, got \(c.batchSize)") }
        guard c.accumulate > 0 else { throw OnnxTrainError.invalidInput("the accumulation must be positive, got \(c.accumulate)") }
        if let s = c.steps, s <= 0 { throw OnnxTrainError.invalidInput("the step count must be positive, got \(s)") }
        if let e = c.epochs, e <= 0 { throw OnnxTrainError.invalidInput("the epoch count must be positive, got \(e)") }
        for (name, value) in [("evaluation interval", c.evalEvery), ("checkpoint interval", c.checkpointEvery), ("early-stopping patience", c.earlyStopPatience), ("stop step", c.stopAfter)] {
            if let value, value <= 0 { throw OnnxTrainError.invalidInput("the \(name) must be positive, got \(value)") }
        }
        if let clip = c.clipGradNorm, !(clip.isFinite && clip > 0) { throw OnnxTrainError.invalidInput("the gradient-norm bound must be a positive number, got \(clip)") }
        self.module = module
        self.optimizer = optimizer
        self.configuration = c
        self.history = history
        let processes = dataParallel?.size ?? 1
        let (global, tooMany) = c.batchSize.multipliedReportingOverflow(by: processes)
        guard !tooMany else { throw OnnxTrainError.invalidInput("\(processes) processes of \(c.batchSize) examples are more than a batch can count") }
        self.dataParallel = processes > 1 ? dataParallel : nil
        globalBatchSize = global
        do {
            batches = try Batches(arrays: train, names: module.trainInputNames, batchSize: global, dropLast: c.dropLast)
        } catch let error as OnnxTrainError {
            let hint = error.message.contains("does not divide") ? " (--drop-last drops the examples past the last whole batch)" : ""
            throw OnnxTrainError(error.kind, error.prefixed(c.dataLabel).message + hint)
        }
        if processes > 1 && !batches.examplesSeparable {
            throw OnnxTrainError.invalidInput("\(c.dataLabel): data-parallel training splits every batch by example, and some array has no whole number of rows per example of '\(batches.names[0])'")
        }
        // A graph with a fixed batch dimension sees one process's share: check those.
        try TrainingDataCheck.check(processes > 1 ? try Batches(arrays: train, names: module.trainInputNames, batchSize: c.batchSize, dropLast: c.dropLast) : batches,
                                    module: module, dataPath: c.dataLabel)

        // Step arithmetic: every product is checked, so `--epochs 9223372036854775807` is an error.
        let steps: Int
        if let s = c.steps {
            steps = s
        } else {
            let (passes, overflow) = (c.epochs ?? 1).multipliedReportingOverflow(by: batches.count)
            guard !overflow else {
                throw OnnxTrainError.invalidInput("\(c.epochs ?? 1) epochs of \(batches.count) batches are more steps than a run can count (at most \(Int.max))")
            }
            steps = passes / c.accumulate
        }
        guard steps > 0 else {
            throw OnnxTrainError.invalidInput("\(c.dataLabel): \(batches.count) batches per epoch make no optimizer step with --accumulate \(c.accumulate)")
        }
        let (total, overflow) = steps.multipliedReportingOverflow(by: c.accumulate)
        guard !overflow else {
            throw OnnxTrainError.invalidInput("\(steps) steps of \(c.accumulate) batches are more batches than a run can count (at most \(Int.max))")
        }
        totalSteps = steps
        totalBatches = total
        epochs = (total - 1) / batches.count + 1

        if resume {
            guard let progress = try Progress.read(module.state, label: c.resumeLabel) else {
                throw OnnxTrainError.invalidInput("\(c.resumeLabel): the checkpoint was not saved by onnx-train run (no step count in its properties); start from it with --params instead")
            }
            if let used = progress.batching, used != Trainer.batching(globalBatchSize: global, c) {
                let per = processes > 1 ? " (the batch size of \(processes) processes is \(processes) x --batch-size)" : ""
                throw OnnxTrainError.invalidInput("\(c.resumeLabel): that run used \(used); give the same to continue its trajectory\(per)")
            }
            guard progress.step <= steps else {
                throw OnnxTrainError.invalidInput("\(c.resumeLabel): that run already took \(progress.step) steps, more than the \(steps) asked for")
            }
            guard progress.batches == progress.step * c.accumulate else {
                throw OnnxTrainError.invalidInput("\(c.resumeLabel): the checkpoint records \(progress.batches) batches for \(progress.step) steps, which --accumulate \(c.accumulate) does not give")
            }
            resumed = progress
        } else {
            resumed = nil
        }

        if let eval {
            do {
                let n = eval[module.evalInputNames.first ?? ""]?.shape.first ?? 0
                let size = DataSource.evalBatchSize(examples: n, preferred: c.batchSize)
                evaluator = try Evaluator(module: module, batches: try Batches(arrays: eval, names: module.evalInputNames, batchSize: size), topK: c.topK)
            } catch let error as OnnxTrainError {
                throw error.prefixed(c.evalLabel)
            }
        } else {
            evaluator = nil
        }
        if (c.keepBest != nil || c.earlyStopPatience != nil) && evaluator == nil {
            throw OnnxTrainError.invalidInput("keeping the best checkpoint and early stopping watch an eval metric: give eval data (--eval-data or --eval-split)")
        }
        schedule = .constant(c.learningRate)
    }

    /// Asks the run to stop after the current optimizer step and save (safe from any thread).
    public func requestStop() { stopFlag.store(true, ordering: .relaxed) }

    private var stopRequested: Bool { stopFlag.load(ordering: .relaxed) || (shouldStop?() ?? false) }

    /// Trains; returns what the run did. On a non-finite loss or a failing step it saves the state
    /// after the last good step (when a folder was given) and throws.
    /// - Parameter folder: where checkpoints, metrics.csv, loss.svg, report.html, model.onnx,
    ///   params.safetensors and best/ go (nil: nothing is written; in data-parallel training only
    ///   rank 0 writes it).
    @discardableResult
    public func run(in folder: RunFolder? = nil) throws -> Outcome {
        let c = configuration
        let clock = ContinuousClock()
        let started = clock.now
        func seconds(_ d: Duration) -> Double { Double(d.components.seconds) + Double(d.components.attoseconds) * 1e-18 }
        let group = dataParallel
        let isMain = group?.isMainProcess ?? true
        let folder = isMain ? folder : nil
        let emit: (TrainerEvent) -> Void = { [onEvent] in if isMain { onEvent?($0) } }
        // Every process starts from rank 0's parameters (a seeded initialisation or a checkpoint
        // gives the same everywhere already; this makes sure of it).
        if let group { try group.broadcastParameters(module.parameters) }

        let startStep = resumed?.step ?? 0
        let startBatch = resumed?.batches ?? 0
        let seed = resumed?.seed ?? c.seed
        if let random = resumed?.random { module.randomState = random }
        let monitored = c.keepBest ?? (c.earlyStopPatience != nil ? .evalLoss : nil)
        var best: (step: Int, value: Double)?
        if let step = resumed?.bestStep, let value = resumed?.bestValue { best = (step, value) }
        var stale = resumed?.staleEvaluations ?? 0

        // metrics.csv: a resumed run keeps the rows its checkpoint covers and appends after them.
        var log: MetricsLog?
        var rows: [RunMetric] = []
        if let folder {
            if let resumed {
                let earlier = MetricsLog.read(URL(fileURLWithPath: history ?? folder.path).appendingPathComponent(RunArtifacts.metricsName).path)
                rows = resumed.metricsRows.map { Array(earlier.prefix($0)) } ?? earlier.filter { $0.step <= resumed.step }
            }
            log = try MetricsLog(path: folder.file(RunArtifacts.metricsName), rows: rows)
        }
        func record(_ row: RunMetric) throws {
            rows.append(row)
            try log?.append(row)
        }

        emit(.started(TrainerEvent.Start(startStep: startStep, totalSteps: totalSteps, batchesPerEpoch: batches.count, epochs: epochs,
                                         examples: batches.exampleCount, schedule: schedule.description)))
        var lastEvaluation: EvaluationResult?
        if let evaluator {
            let result = try evaluator.run(module.eval(), group: group)
            module.train()
            lastEvaluation = result
            if resumed == nil {
                var row = RunMetric(step: 0, epoch: 0, loss: nil, learningRate: nil)
                row.record(result)
                try record(row)
            }
            emit(.evaluated(TrainerEvent.Evaluation(step: startStep, epoch: resumed == nil ? 0 : (startBatch - 1) / batches.count + 1, result: result,
                                                     initial: true, atEpochEnd: false, improved: false, best: best)))
        }

        optimizer.initialLearningRate = c.learningRate
        var order = Array(0..<(batches.examplesSeparable ? batches.totalExamples : batches.count))
        var shuffler = RandomGenerator(seed: seed)
        let frozen = module.parameters.filter { !$0.requiresGrad }
        var step = startStep
        var microLosses: [Double] = []
        var epochLosses: [Double] = []
        var stop = Stop.finished
        var saveDue = false
        var flatGradients: [Float] = []
        var groupStop = false
        module.train()

        /// Records in the checkpoint's properties where the run stands after `step`, with
        /// `metricsRows` rows of metrics.csv belonging to that state.
        func recordProgress(metricsRows: Int) {
            let state = module.state
            RunArtifacts.recordProgress(state, step: step, batches: step * c.accumulate, seed: seed, batching: batching)
            state.properties[RunArtifacts.Resume.random] = .int(Int64(bitPattern: module.randomState))
            state.properties[RunArtifacts.Resume.metricsRows] = .int(Int64(metricsRows))
            if let best {
                state.properties[RunArtifacts.Resume.bestValue] = .string(String(best.value))
                state.properties[RunArtifacts.Resume.bestStep] = .int(Int64(best.step))
            }
            state.properties[RunArtifacts.Resume.staleEvaluations] = .int(Int64(stale))
        }

        func saveProgress(checkpointOnly: Bool) throws {
            guard let folder else { return }
            try log?.sync()
            recordProgress(metricsRows: rows.count)
            try RunArtifacts.save(module: module, to: folder.path, checkpointOnly: checkpointOnly)
            try RunArtifacts.writePlot(rows, title: c.title, to: folder.path, logScale: c.logScale)
            emit(.checkpointSaved(step: step, path: folder.file(RunArtifacts.checkpointName)))
        }

        func evaluate(epoch: Int, atEpochEnd: Bool, into row: inout RunMetric) throws {
            guard let evaluator else { return }
            let result = try evaluator.run(module.eval(), group: group)
            module.train()
            lastEvaluation = result
            row.record(result)
            var improved = false
            if let monitored, let value = result.value(of: monitored) {
                if monitored.improves(value, on: best?.value) {
                    best = (step, value)
                    stale = 0
                    improved = true
                    if let folder, c.keepBest != nil {
                        let dir = folder.file(RunArtifacts.bestName)
                        do {
                            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
                        } catch {
                            throw OnnxTrainError.io("cannot create \(dir): \(RunArtifacts.reason(error))")
                        }
                        // A checkpoint of this step, resumable too: its metrics row follows right away.
                        recordProgress(metricsRows: rows.count + 1)
                        try module.state.save(to: URL(fileURLWithPath: dir).appendingPathComponent(RunArtifacts.checkpointName).path, includeOptimizerState: true)
                        if module.evalModel != nil {
                            try RunArtifacts.writeInferenceModel(module, to: URL(fileURLWithPath: dir).appendingPathComponent(RunArtifacts.modelName).path)
                        }
                    }
                } else {
                    stale += 1
                }
            }
            emit(.evaluated(TrainerEvent.Evaluation(step: step, epoch: epoch, result: result, initial: false, atEpochEnd: atEpochEnd, improved: improved, best: best)))
        }

        var b = 0
        while b < totalBatches {
            defer { b += 1 }
            let position = b % batches.count
            if c.shuffle && position == 0 {
                // Fisher-Yates with the seeded generator: one new order per pass over the data
                // (replayed for the passes a resumed run already made).
                for i in stride(from: order.count - 1, to: 0, by: -1) {
                    order.swapAt(i, Int(shuffler.next() % UInt64(i + 1)))
                }
            }
            if b < startBatch { continue }
            let epoch = b / batches.count + 1
            let batchIndex = c.shuffle && !batches.examplesSeparable ? order[position] : position
            // Frozen parameters (BatchNorm running statistics) change in place during the forward
            // pass; keep them to restore if this step fails.
            let saved = frozen.map { $0.data.copied() }
            let isUpdate = (b + 1) % c.accumulate == 0
            let lr = schedule(step)
            var gradNorm: Double?
            let stepStart = clock.now
            var reduceSeconds: Double?
            do {
                let loss: Double
                if let group {
                    let part = batches.shard(ofBatch: position, part: group.rank, of: group.size)
                    let local = try group.together {
                        try dataParallelStep(position: position, part: part, order: c.shuffle ? order : nil, step: step, group: group)
                    }
                    // The batch's loss (examples-weighted mean), and whether any process was asked to stop.
                    var sums = [local, stopRequested ? 1 : 0]
                    try group.allreduceSum(&sums)
                    loss = sums[0] / Double(batches.examples(inBatch: position))
                    groupStop = sums[1] > 0
                } else {
                    let feeds = c.shuffle && batches.examplesSeparable ? batches.batch(position, order: order) : batches.batch(batchIndex)
                    let value = try module.trainStep(named: feeds).loss
                    guard value.isFinite else {
                        throw OnnxTrainError.training("the loss is \(nonFinite(value)) at step \(step + 1) (batch \(batchIndex))")
                    }
                    loss = Double(value)
                }
                microLosses.append(loss)
                if isUpdate {
                    if let group {
                        let reduceStart = clock.now
                        try group.averageGradients(of: module.trainableParameters, into: &flatGradients)
                        reduceSeconds = seconds(clock.now - reduceStart)
                    }
                    if let bound = c.clipGradNorm { gradNorm = try clipGradients(to: bound) }
                    optimizer.learningRate = lr
                    try optimizer.step()
                    module.lazyResetGrad()
                    // BatchNorm's running statistics: rank 0's everywhere (DDP's broadcast_buffers).
                    if let group { try group.broadcastParameters(frozen) }
                }
            } catch let error as OnnxTrainError {
                for (p, t) in zip(frozen, saved) { try? p.copy(from: t) }
                module.lazyResetGrad()
                var message = error.message
                if !message.contains("step \(step + 1)") { message = "step \(step + 1): \(message)" }
                if step > 0, let folder {
                    try saveProgress(checkpointOnly: false)
                    message += "; stopped, \(folder.path)/checkpoint holds the state after step \(step)"
                } else if folder != nil {
                    message += "; stopped before any update, no checkpoint was written"
                }
                throw OnnxTrainError(error.kind == .kernel || error.kind == .training ? .training : error.kind, message)
            }
            let elapsed = seconds(clock.now - stepStart)
            let epochEnd = position == batches.count - 1 || b == totalBatches - 1
            var row: RunMetric?
            if isUpdate {
                step += 1
                let loss = microLosses.reduce(0, +) / Double(microLosses.count)
                microLosses.removeAll()
                epochLosses.append(loss)
                var r = RunMetric(step: step, epoch: epoch, loss: loss, learningRate: Double("\(lr)"))
                r.gradNorm = gradNorm
                row = r
                emit(.step(TrainerEvent.Step(step: step, totalSteps: totalSteps, epoch: epoch, epochs: epochs, batch: position + 1,
                                             batchesPerEpoch: batches.count, loss: loss, learningRate: lr, gradNorm: gradNorm, seconds: elapsed,
                                             allreduceSeconds: reduceSeconds)))
            }
            // Evaluation: at each epoch end, and every `evalEvery` steps.
            if epochEnd || (isUpdate && c.evalEvery.map { step % $0 == 0 } == true) {
                if evaluator != nil {
                    var r = row ?? RunMetric(step: step, epoch: epoch, loss: nil, learningRate: nil)
                    try evaluate(epoch: epoch, atEpochEnd: epochEnd, into: &r)
                    row = r
                }
            }
            if let row { try record(row) }
            if epochEnd {
                let mean = epochLosses.isEmpty ? nil : epochLosses.reduce(0, +) / Double(epochLosses.count)
                emit(.epochEnded(TrainerEvent.EpochEnd(epoch: epoch, epochs: epochs, step: step, trainLoss: mean,
                                                       evaluation: evaluator == nil ? nil : lastEvaluation, seconds: seconds(clock.now - started))))
                epochLosses.removeAll()
                if c.checkpointAtEpochEnd { saveDue = true }
            }
            guard isUpdate else { continue }
            if let every = c.checkpointEvery, step % every == 0 { saveDue = true }
            if let patience = c.earlyStopPatience, stale >= patience, step < totalSteps {
                stop = .earlyStopped
            } else if step < totalSteps && (group == nil ? stopRequested : groupStop) {
                stop = .requested
            } else if step < totalSteps && step == c.stopAfter {
                stop = .stopAfter
            }
            if stop != .finished { break }
            if saveDue && step < totalSteps {
                try saveProgress(checkpointOnly: true)
                saveDue = false
            }
        }
        if stop == .earlyStopped, let best, let monitored {
            emit(.earlyStopped(step: step, metric: monitored, best: best, patience: c.earlyStopPatience ?? 0))
        }
        try saveProgress(checkpointOnly: false)
        var outcome = Outcome(stop: stop, startStep: startStep, step: step, totalSteps: totalSteps, lastEvaluation: lastEvaluation, best: best,
                              monitored: monitored, metrics: rows, seconds: seconds(clock.now - started), files: [])
        if let folder {
            try RunReport.write(outcome, configuration: c, plan: self, to: folder.file(RunArtifacts.reportName))
            outcome.files = [RunArtifacts.checkpointName, RunArtifacts.metricsName, RunArtifacts.plotName, RunArtifacts.reportName]
                + (module.evalModel != nil ? [RunArtifacts.modelName] : []) + [RunArtifacts.paramsName]
                + (c.keepBest != nil && FileManager.default.fileExists(atPath: folder.file(RunArtifacts.bestName)) ? [RunArtifacts.bestName + "/"] : [])
        }
        return outcome
    }

    /// One data-parallel train step of this process: its `part` of batch `position`, its gradient
    /// weighted by its share of the batch (parts x examples / batch examples), so the group's mean
    /// is the gradient of the whole batch even when the batch does not split evenly. Returns this
    /// process's loss times its examples. No collective call: a failure here is agreed on after.
    private func dataParallelStep(position: Int, part: Range<Int>, order: [Int]?, step: Int, group: DataParallel) throws -> Double {
        let examples = batches.examples(inBatch: position)
        let weight = Float(group.size * part.count) / Float(examples)
        var loss = 0.0
        if part.isEmpty {
            // Nothing to add: after a reset the gradients must read zero.
            if !module.accumulatesGradients { module.zeroGradients() }
        } else {
            // Gradients already accumulated this optimizer step keep their weight: divided now,
            // multiplied back with this step's after it.
            let accumulated = module.accumulatesGradients
            if weight != 1 && accumulated { try scaleGradients(by: 1 / weight) }
            let value = try module.trainStep(named: batches.batch(position, positions: part, order: order)).loss
            guard value.isFinite else {
                throw OnnxTrainError.training("the loss is \(nonFinite(value)) at step \(step + 1) (batch \(position), examples \(part.lowerBound)..<\(part.upperBound) of it)")
            }
            if weight != 1 { try scaleGradients(by: weight) }
            loss = Double(value) * Double(part.count)
        }
        return loss
    }

    private func scaleGradients(by k: Float) throws {
        for p in module.trainableParameters {
            guard let g = p.grad else { continue }
            guard g.dtype == .float32 else {
                throw OnnxTrainError.unsupported("data-parallel training averages float gradients; the gradient of '\(p.name)' is tensor(\(g.dtype))")
            }
            try g.withSharedMutableBufferPointer(as: Float.self) { for i in $0.indices { $0[i] *= k } }
        }
    }

    /// Global L2 norm of the trainable parameters' gradients; when above `bound` every gradient is
    /// scaled by bound / (norm + 1e-6), as onnxruntime's InplaceClipGradNorm does. Returns the norm
    /// before clipping. The sum of squares is taken in Double.
    func clipGradients(to bound: Double) throws -> Double {
        var total = 0.0
        for p in module.trainableParameters {
            guard let g = p.grad else { continue }
            guard g.dtype == .float32 || g.dtype == .float64 else {
                throw OnnxTrainError.unsupported("gradient clipping: the gradient of '\(p.name)' is tensor(\(g.dtype)); float and double are supported")
            }
            total += try sumOfSquares(g)
        }
        let norm = total.squareRoot()
        let coefficient = bound / (norm + 1e-6)
        if coefficient < 1 {
            for p in module.trainableParameters {
                guard let g = p.grad else { continue }
                if g.dtype == .float32 {
                    let k = Float(coefficient)
                    try g.withSharedMutableBufferPointer(as: Float.self) { for i in $0.indices { $0[i] *= k } }
                } else {
                    try g.withSharedMutableBufferPointer(as: Double.self) { for i in $0.indices { $0[i] *= coefficient } }
                }
            }
        }
        return norm
    }
}

/// A non-finite loss as a message shows it: "nan" whatever the NaN's sign bit (Swift prints a
/// negative NaN as "-nan", which says nothing more), "inf" or "-inf".
private func nonFinite(_ value: Float) -> String {
    value.isNaN ? "nan" : "\(value)"
}
