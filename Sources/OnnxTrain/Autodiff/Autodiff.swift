/// Reverse-mode automatic differentiation of ONNX graphs.
///
/// Only the nodes on a path from a trainable parameter to the loss are differentiated, in
/// reverse topological order, each through the gradient rule registered for its op. A value
/// read by several nodes gets the sum of their contributions (one `Sum` node); broadcasting is
/// undone by the rules (`GradientContext.reduceToShape`); integer, boolean and shape values carry
/// no gradient. The result is the forward graph with gradient nodes appended, producing
/// `<parameter>_grad` for every parameter.
public enum Autodiff {
    public struct Result {
        /// The graph with the gradient nodes appended (outputs unchanged).
        public var graph: Graph
        /// `<parameter>_grad` value name per parameter, in the order asked for.
        public var gradients: [(parameter: String, gradient: String)]
        /// The initializer holding the loss's seed gradient (ones).
        public var lossGradient: String
    }

    /// Ops whose outputs never carry a gradient (integer, boolean or shape results, constants,
    /// random draws): no rule is needed for them.
    public static let nonDifferentiable: Set<String> = [
        "Shape", "Size", "Constant", "ConstantOfShape", "Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual",
        "And", "Or", "Xor", "Not", "IsNaN", "IsInf", "ArgMax", "ArgMin", "NonZero", "Range", "RandomNormal",
        "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Bernoulli", "Multinomial", "EyeLike", "BitShift",
        "BitwiseAnd", "BitwiseOr", "BitwiseXor", "BitwiseNot", "StringNormalizer", "TfIdfVectorizer", "Unique",
        "NonMaxSuppression",
    ]

    /// Whether an op can be differentiated (it has a rule) or needs no gradient at all.
    public static func hasGradient(domain: String, opType: String, registry: OpRegistry = .standard) -> Bool {
        registry.gradientRule(domain: domain, opType: opType) != nil || (canonicalDomain(domain).isEmpty && nonDifferentiable.contains(opType))
    }

