import Foundation

/// Feeds for timing a model when the user has no data: every input the model takes, shaped as
/// declared, with symbolic or unknown dimensions taken from `dimensions` (by name) or `defaultDimension`.
/// Floating-point inputs are uniform in [-1, 1); integer and bool inputs are ones (a valid token
/// id, index, length or mask for almost any model). The same seed gives the same feeds.
public enum SyntheticFeeds {
    public static func make(for inputs: [ValueInfo], dimensions: [String: Int] = [:], defaultDimension: Int = 1,
                            seed: UInt64 = 0) throws -> [String: Tensor] {
        var random = RandomGenerator(seed: seed)
        var feeds: [String: Tensor] = [:]
        for info in inputs {
            guard case .tensor(let dtype?, let dims?)? = info.type else {
                throw OnnxTrainError.invalidInput("input '\(info.name)' has no declared tensor type and rank: give its data with --inputs")
            }
            let shape = try dims.map { dim -> Int in
                switch dim {
                case .value(let n) where n >= 0: return n
                case .symbol(let s): return dimensions[s] ?? defaultDimension
                default: return defaultDimension
                }
            }
            let count: Int
            do { count = try Tensor.checkedElementCount(shape, "input '\(info.name)'") } catch let e as KernelError {
                throw OnnxTrainError.invalidInput(e.message + " (set its dimensions with --dim NAME=SIZE)")
            }
            if dtype == .string {
                throw OnnxTrainError.invalidInput("input '\(info.name)' is a string tensor: give its data with --inputs")
            }
            let values: [Float] = dtype.isFloatingPoint ? (0..<count).map { _ in random.nextFloat() * 2 - 1 } : [Float](repeating: 1, count: count)
            feeds[info.name] = try Tensor(shape: shape, scalars: values).cast(to: dtype)
        }
        return feeds
    }
}

/// Steady-state latencies of one model: what `onnx-train bench MODEL.onnx --infer` reports.
public struct InferenceTiming: Sendable {
    /// Seconds per run, in the order they ran (warm-up runs left out).
    public var latencies: [Double]

    public var sorted: [Double] { latencies.sorted() }
    public var median: Double { sorted[latencies.count / 2] }
    public var minimum: Double { latencies.min() ?? .nan }
    /// The 90th percentile (nearest rank).
    public var p90: Double { sorted[min(latencies.count - 1, Int((0.9 * Double(latencies.count)).rounded(.up)) - 1)] }
}

extension InferenceSession {
    /// Times `runs` runs on `feeds` after a warm-up of at least `warmup` runs and `warmupSeconds`
    /// (threads, caches and the buffer cache settle first).
    public func time(_ feeds: [String: Tensor], warmup: Int = 5, warmupSeconds: Double = 0.5, runs: Int = 50) throws -> InferenceTiming {
        guard runs > 0 else { throw OnnxTrainError.invalidInput("the number of timed runs must be at least 1, got \(runs)") }
        let values = feeds.mapValues { Value.tensor($0) }
        let clock = ContinuousClock()
        let start = clock.now
        var done = 0
        while done < warmup || seconds(clock.now - start) < warmupSeconds {
            _ = try run(values)
            done += 1
        }
        var latencies: [Double] = []
        latencies.reserveCapacity(runs)
        for _ in 0..<runs {
            let t = clock.now
            _ = try run(values)
            latencies.append(seconds(clock.now - t))
        }
        return InferenceTiming(latencies: latencies)
    }

    private func seconds(_ d: Duration) -> Double {
        Double(d.components.seconds) + Double(d.components.attoseconds) * 1e-18
    }
}
