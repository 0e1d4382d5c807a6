import OnnxTrain

/// A tensor of the Swift model API: an eager value plus the ONNX node that made it.
///
/// Every operation on `NNTensor`s runs its ONNX kernel at once (so `value` can be printed while
/// debugging) and records the node, its attributes and its inputs. The recorded nodes form the
/// graph that `backward()` differentiates with `Autodiff`, and that `Module.exportONNX` writes.
///
/// Like PyTorch's tensors, `NNTensor` is a reference: a parameter is the same object in its
/// module, in every graph that reads it and in its optimizer, and an optimizer step updates it
/// where it lies. Operators never throw: an operation whose inputs do not fit (shapes that do not
/// broadcast, a bad axis) yields a *failed* tensor whose `error` names the op, and everything
/// computed from it fails the same way; `backward()`, `tensor()` and `item()` throw that error.
public final class NNTensor {
    /// What a leaf holds, which decides where it goes in a graph and in a `Module`'s state.
    public enum Role: Sendable {
        /// Data fed to a model, or a value computed outside the graph (`detach()`).
        case data
        /// A module's trainable weight: in `parameters()` and `stateDict()`.
        case parameter
        /// Module state that is not trained (BatchNorm's running statistics): in `stateDict()` only.
        case buffer
        /// A value the graph itself needs (a shape, an axis list, a scalar factor): written into
        /// the graph as an initializer, and part of the graph's identity in the session cache.
        case constant
    }

    /// The current value (an empty float tensor when the tensor failed).
    public internal(set) var value: Tensor
    /// The node that computed this tensor and which of its outputs it is; nil for leaves.
    let producer: (record: NodeRecord, output: Int)?
    /// The role of a leaf (`.data` for computed tensors).
    public let role: Role
    /// Whether gradients flow back to this tensor: set for parameters, propagated through
    /// differentiable operations on floating-point values.
    public var requiresGrad: Bool
    /// The gradient accumulated by `backward()` (PyTorch's `.grad`); nil until a backward
    /// pass reaches this leaf, and after `zeroGrad()`.
    public var grad: Tensor?
    /// Why the operation producing this tensor failed, or nil.
    public let error: OnnxTrainError?

    /// A leaf holding `tensor` in `role`; parameters require gradients.
    public init(_ tensor: Tensor, role: Role = .data, requiresGrad: Bool? = nil) {
        value = tensor
        producer = nil
        self.role = role
        self.requiresGrad = requiresGrad ?? (role == .parameter)
        error = nil
    }

    /// A float32 data tensor from `scalars` in row-major order (a failed tensor when their
    /// count is not the product of `shape`).
    public convenience init(_ scalars: [Float], shape: [Int]) {
        guard let t = NNTensor.checked(shape, scalars) else {
            self.init(failure: OnnxTrainError.invalidInput("\(scalars.count) values cannot fill shape \(shape)"))
            return
        }
        self.init(t)
    }

    /// An int64 data tensor (class labels, token ids) from `scalars`; array literals of numbers
    /// make float32 tensors, `[Int64]` values this one.
    @_disfavoredOverload
    public convenience init(_ scalars: [Int64], shape: [Int]) {
        guard let t = NNTensor.checked(shape, scalars) else {
            self.init(failure: OnnxTrainError.invalidInput("\(scalars.count) values cannot fill shape \(shape)"))
            return
        }
        self.init(t)
    }

    /// `Tensor(shape:scalars:)` when the counts agree and no dimension is negative.
    private static func checked<T: TensorElement>(_ shape: [Int], _ scalars: [T]) -> Tensor? {
        guard shape.allSatisfy({ $0 >= 0 }), Tensor.elementCount(shape) == scalars.count else { return nil }
        return Tensor(shape: shape, scalars: scalars)
    }

    /// A trainable parameter holding `tensor` (PyTorch's `nn.Parameter`).
    public static func parameter(_ tensor: Tensor) -> NNTensor { NNTensor(tensor, role: .parameter) }

    /// Module state that is saved but not trained (PyTorch's `register_buffer`).
    public static func buffer(_ tensor: Tensor) -> NNTensor { NNTensor(tensor, role: .buffer, requiresGrad: false) }

