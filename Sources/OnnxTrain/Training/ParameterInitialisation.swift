import Foundation

/// Fresh parameters for a gradient graph as PyTorch initialises its layers, each parameter's role
/// read from the node that consumes it:
/// - Linear (Gemm B / MatMul B) and Conv weights: kaiming_uniform(a = sqrt(5)), which is
///   U(-1/sqrt(fan_in), 1/sqrt(fan_in)) since the gain sqrt(2 / (1 + 5)) times sqrt(3 / fan_in)
///   is 1/sqrt(fan_in); their biases (Gemm C, Conv B, or an Add right after the MatMul) use the
///   same bound with the weight's fan_in;
/// - Embedding tables (Gather data): N(0, 1);
/// - normalisation scales 1 and biases 0 (LayerNormalization, BatchNormalization, ...).
/// A parameter no rule recognises falls back on its name: `<prefix>weight` as a Linear weight
/// (fan_in = product of the dimensions after the first), `<prefix>bias` with that weight's fan_in.
public enum ParameterInitialisation {
    public enum Role: Equatable {
        case weight(fanIn: Int), bias(fanIn: Int), embedding, normScale, normBias

        public var description: String {
            switch self {
            case .weight(let f): return "weight U(±1/sqrt(\(f)))"
            case .bias(let f): return "bias U(±1/sqrt(\(f)))"
            case .embedding: return "embedding N(0,1)"
            case .normScale: return "norm scale 1"
            case .normBias: return "norm bias 0"
            }
        }
    }

    /// The initialised state and a one-line description of what each parameter got.
    public static func pytorchDefaults(for gradientGraph: Model, seed: UInt64) throws -> (CheckpointState, String) {
        let graph = gradientGraph.graph
        let outputs = Set(graph.outputs.map(\.name))
        var shapes: [(String, [Int])] = []
        for info in graph.inputs where outputs.contains(info.name + "_grad") {
            guard case .tensor(let dtype, let dims?)? = info.type else {
                throw OnnxTrainError.invalidModel("parameter input '\(info.name)' has no declared shape to initialise from; give --params")
            }
            let shape = try dims.map { d -> Int in
                guard case .value(let v) = d, v >= 0 else {
                    throw OnnxTrainError.invalidModel("parameter input '\(info.name)' has a symbolic dimension; give --params")
                }
                return v
            }
            guard (dtype ?? .float32) == .float32 else { throw OnnxTrainError.unsupported("cannot initialise tensor(\(dtype!)) parameter '\(info.name)'; give --params") }
            shapes.append((info.name, shape))
        }
        guard !shapes.isEmpty else { throw OnnxTrainError.invalidModel("no graph input has a '<name>_grad' output: nothing to initialise") }
        let shapeOf = Dictionary(shapes, uniquingKeysWith: { a, _ in a })
        let roles = Dictionary(shapes.map { ($0.0, role(of: $0.0, shape: $0.1, graph: graph, shapes: shapeOf)) }, uniquingKeysWith: { a, _ in a })

        var random = RandomGenerator(seed: seed)
        var tensors: [(String, Tensor)] = []
        for (name, shape) in shapes {
            let count = Tensor.elementCount(shape)
            let values: [Float]
            switch roles[name]! {
            case .weight(let fan), .bias(let fan):
                let bound = 1 / Double(max(fan, 1)).squareRoot()
                values = (0..<count).map { _ in Float((random.nextDouble() * 2 - 1) * bound) }
            case .embedding:
                // Box-Muller: two uniforms give one standard normal (1 - u keeps log away from 0).
                values = (0..<count).map { _ in
                    let u = 1 - random.nextDouble(), v = random.nextDouble()
                    return Float((-2 * log(u)).squareRoot() * cos(2 * Double.pi * v))
                }
            case .normScale: values = [Float](repeating: 1, count: count)
            case .normBias: values = [Float](repeating: 0, count: count)
            }
            tensors.append((name, Tensor(shape: shape, scalars: values)))
        }
        let text = shapes.map { "\($0.0) \(roles[$0.0]!.description)" }.joined(separator: ", ")
        return (try CheckpointState(trainable: tensors), text)
    }

    static let norms: Set<String> = ["LayerNormalization", "BatchNormalization", "InstanceNormalization", "GroupNormalization",
                                     "SimplifiedLayerNormalization", "SkipLayerNormalization", "RMSNormalization"]

    static func role(of name: String, shape: [Int], graph: Graph, shapes: [String: [Int]]) -> Role {
        func fanIn(weight: String, node: Node) -> Int? {
            guard let w = shapes[weight] else { return nil }
            switch node.opType {
            case "Gemm":
                var transB = 0
                if case .int(let v)? = node.attributes["transB"] { transB = v }
                return w.count == 2 ? (transB != 0 ? w[1] : w[0]) : nil
            case "MatMul": return w.count == 2 ? w[0] : nil
            case "Conv", "ConvTranspose": return w.count >= 2 ? w.dropFirst().reduce(1, *) : nil
            default: return nil
            }
        }
        var producer: [String: Node] = [:]
        for node in graph.nodes { for o in node.outputs where !o.isEmpty { producer[o] = node } }
        for node in graph.nodes {
            for (i, input) in node.inputs.enumerated() where input == name {
                switch (node.opType, i) {
                case ("Gather", 0): return .embedding
                case (let op, 1) where norms.contains(op): return .normScale
                case (let op, 2) where norms.contains(op): return .normBias
                case ("Gemm", 1), ("MatMul", 1), ("Conv", 1):
                    if let f = fanIn(weight: name, node: node) { return .weight(fanIn: f) }
                case ("Gemm", 2), ("Conv", 2):
                    if let f = fanIn(weight: node.inputs[1], node: node) { return .bias(fanIn: f) }
                case ("Add", _) where shape.count == 1:
                    // A Linear layer exported as MatMul then Add of the bias.
                    let other = node.inputs[1 - min(i, 1)]
                    if let m = producer[other], m.opType == "MatMul", m.inputs.count > 1, let f = fanIn(weight: m.inputs[1], node: m) {
                        return .bias(fanIn: f)
                    }
                default: break
                }
            }
        }
        if shape.count < 2, name.hasSuffix("bias"), let w = shapes[String(name.dropLast(4)) + "weight"], w.count >= 2 {
            return .bias(fanIn: w.dropFirst().reduce(1, *))
        }
        return shape.count >= 2 ? .weight(fanIn: shape.dropFirst().reduce(1, *)) : .bias(fanIn: max(shape.first ?? 1, 1))
    }
}
