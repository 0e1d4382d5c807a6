/// Ops that only change a tensor's shape, or build small tensors from shapes: Reshape, Flatten,
/// Squeeze, Unsqueeze, Shape, Size, Identity, Constant, ConstantOfShape, EyeLike, Range, BitCast.
func registerShapeOps(_ registry: OpRegistry) {
    registry.register("Reshape", since: 5, reshapeKernel)
    registry.register("Flatten", since: 1, flattenKernel)
    for since in [1, 13] {
        registry.register("Squeeze", since: since) { ctx in
            let attrAxes = since < 13 ? try ctx.ints("axes") : nil
            return AnyKernel { inputs, _ in
                let x = try inputs.tensor(0)
                let given = try attrAxes ?? inputs.optionalTensor(1)?.ints("axes")
                var shape: [Int] = []
                if let given {
                    let axes = try normalizeAxes(given, rank: x.rank)
                    for a in axes where x.shape[a] != 1 { throw KernelError("cannot squeeze axis \(a) of shape \(x.shape)") }
                    for (d, n) in x.shape.enumerated() where !axes.contains(d) { shape.append(n) }
                } else {
                    shape = x.shape.filter { $0 != 1 }
                }
                return [.tensor(x.reshaped(shape))]
            }
        }
        registry.register("Unsqueeze", since: since) { ctx in
            let attrAxes = since < 13 ? try ctx.ints("axes") : nil
            return AnyKernel { inputs, _ in
                let x = try inputs.tensor(0)
                guard let given = try attrAxes ?? inputs.optionalTensor(1)?.ints("axes") else { throw KernelError("axes are required") }
                let outRank = x.rank + given.count
                let axes = Set(try normalizeAxes(given, rank: outRank))
                var shape: [Int] = []
                var next = 0
                for d in 0..<outRank {
                    if axes.contains(d) { shape.append(1) } else { shape.append(x.shape[next]); next += 1 }
                }
                return [.tensor(x.reshaped(shape))]
            }
        }
    }
    registry.register("Shape", since: 1, shapeKernel)
    registry.register("Size", since: 1) { _ in
        AnyKernel { inputs, _ in [.tensor(Tensor(scalar: Int64(try inputs.tensor(0).count)))] }
    }
    registry.register("Identity", since: 1, identityKernel)
    registry.register("Constant", since: 1, constantKernel)
    registry.register("ConstantOfShape", since: 9, constantOfShapeKernel)
    registry.register("EyeLike", since: 9, eyeLikeKernel)
    registry.register("BitCast", since: 26, bitCastKernel)
    registry.register("Reshape", since: 1, reshape2Kernel)
    registry.register("Range", since: 11, rangeKernel)
}

/// Reshape, since opset 5.
func reshapeKernel(_ ctx: NodeContext) throws -> Kernel {
    let allowZero = try ctx.int("allowzero", default: 0) != 0
    return AnyKernel { inputs, _ in
        let x = try inputs.tensor(0)
        return [.tensor(x.reshaped(try reshapeTarget(x.shape, try inputs.tensor(1).ints("shape"), allowZero: allowZero)))]
    }
}

/// Flatten, since opset 1.
func flattenKernel(_ ctx: NodeContext) throws -> Kernel {
    let axis = try ctx.int("axis", default: 1)
    return AnyKernel { inputs, _ in
        let x = try inputs.tensor(0)
        let a = axis < 0 ? axis + x.rank : axis
        guard a >= 0 && a <= x.rank else { throw KernelError("axis \(axis) is out of range for rank \(x.rank)") }
        return [.tensor(x.reshaped([x.shape[..<a].reduce(1, *), x.shape[a...].reduce(1, *)]))]
    }
}

/// Shape, since opset 1.
func shapeKernel(_ ctx: NodeContext) throws -> Kernel {
    let start = try ctx.int("start", default: 0)
    let end = try ctx.int("end")
    return AnyKernel { inputs, _ in
        let x = try inputs.tensor(0)
        let r = x.rank
        func clamp(_ v: Int) -> Int { min(max(v < 0 ? v + r : v, 0), r) }
        let s = clamp(start), e = clamp(end ?? r)
        let dims = s < e ? x.shape[s..<e].map { Int64($0) } : []
        return [.tensor(Tensor(shape: [dims.count], scalars: dims))]
    }
}

/// Identity, since opset 1.
func identityKernel(_ ctx: NodeContext) throws -> Kernel {
    AnyKernel { inputs, _ in
        guard let v = inputs.value(0) else { throw KernelError("input 0 is required") }
        return [v]
    }
}

/// Constant, since opset 1.
func constantKernel(_ ctx: NodeContext) throws -> Kernel {
    let value = try constantValue(ctx)
    return AnyKernel { _, _ in [.tensor(value)] }
}

