import Foundation

/// What a `Trainer` reports while it runs (`Trainer.onEvent`), in order: `started`, the initial
/// `evaluated`, then per optimizer step a `step`, an `evaluated` when one is due, `epochEnded` at
/// each epoch end and `checkpointSaved` after each save.
public enum TrainerEvent {
    public struct Start {
        /// 0, or the step a resumed run continues from.
        public let startStep: Int
        public let totalSteps: Int
        public let batchesPerEpoch: Int
        public let epochs: Int
        /// Examples one epoch visits.
        public let examples: Int
        public let schedule: String
    }

    public struct Step {
        public let step: Int
        public let totalSteps: Int
        public let epoch: Int
        public let epochs: Int
        /// 1-based position of the step's last batch in its epoch.
        public let batch: Int
        public let batchesPerEpoch: Int
        /// Mean loss of the step's batches.
        public let loss: Double
        public let learningRate: Float
        /// Global gradient norm before clipping (with clipping on).
        public let gradNorm: Double?
        /// Wall time of the last batch's train step and the optimizer step.
        public let seconds: Double
        /// Data-parallel training: wall time of the gradient allreduce (part of `seconds`).
        public let allreduceSeconds: Double?
    }

    public struct Evaluation {
        public let step: Int
        public let epoch: Int
        public let result: EvaluationResult
        /// The evaluation before the first (or the resumed) step.
        public let initial: Bool
        /// At an epoch end (then `epochEnded` follows with the same result).
        public let atEpochEnd: Bool
        /// Whether the monitored metric reached a new best (keep-best, early stopping).
        public let improved: Bool
        public let best: (step: Int, value: Double)?
    }

    public struct EpochEnd {
        public let epoch: Int
        public let epochs: Int
        public let step: Int
        /// Mean train loss of the epoch's steps (nil when none completed in it).
        public let trainLoss: Double?
        /// The evaluation at this epoch end.
        public let evaluation: EvaluationResult?
        /// Seconds since the run started.
        public let seconds: Double
    }

    case started(Start)
    case step(Step)
    case evaluated(Evaluation)
    case epochEnded(EpochEnd)
    case checkpointSaved(step: Int, path: String)
    case earlyStopped(step: Int, metric: MonitoredMetric, best: (step: Int, value: Double), patience: Int)
}

extension TrainerEvent.EpochEnd {
    /// "epoch 2/5 (step 40): train loss 0.3120, eval loss 0.2871, accuracy 91.4% ...", the line
    /// `onnx-train run` prints at an epoch end (less its timing).
    public var summary: String {
        "epoch \(epoch)/\(epochs) (step \(step)): train loss " + (trainLoss.map { String(format: "%.4f", $0) } ?? "-")
            + (evaluation.map { ", " + $0.summary } ?? "")
    }
}

extension TrainerEvent {
    /// One line per epoch for a program's log: the initial evaluation ("epoch 0: ...") and each
    /// epoch's end (`EpochEnd.summary`); nil for every other event.
    public var epochSummary: String? {
        switch self {
        case .evaluated(let e) where e.initial: return "epoch 0: " + e.result.summary
        case .epochEnded(let e): return e.summary
        default: return nil
        }
    }
}
