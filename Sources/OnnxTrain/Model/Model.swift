/// A loaded ONNX model as plain Swift values; no protobuf-c memory outlives loading.
public struct Model {
    public var irVersion: Int = 0
    public var producerName: String = ""
    public var producerVersion: String = ""
    public var domain: String = ""
    public var modelVersion: Int = 0
    public var docString: String = ""
    /// Opset version per domain; the default domain is stored under "" (also for "ai.onnx").
    public var opsetImports: [String: Int] = [:]
    public var graph: Graph
    public var functions: [Function] = []
    public var metadata: [String: String] = [:]
    /// The file the model came from, when it came from one (for error messages and external data).
    public var path: String?

    public init(graph: Graph) { self.graph = graph }

    /// The opset version of `domain` ("" and "ai.onnx" are the same domain).
    public func opset(_ domain: String) -> Int? { opsetImports[canonicalDomain(domain)] }
}

/// "" and "ai.onnx" name the same domain; we store it as "".
@inline(__always)
public func canonicalDomain(_ domain: String) -> String { domain == "ai.onnx" ? "" : domain }

/// A computation graph: nodes, named inputs and outputs, and constant initializers.
public struct Graph {
    public var name: String = ""
    public var nodes: [Node] = []
    public var inputs: [ValueInfo] = []
    public var outputs: [ValueInfo] = []
    public var valueInfo: [ValueInfo] = []
    /// Initializer names in file order (training artifacts rely on this order).
    public var initializerNames: [String] = []
    public var initializers: [String: Tensor] = [:]
    public var docString: String = ""

    public init() {}

    /// Graph inputs that are not initializers: what a caller must feed.
    public var feedInputs: [ValueInfo] { inputs.filter { initializers[$0.name] == nil } }

    public mutating func setInitializer(_ name: String, _ tensor: Tensor) {
        if initializers.updateValue(tensor, forKey: name) == nil { initializerNames.append(name) }
    }
}

/// One operator application.
public struct Node {
    public var name: String = ""
    public var opType: String
    public var domain: String = ""
    /// Input names; "" marks an omitted optional input.
    public var inputs: [String] = []
    public var outputs: [String] = []
    public var attributes: [String: Attribute] = [:]
    /// Attributes of a function body that refer to an attribute of the calling node.
    public var attributeRefs: [String: String] = [:]
    public var docString: String = ""

    public init(opType: String, domain: String = "", name: String = "", inputs: [String] = [],
                outputs: [String] = [], attributes: [String: Attribute] = [:]) {
        self.opType = opType
        self.domain = canonicalDomain(domain)
        self.name = name
        self.inputs = inputs
        self.outputs = outputs
        self.attributes = attributes
    }

    /// `node 'name' (OpType, domain)`, the way every error names a node.
    public var label: String {
        let d = domain.isEmpty ? "ai.onnx" : domain
        return name.isEmpty ? "node (\(opType), \(d)) -> \(outputs.first ?? "?")" : "node '\(name)' (\(opType), \(d))"
    }
}

/// An attribute value.
public indirect enum Attribute {
    case float(Float)
    case int(Int)
    case string(String)
    case tensor(Tensor)
    case graph(Graph)
    case sparseTensor(SparseTensor)
    case type(ValueType)
    case floats([Float])
    case ints([Int])
    case strings([String])
    case tensors([Tensor])
    case graphs([Graph])
    case sparseTensors([SparseTensor])
    case types([ValueType])
}

/// A COO sparse tensor (values at indices, zeros elsewhere).
public struct SparseTensor {
    public var values: Tensor
    /// Either [NNZ] flat indices or [NNZ, rank] coordinates.
    public var indices: Tensor
    public var shape: [Int]

