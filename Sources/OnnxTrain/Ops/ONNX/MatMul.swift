/// Gemm, MatMul and MatMulInteger.

// MARK: - Batched matmul with numpy broadcasting

/// The shapes of a numpy matmul: 1-D operands promoted (and their unit dim dropped from the
/// result), batch dims broadcast.
struct MatMulShape {
    var m: Int, k: Int, n: Int
    var batch: [Int]
    var aBatchStrides: [Int], bBatchStrides: [Int]  // in matrices; 0 where broadcast
    var outShape: [Int]

    init(_ a: [Int], _ b: [Int]) throws {
        guard !a.isEmpty, !b.isEmpty else { throw KernelError("MatMul operands must not be scalars (shapes \(a) and \(b))") }
        var a2 = a, b2 = b
        if a.count == 1 { a2 = [1, a[0]] }
        if b.count == 1 { b2 = [b[0], 1] }
        m = a2[a2.count - 2]; k = a2[a2.count - 1]; n = b2[b2.count - 1]
        guard b2[b2.count - 2] == k else { throw KernelError("MatMul inner dims differ: shapes \(a) and \(b)") }
        let aBatch = Array(a2.dropLast(2)), bBatch = Array(b2.dropLast(2))
        batch = try Broadcast.shape(aBatch, bBatch)
        aBatchStrides = Broadcast.strides(aBatch, to: batch)
        bBatchStrides = Broadcast.strides(bBatch, to: batch)
        outShape = batch
        if a.count > 1 { outShape.append(m) }
        if b.count > 1 { outShape.append(n) }
    }

    var batchCount: Int { Tensor.elementCount(batch) }

    /// Matrix offsets (in matrices) of A and B for each output batch index.
    func batchOffsets() -> [(Int, Int)] {
        let count = batchCount
        var result = [(Int, Int)](repeating: (0, 0), count: count)
        var walk = Odometer(shape: batch, strides: [aBatchStrides, bBatchStrides])
        for i in 0..<count {
            result[i] = (walk.offsets[0], walk.offsets[1])
            walk.advance()
        }
        return result
    }
}

/// Batched matmul of float tensors through BLAS. A [..., M, K] · B [..., K, N] -> [..., M, N].
/// With `packed` (B a constant of the session), a float32 product of every row of A with one B
/// may run on B's prepacked copy (`PackedWeightCache`).
func floatMatMul<T: FloatElement>(_ a: Tensor, _ b: Tensor, _ type: T.Type, packed: PackedWeightCache? = nil) throws -> Tensor {
    let s = try MatMulShape(a.shape, b.shape)
    // Every element is written by a GEMM (beta 0; BLAS.gemm writes zeros when k == 0).
    var out = Tensor(uninitialized: T.dtype, shape: s.outShape)
    let (m, k, n) = (s.m, s.k, s.n)
    try a.withUnsafeBufferPointer(as: T.self) { pa in
        try b.withUnsafeBufferPointer(as: T.self) { pb in
            out.uncheckedMutableBufferPointer(as: T.self) { po in
                guard let A = pa.baseAddress, let B = pb.baseAddress, let C = po.baseAddress else { return }
                // B shared by every batch and A contiguous: one GEMM with M' = batch * M.
                if s.bBatchStrides.allSatisfy({ $0 == 0 }) && a.count == s.batchCount * m * k {
                    if let packed, packed.gemm(m: s.batchCount * m, n: n, k: k, a: A, lda: k, b: b, bElements: B, transB: false, bias: nil, c: C, ldc: n) {
                        return
                    }
                    BLAS.gemm(transA: false, transB: false, m: s.batchCount * m, n: n, k: k, alpha: 1, a: A, lda: k,
                         b: B, ldb: n, beta: 0, c: C, ldc: n)
                    return
                }
                // Batch entries split across threads (each GEMM then runs single-threaded): attention's
                // [B, H, T, d] products are many GEMMs too small for BLAS to thread.
                let offsets = s.batchOffsets()
                Parallel.forRange(offsets.count, minimumChunk: max(1, (1 << 16) / max(1, m * n * k))) { range in
                    for i in range {
                        let (oa, ob) = offsets[i]
                        BLAS.gemm(transA: false, transB: false, m: m, n: n, k: k, alpha: 1, a: A + oa * m * k, lda: k,
                             b: B + ob * k * n, ldb: n, beta: 0, c: C + i * m * n, ldc: n)
                    }
                }
            }
        }
    }
    return out
}

