#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The data movers of training graphs (com.microsoft v1): SliceGrad, SplitTraining and
/// ConcatTraining, which copy raw element bytes, so they work for every non-string type; and the
/// registration list of the other training helpers, each in its own file (ReduceSumTraining,
/// BroadcastGradientArgs, ZeroGradient, Scale).

/// Copies `count` rows of `rowBytes` from `src` (row stride `srcStride`) to `dst` (row stride `dstStride`), in bytes.
@inline(__always)
private func copyRows(_ src: UnsafeRawPointer, _ srcStride: Int, _ dst: UnsafeMutableRawPointer, _ dstStride: Int, rows: Int, rowBytes: Int) {
    for r in 0..<rows { memcpy(dst + r * dstStride, src + r * srcStride, rowBytes) }
}

/// SliceGrad(dY, shape, starts, ends, axes?, steps?) → dX = zeros(shape) with dY written into the
/// region ONNX Slice selects. (onnxruntime 1.19.2 fails on negative steps; they work here.)
struct SliceGradKernel: Kernel {
    func run(_ inputs: [Value?], _ context: ExecutionContext) throws -> [Value?] {
        let dy = try inputs.tensor(0)
        guard dy.dtype != .string else { throw KernelError("dY must not be a string tensor") }
        let shape = try shapeInput(try inputs.tensor(1), "shape")
        let starts = try indexValues(try inputs.tensor(2), "starts"), ends = try indexValues(try inputs.tensor(3), "ends")
        let r = shape.count
        guard r >= 1 || starts.isEmpty else { throw KernelError("shape must have rank >= 1 to slice") }
        let axes = try inputs.optionalTensor(4).map { try indexValues($0, "axes") } ?? Array(0..<starts.count)
        let steps = try inputs.optionalTensor(5).map { try indexValues($0, "steps") } ?? Array(repeating: 1, count: starts.count)
        guard ends.count == starts.count, axes.count == starts.count, steps.count == starts.count else {
            throw KernelError("starts, ends, axes and steps must have one length")
        }
        var begin = [Int](repeating: 0, count: r), step = [Int](repeating: 1, count: r), count = shape
        var seen = Set<Int>()
        for i in 0..<starts.count {
            let a = try normalizeAxis(axes[i], rank: r, name: "axes")
            guard seen.insert(a).inserted else { throw KernelError("axis \(axes[i]) is repeated") }
            guard steps[i] != 0 else { throw KernelError("steps must not be 0") }
            (begin[a], count[a], step[a]) = sliceAxis(length: shape[a], start: starts[i], end: ends[i], step: steps[i])
        }
        guard dy.shape == count else { throw KernelError("dY \(dy.shape) must have the sliced shape \(count)") }
        let out = Tensor(zeros: dy.dtype, shape: shape)
        let n = dy.count, size = dy.dtype.byteSize
        if n == 0 { return [.tensor(out)] }
        let strides = contiguousStrides(shape)
        var offset = 0
        for d in 0..<r { offset += begin[d] * strides[d] }
        let jump = (0..<r).map { step[$0] * strides[$0] }
        let src = dy.storage.bytes, dst = out.storage.bytes
        for (i, o) in stridedIndices(shape: count, strides: jump, offset: offset).enumerated() {
            memcpy(dst + o * size, src + i * size, size)
        }
        return [.tensor(out)]
    }
}

/// [outer, axis length, inner] view of `shape` around `axis`.
private func aroundAxis(_ shape: [Int], _ axis: Int) -> (outer: Int, inner: Int) {
    (Tensor.elementCount(Array(shape[..<axis])), Tensor.elementCount(Array(shape[(axis + 1)...])))
}

