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
            try dispatch(w[0].dtype, Compute(dy: w[0], y: w[1], outer: outer, n: n, inner: inner, log: log))
        })]
    }

    struct Compute: ElementOperation {
        let dy: Tensor, y: Tensor
        let outer: Int, n: Int, inner: Int
        let log: Bool
        func float<T: FloatElement>(_ type: T.Type) throws -> Tensor {
            var out = Tensor(uninitialized: T.dtype, shape: y.shape)
            let (outer, n, inner, log) = (outer, n, inner, log)
            dy.uncheckedBufferPointer(as: T.self) { bg in
                y.uncheckedBufferPointer(as: T.self) { by in
                    out.uncheckedMutableBufferPointer(as: T.self) { bo in
                        guard let g = bg.baseAddress, let p = by.baseAddress, let o = bo.baseAddress, n > 0 else { return }
                        Parallel.forRange(outer * inner, minimumChunk: max(1, 8192 / n)) { rows in
                            for r in rows {
                                let base = (r / inner) * n * inner + r % inner
                                softmaxGradRow(g + base, p + base, o + base, n, stride: inner, log: log)
                            }
                        }
                    }
                }
            }
            return out
        }
    }
}

/// One row of n elements `stride` apart: softmax dx = y·(dy − Σ dy·y), log-softmax
/// dx = dy − exp(y)·Σ dy. Accumulator: T, as onnxruntime computes float32 in float (Sums.swift
/// at stride 1). A function of its own so its loops vectorise.
@inline(never)
func softmaxGradRow<T: FloatElement>(_ pg: UnsafePointer<T>, _ py: UnsafePointer<T>, _ po: UnsafeMutablePointer<T>, _ n: Int,
                                     stride: Int, log: Bool) {
    if stride == 1 {
        if log {
            let sum = rowSum(pg, n)
            for k in 0..<n { po[k] = pg[k] - T.fastExp(py[k]) * sum }
        } else {
            let sum = dotSum(pg, py, n)
            for k in 0..<n { po[k] = py[k] * (pg[k] - sum) }
        }
        return
    }
    var sum = T.zero
    if log {
        for k in 0..<n { sum += pg[k * stride] }
        for k in 0..<n { po[k * stride] = pg[k * stride] - T.fastExp(py[k * stride]) * sum }
    } else {
        for k in 0..<n { sum += pg[k * stride] * py[k * stride] }
        for k in 0..<n { po[k * stride] = py[k * stride] * (pg[k * stride] - sum) }
    }
}

/// The (Log)SoftmaxGrad builder: the _13 forms (`singleAxis`) work along one axis (default -1),
/// the older ones on the input flattened to 2-D at `axis` (default 1).
func softmaxGradKernel(log: Bool, singleAxis: Bool) -> KernelFactory {
    { ctx in SoftmaxGradKernel(axis: try ctx.int("axis", default: singleAxis ? -1 : 1), singleAxis: singleAxis, log: log) }
}

func registerSoftmaxGradOps(_ registry: OpRegistry) {
    let ms = "com.microsoft"
    registry.register("SoftmaxGrad", domain: ms, since: 1, softmaxGradKernel(log: false, singleAxis: false))
    registry.register("LogSoftmaxGrad", domain: ms, since: 1, softmaxGradKernel(log: true, singleAxis: false))
    registry.register("SoftmaxGrad_13", domain: ms, since: 1, softmaxGradKernel(log: false, singleAxis: true))
    registry.register("LogSoftmaxGrad_13", domain: ms, since: 1, softmaxGradKernel(log: true, singleAxis: true))
}
