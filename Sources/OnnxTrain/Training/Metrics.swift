import Foundation

/// Counts of (true class, predicted class) over an evaluation: rows are the true classes.
public struct ConfusionMatrix: Equatable {
    public let classes: Int
    /// counts[truth * classes + predicted]
    public private(set) var counts: [Int]

    public init(classes: Int) {
        self.classes = classes
        counts = [Int](repeating: 0, count: classes * classes)
    }

    public subscript(truth: Int, predicted: Int) -> Int { counts[truth * classes + predicted] }

    mutating func add(truth: Int, predicted: Int, count: Int = 1) { counts[truth * classes + predicted] += count }

    /// Examples of each true class.
    public var support: [Int] { (0..<classes).map { t in (0..<classes).reduce(0) { $0 + self[t, $1] } } }

    /// Per true class: the fraction predicted correctly (recall); nil for a class with no examples.
    public var perClassAccuracy: [Double?] {
        (0..<classes).map { c in
            let n = support[c]
            return n > 0 ? Double(self[c, c]) / Double(n) : nil
        }
    }
}

/// What an evaluation measured. Classification (integer labels with one row of scores per label):
/// accuracy, top-k accuracy and the confusion matrix. Regression (float targets the shape of an
/// output): mean absolute and root-mean-square error.
public struct EvaluationResult: Equatable {
    /// Mean eval loss over the examples (batches weighted by their examples).
    public var loss: Double
    public var examples: Int
    public var accuracy: Double?
    /// k and the fraction of labels among the k highest scores (k < classes).
    public var topK: Int?
    public var topKAccuracy: Double?
    public var confusion: ConfusionMatrix?
    public var mae: Double?
    public var rmse: Double?
    /// The first batch whose loss was NaN or infinite (then `loss` is too), nil when all were finite.
    public var firstNonFiniteBatch: Int?

    /// The value of `metric` (nil when not measured).
    public func value(of metric: MonitoredMetric) -> Double? {
        switch metric {
        case .evalLoss: return loss
        case .evalAccuracy: return accuracy
        case .evalTopK: return topKAccuracy
        case .evalMAE: return mae
        case .evalRMSE: return rmse
        }
    }

    /// "eval loss 0.1234, accuracy 97.2%, top-5 99.7%" (what was measured).
    public var summary: String {
        // NaN's sign says nothing; printf writes "-nan" for some.
        var parts = [loss.isNaN ? "eval loss nan" : String(format: "eval loss %.4f", loss)]
        if let accuracy { parts.append(String(format: "accuracy %.1f%%", accuracy * 100)) }
        if let topK, let topKAccuracy { parts.append(String(format: "top-%d %.1f%%", topK, topKAccuracy * 100)) }
        if let mae { parts.append(String(format: "MAE %.4g", mae)) }
        if let rmse { parts.append(String(format: "RMSE %.4g", rmse)) }
        return parts.joined(separator: ", ")
    }
}

/// An eval metric that keep-best and early stopping watch.
public enum MonitoredMetric: String, CaseIterable, Sendable {
    case evalLoss = "eval_loss"
    case evalAccuracy = "eval_accuracy"
    case evalTopK = "eval_topk_accuracy"
    case evalMAE = "eval_mae"
    case evalRMSE = "eval_rmse"

    /// Whether larger is better.
    public var higherIsBetter: Bool { self == .evalAccuracy || self == .evalTopK }

    /// Whether `value` beats `best` (strictly).
    public func improves(_ value: Double, on best: Double?) -> Bool {
        guard let best else { return true }
        return higherIsBetter ? value > best : value < best
    }

    /// Parses `eval_loss`, `loss`, `accuracy`, `eval_accuracy`, `mae`, `rmse`, `topk` ...
    public init?(name: String) {
        let n = name.lowercased().replacingOccurrences(of: "-", with: "_")
        let bare = n.hasPrefix("eval_") ? String(n.dropFirst(5)) : n
        switch bare {
        case "loss": self = .evalLoss
        case "accuracy", "acc": self = .evalAccuracy
        case "topk", "topk_accuracy", "top_k", "top_k_accuracy": self = .evalTopK
        case "mae": self = .evalMAE
        case "rmse": self = .evalRMSE
        default: return nil
        }
    }
}

