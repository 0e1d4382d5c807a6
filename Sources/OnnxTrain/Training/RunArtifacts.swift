import Foundation

/// One row of a run's `metrics.csv`: an optimizer step, or an evaluation (eval columns set).
public struct RunMetric {
    public var step: Int
    public var epoch: Int
    /// Train loss of the step (nil on the row of the evaluation before training).
    public var loss: Double?
    public var learningRate: Double?
    public var evalLoss: Double?
    public var evalAccuracy: Double?

    public init(step: Int, epoch: Int, loss: Double?, learningRate: Double?, evalLoss: Double? = nil, evalAccuracy: Double? = nil) {
        self.step = step
        self.epoch = epoch
        self.loss = loss
        self.learningRate = learningRate
        self.evalLoss = evalLoss
        self.evalAccuracy = evalAccuracy
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

    /// Property-bag keys that let `--resume` continue a run exactly.
    public enum Resume {
        /// Optimizer steps done (train steps / accumulation).
        public static let step = "onnx_train.step"
        /// Train steps (batches) done.
        public static let batches = "onnx_train.batches"
        public static let seed = "onnx_train.seed"
        /// The parameter names, joined by newlines: identifies the model a checkpoint belongs to.
        public static let parameters = "onnx_train.parameters"
        /// The batch size, accumulation and shuffling of the run: a resumed run must use the same.
        public static let batching = "onnx_train.batching"
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

    /// `metrics.csv`: step, epoch, loss, lr, eval_loss, eval_accuracy (empty where not measured).
    public static func metricsCSV(_ rows: [RunMetric]) -> String {
        func cell(_ v: Double?) -> String { v.map { String(format: "%.9g", $0) } ?? "" }
        var text = "step,epoch,loss,lr,eval_loss,eval_accuracy\n"
        for r in rows {
            text += "\(r.step),\(r.epoch),\(cell(r.loss)),\(cell(r.learningRate)),\(cell(r.evalLoss)),\(cell(r.evalAccuracy))\n"
        }
        return text
    }

    /// Writes the metrics and the loss plot.
    public static func writeMetrics(_ rows: [RunMetric], title: String, to directory: String) throws {
        let folder = URL(fileURLWithPath: directory)
        try DataFile.write(Data(metricsCSV(rows).utf8), to: folder.appendingPathComponent(metricsName).path)
        let train = rows.compactMap { r in r.loss.map { (step: r.step, loss: $0) } }
        let eval = rows.compactMap { r in r.evalLoss.map { (step: r.step, loss: $0) } }
        try DataFile.write(Data(LossPlot.svg(train: train, eval: eval, title: title).utf8), to: folder.appendingPathComponent(plotName).path)
    }

    /// Every parameter (trainable and frozen) as `params.safetensors`, in checkpoint order.
    public static func writeParameters(_ state: CheckpointState, to path: String) throws {
        try SafeTensors.write(SafeTensorsFile(tensors: state.parameters.map { ($0.name, $0.data) }), to: path)
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
        state.properties[Resume.parameters] = .string(state.parameterNames.joined(separator: "\n"))
    }

    /// Saves the checkpoint (with optimizer state) and, unless `checkpointOnly`, the other files.
    public static func save(module: TrainingModule, metrics: [RunMetric], title: String, to directory: String, checkpointOnly: Bool = false) throws {
        let folder = URL(fileURLWithPath: directory)
        try module.state.save(to: folder.appendingPathComponent(checkpointName).path, includeOptimizerState: true)
        guard !checkpointOnly else { return }
        try writeMetrics(metrics, title: title, to: directory)
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
    /// Reads back a `metrics.csv` this module wrote (rows it cannot read are skipped).
    public static func parseMetrics(_ text: String) -> [RunMetric] {
        var rows: [RunMetric] = []
        for line in text.split(separator: "\n").dropFirst() {
            let c = line.split(separator: ",", omittingEmptySubsequences: false).map(String.init)
            guard c.count >= 6, let step = Int(c[0]), let epoch = Int(c[1]) else { continue }
            rows.append(RunMetric(step: step, epoch: epoch, loss: Double(c[2]), learningRate: Double(c[3]), evalLoss: Double(c[4]), evalAccuracy: Double(c[5])))
        }
        return rows
    }
}