    /// The dense equivalent.
    public func densified() throws -> Tensor {
        // Everything here comes from a file: check counts, coordinates and sizes before use.
        var dense = try Tensor(checkedZeros: values.dtype, shape: shape, label: "sparse tensor")
        guard let idx = indices.intValues() else { throw OnnxTrainError.invalidModel("sparse tensor indices must be integers") }
        let nnz = values.count
        let rank = shape.count
        let coordinates = indices.rank == 2
        guard indices.rank == 1 && idx.count == nnz || coordinates && indices.shape == [nnz, rank] else {
            throw OnnxTrainError.invalidModel("sparse tensor indices \(indices.shape) do not fit \(nnz) values of rank \(rank) (expected [\(nnz)] or [\(nnz), \(rank)])")
        }
        var strides = [Int](repeating: 1, count: rank)
        if rank > 1 { for i in stride(from: rank - 2, through: 0, by: -1) { strides[i] = strides[i + 1] * shape[i + 1] } }
        let size = values.dtype.byteSize
        let total = dense.count
        var flat = [Int](repeating: 0, count: nnz)
        for k in 0..<nnz {
            if !coordinates { flat[k] = idx[k] } else {
                var f = 0
                for d in 0..<rank {
                    let c = idx[k * rank + d]
                    guard c >= 0 && c < shape[d] else {
                        throw OnnxTrainError.invalidModel("sparse tensor coordinate \(c) out of range for dimension \(d) of shape \(shape)")
                    }
                    f += c * strides[d]
                }
                flat[k] = f
            }
            guard flat[k] >= 0 && flat[k] < total else { throw OnnxTrainError.invalidModel("sparse tensor index \(flat[k]) out of range for shape \(shape)") }
        }
        if values.dtype == .string {
            var s = dense.strings
            for k in 0..<nnz { s[flat[k]] = values.strings[k] }
            return Tensor(shape: shape, strings: s)
        }
        let src = values.storage.bytes
        dense.withUnsafeMutableRawBytes { dst in
            for k in 0..<nnz { (dst.baseAddress! + flat[k] * size).copyMemory(from: src + k * size, byteCount: size) }
        }
        return dense
    }
}

/// A named, typed graph input, output or intermediate.
public struct ValueInfo {
    public var name: String
    public var type: ValueType?
    public var docString: String = ""
    public init(name: String, type: ValueType?) {
        self.name = name
        self.type = type
    }
}

/// One dimension of a declared shape.
public enum Dim: Equatable, CustomStringConvertible {
    case value(Int)
    case symbol(String)
    case unknown

    public var description: String {
        switch self {
        case .value(let v): return String(v)
        case .symbol(let s): return s
        case .unknown: return "?"
        }
    }
}

/// The declared type of a value.
public indirect enum ValueType: CustomStringConvertible {
    /// `shape` nil means the rank is unknown.
    case tensor(DType?, shape: [Dim]?)
    case sparseTensor(DType?, shape: [Dim]?)
    case sequence(ValueType?)
    case optional(ValueType?)
    case map(key: DType?, value: ValueType?)

    public var description: String {
        switch self {
        case .tensor(let d, let s):
            let shape = s.map { "[" + $0.map(\.description).joined(separator: ", ") + "]" } ?? "[...]"
            return "tensor(\(d.map(\.description) ?? "?")) \(shape)"
        case .sparseTensor(let d, let s):
            return "sparse_tensor(\(d.map(\.description) ?? "?")) \(s.map { "\($0)" } ?? "")"
        case .sequence(let e): return "sequence(\(e.map(\.description) ?? "?"))"
        case .optional(let e): return "optional(\(e.map(\.description) ?? "?"))"
        case .map(let k, let v): return "map(\(k.map(\.description) ?? "?"), \(v.map(\.description) ?? "?"))"
        }
    }
}

/// A model-local function (FunctionProto): a named subgraph that nodes call like an op.
public struct Function {
    public var name: String
    public var domain: String
    public var overload: String = ""
    public var inputs: [String]
    public var outputs: [String]
    public var attributeNames: [String]
    /// Defaults for attributes (ONNX's `attribute_proto`).
    public var attributeDefaults: [String: Attribute] = [:]
    public var nodes: [Node]
    public var opsetImports: [String: Int]
    public var valueInfo: [ValueInfo] = []
}
