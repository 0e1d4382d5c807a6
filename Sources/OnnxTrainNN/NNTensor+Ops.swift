import OnnxTrain

// Tensor operations, each recorded as the ONNX node(s) PyTorch's exporter would write.

extension NNTensor {
    // MARK: Creation

    /// Zeros of `shape` (float32 unless `dtype` says otherwise).
    public static func zeros(_ shape: [Int], dtype: DType = .float32) -> NNTensor { NNTensor(Tensor(zeros: dtype, shape: shape)) }
    /// Ones of `shape`, float32.
    public static func ones(_ shape: [Int]) -> NNTensor { NNTensor(Init.constant(shape, 1)) }
    /// N(0, 1) draws of `shape` from `NNRandom` (PyTorch's `torch.randn`).
    public static func randn(_ shape: [Int]) -> NNTensor { NNTensor(Init.normal(shape)) }
    /// U[0, 1) draws of `shape` from `NNRandom` (PyTorch's `torch.rand`).
    public static func rand(_ shape: [Int]) -> NNTensor { NNTensor(Tensor(shape: shape, scalars: NNRandom.uniform(Tensor.elementCount(shape), low: 0, high: 1))) }

    // MARK: Shapes

    /// The same elements under `shape`; one entry may be -1 (PyTorch's `view`/`reshape`).
    public func reshape(_ shape: [Int]) -> NNTensor { Eager.op("Reshape", [self, .ints(shape)]) }
    /// `reshape` with the sizes as arguments: `x.view(x.size(0), -1)`.
    public func view(_ shape: Int...) -> NNTensor { reshape(shape) }
    /// `reshape` (PyTorch's `view(list)`).
    public func view(_ shape: [Int]) -> NNTensor { reshape(shape) }

    /// Dimensions `startDim...endDim` merged into one (PyTorch's `flatten`).
    public func flatten(startDim: Int = 0, endDim: Int = -1) -> NNTensor {
        let s = startDim < 0 ? startDim + rank : startDim, e = endDim < 0 ? endDim + rank : endDim
        guard s >= 0, e < rank, s <= e else { return failed("flatten(startDim: \(startDim), endDim: \(endDim)) of shape \(shape)") }
        let merged = shape[s...e].reduce(1, *)
        return reshape(Array(shape[..<s]) + [merged] + Array(shape[(e + 1)...]))
    }

    /// Swaps dimensions `dim0` and `dim1`.
    public func transpose(_ dim0: Int, _ dim1: Int) -> NNTensor {
        var perm = Array(0..<rank)
        let a = dim0 < 0 ? dim0 + rank : dim0, b = dim1 < 0 ? dim1 + rank : dim1
        guard perm.indices.contains(a), perm.indices.contains(b) else { return failed("transpose(\(dim0), \(dim1)) of shape \(shape)") }
        perm.swapAt(a, b)
        return permute(perm)
    }

    /// The dimensions in the order `dims` (PyTorch's `permute`).
    public func permute(_ dims: [Int]) -> NNTensor {
        Eager.op("Transpose", [self], attributes: ["perm": .ints(dims.map { $0 < 0 ? $0 + rank : $0 })])
    }
    /// `permute` with the dimensions as arguments.
    public func permute(_ dims: Int...) -> NNTensor { permute(dims) }

    /// The transpose of a matrix (PyTorch's `t()`).
    public func t() -> NNTensor { transpose(0, 1) }

    /// A new dimension of size 1 at `dim`.
    public func unsqueeze(_ dim: Int) -> NNTensor { Eager.op("Unsqueeze", [self, .ints([dim])]) }

    /// Dimension `dim` (of size 1) removed, or every size-1 dimension when `dim` is nil.
    public func squeeze(_ dim: Int? = nil) -> NNTensor { Eager.op("Squeeze", [self, dim.map { .ints([$0]) }]) }

    /// Broadcast to `shape` (PyTorch's `expand`; -1 keeps a dimension).
    public func expand(_ shape: [Int]) -> NNTensor {
        let offset = shape.count - rank
        let target = shape.enumerated().map { i, s in s == -1 && i >= offset ? self.shape[i - offset] : s }
        return Eager.op("Expand", [self, .ints(target)])
    }

    /// Elements converted to `dtype`.
    public func to(_ dtype: DType) -> NNTensor { Eager.op("Cast", [self], attributes: ["to": .int(Int(dtype.rawValue))]) }

    // MARK: Indexing

