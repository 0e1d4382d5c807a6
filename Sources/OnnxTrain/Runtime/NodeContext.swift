/// What a kernel factory sees of its node: attributes (with typed accessors), the opset in force
/// for the node's domain, and a way to compile subgraph attributes.
public struct NodeContext {
    public let node: Node
    /// The model's opset version for the node's domain.
    public let opset: Int
    /// The since-version of the kernel that was chosen.
    public let sinceVersion: Int
    let compileSubgraph: (Graph) throws -> Subgraph
    /// The type the graph declares for each node output (graph outputs and value_info), if any.
    var declaredOutputTypes: [ValueType?] = []
    /// Every node of the graph this node belongs to (the preview-training Gradient op differentiates
    /// part of its own graph).
    var enclosingNodes: [Node] = []
    /// Per node input, whether it is constant for the life of the compiled graph: an initializer
    /// that is not a graph input, in a graph compiled with `constantInitializers` (an inference
    /// session's, whose initializers no run changes; never a training graph's, whose weights are
    /// fed). A kernel may keep a form it derives from such an input (pre-transformed weights),
    /// within `cacheBudget`, and should still check on each run that the input is the tensor it
    /// derived the form from.
    var constantInputs: [Bool] = []
    /// The budget for the forms the graph's kernels keep (nil where no input is constant).
    public internal(set) var cacheBudget: KernelCacheBudget?

    /// Whether input `index` is a constant of the compiled graph (see `constantInputs`).
    public func isConstantInput(_ index: Int) -> Bool { index < constantInputs.count && constantInputs[index] }

    /// Made by the executor: the handle of input `index` when this node alone reads that constant.
    var takeRelease: ((Int) -> ConstantRelease?)? = nil

    /// The handle through which the kernel may drop constant input `index` once it has consumed
    /// it (`ConstantRelease`: a weight packed into a form that serves every later call); nil
    /// where the input is not a constant this node alone reads. Asked in the kernel's factory,
    /// and only by a kernel that keeps the contract: taking it removes the initializer from the
    /// session's copy of a model read from a file, released or not.
    public func releasableConstant(_ index: Int) -> ConstantRelease? { isConstantInput(index) ? takeRelease?(index) : nil }

    /// The declared shape of output `index`, when the graph states one (a dim may be symbolic).
    public func declaredOutputShape(_ index: Int) -> [Dim]? {
        guard index < declaredOutputTypes.count, case .tensor(_, let shape)? = declaredOutputTypes[index] else { return nil }
        return shape
    }

    public var attributes: [String: Attribute] { node.attributes }
    public var inputCount: Int { node.inputs.count }
    public var outputCount: Int { node.outputs.count }

    /// Whether input `index` is present (named and not "").
    public func hasInput(_ index: Int) -> Bool { index < node.inputs.count && !node.inputs[index].isEmpty }
    /// Whether output `index` is requested (named and not "").
    public func hasOutput(_ index: Int) -> Bool { index < node.outputs.count && !node.outputs[index].isEmpty }

    public func has(_ name: String) -> Bool { node.attributes[name] != nil }

    private func mismatch(_ name: String, _ expected: String) -> KernelError {
        KernelError("attribute '\(name)' must be \(expected)")
    }

    public func int(_ name: String) throws -> Int? {
        guard let a = node.attributes[name] else { return nil }
        switch a {
        case .int(let v): return v
        case .float(let f) where f == f.rounded(): return Int(f)
        default: throw mismatch(name, "an int")
        }
    }
    public func int(_ name: String, default value: Int) throws -> Int { try int(name) ?? value }
    public func requiredInt(_ name: String) throws -> Int {
        guard let v = try int(name) else { throw KernelError("attribute '\(name)' is required") }
        return v
    }

    public func float(_ name: String) throws -> Float? {
        guard let a = node.attributes[name] else { return nil }
        switch a {
        case .float(let v): return v
        case .int(let v): return Float(v)
        default: throw mismatch(name, "a float")
        }
    }
    public func float(_ name: String, default value: Float) throws -> Float { try float(name) ?? value }

    public func string(_ name: String) throws -> String? {
        guard let a = node.attributes[name] else { return nil }
        guard case .string(let v) = a else { throw mismatch(name, "a string") }
        return v
    }
    public func string(_ name: String, default value: String) throws -> String { try string(name) ?? value }

    public func ints(_ name: String) throws -> [Int]? {
        guard let a = node.attributes[name] else { return nil }
        switch a {
        case .ints(let v): return v
        case .int(let v): return [v]
        default: throw mismatch(name, "a list of ints")
        }
    }
    public func ints(_ name: String, default value: [Int]) throws -> [Int] { try ints(name) ?? value }

    public func floats(_ name: String) throws -> [Float]? {
        guard let a = node.attributes[name] else { return nil }
        switch a {
        case .floats(let v): return v
        case .float(let v): return [v]
        case .ints(let v): return v.map { Float($0) }
        default: throw mismatch(name, "a list of floats")
        }
    }

    public func strings(_ name: String) throws -> [String]? {
        guard let a = node.attributes[name] else { return nil }
        switch a {
        case .strings(let v): return v
        case .string(let v): return [v]
        default: throw mismatch(name, "a list of strings")
        }
    }

    public func tensor(_ name: String) throws -> Tensor? {
        guard let a = node.attributes[name] else { return nil }
        switch a {
        case .tensor(let t): return t
        case .sparseTensor(let s): return try s.densified()
        default: throw mismatch(name, "a tensor")
        }
    }

    public func graph(_ name: String) throws -> Graph? {
        guard let a = node.attributes[name] else { return nil }
        guard case .graph(let g) = a else { throw mismatch(name, "a graph") }
        return g
    }

    /// Compiles the graph attribute `name` into a runnable subgraph (If/Loop/Scan bodies).
    public func subgraph(_ name: String) throws -> Subgraph {
        guard let g = try graph(name) else { throw KernelError("graph attribute '\(name)' is required") }
        return try compileSubgraph(g)
    }
}
