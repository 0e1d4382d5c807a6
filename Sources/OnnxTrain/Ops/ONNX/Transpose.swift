/// Transpose: a strided copy with the axes permuted.

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
    return try stridedCopy(x, shape: shape, strides: perm.map { strides[$0] })
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