    /// Differentiates `loss` with respect to `parameters` (graph inputs or initializers).
    /// - Throws: `OnnxTrainError.unsupported` naming the op, the node and the parameter whose path
    ///   needs it when an op has no gradient rule; `.training` when a parameter does not reach the loss.
    public static func differentiate(_ graph: Graph, opsets: [String: Int], loss: String, parameters: [String],
                                     registry: OpRegistry = .standard) throws -> Result {
        let index = GraphIndex(graph)
        guard !index.hasCycle else { throw OnnxTrainError.invalidGraph("the graph has a cycle: it cannot be differentiated") }
        let order = index.order
        let types = TypeInference(graph: graph, opsets: opsets)
        func differentiable(_ name: String) -> Bool { types[name]?.dtype.map(\.isFloatingPoint) ?? true }
        let known = index.graphInputs.union(index.initializers).union(index.producer.keys)
        guard known.contains(loss) else { throw OnnxTrainError.training("the graph has no value '\(loss)' to use as the loss") }
        for p in parameters where !index.graphInputs.contains(p) && !index.initializers.contains(p) {
            throw OnnxTrainError.training("'\(p)' is not an input or initializer of the graph, so it cannot be trained")
        }
        for p in parameters where !differentiable(p) {
            throw OnnxTrainError.training("parameter '\(p)' is tensor(\(types[p]?.dtype.map(\.description) ?? "?")): only floating-point tensors can be trained")
        }

        // Forward: which values depend on a parameter, and through which parameter first.
        var origin: [String: String] = [:]
        for p in parameters { origin[p] = p }
        for i in order {
            let node = graph.nodes[i]
            guard let from = index.reads[i].lazy.compactMap({ origin[$0] }).first else { continue }
            for o in node.outputs where !o.isEmpty && differentiable(o) && origin[o] == nil { origin[o] = from }
        }
        guard origin[loss] != nil else {
            throw OnnxTrainError.training("the loss '\(loss)' does not depend on any trainable parameter")
        }
        // Backward: which of those values the loss depends on.
        var needed: Set<String> = [loss]
        var active: [Int] = []
        for i in order.reversed() {
            let node = graph.nodes[i]
            guard node.outputs.contains(where: { needed.contains($0) && origin[$0] != nil }) else { continue }
            active.append(i)
            for name in node.inputs where !name.isEmpty && origin[name] != nil { needed.insert(name) }
        }
        for p in parameters where !needed.contains(p) {
            throw OnnxTrainError.training("parameter '\(p)' does not affect the loss '\(loss)': freeze it (--frozen) or choose another loss")
        }

        let context = GradientContext(builder: GraphBuilder(graph), types: types, opsets: opsets)
        var contributions: [String: [String]] = [:]
        // The seed: d loss / d loss = 1, an initializer as onnxruntime writes it.
        let seedName = context.builder.freshName(loss + "_grad")
        let lossInfo = types[loss]
        if let shape = lossInfo?.staticShape {
            context.builder.update { $0.setInitializer(seedName, (try? GradientContext.scalarTensor(1, dtype: lossInfo?.dtype ?? .float32, shape: shape)) ?? Tensor(scalar: Float(1))) }
        } else {
            let shape = context.builder.add("Shape", name: loss + "_shape", inputs: [loss])[0]
            let one = try GradientContext.scalarTensor(1, dtype: lossInfo?.dtype ?? .float32, shape: [1])
            context.builder.update {
                $0.nodes.append(Node(opType: "ConstantOfShape", name: seedName + "_fill", inputs: [shape], outputs: [seedName], attributes: ["value": .tensor(one)]))
            }
        }
        contributions[loss] = [seedName]

        /// The gradient of `value`: its one contribution, or the sum of several (named `<value>_grad`).
        func gradient(of value: String) -> String? {
            guard let parts = contributions[value], !parts.isEmpty else { return nil }
            if parts.count == 1 { return parts[0] }
            let name = context.builder.freshName(value + "_grad")
            context.builder.update {
                $0.nodes.append(Node(opType: "Sum", name: "AccumulateGrad_" + name, inputs: parts, outputs: [name]))
            }
            contributions[value] = [name]
            return name
        }

        for i in active {
            let node = graph.nodes[i]
            let outputGrads = node.outputs.map { $0.isEmpty ? nil : gradient(of: $0) }
            guard outputGrads.contains(where: { $0 != nil }) else { continue }
            guard let rule = registry.gradientRule(domain: node.domain, opType: node.opType) else {
                let through = node.inputs.lazy.compactMap { origin[$0] }.first ?? "?"
                throw OnnxTrainError.unsupported("no gradient rule for \(node.opType) (domain \(node.domain.isEmpty ? "ai.onnx" : node.domain)) at \(node.label), which lies between parameter '\(through)' and the loss '\(loss)'")
            }
            context.node = node
            context.nodeIndex = i
            context.opset = opsets[node.domain] ?? 1
            context.outputGradients = outputGrads
            context.required = node.inputs.map { !$0.isEmpty && needed.contains($0) && origin[$0] != nil }
            let grads: [String?]
            do {
                grads = try rule(context)
            } catch let error as GradientError {
                throw OnnxTrainError.unsupported("cannot differentiate \(node.label): \(error.message)")
            }
            for (k, g) in grads.enumerated() where k < node.inputs.count {
                guard let g, context.required[k] else { continue }
                contributions[node.inputs[k], default: []].append(g)
            }
        }

        var result: [(String, String)] = []
        for p in parameters {
            guard let g = gradient(of: p) else {
                throw OnnxTrainError.training("parameter '\(p)' received no gradient from the loss '\(loss)'")
            }
            // A sum of contributions is already named <p>_grad; anything else gets that name through an Identity.
            if g == p + "_grad" {
                result.append((p, g))
                continue
            }
            let name = context.builder.freshName(p + "_grad")
            context.builder.update { $0.nodes.append(Node(opType: "Identity", name: name + "_identity", inputs: [g], outputs: [name])) }
            result.append((p, name))
        }
        return Result(graph: context.builder.graph, gradients: result, lossGradient: seedName)
    }
}
