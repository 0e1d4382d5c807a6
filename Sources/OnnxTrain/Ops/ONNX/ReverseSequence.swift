/// ReverseSequence: each batch entry's first seq_lens steps reversed.

/// ReverseSequence, since opset 10.
func reverseSequenceKernel(_ ctx: NodeContext) throws -> Kernel {
    let batchAxis = try ctx.int("batch_axis", default: 1)
    let timeAxis = try ctx.int("time_axis", default: 0)
    return AnyKernel { inputs, _ in
        let x = try inputs.tensor(0)
        let lens = try inputs.tensor(1).ints("sequence_lens")
        let b = try normalizeAxis(batchAxis, rank: x.rank), t = try normalizeAxis(timeAxis, rank: x.rank)
        guard b != t, lens.count == x.shape[b] else { throw KernelError("sequence_lens must hold one length per batch entry") }
        let strides = contiguousStrides(x.shape)
        var idx = Array(0..<x.count)
        for i in 0..<x.count {
            let bi = (i / strides[b]) % x.shape[b], ti = (i / strides[t]) % x.shape[t]
            let len = lens[bi]
            guard len >= 0 && len <= x.shape[t] else { throw KernelError("sequence length \(len) is out of range") }
            if ti < len { idx[i] = i + (len - 1 - 2 * ti) * strides[t] }
        }
        return [.tensor(try take(x, idx, shape: x.shape))]
    }
}
