import Foundation

/// Sampling and detection ops: GridSample, AffineGrid, RoiAlign, NonMaxSuppression, Col2Im, Det.
/// None is hot in training, so each computes in Double once for every float type.
func registerVisionOps(_ registry: OpRegistry) {
    let gridSampleFactory: KernelFactory = { ctx in
        var mode = try ctx.string("mode", default: ctx.sinceVersion >= 20 ? "linear" : "bilinear")
        if mode == "bilinear" { mode = "linear" }
        if mode == "bicubic" { mode = "cubic" }
        let padding = try ctx.string("padding_mode", default: "zeros")
        let alignCorners = try ctx.int("align_corners", default: 0) != 0
        guard ["linear", "nearest", "cubic"].contains(mode) else { throw KernelError("unknown mode '\(mode)'") }
        guard ["zeros", "border", "reflection"].contains(padding) else { throw KernelError("unknown padding_mode '\(padding)'") }
        return AnyKernel { inputs, _ in
            [.tensor(try gridSample(try inputs.tensor(0), try inputs.tensor(1), mode: mode, padding: padding, alignCorners: alignCorners))]
        }
    }
    for since in [16, 20] { registry.register("GridSample", since: since, gridSampleFactory) }
    registry.register("AffineGrid", since: 20, affineGridKernel)
    registry.register("RoiAlign", since: [10, 16], roiAlignKernel)
    registry.register("NonMaxSuppression", since: 10, nonMaxSuppressionKernel)
    registry.register("Col2Im", since: 18, col2ImKernel)
    registry.register("Det", since: 11, detKernel)
}

/// AffineGrid, since opset 20.
func affineGridKernel(_ ctx: NodeContext) throws -> Kernel {
    let alignCorners = try ctx.int("align_corners", default: 0) != 0
    return AnyKernel { inputs, _ in
        let theta = try inputs.tensor(0)
        let size = try inputs.tensor(1).ints("size")
        let spatial = size.count - 2
        guard spatial == 2 || spatial == 3, theta.shape == [size[0], spatial, spatial + 1] else {
            throw KernelError("theta \(theta.shape) does not fit size \(size)")
        }
        try checkShape(size, "size")
        let th = try theta.doubles()
        let dims = Array(size[2...])
        func base(_ i: Int, _ n: Int) -> Double {
            alignCorners ? (n == 1 ? 0 : -1 + 2 * Double(i) / Double(n - 1)) : (2 * Double(i) + 1) / Double(n) - 1
        }
        let points = dims.reduce(1, *)
        var out = [Double](repeating: 0, count: size[0] * points * spatial)
        let strides = contiguousStrides(dims)
        for n in 0..<size[0] {
            for p in 0..<points {
                // Homogeneous point (x, y[, z], 1): x runs along the last dimension.
                var h = [Double](repeating: 1, count: spatial + 1)
                for k in 0..<spatial {
                    let d = spatial - 1 - k
                    h[k] = base((p / strides[d]) % dims[d], dims[d])
                }
                for r in 0..<spatial {
                    var v = 0.0
                    for c in 0...spatial { v += th[(n * spatial + r) * (spatial + 1) + c] * h[c] }
                    out[(n * points + p) * spatial + r] = v
                }
            }
        }
        return [.tensor(try Tensor(dtype: theta.dtype, shape: [size[0]] + dims + [spatial], doubles: out))]
    }
}

