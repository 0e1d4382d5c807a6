import Foundation
import OnnxTrain

extension Module {
    /// Writes the model as an inference `.onnx` file (PyTorch's `torch.onnx.export`).
    ///
    /// The module runs `forward` in evaluation mode on `examples` (its training mode is restored
    /// afterwards); the recorded graph is written with the parameters and buffers as initializers
    /// under their `stateDict()` names (so `loadStateDict(contentsOf:)` reads them back), the
    /// examples as inputs `inputNames` and the results as outputs `outputNames`. Shapes are the
    /// examples' shapes: sizes read in `forward` (`x.size(0)`) are fixed in the graph, as in a
    /// torch.onnx export without dynamic axes. The file is written atomically.
    ///
    /// - Throws: the error of any operation that failed while recording, and I/O errors.
    public func exportONNX(to path: String, examples: [NNTensor], inputNames: [String]? = nil, outputNames: [String]? = nil,
                           _ forward: ([NNTensor]) -> [NNTensor]) throws {
        let model = try exportedModel(examples: examples, inputNames: inputNames, outputNames: outputNames, forward)
        try model.write(to: path)
    }

    /// The model `exportONNX` writes, in memory.
    public func exportedModel(examples: [NNTensor], inputNames: [String]? = nil, outputNames: [String]? = nil,
                              _ forward: ([NNTensor]) -> [NNTensor]) throws -> Model {
        let wasTraining = training
        eval()
        defer { train(wasTraining) }
        let inputs = examples.map { NNTensor($0.value) }
        let outputs = forward(inputs)
        for out in outputs { if let error = out.error { throw error } }
        let inNames = inputNames ?? (inputs.count == 1 ? ["input"] : inputs.indices.map { "input_\($0)" })
        let outNames = outputNames ?? (outputs.count == 1 ? ["output"] : outputs.indices.map { "output_\($0)" })
        guard inNames.count == inputs.count, outNames.count == outputs.count else {
            throw OnnxTrainError.invalidInput("exportONNX: \(inNames.count) input names for \(inputs.count) inputs, \(outNames.count) output names for \(outputs.count) outputs")
        }
        let trace = GraphTrace(outputs: outputs)
        var known: [ObjectIdentifier: String] = [:]
        for (name, t) in namedTensors() { known[ObjectIdentifier(t)] = name }
        for (k, t) in inputs.enumerated() { known[ObjectIdentifier(t)] = inNames[k] }
        let inputIDs = Set(inputs.map(ObjectIdentifier.init))
        var leafNames: [String] = []
        var initializers = Set<Int>()
        for (i, leaf) in trace.leaves.enumerated() {
            let id = ObjectIdentifier(leaf)
            leafNames.append(known[id] ?? "tensor_\(i)")
            if !inputIDs.contains(id) { initializers.insert(i) }
        }
        var graph = trace.graph(outputs: outputs, leafNames: leafNames, initializerLeaves: initializers, outputNames: outNames,
                                graphName: String(describing: type(of: self)))
        // Inputs in the caller's order, including any the graph does not read.
        graph.inputs = zip(inputs, inNames).map { t, name in
            ValueInfo(name: name, type: .tensor(t.dtype, shape: t.shape.map { .value($0) }))
        }
        return GraphTrace.model(graph)
    }
}

extension UnaryModule {
    /// `exportONNX` for a one-input, one-output module: input "input", output "output".
    public func exportONNX(to path: String, example: NNTensor) throws {
        try exportONNX(to: path, examples: [example]) { [forward($0[0])] }
    }
}

extension Module {
    /// Saves the parameters and buffers (and the optimizer's state and step) as an onnxruntime
    /// training checkpoint, which `onnx-train` and onnxruntime's `CheckpointState.load_checkpoint`
    /// read; names are the `stateDict()` names, frozen parameters and buffers non-trainable.
    public func saveCheckpoint(to path: String, optimizer: NNOptimizer? = nil) throws {
        let parameters = namedTensors().map { name, t in
            Parameter(name: name, data: t.value, requiresGrad: t.role == .parameter && t.requiresGrad)
        }
        let groups = try optimizer.map { ["group0": try optimizerGroup($0)] } ?? [:]
        let state = try CheckpointState(parameters: parameters, optimizerGroups: groups)
        try state.save(to: path, includeOptimizerState: optimizer != nil)
    }

