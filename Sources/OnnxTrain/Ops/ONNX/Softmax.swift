/// Softmax, LogSoftmax and Hardmax. Before opset 13 the input is coerced to 2-D at `axis`
/// ([prod(shape[..<axis]), prod(shape[axis...])]) and normalised per row; from 13 on along the
/// single axis.
enum SoftmaxKind { case softmax, logSoftmax, hardmax }

struct SoftmaxOperation: ElementOperation {
    let x: Tensor, outer: Int, n: Int, inner: Int, kind: SoftmaxKind

    func float<T: FloatElement>(_ type: T.Type) throws -> Tensor {
        // x, out: [outer, n, inner], normalised along n.
        var out = Tensor(uninitialized: T.dtype, shape: x.shape)
        let (outer, n, inner, kind) = (self.outer, self.n, self.inner, self.kind)
        try x.withUnsafeBufferPointer(as: T.self) { px in
            out.uncheckedMutableBufferPointer(as: T.self) { po in
                guard let px = px.baseAddress, let po = po.baseAddress else { return }
                guard kind == .hardmax else {
                    softmax(px, po, outer: outer, n: n, inner: inner, log: kind == .logSoftmax)
                    return
                }
                for o in 0..<outer where n > 0 {
                    for i in 0..<inner {
                        let base = o * n * inner + i
                        var m = px[base], argmax = 0
                        for k in 1..<n where px[base + k * inner] > m { m = px[base + k * inner]; argmax = k }
                        for k in 0..<n { po[base + k * inner] = k == argmax ? 1 : 0 }
                    }
                }
            }
        }
        return out
    }
}

/// The one softmax / log-softmax kernel (Softmax, LogSoftmax, and the log-probabilities of every
/// softmax cross-entropy loss): x and out viewed as [outer, n, inner], normalised along n, rows
/// split across threads.
///
/// Accumulator: T. float32 sums exp in float32 (four partial sums), as onnxruntime's MLAS kernels
/// compute in float; exp is `T.fastExp` (vectorised for float32, libm for float64). The max is
/// subtracted first so exp cannot overflow; softmax multiplies by 1/Σ, as MLAS does.
func softmax<T: FloatElement>(_ x: UnsafePointer<T>, _ out: UnsafeMutablePointer<T>, outer: Int, n: Int, inner: Int, log: Bool) {
    guard outer > 0, n > 0, inner > 0 else { return }
    Parallel.forRange(outer * inner, minimumChunk: max(1, 4096 / n)) { rows in
        for r in rows {
            let base = (r / inner) * n * inner + r % inner
            softmaxRow(x + base, out + base, n, stride: inner, log: log)
        }
    }
}

/// One row of `softmax`: n elements `stride` apart. A function of its own so the stride-1 loops
/// vectorise (they stay scalar inside the Parallel.forRange closure).
@inline(never)
func softmaxRow<T: FloatElement>(_ px: UnsafePointer<T>, _ po: UnsafeMutablePointer<T>, _ n: Int, stride: Int, log: Bool) {
    guard stride == 1 else {
        var m = px[0]
        for k in 1..<n where px[k * stride] > m { m = px[k * stride] }
        var sum: T = 0
        for k in 0..<n { let e = T.fastExp(px[k * stride] - m); po[k * stride] = e; sum += e }
        if log {
            let shift = m + T.log(sum)
            for k in 0..<n { po[k * stride] = px[k * stride] - shift }
        } else {
            let scale = 1 / sum
            for k in 0..<n { po[k * stride] *= scale }
        }
        return
    }
    let m = rowMaximum(px, n)
    for k in 0..<n { po[k] = T.fastExp(px[k] - m) }
    let sum = contiguousSum(UnsafePointer(po), n) { $0 }
    if log {
        let shift = m + T.log(sum)
        for k in 0..<n { po[k] = px[k] - shift }
    } else {
        let scale = 1 / sum
        for k in 0..<n { po[k] *= scale }
    }
}

/// `softmaxRow` of a contiguous row written over itself (ElementwiseChain's fused Softmax): the
/// same operations in the same order, so the same values; a loop of its own because the
/// two-pointer loops fall back to scalar code when their pointers overlap.
@inline(never)
func softmaxRowInPlace<T: FloatElement>(_ p: UnsafeMutablePointer<T>, _ n: Int) {
    let m = rowMaximum(UnsafePointer(p), n)
    for k in 0..<n { p[k] = T.fastExp(p[k] - m) }
    let scale = 1 / contiguousSum(UnsafePointer(p), n) { $0 }
    for k in 0..<n { p[k] *= scale }
}

/// The largest of n >= 1 contiguous values. Four running maxima break the compare chain so the
/// loop pipelines; max is exact, so the order does not matter. A NaN is skipped (softmax turns
/// the whole row into NaN through exp and the sum).
@inline(__always)
func rowMaximum<T: FloatElement>(_ px: UnsafePointer<T>, _ n: Int) -> T {
    var m0 = px[0], m1 = px[0], m2 = px[0], m3 = px[0], k = 0
    while k + 4 <= n {
        m0 = px[k] > m0 ? px[k] : m0
        m1 = px[k + 1] > m1 ? px[k + 1] : m1
        m2 = px[k + 2] > m2 ? px[k + 2] : m2
        m3 = px[k + 3] > m3 ? px[k + 3] : m3
        k += 4
    }
    while k < n { m0 = px[k] > m0 ? px[k] : m0; k += 1 }
    return Swift.max(Swift.max(m0, m1), Swift.max(m2, m3))
}

/// The Softmax, LogSoftmax or Hardmax kernel builder. Before opset 13 the op works on the input
/// flattened to 2-D at `axis` (default 1); from 13 on, along the one axis (default -1).
func softmaxKernel(_ kind: SoftmaxKind) -> KernelFactory {
    { ctx in
        let flattens = ctx.sinceVersion < 13
        let axisAttribute = try ctx.int("axis", default: flattens ? 1 : -1)
        return AnyKernel { inputs, _ in
            let x = try inputs.tensor(0)
            guard x.rank > 0 else { throw KernelError("input must have rank 1 or more") }
            let axis = try normalizeAxis(axisAttribute, rank: x.rank)
            let outer = x.shape[..<axis].reduce(1, *)
            let n = flattens ? x.shape[axis...].reduce(1, *) : x.shape[axis]
            let inner = flattens ? 1 : x.shape[(axis + 1)...].reduce(1, *)
            return [.tensor(try computingHalfInFloat([x]) { wide in
                try dispatch(wide[0].dtype, SoftmaxOperation(x: wide[0], outer: outer, n: n, inner: inner, kind: kind))
            })]
        }
    }
}

func registerSoftmaxOps(_ registry: OpRegistry) {
    registry.register("Softmax", since: [1, 11, 13], softmaxKernel(.softmax))
    registry.register("LogSoftmax", since: [1, 11, 13], softmaxKernel(.logSoftmax))
    registry.register("Hardmax", since: [1, 11, 13], softmaxKernel(.hardmax))

    // Gradient rules (GradientContext):
    // Softmax family: onnxruntime's grads, the opset-13 variants reduce over one axis.
    for (forward, grad) in [("Softmax", "SoftmaxGrad"), ("LogSoftmax", "LogSoftmaxGrad")] {
        registry.registerGradient(forward) { g in
            guard g.needs(0) else { return [nil] }
            let modern = g.opset >= 13
            let axis = g.node.int("axis") ?? (modern ? -1 : 1)
            return [g.ms(modern ? grad + "_13" : grad, [try g.requiredDY(), g.output(0)], attributes: ["axis": .int(axis)])[0]]
        }
    }
}
