/// Training from a gradient graph (`gradient_graph.onnx`, as onnxruntime's
/// `export_gradient_graph` writes it): inputs = user inputs, labels, then every parameter;
/// outputs = model output, loss, then `<param>_grad`.
///
/// The graph is turned into the shape of an artifact training model: one com.microsoft
/// InPlaceAccumulatorV2 per gradient accumulates `<p>_grad` into the input
/// `<p>_grad.accumulation.buffer`, with `lazy_reset_grad` as the overwrite flag. From there the
/// same `TrainingModule` and `Optimizer` run it, with the same accumulation semantics.
public enum GradientGraph {
    /// The loss output: `loss` if present, else the first rank-0 output, else the first non-gradient one.
    public static func lossOutput(of graph: Graph, parameters: Set<String>) -> String? {
        let candidates = graph.outputs.filter { o in
            !(o.name.hasSuffix("_grad") && parameters.contains(String(o.name.dropLast(5))))
        }
        if let named = candidates.first(where: { $0.name == "loss" }) { return named.name }
        if let scalar = candidates.first(where: { if case .tensor(_, let s)? = $0.type, s?.isEmpty == true { return true } else { return false } }) {
            return scalar.name
        }
        return candidates.first?.name
    }

    /// The gradient graph rewritten with gradient accumulation, as an artifact training model.
    public static func trainingModel(from model: Model, parameters: Set<String>) throws -> Model {
        var model = model
        var graph = model.graph
        let inputs = Set(graph.inputs.map(\.name))
        let declared = Dictionary(graph.inputs.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
        var gradientOutputs: [(param: String, output: ValueInfo)] = []
        var others: [ValueInfo] = []
        for o in graph.outputs {
            let owner = o.name.hasSuffix("_grad") ? String(o.name.dropLast(5)) : nil
            if let owner, parameters.contains(owner), inputs.contains(owner) {
                gradientOutputs.append((owner, o))
            } else {
                others.append(o)
            }
        }
        guard !gradientOutputs.isEmpty else {
            throw OnnxTrainError.training("\(model.path ?? "gradient graph"): no '<parameter>_grad' output matches a parameter (parameters: \(parameters.sorted().joined(separator: ", ")))")
        }
        let flag = TrainingModule.resetFlagName
        var flags: [ValueInfo] = []
        for (param, output) in gradientOutputs {
            let buffer = "\(param)_grad.accumulation.buffer", done = "\(param)_grad.accumulation.out"
            graph.inputs.append(ValueInfo(name: buffer, type: declared[param]?.type ?? output.type))
            graph.nodes.append(Node(opType: "InPlaceAccumulatorV2", domain: "com.microsoft", name: "\(param)_grad_accumulator",
                                    inputs: [buffer, output.name, flag], outputs: [done]))
            flags.append(ValueInfo(name: done, type: .tensor(.bool, shape: [.value(1)])))
        }
        graph.inputs.append(ValueInfo(name: flag, type: .tensor(.bool, shape: [.value(1)])))
        graph.outputs = others + flags
        model.graph = graph
        if model.opsetImports["com.microsoft"] == nil { model.opsetImports["com.microsoft"] = 1 }
        return model
    }
}

extension TrainingModule {
    /// A module over a gradient graph; `state` holds the parameters (from a checkpoint, npz or
    /// safetensors file). Parameters with a `<p>_grad` output are trained; others are fed as is.
    public convenience init(gradientGraph: Model, state: CheckpointState, lossName: String? = nil,
                            options: SessionOptions = SessionOptions(), compileTraining: Bool = true) throws {
        let names = Set(state.parameterNames)
        let label = gradientGraph.path ?? "gradient graph"
        let outputs = Set(gradientGraph.graph.outputs.map(\.name))
        let wanted = gradientGraph.graph.inputs.map(\.name).filter { outputs.contains($0 + "_grad") }
        let missing = wanted.filter { !names.contains($0) }
        guard missing.isEmpty else {
            throw OnnxTrainError.invalidInput("\(label): the parameters do not fit this graph: they lack \(missing.map { "'\($0)'" }.joined(separator: ", ")) (the graph trains: \(wanted.joined(separator: ", ")))")
        }
        // Frozen parameters (from a checkpoint) are fed but get no gradient buffer.
        let trainable = Set(state.parameters.filter(\.requiresGrad).map(\.name))
        let training = try GradientGraph.trainingModel(from: gradientGraph, parameters: trainable)
        let loss = lossName ?? GradientGraph.lossOutput(of: gradientGraph.graph, parameters: names)
        // The eval model is the same graph without its gradient part.
        let forward = training.graph.outputs.map(\.name).filter { !$0.hasSuffix("_grad.accumulation.out") }
        var (evalGraph, needed) = try gradientGraph.graph.pruned(to: forward, label: "the gradient graph", outputsForHelp: forward)
        evalGraph.inputs = evalGraph.inputs.filter { needed.contains($0.name) }
        evalGraph.outputs = gradientGraph.graph.outputs.filter { forward.contains($0.name) }
        var evalModel = gradientGraph
        evalModel.graph = evalGraph
        try self.init(trainingModel: training, state: state, evalModel: evalModel, lossName: loss, options: options,
                      compileTraining: compileTraining)
    }
}

extension CheckpointState {
    /// Parameters from a file: `.npz` or `.safetensors` (every array a trainable parameter, in
    /// file order), or else an onnxruntime checkpoint.
    public static func loadParameters(from path: String) throws -> CheckpointState {
        let lower = path.lowercased()
        if lower.hasSuffix(".npz") {
            return try CheckpointState(trainable: try Npz.read(contentsOf: path).map { ($0.name, $0.tensor) })
        }
        if lower.hasSuffix(".safetensors") {
            return try CheckpointState(trainable: try SafeTensors.read(contentsOf: path).tensors.map { ($0.name, $0.tensor) })
        }
        return try CheckpointState.load(from: path)
    }
}

extension TrainingModule {
    /// Writes `exportModelForInferencing(outputs:)` as an .onnx file.
    public func exportModelForInferencing(to path: String, outputs: [String]) throws {
        try exportModelForInferencing(outputs: outputs).write(to: path)
    }
}