/// numpy matmul of one element type: floats through BLAS, half types through float32, integers
/// with wrapping arithmetic (plain loops).
struct MatMulOperation: ElementOperation {
    let a: Tensor, b: Tensor
    var packed: PackedWeightCache? = nil
    func float<T: FloatElement>(_ type: T.Type) throws -> Tensor { try floatMatMul(a, b, T.self, packed: packed) }
    func half<T: CastableElement>(_ type: T.Type) throws -> Tensor {
        try floatMatMul(a.widenedToFloat(), b.widenedToFloat(), Float.self).narrowed(to: T.dtype)
    }
    func integer<I: IntegerElement>(_ type: I.Type) throws -> Tensor {
        let s = try MatMulShape(a.shape, b.shape)
        var out = Tensor(zeros: I.dtype, shape: s.outShape)
        let (m, k, n) = (s.m, s.k, s.n)
        try a.withUnsafeBufferPointer(as: I.self) { pa in
            try b.withUnsafeBufferPointer(as: I.self) { pb in
                out.uncheckedMutableBufferPointer(as: I.self) { po in
                    for (bi, (oa, ob)) in s.batchOffsets().enumerated() {
                        let A = oa * m * k, B = ob * k * n, C = bi * m * n
                        for i in 0..<m {
                            for p in 0..<k {
                                let av = pa[A + i * k + p]
                                for j in 0..<n { po[C + i * n + j] &+= av &* pb[B + p * n + j] }
                            }
                        }
                    }
                }
            }
        }
        return out
    }
}

/// numpy matmul for any numeric type: floats through BLAS, half types through float32.
func matmul(_ a: Tensor, _ b: Tensor, packed: PackedWeightCache? = nil) throws -> Tensor {
    guard a.dtype == b.dtype else { throw KernelError("MatMul operands differ in type: \(a.dtype) and \(b.dtype)") }
    return try dispatch(a.dtype, MatMulOperation(a: a, b: b, packed: packed))
}

// MARK: - Gemm

/// Y = alpha·op(A)·op(B) + beta·C, C broadcast to [M, N].
struct GemmKernel: Kernel {
    let transA: Bool, transB: Bool, alpha: Float, beta: Float
    /// B's packed copy, where B is a constant of the session (`PackedWeightCache`).
    let packedWeights: PackedWeightCache?

    init(_ ctx: NodeContext) throws {
        transA = try ctx.int("transA", default: 0) != 0
        transB = try ctx.int("transB", default: 0) != 0
        alpha = try ctx.float("alpha", default: 1)
        beta = try ctx.float("beta", default: 1)
        packedWeights = PackedWeightCache.make(ctx, input: 1)
    }