/// RoiAlign, since opset 10, 16.
func roiAlignKernel(_ ctx: NodeContext) throws -> Kernel {
    let since = ctx.sinceVersion
    let mode = try ctx.string("mode", default: "avg")
    let outH = try ctx.int("output_height", default: 1), outW = try ctx.int("output_width", default: 1)
    let samplingRatio = try ctx.int("sampling_ratio", default: 0)
    let spatialScale = Double(try ctx.float("spatial_scale", default: 1))
    let halfPixel = try ctx.string("coordinate_transformation_mode", default: since >= 16 ? "half_pixel" : "output_half_pixel") == "half_pixel"
    guard mode == "avg" || mode == "max", outH > 0, outW > 0, samplingRatio >= 0 else { throw KernelError("invalid RoiAlign attributes") }
    return AnyKernel { inputs, _ in
        let x = try inputs.tensor(0), rois = try inputs.tensor(1)
        let batch = try inputs.tensor(2).ints("batch_indices")
        guard x.rank == 4, rois.rank == 2, rois.shape[1] == 4, batch.count == rois.shape[0] else {
            throw KernelError("expected X [N,C,H,W], rois [R,4], batch_indices [R]")
        }
        let (c, h, w) = (x.shape[1], x.shape[2], x.shape[3])
        try checkShape([batch.count, c, outH, outW], "output")
        let data = try x.doubles(), r = try rois.doubles()
        var out = [Double](repeating: 0, count: batch.count * c * outH * outW)
        for k in 0..<batch.count {
            let b = try checkedIndex(batch[k], x.shape[0])
            let offset = halfPixel ? 0.5 : 0
            let x0 = r[k * 4] * spatialScale - offset, y0 = r[k * 4 + 1] * spatialScale - offset
            var rw = r[k * 4 + 2] * spatialScale - offset - x0, rh = r[k * 4 + 3] * spatialScale - offset - y0
            if !halfPixel { rw = max(rw, 1); rh = max(rh, 1) }
            let binH = rh / Double(outH), binW = rw / Double(outW)
            let gridH = samplingRatio > 0 ? samplingRatio : try checkedInt((rh / Double(outH)).rounded(.up), "roi height")
            let gridW = samplingRatio > 0 ? samplingRatio : try checkedInt((rw / Double(outW)).rounded(.up), "roi width")
            guard gridH <= 1 << 12, gridW <= 1 << 12 else { throw KernelError("roi \(k) needs a \(gridH)x\(gridW) sampling grid per bin") }
            let count = Double(max(gridH * gridW, 1))
            for ch in 0..<c {
                let plane = (b * c + ch) * h * w
                for ph in 0..<outH {
                    for pw in 0..<outW {
                        var acc = mode == "max" ? -Double.infinity : 0
                        var any = false
                        for iy in 0..<gridH {
                            let yy = y0 + Double(ph) * binH + (Double(iy) + 0.5) * binH / Double(gridH)
                            for ix in 0..<gridW {
                                let xx = x0 + Double(pw) * binW + (Double(ix) + 0.5) * binW / Double(gridW)
                                let taps = bilinearTaps(yy, xx, h, w)
                                any = true
                                if mode == "max" {
                                    for (i, wt) in taps { acc = max(acc, wt * data[plane + i]) }
                                    if taps.isEmpty { acc = max(acc, 0) }
                                } else {
                                    for (i, wt) in taps { acc += wt * data[plane + i] }
                                }
                            }
                        }
                        out[((k * c + ch) * outH + ph) * outW + pw] = mode == "max" ? (any ? acc : 0) : acc / count
                    }
                }
            }
        }
        return [.tensor(try Tensor(dtype: x.dtype, shape: [batch.count, c, outH, outW], doubles: out))]
    }
}

/// NonMaxSuppression, since opset 10.
func nonMaxSuppressionKernel(_ ctx: NodeContext) throws -> Kernel {
    let centerBox = try ctx.int("center_point_box", default: 0) != 0
    return AnyKernel { inputs, _ in
        let boxes = try inputs.tensor(0), scores = try inputs.tensor(1)
        guard boxes.rank == 3, boxes.shape[2] == 4, scores.rank == 3, scores.shape[0] == boxes.shape[0], scores.shape[2] == boxes.shape[1] else {
            throw KernelError("expected boxes [B,N,4] and scores [B,C,N], got \(boxes.shape) and \(scores.shape)")
        }
        let maxOut = try inputs.optionalTensor(2)?.ints("max_output_boxes_per_class").first ?? 0
        let iouThreshold = try inputs.optionalTensor(3)?.doubles().first ?? 0
        let scoreThreshold = try inputs.optionalTensor(4)?.doubles().first
        let bx = try boxes.doubles(), sc = try scores.doubles()
        let (nb, nc, n) = (scores.shape[0], scores.shape[1], scores.shape[2])
        func corners(_ b: Int, _ i: Int) -> (Double, Double, Double, Double) {
            let p = (b * n + i) * 4
            if centerBox {
                return (bx[p + 1] - bx[p + 3] / 2, bx[p] - bx[p + 2] / 2, bx[p + 1] + bx[p + 3] / 2, bx[p] + bx[p + 2] / 2)
            }
            return (min(bx[p], bx[p + 2]), min(bx[p + 1], bx[p + 3]), max(bx[p], bx[p + 2]), max(bx[p + 1], bx[p + 3]))
        }
        func iou(_ a: (Double, Double, Double, Double), _ b: (Double, Double, Double, Double)) -> Double {
            let ih = max(0, min(a.2, b.2) - max(a.0, b.0)), iw = max(0, min(a.3, b.3) - max(a.1, b.1))
            let inter = ih * iw
            let union = (a.2 - a.0) * (a.3 - a.1) + (b.2 - b.0) * (b.3 - b.1) - inter
            return inter <= 0 || union <= 0 ? 0 : inter / union
        }
        var selected: [Int64] = []
        for b in 0..<nb {
            for c in 0..<nc where maxOut > 0 {
                let s = (0..<n).map { sc[(b * nc + c) * n + $0] }
                var candidates = (0..<n).filter { i in scoreThreshold.map { s[i] > $0 } ?? true }
                candidates.sort { s[$0] > s[$1] || (s[$0] == s[$1] && $0 < $1) }
                var kept: [Int] = []
                for i in candidates where kept.count < maxOut {
                    let box = corners(b, i)
                    if kept.allSatisfy({ iou(corners(b, $0), box) <= iouThreshold }) { kept.append(i) }
                }
                for i in kept { selected += [Int64(b), Int64(c), Int64(i)] }
            }
        }
        return [.tensor(Tensor(shape: [selected.count / 3, 3], scalars: selected))]
    }
}

