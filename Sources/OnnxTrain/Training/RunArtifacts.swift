import Foundation

/// One row of a run's `metrics.csv`: an optimizer step, or an evaluation (eval columns set).
public struct RunMetric: Equatable {
    public var step: Int
    public var epoch: Int
    /// Train loss of the step (nil on the row of the evaluation before training).
    public var loss: Double?
    public var learningRate: Double?
    public var evalLoss: Double?
    public var evalAccuracy: Double?
    /// Global L2 norm of the accumulated gradients before clipping (with gradient clipping).
    public var gradNorm: Double?
    public var evalTopK: Double?
    public var evalMAE: Double?
    public var evalRMSE: Double?

    public init(step: Int, epoch: Int, loss: Double?, learningRate: Double?, evalLoss: Double? = nil, evalAccuracy: Double? = nil) {
        self.step = step
        self.epoch = epoch
        self.loss = loss
        self.learningRate = learningRate
        self.evalLoss = evalLoss
        self.evalAccuracy = evalAccuracy
    }

    /// Sets the eval columns from an evaluation.
    public mutating func record(_ result: EvaluationResult) {
        evalLoss = result.loss
        evalAccuracy = result.accuracy
        evalTopK = result.topKAccuracy
        evalMAE = result.mae
        evalRMSE = result.rmse
    }
}

/// What a training run leaves in its output folder: `checkpoint`, `metrics.csv`, `loss.svg`,
/// `model.onnx` and `params.safetensors`. Every file is written to a temporary name and renamed,
/// so a failed save (full disk) leaves the previous version intact.
public enum RunArtifacts {
    public static let checkpointName = "checkpoint"
    public static let metricsName = "metrics.csv"
    public static let plotName = "loss.svg"
    public static let modelName = "model.onnx"
    public static let paramsName = "params.safetensors"
    public static let reportName = "report.html"
    /// The folder that keeps the best checkpoint and model.onnx (`--keep-best`).
    public static let bestName = "best"
    /// Held (flock) while a run writes the folder.
    public static let lockName = ".onnx-train.lock"

    /// Property-bag keys that let `--resume` continue a run exactly.
    public enum Resume {
        /// Optimizer steps done (train steps / accumulation).
        public static let step = "onnx_train.step"
        /// Train steps (batches) done.
        public static let batches = "onnx_train.batches"
        public static let seed = "onnx_train.seed"
        /// The parameter names, sorted and joined by newlines: identifies the model a checkpoint belongs to.
        public static let parameters = "onnx_train.parameters"
        /// The batch size, accumulation and shuffling of the run: a resumed run must use the same.
        public static let batching = "onnx_train.batching"
        /// The training session's random generator (Dropout masks) after the saved step.
        public static let random = "onnx_train.random"
        /// Rows of metrics.csv that belong to the saved state.
        public static let metricsRows = "onnx_train.metrics_rows"
        /// Keep-best / early stopping: the best monitored value, its step, evaluations since.
        public static let bestValue = "onnx_train.best_value"
        public static let bestStep = "onnx_train.best_step"
        public static let staleEvaluations = "onnx_train.stale_evaluations"
    }

    /// Creates `directory` (and parents) and checks that a file can be written into it.
    public static func prepare(directory: String) throws {
        do {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        } catch {
            throw OnnxTrainError.io("cannot create the output folder \(directory): \(reason(error))")
        }
        let probe = URL(fileURLWithPath: directory).appendingPathComponent(".onnx-train-write-test-\(getpid())").path
        guard FileManager.default.createFile(atPath: probe, contents: Data()) else {
            throw OnnxTrainError.io("cannot write into the output folder \(directory) (permission denied or read-only); choose another with --out")
        }
        try? FileManager.default.removeItem(atPath: probe)
    }

    /// The header of `metrics.csv`.
    public static let metricsHeader = "step,epoch,loss,lr,eval_loss,eval_accuracy,grad_norm,eval_topk_accuracy,eval_mae,eval_rmse\n"

    /// One `metrics.csv` line (empty cells where not measured).
    public static func metricsLine(_ r: RunMetric) -> String {
        // Shortest text that reads back as the same Double: a resumed run continues with exactly
        // the values it wrote.
        func cell(_ v: Double?) -> String { v.map { "\($0)" } ?? "" }
        return "\(r.step),\(r.epoch),\(cell(r.loss)),\(cell(r.learningRate)),\(cell(r.evalLoss)),\(cell(r.evalAccuracy)),"
            + "\(cell(r.gradNorm)),\(cell(r.evalTopK)),\(cell(r.evalMAE)),\(cell(r.evalRMSE))\n"
    }

    /// `metrics.csv`: step, epoch, loss, lr, eval_loss, eval_accuracy, grad_norm, eval_topk_accuracy,
    /// eval_mae, eval_rmse.
    public static func metricsCSV(_ rows: [RunMetric]) -> String {
        rows.reduce(metricsHeader) { $0 + metricsLine($1) }
    }

