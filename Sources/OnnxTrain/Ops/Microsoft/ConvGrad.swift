/// ConvGrad(dY [N,M,o…], X [N,C,i…], W [M,C/g,k…]) → dX?, dW?, dB? (com.microsoft v1), for 1-D,
/// 2-D and N-D convolutions, through im2col / col2im (Ops/ONNX/ConvGeometry.swift) and GEMM per
/// image and group, images spread over the kernel threads:
///   dW_g += dY_g · im2col(X_g)ᵀ,  dX_g = col2im(W_gᵀ · dY_g),  dB[m] = Σ_{n,spatial} dY.
/// Depthwise convolutions (group == C) and small images (several images per GEMM) take the
/// kernels of Ops/ONNX/ConvKernels.swift; 1×1 unit-stride unpadded ones skip im2col and col2im;
/// a float32 3×3 unit-stride dX, itself such a correlation, and dW, the adjoint of the forward's
/// tile transforms, run Winograd where the forward would (Ops/ONNX/Winograd.swift).
/// Unlike onnxruntime (which ignores auto_pad and so gets SAME_* wrong), auto_pad is resolved to
/// pads first, the way the forward Conv does.
/// The fewest F(4×4) tiles in the batch for which a float32 3×3 unit-stride convolution whose
/// transformed weights are not kept (training's forward Conv, whose weights change every step, and
/// ConvGrad's dX) takes Winograd where `winogradTile` does, as `winogradGradWTiles` for ConvGrad's
/// dW: with fewer, the weights' transform costs more than the products save, and the blocked
/// im2col product is faster. ResNet-18's 512-channel layers at 7×7, batch 8 (32 tiles; Zen 5, 2
/// threads, oneDNN's sgemm, ConvGradPathTests): forward 7.0 -> 5.3 ms, dX 7.1 -> 7.0 ms alone
/// and 12.0 -> 9.0 ms a ConvGrad node in the training step; 14×14 and larger (128+ tiles) stay on
/// Winograd (256 channels at 14×14: forward 3.8 against 5.5 ms im2col, dX 3.5 against 12.2).
nonisolated(unsafe) var winogradUnkeptWeightsTiles = 128

struct ConvGradKernel: Kernel {
    let window: WindowAttributes
    let group: Int
    let wantX: Bool, wantW: Bool, wantB: Bool

