/// How to differentiate one op: given the node and the gradients of its outputs, emit nodes that
/// compute the gradients of its inputs and return their names (nil for an input that needs none
/// or whose gradient is zero). Declared with `OpRegistry.registerGradient`, beside the op's kernel.
public typealias GradientRule = (GradientContext) throws -> [String?]

/// What a gradient rule sees: the forward node, its output gradients, which inputs need a
/// gradient, static type information, and a builder that emits nodes under fresh names.
///
/// Rules emit ONNX and com.microsoft ops that this runtime (and onnxruntime-training) runs, as
/// onnxruntime's `gradient_builder.cc` does where it has a rule.
public final class GradientContext {
    public internal(set) var node: Node
    /// Index of the forward node in the graph being built.
    var nodeIndex = 0
    /// The model's opset for the node's domain.
    public internal(set) var opset: Int
    var outputGradients: [String?] = []
    var required: [Bool] = []
    var builder: GraphBuilder
    var types: TypeInference
    /// `Shape` outputs already emitted, by value: one Shape node per value however many rules ask.
    private var shapes: [String: String] = [:]
    let opsets: [String: Int]

    init(builder: GraphBuilder, types: TypeInference, opsets: [String: Int]) {
        self.builder = builder
        self.types = types
        self.opsets = opsets
        node = Node(opType: "")
        opset = 0
    }

    // MARK: The node

    /// Input `i` of the forward node.
    public func input(_ i: Int) -> String { i < node.inputs.count ? node.inputs[i] : "" }
    public func hasInput(_ i: Int) -> Bool { i < node.inputs.count && !node.inputs[i].isEmpty }
    /// Output `i` of the forward node.
    public func output(_ i: Int) -> String { i < node.outputs.count ? node.outputs[i] : "" }
    /// Output `i` of the forward node, added to it when the exporter left it off (MaxPool's
    /// indices, LayerNormalization's mean and inverse standard deviation, Dropout's mask).
    public func forwardOutput(_ i: Int, info: TensorInfo? = nil) -> String {
        let name = builder.ensureOutput(node: nodeIndex, position: i, base: "\(output(0))_\(i)")
        node = builder.graph.nodes[nodeIndex]
        if let info, types.info[name] == nil { types.info[name] = info }
        return name
    }

    /// Replaces the forward node's op by a training variant that also returns what its gradient
    /// needs (LSTM -> com.microsoft LSTMTraining); inputs and existing outputs stay.
    public func rewriteForward(opType: String, domain: String, attributes: [String: Attribute]) {
        builder.update { graph in
            graph.nodes[nodeIndex].opType = opType
            graph.nodes[nodeIndex].domain = canonicalDomain(domain)
            graph.nodes[nodeIndex].attributes = attributes
        }
        node = builder.graph.nodes[nodeIndex]
    }

    /// The gradient flowing into output `i`, or nil when none does (the output does not reach the loss).
    public func dY(_ i: Int = 0) -> String? { i < outputGradients.count ? outputGradients[i] : nil }
    /// The gradient of output `i`; a rule that needs it throws when it is absent.
    public func requiredDY(_ i: Int = 0) throws -> String {
        guard let g = dY(i) else { throw GradientError("output \(i) ('\(output(i))') has no gradient, but the rule needs one") }
        return g
    }
    /// Whether input `i` needs a gradient.
    public func needs(_ i: Int) -> Bool { i < required.count && required[i] }
    public var attributes: [String: Attribute] { node.attributes }
    public func info(_ name: String) -> TensorInfo? { types[name] }
    public func dtype(_ name: String) -> DType? { types[name]?.dtype }
    public func staticShape(_ name: String) -> [Int]? { types[name]?.staticShape }
    public func shapeInfo(_ name: String) -> [Dim]? { types[name]?.shape }
    public func rank(_ name: String) -> Int? { types[name]?.rank }

    // MARK: Emitting

    private var prefix: String { (node.name.isEmpty ? node.opType : node.name) + "_Grad/" }

