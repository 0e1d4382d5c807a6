import Foundation

/// The four files onnxruntime-training's `generate_artifacts` writes, made in Swift from an
/// inference model: `training_model.onnx` (forward, loss, gradients, accumulation),
/// `eval_model.onnx` (forward and loss in inference mode), `optimizer_model.onnx` and the initial
/// `checkpoint`; with onnxruntime's names and conventions (parameters as graph inputs,
/// `<p>_grad.accumulation.buffer`, `lazy_reset_grad`, InPlaceAccumulatorV2), so onnxruntime
/// loads and trains them too. Optionally also `gradient_graph.onnx` in
/// `export_gradient_graph`'s form.
public struct TrainingArtifacts {
    /// The loss appended to the model, as onnxruntime's onnxblock losses build it.
    public enum Loss: Equatable, CustomStringConvertible {
        /// mean((output - target)^2), target input `target`.
        case mse
        /// mean(|output - target|), target input `target`.
        case l1
        /// SoftmaxCrossEntropyLoss over axis 1, mean; int64 class labels input `labels`.
        case crossEntropy
        /// mean of -[target·log σ(x) + (1 - target)·log(1 - σ(x))], target input `target`.
        case bceWithLogits
        /// The model already computes a scalar loss: this output.
        case output(String)

        /// Parses `mse`, `l1`, `cross-entropy`, `bce-with-logits` or `output:NAME`.
        public init(parsing text: String) throws {
            switch text.lowercased() {
            case "mse": self = .mse
            case "l1": self = .l1
            case "cross-entropy", "crossentropy", "ce": self = .crossEntropy
            case "bce-with-logits", "bce": self = .bceWithLogits
            default:
                if text.hasPrefix("output:"), text.count > 7 { self = .output(String(text.dropFirst(7))); return }
                throw OnnxTrainError.invalidInput("unknown loss '\(text)' (use mse, l1, cross-entropy, bce-with-logits or output:NAME)")
            }
        }

        public var description: String {
            switch self {
            case .mse: return "mse"
            case .l1: return "l1"
            case .crossEntropy: return "cross-entropy"
            case .bceWithLogits: return "bce-with-logits"
            case .output(let name): return "output:\(name)"
            }
        }
    }

    public struct Options {
        public var loss: Loss
        public var optimizer: OptimizerGraph.Kind
        /// Parameters to train; nil trains every floating-point initializer (rank >= 1) on a path
        /// to the loss, except BatchNormalization running statistics.
        public var requiresGrad: [String]?
        /// Initializers kept fixed but stored in the checkpoint (BatchNorm running statistics are
        /// always frozen, and updated in place during training).
        public var frozen: [String] = []
        /// The model output the loss reads; defaults to the first output.
        public var output: String?
        public var registry: OpRegistry = .standard

        public init(loss: Loss, optimizer: OptimizerGraph.Kind = .adamW, requiresGrad: [String]? = nil, frozen: [String] = []) {
            self.loss = loss
            self.optimizer = optimizer
            self.requiresGrad = requiresGrad
            self.frozen = frozen
        }
    }

    public var trainingModel: Model
    public var evalModel: Model
    public var optimizerModel: Model
    public var checkpoint: CheckpointState
    /// `export_gradient_graph`'s form: user inputs, labels and parameters in; model outputs,
    /// loss and `<p>_grad` out.
    public var gradientGraph: Model
    /// The loss output's name in the training and eval models.
    public var lossName: String
    public var trainable: [String]
    public var frozen: [String]
    /// What the builder noticed about the export but could not fix (folded or merged parameters),
    /// one sentence each; the CLI prints them as warnings.
    public var warnings: [String] = []

    public static let lossName = "loss"

