/// Numpy-style multidirectional broadcasting of shapes and index strides.
public enum Broadcast {
    /// The broadcast shape of `shapes`, or a KernelError naming them when they do not fit.
    public static func shape(_ shapes: [[Int]]) throws -> [Int] {
        let rank = shapes.map(\.count).max() ?? 0
        var result = [Int](repeating: 1, count: rank)
        for s in shapes {
            let offset = rank - s.count
            for (i, d) in s.enumerated() {
                let r = result[offset + i]
                if r == d || d == 1 { continue }
                if r == 1 { result[offset + i] = d; continue }
                throw KernelError("shapes \(shapes.map { "\($0)" }.joined(separator: " and ")) do not broadcast")
            }
        }
        return result
    }

    public static func shape(_ a: [Int], _ b: [Int]) throws -> [Int] { try shape([a, b]) }

    /// Element strides of `shape` read as `outShape` (0 where broadcast), right-aligned.
    public static func strides(_ shape: [Int], to outShape: [Int]) -> [Int] {
        var strides = [Int](repeating: 0, count: outShape.count)
        var step = 1
        let offset = outShape.count - shape.count
        for i in stride(from: shape.count - 1, through: 0, by: -1) {
            strides[offset + i] = shape[i] == 1 ? 0 : step
            step *= shape[i]
        }
        return strides
    }
}

/// Row-major contiguous strides of a shape.
public func contiguousStrides(_ shape: [Int]) -> [Int] {
    var strides = [Int](repeating: 1, count: shape.count)
    var s = 1
    for i in stride(from: shape.count - 1, through: 0, by: -1) {
        strides[i] = s
        s *= shape[i]
    }
    return strides
}

/// Resolves a possibly negative axis against `rank`, or throws naming the axis.
public func normalizeAxis(_ axis: Int, rank: Int, name: String = "axis") throws -> Int {
    let a = axis < 0 ? axis + rank : axis
    guard a >= 0 && a < max(rank, 1) else { throw KernelError("\(name) \(axis) is out of range for rank \(rank)") }
    return a
}

/// Applies `body` to every pair of elements of `a` and `b` broadcast to a common shape.
///
/// The inner loop runs over the last dimension with fixed strides, so the common cases (same
/// shape, scalar operand, bias along the last axis) are straight-line loops.
@inline(__always)
public func broadcastBinary<A, B, R>(_ a: Tensor, _ b: Tensor, _ aType: A.Type, _ bType: B.Type, _ rType: R.Type,
                                     outDType: DType, _ body: (A, B) -> R) throws -> Tensor {
    let outShape = try Broadcast.shape(a.shape, b.shape)
    var out = Tensor(uninitialized: outDType, shape: outShape)
    let n = out.count
    if n == 0 { return out }
    try a.withUnsafeBufferPointer(as: A.self) { pa in
        try b.withUnsafeBufferPointer(as: B.self) { pb in
            out.uncheckedMutableBufferPointer(as: R.self) { po in
                if a.shape == b.shape {
                    for i in 0..<n { po[i] = body(pa[i], pb[i]) }
                } else if b.count == 1 {
                    let s = pb[0]
                    for i in 0..<n { po[i] = body(pa[i], s) }
                } else if a.count == 1 {
                    let s = pa[0]
                    for i in 0..<n { po[i] = body(s, pb[i]) }
                } else {
                    let rank = outShape.count
                    let sa = Broadcast.strides(a.shape, to: outShape)
                    let sb = Broadcast.strides(b.shape, to: outShape)
                    let inner = outShape[rank - 1]
                    let ia = sa[rank - 1], ib = sb[rank - 1]
                    var rows = Odometer(shape: outShape, strides: [sa, sb])
                    var o = 0
                    while o < n {
                        // Rows of the last dim: contiguous or repeated operands get loops that vectorise.
                        let x = rows.offsets[0], y = rows.offsets[1]
                        if ia == 1 && ib == 1 {
                            for k in 0..<inner { po[o + k] = body(pa[x + k], pb[y + k]) }
                        } else if ia == 0 && ib == 1 {
                            let s = pa[x]
                            for k in 0..<inner { po[o + k] = body(s, pb[y + k]) }
                        } else if ia == 1 && ib == 0 {
                            let s = pb[y]
                            for k in 0..<inner { po[o + k] = body(pa[x + k], s) }
                        } else {
                            for k in 0..<inner { po[o + k] = body(pa[x + k * ia], pb[y + k * ib]) }
                        }
                        o += inner
                        rows.advance(axes: rank - 1)
                    }
                }
            }
        }
    }
    return out
}