    func run(_ inputs: [Value?], _ context: ExecutionContext) throws -> [Value?] {
        let dy = try inputs.tensor(0), x = try inputs.tensor(1), w = try inputs.tensor(2)
        _ = try commonElementType([dy, x, w], names: ["dY", "X", "W"], floatOnly: true)
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
            try dispatch(t[0]!.dtype, Compute(dy: t[0]!, x: t[1]!, w: t[2]!, geometry: geometry, group: g,
                                                   wantX: wantX, wantW: wantW, wantB: wantB))
        }
        return outs.map { $0.map { .tensor($0) } }
    }

    struct Compute: ElementOperation {
        let dy: Tensor, x: Tensor, w: Tensor
        let geometry: ConvGeometry
        let group: Int
        let wantX: Bool, wantW: Bool, wantB: Bool

        func float<T: FloatElement>(_ type: T.Type) throws -> [Tensor?] {
            let n = x.shape[0], c = x.shape[1], m = w.shape[0]
            let cg = c / group, mg = m / group
            let outSize = geometry.outputSize, inSize = geometry.inputSize
            let rows = cg * geometry.kernelSize, wCount = w.count
            let colCount = try Tensor.checkedElementCount([rows, outSize], "ConvGrad column buffer")
            let dx = wantX ? try Tensor(kernelUninitialized: T.dtype, shape: x.shape, "ConvGrad dX") : nil
            var dw = wantW ? Tensor(uninitialized: T.dtype, shape: w.shape) : nil
            if !wantX && !wantW && !wantB { return [nil, nil, nil] }
            // dB[j] = Σ_{n, spatial} dY[n, j, spatial], whichever kernel takes dX and dW: each row
            // summed in T, the rows in Double.
            let db = wantB ? try dy.withUnsafeBufferPointer(as: T.self) { p in
                let sums = p.baseAddress.map { channelSums($0, images: n, channels: m, positions: outSize) } ?? [Double](repeating: 0, count: m)
                return Tensor(shape: [m], scalars: sums.map { T(fromDouble: $0) })
            } : nil
            // dX of a float32 3×3 unit-stride convolution is itself one (dY ⋆ flipped Wᵀ): Winograd
            // where `winogradTile` picks it for that shape (dY's channels in, X's out) and dX has
            // `winogradUnkeptWeightsTiles` tiles, threaded inside.
            var adjoint = geometry
            (adjoint.input, adjoint.output) = (geometry.output, geometry.input)
            var dxDone = false
            if T.self == Float.self, let dx, let tile = winogradTile(images: n, channels: m, outputs: c, group: group, adjoint),
               winogradOverride != nil || n * ((geometry.input[0] + 3) / 4) * ((geometry.input[1] + 3) / 4) >= winogradUnkeptWeightsTiles {
                try dy.withUnsafeBufferPointer(as: Float.self) { pdy in
                    try w.withUnsafeBufferPointer(as: Float.self) { pw in
                        guard let DY = pdy.baseAddress, let W = pw.baseAddress else { return }
                        try winogradGradX(tile: tile, DY, W, dx.storage.bytes.assumingMemoryBound(to: Float.self),
                                      images: n, channels: c, outputs: m, group: group, geometry)
                    }
                }
                dxDone = true
            }
            // dW of the same convolutions by Winograd too, where the forward takes it for this shape
            // and the batch has `winogradGradWTiles` tiles (`winogradGradWTile`).
            var dwDone = false
            if T.self == Float.self, let dw, let tile = winogradGradWTile(images: n, channels: c, outputs: m, group: group, geometry) {
                try dy.withUnsafeBufferPointer(as: Float.self) { pdy in
                    try x.withUnsafeBufferPointer(as: Float.self) { px in
                        guard let DY = pdy.baseAddress, let X = px.baseAddress else { return }
                        winogradGradW(tile: tile, X, DY, dw.storage.bytes.assumingMemoryBound(to: Float.self),
                                      images: n, channels: c, outputs: m, group: group, geometry)
                    }
                }
                dwDone = true
            }
            let needX = wantX && !dxDone, needW = wantW && !dwDone
            if !needX && !needW { return [dx, dw, db] }
            let depthwise = group == c && group > 1
            let block = depthwise ? 1 : convImageBlock(images: n, rows: rows, positions: outSize)
            if depthwise || block > 1 {
                // Direct depthwise loops, or several images per GEMM (ConvKernels.swift); dX and dW
                // are fresh tensors, written through their storage.
                let dxOut = needX ? dx?.storage.bytes.assumingMemoryBound(to: T.self) : nil
                let dwOut = needW ? dw?.storage.bytes.assumingMemoryBound(to: T.self) : nil
                try dy.withUnsafeBufferPointer(as: T.self) { pdy in
                    try x.withUnsafeBufferPointer(as: T.self) { px in
                        try w.withUnsafeBufferPointer(as: T.self) { pw in
                            guard let DY = pdy.baseAddress, let X = px.baseAddress, let W = pw.baseAddress else { return }
                            if depthwise {
                                depthwiseConvolutionGrad(DY, X, W, dx: dxOut, dw: dwOut, images: n, channels: c, outputs: m, geometry)
                            } else {
                                convolutionGradBlocked(DY, X, W, dx: dxOut, dw: dwOut, images: n, channels: c, outputs: m,
                                                       group: group, geometry, block: block)
                            }
                        }
                    }
                }
                return [dx, dw, db]
            }
            // A 1×1 kernel with unit strides and no padding: the image is its own column matrix,
            // and W_gᵀ · dY_g is dX_g itself.
            let direct = geometry.kernelSize == 1 && geometry.strides.allSatisfy { $0 == 1 }
                && geometry.padsBegin.allSatisfy { $0 == 0 } && geometry.padsEnd.allSatisfy { $0 == 0 }
            let taps = ConvTapRows.all(geometry)
            // dW's columns are unfolded a run of output rows at a time, about `convTileElements`
            // floats (1 MB), and multiplied at once while they are in cache: ResNet's 7×7 stride-2
            // stem unfolded 7.4 MB per image at 224×224, which the product then read back from
            // memory. (dX's col [rows, out] is still made whole, for col2im.)
            let lastOut = geometry.output[geometry.rank - 1], outerRows = outSize / max(lastOut, 1)
            let rowRuns = direct || lastOut == 0 ? 1
                : max(1, min(outerRows, (rows * outSize + convTileElements - 1) / convTileElements))
            let runCount = rowRuns == 1 ? colCount : try Tensor.checkedElementCount([rows, (outerRows + rowRuns - 1) / rowRuns, lastOut], "ConvGrad column buffer")
            let bufferCount = max(needX ? colCount : 0, needW ? runCount : 0)
            // Images are split over the kernel threads; each chunk sums its own dW partials in a
            // buffer of its own, added up in chunk order after.
            let chunks = max(1, min(n, Parallel.threadCount))
            let dwPartials = UnsafeMutablePointer<T>.allocate(capacity: max(1, needW ? chunks * wCount : 0))
            defer { dwPartials.deallocate() }
            // dx is fresh and not shared: its storage is written directly.
            let dxBase = needX ? dx?.storage.bytes.assumingMemoryBound(to: T.self) : nil
            try dy.withUnsafeBufferPointer(as: T.self) { pdy in
                try x.withUnsafeBufferPointer(as: T.self) { px in
                    try w.withUnsafeBufferPointer(as: T.self) { pw in
                        guard let ydy = pdy.baseAddress, let yx = px.baseAddress, let yw = pw.baseAddress else { return }
                        Parallel.forRange(chunks) { chunkRange in
                            let col = UnsafeMutablePointer<T>.allocate(capacity: max(bufferCount, 1))
                            defer { col.deallocate() }
                            for chunk in chunkRange {
                                let images = Parallel.chunk(chunk, of: chunks, count: n)
                                let dwLocal = dwPartials + chunk * wCount
                                if needW { dwLocal.update(repeating: 0, count: wCount) }
                                for b in images {
                                    for gi in 0..<group {
                                        let dyG = ydy + (b * m + gi * mg) * outSize       // [mg, out]
                                        let xOffset = (b * c + gi * cg) * inSize            // [cg, in…]
                                        let wG = yw + gi * mg * rows                        // [mg, rows]
                                        if needW {
                                            // dW_gᵀ [rows, mg] += col [rows, out] · dY_gᵀ [out, mg]: the
                                            // transposed product, as OpenBLAS runs a long M and a short N
                                            // (e.g. 75 × 16) about twice as fast as the other way round;
                                            // a run of output rows at a time (`rowRuns`), each adding on.
                                            for run in 0..<rowRuns {
                                                let outRows = (outerRows * run / rowRuns)..<(outerRows * (run + 1) / rowRuns)
                                                let p0 = rowRuns == 1 ? 0 : outRows.lowerBound * lastOut
                                                let width = rowRuns == 1 ? outSize : outRows.count * lastOut
                                                if width == 0 { continue }
                                                let columns: UnsafePointer<T>
                                                if direct {
                                                    columns = yx + xOffset
                                                } else {
                                                    im2col(yx + xOffset, channels: cg, geometry, col, taps: taps, rows: rowRuns == 1 ? nil : outRows)
                                                    columns = UnsafePointer(col)
                                                }
                                                convGemm(transA: false, transB: true, m: rows, n: mg, k: width,
                                                     a: columns, lda: width, b: dyG + p0, ldb: outSize, beta: T(1),
                                                     c: dwLocal + gi * rows * mg, ldc: mg)
                                            }
                                        }
                                        if let dxBase {
                                            // col [rows, out] = W_gᵀ [rows, mg] · dY_g [mg, out], straight into dX for 1×1
                                            convGemm(transA: true, transB: false, m: rows, n: outSize, k: mg,
                                                 a: wG, lda: rows, b: dyG, ldb: outSize, beta: T(0),
                                                 c: direct ? dxBase + xOffset : col, ldc: outSize)
                                            if !direct {
                                                (dxBase + xOffset).update(repeating: 0, count: cg * inSize)
                                                col2im(col, channels: cg, geometry, dxBase + xOffset, taps: taps)
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            if needW {
                try dw!.withUnsafeMutableBufferPointer(as: T.self) { pdw in
                    // Partials are [group][rows][mg]: summed in chunk order and transposed into [M, rows].
                    let out = pdw.baseAddress!
                    for gi in 0..<group {
                        for o in 0..<mg {
                            for r in 0..<rows {
                                var sum = dwPartials[gi * rows * mg + r * mg + o]
                                for chunk in 1..<chunks { sum += dwPartials[chunk * wCount + gi * rows * mg + r * mg + o] }
                                out[(gi * mg + o) * rows + r] = sum
                            }
                        }
                    }
                }
            }
            return [dx, dw, db]
        }
    }
}

/// ConvTransposeGrad(dY [N,Cout,o…], X [N,Cin,i…], W [Cin,Cout/g,k…]) → dX?, dW?, dB? (com.microsoft
/// v1). onnxruntime 1.19.2 has it for CUDA only, so CPU artifacts with a ConvTranspose never ran there.
/// ConvTranspose is the adjoint of the convolution that maps its output image back to its input
/// image (ConvTransposeKernel.geometry, with output_padding, output_shape and auto_pad resolved), so:
///   dX = Conv(dY, W) over that geometry;  dW = ConvGrad's weight gradient with X as the
///   convolution's output gradient and dY as its input;  dB[c] = Σ_{n,spatial} dY.
struct ConvTransposeGradKernel: Kernel {
    let forward: ConvTransposeKernel
    let wantX: Bool, wantW: Bool, wantB: Bool

    struct Compute: ElementOperation {
        let dy: Tensor, x: Tensor, w: Tensor, geometry: ConvGeometry, group: Int
        let wantX: Bool, wantW: Bool, wantB: Bool
        func float<T: FloatElement>(_ type: T.Type) throws -> [Tensor?] {
            let dx = wantX ? try convolution(dy, w, bias: nil, group: group, geometry: geometry, T.self) : nil
            let dw = wantW ? try ConvGradKernel.Compute(dy: x, x: dy, w: w, geometry: geometry, group: group,
                                                        wantX: false, wantW: true, wantB: false).float(T.self)[1] : nil
            var db: Tensor?
            if wantB {
                let n = dy.shape[0], c = dy.shape[1], inner = dy.count / max(n * c, 1)
                var sums = [Double](repeating: 0, count: c)
                try dy.withUnsafeBufferPointer(as: T.self) { p in
                    for img in 0..<n { for ch in 0..<c { for i in 0..<inner { sums[ch] += p[(img * c + ch) * inner + i].doubleValue } } }
                }
                db = Tensor(shape: [c], scalars: sums.map { T(fromDouble: $0) })
            }
            return [dx, dw, db]
        }
    }

    func run(_ inputs: [Value?], _ context: ExecutionContext) throws -> [Value?] {
        let dy = try inputs.tensor(0), x = try inputs.tensor(1), w = try inputs.tensor(2)
        _ = try commonElementType([dy, x, w], names: ["dY", "X", "W"], floatOnly: true)
        let geometry = try forward.geometry(x: x, w: w)
        let g = forward.group
        guard x.shape[1] == w.shape[0], x.shape[1] % g == 0 else { throw KernelError("W \(w.shape) does not fit X \(x.shape) with group \(g)") }
        let expected = [x.shape[0], w.shape[1] * g] + geometry.input
        guard dy.shape == expected else { throw KernelError("dY \(dy.shape) must have shape \(expected)") }
        let outs = try withFloatCompute([dy, x, w]) { t in
            try dispatch(t[0]!.dtype, Compute(dy: t[0]!, x: t[1]!, w: t[2]!, geometry: geometry, group: g,
                                                   wantX: wantX, wantW: wantW, wantB: wantB))
        }
        return outs.map { $0.map { .tensor($0) } }
    }
}

func registerConvGradOps(_ registry: OpRegistry) {
    registry.register("ConvGrad", domain: "com.microsoft", since: 1, convGradKernel)
    registry.register("ConvTransposeGrad", domain: "com.microsoft", since: 1) { ctx in
        ConvTransposeGradKernel(forward: try ConvTransposeKernel(ctx), wantX: ctx.hasOutput(0), wantW: ctx.hasOutput(1), wantB: ctx.hasOutput(2))
    }
}

/// ConvGrad (com.microsoft), since opset 1.
func convGradKernel(_ ctx: NodeContext) throws -> Kernel {
    ConvGradKernel(window: try WindowAttributes(ctx), group: try ctx.int("group", default: 1),
                   wantX: ctx.hasOutput(0), wantW: ctx.hasOutput(1), wantB: ctx.hasOutput(2))
}

