import Foundation

/// What a training or evaluation step returns: the loss and any additional outputs, by name,
/// in the graph's output order.
public struct StepOutputs {
    public let names: [String]
    public let values: [Tensor]
    /// Which output is the loss (the first one for onnxruntime's artifacts).
    public let lossName: String

    /// The loss tensor.
    public var lossTensor: Tensor { self[lossName] ?? values[0] }
    /// The loss as a number (the first element, widened to Float).
    public var loss: Float { Float(lossTensor.scalarDouble() ?? .nan) }

    public subscript(name: String) -> Tensor? {
        names.firstIndex(of: name).map { values[$0] }
    }
}

/// onnxruntime's training `Module`: runs a training graph (forward, loss, backward, gradient
/// accumulation) and optionally an eval graph, over the parameters of a `CheckpointState`.
///
/// Training-graph inputs are classified by name, as onnxruntime does: a parameter of the state
/// is a weight; `lazy_reset_grad` is the reset flag; `<p>_grad.accumulation.buffer` is the
/// gradient buffer of parameter p; anything else is a user input. Weights and gradient buffers
/// are fed as the parameter's own tensors (shared storage), so InPlaceAccumulatorV2 accumulates
/// into `Parameter.grad` and an `Optimizer` updates `Parameter.data` in place.
///
/// Gradients accumulate over train steps until `lazyResetGrad()`, which zeroes nothing: the next
/// train step overwrites the buffers instead of adding to them.
public final class TrainingModule {
    public let state: CheckpointState
    /// The training graph the module runs (for gradient graphs: with accumulation added); its
    /// kernels are built at creation, or at the first train step with `compileTraining: false`.
    public let trainingModel: Model
    private let options: SessionOptions
    private var compiledTrainSession: InferenceSession?
    let evalSession: InferenceSession?
    /// Graph inputs the caller feeds, in graph order.
    public let trainInputNames: [String]
    public let evalInputNames: [String]
    /// Returned outputs (no gradient flags), in graph order.
    public let trainOutputNames: [String]
    public let evalOutputNames: [String]
    public let lossName: String
    /// Parameters fed to the training graph, in graph input order (trainable and frozen).
    public let parameters: [Parameter]
    /// The parameters that get gradients, in graph input order.
    public let trainableParameters: [Parameter]
    let trainWeightInputs: [(input: String, parameter: Parameter)]
    let gradientInputs: [(input: String, parameter: Parameter)]
    let resetFlagInput: String?
    let evalWeightInputs: [(input: String, parameter: Parameter)]
    /// The eval graph, if any (for gradient graphs: the forward part of the graph).
    public let evalModel: Model?
    /// False right after creation and after `lazyResetGrad()`: the next step overwrites gradients.
    private var accumulate = false
    public private(set) var isTraining = true

    public static let resetFlagName = "lazy_reset_grad"
    /// How every error about a checkpoint of another model starts (after the graph's path), so a
    /// caller can tell it from other invalid input.
    public static let checkpointMismatch = "the checkpoint does not fit this model"
    static let gradientSuffixes = ["_grad.accumulation.buffer", "_grad.accumulation.out", "_grad"]

