/// Range: start, start + delta, ... up to limit.

/// Range, since opset 11.
func rangeKernel(_ ctx: NodeContext) throws -> Kernel {
    AnyKernel { inputs, _ in
        let start = try inputs.tensor(0), limit = try inputs.tensor(1), delta = try inputs.tensor(2)
        guard start.count == 1, limit.count == 1, delta.count == 1 else { throw KernelError("start, limit and delta must be scalars") }
        if start.dtype.isInteger {
            let s = try start.ints("start")[0], l = try limit.ints("limit")[0], d = try delta.ints("delta")[0]
            guard d != 0, magnitude(s, below: 1 << 62), magnitude(l, below: 1 << 62), magnitude(d, below: 1 << 62) else { throw KernelError("delta must be nonzero and start, limit, delta within 2^62") }
            let n = max(0, (l - s + d + (d > 0 ? -1 : 1)) / d)
            try checkShape([n], "output")
            return [.tensor(try Tensor(dtype: start.dtype, shape: [n], doubles: (0..<n).map { Double(s + $0 * d) }))]
        }
        let s = try start.doubles()[0], l = try limit.doubles()[0], d = try delta.doubles()[0]
        guard d != 0, s.isFinite, l.isFinite, d.isFinite else { throw KernelError("start, limit and delta must be finite, delta nonzero") }
        let n = max(0, try checkedInt(((l - s) / d).rounded(.up), "element count"))
        try checkShape([n], "output")
        // Accumulate in the element type as the reference does (start + i * delta, rounded each step).
        return [.tensor(try Tensor(dtype: start.dtype, shape: [n], doubles: (0..<n).map { s + Double($0) * d }))]
    }
}