/// Runs a module's eval graph over held-out data and measures the loss and, where the graph's
/// outputs allow, classification or regression metrics.
public struct Evaluator {
    public let batches: Batches
    /// The data array holding class labels, if any: what a SoftmaxCrossEntropyLoss /
    /// NegativeLogLikelihoodLoss reads from the data, else an integer `labels` array.
    public let labels: String?
    /// Float targets for regression metrics: a data array other than the first input, compared
    /// with the first non-loss output of the same element count.
    public let targets: String?
    /// k of the top-k accuracy.
    public let topK: Int

    public init(module: TrainingModule, batches: Batches, topK: Int = 5) throws {
        guard let model = module.evalModel else { throw OnnxTrainError.invalidInput("evaluation needs an eval model (eval_model.onnx)") }
        self.batches = batches
        self.topK = topK
        let graph = model.graph
        labels = graph.nodes.first { ($0.opType == "SoftmaxCrossEntropyLoss" || $0.opType == "NegativeLogLikelihoodLoss") && $0.inputs.count > 1 && batches.names.contains($0.inputs[1]) }?.inputs[1]
            ?? batches.names.first { $0 == "labels" && batches.arrays[$0]?.dtype.isInteger == true }
        let targets = labels == nil ? batches.names.dropFirst().first { batches.arrays[$0]?.dtype.isFloatingPoint == true } : nil
        self.targets = targets
        // The prediction: an output other than the loss, else what a Sub node compares with the
        // targets (onnxblock's MSELoss and L1Loss start with Sub(output, target)), fetched too.
        if let targets, !graph.outputs.contains(where: { $0.name != module.lossName && $0.name != graph.outputs.first?.name }) {
            let constants = Set(graph.initializerNames).union(graph.nodes.filter { $0.opType == "Constant" }.flatMap(\.outputs))
            prediction = graph.nodes.first { $0.opType == "Sub" && $0.inputs.count == 2 && $0.inputs.contains(targets) }
                .flatMap { node in node.inputs.first { $0 != targets && !constants.contains($0) } }
        } else {
            prediction = nil
        }
    }

    /// A value fetched besides the eval graph's outputs: the prediction of a regression loss.
    let prediction: String?

    /// Evaluates every batch, or with `group` (data-parallel training) this process's share of
    /// them (batches rank, rank + size, ...), and sums the counts over the group, so every
    /// process gets the result of the whole eval set.
    public func run(_ module: TrainingModule, group: DataParallel? = nil) throws -> EvaluationResult {
        var loss = 0.0, examples = 0
        var correct = 0, inTopK = 0, counted = 0, classCount: Int?
        var confusion: ConfusionMatrix?
        var absError = 0.0, squaredError = 0.0, regressed = 0
        var firstNonFinite: Int?
        func sums() -> [Double] {
            [loss, Double(examples), Double(correct), Double(inTopK), Double(counted), Double(classCount ?? 0),
             absError, squaredError, Double(regressed)]
        }
        guard let group, group.size > 1 else {
            try evaluate(module, batches: Array(0..<batches.count), loss: &loss, examples: &examples, correct: &correct, inTopK: &inTopK,
                         counted: &counted, classCount: &classCount, confusion: &confusion, absError: &absError,
                         squaredError: &squaredError, regressed: &regressed, firstNonFinite: &firstNonFinite)
            var r = result(sums(), confusion: confusion)
            r.firstNonFiniteBatch = firstNonFinite
            return r
        }
        try group.together {
            try evaluate(module, batches: Array(stride(from: group.rank, to: batches.count, by: group.size)), loss: &loss, examples: &examples,
                         correct: &correct, inTopK: &inTopK, counted: &counted, classCount: &classCount, confusion: &confusion,
                         absError: &absError, squaredError: &squaredError, regressed: &regressed, firstNonFinite: &firstNonFinite)
        }
        // The counts add up; the class count is the same wherever it was seen (max).
        var total = sums()
        var classes = [total[5]]
        try group.allreduceSum(&total)
        try classes.withUnsafeMutableBufferPointer { try group.allreduceMax($0) }
        total[5] = classes[0]
        // The earliest non-finite batch of any process: the largest count of batches after it.
        var afterNonFinite = [firstNonFinite.map { Double(batches.count - $0) } ?? 0]
        try afterNonFinite.withUnsafeMutableBufferPointer { try group.allreduceMax($0) }
        var matrix: ConfusionMatrix?
        if classes[0] > 0 {
            let n = Int(classes[0])
            var counts = (confusion?.counts ?? [Int](repeating: 0, count: n * n)).map(Double.init)
            try group.allreduceSum(&counts)
            var m = ConfusionMatrix(classes: n)
            for t in 0..<n { for p in 0..<n { m.add(truth: t, predicted: p, count: Int(counts[t * n + p])) } }
            matrix = total[4] > 0 ? m : nil
        }
        var r = result(total, confusion: matrix)
        r.firstNonFiniteBatch = afterNonFinite[0] > 0 ? batches.count - Int(afterNonFinite[0]) : nil
        return r
    }

