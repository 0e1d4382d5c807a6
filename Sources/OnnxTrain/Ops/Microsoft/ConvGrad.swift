/// ConvGrad(dY [N,M,o…], X [N,C,i…], W [M,C/g,k…]) → dX?, dW?, dB? (com.microsoft v1), for 1-D,
/// 2-D and N-D convolutions, through im2col / col2im (Ops/ONNX/ConvGeometry.swift) and GEMM per
/// image and group:
///   dW_g += dY_g · im2col(X_g)ᵀ,  dX_g = col2im(W_gᵀ · dY_g),  dB[m] = Σ_{n,spatial} dY.
/// Unlike onnxruntime (which ignores auto_pad and so gets SAME_* wrong), auto_pad is resolved to
/// pads first, the way the forward Conv does.
struct ConvGradKernel: Kernel {
    let window: WindowAttributes
    let group: Int
    let wantX: Bool, wantW: Bool, wantB: Bool

    func run(_ inputs: [Value?], _ context: ExecutionContext) throws -> [Value?] {
        let dy = try inputs.tensor(0), x = try inputs.tensor(1), w = try inputs.tensor(2)
        _ = try commonFloatType([dy, x, w], names: ["dY", "X", "W"])
        guard x.rank >= 3, w.rank == x.rank, dy.rank == x.rank else {
            throw KernelError("X \(x.shape), W \(w.shape) and dY \(dy.shape) must have one rank >= 3")
        }
        let kernel = Array(w.shape[2...])
        guard window.kernelShape.isEmpty || window.kernelShape == kernel else {
            throw KernelError("kernel_shape \(window.kernelShape) does not match W's spatial shape \(kernel)")
        }
        let geometry = try window.geometry(spatial: Array(x.shape[2...]), kernel: kernel)
        let n = x.shape[0], c = x.shape[1], m = w.shape[0], g = group
        guard g >= 1, c % g == 0, m % g == 0, w.shape[1] == c / g else {
            throw KernelError("W \(w.shape) does not fit X \(x.shape) with group \(g)")
        }
        let expected = [n, m] + geometry.output
        guard dy.shape == expected else { throw KernelError("dY \(dy.shape) must have shape \(expected)") }
        let outs = try withFloatCompute([dy, x, w]) { t in
            try dispatchFloat(t[0]!.dtype, Compute(dy: t[0]!, x: t[1]!, w: t[2]!, geometry: geometry, group: g,
                                                   wantX: wantX, wantW: wantW, wantB: wantB))
        }
        return outs.map { $0.map { .tensor($0) } }
    }

    struct Compute: FloatOperation {
        let dy: Tensor, x: Tensor, w: Tensor
        let geometry: ConvGeometry
        let group: Int
        let wantX: Bool, wantW: Bool, wantB: Bool

        func callAsFunction<T: FloatElement>(_ type: T.Type) throws -> [Tensor?] {
            let n = x.shape[0], c = x.shape[1], m = w.shape[0]
            let cg = c / group, mg = m / group
            let outSize = geometry.outputSize, inSize = geometry.inputSize
            let rows = cg * geometry.kernelSize
            var dx = wantX ? Tensor(zeros: T.dtype, shape: x.shape) : nil
            var dw = wantW ? Tensor(zeros: T.dtype, shape: w.shape) : nil
            var col = try [T](kernelScratch: [rows, outSize], "ConvGrad column buffer")
            dy.withUnsafeBufferPointer(as: T.self) { pdy in
                x.withUnsafeBufferPointer(as: T.self) { px in
                    w.withUnsafeBufferPointer(as: T.self) { pw in
                        guard let ydy = pdy.baseAddress, let yx = px.baseAddress, let yw = pw.baseAddress else { return }
                        for b in 0..<n {
                            for gi in 0..<group {
                                let dyG = ydy + (b * m + gi * mg) * outSize       // [mg, out]
                                let xOffset = (b * c + gi * cg) * inSize            // [cg, in…]
                                let wG = yw + gi * mg * rows                        // [mg, rows]
                                if dw != nil {
                                    col.withUnsafeMutableBufferPointer { pc in im2col(yx + xOffset, channels: cg, geometry, pc.baseAddress!) }
                                    dw!.withUnsafeMutableBufferPointer(as: T.self) { pdw in
                                        // dW_g [mg, rows] += dY_g [mg, out] · colᵀ [out, rows]
                                        gemm(transA: false, transB: true, m: mg, n: rows, k: outSize, alpha: T(1),
                                             a: dyG, lda: outSize, b: col, ldb: outSize, beta: T(1),
                                             c: pdw.baseAddress! + gi * mg * rows, ldc: rows)
                                    }
                                }
                                if dx != nil {
                                    col.withUnsafeMutableBufferPointer { pc in
                                        // col [rows, out] = W_gᵀ [rows, mg] · dY_g [mg, out]
                                        gemm(transA: true, transB: false, m: rows, n: outSize, k: mg, alpha: T(1),
                                             a: wG, lda: rows, b: dyG, ldb: outSize, beta: T(0), c: pc.baseAddress!, ldc: outSize)
                                    }
                                    dx!.withUnsafeMutableBufferPointer(as: T.self) { pdx in
                                        col2im(col, channels: cg, geometry, pdx.baseAddress! + xOffset)
                                    }
                                }
                            }
                        }
                    }
                }
            }
            var db: Tensor?
            if wantB {
                var sums = [Double](repeating: 0, count: m)
                dy.withUnsafeBufferPointer(as: T.self) { p in
                    for b in 0..<n { for j in 0..<m { for s in 0..<outSize { sums[j] += Double(p[(b * m + j) * outSize + s]) } } }
                }
                db = Tensor(shape: [m], scalars: sums.map { T($0) })
            }
            return [dx, dw, db]
        }
    }
}

func registerConvGradOps(_ registry: OpRegistry) {
    registry.register("ConvGrad", domain: "com.microsoft", since: 1) { ctx in
        ConvGradKernel(window: try WindowAttributes(ctx), group: try ctx.int("group", default: 1),
                       wantX: ctx.hasOutput(0), wantW: ctx.hasOutput(1), wantB: ctx.hasOutput(2))
    }
}
