/// Transpose: a strided copy with the axes permuted; 4-byte elements whose contiguous input axis
/// moves away from the end in 8 x 8 tiles transposed in registers.

/// Transpose, since opset 1.
func transposeKernel(_ ctx: NodeContext) throws -> Kernel {
    let perm = try ctx.ints("perm")
    return AnyKernel { inputs, _ in
        let x = try inputs.tensor(0)
        return [.tensor(try transpose(x, perm: perm ?? Array((0..<x.rank).reversed())))]
    }
}

/// `x` with its axes permuted: output axis i is input axis `perm[i]`.
func transpose(_ x: Tensor, perm: [Int]) throws -> Tensor {
    guard perm.count == x.rank, Set(perm) == Set(0..<x.rank) else { throw KernelError("perm \(perm) is not a permutation of \(x.rank) axes") }
    let strides = contiguousStrides(x.shape)
    let shape = perm.map { x.shape[$0] }
    if x.dtype.byteSize == 4, let out = tileTranspose32(x, shape: shape, strides: perm.map { strides[$0] }) { return out }
    // Output axes that are consecutive in the input too are one axis of the copy (ShuffleNet's
    // channel shuffle [N, g, C/g, H, W] -> [N, C/g, g, H, W] copies runs of H·W, not of W).
    let (merged, mergedStrides) = mergedAxes(shape, perm.map { strides[$0] })
    if x.dtype != .string, merged.count < shape.count {
        return try stridedCopy(x, shape: merged, strides: mergedStrides).reshaped(shape)
    }
    return try stridedCopy(x, shape: shape, strides: perm.map { strides[$0] })
}

/// A strided view's shape and strides with size-1 axes dropped and each output axis whose input
/// stride is the next axis's stride times its size folded into the next (the same elements in
/// the same order). A view of no axes left becomes one axis of its element count.
func mergedAxes(_ shape: [Int], _ strides: [Int]) -> (shape: [Int], strides: [Int]) {
    var outShape: [Int] = [], outStrides: [Int] = []
    for (d, s) in zip(shape, strides) where d != 1 {
        if let last = outStrides.last, last == s * d {
            outShape[outShape.count - 1] *= d
            outStrides[outStrides.count - 1] = s
        } else {
            outShape.append(d)
            outStrides.append(s)
        }
    }
    if outShape.isEmpty { return ([shape.reduce(1, *)], [1]) }
    return (outShape, outStrides)
}

/// A transpose of 4-byte elements that moves the input's contiguous axis away from the end
/// (attention's [B, H, T, D] -> [B, H, D, T], a matrix's [R, C] -> [C, R]), in 8 x 8 tiles
/// transposed in registers: eight 8-element loads along the input's contiguous axis, three
/// rounds of even/odd unshuffles, eight 8-element stores along the output's. nil for other
/// permutations (their last output axis is contiguous in the input: `stridedCopy` copies runs).
func tileTranspose32(_ x: Tensor, shape fullShape: [Int], strides fullStrides: [Int]) -> Tensor? {
    // Merge output axes that are consecutive in the input too; drop size-1 axes.
    let (shape, strides) = mergedAxes(fullShape, fullStrides)
    guard shape.count >= 2, let p = strides.firstIndex(of: 1), p != shape.count - 1 else { return nil }
    let rank = shape.count, last = rank - 1
    let rows = shape[p], cols = shape[last]
    guard rows >= 8, cols >= 8 else { return nil }
    let out = Tensor(uninitialized: x.dtype, shape: fullShape)
    let outStrides = contiguousStrides(shape)
    let others = (0..<rank).filter { $0 != p && $0 != last }
    let otherShape = others.map { shape[$0] }, otherCount = otherShape.reduce(1, *)
    let otherSource = others.map { strides[$0] }, otherDest = others.map { outStrides[$0] }
    let colStride = strides[last], rowStride = outStrides[p]
    let rowTiles = (rows + 7) / 8
    let src = UnsafePointer(x.storage.bytes.assumingMemoryBound(to: UInt32.self))
    let dst = out.storage.bytes.assumingMemoryBound(to: UInt32.self)
    // Work items: (index over the other axes, band of 8 output rows), split across threads.
    Parallel.forRange(otherCount * rowTiles, minimumChunk: max(1, 16_384 / (8 * cols))) { items in
        for item in items {
            var rest = item / rowTiles, sBase = 0, dBase = 0
            for k in stride(from: others.count - 1, through: 0, by: -1) {
                let i = rest % otherShape[k]
                rest /= otherShape[k]
                sBase += i * otherSource[k]; dBase += i * otherDest[k]
            }
            let i0 = (item % rowTiles) * 8
            if i0 + 8 <= rows {
                transposeBand(src + sBase + i0, colStride, dst + dBase + i0 * rowStride, rowStride, cols)
            } else {
                for i in i0..<rows {
                    for j in 0..<cols { dst[dBase + i * rowStride + j] = src[sBase + i + j * colStride] }
                }
            }
        }
    }
    return out
}