    /// A module over onnxruntime artifacts (`training_model.onnx`, optional `eval_model.onnx`).
    /// - Parameters:
    ///   - lossName: the loss output; defaults to the training graph's first output.
    ///   - compileTraining: false builds the training graph's kernels only at the first train step
    ///     (or probe), so evaluating and exporting work even when the training graph holds an op
    ///     without a kernel; its inputs are still classified and the parameters checked.
    public init(trainingModel: Model, state: CheckpointState, evalModel: Model? = nil, lossName: String? = nil,
                options: SessionOptions = SessionOptions(), compileTraining: Bool = true) throws {
        self.state = state
        self.trainingModel = trainingModel
        self.options = options
        let graph = trainingModel.graph
        let label = trainingModel.path ?? "training model"

        var users: [String] = [], weights: [(String, Parameter)] = [], grads: [(String, Parameter)] = []
        var flag: String?
        var lacking: [String] = []
        let inputNames = Set(graph.feedInputs.map(\.name))
        for info in graph.feedInputs {
            let name = info.name
            if let p = state.parameter(name) {
                weights.append((name, p))
            } else if name == TrainingModule.resetFlagName {
                flag = name
            } else if let suffix = TrainingModule.gradientSuffixes.first(where: { name.hasSuffix($0) }) {
                let owner = String(name.dropLast(suffix.count))
                if let p = state.parameter(owner) { grads.append((name, p)) } else { lacking.append(owner) }
            } else {
                users.append(name)
            }
        }
        // A checkpoint of another model: every parameter the graph trains that it lacks, at once.
        guard lacking.isEmpty else {
            throw OnnxTrainError.invalidInput("\(label): \(TrainingModule.checkpointMismatch): it has no \(lacking.map { "'\($0)'" }.joined(separator: ", ")), which the graph trains (the checkpoint has: \(state.parameterNames.joined(separator: ", ")))")
        }
        // A gradient buffer whose parameter is a user input means the checkpoint lacks it.
        for (name, p) in grads where !inputNames.contains(p.name) {
            throw OnnxTrainError.invalidInput("\(label): \(TrainingModule.checkpointMismatch): '\(name)' has no matching parameter input '\(p.name)'")
        }
        try TrainingModule.prepare(weights.map(\.1), graph: graph, state: state, label: label)
        for (_, p) in grads where p.grad == nil || p.grad!.shape != p.data.shape {
            p.grad = Tensor(zeros: p.data.dtype, shape: p.data.shape)
        }

        trainInputNames = users
        trainWeightInputs = weights.map { (input: $0.0, parameter: $0.1) }
        gradientInputs = grads.map { (input: $0.0, parameter: $0.1) }
        resetFlagInput = flag
        parameters = weights.map(\.1)
        trainableParameters = grads.map(\.1)
        trainOutputNames = graph.outputs.map(\.name).filter { name in
            !TrainingModule.gradientSuffixes.contains { name.hasSuffix($0) }
        }
        guard !trainOutputNames.isEmpty else { throw OnnxTrainError.training("\(label): the training graph has no loss output") }
        if let lossName {
            guard trainOutputNames.contains(lossName) else {
                throw OnnxTrainError.training("\(label): no output '\(lossName)' (outputs: \(trainOutputNames.joined(separator: ", ")))")
            }
            self.lossName = lossName
        } else {
            self.lossName = trainOutputNames[0]
        }
        if compileTraining { compiledTrainSession = try InferenceSession(model: trainingModel, options: options) }

        if let evalModel {
            let evalGraph = evalModel.graph
            var evalUsers: [String] = [], evalWeights: [(String, Parameter)] = []
            for info in evalGraph.feedInputs {
                if let p = state.parameter(info.name) { evalWeights.append((info.name, p)) } else { evalUsers.append(info.name) }
            }
            try TrainingModule.prepare(evalWeights.map(\.1), graph: evalGraph, state: state, label: evalModel.path ?? "eval model")
            evalInputNames = evalUsers
            evalWeightInputs = evalWeights.map { (input: $0.0, parameter: $0.1) }
            evalOutputNames = evalGraph.outputs.map(\.name)
            evalSession = try InferenceSession(model: evalModel, options: options)
            self.evalModel = evalModel
        } else {
            evalInputNames = []
            evalWeightInputs = []
            evalOutputNames = []
            evalSession = nil
            self.evalModel = nil
        }
    }

    /// A module over artifact files.
    public convenience init(trainingModelPath: String, state: CheckpointState, evalModelPath: String? = nil,
                            options: SessionOptions = SessionOptions(), compileTraining: Bool = true) throws {
        try self.init(trainingModel: try Model(contentsOf: trainingModelPath), state: state,
                      evalModel: try evalModelPath.map { try Model(contentsOf: $0) }, options: options,
                      compileTraining: compileTraining)
    }

    /// The compiled training graph, built on first use for modules made with `compileTraining: false`.
    func trainSession() throws -> InferenceSession {
        if let compiledTrainSession { return compiledTrainSession }
        let session = try InferenceSession(model: trainingModel, options: options)
        if let pendingRandomState { session.randomState = pendingRandomState }
        compiledTrainSession = session
        return session
    }

