import Foundation

/// GridSample: the input sampled at grid positions (linear, nearest or cubic).

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

/// GridSample, since opset 16, 20 (20 renames the modes and adds cubic).
func gridSampleKernel(_ ctx: NodeContext) throws -> Kernel {
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