/// SplitTraining(input, split: int64 1-D; axis = 0) → one output per node output. An empty split
/// divides the axis equally, which must be exact (onnxruntime does not honor uneven splits here).
struct SplitTrainingKernel: Kernel {
    let axis: Int
    let outputs: Int
    func run(_ inputs: [Value?], _ context: ExecutionContext) throws -> [Value?] {
        let x = try inputs.tensor(0)
        guard x.dtype != .string, x.rank >= 1 else { throw KernelError("input must be a non-string tensor of rank >= 1, got \(x)") }
        let a = try normalizeAxis(axis, rank: x.rank)
        let dim = x.shape[a]
        var split = try inputs.optionalTensor(1).map { try indexValues($0, "split") } ?? []
        if split.isEmpty {
            guard outputs > 0, dim % outputs == 0 else { throw KernelError("axis \(a) of length \(dim) does not split equally into \(outputs) outputs") }
            split = Array(repeating: dim / outputs, count: outputs)
        }
        guard split.count == outputs, split.allSatisfy({ $0 >= 0 }), split.reduce(0, +) == dim else {
            throw KernelError("split \(split) must have \(outputs) non-negative parts summing to \(dim)")
        }
        let (outer, inner) = aroundAxis(x.shape, a)
        let size = x.dtype.byteSize
        var results: [Value?] = []
        var start = 0
        for part in split {
            var shape = x.shape
            shape[a] = part
            let out = Tensor(zeros: x.dtype, shape: shape)
            copyRows(x.storage.bytes + start * inner * size, dim * inner * size, out.storage.bytes, part * inner * size,
                     rows: outer, rowBytes: part * inner * size)
            results.append(.tensor(out))
            start += part
        }
        return results
    }
}

/// ConcatTraining(inputs…; axis) → concat_result, per_input_length? (int64, each input's length on axis).
struct ConcatTrainingKernel: Kernel {
    let axis: Int
    func run(_ inputs: [Value?], _ context: ExecutionContext) throws -> [Value?] {
        let parts = try (0..<inputs.count).compactMap { try inputs.optionalTensor($0) }
        guard let first = parts.first else { throw KernelError("at least one input is required") }
        guard first.dtype != .string, first.rank >= 1 else { throw KernelError("inputs must be non-string tensors of rank >= 1, got \(first)") }
        let a = try normalizeAxis(axis, rank: first.rank)
        var shape = first.shape
        shape[a] = 0
        let offAxis = shape
        for (i, p) in parts.enumerated() {
            var other = p.shape
            guard p.dtype == first.dtype, other.count == shape.count else { throw KernelError("input \(i) \(p) does not match input 0 \(first)") }
            other[a] = 0
            guard other == offAxis else {
                throw KernelError("input \(i) \(p.shape) differs from input 0 \(first.shape) off axis \(a)")
            }
            shape[a] += p.shape[a]
        }
        let out = Tensor(zeros: first.dtype, shape: shape)
        let (outer, inner) = aroundAxis(shape, a)
        let size = first.dtype.byteSize, rowOut = shape[a] * inner * size
        var start = 0
        for p in parts {
            let row = p.shape[a] * inner * size
            copyRows(p.storage.bytes, row, out.storage.bytes + start, rowOut, rows: outer, rowBytes: row)
            start += row
        }
        return [.tensor(out), .tensor(int64Tensor(parts.map { $0.shape[a] }))]
    }
}

func registerTrainingShapeOps(_ registry: OpRegistry) {
    let ms = "com.microsoft"
    registry.register("SliceGrad", domain: ms, since: 1) { _ in SliceGradKernel() }
    registry.register("SplitTraining", domain: ms, since: 1) { ctx in
        SplitTrainingKernel(axis: try ctx.int("axis", default: 0), outputs: ctx.outputCount)
    }
    registry.register("ConcatTraining", domain: ms, since: 1) { ctx in ConcatTrainingKernel(axis: try ctx.requiredInt("axis")) }
    registry.register("ReduceSumTraining", domain: ms, since: 1, reduceSumTrainingKernel)
    registry.register("BroadcastGradientArgs", domain: ms, since: 1) { _ in BroadcastGradientArgsKernel() }
    registry.register("ZeroGradient", domain: ms, since: 1) { _ in ZeroGradientKernel() }
    registry.register("Scale", domain: ms, since: 1) { ctx in ScaleKernel(scaleDown: try ctx.int("scale_down", default: 0) != 0) }
    registry.registerGradient("ConcatTraining", domain: ms, concatTrainingGradient)
}

/// The gradient rule of ConcatTraining (com.microsoft).
func concatTrainingGradient(_ g: GradientContext) throws -> [String?] {
    let lengths = g.forwardOutput(1, info: TensorInfo(dtype: .int64, shape: [.value(g.node.inputs.count)]))
    let parts = g.ms("SplitTraining", [try g.requiredDY(), lengths], outputs: g.node.inputs.count,
                     attributes: ["axis": .int(g.node.int("axis") ?? 0)])
    return g.node.inputs.indices.map { g.needs($0) ? parts[$0] : nil }
}