    /// Elements `start..<end` (step `step`) of dimension `dim` (PyTorch's `x[:, a:b]`); negative
    /// bounds count from the end.
    public func slice(dim: Int, start: Int = 0, end: Int = Int.max, step: Int = 1) -> NNTensor {
        Eager.op("Slice", [self, .ints([start]), .ints([min(end, Int(Int64.max))]), .ints([dim]), .ints([step])])
    }

    /// Index `index` of dimension `dim`, which disappears (PyTorch's `x[:, i]`).
    public func select(dim: Int, index: Int) -> NNTensor {
        Eager.op("Gather", [self, .constant(Tensor(scalar: Int64(index)))], attributes: ["axis": .int(dim)])
    }

    /// Rows `indices` of dimension `dim` (PyTorch's `index_select`).
    public func indexSelect(dim: Int, _ indices: NNTensor) -> NNTensor {
        Eager.op("Gather", [self, indices], attributes: ["axis": .int(dim)])
    }

    /// `x[i]`: index `i` of the first dimension.
    public subscript(_ index: Int) -> NNTensor { select(dim: 0, index: index) }
    /// `x[a..<b]`: a slice of the first dimension.
    public subscript(_ range: Range<Int>) -> NNTensor { slice(dim: 0, start: range.lowerBound, end: range.upperBound) }
    /// `x[..., a..<b]` written as `x[dim: 1, 2..<5]`: a slice of dimension `dim`.
    public subscript(dim dim: Int, _ range: Range<Int>) -> NNTensor { slice(dim: dim, start: range.lowerBound, end: range.upperBound) }
    /// `x[dim: 1, 3]`: index 3 of dimension 1.
    public subscript(dim dim: Int, _ index: Int) -> NNTensor { select(dim: dim, index: index) }

    // MARK: Joining and splitting

    /// `tensors` joined along `dim` (PyTorch's `torch.cat`).
    public static func cat(_ tensors: [NNTensor], dim: Int = 0) -> NNTensor {
        Eager.op("Concat", tensors, attributes: ["axis": .int(dim)])
    }

    /// `tensors` stacked along a new dimension `dim` (PyTorch's `torch.stack`).
    public static func stack(_ tensors: [NNTensor], dim: Int = 0) -> NNTensor {
        cat(tensors.map { $0.unsqueeze(dim) }, dim: dim)
    }

    /// Pieces of `sizes` along `dim` (PyTorch's `split(list, dim)`).
    public func split(_ sizes: [Int], dim: Int = 0) -> [NNTensor] {
        Eager.apply("Split", [self, .ints(sizes)], attributes: ["axis": .int(dim)], outputs: sizes.count)
    }

    /// Pieces of `size` along `dim`, the last one smaller if needed (PyTorch's `split(int, dim)`).
    public func split(_ size: Int, dim: Int = 0) -> [NNTensor] {
        let n = self.size(dim)
        guard size > 0 else { return [failed("split size \(size) must be positive")] }
        return split(stride(from: 0, to: n, by: size).map { min(size, n - $0) }, dim: dim)
    }

    /// `chunks` pieces of (nearly) equal size along `dim` (PyTorch's `chunk`).
    public func chunk(_ chunks: Int, dim: Int = 0) -> [NNTensor] {
        let n = size(dim)
        return split((n + chunks - 1) / max(chunks, 1), dim: dim)
    }

    // MARK: Reductions

    /// The mean over `dims` (every dimension when nil), dims kept with size 1 when `keepDim`.
    public func mean(_ dims: [Int]? = nil, keepDim: Bool = false) -> NNTensor {
        Eager.op("ReduceMean", [self, dims.map { .ints($0) }], attributes: ["keepdims": .int(keepDim ? 1 : 0)])
    }
    /// The mean over one dimension.
    public func mean(dim: Int, keepDim: Bool = false) -> NNTensor { mean([dim], keepDim: keepDim) }

    /// The sum over `dims` (every dimension when nil).
    public func sum(_ dims: [Int]? = nil, keepDim: Bool = false) -> NNTensor {
        Eager.op("ReduceSum", [self, dims.map { .ints($0) }], attributes: ["keepdims": .int(keepDim ? 1 : 0)])
    }
    /// The sum over one dimension.
    public func sum(dim: Int, keepDim: Bool = false) -> NNTensor { sum([dim], keepDim: keepDim) }

    /// The (biased, PyTorch's `unbiased=False`) variance over `dims`.
    public func variance(_ dims: [Int], keepDim: Bool = false) -> NNTensor {
        let centred = self - mean(dims, keepDim: true)
        return (centred * centred).mean(dims, keepDim: keepDim)
    }

