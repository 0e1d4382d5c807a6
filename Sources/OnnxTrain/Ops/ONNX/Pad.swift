/// Pad and CenterCropPad: index maps with fill (constant, reflect, edge, wrap).

/// Pad, since opset 1, 2, 11.
func padKernel(_ ctx: NodeContext) throws -> Kernel {
    let since = ctx.sinceVersion
    let mode = try ctx.string("mode", default: "constant")
    guard ["constant", "reflect", "edge", "wrap"].contains(mode) else { throw KernelError("unknown mode '\(mode)'") }
    let attrPads = since < 11 ? try ctx.ints(since == 1 ? "paddings" : "pads") : nil
    let attrValue = since < 11 ? try ctx.float("value", default: 0) : 0
    return AnyKernel { inputs, _ in
        let x = try inputs.tensor(0)
        var pads: [Int]
        var fill: Tensor?
        var axes = Array(0..<x.rank)
        if since < 11 {
            guard let p = attrPads else { throw KernelError("attribute 'pads' is required") }
            pads = p
            if attrValue != 0 { fill = try Tensor(dtype: x.dtype, shape: [1], doubles: [Double(attrValue)]) }
        } else {
            pads = try inputs.tensor(1).ints("pads")
            if let v = try inputs.optionalTensor(2), v.count > 0 {
                guard v.dtype == x.dtype else { throw KernelError("constant_value is \(v.dtype), data is \(x.dtype)") }
                fill = v
            }
            if let a = try inputs.optionalTensor(3) { axes = try normalizeAxes(try a.ints("axes"), rank: x.rank) }
        }
        guard pads.count == 2 * axes.count else { throw KernelError("pads \(pads) must hold 2 entries per padded axis (\(axes.count))") }
        var begin = [Int](repeating: 0, count: x.rank), end = begin
        for (k, a) in axes.enumerated() { begin[a] = pads[k]; end[a] = pads[k + axes.count] }
        return [.tensor(try pad(x, begin: begin, end: end, mode: mode, fill: fill))]
    }
}

/// CenterCropPad, since opset 18.
func centerCropPadKernel(_ ctx: NodeContext) throws -> Kernel {
    let attrAxes = try ctx.ints("axes")
    return AnyKernel { inputs, _ in
        let x = try inputs.tensor(0)
        let target = try inputs.tensor(1).ints("shape")
        let axes = try normalizeAxes(attrAxes ?? Array(0..<x.rank), rank: x.rank)
        guard target.count == axes.count else { throw KernelError("shape \(target) must hold one size per axis \(axes)") }
        var checked = x.shape
        for (k, a) in axes.enumerated() { checked[a] = target[k] }
        try checkShape(checked, "output")
        var maps = (0..<x.rank).map { Array(0..<x.shape[$0]) }
        var out = x.shape
        for (k, a) in axes.enumerated() {
            let n = x.shape[a], t = target[k]
            guard t >= 0 else { throw KernelError("shape \(target) has a negative size") }
            out[a] = t
            if t <= n {
                let start = (n - t) / 2
                maps[a] = (0..<t).map { start + $0 }
            } else {
                let start = (t - n) / 2
                maps[a] = (0..<t).map { $0 - start < 0 || $0 - start >= n ? -1 : $0 - start }
            }
        }
        return [.tensor(try take(x, combineAxisMaps(maps, inputShape: x.shape), shape: out))]
    }
}

/// Flat source indices from one source coordinate map per axis (-1 in any map: fill).
func combineAxisMaps(_ maps: [[Int]], inputShape: [Int]) -> [Int] {
    let strides = contiguousStrides(inputShape)
    var result: [Int] = [0]
    for (d, map) in maps.enumerated() {
        var next = [Int]()
        next.reserveCapacity(result.count * map.count)
        for base in result {
            for m in map { next.append(base < 0 || m < 0 ? -1 : base + m * strides[d]) }
        }
        result = next
    }
    return result
}

