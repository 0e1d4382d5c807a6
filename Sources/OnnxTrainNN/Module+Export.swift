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
        let named = namedTensors()
        let parameters = named.map { name, t in
            Parameter(name: name, data: t.value, requiresGrad: t.role == .parameter && t.requiresGrad)
        }
        var groups: [String: OptimizerGroupState] = [:]
        if let optimizer {
            var names: [ObjectIdentifier: String] = [:]
            for (name, t) in named { names[ObjectIdentifier(t)] = name }
            var group = OptimizerGroupState(step: Int64(optimizer.stepCount), initialLearningRate: optimizer.learningRate,
                                            learningRate: optimizer.learningRate)
            for (i, p) in optimizer.parameters.enumerated() {
                guard let name = names[ObjectIdentifier(p)] else {
                    throw OnnxTrainError.invalidInput("saveCheckpoint: optimizer parameter \(i) \(p.value) is not a parameter of this module")
                }
                if !optimizer.state[i].isEmpty { group.parameterStates[name] = optimizer.state[i] }
            }
            groups["group0"] = group
        }
        let state = try CheckpointState(parameters: parameters, optimizerGroups: groups)
        try state.save(to: path, includeOptimizerState: optimizer != nil)
    }

    /// Loads a checkpoint written by `saveCheckpoint` (or onnxruntime): parameters and buffers by
    /// name, and the optimizer's state and step count when `optimizer` is given.
    public func loadCheckpoint(from path: String, optimizer: NNOptimizer? = nil, strict: Bool = true) throws {
        let checkpoint = try CheckpointState.load(from: path)
        try loadStateDict(Dictionary(checkpoint.parameters.map { ($0.name, $0.data) }, uniquingKeysWith: { a, _ in a }), strict: strict)
        guard let optimizer, let group = checkpoint.optimizerGroups["group0"] else { return }
        var names: [ObjectIdentifier: String] = [:]
        for (name, t) in namedTensors() { names[ObjectIdentifier(t)] = name }
        optimizer.stepCount = Int(group.step)
        optimizer.learningRate = group.initialLearningRate
        for (i, p) in optimizer.parameters.enumerated() {
            guard let name = names[ObjectIdentifier(p)], let s = group.parameterStates[name] else { continue }
            for (key, t) in s where t.shape != p.shape {
                throw OnnxTrainError.invalidInput("\(path): optimizer state '\(key)' of '\(name)' is \(t), the parameter is \(p.value)")
            }
            optimizer.state[i] = s.mapValues { $0.copied() }
            optimizer.parameterSteps[i] = Int(group.step)
        }
    }
}