/// ConstantOfShape, since opset 9.
func constantOfShapeKernel(_ ctx: NodeContext) throws -> Kernel {
    let value = try ctx.tensor("value") ?? Tensor(scalar: Float(0))
    guard value.count == 1 else { throw KernelError("attribute 'value' must hold one element") }
    return AnyKernel { inputs, _ in
        let shape = try inputs.tensor(0).ints("shape")
        try checkShape(shape, "shape")
        return [.tensor(try stridedCopy(value.reshaped([]), shape: shape, strides: [Int](repeating: 0, count: shape.count)))]
    }
}

/// EyeLike, since opset 9.
func eyeLikeKernel(_ ctx: NodeContext) throws -> Kernel {
    let dtypeCode = try ctx.int("dtype")
    let k = try ctx.int("k", default: 0)
    return AnyKernel { inputs, _ in
        let x = try inputs.tensor(0)
        guard x.rank == 2 else { throw KernelError("input must be 2-D, got \(x.shape)") }
        let dtype = try dtypeCode.map { try dtypeFromCode($0) } ?? x.dtype
        var values = [Double](repeating: 0, count: x.count)
        for i in 0..<x.shape[0] {
            let (j, overflow) = i.addingReportingOverflow(k)
            if !overflow && j >= 0 && j < x.shape[1] { values[i * x.shape[1] + j] = 1 }
        }
        return [.tensor(try Tensor(dtype: dtype, shape: x.shape, doubles: values))]
    }
}

/// BitCast, since opset 26.
func bitCastKernel(_ ctx: NodeContext) throws -> Kernel {
    let dtype = try dtypeFromCode(try ctx.requiredInt("to"))
    return AnyKernel { inputs, _ in [.tensor(try bitCast(try inputs.tensor(0), to: dtype))] }
}

/// Reshape, since opset 1.
func reshape2Kernel(_ ctx: NodeContext) throws -> Kernel {
    let shape = try ctx.ints("shape") ?? []
    return AnyKernel { inputs, _ in
        let x = try inputs.tensor(0)
        return [.tensor(x.reshaped(try reshapeTarget(x.shape, shape, allowZero: false)))]
    }
}

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

/// The target shape of Reshape: 0 copies the input dimension (unless `allowZero`), -1 is inferred.
func reshapeTarget(_ input: [Int], _ requested: [Int], allowZero: Bool) throws -> [Int] {
    var shape = requested
    var inferred: Int?
    for (i, d) in requested.enumerated() {
        if d == 0 && !allowZero {
            guard i < input.count else { throw KernelError("shape \(requested) copies dimension \(i) that input \(input) lacks") }
            shape[i] = input[i]
        } else if d == -1 {
            guard inferred == nil else { throw KernelError("shape \(requested) has more than one -1") }
            inferred = i
        } else if d < 0 {
            throw KernelError("shape \(requested) has a negative dimension")
        }
    }
    let total = Tensor.elementCount(input)
    // The requested dims are data (a shape tensor): multiply with overflow checks.
    func product(_ dims: [Int]) throws -> Int {
        try dims.reduce(1) {
            let (p, overflow) = $0.multipliedReportingOverflow(by: $1)
            guard !overflow else { throw KernelError("cannot reshape \(input) to \(requested): too many elements") }
            return p
        }
    }
    if let i = inferred {
        let known = try product(shape.enumerated().filter { $0.offset != i }.map(\.element))
        guard known > 0, total % known == 0 else { throw KernelError("cannot reshape \(input) to \(requested)") }
        shape[i] = total / known
    }
    guard try product(shape) == total else { throw KernelError("cannot reshape \(input) to \(requested)") }
    return shape
}

/// A DType from its ONNX code, or a KernelError.
func dtypeFromCode(_ code: Int) throws -> DType {
    guard let c = Int32(exactly: code), let d = DType(rawValue: c) else { throw KernelError("unknown data type code \(code)") }
    return d
}

/// The tensor a Constant node holds, from whichever `value*` attribute it has.
private func constantValue(_ ctx: NodeContext) throws -> Tensor {
    if let t = try ctx.tensor("value") { return t }
    if let t = try ctx.tensor("sparse_value") { return t }
    if let v = try ctx.float("value_float") { return Tensor(scalar: v) }
    if let a = ctx.attributes["value_floats"] {
        guard case .floats(let v) = a else { throw KernelError("attribute 'value_floats' must be floats") }
        return Tensor(shape: [v.count], scalars: v)
    }
    if let v = try ctx.int("value_int") { return Tensor(scalar: Int64(v)) }
    if let a = ctx.attributes["value_ints"] {
        guard case .ints(let v) = a else { throw KernelError("attribute 'value_ints' must be ints") }
        return Tensor(shape: [v.count], scalars: v.map { Int64($0) })
    }
    if let v = try ctx.string("value_string") { return Tensor(shape: [], strings: [v]) }
    if let a = ctx.attributes["value_strings"] {
        guard case .strings(let v) = a else { throw KernelError("attribute 'value_strings' must be strings") }
        return Tensor(shape: [v.count], strings: v)
    }
    throw KernelError("Constant needs a value attribute")
}
