import Foundation

/// Det: determinants of the last two axes' square matrices (LU with partial pivoting).

/// Det, since opset 11.
func detKernel(_ ctx: NodeContext) throws -> Kernel {
    AnyKernel { inputs, _ in
        let x = try inputs.tensor(0)
        guard x.rank >= 2, x.shape[x.rank - 1] == x.shape[x.rank - 2] else { throw KernelError("input must be [..., M, M], got \(x.shape)") }
        let m = x.shape[x.rank - 1]
        let data = try x.doubles()
        let batch = x.count / max(m * m, 1)
        var dets = [Double]()
        for b in 0..<batch {
            // LU decomposition with partial pivoting; the determinant is the signed pivot product.
            var a = Array(data[(b * m * m)..<((b + 1) * m * m)])
            var det = 1.0
            for col in 0..<m {
                var pivot = col
                for r in col..<m where abs(a[r * m + col]) > abs(a[pivot * m + col]) { pivot = r }
                if a[pivot * m + col] == 0 { det = 0; break }
                if pivot != col {
                    for j in 0..<m { a.swapAt(pivot * m + j, col * m + j) }
                    det = -det
                }
                det *= a[col * m + col]
                for r in (col + 1)..<max(m, col + 1) {
                    let f = a[r * m + col] / a[col * m + col]
                    for j in col..<m { a[r * m + j] -= f * a[col * m + j] }
                }
            }
            dets.append(det)
        }
        return [.tensor(try Tensor(dtype: x.dtype, shape: Array(x.shape.dropLast(2)), doubles: dets))]
    }
}