    /// Sizes nominal parameters from the graph and checks every parameter against its declared
    /// input type, naming the parameter on a mismatch.
    static func prepare(_ params: [Parameter], graph: Graph, state: CheckpointState, label: String) throws {
        let declared = Dictionary(graph.inputs.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
        for p in params {
            guard case .tensor(let dtype, let dims)? = declared[p.name]?.type else { continue }
            if state.isNominal {
                guard let dims, let shape = Optional(dims.compactMap { d -> Int? in if case .value(let v) = d { return v } else { return nil } }),
                      shape.count == dims.count else {
                    throw OnnxTrainError.invalidModel("\(label): nominal checkpoint parameter '\(p.name)' needs a static shape in the graph")
                }
                if p.data.shape != shape { p.materialize(shape: shape) }
            }
            if let dtype, dtype != p.data.dtype {
                throw OnnxTrainError.invalidInput("\(label): \(TrainingModule.checkpointMismatch): checkpoint parameter '\(p.name)' is tensor(\(p.data.dtype)), the graph expects tensor(\(dtype))")
            }
            if let dims {
                let matches = dims.count == p.data.rank && zip(dims, p.data.shape).allSatisfy { d, n in
                    if case .value(let v) = d { return v == n } else { return true }
                }
                guard matches else {
                    throw OnnxTrainError.invalidInput("\(label): \(TrainingModule.checkpointMismatch): checkpoint parameter '\(p.name)' has shape \(p.data.shape), the graph expects [\(dims.map(\.description).joined(separator: ", "))]")
                }
            }
        }
    }

    // MARK: Steps

    /// Switches between train and eval mode (what `callAsFunction` runs).
    @discardableResult
    public func train(_ mode: Bool = true) -> TrainingModule {
        isTraining = mode
        return self
    }

    @discardableResult
    public func eval() -> TrainingModule { train(false) }

    /// Runs a train step in train mode and an eval step in eval mode (onnxruntime's `module(...)`).
    public func callAsFunction(_ inputs: [Tensor]) throws -> StepOutputs {
        isTraining ? try trainStep(inputs) : try evalStep(inputs)
    }

    /// One forward + backward pass; the gradients are added to (or, after a reset, written
    /// into) `Parameter.grad`. `inputs` follow `trainInputNames`.
    public func trainStep(_ inputs: [Tensor]) throws -> StepOutputs {
        try trainStep(named: try TrainingModule.bind(inputs, to: trainInputNames, what: "train step"))
    }

    public func trainStep(named inputs: [String: Tensor]) throws -> StepOutputs {
        let results = try trainSession().run(try trainFeeds(inputs), fetches: trainOutputNames)
        accumulate = true
        return try TrainingModule.outputs(results, names: trainOutputNames, loss: lossName)
    }

    /// Times every node of the training graph (forward, loss and gradients) over `runs` train steps
    /// on `inputs`, after one untimed step, as `InferenceSession.profile` times a model's nodes:
    /// where a train step goes. Every step is fed as the next `trainStep` would be: after a reset
    /// each overwrites the gradients (as a loop with `lazyResetGrad` after each step does),
    /// otherwise each adds to them.
    public func profileTrainStep(named inputs: [String: Tensor], runs: Int) throws -> InferenceProfile {
        let profile = try trainSession().profile(try trainFeeds(inputs).compactMapValues(\.tensor), runs: runs)
        accumulate = true
        return profile
    }

    /// A train step's feeds: `inputs`, the trainable weights, the gradient buffers and the reset flag.
    private func trainFeeds(_ inputs: [String: Tensor]) throws -> [String: Value] {
        var feeds = try TrainingModule.userFeeds(inputs, expected: trainInputNames, what: "train step")
        for (name, p) in trainWeightInputs { feeds[name] = .tensor(p.data) }
        for (name, p) in gradientInputs {
            guard let grad = p.grad else { throw OnnxTrainError.training("parameter '\(p.name)' has no gradient buffer") }
            feeds[name] = .tensor(grad)
        }
        if let resetFlagInput { feeds[resetFlagInput] = .tensor(Tensor(shape: [1], scalars: [!accumulate])) }
        return feeds
    }

    /// One forward pass of the eval graph (no gradients). `inputs` follow `evalInputNames`.
    public func evalStep(_ inputs: [Tensor]) throws -> StepOutputs {
        try evalStep(named: try TrainingModule.bind(inputs, to: evalInputNames, what: "eval step"))
    }

    /// - Parameter extra: values of the eval graph to return besides its outputs (a prediction
    ///   that only feeds the loss, for metrics).
    public func evalStep(named inputs: [String: Tensor], alsoFetching extra: [String] = []) throws -> StepOutputs {
        guard let evalSession else { throw OnnxTrainError.training("this module has no eval model") }
        var feeds = try TrainingModule.userFeeds(inputs, expected: evalInputNames, what: "eval step")
        for (name, p) in evalWeightInputs { feeds[name] = .tensor(p.data) }
        let names = evalOutputNames + extra.filter { !evalOutputNames.contains($0) }
        let results = try evalSession.run(feeds, fetches: names)
        return try TrainingModule.outputs(results, names: names, loss: evalOutputNames.contains(lossName) ? lossName : evalOutputNames[0])
    }

    /// The training graph's random generator state (what Dropout draws from next).
    public var randomState: UInt64 {
        get { compiledTrainSession?.randomState ?? pendingRandomState ?? options.seed }
        set {
            if let compiledTrainSession { compiledTrainSession.randomState = newValue } else { pendingRandomState = newValue }
        }
    }
    /// A random state set before the training graph was compiled.
    private var pendingRandomState: UInt64?

    /// Makes the next train step overwrite the gradients instead of adding to them.
    public func lazyResetGrad() { accumulate = false }

    /// Whether the next train step adds to the gradients (false after a reset: it overwrites them).
    var accumulatesGradients: Bool { accumulate }

    /// Sets every gradient to zero, so the next train step adds to them (a data-parallel process
    /// whose share of a batch is empty contributes nothing).
    func zeroGradients() {
        for p in trainableParameters {
            guard let g = p.grad else { continue }
            if g.byteCount > 0 { g.storage.bytes.initializeMemory(as: UInt8.self, repeating: 0, count: g.byteCount) }
        }
        accumulate = true
    }

    static func bind(_ inputs: [Tensor], to names: [String], what: String) throws -> [String: Tensor] {
        guard inputs.count == names.count else {
            throw OnnxTrainError.invalidInput("\(what) takes \(names.count) inputs (\(names.joined(separator: ", "))), got \(inputs.count)")
        }
        return Dictionary(uniqueKeysWithValues: zip(names, inputs))
    }

    static func userFeeds(_ inputs: [String: Tensor], expected: [String], what: String) throws -> [String: Value] {
        var feeds: [String: Value] = [:]
        for name in expected {
            guard let t = inputs[name] else {
                throw OnnxTrainError.invalidInput("\(what) is missing input '\(name)' (it takes: \(expected.joined(separator: ", ")))")
            }
            feeds[name] = .tensor(t)
        }
        for name in inputs.keys.sorted() where !expected.contains(name) {
            throw OnnxTrainError.invalidInput("\(what) got unknown input '\(name)' (it takes: \(expected.joined(separator: ", ")))")
        }
        return feeds
    }

    static func outputs(_ results: [String: Value], names: [String], loss: String) throws -> StepOutputs {
        let values = try names.map { name -> Tensor in
            guard let t = results[name]?.tensor else { throw OnnxTrainError.training("output '\(name)' is not a tensor") }
            return t
        }
        return StepOutputs(names: names, values: values, lossName: loss)
    }

    // MARK: Parameters

    /// Total elements of the (trainable) parameters: the size of `contiguousParameters`.
    public func parameterCount(trainableOnly: Bool = true) -> Int {
        (trainableOnly ? trainableParameters : parameters).reduce(0) { $0 + $1.data.count }
    }

    /// All (trainable) parameters concatenated into one float32 vector, in training-graph order.
    public func contiguousParameters(trainableOnly: Bool = true) throws -> Tensor {
        let params = trainableOnly ? trainableParameters : parameters
        var out = Tensor(zeros: .float32, shape: [params.reduce(0) { $0 + $1.data.count }])
        try out.withUnsafeMutableBufferPointer(as: Float.self) { dst in
            var offset = 0
            for p in params {
                guard p.data.dtype == .float32 else { throw OnnxTrainError.unsupported("parameter '\(p.name)' is tensor(\(p.data.dtype)); contiguous buffers hold float only") }
                try p.data.withUnsafeBufferPointer(as: Float.self) { src in
                    for i in 0..<src.count { dst[offset + i] = src[i] }
                }
                offset += p.data.count
            }
        }
        return out
    }

    /// Writes `buffer` (float32, `parameterCount(trainableOnly:)` elements) into the parameters
    /// in place, in training-graph order; fills a nominal checkpoint's values.
    public func copyBufferToParameters(_ buffer: Tensor, trainableOnly: Bool = true) throws {
        let params = trainableOnly ? trainableParameters : parameters
        let total = params.reduce(0) { $0 + $1.data.count }
        guard buffer.dtype == .float32, buffer.count == total else {
            throw OnnxTrainError.invalidInput("the parameter buffer must be float with \(total) elements, got \(buffer)")
        }
        var offset = 0
        try buffer.withUnsafeBufferPointer(as: Float.self) { src in
            for p in params {
                guard p.data.dtype == .float32 else { throw OnnxTrainError.unsupported("parameter '\(p.name)' is tensor(\(p.data.dtype)); contiguous buffers hold float only") }
                try p.data.withSharedMutableBufferPointer(as: Float.self) { dst in
                    for i in 0..<dst.count { dst[i] = src[offset + i] }
                }
                offset += p.data.count
            }
        }
        if parameters.count == state.parameters.count || !trainableOnly { state.isNominal = false }
    }

    // MARK: Export

    /// Computes one value of the training graph for `feeds` (user inputs) on copies of the
    /// parameters, running only the nodes it needs: nothing in the module changes, not even
    /// statistics that training ops update in place. Used to check data before training.
    public func probe(_ name: String, feeds: [String: Tensor]) throws -> Tensor {
        let model = trainingModel
        var (graph, needed) = try model.graph.pruned(to: [name], label: "the training graph", outputsForHelp: trainOutputNames)
        graph.inputs = graph.inputs.filter { needed.contains($0.name) }
        graph.outputs = [ValueInfo(name: name, type: nil)]
        var probeModel = model
        probeModel.graph = graph
        var values: [String: Value] = [:]
        for info in graph.inputs {
            if let p = state.parameter(info.name) {
                values[info.name] = .tensor(p.data.copied())
            } else if let g = gradientInputs.first(where: { $0.input == info.name }) {
                values[info.name] = .tensor(Tensor(zeros: g.parameter.data.dtype, shape: g.parameter.data.shape))
            } else if info.name == resetFlagInput {
                values[info.name] = .tensor(Tensor(shape: [1], scalars: [true]))
            } else if let t = feeds[info.name] {
                values[info.name] = .tensor(t)
            }
        }
        let session = try InferenceSession(model: probeModel)
        guard let result = try session.run(values, fetches: [name])[name]?.tensor else {
            throw OnnxTrainError.training("'\(name)' is not a tensor")
        }
        return result
    }

    /// An inference model: the eval graph pruned to `outputs`, with the current parameter values
    /// as initializers and only the user inputs those outputs need.
    public func exportModelForInferencing(outputs: [String]) throws -> Model {
        guard let evalModel else { throw OnnxTrainError.training("exporting needs an eval model") }
        guard !outputs.isEmpty else { throw OnnxTrainError.invalidInput("choose at least one output to export") }
        let (pruned, needed) = try evalModel.graph.pruned(to: outputs, label: "the eval graph", outputsForHelp: evalOutputNames)
        var graph = pruned
        // Parameters become initializers holding the trained values.
        var inputs: [ValueInfo] = []
        for info in graph.inputs {
            if let p = state.parameter(info.name) {
                if needed.contains(info.name) { graph.setInitializer(info.name, p.data.copied()) }
            } else if needed.contains(info.name) {
                inputs.append(info)
            }
        }
        graph.inputs = inputs
        for name in graph.initializerNames where !needed.contains(name) { graph.initializers[name] = nil }
        graph.initializerNames = graph.initializerNames.filter { graph.initializers[$0] != nil }
        let declared = Dictionary((evalModel.graph.outputs + evalModel.graph.valueInfo).map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
        graph.outputs = outputs.map { declared[$0] ?? ValueInfo(name: $0, type: nil) }
        let keptValues = needed
        graph.valueInfo = graph.valueInfo.filter { keptValues.contains($0.name) }
        // onnxruntime's eval graphs keep BatchNormalization's running-stat outputs in inference
        // mode (they pass the statistics through), and onnxruntime refuses to load such a node:
        // the inference model drops those outputs when nothing reads them.
        let read = Set(graph.nodes.flatMap { $0.inputs + GraphExecutor.subgraphReferences($0) }).union(outputs)
        for i in graph.nodes.indices where graph.nodes[i].opType == "BatchNormalization" && (graph.nodes[i].domain.isEmpty || graph.nodes[i].domain == "ai.onnx") {
            if case .int(let mode)? = graph.nodes[i].attributes["training_mode"], mode != 0 { continue }
            while graph.nodes[i].outputs.count > 1, let last = graph.nodes[i].outputs.last, last.isEmpty || !read.contains(last) {
                graph.nodes[i].outputs.removeLast()
            }
        }
        var model = evalModel
        model.graph = graph
        model.path = nil
        return model
    }
}

extension TrainingModule {
    /// The path of `name` (`checkpoint`, `training_model.onnx`, ...) in the artifact folder
    /// `folder`; throws, naming both, when the folder lacks it.
    public static func artifactFile(_ name: String, in folder: String) throws -> String {
        let p = URL(fileURLWithPath: folder).appendingPathComponent(name).path
        guard FileManager.default.fileExists(atPath: p) else {
            throw OnnxTrainError.io("\(folder) is not an artifact folder: it has no \(name)")
        }
        return p
    }

    /// A module for evaluating and exporting only: an artifact folder (`training_model.onnx`,
    /// `eval_model.onnx`, and `checkpoint` unless `params` names other parameters) or a gradient
    /// graph with `params` (a checkpoint, .npz or .safetensors). Only the eval graph is compiled:
    /// the training graph is read to classify the parameters, so an op without a kernel there
    /// does not stop evaluation or export.
    public static func forEvaluation(path: String, params: String?, options: SessionOptions = SessionOptions()) throws -> TrainingModule {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
            throw OnnxTrainError.io("\(path): no such file or folder")
        }
        // Parameters of another model: the error names the file they came from.
        func naming<T>(_ build: () throws -> T) throws -> T {
            do {
                return try build()
            } catch let error as OnnxTrainError where params != nil && error.kind == .invalidInput {
                throw error.prefixed(params!)
            }
        }
        guard isDirectory.boolValue else {
            guard let params else {
                throw OnnxTrainError.invalidInput("\(path) is a gradient graph: give its trained parameters with --params (a run's checkpoint, .npz or .safetensors)")
            }
            let (graph, state) = (try Model(contentsOf: path), try CheckpointState.loadParameters(from: params))
            return try naming { try TrainingModule(gradientGraph: graph, state: state, options: options, compileTraining: false) }
        }
        func file(_ name: String) throws -> String { try artifactFile(name, in: path) }
        let state = try CheckpointState.load(from: try params ?? file("checkpoint"))
        let (training, eval) = (try Model(contentsOf: try file("training_model.onnx")), try Model(contentsOf: try file("eval_model.onnx")))
        return try naming { try TrainingModule(trainingModel: training, state: state, evalModel: eval, options: options, compileTraining: false) }
    }
}
