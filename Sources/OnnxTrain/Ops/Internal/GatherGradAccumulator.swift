/// GatherGradAccumulator (onnx-train's internal domain, written only by the
/// `ProductIntoAccumulator` pass into a session's compiled graph): an embedding's gradient,
/// com.microsoft GatherGrad, and the InPlaceAccumulatorV2 that consumes it, as one node that
/// scatter-adds dY straight into the accumulation buffer.
///
/// Inputs: accumulation_buffer, shape, indices, dY, overwrite_flag? (InPlaceAccumulatorV2's
/// inputs with GatherGrad's in place of its value). Outputs: updated_flag (bool [1], true),
/// accumulation_buffer_out? (the buffer). Attribute: `axis`, GatherGrad's.
///
/// A word embedding's gradient is as large as its table (BERT's 30522 x 256 floats, 31 MB) and
/// mostly zeros: GatherGrad made it in fresh memory every step (page faults, the kernel's zeroing
/// and a memset) and the accumulator then copied it. With the overwrite flag true (each step's
/// first gradient) and the buffer of dY's type and of `shape`, the buffer is zeroed where it lives
/// and dY's rows are added into it in GatherGrad's order: the same values, bit for bit. Anything
/// else (adding to the buffer, other types or shapes) runs GatherGrad and then
/// InPlaceAccumulatorV2, so every input gets the pair's result and errors.
struct GatherGradAccumulatorKernel: Kernel {
    let axis: Int

    func run(_ inputs: [Value?], _ context: ExecutionContext) throws -> [Value?] {
        let buffer = try inputs.tensor(0), shapeTensor = try inputs.tensor(1), indices = try inputs.tensor(2), dy = try inputs.tensor(3)
        let flag = try inputs.optionalTensor(4)
        let overwrite = try boolFlag(flag, "overwrite_flag") ?? false
        let shape = try shapeInput(shapeTensor, "shape")
        if overwrite, buffer.dtype == .float32 || buffer.dtype == .float64, dy.dtype == buffer.dtype, buffer.shape == shape,
           buffer.storage !== dy.storage {
            let plan = try GatherGradKernel.scatterPlan(shape: shape, indices: indices, dyShape: dy.shape, axis: axis)
            try inPlace(buffer, "accumulation_buffer", ScatterIntoZeros(source: dy, pairs: plan.pairs, block: plan.block))
            return [.tensor(Tensor(shape: [1], scalars: [true])), .tensor(buffer)]
        }
        guard case .tensor(let value)?? = try GatherGradKernel(axis: axis).run([.tensor(shapeTensor), .tensor(indices), .tensor(dy)], context).first else {
            throw KernelError("GatherGrad gave no value")
        }
        return try InPlaceAccumulatorV2Kernel().run([.tensor(buffer), .tensor(value), flag.map(Value.tensor)], context)
    }
}

/// Zeros the buffer, then adds source blocks into it as `ScatterAdd` adds them into new zeros.
private struct ScatterIntoZeros: InPlaceBody {
    let source: Tensor
    let pairs: [(dst: Int, src: Int)]
    let block: Int

    func callAsFunction<T: FloatElement>(_ p: UnsafeMutableBufferPointer<T>) throws {
        guard let base = p.baseAddress else { return }
        Parallel.forRange(p.count, minimumChunk: 1 << 16) { r in (base + r.lowerBound).update(repeating: T.zero, count: r.count) }
        try source.withUnsafeBufferPointer(as: T.self) { s in
            guard let src = s.baseAddress else { return }
            for (d, si) in pairs {
                for k in 0..<block { base[d + k] += src[si + k] }
            }
        }
    }
}

func registerGatherGradAccumulatorOps(_ registry: OpRegistry) {
    registry.register("GatherGradAccumulator", domain: internalDomain, since: 1, mutates: [0]) { ctx in
        GatherGradAccumulatorKernel(axis: try ctx.int("axis", default: 0))
    }
}
