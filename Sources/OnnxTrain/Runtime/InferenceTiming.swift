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

/// The time of one node in `InferenceSession.profile(_:runs:)`.
public struct NodeProfile: Sendable {
    /// The node's name in the optimised graph ("" when it has none); a node a pass made (FusedConv,
    /// a fused Gemm) carries the name of a node it replaced or a name of its own.
    public var name: String
    public var opType: String
    public var domain: String
    /// The shape of the node's first output in the last profiled run (nil when it is not a tensor).
    public var outputShape: [Int]?
    /// The node's first output value name ("" when it has none), to name a node that has no name.
    public var output: String
    /// Seconds per run of the node's kernel call (the mean over the profiled runs).
    public var seconds: Double
    /// `name`, or the first output's name in brackets for a node without one.
    public var displayName: String { name.isEmpty ? "[\(output)]" : name }
}

/// Per-node times of a model's runs: what `onnx-train bench MODEL.onnx --infer --profile` prints
/// (like onnxruntime's `enable_profiling`).
public struct InferenceProfile: Sendable {
    /// The runs timed.
    public var runs: Int
    /// Every node the runs executed, once each, in execution order.
    public var nodes: [NodeProfile]
    /// Seconds per profiled run, the whole run (checks, the memory pattern, freeing values and the
    /// clock reads included).
    public var runSeconds: Double

    /// Seconds per run inside the nodes' kernel calls, all nodes.
    public var nodeSeconds: Double { nodes.reduce(0) { $0 + $1.seconds } }

    /// The nodes of one op type together.
    public struct OpTypeTotal: Sendable {
        public var opType: String
        /// Seconds per run, all nodes of the type.
        public var seconds: Double
        /// `seconds` over `nodeSeconds`.
        public var share: Double
        /// Nodes of the type.
        public var count: Int
    }

    /// Per op type (domain-qualified for an op outside ai.onnx: `com.microsoft.FusedConv`), slowest first.
    public var byOpType: [OpTypeTotal] {
        var totals: [String: (seconds: Double, count: Int)] = [:]
        var order: [String] = []
        for n in nodes {
            let key = n.domain.isEmpty ? n.opType : "\(n.domain).\(n.opType)"
            if totals[key] == nil { order.append(key) }
            totals[key, default: (0, 0)].seconds += n.seconds
            totals[key, default: (0, 0)].count += 1
        }
        let all = nodeSeconds
        return order.map { OpTypeTotal(opType: $0, seconds: totals[$0]!.seconds, share: all > 0 ? totals[$0]!.seconds / all : 0,
                                       count: totals[$0]!.count) }
            .sorted { $0.seconds != $1.seconds ? $0.seconds > $1.seconds : $0.opType < $1.opType }
    }

    /// The `count` slowest nodes, slowest first (execution order among equal times).
    public func slowest(_ count: Int) -> [NodeProfile] {
        Array(nodes.enumerated().sorted { $0.element.seconds != $1.element.seconds ? $0.element.seconds > $1.element.seconds : $0.offset < $1.offset }
            .prefix(max(count, 0)).map(\.element))
    }
}

/// Node times collected by the executor during profiled runs (`GraphExecutor.run(profile:)`), by step index.
final class NodeTimes {
    private(set) var nanoseconds: [UInt64]
    private(set) var calls: [Int]
    private(set) var shapes: [[Int]?]

    init(steps: Int) {
        nanoseconds = [UInt64](repeating: 0, count: steps)
        calls = [Int](repeating: 0, count: steps)
        shapes = [[Int]?](repeating: nil, count: steps)
    }

    func add(step: Int, nanoseconds elapsed: UInt64, outputs: [Value?]) {
        nanoseconds[step] &+= elapsed
        calls[step] += 1
        if case .tensor(let t)?? = outputs.first { shapes[step] = t.shape } else { shapes[step] = nil }
    }
}

extension InferenceSession {
    /// Times every node over `runs` runs on `feeds` (after one untimed run, so that a profile taken
    /// alone is of warm runs too): per node, the mean time of its kernel call. Nodes inside a
    /// subgraph (If, Loop, Scan bodies) count in the node that runs it.
    public func profile(_ feeds: [String: Tensor], runs: Int) throws -> InferenceProfile {
        guard runs > 0 else { throw OnnxTrainError.invalidInput("the number of profiled runs must be at least 1, got \(runs)") }
        let values = feeds.mapValues { Value.tensor($0) }
        _ = try run(values)
        let times = NodeTimes(steps: executor.steps.count)
        let start = monotonicNanoseconds()
        for _ in 0..<runs { _ = try run(values, fetches: nil, profile: times) }
        let total = Double(monotonicNanoseconds() - start) * 1e-9
        var nodes: [NodeProfile] = []
        for (k, step) in executor.steps.enumerated() where times.calls[k] > 0 {
            let node = step.node
            nodes.append(NodeProfile(name: node.name, opType: node.opType, domain: node.domain, outputShape: times.shapes[k],
                                     output: node.outputs.first ?? "", seconds: Double(times.nanoseconds[k]) * 1e-9 / Double(runs)))
        }
        return InferenceProfile(runs: runs, nodes: nodes, runSeconds: total / Double(runs))
    }
}
