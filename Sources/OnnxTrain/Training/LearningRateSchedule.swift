import Foundation

/// A learning-rate schedule: the rate of an optimizer step as a plain function of the number of
/// steps already taken (0 for the first step), composed from small pieces as mlx-swift's
/// schedulers are (`joined` plays `joinSchedules`), never picked by comparing strings.
///
///     // linear warm-up over 100 steps, then cosine decay to 0 over the remaining 900
///     let lr = LearningRateSchedule.warmup(steps: 100, then: .cosineDecay(from: 3e-4, steps: 900))
///     optimizer.learningRate = lr(step)
public struct LearningRateSchedule: Sendable {
    /// What the schedule does, for `--dry-run`, the report and `run`'s settings line.
    public let description: String
    private let rate: @Sendable (Int) -> Float

    /// - Parameters:
    ///   - description: shown to people.
    ///   - rate: the learning rate of the step after `step` completed steps.
    public init(_ description: String, rate: @escaping @Sendable (Int) -> Float) {
        self.description = description
        self.rate = rate
    }

    /// The learning rate of the step that follows `step` completed steps.
    public func callAsFunction(_ step: Int) -> Float { rate(max(step, 0)) }

    /// The same rate at every step.
    public static func constant(_ lr: Float) -> LearningRateSchedule {
        LearningRateSchedule("constant \(lr)") { _ in lr }
    }

    /// onnxruntime's `LinearLRScheduler` decay: lr · max(0, (steps − s) / max(1, steps)), reaching 0
    /// after `steps` steps. Computed in Float as onnxruntime's C++ does.
    public static func linearDecay(from lr: Float, steps: Int) -> LearningRateSchedule {
        LearningRateSchedule("linear decay from \(lr) to 0 over \(steps) steps") { s in
            lr * max(0, Float(steps - min(s, steps)) / Float(max(1, steps)))
        }
    }

    /// Cosine decay from `lr` to `minimum` over `steps` steps, then `minimum`. The cosine is taken in
    /// Double: near π/2 Float loses digits on long schedules.
    public static func cosineDecay(from lr: Float, steps: Int, minimum: Float = 0) -> LearningRateSchedule {
        let ratio = Double(minimum) / Double(lr == 0 ? 1 : lr)
        return LearningRateSchedule("cosine decay from \(lr) to \(minimum) over \(steps) steps") { s in
            let progress = min(1, Double(s) / Double(max(1, steps)))
            let cosine = 0.5 * (1 + cos(Double.pi * progress))
            return lr * Float(ratio + (1 - ratio) * cosine)
        }
    }

    /// Linear warm-up: lr · s / max(1, steps) (0 at the first step, as onnxruntime's schedulers).
    public static func linearWarmup(to lr: Float, steps: Int) -> LearningRateSchedule {
        LearningRateSchedule("linear warm-up to \(lr) over \(steps) steps") { s in lr * (Float(s) / Float(max(1, steps))) }
    }

    /// `schedules[i]` from step `boundaries[i - 1]` on, fed the steps since its boundary
    /// (mlx-swift's `joinSchedules`). `boundaries` has one entry fewer than `schedules`.
    public static func joined(_ schedules: [LearningRateSchedule], boundaries: [Int]) -> LearningRateSchedule {
        precondition(!schedules.isEmpty && boundaries.count == schedules.count - 1, "joined: one boundary between each two schedules")
        let starts = [0] + boundaries
        let text = zip(starts, schedules).map { "\($0.1.description) from step \($0.0)" }.joined(separator: ", then ")
        return LearningRateSchedule(text) { s in
            let i = starts.lastIndex(where: { $0 <= s }) ?? 0
            return schedules[i](s - starts[i])
        }
    }

    /// Linear warm-up to `peak` (default: `then`'s first rate) over `steps` steps, then `then` (fed
    /// the steps since the warm-up). With `steps` 0 it is `then`.
    public static func warmup(steps: Int, peak: Float? = nil, then: LearningRateSchedule) -> LearningRateSchedule {
        guard steps > 0 else { return then }
        return joined([linearWarmup(to: peak ?? then(0), steps: steps), then], boundaries: [steps])
    }
}
