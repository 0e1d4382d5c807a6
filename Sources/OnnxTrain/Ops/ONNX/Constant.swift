/// Constant, ConstantOfShape and EyeLike: tensors from attributes and shapes.

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
