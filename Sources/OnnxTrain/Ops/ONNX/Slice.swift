/// Slice: a strided view of the input (negative steps walk backwards), copied.

/// Slice, since opset 1, 10.
func sliceKernel(_ ctx: NodeContext) throws -> Kernel {
    let since = ctx.sinceVersion
    let attrs = since < 10 ? (try ctx.ints("starts"), try ctx.ints("ends"), try ctx.ints("axes")) : (nil, nil, nil)
    return AnyKernel { inputs, _ in
        let x = try inputs.tensor(0)
        let starts: [Int], ends: [Int], axes: [Int]?, steps: [Int]?
        if since < 10 {
            guard let s = attrs.0, let e = attrs.1 else { throw KernelError("starts and ends are required") }
            starts = s; ends = e; axes = attrs.2; steps = nil
        } else {
            starts = try inputs.tensor(1).ints("starts")
            ends = try inputs.tensor(2).ints("ends")
            axes = try inputs.optionalTensor(3)?.ints("axes")
            steps = try inputs.optionalTensor(4)?.ints("steps")
        }
        return [.tensor(try slice(x, starts: starts, ends: ends, axes: axes, steps: steps))]
    }
}

/// One axis of ONNX Slice (also SliceGrad's and type inference's): the first index taken, how many,
/// and the step to walk by, for an axis of `length` with `start` and `end` (negative ones count
/// from the end) and a nonzero `step`, clamped as ONNX clamps them: both to [0, length] for a
/// positive step; the start to [0, length - 1] and the end to [-1, length - 1] for a negative one.
/// A step longer than the axis takes at most one element, so the returned step is held within the
/// length (its stride cannot overflow); every Int, Int.min and Int.max included, is exact.
func sliceAxis(length n: Int, start: Int, end: Int, step: Int) -> (first: Int, count: Int, step: Int) {
    var s = start < 0 ? start + n : start, e = end < 0 ? end + n : end
    let walk = step > 0 ? min(step, max(n, 1)) : max(step, -max(n, 1))
    if step > 0 {
        s = min(max(s, 0), n); e = min(max(e, 0), n)
        return (s, e > s ? (e - s - 1) / walk + 1 : 0, walk)
    }
    s = min(max(s, 0), n - 1); e = min(max(e, -1), n - 1)
    return (s, s > e ? (s - e - 1) / -walk + 1 : 0, walk)
}

/// ONNX Slice: clamps starts/ends per axis (negative steps walk backwards).
func slice(_ x: Tensor, starts: [Int], ends: [Int], axes: [Int]?, steps: [Int]?) throws -> Tensor {
    let axes = try normalizeAxes(axes ?? Array(0..<starts.count), rank: x.rank)
    let steps = steps ?? [Int](repeating: 1, count: starts.count)
    guard starts.count == ends.count, axes.count == starts.count, steps.count == starts.count else {
        throw KernelError("starts, ends, axes and steps must have the same length")
    }
    let strides = contiguousStrides(x.shape)
    var shape = x.shape, viewStrides = strides, offset = 0
    for (k, a) in axes.enumerated() {
        guard steps[k] != 0 else { throw KernelError("slice step must not be zero") }
        let (s, count, step) = sliceAxis(length: x.shape[a], start: starts[k], end: ends[k], step: steps[k])
        shape[a] = count
        viewStrides[a] = strides[a] * step
        if count > 0 { offset += s * strides[a] }
    }
    return try stridedCopy(x, shape: shape, strides: viewStrides, offset: offset)
}

/// The gradient rule of Slice.
func sliceGradient(_ g: GradientContext) throws -> [String?] {
    guard g.needs(0) else { return [nil] }
    var inputs = [try g.requiredDY(), g.shape(of: g.input(0))]
    if g.opset < 10 {
        guard let starts = g.node.ints("starts"), let ends = g.node.ints("ends") else { throw GradientError("Slice needs starts and ends") }
        inputs += [g.ints(starts, name: "starts"), g.ints(ends, name: "ends")]
        if let axes = g.node.ints("axes") { inputs.append(g.ints(axes, name: "axes")) }
    } else {
        inputs += (1..<g.node.inputs.count).map { g.input($0) }
        while inputs.last == "" { inputs.removeLast() }
    }
    return [g.ms("SliceGrad", inputs)[0]] + Array(repeating: nil, count: max(0, g.node.inputs.count - 1))
}
