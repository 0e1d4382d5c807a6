#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// onnxruntime's training `Optimizer`: runs an optimizer graph (`optimizer_model.onnx`, or one
/// built by `OptimizerGraph`) over a module's trainable parameters.
///
/// The graph takes, in this order and with these names (onnxruntime validates them too):
/// `learning_rate` float[1], `step` int64[1], `params`, `gradients`, `first_order_moments` and,
/// for AdamW, `second_order_moments`, each a sequence with one tensor per trainable parameter.
/// The sequences hold the parameter, gradient and state tensors themselves (shared storage), so
/// the in-place optimizer op updates them where they lie.
public final class Optimizer {
    public let module: TrainingModule
    let session: InferenceSession
    let inputNames: Set<String>
    let flagOutput: String
    /// The optimizer group this optimizer drives ("group0", as in onnxruntime).
    public let groupName = "group0"
    /// State keys per parameter: ["momentum0"] for SGD, ["momentum0", "momentum1"] for AdamW.
    public let stateKeys: [String]
    private let params: [Parameter]

    static let knownInputs = ["learning_rate", "step", "params", "gradients", "first_order_moments", "second_order_moments"]

    public init(model: Model, module: TrainingModule, options: SessionOptions = SessionOptions()) throws {
        self.module = module
        let label = model.path ?? "optimizer model"
        let graph = model.graph
        let names = graph.feedInputs.map(\.name)
        for name in names where !Optimizer.knownInputs.contains(name) {
            throw OnnxTrainError.training("\(label): unexpected optimizer input '\(name)' (expected: \(Optimizer.knownInputs.joined(separator: ", ")))")
        }
        for required in ["learning_rate", "params", "gradients"] where !names.contains(required) {
            throw OnnxTrainError.training("\(label): the optimizer graph has no '\(required)' input")
        }
        inputNames = Set(names)
        guard let flag = graph.outputs.first?.name else { throw OnnxTrainError.training("\(label): the optimizer graph has no output") }
        flagOutput = flag
        stateKeys = names.contains("second_order_moments") ? ["momentum0", "momentum1"] : ["momentum0"]
        params = module.trainableParameters
        guard !params.isEmpty else { throw OnnxTrainError.training("the module has no trainable parameters") }

        // Restore the state a checkpoint brought, or start from zeros (onnxruntime does the same).
        let state = module.state
        var group = state.optimizerGroups[groupName] ?? OptimizerGroupState()
        for p in params {
            var moments = group.parameterStates[p.name] ?? [:]
            for key in stateKeys {
                if let t = moments[key] {
                    guard t.dtype == p.data.dtype, t.shape == p.data.shape else {
                        throw OnnxTrainError.training("checkpoint optimizer state '\(key)' of '\(p.name)' is \(t), the parameter is \(p.data)")
                    }
                } else {
                    moments[key] = Tensor(zeros: p.data.dtype, shape: p.data.shape)
                }
            }
            group.parameterStates[p.name] = moments
        }
        state.optimizerGroups[groupName] = group
        session = try InferenceSession(model: model, options: options)
    }

    public convenience init(path: String, module: TrainingModule, options: SessionOptions = SessionOptions()) throws {
        try self.init(model: try Model(contentsOf: path), module: module, options: options)
    }

    /// An optimizer over a graph `OptimizerGraph` builds (gradient graphs have no optimizer model).
    public convenience init(_ kind: OptimizerGraph.Kind, module: TrainingModule, options: SessionOptions = SessionOptions()) throws {
        let model = OptimizerGraph.build(kind, parameters: module.trainableParameters)
        try self.init(model: model, module: module, options: options)
    }

    private var group: OptimizerGroupState {
        get { module.state.optimizerGroups[groupName] ?? OptimizerGroupState() }
        set { module.state.optimizerGroups[groupName] = newValue }
    }

    /// The learning rate of the next `step()`.
    public var learningRate: Float {
        get { group.learningRate }
        set { group.learningRate = newValue }
    }

    /// What a scheduler scales (saved in checkpoints).
    public var initialLearningRate: Float {
        get { group.initialLearningRate }
        set { group.initialLearningRate = newValue }
    }

    /// Completed optimizer steps.
    public var stepCount: Int64 { group.step }