    struct Op: ElementOperation {
        let k: GemmKernel, a: Tensor, b: Tensor, c: Tensor?
        func float<T: FloatElement>(_ type: T.Type) throws -> Tensor {
            guard a.rank == 2, b.rank == 2 else { throw KernelError("Gemm needs 2-D A and B, got \(a.shape) and \(b.shape)") }
            let m = k.transA ? a.shape[1] : a.shape[0], kk = k.transA ? a.shape[0] : a.shape[1]
            let kb = k.transB ? b.shape[1] : b.shape[0], n = k.transB ? b.shape[0] : b.shape[1]
            guard kk == kb else { throw KernelError("Gemm inner dims differ: A \(a.shape), B \(b.shape)") }
            // C is broadcast into Y first, then one GEMM with beta adds alpha·op(A)·op(B) to it; with
            // no C (or beta 0) BLAS overwrites Y, so it starts uninitialised. A bias row (a fully
            // connected layer's, beta 1) goes to the GEMM as `rowBias` instead: each thread writes it
            // into its own block of Y just before its product adds to it, where broadcasting it first
            // was a pass over Y on the calling thread whose lines the other thread then had to fetch
            // (the same values: bias + product rounded once).
            var y = Tensor(uninitialized: T.dtype, shape: [m, n])
            var beta = T(fromDouble: Double(k.beta))
            let biasRow = c.flatMap { c in
                k.beta == 1 && c.dtype == T.dtype && c.rank <= 2 && c.count == n && c.shape.dropLast().allSatisfy { $0 == 1 } ? c : nil
            }
            if let c, beta != 0, biasRow == nil {
                guard (try? Broadcast.shape(c.shape, [m, n])) == [m, n] else {
                    throw KernelError("Gemm C of shape \(c.shape) does not broadcast to [\(m), \(n)]")
                }
                try broadcastBias(c, into: &y, m: m, n: n, T.self)
            } else if biasRow == nil {
                beta = 0
            }
            func withRowBias(_ body: (UnsafePointer<T>?) throws -> Void) throws {
                guard let biasRow else { return try body(nil) }
                try biasRow.withUnsafeBufferPointer(as: T.self) { try body($0.baseAddress) }
            }
            let alpha = T(fromDouble: Double(k.alpha))
            try withRowBias { bias in
                try a.withUnsafeBufferPointer(as: T.self) { pa in
                    try b.withUnsafeBufferPointer(as: T.self) { pb in
                        y.uncheckedMutableBufferPointer(as: T.self) { py in
                            guard let A = pa.baseAddress, let B = pb.baseAddress, let Y = py.baseAddress else { return }
                            // A constant B packed once (a fully connected layer at inference): Y = A·op(B) (+ the bias row).
                            if let packed = k.packedWeights, !k.transA, k.alpha == 1, beta == 0 || bias != nil,
                               packed.gemm(m: m, n: n, k: kk, a: A, lda: a.shape[1], b: b, bElements: B, transB: k.transB, bias: bias, c: Y, ldc: n) {
                                return
                            }
                            // A Gemm with A and B plain is a fully connected layer's input gradient
                            // (dY·W) in training graphs: its K may split (see BLAS.gemm).
                            BLAS.gemm(transA: k.transA, transB: k.transB, m: m, n: n, k: kk, alpha: alpha, a: A, lda: a.shape[1],
                                      b: B, ldb: b.shape[1], beta: beta, c: Y, ldc: n, rowBias: bias, innerSplit: true)
                        }
                    }
                }
            }
            return y
        }
    }

    /// Writes C (shape [n], [1, n], [m, n], [m, 1], [1] or scalar: anything that broadcasts to
    /// [m, n]) into every row of y [m, n].
    private static func broadcastBias<T: FloatElement>(_ c: Tensor, into y: inout Tensor, m: Int, n: Int, _ type: T.Type) throws {
        let shape = c.shape.drop { $0 == 1 }  // leading unit dims do not change the layout
        let rowVector = shape.count <= 1 && c.count == n, columnVector = c.count == m && c.shape.last == 1 && m > 1
        guard rowVector || columnVector || c.count == 1 || c.count == m * n else {
            y = try broadcastBinary(Tensor(zeros: T.dtype, shape: [m, n]), c, T.self, T.self, T.self, outDType: T.dtype) { $1 }
            return
        }
        try c.withUnsafeBufferPointer(as: T.self) { pc in
            y.uncheckedMutableBufferPointer(as: T.self) { py in
                guard let src = pc.baseAddress, let dst = py.baseAddress else { return }
                if c.count == m * n {
                    dst.update(from: src, count: m * n)
                } else if rowVector {
                    for i in 0..<m { (dst + i * n).update(from: src, count: n) }
                } else if columnVector {
                    for i in 0..<m { (dst + i * n).update(repeating: src[i], count: n) }
                } else {
                    dst.update(repeating: src[0], count: m * n)
                }
            }
        }
    }

    func run(_ inputs: [Value?], _ context: ExecutionContext) throws -> [Value?] {
        let a = try inputs.tensor(0)
        if a.dtype.isInteger {
            // int32/int64/uint32/uint64 (opset 11+) through float64: exact while |values| < 2^53.
            let b = try inputs.tensor(1), c = try inputs.optionalTensor(2)
            guard b.dtype == a.dtype, c.map({ $0.dtype == a.dtype }) ?? true else { throw KernelError("Gemm inputs differ in type") }
            let y = try Op(k: self, a: a.converted(toFloat: .float64), b: b.converted(toFloat: .float64),
                           c: c.map { try $0.converted(toFloat: .float64) }).float(Double.self)
            return [.tensor(try Tensor(dtype: a.dtype, shape: y.shape, doubles: y.scalars(as: Double.self)))]
        }
        let out = try withFloatCompute([a, inputs.tensor(1), inputs.optionalTensor(2)]) { t in
            guard let a = t[0], let b = t[1] else { return [] }
            guard a.dtype == b.dtype, t[2].map({ $0.dtype == a.dtype }) ?? true else {
                throw KernelError("Gemm inputs differ in type")
            }
            return [try dispatch(a.dtype, Op(k: self, a: a, b: b, c: t[2]))]
        }
        return out.map { $0.map(Value.tensor) }
    }
}