/// Eight output rows of a tile transpose: dst[i·dstStride + j] = src[j·srcStride + i] for i in
/// 0..<8, j in 0..<cols (cols >= 8; the last tile overlaps the one before, writing equal values
/// from the same thread).
@inline(never)
func transposeBand(_ src: UnsafePointer<UInt32>, _ srcStride: Int, _ dst: UnsafeMutablePointer<UInt32>, _ dstStride: Int, _ cols: Int) {
    typealias V = SIMD8<UInt32>
    @inline(__always) func load(_ k: Int, _ j: Int) -> V { UnsafeRawPointer(src + (j + k) * srcStride).loadUnaligned(as: V.self) }
    @inline(__always) func even(_ a: V, _ b: V) -> V { V(lowHalf: a.evenHalf, highHalf: b.evenHalf) }
    @inline(__always) func odd(_ a: V, _ b: V) -> V { V(lowHalf: a.oddHalf, highHalf: b.oddHalf) }
    var j0 = 0
    while j0 < cols {
        let j = min(j0, cols - 8)
        var (r0, r1, r2, r3, r4, r5, r6, r7) = (load(0, j), load(1, j), load(2, j), load(3, j), load(4, j), load(5, j), load(6, j), load(7, j))
        // Each round moves element k of the 64 to k/2 (even k) or 32 + k/2 (odd k), rotating its
        // 6-bit index (row, column) right by one bit: three rounds swap row and column.
        for _ in 0..<3 {
            (r0, r1, r2, r3, r4, r5, r6, r7) = (even(r0, r1), even(r2, r3), even(r4, r5), even(r6, r7),
                                                odd(r0, r1), odd(r2, r3), odd(r4, r5), odd(r6, r7))
        }
        let d = dst + j
        UnsafeMutableRawPointer(d).storeBytes(of: r0, as: V.self)
        UnsafeMutableRawPointer(d + dstStride).storeBytes(of: r1, as: V.self)
        UnsafeMutableRawPointer(d + 2 * dstStride).storeBytes(of: r2, as: V.self)
        UnsafeMutableRawPointer(d + 3 * dstStride).storeBytes(of: r3, as: V.self)
        UnsafeMutableRawPointer(d + 4 * dstStride).storeBytes(of: r4, as: V.self)
        UnsafeMutableRawPointer(d + 5 * dstStride).storeBytes(of: r5, as: V.self)
        UnsafeMutableRawPointer(d + 6 * dstStride).storeBytes(of: r6, as: V.self)
        UnsafeMutableRawPointer(d + 7 * dstStride).storeBytes(of: r7, as: V.self)
        j0 += 8
    }
}

/// The gradient rule of Transpose.
func transposeGradient(_ g: GradientContext) throws -> [String?] {
    guard g.needs(0) else { return [nil] }
    let dY = try g.requiredDY()
    let perm: [Int]
    if let p = g.node.ints("perm") { perm = p } else if let r = g.rank(g.input(0)) { perm = Array((0..<r).reversed()) } else {
        return [g.op("Transpose", [dY])]
    }
    var inverse = [Int](repeating: 0, count: perm.count)
    for (i, p) in perm.enumerated() where p >= 0 && p < perm.count { inverse[p] = i }
    return [g.op("Transpose", [dY], attributes: ["perm": .ints(inverse)])]
}
