/// MatMulBias (onnx-train's internal domain, written only by the `MatMulAddToGemm` pass into a
/// session's compiled graph): Y = A·B + bias, a Linear layer over a batch of rows (every
/// transformer's projections), as one GEMM that adds the product onto the bias instead of a
/// product and then an Add pass over it.
///
/// Inputs: A [..., M, K] (rank 3 or more; 2-D products become Gemm), B [K, N] (or [N, K] with
/// `transB` 1: a weight stored as PyTorch's Linear stores it, whose Transpose
/// `TransposeIntoMatMul` folds into the flag), bias [N]. Output: Y [..., M, N], of A's type
/// (float32 or float64).
///
/// Every element is bias + product, rounded once, as MatMul and then Add compute it; a K that runs
/// over several of OpenBLAS's blocks adds the partial sums onto the bias rather than onto zero, so
/// results then agree to float rounding (`BLAS.gemm`'s `rowBias`). Shapes outside that (another
/// rank of B, a bias that is not one row of N) run as MatMul then Add, so any input gets the
/// pair's result and errors.
struct MatMulBiasKernel: Kernel {
    let transB: Bool

    struct Compute: ElementOperation {
        let a: Tensor, b: Tensor, bias: Tensor
        let transB: Bool

        func float<T: FloatElement>(_ type: T.Type) throws -> Tensor {
            // A as rows [R, K] (R = product of its leading dims), op(B) [K, N], bias [N] → Y [R, N].
            let k = a.shape[a.rank - 1], n = transB ? b.shape[0] : b.shape[1], rows = a.count / max(k, 1)
            guard (transB ? b.shape[1] : b.shape[0]) == k else {
                throw KernelError("MatMul inner dims differ: shapes \(a.shape) and \(b.shape)\(transB ? " (transposed)" : "")")
            }
            var y = Tensor(uninitialized: T.dtype, shape: Array(a.shape.dropLast()) + [n])
            try a.withUnsafeBufferPointer(as: T.self) { pa in
                try b.withUnsafeBufferPointer(as: T.self) { pb in
                    try bias.withUnsafeBufferPointer(as: T.self) { pbias in
                        y.uncheckedMutableBufferPointer(as: T.self) { py in
                            guard let Y = py.baseAddress, let bias = pbias.baseAddress else { return }
                            guard let A = pa.baseAddress, let B = pb.baseAddress else {
                                // k == 0: an empty product, Y is the bias in every row.
                                for i in 0..<rows { (Y + i * n).update(from: bias, count: n) }
                                return
                            }
                            BLAS.gemm(transA: false, transB: transB, m: rows, n: n, k: k, alpha: 1, a: A, lda: k,
                                      b: B, ldb: b.shape[1], beta: 1, c: Y, ldc: n, rowBias: bias)
                        }
                    }
                }
            }
            return y
        }
    }

    func run(_ inputs: [Value?], _ context: ExecutionContext) throws -> [Value?] {
        let a = try inputs.tensor(0), b = try inputs.tensor(1), bias = try inputs.tensor(2)
        let dtype = try commonElementType([a, b, bias], names: ["A", "B", "bias"], floatOnly: true)
        guard (dtype == .float32 || dtype == .float64), a.rank >= 2, b.rank == 2, bias.rank == 1,
              bias.count == b.shape[transB ? 0 : 1] else {
            // Not the Linear layer the pass saw: MatMul, then Add.
            let product = try matmul(a, transB ? transpose(b, perm: Array(0..<(b.rank - 2)) + [b.rank - 1, b.rank - 2]) : b)
            return [.tensor(try dispatch(dtype, AddOperation(x: product, y: bias)))]
        }
        return [.tensor(try dispatch(dtype, Compute(a: a, b: b, bias: bias, transB: transB)))]
    }

    /// The separate Add of the fallback, with numpy broadcasting.
    struct AddOperation: ElementOperation {
        let x: Tensor, y: Tensor
        func float<T: FloatElement>(_ type: T.Type) throws -> Tensor {
            try broadcastBinary(x, y, T.self, T.self, T.self, outDType: T.dtype) { $0 + $1 }
        }
    }
}

func registerMatMulBiasOps(_ registry: OpRegistry) {
    registry.register("MatMulBias", domain: internalDomain, since: [1]) { ctx in
        MatMulBiasKernel(transB: try ctx.int("transB", default: 0) != 0)
    }
}
