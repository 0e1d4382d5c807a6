import Foundation

/// AffineGrid: sampling grids from affine matrices (2-D and 3-D).

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
