/// NonZero: the indices of the nonzero elements, one row per axis.

/// NonZero, since opset 9.
func nonZeroKernel(_ ctx: NodeContext) throws -> Kernel {
    AnyKernel { inputs, _ in
        let x = try inputs.tensor(0)
        let values: [Bool] = x.dtype == .string ? x.strings.map { !$0.isEmpty } : try x.doubles().map { $0 != 0 }
        let strides = contiguousStrides(x.shape)
        let hits = values.indices.filter { values[$0] }
        var out = [Int64](repeating: 0, count: x.rank * hits.count)
        for (k, i) in hits.enumerated() {
            for d in 0..<x.rank { out[d * hits.count + k] = Int64((i / strides[d]) % x.shape[d]) }
        }
        return [.tensor(Tensor(shape: [x.rank, hits.count], scalars: out))]
    }
}