    init(value: Tensor, producer: (NodeRecord, Int), requiresGrad: Bool) {
        self.value = value
        self.producer = producer
        role = .data
        self.requiresGrad = requiresGrad
        error = nil
    }

    init(failure: OnnxTrainError) {
        value = Tensor(zeros: .float32, shape: [0])
        producer = nil
        role = .data
        requiresGrad = false
        error = failure
    }

    /// The shape of the value.
    public var shape: [Int] { value.shape }
    /// The element type of the value.
    public var dtype: DType { value.dtype }
    /// The number of dimensions.
    public var rank: Int { value.rank }
    /// The size of dimension `dim` (negative counts from the end), as PyTorch's `size(dim)`.
    public func size(_ dim: Int) -> Int {
        let d = dim < 0 ? dim + rank : dim
        return d >= 0 && d < rank ? shape[d] : 0
    }

    /// The value; throws the error of the operation that failed, if one did.
    public func tensor() throws -> Tensor {
        if let error { throw error }
        return value
    }

    /// The elements as Float (float32 tensors; other types are converted through Double).
    public func scalars() throws -> [Float] {
        let t = try tensor()
        if t.dtype == .float32 { return t.scalars(as: Float.self) }
        return (0..<t.count).map { Float(t.scalarDouble(at: $0) ?? .nan) }
    }

    /// The one element of a one-element tensor (PyTorch's `item()`).
    public func item() throws -> Float {
        let t = try tensor()
        guard t.count == 1, let v = t.scalarDouble() else {
            throw OnnxTrainError.invalidInput("item(): the tensor has shape \(t.shape), not one element")
        }
        return Float(v)
    }

    /// A leaf with the same value that records nothing and takes no gradient (PyTorch's `detach()`).
    public func detach() -> NNTensor {
        if let error { return NNTensor(failure: error) }
        return NNTensor(value, role: .data, requiresGrad: false)
    }

    /// Replaces a leaf's value (loading weights, optimizer updates); same dtype and shape.
    /// - Throws: `OnnxTrainError.invalidInput` when the tensor does not fit or this is not a leaf.
    public func assign(_ tensor: Tensor, name: String? = nil) throws {
        let label = name.map { "'\($0)'" } ?? "tensor"
        guard producer == nil else { throw OnnxTrainError.invalidInput("\(label) is computed by a node: only leaves can be assigned") }
        guard tensor.dtype == value.dtype, tensor.shape == value.shape else {
            throw OnnxTrainError.invalidInput("\(label) is \(value), cannot take \(tensor)")
        }
        value = tensor.dtype == .string ? tensor : tensor.copied()
    }

    /// Sets the value without checks, for optimizers and BatchNorm's running statistics.
    func setValue(_ tensor: Tensor) { value = tensor }
}

extension NNTensor: CustomStringConvertible {
    /// `NNTensor(float) [2, 3] [0.1, 0.2, ...]`, or the error of a failed tensor.
    public var description: String {
        if let error { return "NNTensor(failed: \(error.message))" }
        let shown = min(value.count, 8)
        let items = (0..<shown).map { i in value.scalarDouble(at: i).map { String(Float($0)) } ?? "?" }
        let more = value.count > shown ? ", ..." : ""
        return "NNTensor(\(value.dtype)) \(value.shape) [\(items.joined(separator: ", "))\(more)]"
    }
}

/// One recorded ONNX node: op, attributes and the tensors it read.
final class NodeRecord {
    let opType: String
    let domain: String
    let attributes: [String: Attribute]
    /// The attributes as a canonical string (part of the graph's identity in the session cache).
    let attributeKey: String
    let inputs: [NNTensor?]
    let outputCount: Int
    /// The eager values of the outputs (shared storage, no copy): `backward()` feeds them to the
    /// gradient graph instead of computing the forward pass a second time.
    var outputValues: [Tensor?] = []

    init(opType: String, domain: String, attributes: [String: Attribute], attributeKey: String, inputs: [NNTensor?], outputCount: Int) {
        self.opType = opType
        self.domain = domain
        self.attributes = attributes
        self.attributeKey = attributeKey
        self.inputs = inputs
        self.outputCount = outputCount
    }
}
