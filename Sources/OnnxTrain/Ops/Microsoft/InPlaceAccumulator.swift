/// InPlaceAccumulator and InPlaceAccumulatorV2 (com.microsoft): gradient accumulation into the
/// caller's buffer, in place (TrainingOptimizers.swift registers them).

/// buffer += value broadcast to buffer's shape (value's shape must broadcast into it), or
/// buffer = value when `overwrite`. A value of the buffer's type and size is read in place; any
/// other is widened to Double (and broadcast) first.
private struct Accumulate: InPlaceBody {
    let value: Tensor
    let shape: [Int]  // the buffer's
    let overwrite: Bool
    func callAsFunction<T: FloatElement>(_ p: UnsafeMutableBufferPointer<T>) throws {
        guard let base = p.baseAddress else { return }
        if value.dtype == T.dtype && value.count == p.count {
            // The common case (a gradient into its buffer): a plain copy or add in T.
            try value.withUnsafeBufferPointer(as: T.self) { v in
                guard let src = v.baseAddress else { return }
                Parallel.forRange(p.count, minimumChunk: 1 << 15) { r in
                    if overwrite {
                        (base + r.lowerBound).update(from: src + r.lowerBound, count: r.count)
                    } else {
                        addInto(base + r.lowerBound, src + r.lowerBound, r.count)
                    }
                }
            }
        } else {
            let values = overwrite ? try floatValues(value, "value") : try broadcastValues(value, to: shape)
            values.withUnsafeBufferPointer { Accumulate.loop(base, $0.baseAddress!, p.count, overwrite) }
        }
    }

    @inline(__always)
    static func loop<T: FloatElement, G: FloatElement>(_ p: UnsafeMutablePointer<T>, _ v: UnsafePointer<G>, _ n: Int, _ overwrite: Bool) {
        if overwrite {
            for i in 0..<n { p[i] = T(fromDouble: v[i].doubleValue) }
        } else {
            for i in 0..<n { p[i] = T(fromDouble: p[i].doubleValue + v[i].doubleValue) }
        }
    }
}

/// dst[0..<n] += src[0..<n] (a function of its own so the loop vectorises; it stays scalar inside
/// a Parallel.forRange closure).
@inline(never)
private func addInto<T: FloatElement>(_ dst: UnsafeMutablePointer<T>, _ src: UnsafePointer<T>, _ n: Int) {
    for i in 0..<n { dst[i] += src[i] }
}

/// Checks that value broadcasts *into* the buffer's shape (it must not enlarge it).
private func checkBroadcast(_ buffer: Tensor, _ value: Tensor) throws {
    guard try Broadcast.shape(buffer.shape, value.shape) == buffer.shape else {
        throw KernelError("value \(value.shape) does not broadcast to the buffer's shape \(buffer.shape)")
    }
}

/// InPlaceAccumulator(old_sum, value, update_signal?) → new_sum (aliases old_sum).
/// old_sum += value; with update_signal false, old_sum is left as it is (onnxruntime 1.19.2's pip
/// build returns old_sum then, not a copy of value).
struct InPlaceAccumulatorKernel: Kernel {
    func run(_ inputs: [Value?], _ context: ExecutionContext) throws -> [Value?] {
        let buffer = try inputs.tensor(0), value = try inputs.tensor(1)
        if try boolFlag(try inputs.optionalTensor(2), "update_signal") == false { return [.tensor(buffer)] }
        try checkBroadcast(buffer, value)
        try inPlace(buffer, "old_sum", Accumulate(value: value, shape: buffer.shape, overwrite: false))
        return [.tensor(buffer)]
    }
}

/// InPlaceAccumulatorV2(accumulation_buffer, value, overwrite_flag?) → updated_flag (bool [1],
/// true), accumulation_buffer_out? (aliases the buffer). overwrite true copies value (same
/// element count required); otherwise buffer += value (broadcast). This is how lazy_reset_grad
/// works: a reset is an overwrite on the next step.
struct InPlaceAccumulatorV2Kernel: Kernel {
    func run(_ inputs: [Value?], _ context: ExecutionContext) throws -> [Value?] {
        let buffer = try inputs.tensor(0), value = try inputs.tensor(1)
        let overwrite = try boolFlag(try inputs.optionalTensor(2), "overwrite_flag") ?? false
        if overwrite {
            guard value.count == buffer.count else { throw KernelError("value \(value.shape) must have the buffer's size \(buffer.shape) to overwrite it") }
            try inPlace(buffer, "accumulation_buffer", Accumulate(value: value, shape: buffer.shape, overwrite: true))
        } else {
            try checkBroadcast(buffer, value)
            try inPlace(buffer, "accumulation_buffer", Accumulate(value: value, shape: buffer.shape, overwrite: false))
        }
        return [.tensor(Tensor(shape: [1], scalars: [true])), .tensor(buffer)]
    }
}
