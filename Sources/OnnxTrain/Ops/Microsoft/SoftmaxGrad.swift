#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// SoftmaxGrad / LogSoftmaxGrad (com.microsoft v1, axis default 1, opset<13 "coerce to 2-D":
/// the reduction runs over all dims from `axis` on) and their `_13` forms (axis default −1,
/// reduction over that single axis). Input 1 is the forward's output Y in every case.
///   softmax:     dX = Y ⊙ (dY − Σ(Y ⊙ dY))
///   log-softmax: dX = dY − exp(Y) ⊙ Σ dY
struct SoftmaxGradKernel: Kernel {
    let axis: Int
    let singleAxis: Bool
    let log: Bool

    func run(_ inputs: [Value?], _ context: ExecutionContext) throws -> [Value?] {
        let dy = try inputs.tensor(0), y = try inputs.tensor(1)
        try requireSameShape(dy, y, "dY", "Y")
        let a = try normalizeAxis(axis, rank: y.rank)
        // View the data as [outer, n, inner] with the reduction over n.
        let outer = Tensor.elementCount(Array(y.shape[..<a]))
        let n = singleAxis ? (y.rank == 0 ? 1 : y.shape[a]) : Tensor.elementCount(Array(y.shape[a...]))
        let inner = singleAxis ? Tensor.elementCount(Array(y.shape[min(a + 1, y.rank)...])) : 1
        return [.tensor(try computingHalfInFloat([dy, y], names: ["dY", "Y"], floatOnly: true) { w in
            try dispatchFloat(w[0].dtype, Compute(dy: w[0], y: w[1], outer: outer, n: n, inner: inner, log: log))
        })]
    }

    struct Compute: FloatOperation {
        let dy: Tensor, y: Tensor
        let outer: Int, n: Int, inner: Int
        let log: Bool
        func callAsFunction<T: FloatElement>(_ type: T.Type) throws -> Tensor {
            if T.self == Float.self && inner == 1 && n > 0 { return floatRows() }
            var out = Tensor(uninitialized: T.dtype, shape: y.shape)
            try dy.withUnsafeBufferPointer(as: T.self) { g in
                try y.withUnsafeBufferPointer(as: T.self) { p in
                    out.uncheckedMutableBufferPointer(as: T.self) { o in
                        for b in 0..<outer {
                            for j in 0..<inner {
                                let base = b * n * inner + j
                                var sum = 0.0
                                if log {
                                    for k in 0..<n { sum += Double(g[base + k * inner]) }
                                    for k in 0..<n {
                                        let i = base + k * inner
                                        o[i] = T(Double(g[i]) - exp(Double(p[i])) * sum)
                                    }
                                } else {
                                    for k in 0..<n { sum += Double(g[base + k * inner]) * Double(p[base + k * inner]) }
                                    for k in 0..<n {
                                        let i = base + k * inner
                                        o[i] = T(Double(p[i]) * (Double(g[i]) - sum))
                                    }
                                }
                            }
                        }
                    }
                }
            }
            return out
        }
    }
}

extension SoftmaxGradKernel.Compute {
    /// float32 rows (dY, Y, dX: [outer, n]) in float, as onnxruntime computes them; rows split
    /// across threads.
    func floatRows() -> Tensor {
        var out = Tensor(uninitialized: .float32, shape: y.shape)
        let (rows, n, log) = (outer, self.n, self.log)
        dy.uncheckedBufferPointer(as: Float.self) { bg in
            y.uncheckedBufferPointer(as: Float.self) { by in
                out.uncheckedMutableBufferPointer(as: Float.self) { bo in
                    guard let g = bg.baseAddress, let p = by.baseAddress, let o = bo.baseAddress else { return }
                    Parallel.forRange(rows, minimumChunk: max(1, 8192 / n)) { range in
                        for r in range { softmaxGradRow(g + r * n, p + r * n, o + r * n, n, log: log) }
                    }
                }
            }
        }
        return out
    }
}

/// One float32 row: softmax dx = y·(dy − Σ dy·y), log-softmax dx = dy − exp(y)·Σ dy (a function of
/// its own so its loops vectorise).
@inline(never)
func softmaxGradRow(_ pg: UnsafePointer<Float>, _ py: UnsafePointer<Float>, _ po: UnsafeMutablePointer<Float>, _ n: Int, log: Bool) {
    if log {
        let sum = sumFloat(pg, n)
        for k in 0..<n { po[k] = pg[k] - FloatMath.exp(py[k]) * sum }
    } else {
        var acc = FloatVec8(), k = 0
        while k + 8 <= n { acc += load8(pg + k) * load8(py + k); k += 8 }
        var sum = acc.sum()
        while k < n { sum += pg[k] * py[k]; k += 1 }
        for k in 0..<n { po[k] = py[k] * (pg[k] - sum) }
    }
}

func registerSoftmaxGradOps(_ registry: OpRegistry) {
    let ms = "com.microsoft"
    for (op, log, single) in [("SoftmaxGrad", false, false), ("LogSoftmaxGrad", true, false),
                              ("SoftmaxGrad_13", false, true), ("LogSoftmaxGrad_13", true, true)] {
        registry.register(op, domain: ms, since: 1) { ctx in
            SoftmaxGradKernel(axis: try ctx.int("axis", default: single ? -1 : 1), singleAxis: single, log: log)
        }
    }
}