    /// The index of the largest element along `dim` (int64; carries no gradient).
    public func argmax(dim: Int, keepDim: Bool = false) -> NNTensor {
        Eager.op("ArgMax", [self], attributes: ["axis": .int(dim), "keepdims": .int(keepDim ? 1 : 0)], differentiable: false)
    }

    // MARK: Elementwise functions

    /// Softmax along `dim`.
    public func softmax(dim: Int) -> NNTensor { Eager.op("Softmax", [self], attributes: ["axis": .int(dim)]) }
    /// Log-softmax along `dim`.
    public func logSoftmax(dim: Int) -> NNTensor { Eager.op("LogSoftmax", [self], attributes: ["axis": .int(dim)]) }
    /// max(x, 0).
    public func relu() -> NNTensor { Eager.op("Relu", [self]) }
    /// 1 / (1 + exp(-x)).
    public func sigmoid() -> NNTensor { Eager.op("Sigmoid", [self]) }
    /// tanh(x).
    public func tanh() -> NNTensor { Eager.op("Tanh", [self]) }
    /// exp(x).
    public func exp() -> NNTensor { Eager.op("Exp", [self]) }
    /// The natural logarithm.
    public func log() -> NNTensor { Eager.op("Log", [self]) }
    /// The square root.
    public func sqrt() -> NNTensor { Eager.op("Sqrt", [self]) }
    /// |x|.
    public func abs() -> NNTensor { Eager.op("Abs", [self]) }
    /// x to the power `exponent`.
    public func pow(_ exponent: Float) -> NNTensor {
        exponent == 2 ? self * self : Eager.op("Pow", [self, scalarLike(Double(exponent))])
    }
    /// Values clamped to [min, max] (PyTorch's `clamp`).
    public func clamp(min low: Float? = nil, max high: Float? = nil) -> NNTensor {
        Eager.op("Clip", [self, low.map { scalarLike(Double($0)) }, high.map { scalarLike(Double($0)) }])
    }

    /// The matrix product, batched and broadcast as `torch.matmul`.
    public func matmul(_ other: NNTensor) -> NNTensor { Eager.op("MatMul", [self, other]) }

    /// A failed tensor naming what went wrong.
    func failed(_ message: String) -> NNTensor { NNTensor(failure: OnnxTrainError.invalidInput(message)) }
}

/// The matrix product (`torch.matmul`).
public func matmul(_ a: NNTensor, _ b: NNTensor) -> NNTensor { a.matmul(b) }

// MARK: Arithmetic (broadcasting as PyTorch and ONNX do)

/// Elementwise sum (Add).
public func + (a: NNTensor, b: NNTensor) -> NNTensor { Eager.op("Add", [a, b]) }
/// Elementwise difference (Sub).
public func - (a: NNTensor, b: NNTensor) -> NNTensor { Eager.op("Sub", [a, b]) }
/// Elementwise product, as in PyTorch; `matmul` is the matrix product.
public func * (a: NNTensor, b: NNTensor) -> NNTensor { Eager.op("Mul", [a, b]) }
/// Elementwise quotient (Div).
public func / (a: NNTensor, b: NNTensor) -> NNTensor { Eager.op("Div", [a, b]) }
/// Negation (Neg).
public prefix func - (a: NNTensor) -> NNTensor { Eager.op("Neg", [a]) }

// A number on either side is a scalar constant of the tensor's element type.
/// Tensor plus a number.
public func + (a: NNTensor, b: Float) -> NNTensor { a + a.scalarLike(Double(b)) }
/// Tensor minus a number.
public func - (a: NNTensor, b: Float) -> NNTensor { a - a.scalarLike(Double(b)) }
/// Tensor times a number.
public func * (a: NNTensor, b: Float) -> NNTensor { a * a.scalarLike(Double(b)) }
/// Tensor divided by a number.
public func / (a: NNTensor, b: Float) -> NNTensor { a / a.scalarLike(Double(b)) }
/// A number plus a tensor.
public func + (a: Float, b: NNTensor) -> NNTensor { b.scalarLike(Double(a)) + b }
/// A number minus a tensor.
public func - (a: Float, b: NNTensor) -> NNTensor { b.scalarLike(Double(a)) - b }
/// A number times a tensor.
public func * (a: Float, b: NNTensor) -> NNTensor { b.scalarLike(Double(a)) * b }
/// A number divided by a tensor.
public func / (a: Float, b: NNTensor) -> NNTensor { b.scalarLike(Double(a)) / b }