    /// Loads a checkpoint written by `saveCheckpoint` (or onnxruntime): parameters and buffers by
    /// name, and the optimizer's state and step count when `optimizer` is given.
    public func loadCheckpoint(from path: String, optimizer: NNOptimizer? = nil, strict: Bool = true) throws {
        let checkpoint = try CheckpointState.load(from: path)
        try loadStateDict(Dictionary(checkpoint.parameters.map { ($0.name, $0.data) }, uniquingKeysWith: { a, _ in a }), strict: strict)
        if let optimizer, let group = checkpoint.optimizerGroups["group0"] { try restore(group, into: optimizer, source: path) }
    }

    /// Saves the training state as one `.safetensors` file: the `stateDict()` tensors, each
    /// optimizer state tensor as `optimizer.<parameter>.<momentum0|momentum1>` (onnxruntime's
    /// checkpoint keys) and the step count and learning rate in the metadata. Atomic.
    public func saveTrainingState(to path: String, optimizer: NNOptimizer) throws {
        let group = try optimizerGroup(optimizer)
        var tensors = namedTensors(removeDuplicates: false).map { (name: $0.0, tensor: $0.1.value) }
        for (name, states) in group.parameterStates {
            for (key, t) in states { tensors.append((name: "optimizer.\(name).\(key)", tensor: t)) }
        }
        tensors.sort { $0.name < $1.name }
        let metadata = ["optimizer.step": String(group.step), "optimizer.learning_rate": String(group.learningRate)]
        try SafeTensors.write(SafeTensorsFile(tensors: tensors, metadata: metadata), to: path)
    }

    /// Loads what `saveTrainingState` wrote into this module and `optimizer`.
    public func loadTrainingState(from path: String, optimizer: NNOptimizer, strict: Bool = true) throws {
        let file = try SafeTensors.read(contentsOf: path)
        var model: [String: Tensor] = [:]
        var group = OptimizerGroupState()
        for (name, t) in file.tensors {
            guard name.hasPrefix("optimizer."), let dot = name.lastIndex(of: ".") else { model[name] = t; continue }
            let parameter = String(name[name.index(name.startIndex, offsetBy: 10)..<dot])
            group.parameterStates[parameter, default: [:]][String(name[name.index(after: dot)...])] = t
        }
        guard let step = file.metadata["optimizer.step"].flatMap(Int64.init),
              let rate = file.metadata["optimizer.learning_rate"].flatMap(Float.init) else {
            throw OnnxTrainError.invalidInput("\(path): no optimizer.step and optimizer.learning_rate metadata (not written by saveTrainingState)")
        }
        group.step = step
        group.initialLearningRate = rate
        try loadStateDict(model, strict: strict)
        try restore(group, into: optimizer, source: path)
    }

    /// The optimizer's step, rate and per-parameter state under this module's parameter names.
    private func optimizerGroup(_ optimizer: NNOptimizer) throws -> OptimizerGroupState {
        var names: [ObjectIdentifier: String] = [:]
        for (name, t) in namedTensors() { names[ObjectIdentifier(t)] = name }
        var group = OptimizerGroupState(step: Int64(optimizer.stepCount), initialLearningRate: optimizer.learningRate,
                                        learningRate: optimizer.learningRate)
        for (i, p) in optimizer.parameters.enumerated() {
            guard let name = names[ObjectIdentifier(p)] else {
                throw OnnxTrainError.invalidInput("optimizer parameter \(i) \(p.value) is not a parameter of this module")
            }
            if !optimizer.state[i].isEmpty { group.parameterStates[name] = optimizer.state[i] }
        }
        return group
    }

    /// Sets `optimizer`'s step, rate and state from `group` (saved under this module's names).
    private func restore(_ group: OptimizerGroupState, into optimizer: NNOptimizer, source: String) throws {
        var names: [ObjectIdentifier: String] = [:]
        for (name, t) in namedTensors() { names[ObjectIdentifier(t)] = name }
        var states = optimizer.state, steps = optimizer.parameterSteps
        for (i, p) in optimizer.parameters.enumerated() {
            guard let name = names[ObjectIdentifier(p)], let s = group.parameterStates[name] else { continue }
            for (key, t) in s where t.shape != p.shape || t.dtype != p.dtype {
                throw OnnxTrainError.invalidInput("\(source): optimizer state '\(key)' of '\(name)' is \(t), the parameter is \(p.value)")
            }
            states[i] = s.mapValues { $0.copied() }
            steps[i] = Int(group.step)
        }
        optimizer.state = states
        optimizer.parameterSteps = steps
        optimizer.stepCount = Int(group.step)
        optimizer.learningRate = group.initialLearningRate
    }
}