    /// Builds the artifacts for `model` (an inference model, any exporter).
    public static func build(from model: Model, options: Options) throws -> TrainingArtifacts {
        var base = model
        let label = model.path ?? "the model"
        try PassPipeline([InlineFunctions()]).run(&base)
        guard base.opset("") != nil else { throw OnnxTrainError.invalidModel("\(label) imports no ai.onnx opset") }
        let graph = base.graph
        guard !graph.outputs.isEmpty else { throw OnnxTrainError.invalidModel("\(label) has no outputs") }
        let index = GraphIndex(graph)

        // BatchNormalization running statistics are state, not parameters.
        var runningStats = Set<String>()
        for node in graph.nodes where node.opType == "BatchNormalization" && node.domain.isEmpty {
            for i in [3, 4] { if let name = node.input(i), graph.initializers[name] != nil { runningStats.insert(name) } }
        }
        let floatInitializers = graph.initializerNames.filter { name in
            guard let t = graph.initializers[name] else { return false }
            return t.dtype.isFloatingPoint && index.consumers[name] != nil
        }
        for name in (options.requiresGrad ?? []) + options.frozen where graph.initializers[name] == nil {
            let known = floatInitializers.prefix(20).joined(separator: ", ")
            throw OnnxTrainError.invalidInput("\(label) has no initializer '\(name)' to train or freeze (floating-point initializers: \(known)\(floatInitializers.count > 20 ? ", ..." : ""))")
        }
        for name in options.requiresGrad ?? [] where runningStats.contains(name) || options.frozen.contains(name) {
            throw OnnxTrainError.invalidInput("'\(name)' cannot be both trained and frozen (BatchNormalization running statistics are always frozen)")
        }

        // The training graph: parameters become inputs, training-mode rewrites, then the loss.
        var training = base
        let lossName = try appendLoss(to: &training, options: options, label: label)
        let frozenSet = runningStats.union(options.frozen)
        let trainable: [String]
        if let chosen = options.requiresGrad {
            trainable = graph.initializerNames.filter { chosen.contains($0) }
        } else {
            // Float initializers of rank >= 1 whose values reach the loss through differentiable inputs.
            let reach = differentiableInitializers(training, loss: lossName, candidates: Set(floatInitializers).subtracting(frozenSet))
            trainable = graph.initializerNames.filter { reach.contains($0) && (graph.initializers[$0]?.rank ?? 0) >= 1 }
        }
        guard !trainable.isEmpty else { throw OnnxTrainError.training("\(label): nothing to train (no floating-point initializer reaches the loss)") }
        let parameterNames = graph.initializerNames.filter { trainable.contains($0) || frozenSet.contains($0) }
        makeInputs(&training.graph, parameterNames)
        rewriteForTraining(&training.graph)
        // The loss first, then the model's outputs (onnxruntime's additional_output_names), for metrics.
        training.graph.outputs = training.graph.outputs.filter { $0.name == lossName } + training.graph.outputs.filter { $0.name != lossName }
        try ConstantFolding(registry: options.registry).run(&training)
        try SplitToSequenceAsSplit().run(&training)
        try DeadNodeElimination(registry: options.registry).run(&training)
        let differentiated = try Autodiff.differentiate(training.graph, opsets: training.opsetImports, loss: lossName,
                                                       parameters: trainable, registry: options.registry)
        let grads = Dictionary(uniqueKeysWithValues: differentiated.gradients.map { ($0.parameter, $0.gradient) })

        // export_gradient_graph's form: model outputs, loss and gradients.
        var gradientGraph = training
        gradientGraph.graph = differentiated.graph
        let declared = Dictionary((graph.outputs + graph.valueInfo).map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
        let modelOutputs = graph.outputs.filter { o in o.name != lossName && differentiated.graph.nodes.contains { $0.outputs.contains(o.name) } }
        gradientGraph.graph.outputs = modelOutputs.map { declared[$0.name] ?? $0 }
            + [ValueInfo(name: lossName, type: .tensor(lossType(training, lossName), shape: []))]
            + trainable.map { p in ValueInfo(name: grads[p]!, type: training.graph.inputs.first { $0.name == p }?.type) }
        renameGradients(&gradientGraph.graph, grads)

        // Accumulation into <p>_grad.accumulation.buffer, as onnxruntime's artifacts.
        var trainingGraph = differentiated.graph
        var accumulationOutputs: [ValueInfo] = []
        var bufferInputs: [ValueInfo] = []
        for p in trainable {
            let type = trainingGraph.inputs.first { $0.name == p }?.type
            let buffer = "\(p)_grad.accumulation.buffer", out = "\(p)_grad.accumulation.out"
            bufferInputs.append(ValueInfo(name: buffer, type: type))
            trainingGraph.nodes.append(Node(opType: "InPlaceAccumulatorV2", domain: "com.microsoft", name: "GradientAccumulator_\(p)",
                                            inputs: [buffer, grads[p]!, TrainingModule.resetFlagName], outputs: [out]))
            accumulationOutputs.append(ValueInfo(name: out, type: .tensor(.bool, shape: [.value(1)])))
        }
        trainingGraph.inputs += bufferInputs + [ValueInfo(name: TrainingModule.resetFlagName, type: .tensor(.bool, shape: [.value(1)]))]
        trainingGraph.outputs = differentiated.graph.outputs + accumulationOutputs
        renameGradients(&trainingGraph, grads)
        training.graph = trainingGraph
        training.opsetImports["com.microsoft"] = 1
        training.producerName = "onnx-train"
        gradientGraph.opsetImports["com.microsoft"] = 1
        gradientGraph.producerName = "onnx-train"

        // The eval graph: the model in inference mode with the same loss.
        var eval = base
        try appendLoss(to: &eval, options: options, label: label)
        makeInputs(&eval.graph, parameterNames)
        rewriteForInference(&eval.graph)
        eval.graph.outputs = eval.graph.outputs.filter { $0.name == lossName } + eval.graph.outputs.filter { $0.name != lossName }
        try DeadNodeElimination(registry: options.registry).run(&eval)
        eval.producerName = "onnx-train"

        // Trainable parameters first, then frozen ones, as onnxruntime's checkpoint lists them.
        let parameters = (trainable + parameterNames.filter { !trainable.contains($0) }).map { name in
            Parameter(name: name, data: graph.initializers[name]!.copied(), requiresGrad: trainable.contains(name))
        }
        let checkpoint = try CheckpointState(parameters: parameters)
        let optimizer = OptimizerGraph.build(options.optimizer, parameters: parameters.filter(\.requiresGrad),
                                             opset: base.opset("") ?? 17)
        return TrainingArtifacts(trainingModel: training, evalModel: eval, optimizerModel: optimizer, checkpoint: checkpoint,
                                 gradientGraph: gradientGraph, lossName: lossName, trainable: trainable,
                                 frozen: parameterNames.filter { !trainable.contains($0) },
                                 warnings: exportWarnings(graph, index: index, trainable: trainable))
    }

    /// Signs that an exporter's optimisation changed the parameters before they reached us: a
    /// trained initializer with a generated name (torch.onnx's dynamo exporter names folded or merged
    /// constants `val_N`, the TorchScript exporter's constant folding `onnx::Op_N`), or a Conv that
    /// reads a BatchNorm's parameters by name with no BatchNormalization after it (folded into it).
    /// Both are only noticed, never undone: the folded values are what the file holds.
    static func exportWarnings(_ graph: Graph, index: GraphIndex, trainable: [String]) -> [String] {
        var warnings: [String] = []
        let generated = trainable.filter { name in
            name.hasPrefix("onnx::") || (name.hasPrefix("val_") && Int(name.dropFirst(4)) != nil)
                || (name.hasPrefix("_val_") && Int(name.dropFirst(5)) != nil)
        }
        if !generated.isEmpty {
            let shown = generated.prefix(5).joined(separator: ", ") + (generated.count > 5 ? ", ..." : "")
            warnings.append("\(generated.count) of \(trainable.count) trained parameters have exporter-generated names (\(shown)): "
                + "the exporter folded or merged the source model's parameters, so training changes these instead of them. "
                + "From PyTorch, export with torch.onnx.export(..., dynamo=True, optimize=False), or with dynamo=False, "
                + "training=torch.onnx.TrainingMode.TRAINING, do_constant_folding=False")
        }
        let batchNormNames = { (name: String) -> Bool in
            name.lowercased().split(whereSeparator: { ".:/_".contains($0) }).contains { part in
                part.hasPrefix("bn") && part.dropFirst(2).allSatisfy(\.isNumber) || part.hasPrefix("batchnorm")
            }
        }
        for node in graph.nodes where node.domain.isEmpty && node.opType == "Conv" {
            guard let folded = node.inputs.dropFirst().first(where: { graph.initializers[$0] != nil && batchNormNames($0) }) else { continue }
            let followers = (index.consumers[node.outputs[0]] ?? []).map { graph.nodes[$0].opType }
            if !followers.contains("BatchNormalization") {
                warnings.append("Conv '\(node.name)' reads '\(folded)' but no BatchNormalization follows it: the exporter seems to have "
                    + "folded BatchNorm into the convolution, which then trains without batch statistics. From PyTorch, export with "
                    + "torch.onnx.export(..., dynamo=True, optimize=False), or with dynamo=False, "
                    + "training=torch.onnx.TrainingMode.TRAINING, do_constant_folding=False")
                break
            }
        }
        return warnings
    }

    /// Writes the artifacts into `directory` (created if needed), each file atomically.
    public func write(to directory: String, gradientGraph: Bool = false) throws {
        try RunArtifacts.prepare(directory: directory)
        let folder = URL(fileURLWithPath: directory)
        try trainingModel.write(to: folder.appendingPathComponent("training_model.onnx").path)
        try evalModel.write(to: folder.appendingPathComponent("eval_model.onnx").path)
        try optimizerModel.write(to: folder.appendingPathComponent("optimizer_model.onnx").path)
        try checkpoint.save(to: folder.appendingPathComponent("checkpoint").path)
        if gradientGraph {
            try self.gradientGraph.write(to: folder.appendingPathComponent("gradient_graph.onnx").path)
        }
    }

    // MARK: Steps

    static func lossType(_ model: Model, _ loss: String) -> DType? {
        TypeInference(graph: model.graph, opsets: model.opsetImports)[loss]?.dtype ?? .float32
    }

    /// Moves parameters from initializers to graph inputs (in initializer order), as onnxruntime's
    /// artifacts take them.
    static func makeInputs(_ graph: inout Graph, _ names: [String]) {
        for name in names {
            guard let t = graph.initializers.removeValue(forKey: name) else { continue }
            graph.initializerNames.removeAll { $0 == name }
            if !graph.inputs.contains(where: { $0.name == name }) {
                graph.inputs.append(ValueInfo(name: name, type: .tensor(t.dtype, shape: t.shape.map { .value($0) })))
            }
        }
        // User inputs first, then parameters, as onnxruntime orders them.
        let set = Set(names)
        graph.inputs = graph.inputs.filter { !set.contains($0.name) } + names.compactMap { n in graph.inputs.first { $0.name == n } }
    }

    /// Appends the loss (and its label input) to the model; returns the loss name.
    @discardableResult
    static func appendLoss(to model: inout Model, options: Options, label: String) throws -> String {
        var builder = GraphBuilder(model.graph)
        let graph = model.graph
        if case .output(let name) = options.loss {
            guard graph.outputs.contains(where: { $0.name == name }) || GraphIndex(graph).producer[name] != nil else {
                throw OnnxTrainError.invalidInput("\(label) has no output '\(name)' to use as the loss (outputs: \(graph.outputs.map(\.name).joined(separator: ", ")))")
            }
            if !graph.outputs.contains(where: { $0.name == name }) { builder.update { $0.outputs.append(ValueInfo(name: name, type: nil)) } }
            model.graph = builder.graph
            return name
        }
        let outputName = options.output ?? graph.outputs[0].name
        guard let outputInfo = graph.outputs.first(where: { $0.name == outputName }) else {
            throw OnnxTrainError.invalidInput("\(label) has no output '\(outputName)' (outputs: \(graph.outputs.map(\.name).joined(separator: ", ")))")
        }
        let types = TypeInference(graph: graph, opsets: model.opsetImports)
        let info = types[outputName] ?? TensorInfo(outputInfo.type) ?? TensorInfo(dtype: .float32, shape: nil)
        let dtype = info.dtype ?? .float32
        guard dtype.isFloatingPoint else { throw OnnxTrainError.invalidInput("output '\(outputName)' is tensor(\(dtype)); a loss needs a floating-point output") }
        var loss = lossName
        var labels: [String] = []
        func one(_ name: String) -> String {
            builder.constant((try? GradientContext.scalarTensor(1, dtype: dtype, shape: [1])) ?? Tensor(shape: [1], scalars: [Float(1)]), name: name)
        }
        switch options.loss {
        case .crossEntropy:
            let name = builder.freshName("labels")
            var shape: [Dim]? = nil
            if let s = info.shape, s.count >= 2 { shape = [s[0]] + Array(s.dropFirst(2)) }
            builder.addInput(ValueInfo(name: name, type: .tensor(.int64, shape: shape)))
            labels.append(name)
            loss = builder.add("SoftmaxCrossEntropyLoss", name: "SoftmaxCrossEntropyLoss", inputs: [outputName, name], outputs: 2,
                               outputNames: [loss, "log_prob"], attributes: ["reduction": .string("mean")])[0]
        case .mse, .l1, .bceWithLogits:
            let target = builder.freshName("target")
            builder.addInput(ValueInfo(name: target, type: .tensor(dtype, shape: info.shape)))
            labels.append(target)
            let perElement: String
            switch options.loss {
            case .mse:
                let diff = builder.op("Sub", name: "mse_sub", [outputName, target])
                let two = builder.constant((try? GradientContext.scalarTensor(2, dtype: dtype, shape: [1])) ?? Tensor(shape: [1], scalars: [Float(2)]), name: "pow_exponent")
                perElement = builder.op("Pow", name: "mse_pow", [diff, two])
            case .l1:
                perElement = builder.op("Abs", name: "l1_abs", [builder.op("Sub", name: "l1_sub", [outputName, target])])
            default:
                // onnxruntime's BCEWithLogitsLoss block, op for op.
                let ones = one("bce_ones")
                let sigmoid = builder.op("Sigmoid", name: "bce_sigmoid", [outputName])
                let a = builder.op("Mul", name: "bce_mul", [builder.op("Log", name: "bce_log", [sigmoid]), target])
                let notSigmoid = builder.op("Sub", name: "bce_sub", [ones, sigmoid])
                let notTarget = builder.op("Sub", name: "bce_sub_target", [ones, target])
                let b = builder.op("Mul", name: "bce_mul_1", [builder.op("Log", name: "bce_log_1", [notSigmoid]), notTarget])
                perElement = builder.op("Neg", name: "bce_neg", [builder.op("Add", name: "bce_add", [a, b])])
            }
            loss = builder.add("ReduceMean", name: "loss_mean", inputs: [perElement], outputs: 1, outputNames: [loss], attributes: ["keepdims": .int(0)])[0]
        case .output:
            break
        }
        builder.update { $0.outputs.insert(ValueInfo(name: loss, type: .tensor(dtype, shape: [])), at: 0) }
        // Label inputs come right after the model's own inputs.
        builder.update { g in
            let own = g.inputs.filter { !labels.contains($0.name) }
            let firstInitializerInput = own.firstIndex { g.initializers[$0.name] != nil } ?? own.count
            g.inputs = Array(own[..<firstInitializerInput]) + labels.compactMap { l in g.inputs.first { $0.name == l } } + Array(own[firstInitializerInput...])
        }
        model.graph = builder.graph
        return loss
    }

    /// The candidates whose values reach `loss` through inputs that carry gradients (not shape,
    /// index or mask inputs).
    static func differentiableInitializers(_ model: Model, loss: String, candidates: Set<String>) -> Set<String> {
        let graph = model.graph
        let types = TypeInference(graph: graph, opsets: model.opsetImports)
        let index = GraphIndex(graph)
        guard !index.hasCycle else { return candidates }
        let order = index.order
        var origin: [String: Set<String>] = [:]
        for c in candidates { origin[c] = [c] }
        for i in order {
            let node = graph.nodes[i]
            var from = Set<String>()
            for name in index.reads[i] { if let o = origin[name] { from.formUnion(o) } }
            guard !from.isEmpty else { continue }
            for o in node.outputs where !o.isEmpty && (types[o]?.dtype?.isFloatingPoint ?? true) { origin[o, default: []].formUnion(from) }
        }
        return origin[loss] ?? []
    }

    /// Training mode: BatchNormalization as com.microsoft BatchNormInternal (the running
    /// statistics update in place), Dropout with training_mode true.
    static func rewriteForTraining(_ graph: inout Graph) {
        var builder = GraphBuilder(graph)
        var nodes: [Node] = []
        var trueName: String?
        for var node in graph.nodes {
            if node.domain.isEmpty && node.opType == "BatchNormalization" {
                var outputs = node.outputs
                while outputs.count < 5 { outputs.append("") }
                for k in 1..<5 where outputs[k].isEmpty { outputs[k] = builder.freshName("\(node.outputs[0])_\(["", "running_mean", "running_var", "saved_mean", "saved_inv_std"][k])") }
                var attributes: [String: Attribute] = ["epsilon": .float(node.float("epsilon") ?? 1e-5),
                                                       "momentum": .float(node.float("momentum") ?? 0.9), "training_mode": .int(1)]
                if node.attributes["epsilon"] == nil { attributes["epsilon"] = .float(1e-5) }
                node = Node(opType: "BatchNormInternal", domain: "com.microsoft", name: node.name, inputs: Array(node.inputs.prefix(5)),
                            outputs: outputs, attributes: attributes)
            } else if node.domain.isEmpty && node.opType == "Dropout" {
                if trueName == nil { trueName = builder.constant(Tensor(scalar: true), name: "training_mode_true") }
                var inputs = node.inputs
                while inputs.count < 3 { inputs.append("") }
                inputs[2] = trueName!
                node.inputs = inputs
                node.attributes["is_test"] = nil
            }
            nodes.append(node)
        }
        graph = builder.graph
        graph.nodes = nodes
    }

    /// Inference mode: BatchNormalization without its training outputs, Dropout off.
    static func rewriteForInference(_ graph: inout Graph) {
        var builder = GraphBuilder(graph)
        var falseName: String?
        var nodes: [Node] = []
        for var node in graph.nodes {
            if node.domain.isEmpty && node.opType == "BatchNormalization" {
                node.attributes["training_mode"] = nil
                node.outputs = [node.outputs[0]]
            } else if node.domain.isEmpty && node.opType == "Dropout", node.input(2) != nil {
                if falseName == nil { falseName = builder.constant(Tensor(scalar: false), name: "training_mode_false") }
                node.inputs[2] = falseName!
            }
            nodes.append(node)
        }
        graph = builder.graph
        graph.nodes = nodes
    }

    /// Gives each parameter's gradient the name `<p>_grad` (what `export_gradient_graph` writes).
    static func renameGradients(_ graph: inout Graph, _ grads: [String: String]) {
        var rename: [String: String] = [:]
        let taken = Set(graph.nodes.flatMap(\.outputs)).union(graph.inputs.map(\.name)).union(graph.initializerNames)
        for (p, g) in grads where g != "\(p)_grad" && !taken.contains("\(p)_grad") { rename[g] = "\(p)_grad" }
        guard !rename.isEmpty else { return }
        for i in graph.nodes.indices {
            graph.nodes[i].inputs = graph.nodes[i].inputs.map { rename[$0] ?? $0 }
            graph.nodes[i].outputs = graph.nodes[i].outputs.map { rename[$0] ?? $0 }
        }
        for i in graph.outputs.indices { if let r = rename[graph.outputs[i].name] { graph.outputs[i].name = r } }
    }
}
