/// BitCast: the same bytes read as another element type of the same size.

/// BitCast, since opset 26.
func bitCastKernel(_ ctx: NodeContext) throws -> Kernel {
    let dtype = try dtypeFromCode(try ctx.requiredInt("to"))
    return AnyKernel { inputs, _ in [.tensor(try bitCast(try inputs.tensor(0), to: dtype))] }
}

/// BitCast: the same bits read as another type of the same width (storage is shared; bool and
/// the unpacked sub-byte types are renormalised so every byte holds a valid value).
private func bitCast(_ x: Tensor, to dtype: DType) throws -> Tensor {
    guard x.dtype != .string, dtype != .string else { throw KernelError("BitCast does not apply to strings") }
    let bits = { (d: DType) in d.packedBits ?? d.byteSize * 8 }
    guard bits(x.dtype) == bits(dtype) else { throw KernelError("BitCast needs equal widths, \(x.dtype) and \(dtype) differ") }
    let shared = Tensor(dtype: dtype, shape: x.shape, storage: x.storage)
    if dtype != .bool && dtype.packedBits == nil { return shared }
    // One element per byte: keep the low bits, sign-extend for signed sub-byte targets, 0/1 for bool.
    var out = Tensor(uninitialized: dtype, shape: x.shape)
    let width = bits(dtype)
    let mask = UInt8(truncatingIfNeeded: (1 << width) - 1), sign = UInt8(truncatingIfNeeded: 1 << (width - 1))
    let signed = dtype == .int4 || dtype == .int2
    let src = x.storage.bytes.assumingMemoryBound(to: UInt8.self)
    try out.withUnsafeMutableBufferPointer(as: UInt8.self) { dst in
        for i in 0..<dst.count {
            if dtype == .bool { dst[i] = src[i] != 0 ? 1 : 0; continue }
            var v = src[i] & mask
            if signed && v & sign != 0 { v |= ~mask }
            dst[i] = v
        }
    }
    return out
}