    /// Applies the accumulated gradients: feeds learning_rate = [lr] and step = [completed + 1]
    /// and runs the graph; the step count advances only when the graph reports an update.
    @discardableResult
    public func step() throws -> Bool {
        let group = self.group
        func sequence(_ tensors: [Tensor]) -> Value { .sequence(tensors.map { .tensor($0) }, elementType: nil) }
        var feeds: [String: Value] = [:]
        feeds["learning_rate"] = .tensor(Tensor(shape: [1], scalars: [group.learningRate]))
        if inputNames.contains("step") { feeds["step"] = .tensor(Tensor(shape: [1], scalars: [group.step + 1])) }
        feeds["params"] = sequence(params.map(\.data))
        feeds["gradients"] = sequence(try params.map { p in
            guard let g = p.grad else { throw OnnxTrainError.training("parameter '\(p.name)' has no gradient buffer") }
            return g
        })
        for (input, key) in [("first_order_moments", "momentum0"), ("second_order_moments", "momentum1")] where inputNames.contains(input) {
            feeds[input] = sequence(try params.map { p in
                guard let t = group.parameterStates[p.name]?[key] else {
                    throw OnnxTrainError.training("no optimizer state '\(key)' for parameter '\(p.name)'")
                }
                return t
            })
        }
        let results = try session.run(feeds, fetches: [flagOutput])
        guard let flag = results[flagOutput]?.tensor, flag.count > 0 else {
            throw OnnxTrainError.training("the optimizer graph did not return its update flag")
        }
        let updated = (flag.scalarDouble() ?? 0) != 0
        if updated { self.group.step += 1 }
        return updated
    }
}

/// onnxruntime's `LinearLRScheduler`, with its C++ formula: lr = initial_lr * f(step),
/// f(s) = s / max(1, warmup) while s < warmup, then max(0, (total - s) / max(1, total - warmup)).
///
/// Creating it sets the group's initial lr and applies f at the current step; call `step()`
/// after each `optimizer.step()`. (onnxruntime 1.19.2's Python binding swaps warmup and total;
/// this follows the C++ API.)
public final class LinearLRScheduler {
    public let optimizer: Optimizer
    public let warmupStepCount: Int64
    public let totalStepCount: Int64

    public init(optimizer: Optimizer, warmupStepCount: Int64, totalStepCount: Int64, initialLearningRate: Float) {
        self.optimizer = optimizer
        self.warmupStepCount = warmupStepCount
        self.totalStepCount = totalStepCount
        optimizer.initialLearningRate = initialLearningRate
        step()
    }

    static func factor(step s: Int64, warmup: Int64, total: Int64) -> Float {
        if s < warmup { return Float(s) / Float(max(1, warmup)) }
        return max(0, Float(total - s) / Float(max(1, total - warmup)))
    }

    /// Sets the learning rate for the optimizer's next step.
    public func step() {
        optimizer.learningRate = optimizer.initialLearningRate
            * LinearLRScheduler.factor(step: optimizer.stepCount, warmup: warmupStepCount, total: totalStepCount)
    }
}

/// Linear warm-up, then cosine decay to `minLearningRateRatio * initial_lr` at `totalStepCount`
/// (not in onnxruntime 1.19.2; the usual transformer schedule, same calling convention as
/// `LinearLRScheduler`).
public final class CosineLRScheduler {
    public let optimizer: Optimizer
    public let warmupStepCount: Int64
    public let totalStepCount: Int64
    public let minLearningRateRatio: Float

    public init(optimizer: Optimizer, warmupStepCount: Int64, totalStepCount: Int64, initialLearningRate: Float,
                minLearningRateRatio: Float = 0) {
        self.optimizer = optimizer
        self.warmupStepCount = warmupStepCount
        self.totalStepCount = totalStepCount
        self.minLearningRateRatio = minLearningRateRatio
        optimizer.initialLearningRate = initialLearningRate
        step()
    }

    static func factor(step s: Int64, warmup: Int64, total: Int64, minRatio: Float) -> Float {
        if s < warmup { return Float(s) / Float(max(1, warmup)) }
        // Computed in Double: cos near pi/2 loses digits in Float for long schedules.
        let progress = min(1, Double(s - warmup) / Double(max(1, total - warmup)))
        let cosine = 0.5 * (1 + cos(Double.pi * progress))
        return Float(Double(minRatio) + (1 - Double(minRatio)) * cosine)
    }

    public func step() {
        optimizer.learningRate = optimizer.initialLearningRate
            * CosineLRScheduler.factor(step: optimizer.stepCount, warmup: warmupStepCount, total: totalStepCount, minRatio: minLearningRateRatio)
    }
}