/// Col2Im, since opset 18.
func col2ImKernel(_ ctx: NodeContext) throws -> Kernel {
    let attrDilations = try ctx.ints("dilations"), attrPads = try ctx.ints("pads"), attrStrides = try ctx.ints("strides")
    return AnyKernel { inputs, _ in
        let x = try inputs.tensor(0)
        let image = try inputs.tensor(1).ints("image_shape"), block = try inputs.tensor(2).ints("block_shape")
        let s = image.count
        for v in image + block + (attrDilations ?? []) + (attrPads ?? []) + (attrStrides ?? []) where !magnitude(v, below: 1 << 31) {
            throw KernelError("image_shape, block_shape, dilations, pads and strides must stay below 2^31, got \(v)")
        }
        let dil = attrDilations ?? [Int](repeating: 1, count: s), str = attrStrides ?? [Int](repeating: 1, count: s)
        let pads = attrPads ?? [Int](repeating: 0, count: 2 * s)
        guard block.count == s, dil.count == s, str.count == s, pads.count == 2 * s, x.rank == 3 else { throw KernelError("image_shape, block_shape, dilations, strides and pads disagree") }
        let kernel = block.reduce(1, *)
        guard kernel > 0, x.shape[1] % kernel == 0 else { throw KernelError("input channels \(x.shape[1]) are not a multiple of the block size \(kernel)") }
        let c = x.shape[1] / kernel
        // Blocks per spatial axis over the padded image.
        var counts: [Int] = []
        for d in 0..<s {
            guard str[d] > 0 else { throw KernelError("strides must be positive") }
            let span = dil[d] * (block[d] - 1) + 1
            counts.append((image[d] + pads[d] + pads[s + d] - span) / str[d] + 1)
        }
        try checkShape(counts.map { max($0, 0) }, "block count")
        try checkShape(image, "image_shape")
        guard counts.reduce(1, *) == x.shape[2], counts.allSatisfy({ $0 > 0 }) else { throw KernelError("input length \(x.shape[2]) does not match the block count \(counts)") }
        try checkShape(image, "image_shape")
        let data = try x.doubles()
        let l = x.shape[2], pixels = image.reduce(1, *)
        var out = [Double](repeating: 0, count: x.shape[0] * c * pixels)
        let blockStrides = contiguousStrides(block), countStrides = contiguousStrides(counts), imageStrides = contiguousStrides(image)
        for n in 0..<x.shape[0] {
            for ch in 0..<c {
                for k in 0..<kernel {
                    for p in 0..<l {
                        var flat = 0, inside = true
                        for d in 0..<s {
                            let pos = ((p / countStrides[d]) % counts[d]) * str[d] + ((k / blockStrides[d]) % block[d]) * dil[d] - pads[d]
                            if pos < 0 || pos >= image[d] { inside = false; break }
                            flat += pos * imageStrides[d]
                        }
                        if inside { out[(n * c + ch) * pixels + flat] += data[(n * x.shape[1] + ch * kernel + k) * l + p] }
                    }
                }
            }
        }
        return [.tensor(try Tensor(dtype: x.dtype, shape: [x.shape[0], c] + image, doubles: out))]
    }
}

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

/// Bilinear taps (flat index, weight) at (y, x) in an h x w plane, the RoiAlign way: points more
/// than one pixel outside contribute nothing, others clamp to the edge.
private func bilinearTaps(_ y: Double, _ x: Double, _ h: Int, _ w: Int) -> [(Int, Double)] {
    if !(y >= -1 && y <= Double(h) && x >= -1 && x <= Double(w)) { return [] }  // NaN lands here too
    var y = max(y, 0), x = max(x, 0)
    var yl = Int(y), xl = Int(x)
    var yh: Int, xh: Int
    if yl >= h - 1 { yh = h - 1; yl = h - 1; y = Double(yl) } else { yh = yl + 1 }
    if xl >= w - 1 { xh = w - 1; xl = w - 1; x = Double(xl) } else { xh = xl + 1 }
    let ly = y - Double(yl), lx = x - Double(xl), hy = 1 - ly, hx = 1 - lx
    return [(yl * w + xl, hy * hx), (yl * w + xh, hy * lx), (yh * w + xl, ly * hx), (yh * w + xh, ly * lx)]
}

