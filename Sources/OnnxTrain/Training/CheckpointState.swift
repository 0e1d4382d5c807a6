/// One model parameter: its value and, once a `TrainingModule` owns it and it is trainable,
/// its gradient buffer.
///
/// A parameter is a reference: the training graph, the optimizer graph and the checkpoint all
/// see the same storage, and onnxruntime's in-place ops (InPlaceAccumulatorV2, AdamWOptimizer,
/// SGDOptimizerV2) update it where it lies. Replace values with `copy(from:)`, which writes in
/// place, so every alias stays valid.
public final class Parameter {
    public let name: String
    /// The current value.
    public internal(set) var data: Tensor
    /// The accumulated gradient; nil until a training module allocates it (trainable only).
    public internal(set) var grad: Tensor?
    /// Trainable (in the checkpoint's `requires_grad_params`) or frozen.
    public let requiresGrad: Bool

    /// Takes `data`'s storage as is: in-place updates reach every tensor sharing it.
    public init(name: String, data: Tensor, requiresGrad: Bool) {
        self.name = name
        self.data = data
        self.requiresGrad = requiresGrad
    }

    /// Overwrites the value in place with `tensor` (same type and shape).
    public func copy(from tensor: Tensor) throws {
        guard tensor.dtype == data.dtype, tensor.shape == data.shape else {
            throw OnnxTrainError.invalidInput("parameter '\(name)' is \(data), cannot take \(tensor)")
        }
        guard data.dtype != .string else {
            data = tensor.copied()
            return
        }
        let count = data.byteCount
        if count > 0 { data.storage.bytes.copyMemory(from: tensor.storage.bytes, byteCount: count) }
    }

    /// Replaces a nominal (shapeless) value by zeros of `shape`; used when a module supplies shapes.
    func materialize(shape: [Int]) {
        data = Tensor(zeros: data.dtype, shape: shape)
    }
}

/// A user property stored in a checkpoint (onnxruntime's PropertyBag).
public enum CheckpointProperty: Equatable, CustomStringConvertible {
    case int(Int64)
    case float(Float)
    case string(String)

    public var description: String {
        switch self {
        case .int(let v): return String(v)
        case .float(let v): return String(v)
        case .string(let v): return v
        }
    }
}

/// The state of one optimizer parameter group ("group0" for everything onnxruntime makes).
public struct OptimizerGroupState {
    /// Completed optimizer steps.
    public var step: Int64
    /// The learning rate a scheduler scales; saved in checkpoints.
    public var initialLearningRate: Float
    /// The current learning rate; not saved (onnxruntime resets it to 1e-3 on load).
    public var learningRate: Float
    /// Per parameter, its state tensors by key ("momentum0" = m, "momentum1" = v).
    public var parameterStates: [String: [String: Tensor]]

    public init(step: Int64 = 0, initialLearningRate: Float = 1e-3, learningRate: Float = 1e-3,
                parameterStates: [String: [String: Tensor]] = [:]) {
        self.step = step
        self.initialLearningRate = initialLearningRate
        self.learningRate = learningRate
        self.parameterStates = parameterStates
    }
}

/// Everything onnxruntime's `CheckpointState` holds: parameters, optimizer state and properties.
///
/// Load it from an onnxruntime checkpoint (`load(from:)`), train through a `TrainingModule` and
/// an `Optimizer` that share it, and `save(to:includeOptimizerState:)` it in the same format.
public final class CheckpointState {
    /// Parameters in file order (artifact checkpoints: model initializer order).
    public private(set) var parameters: [Parameter]
    private var index: [String: Int]
    /// Optimizer groups by name; empty until an optimizer is built or a checkpoint brings them.
    public var optimizerGroups: [String: OptimizerGroupState]
    public var properties: [String: CheckpointProperty]
    /// A nominal checkpoint carries names and types only; a module supplies shapes, then the
    /// values arrive through `copyBufferToParameters`.
    public internal(set) var isNominal: Bool

    public init(parameters: [Parameter], optimizerGroups: [String: OptimizerGroupState] = [:],
                properties: [String: CheckpointProperty] = [:], isNominal: Bool = false) throws {
        self.parameters = []
        index = [:]
        self.optimizerGroups = optimizerGroups
        self.properties = properties
        self.isNominal = isNominal
        for p in parameters { try add(p) }
    }