// MARK: - MatMulInteger

/// Integer operand minus its zero point, as Double: exact, and lets the product run through dgemm
/// (every int8·int8 sum of fewer than 2^37 terms is exact in a double).
func shiftedToDouble(_ x: Tensor, zeroPoint: Tensor?, axis: Int?) throws -> Tensor {
    guard let v = x.intValues() else { throw KernelError("expected an 8-bit integer tensor, got \(x.dtype)") }
    var out = Tensor(uninitialized: .float64, shape: x.shape)
    let zp = try zeroPoint.map { z -> [Int] in
        guard let values = z.intValues() else { throw KernelError("zero point must be an integer tensor, got \(z.dtype)") }
        return values
    } ?? [0]
    if zp.count != 1 {
        guard let axis, axis >= 0, axis < x.rank, zp.count == x.shape[axis] else {
            throw KernelError("zero point of \(zp.count) values does not fit shape \(x.shape)")
        }
    }
    try out.withUnsafeMutableBufferPointer(as: Double.self) { p in
        if zp.count == 1 {
            for i in 0..<v.count { p[i] = Double(v[i] - zp[0]) }
        } else if let axis {
            // per-row (axis = rank-2) or per-column (axis = rank-1) zero points
            let strides = contiguousStrides(x.shape)
            let dim = x.shape[axis], st = strides[axis]
            for i in 0..<v.count { p[i] = Double(v[i] - zp[(i / st) % dim]) }
        }
    }
    return out
}

/// Rounds a float64 tensor of exact integers to int32.
func doubleToInt32(_ t: Tensor) -> Tensor {
    Tensor(shape: t.shape, scalars: t.uncheckedBufferPointer(as: Double.self) { $0.map { Int32(clamping: Int64($0.rounded())) } })
}

/// MatMul, since opset 1 (numpy matmul: broadcast batch dims, 1-D operands promoted).
/// A constant B (an inference session's weight) is packed once for the session (`PackedWeightCache`).
func matMulKernel(_ ctx: NodeContext) throws -> Kernel {
    let packed = PackedWeightCache.make(ctx, input: 1)
    return AnyKernel { inputs, _ in [.tensor(try matmul(inputs.tensor(0), inputs.tensor(1), packed: packed))] }
}

func registerMatMulOps(_ registry: OpRegistry) {
    registry.register("Gemm", since: 1) { ctx in try GemmKernel(ctx) }
    registry.register("MatMul", since: 1, matMulKernel)
    registry.register("MatMulInteger", since: 10, matMulIntegerKernel)

    // Gradient rules (GradientContext):
    registry.registerGradient("Gemm", gemmGradient)
    registry.registerGradient("MatMul", matMulGradient)
}

/// MatMulInteger, since opset 10.
func matMulIntegerKernel(_ ctx: NodeContext) throws -> Kernel {
    AnyKernel { inputs, _ in
        let a = try inputs.tensor(0), b = try inputs.tensor(1)
        let azp = try inputs.optionalTensor(2), bzp = try inputs.optionalTensor(3)
        // a_zero_point: scalar or per row of A ([M]); b_zero_point: scalar or per column of B ([N]).
        let ad = try shiftedToDouble(a, zeroPoint: azp, axis: a.rank >= 2 ? a.rank - 2 : 0)
        let bd = try shiftedToDouble(b, zeroPoint: bzp, axis: b.rank - 1)
        return [.tensor(doubleToInt32(try floatMatMul(ad, bd, Double.self)))]
    }
}