    /// Emits a node (named after the forward node) and returns its outputs.
    @discardableResult
    public func emit(_ opType: String, domain: String = "", _ inputs: [String], outputs: Int = 1,
                     attributes: [String: Attribute] = [:], names: [String]? = nil) -> [String] {
        let base = prefix + opType
        let outs = builder.add(opType, domain: domain, name: base, inputs: inputs, outputs: outputs,
                               outputNames: names ?? (0..<outputs).map { "\(base)_\($0)" }, attributes: attributes)
        for o in outs { types.info[o] = nil }
        return outs
    }

    /// Emits a one-output node and returns its output.
    public func op(_ opType: String, domain: String = "", _ inputs: [String], attributes: [String: Attribute] = [:]) -> String {
        emit(opType, domain: domain, inputs, attributes: attributes)[0]
    }

    /// A com.microsoft op.
    public func ms(_ opType: String, _ inputs: [String], outputs: Int = 1, attributes: [String: Attribute] = [:]) -> [String] {
        emit(opType, domain: "com.microsoft", inputs, outputs: outputs, attributes: attributes)
    }

    /// A constant initializer.
    public func constant(_ tensor: Tensor, name: String = "const") -> String {
        builder.constant(tensor, name: prefix + name)
    }

    /// An int64 1-D constant.
    public func ints(_ values: [Int], name: String = "axes") -> String {
        constant(Tensor(shape: [values.count], scalars: values.map(Int64.init)), name: name)
    }

    /// A scalar of `like`'s element type (float types; float32 when unknown).
    public func scalar(_ value: Double, like: String, name: String = "scalar") throws -> String {
        constant(try GradientContext.scalarTensor(value, dtype: dtype(like) ?? .float32, shape: []), name: name)
    }

    static func scalarTensor(_ value: Double, dtype: DType, shape: [Int]) throws -> Tensor {
        guard dtype == .float32 || dtype == .float64 || dtype == .float16 || dtype == .bfloat16 else {
            throw GradientError("a gradient constant of type \(dtype) is not supported")
        }
        return try Tensor(dtype: dtype, shape: shape, doubles: Array(repeating: value, count: Tensor.elementCount(shape)))
    }

    /// Writes a value_info for `name` with `like`'s element type and shape. onnxruntime's
    /// MaxPoolGrad and AveragePoolGrad take their output shape from the graph's static shapes
    /// (its kernels dereference it while the session is built), so those outputs must declare it.
    public func declare(_ name: String, like: String) {
        guard let info = types[like] else { return }
        builder.update { $0.valueInfo.append(ValueInfo(name: name, type: info.valueType)) }
        types.info[name] = info
    }

    /// `Shape(name)`, emitted once per value.
    public func shape(of name: String) -> String {
        if let s = shapes[name] { return s }
        let s = op("Shape", [name])
        shapes[name] = s
        return s
    }

    /// `grad` (of shape `gradShape`, when known) summed over the axes along which `input` was
    /// broadcast, and reshaped to `input`'s shape. Static shapes give fixed axes (or nothing at
    /// all); otherwise the axes come from BroadcastGradientArgs at run time.
    public func reduceToShape(_ grad: String, gradShape: [Dim]?, of input: String) -> String {
        let g = gradShape, x = types[input]?.shape
        if let g, let x, g == x, !x.contains(.unknown) { return grad }
        if let g, let x, x.count <= g.count, !g.contains(.unknown), !x.contains(.unknown) {
            // Right-align; an axis is reduced where x has 1 (or nothing) and the gradient does not.
            let lead = g.count - x.count
            var axes: [Int] = Array(0..<lead)
            var certain = true
            for (k, d) in x.enumerated() where d != g[lead + k] {
                if d == .value(1) { axes.append(lead + k) } else { certain = false }
            }
            if certain {
                if axes.isEmpty { return grad }
                let summed = reduceSum(grad, axes: axes, keepdims: true)
                if lead == 0 { return summed }
                if let s = staticShape(input) { return op("Reshape", [summed, ints(s, name: "shape")]) }
                return op("Reshape", [summed, shape(of: input)])
            }
        }
        let axes = ms("BroadcastGradientArgs", [shape(of: input), op("Shape", [grad])], outputs: 2)[0]
        return op("Reshape", [reduceSum(grad, axesValue: axes, keepdims: true), shape(of: input)])
    }

