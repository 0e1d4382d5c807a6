/// Softmax, LogSoftmax and Hardmax. Before opset 13 the input is coerced to 2-D at `axis`
/// ([prod(shape[..<axis]), prod(shape[axis...])]) and normalised per row; from 13 on along the
/// single axis.
enum SoftmaxKind { case softmax, logSoftmax, hardmax }

struct SoftmaxOperation: FloatOperation {
    let x: Tensor, outer: Int, n: Int, inner: Int, kind: SoftmaxKind

    func callAsFunction<T: FloatElement>(_ type: T.Type) throws -> Tensor {
        if T.self == Float.self && inner == 1 && n > 0 && kind != .hardmax { return floatRows() }
        // x, out: [outer, n, inner], normalised along n.
        var out = Tensor(uninitialized: T.dtype, shape: x.shape)
        let (outer, n, inner, kind) = (self.outer, self.n, self.inner, self.kind)
        try x.withUnsafeBufferPointer(as: T.self) { px in
            out.uncheckedMutableBufferPointer(as: T.self) { po in
                for o in 0..<outer {
                    for i in 0..<inner {
                        let base = o * n * inner + i
                        // The max is subtracted first so exp cannot overflow.
                        if n == 0 { continue }
                        var m = px[base], argmax = 0
                        for k in 1..<n where px[base + k * inner] > m { m = px[base + k * inner]; argmax = k }
                        switch kind {
                        case .hardmax:
                            for k in 0..<n { po[base + k * inner] = k == argmax ? 1 : 0 }
                        case .softmax:
                            var sum: T = 0
                            for k in 0..<n {
                                let e = T.exp(px[base + k * inner] - m)
                                po[base + k * inner] = e
                                sum += e
                            }
                            for k in 0..<n { po[base + k * inner] /= sum }
                        case .logSoftmax:
                            var sum: T = 0
                            for k in 0..<n { sum += T.exp(px[base + k * inner] - m) }
                            let shift = m + T.log(sum)
                            for k in 0..<n { po[base + k * inner] = px[base + k * inner] - shift }
                        }
                    }
                }
            }
        }
        return out
    }
}

extension SoftmaxOperation {
    /// float32 rows (x, out: [outer, n]) with the vectorised FloatMath.exp, rows split across
    /// threads. Softmax multiplies by 1/Σ, as onnxruntime's MLAS kernel does.
    func floatRows() -> Tensor {
        var out = Tensor(uninitialized: .float32, shape: x.shape)
        let (rows, n, log) = (outer, self.n, kind == .logSoftmax)
        softmaxRows(x, into: &out, rows: rows, n: n, log: log)
        return out
    }
}

/// One float32 row of softmax or log-softmax (a function of its own so its loops vectorise; they
/// stay scalar inside the Parallel.forRange closure).
@inline(never)
/// Softmax (or log-softmax) of every float32 row of `x` ([rows, n]) into `out`, rows split across threads.
func softmaxRows(_ x: Tensor, into out: inout Tensor, rows: Int, n: Int, log: Bool) {
    guard rows > 0 && n > 0 else { return }
    x.uncheckedBufferPointer(as: Float.self) { bx in
        out.uncheckedMutableBufferPointer(as: Float.self) { bo in
            guard let x = bx.baseAddress, let out = bo.baseAddress else { return }
            Parallel.forRange(rows, minimumChunk: max(1, 4096 / n)) { range in
                for r in range { softmaxRow(x + r * n, out + r * n, n, log: log) }
            }
        }
    }
}

func softmaxRow(_ px: UnsafePointer<Float>, _ po: UnsafeMutablePointer<Float>, _ n: Int, log: Bool) {
    // The max is subtracted first so exp cannot overflow. Four running maxima break the compare
    // chain so the loop pipelines; max is exact, so the result is the same. A NaN is skipped
    // by the max as before and turns the whole row into NaN through exp and the sum.
    var m0 = px[0], m1 = px[0], m2 = px[0], m3 = px[0], k = 0
    while k + 4 <= n {
        m0 = px[k] > m0 ? px[k] : m0
        m1 = px[k + 1] > m1 ? px[k + 1] : m1
        m2 = px[k + 2] > m2 ? px[k + 2] : m2
        m3 = px[k + 3] > m3 ? px[k + 3] : m3
        k += 4
    }
    while k < n { m0 = px[k] > m0 ? px[k] : m0; k += 1 }
    let m = Swift.max(Swift.max(m0, m1), Swift.max(m2, m3))
    for k in 0..<n { po[k] = FloatMath.exp(px[k] - m) }
    let sum = sumFloat(po, n)
    if log {
        let shift = m + Float.log(sum)
        for k in 0..<n { po[k] = px[k] - shift }
    } else {
        let scale = 1 / sum
        for k in 0..<n { po[k] *= scale }
    }
}

private func registerSoftmaxFamily(_ registry: OpRegistry, _ op: String, _ kind: SoftmaxKind) {
    for v in [1, 11, 13] {
        registry.register(op, since: v) { ctx in
            let axisAttribute = try ctx.int("axis", default: v < 13 ? 1 : -1)
            return AnyKernel { inputs, _ in
                let x = try inputs.tensor(0)
                guard x.rank > 0 else { throw KernelError("input must have rank 1 or more") }
                let axis = try normalizeAxis(axisAttribute, rank: x.rank)
                let outer = x.shape[..<axis].reduce(1, *)
                let n = v < 13 ? x.shape[axis...].reduce(1, *) : x.shape[axis]
                let inner = v < 13 ? 1 : x.shape[(axis + 1)...].reduce(1, *)
                return [.tensor(try computingHalfInFloat([x]) { wide in
                    try dispatchFloat(wide[0].dtype, SoftmaxOperation(x: wide[0], outer: outer, n: n, inner: inner, kind: kind))
                })]
            }
        }
    }
}

func registerSoftmaxOps(_ registry: OpRegistry) {
    registerSoftmaxFamily(registry, "Softmax", .softmax)
    registerSoftmaxFamily(registry, "LogSoftmax", .logSoftmax)
    registerSoftmaxFamily(registry, "Hardmax", .hardmax)
}