/// The gradient rule of Gemm.
func gemmGradient(_ g: GradientContext) throws -> [String?] {
    let dY = try g.requiredDY()
    let a = g.input(0), b = g.input(1)
    let transA = g.node.int("transA") == 1, transB = g.node.int("transB") == 1
    let alpha = g.node.float("alpha") ?? 1, beta = g.node.float("beta") ?? 1
    func gemm(_ x: String, _ y: String, _ tA: Bool, _ tB: Bool) -> String {
        g.op("Gemm", [x, y], attributes: ["transA": .int(tA ? 1 : 0), "transB": .int(tB ? 1 : 0),
                                           "alpha": .float(alpha), "beta": .float(0)])
    }
    var dA: String?, dB: String?, dC: String?
    if g.needs(0) {
        // Y = op(A) op(B): d op(A) = dY op(B)^T
        dA = transA ? gemm(b, dY, transB, true) : gemm(dY, b, false, !transB)
    }
    if g.needs(1) {
        // d op(B) = op(A)^T dY
        dB = transB ? gemm(dY, a, true, transA) : gemm(a, dY, !transA, false)
    }
    if g.needs(2) {
        var reduced: String
        let c = g.input(2)
        if let cShape = g.shapeInfo(c), cShape.count == 1, let y = g.shapeInfo(g.output(0)), y.count == 2, cShape[0] == y[1], cShape[0] != .value(1) {
            reduced = g.reduceSum(dY, axes: [0], keepdims: false)
        } else {
            reduced = g.reduced(dY, toInput: 2)
        }
        if beta != 1 { reduced = g.op("Mul", [reduced, try g.scalar(Double(beta), like: c, name: "beta")]) }
        dC = reduced
    }
    return [dA, dB, dC]
}

/// The gradient rule of MatMul.
func matMulGradient(_ g: GradientContext) throws -> [String?] {
    let dY = try g.requiredDY()
    var a = g.input(0), b = g.input(1)
    // An unknown rank is taken as a matrix or a batch of them (vectors have static ranks in practice);
    // the broadcast reduction then works on run-time shapes.
    let ra = g.rank(a) ?? 2, rb = g.rank(b) ?? 2
    // Vectors become matrices, and the gradient is reshaped back at the end.
    var grad = dY
    if ra == 1 && rb == 1 {
        return [g.needs(0) ? g.op("Mul", [dY, b]) : nil, g.needs(1) ? g.op("Mul", [dY, a]) : nil]
    }
    if ra == 1 { a = g.unsqueeze(a, axes: [0]); grad = g.unsqueeze(grad, axes: [-2]) }
    if rb == 1 { b = g.unsqueeze(b, axes: [1]); grad = g.unsqueeze(grad, axes: [-1]) }
    let aShape = ra == 1 ? g.shapeInfo(g.input(0)).map { [.value(1)] + $0 } : g.shapeInfo(a)
    let bShape = rb == 1 ? g.shapeInfo(g.input(1)).map { $0 + [.value(1)] } : g.shapeInfo(b)
    let yShape = TypeInference.matmulShape(aShape, bShape, transA: false, transB: false)
    var dA: String?, dB: String?
    if g.needs(0) {
        var d = g.ms("FusedMatMul", [grad, b], attributes: ["transB": .int(1), "alpha": .float(1)])[0]
        if let y = yShape, let k = bShape.map({ $0[$0.count - 2] }) {
            d = g.reduceToShape(d, gradShape: Array(y.dropLast()) + [k], of: a == g.input(0) ? a : g.input(0))
        }
        dA = ra == 1 ? g.reshape(d, like: g.input(0)) : d
    }
    if g.needs(1) {
        var d: String
        if max(ra, 2) >= 3 && rb == 2, let k = g.staticShape(g.input(1))?.first, let n = g.staticShape(g.input(1))?.last {
            // A batch of rows against one weight: one product over every row, as onnxruntime.
            let rows = g.op("Reshape", [a, g.ints([-1, k], name: "rows")])
            let gradRows = g.op("Reshape", [grad, g.ints([-1, n], name: "grad_rows")])
            d = g.op("Gemm", [rows, gradRows], attributes: ["transA": .int(1), "alpha": .float(1), "beta": .float(0)])
        } else {
            d = g.ms("FusedMatMul", [a, grad], attributes: ["transA": .int(1), "alpha": .float(1)])[0]
            if let y = yShape, let k = aShape.map({ $0[$0.count - 1] }) {
                d = g.reduceToShape(d, gradShape: Array(y.dropLast(2)) + [k, y[y.count - 1]], of: rb == 1 ? b : g.input(1))
            }
        }
        dB = rb == 1 ? g.reshape(d, like: g.input(1)) : d
    }
    return [dA, dB]
}
