/// Compress: the slices along an axis where the condition holds.

/// Compress, since opset 9.
func compressKernel(_ ctx: NodeContext) throws -> Kernel {
    let axis = try ctx.int("axis")
    return AnyKernel { inputs, _ in
        let x = try inputs.tensor(0)
        let cond = try inputs.tensor(1).doubles()
        guard let axis else {
            let picked = (0..<min(cond.count, x.count)).filter { cond[$0] != 0 }
            return [.tensor(try take(x, picked, shape: [picked.count]))]
        }
        let a = try normalizeAxis(axis, rank: x.rank)
        let picked = (0..<min(cond.count, x.shape[a])).filter { cond[$0] != 0 }
        var maps = (0..<x.rank).map { Array(0..<x.shape[$0]) }
        maps[a] = picked
        var out = x.shape
        out[a] = picked.count
        return [.tensor(try take(x, combineAxisMaps(maps, inputShape: x.shape), shape: out))]
    }
}