/// Pads (or, with negative pads, crops) every axis by `begin`/`end`.
func pad(_ x: Tensor, begin: [Int], end: [Int], mode: String, fill: Tensor?) throws -> Tensor {
    var maps: [[Int]] = []
    var out: [Int] = []
    for d in 0..<x.rank {
        guard magnitude(begin[d], below: SizePolicy.maxElements), magnitude(end[d], below: SizePolicy.maxElements) else { throw KernelError("pads \(begin[d]), \(end[d]) are too large") }
        let size = x.shape[d] + begin[d] + end[d]
        guard size >= 0 else { throw KernelError("pads crop axis \(d) of \(x.shape) below zero") }
        out.append(size)
    }
    // Check the whole output before building any per-axis map (a huge pad must not allocate first).
    try checkShape(out, "output")
    for d in 0..<x.rank {
        let n = x.shape[d], size = out[d]
        if mode != "constant" && n == 0 && size > 0 { throw KernelError("cannot \(mode)-pad an empty axis") }
        var map = [Int](repeating: 0, count: size)
        for o in 0..<size {
            let i = o - begin[d]
            if i >= 0 && i < n { map[o] = i; continue }
            switch mode {
            case "edge": map[o] = min(max(i, 0), n - 1)
            case "wrap": map[o] = ((i % n) + n) % n
            case "reflect":
                if n == 1 { map[o] = 0; break }
                let period = 2 * (n - 1)
                var r = ((i % period) + period) % period
                if r >= n { r = period - r }
                map[o] = r
            default: map[o] = -1
            }
        }
        maps.append(map)
    }
    return try take(x, combineAxisMaps(maps, inputShape: x.shape), shape: out, fill: fill)
}

/// The gradient rule of Pad.
func padGradient(_ g: GradientContext) throws -> [String?] {
    guard g.needs(0) else { return Array(repeating: nil, count: g.node.inputs.count) }
    let x = g.input(0)
    guard let shape = g.staticShape(x) else { throw GradientError("Pad is differentiated for a static input shape") }
    let r = shape.count
    var pads: [Int]
    var axes = Array(0..<r)
    if g.opset < 11 {
        guard let p = g.node.ints("pads") ?? g.node.ints("paddings") else { throw GradientError("Pad needs pads") }
        pads = p
    } else {
        guard let p = g.constantInput(1)?.intValues() else { throw GradientError("Pad is differentiated for constant pads") }
        pads = p
        if g.hasInput(3) {
            guard let a = g.constantInput(3)?.intValues() else { throw GradientError("Pad is differentiated for constant axes") }
            axes = a.map { TypeInference.normalize($0, r, clamp: false) }
        }
    }
    guard pads.count == 2 * axes.count else { throw GradientError("Pad has \(pads.count) pads for \(axes.count) axes") }
    var begin = [Int](repeating: 0, count: r), end = [Int](repeating: 0, count: r)
    for (k, a) in axes.enumerated() { begin[a] = pads[k]; end[a] = pads[k + axes.count] }
    let mode = g.node.string("mode") ?? "constant"
    let dY = try g.requiredDY()
    var grads: [String?] = Array(repeating: nil, count: g.node.inputs.count)
    if mode == "constant" {
        // Negative pads crop: the gradient pads those back with zeros, positive ones are sliced off.
        var sliceStart: [Int] = [], sliceEnd: [Int] = [], cropBack = false
        for a in 0..<r {
            sliceStart.append(max(begin[a], 0))
            sliceEnd.append(max(begin[a], 0) + shape[a] + min(begin[a], 0) + min(end[a], 0))
            if begin[a] < 0 || end[a] < 0 { cropBack = true }
        }
        var d = g.op("Slice", [dY, g.ints(sliceStart, name: "starts"), g.ints(sliceEnd, name: "ends"), g.ints(Array(0..<r), name: "axes")])
        if cropBack {
            let back = (0..<r).map { max(-begin[$0], 0) } + (0..<r).map { max(-end[$0], 0) }
            d = g.op("Pad", [d, g.ints(back, name: "pads")])
        }
        grads[0] = d
        return grads
    }
    // edge / reflect / wrap: the padded tensor is a gather along each axis; undo the gathers in reverse.
    var d = dY
    var current = shape.enumerated().map { $0.element + begin[$0.offset] + end[$0.offset] }
    for a in (0..<r).reversed() where begin[a] != 0 || end[a] != 0 {
        let n = shape[a]
        let index = (0..<current[a]).map { i -> Int64 in
            var j = i - begin[a]
            switch mode {
            case "edge": j = min(max(j, 0), n - 1)
            case "wrap": j = ((j % n) + n) % n
            default:  // reflect
                if n == 1 { j = 0 } else {
                    let period = 2 * (n - 1)
                    j = ((j % period) + period) % period
                    if j >= n { j = period - j }
                }
            }
            return Int64(j)
        }
        var inputShape = current
        inputShape[a] = n
        let indices = g.constant(Tensor(shape: [index.count], scalars: index), name: "pad_index")
        d = g.ms("GatherGrad", [g.ints(inputShape, name: "shape"), indices, d], attributes: ["axis": .int(a)])[0]
        current = inputShape
    }
    grads[0] = d
    return grads
}