    /// A state holding copies of `tensors` as trainable parameters (e.g. read from npz or
    /// safetensors). Copies, because training updates parameters in place and the caller's
    /// tensors must not change under it.
    public convenience init(trainable tensors: [(String, Tensor)], frozen: [(String, Tensor)] = []) throws {
        try self.init(parameters: tensors.map { Parameter(name: $0.0, data: $0.1.copied(), requiresGrad: true) }
                      + frozen.map { Parameter(name: $0.0, data: $0.1.copied(), requiresGrad: false) })
    }

    func add(_ parameter: Parameter) throws {
        guard index[parameter.name] == nil else {
            throw OnnxTrainError.invalidModel("parameter '\(parameter.name)' appears twice")
        }
        index[parameter.name] = parameters.count
        parameters.append(parameter)
    }

    /// The parameter called `name`, or nil.
    public func parameter(_ name: String) -> Parameter? { index[name].map { parameters[$0] } }

    /// The parameter called `name`; throws naming the known ones when it is missing.
    public func requireParameter(_ name: String) throws -> Parameter {
        guard let p = parameter(name) else {
            let known = parameters.map(\.name).joined(separator: ", ")
            throw OnnxTrainError.invalidInput("no parameter '\(name)' in the checkpoint (it has: \(known))")
        }
        return p
    }

    public var parameterNames: [String] { parameters.map(\.name) }

    /// Loads an onnxruntime training checkpoint (and its `.data` sidecar when it has one).
    public static func load(from path: String) throws -> CheckpointState {
        try CheckpointFile.load(path: path)
    }

    /// Saves in onnxruntime's format, names sorted as onnxruntime does; atomic (see `CheckpointFile`).
    public func save(to path: String, includeOptimizerState: Bool = false) throws {
        try CheckpointFile.save(self, path: path, includeOptimizerState: includeOptimizerState)
    }
}

/// Where an `onnx-train run` stopped, read back from its checkpoint's property bag for `--resume`.
public struct RunProgress: Equatable {
    /// Optimizer steps done.
    public var step: Int
    /// Train steps (batches) done.
    public var batches: Int
    public var seed: UInt64
}

extension CheckpointState {
    /// The largest step or batch count a checkpoint may claim: far beyond any real run, small
    /// enough that arithmetic on it (times a batch size, plus an epoch's steps) cannot overflow.
    static let maximumRecordedSteps: Int64 = 1 << 40

    /// The run progress recorded by `RunArtifacts.recordProgress`, range-checked where it enters:
    /// nil when the checkpoint holds none (not saved by `onnx-train run`); throws when the numbers
    /// are negative, absurd or inconsistent with each other (a damaged or hand-edited file).
    public func runProgress() throws -> RunProgress? {
        typealias Keys = RunArtifacts.Resume
        guard let stepValue = properties[Keys.step] else { return nil }
        func count(_ key: String, _ value: CheckpointProperty?) throws -> Int64 {
            guard case .int(let v)? = value else {
                throw OnnxTrainError.invalidModel("the checkpoint's \(key) property is \(value.map { "'\($0)', not an integer" } ?? "missing")")
            }
            guard v >= 0 && v <= CheckpointState.maximumRecordedSteps else {
                throw OnnxTrainError.invalidModel("the checkpoint's \(key) property is \(v), not a step count between 0 and 2^40")
            }
            return v
        }
        let step = try count(Keys.step, stepValue)
        let batches = try count(Keys.batches, properties[Keys.batches])
        guard case .int(let seed)? = properties[Keys.seed] else {
            throw OnnxTrainError.invalidModel("the checkpoint records \(Keys.step) but no integer \(Keys.seed)")
        }
        // Every optimizer step takes `accumulate` batches; the batching record says how many.
        var accumulate: Int64 = 1
        if case .string(let batching)? = properties[Keys.batching] {
            let words = batching.split(separator: " ")
            if let i = words.firstIndex(of: "--accumulate"), i + 1 < words.count, let k = Int64(words[i + 1]), k >= 1 {
                accumulate = k
            }
        }
        if properties[Keys.batching] != nil ? batches / accumulate != step : step > batches {
            throw OnnxTrainError.invalidModel("the checkpoint's \(Keys.step) (\(step)) does not match its \(Keys.batches) (\(batches)) with \(accumulate) batch(es) per step")
        }
        return RunProgress(step: Int(step), batches: Int(batches), seed: UInt64(bitPattern: seed))
    }
}