    /// Writes the metrics and the loss plot (atomically).
    public static func writeMetrics(_ rows: [RunMetric], title: String, to directory: String, logScale: Bool? = nil) throws {
        let folder = URL(fileURLWithPath: directory)
        try DataFile.write(Data(metricsCSV(rows).utf8), to: folder.appendingPathComponent(metricsName).path)
        try writePlot(rows, title: title, to: directory, logScale: logScale)
    }

    /// `loss.svg` from the metrics rows (it can always be rebuilt from metrics.csv).
    public static func writePlot(_ rows: [RunMetric], title: String, to directory: String, logScale: Bool? = nil) throws {
        let path = URL(fileURLWithPath: directory).appendingPathComponent(plotName).path
        try DataFile.write(Data(LossPlot.svg(rows, title: title, logScale: logScale).utf8), to: path)
    }

    /// Every parameter (trainable and frozen) as `params.safetensors`, sorted by name (so the file
    /// does not depend on the order a checkpoint happened to list them in).
    public static func writeParameters(_ state: CheckpointState, to path: String) throws {
        let tensors = state.parameters.sorted { $0.name < $1.name }.map { ($0.name, $0.data) }
        try SafeTensors.write(SafeTensorsFile(tensors: tensors), to: path)
    }

    /// The outputs an inference model keeps: every eval output but the loss (the loss too when
    /// it is the only one).
    public static func inferenceOutputs(of module: TrainingModule) -> [String] {
        let outputs = module.evalOutputNames.filter { $0 != module.lossName }
        return outputs.isEmpty ? module.evalOutputNames : outputs
    }

    /// `model.onnx`: the eval graph (for gradient graphs, the forward part) pruned to the model
    /// outputs, with the current parameters as initializers.
    public static func writeInferenceModel(_ module: TrainingModule, to path: String, outputs: [String]? = nil) throws {
        try module.exportModelForInferencing(to: path, outputs: outputs ?? inferenceOutputs(of: module))
    }

    /// Records where a run is, in the checkpoint's property bag, for `--resume`.
    public static func recordProgress(_ state: CheckpointState, step: Int, batches: Int, seed: UInt64, batching: String? = nil) {
        if let batching { state.properties[Resume.batching] = .string(batching) }
        state.properties[Resume.step] = .int(Int64(step))
        state.properties[Resume.batches] = .int(Int64(batches))
        state.properties[Resume.seed] = .int(Int64(bitPattern: seed))
        state.properties[Resume.parameters] = .string(state.parameterNames.sorted().joined(separator: "\n"))
    }

    /// Saves the checkpoint (with optimizer state) and, unless `checkpointOnly`, params.safetensors
    /// and model.onnx (the metrics are appended as they come, see `MetricsLog`).
    public static func save(module: TrainingModule, to directory: String, checkpointOnly: Bool = false) throws {
        let folder = URL(fileURLWithPath: directory)
        try module.state.save(to: folder.appendingPathComponent(checkpointName).path, includeOptimizerState: true)
        guard !checkpointOnly else { return }
        try writeParameters(module.state, to: folder.appendingPathComponent(paramsName).path)
        if module.evalModel != nil {
            try writeInferenceModel(module, to: folder.appendingPathComponent(modelName).path)
        }
    }

    /// A default output folder: `runs/<name>-<UTC timestamp>`.
    public static func defaultDirectory(for path: String, date: Date = Date()) -> String {
        var url = URL(fileURLWithPath: path).standardizedFileURL
        if url.lastPathComponent.hasSuffix(".onnx") {
            let stem = url.deletingPathExtension().lastPathComponent
            url.deleteLastPathComponent()
            if stem == "gradient_graph" || stem == "model" { return "runs/\(url.lastPathComponent)-\(stamp(date))" }
            return "runs/\(stem)-\(stamp(date))"
        }
        return "runs/\(url.lastPathComponent)-\(stamp(date))"
    }

    static func stamp(_ date: Date) -> String {
        let f = DateFormatter()
        f.locale = Locale(identifier: "en_US_POSIX")
        f.timeZone = TimeZone(identifier: "UTC")
        f.dateFormat = "yyyyMMdd-HHmmss"
        return f.string(from: date)
    }

    static func reason(_ error: Error) -> String {
        (error as NSError).localizedFailureReason ?? (error as NSError).localizedDescription
    }
}

extension RunArtifacts {
    /// Reads back a `metrics.csv` this module wrote (rows it cannot read, like a line cut short by
    /// a kill, are skipped).
    public static func parseMetrics(_ text: String) -> [RunMetric] {
        var rows: [RunMetric] = []
        for line in text.split(separator: "\n").dropFirst() where text.hasSuffix("\n") || line.endIndex != text.endIndex {
            let c = line.split(separator: ",", omittingEmptySubsequences: false).map(String.init)
            guard c.count >= 6, let step = Int(c[0]), let epoch = Int(c[1]) else { continue }
            var row = RunMetric(step: step, epoch: epoch, loss: Double(c[2]), learningRate: Double(c[3]), evalLoss: Double(c[4]), evalAccuracy: Double(c[5]))
            if c.count >= 10 {
                row.gradNorm = Double(c[6])
                row.evalTopK = Double(c[7])
                row.evalMAE = Double(c[8])
                row.evalRMSE = Double(c[9])
            }
            rows.append(row)
        }
        return rows
    }
}
