/// Ops that only change a tensor's shape or read it: Reshape, Flatten, Squeeze, Unsqueeze, Shape,
/// Size, Identity (here); and the ones that build small tensors (Constant.swift: Constant,
/// ConstantOfShape, EyeLike; Range.swift; BitCast.swift).
func registerShapeOps(_ registry: OpRegistry) {
    registry.register("Reshape", since: 5, reshapeKernel)
    registry.register("Flatten", since: 1, flattenKernel)
    registry.register("Squeeze", since: [1, 13], squeezeKernel)
    registry.register("Unsqueeze", since: [1, 13], unsqueezeKernel)
    registry.register("Shape", since: 1, shapeKernel)
    registry.register("Size", since: 1, sizeKernel)
    registry.register("Identity", since: 1, identityKernel)
    registry.register("Constant", since: 1, constantKernel)
    registry.register("ConstantOfShape", since: 9, constantOfShapeKernel)
    registry.register("EyeLike", since: 9, eyeLikeKernel)
    registry.register("BitCast", since: 26, bitCastKernel)
    registry.register("Reshape", since: 1, reshape2Kernel)
    registry.register("Range", since: 11, rangeKernel)

    // Gradient rules (GradientContext):
    registry.registerUnaryGradient("Identity") { _, dY, _, _ in dY }
    registry.registerGradient("Reshape", reshapeGradient)
    registry.registerGradient("Flatten", reshapeGradient)
    registry.registerGradient("Squeeze", reshapeGradient)
    registry.registerGradient("Unsqueeze", reshapeGradient)
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

/// Reshape, since opset 1.
func reshape2Kernel(_ ctx: NodeContext) throws -> Kernel {
    let shape = try ctx.ints("shape") ?? []
    return AnyKernel { inputs, _ in
        let x = try inputs.tensor(0)
        return [.tensor(x.reshaped(try reshapeTarget(x.shape, shape, allowZero: false)))]
    }
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

/// The gradient rule of Reshape, Flatten, Squeeze and Unsqueeze: dY reshaped to the input's shape.
func reshapeGradient(_ g: GradientContext) throws -> [String?] {
    var grads: [String?] = Array(repeating: nil, count: g.node.inputs.count)
    if g.needs(0) { grads[0] = g.reshape(try g.requiredDY(), like: g.input(0)) }
    return grads
}

/// Squeeze: the axes are an attribute before opset 13 and the optional input 1 from 13 on; none
/// given squeezes every axis of size 1.
func squeezeKernel(_ ctx: NodeContext) throws -> Kernel {
    let attrAxes = ctx.sinceVersion < 13 ? try ctx.ints("axes") : nil
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

/// Unsqueeze: the axes (attribute before opset 13, input 1 from 13 on) index the output.
func unsqueezeKernel(_ ctx: NodeContext) throws -> Kernel {
    let attrAxes = ctx.sinceVersion < 13 ? try ctx.ints("axes") : nil
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

/// Size: the element count as an int64 scalar.
func sizeKernel(_ ctx: NodeContext) throws -> Kernel {
    AnyKernel { inputs, _ in [.tensor(Tensor(scalar: Int64(try inputs.tensor(0).count)))] }
}