    /// The model's ai.onnx opset: it decides whether axes travel as attributes or inputs.
    public var onnxOpset: Int { opsets[""] ?? 17 }

    /// ReduceSum over fixed axes, in the form the model's opset takes.
    public func reduceSum(_ x: String, axes: [Int], keepdims: Bool) -> String {
        if onnxOpset >= 13 { return op("ReduceSum", [x, ints(axes)], attributes: ["keepdims": .int(keepdims ? 1 : 0)]) }
        return op("ReduceSum", [x], attributes: ["axes": .ints(axes), "keepdims": .int(keepdims ? 1 : 0)])
    }

    /// ReduceMean over fixed axes with keepdims, in the form the model's opset takes (axes became
    /// an input at opset 18).
    public func reduceMean(_ x: String, axes: [Int]) -> String {
        if onnxOpset >= 18 { return op("ReduceMean", [x, ints(axes)], attributes: ["keepdims": .int(1)]) }
        return op("ReduceMean", [x], attributes: ["axes": .ints(axes), "keepdims": .int(1)])
    }

    /// ReduceSum over axes computed at run time (ReduceSumTraining before opset 13); empty axes
    /// leave the input unchanged.
    public func reduceSum(_ x: String, axesValue: String, keepdims: Bool) -> String {
        let attributes: [String: Attribute] = ["keepdims": .int(keepdims ? 1 : 0), "noop_with_empty_axes": .int(1)]
        if onnxOpset >= 13 { return op("ReduceSum", [x, axesValue], attributes: attributes) }
        return ms("ReduceSumTraining", [x, axesValue], attributes: attributes)[0]
    }

    /// Unsqueeze at fixed axes, in the form the model's opset takes.
    public func unsqueeze(_ x: String, axes: [Int]) -> String {
        if onnxOpset >= 13 { return op("Unsqueeze", [x, ints(axes)]) }
        return op("Unsqueeze", [x], attributes: ["axes": .ints(axes)])
    }

    /// `Reshape(x, shape of like)`, with a constant shape when it is static.
    public func reshape(_ x: String, like: String) -> String {
        if let s = staticShape(like) { return op("Reshape", [x, ints(s, name: "shape")]) }
        return op("Reshape", [x, shape(of: like)])
    }

    /// The forward node's input `i` as a constant tensor, when it is one (an initializer that
    /// callers cannot override, or a Constant node's value).
    public func constantInput(_ i: Int) -> Tensor? {
        guard hasInput(i) else { return nil }
        let name = input(i)
        let graph = builder.graph
        if let t = graph.initializers[name], !graph.inputs.contains(where: { $0.name == name }) { return t }
        if let producer = graph.nodes.first(where: { $0.outputs.contains(name) }), producer.opType == "Constant" {
            return TypeInference.constantValue(producer)
        }
        return nil
    }

    /// `grad` with the forward output's shape reduced to input `i`'s shape (elementwise ops).
    public func reduced(_ grad: String, toInput i: Int) -> String {
        reduceToShape(grad, gradShape: shapeInfo(output(0)), of: input(i))
    }
}

/// A gradient rule's complaint; the autodiff adds the node and the parameter it was differentiating for.
public struct GradientError: Error {
    public let message: String
    public init(_ message: String) { self.message = message }
}

extension GradientContext {
    /// The floating-point element type of `name` (float32 when unknown).
    func floatType(_ name: String) throws -> DType {
        let d = dtype(name) ?? .float32
        guard d.isFloatingPoint else { throw GradientError("'\(name)' is tensor(\(d)), not a floating-point tensor") }
        return d
    }
}