/// GridSample over any number of spatial dims (the onnx reference algorithm, in Double).
private func gridSample(_ x: Tensor, _ grid: Tensor, mode: String, padding: String, alignCorners: Bool) throws -> Tensor {
    let s = x.rank - 2
    guard s >= 1, grid.rank == x.rank, grid.shape[0] == x.shape[0], grid.shape[grid.rank - 1] == s else {
        throw KernelError("grid \(grid.shape) does not fit input \(x.shape)")
    }
    let dims = Array(x.shape[2...])
    let outSpatial = Array(grid.shape[1..<(grid.rank - 1)])
    let points = outSpatial.reduce(1, *), pixels = dims.reduce(1, *)
    let (nb, c) = (x.shape[0], x.shape[1])
    let data = try x.doubles(), g = try grid.doubles()
    let strides = contiguousStrides(dims)
    let lo: [Double] = dims.map { _ in alignCorners ? 0 : -0.5 }
    let hi: [Double] = dims.map { alignCorners ? Double($0 - 1) : Double($0) - 0.5 }
    func reflect(_ v: Double, _ a: Double, _ b: Double) -> Double {
        let range = b - a
        if range <= 0 { return a }
        if v < a {
            let dx = a - v, n = Int(dx / range), r = dx - Double(n) * range
            return n % 2 == 0 ? a + r : b - r
        }
        if v > b {
            let dx = v - b, n = Int(dx / range), r = dx - Double(n) * range
            return n % 2 == 0 ? b - r : a + r
        }
        return v
    }
    /// The pixel index along dim d for integer coordinate i, or nil for a zero (zeros padding).
    func pixel(_ i: Int, _ d: Int) -> Int? {
        switch padding {
        case "zeros": return i >= 0 && i < dims[d] ? i : nil
        case "border": return min(max(i, 0), dims[d] - 1)
        default: return min(max(Int(reflect(Double(i), lo[d], hi[d])), 0), dims[d] - 1)
        }
    }
    var out = [Double](repeating: 0, count: nb * c * points)
    for n in 0..<nb {
        for p in 0..<points {
            // Grid entries run x, y, z: the last spatial dim first.
            var coord = [Double](repeating: 0, count: s)
            for k in 0..<s {
                let v = g[(n * points + p) * s + k]
                let d = s - 1 - k
                coord[d] = alignCorners ? (v + 1) / 2 * Double(dims[d] - 1) : ((v + 1) * Double(dims[d]) - 1) / 2
                // Far outside (or NaN): pin just past the edge, so Int conversions stay defined.
                if !(abs(coord[d]) <= 1e9) { coord[d] = -1e9 }
            }
            if mode == "nearest" {
                // Half to even in every rank, as the onnx 1.22 expected outputs do (PyTorch's nearbyint).
                coord = coord.map { $0.rounded(.toNearestOrEven) }
            }
            for d in 0..<s where coord[d] < lo[d] || coord[d] > hi[d] {
                if padding == "border" { coord[d] = min(max(coord[d], 0), Double(dims[d] - 1)) }
                if padding == "reflection" { coord[d] = reflect(coord[d], lo[d], hi[d]) }
            }
            // Taps per dim, then their tensor product.
            var taps: [[(Int?, Double)]] = []
            for d in 0..<s {
                let v = coord[d]
                switch mode {
                case "nearest": taps.append([(pixel(Int(v), d), 1)])
                case "linear":
                    let f = v.rounded(.down), t = v - f
                    taps.append([(pixel(Int(f), d), 1 - t), (pixel(Int(f) + 1, d), t)])
                default:
                    let f = v.rounded(.down), t = v - f, a = -0.75
                    let w = [((a * (t + 1) - 5 * a) * (t + 1) + 8 * a) * (t + 1) - 4 * a,
                             ((a + 2) * t - (a + 3)) * t * t + 1,
                             ((a + 2) * (1 - t) - (a + 3)) * (1 - t) * (1 - t) + 1,
                             ((a * (2 - t) - 5 * a) * (2 - t) + 8 * a) * (2 - t) - 4 * a]
                    taps.append((0..<4).map { (pixel(Int(f) - 1 + $0, d), w[$0]) })
                }
            }
            var combos: [(Int?, Double)] = [(0, 1)]
            for d in 0..<s {
                combos = combos.flatMap { base in taps[d].map { t in
                    (base.0.flatMap { b in t.0.map { b + $0 * strides[d] } }, base.1 * t.1)
                } }
            }
            for ch in 0..<c {
                var v = 0.0
                let plane = (n * c + ch) * pixels
                for (i, w) in combos { if let i { v += w * data[plane + i] } }
                out[(n * c + ch) * points + p] = v
            }
        }
    }
    return try Tensor(dtype: x.dtype, shape: [nb, c] + outSpatial, doubles: out)
}