    /// The result of the summed counts (`run`'s `sums` order).
    private func result(_ s: [Double], confusion: ConfusionMatrix?) -> EvaluationResult {
        var result = EvaluationResult(loss: s[0] / max(s[1], 1), examples: Int(s[1]))
        let counted = s[4]
        if counted > 0 {
            result.accuracy = s[2] / counted
            if s[5] > 0, topK < Int(s[5]) {
                result.topK = topK
                result.topKAccuracy = s[3] / counted
            }
            result.confusion = confusion
        }
        if s[8] > 0 {
            result.mae = s[6] / s[8]
            result.rmse = (s[7] / s[8]).squareRoot()
        }
        return result
    }

    private func evaluate(_ module: TrainingModule, batches indices: [Int], loss: inout Double, examples: inout Int, correct: inout Int,
                          inTopK: inout Int, counted: inout Int, classCount: inout Int?, confusion: inout ConfusionMatrix?,
                          absError: inout Double, squaredError: inout Double, regressed: inout Int, firstNonFinite: inout Int?) throws {
        for k in indices {
            let batch = batches.batch(k)
            let n = batches.examples(inBatch: k)
            let out = try module.evalStep(named: batch, alsoFetching: prediction.map { [$0] } ?? [])
            loss += Double(out.loss) * Double(n)
            examples += n
            if !out.loss.isFinite && firstNonFinite == nil { firstNonFinite = k }
            if let labels, let truth = batch[labels]?.intValues(),
               // Scores: the first output other than the loss with one float row per label.
               let i = out.names.indices.first(where: { out.names[$0] != out.lossName && out.values[$0].rank == 2 && out.values[$0].shape[0] == truth.count && out.values[$0].dtype == .float32 }) {
                let scores = out.values[i], classes = scores.shape[1]
                guard classes > 0 else { continue }
                classCount = classes
                if confusion == nil { confusion = ConfusionMatrix(classes: classes) }
                try scores.withUnsafeBufferPointer(as: Float.self) { s in
                    for (r, t) in truth.enumerated() where t >= 0 && t < classes {
                        let row = s[(r * classes)..<((r + 1) * classes)]
                        var best = 0
                        for c in 1..<classes where row[row.startIndex + c] > row[row.startIndex + best] { best = c }
                        if best == t { correct += 1 }
                        // Rank of the label: how many classes score strictly higher.
                        let score = row[row.startIndex + t]
                        if row.reduce(0, { $0 + ($1 > score ? 1 : 0) }) < topK { inTopK += 1 }
                        confusion!.add(truth: t, predicted: best)
                        counted += 1
                    }
                }
            } else if let targets, let target = batch[targets],
                      let i = out.names.indices.first(where: { out.names[$0] != out.lossName && out.values[$0].count == target.count && out.values[$0].dtype.isFloatingPoint }) {
                let predicted = try floatValues(out.values[i], out.names[i]), truth = try floatValues(target, targets)
                for (p, t) in zip(predicted, truth) {
                    absError += abs(p - t)
                    squaredError += (p - t) * (p - t)
                }
                regressed += truth.count
            }
        }
    }
}
