import Foundation

/// RoiAlign: average or max of bilinear samples over each region's bins.

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
