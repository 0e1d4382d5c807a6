/// Data movement ops, each one index map applied by the element-size generic `take`:
/// Transpose, Concat, Split, Slice, Expand, Tile, Pad, CenterCropPad, Trilu, DepthToSpace,
/// SpaceToDepth, ReverseSequence, Compress, NonZero, OneHot.
func registerMovementOps(_ registry: OpRegistry) {
    registry.register("Transpose", since: 1, transposeKernel)
    registry.register("Concat", since: 1, concatKernel)
    registry.register("Split", since: 1, splitKernel)
    registry.register("Slice", since: [1, 10], sliceKernel)
    registry.register("Expand", since: 8, expandKernel)
    registry.register("Tile", since: 6, tileKernel)
    registry.register("Pad", since: [1, 2, 11], padKernel)
    registry.register("CenterCropPad", since: 18, centerCropPadKernel)
    registry.register("Trilu", since: 14, triluKernel)
    registry.register("DepthToSpace", since: 1, depthToSpaceKernel)
    registry.register("SpaceToDepth", since: 1, spaceToDepthKernel)
    registry.register("ReverseSequence", since: 10, reverseSequenceKernel)
    registry.register("Compress", since: 9, compressKernel)
    registry.register("NonZero", since: 9, nonZeroKernel)
    registry.register("OneHot", since: 9, oneHotKernel)
}

/// Transpose, since opset 1.
func transposeKernel(_ ctx: NodeContext) throws -> Kernel {
    let perm = try ctx.ints("perm")
    return AnyKernel { inputs, _ in
        let x = try inputs.tensor(0)
        return [.tensor(try transpose(x, perm: perm ?? Array((0..<x.rank).reversed())))]
    }
}

/// Concat, since opset 1.
func concatKernel(_ ctx: NodeContext) throws -> Kernel {
    let axis = try ctx.int("axis") ?? (ctx.opset < 4 ? 1 : nil)
    guard let axis else { throw KernelError("attribute 'axis' is required") }
    return AnyKernel { inputs, _ in
        let parts = try (0..<inputs.count).map { try inputs.tensor($0) }
        guard let first = parts.first else { throw KernelError("Concat needs at least one input") }
        let a = try normalizeAxis(axis, rank: first.rank)
        return [.tensor(try concatenate(parts, axis: a, dtype: first.dtype))]
    }
}

/// Split, since opset 1.
func splitKernel(_ ctx: NodeContext) throws -> Kernel {
    let axis = try ctx.int("axis", default: 0)
    let attrSplit = try ctx.ints("split")
    let numOutputs = try ctx.int("num_outputs")
    let outputs = ctx.outputCount
    if let n = numOutputs, n != outputs { throw KernelError("num_outputs \(n) differs from the node's \(outputs) outputs") }
    return AnyKernel { inputs, _ in
        let x = try inputs.tensor(0)
        let a = try normalizeAxis(axis, rank: x.rank)
        let dim = x.shape[a]
        var sizes: [Int]
        if let s = try inputs.optionalTensor(1)?.ints("split") ?? attrSplit {
            sizes = s
        } else {
            let n = numOutputs ?? outputs
            guard n > 0 else { throw KernelError("nothing to split into") }
            let chunk = (dim + n - 1) / n
            sizes = (0..<n).map { max(0, min(chunk, dim - $0 * chunk)) }
        }
        return try splitTensor(x, axis: a, sizes: sizes).map { .tensor($0) }
    }
}

/// Slice, since opset 1, 10.
func sliceKernel(_ ctx: NodeContext) throws -> Kernel {
    let since = ctx.sinceVersion
    let attrs = since < 10 ? (try ctx.ints("starts"), try ctx.ints("ends"), try ctx.ints("axes")) : (nil, nil, nil)
    return AnyKernel { inputs, _ in
        let x = try inputs.tensor(0)
        let starts: [Int], ends: [Int], axes: [Int]?, steps: [Int]?
        if since < 10 {
            guard let s = attrs.0, let e = attrs.1 else { throw KernelError("starts and ends are required") }
            starts = s; ends = e; axes = attrs.2; steps = nil
        } else {
            starts = try inputs.tensor(1).ints("starts")
            ends = try inputs.tensor(2).ints("ends")
            axes = try inputs.optionalTensor(3)?.ints("axes")
            steps = try inputs.optionalTensor(4)?.ints("steps")
        }
        return [.tensor(try slice(x, starts: starts, ends: ends, axes: axes, steps: steps))]
    }
}

/// Expand, since opset 8.
func expandKernel(_ ctx: NodeContext) throws -> Kernel {
    AnyKernel { inputs, _ in
        let x = try inputs.tensor(0)
        let shape = try inputs.tensor(1).ints("shape")
        let out = try Broadcast.shape(x.shape, shape)
        try checkShape(out, "output")
        return [.tensor(try stridedCopy(x, shape: out, strides: Broadcast.strides(x.shape, to: out)))]
    }
}

/// Tile, since opset 6.
func tileKernel(_ ctx: NodeContext) throws -> Kernel {
    AnyKernel { inputs, _ in
        let x = try inputs.tensor(0)
        let repeats = try inputs.tensor(1).ints("repeats")
        guard repeats.count == x.rank, repeats.allSatisfy({ $0 >= 0 }) else {
            throw KernelError("repeats \(repeats) must hold one nonnegative count per dimension of \(x.shape)")
        }
        var out: [Int] = []
        for (d, r) in zip(x.shape, repeats) {
            let (n, overflow) = d.multipliedReportingOverflow(by: r)
            guard !overflow else { throw KernelError("repeats \(repeats) overflow the output size") }
            out.append(n)
        }
        try checkShape(out, "output")
        let maps = (0..<x.rank).map { d in (0..<out[d]).map { $0 % x.shape[d] } }
        return [.tensor(try take(x, combineAxisMaps(maps, inputShape: x.shape), shape: out))]
    }
}

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

/// Trilu, since opset 14.
func triluKernel(_ ctx: NodeContext) throws -> Kernel {
    let upper = try ctx.int("upper", default: 1) != 0
    return AnyKernel { inputs, _ in
        let x = try inputs.tensor(0)
        guard x.rank >= 2 else { throw KernelError("input must have rank 2 or more, got \(x.shape)") }
        let k = try inputs.optionalTensor(1)?.ints("k").first ?? 0
        let rows = x.shape[x.rank - 2], cols = x.shape[x.rank - 1]
        var idx = [Int](repeating: 0, count: x.count)
        for i in 0..<x.count {
            let c = i % cols, r = (i / cols) % rows
            let keep = upper ? c - r >= k : c - r <= k
            idx[i] = keep ? i : -1
        }
        return [.tensor(try take(x, idx, shape: x.shape))]
    }
}

/// DepthToSpace, since opset 1.
func depthToSpaceKernel(_ ctx: NodeContext) throws -> Kernel {
    let bs = try ctx.int("blocksize") ?? 0
    let mode = try ctx.string("mode", default: "DCR")
    guard bs > 0, bs < 1 << 16 else { throw KernelError("attribute 'blocksize' must be positive") }
    guard mode == "DCR" || mode == "CRD" else { throw KernelError("unknown mode '\(mode)'") }
    return AnyKernel { inputs, _ in
        let x = try inputs.tensor(0)
        guard x.rank == 4, x.shape[1] % (bs * bs) == 0 else { throw KernelError("input \(x.shape) must be NCHW with C divisible by \(bs * bs)") }
        let (n, c, h, w) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
        let cc = c / (bs * bs)
        let view: [Int], perm: [Int]
        if mode == "DCR" { view = [n, bs, bs, cc, h, w]; perm = [0, 3, 4, 1, 5, 2] } else { view = [n, cc, bs, bs, h, w]; perm = [0, 1, 4, 2, 5, 3] }
        return [.tensor(try transpose(x.reshaped(view), perm: perm).reshaped([n, cc, h * bs, w * bs]))]
    }
}

/// SpaceToDepth, since opset 1.
func spaceToDepthKernel(_ ctx: NodeContext) throws -> Kernel {
    let bs = try ctx.int("blocksize") ?? 0
    guard bs > 0, bs < 1 << 16 else { throw KernelError("attribute 'blocksize' must be positive") }
    return AnyKernel { inputs, _ in
        let x = try inputs.tensor(0)
        guard x.rank == 4, x.shape[2] % bs == 0, x.shape[3] % bs == 0 else { throw KernelError("input \(x.shape) must be NCHW with H and W divisible by \(bs)") }
        let (n, c, h, w) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
        let t = try transpose(x.reshaped([n, c, h / bs, bs, w / bs, bs]), perm: [0, 3, 5, 1, 2, 4])
        return [.tensor(t.reshaped([n, c * bs * bs, h / bs, w / bs]))]
    }
}

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

/// Compress, since opset 9.
func compressKernel(_ ctx: NodeContext) throws -> Kernel {
    let axis = try ctx.int("axis")
    return AnyKernel { inputs, _ in
        let x = try inputs.tensor(0)
        let cond = try inputs.tensor(1).doubles()
        guard let axis else {
            let picked = (0..<min(cond.count, x.count)).filter { cond[$0] != 0 }
            return [.tensor(try take(x, picked, shape: [picked.count]))]
        }
        let a = try normalizeAxis(axis, rank: x.rank)
        let picked = (0..<min(cond.count, x.shape[a])).filter { cond[$0] != 0 }
        var maps = (0..<x.rank).map { Array(0..<x.shape[$0]) }
        maps[a] = picked
        var out = x.shape
        out[a] = picked.count
        return [.tensor(try take(x, combineAxisMaps(maps, inputShape: x.shape), shape: out))]
    }
}

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

/// OneHot, since opset 9.
func oneHotKernel(_ ctx: NodeContext) throws -> Kernel {
    let axis = try ctx.int("axis", default: -1)
    return AnyKernel { inputs, _ in
        let indices = try inputs.tensor(0).doubles()
        let indexShape = try inputs.tensor(0).shape
        guard let depthValue = try inputs.tensor(1).doubles().first else { throw KernelError("depth must be a scalar") }
        let depth = try checkedInt(depthValue, "depth")
        let values = try inputs.tensor(2)
        guard values.count == 2, depth >= 0 else { throw KernelError("values must hold [off, on] and depth be nonnegative") }
        let rank = indexShape.count + 1
        let a = try normalizeAxis(axis, rank: rank)
        var out = indexShape
        out.insert(depth, at: a)
        try checkShape(out, "output")
        let outer = indexShape[..<a].reduce(1, *), inner = indexShape[a...].reduce(1, *)
        var idx = [Int](repeating: 0, count: outer * depth * inner)
        for o in 0..<outer {
            for i in 0..<inner {
                var hot = try checkedInt(indices[o * inner + i], "index")
                if hot < 0 { hot += depth }
                if hot >= 0 && hot < depth { idx[(o * depth + hot) * inner + i] = 1 }
            }
        }
        return [.tensor(try take(values.reshaped([2]), idx, shape: out))]
    }
}

/// `x` with its axes permuted: output axis i is input axis `perm[i]`.
func transpose(_ x: Tensor, perm: [Int]) throws -> Tensor {
    guard perm.count == x.rank, Set(perm) == Set(0..<x.rank) else { throw KernelError("perm \(perm) is not a permutation of \(x.rank) axes") }
    let strides = contiguousStrides(x.shape)
    let shape = perm.map { x.shape[$0] }
    return try stridedCopy(x, shape: shape, strides: perm.map { strides[$0] })
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

/// ONNX Slice: clamps starts/ends per axis (negative steps walk backwards).
func slice(_ x: Tensor, starts: [Int], ends: [Int], axes: [Int]?, steps: [Int]?) throws -> Tensor {
    let axes = try normalizeAxes(axes ?? Array(0..<starts.count), rank: x.rank)
    let steps = steps ?? [Int](repeating: 1, count: starts.count)
    guard starts.count == ends.count, axes.count == starts.count, steps.count == starts.count else {
        throw KernelError("starts, ends, axes and steps must have the same length")
    }
    let strides = contiguousStrides(x.shape)
    var shape = x.shape, viewStrides = strides, offset = 0
    for (k, a) in axes.enumerated() {
        let n = x.shape[a]
        guard steps[k] != 0 else { throw KernelError("slice step must not be zero") }
        // A step longer than the axis takes at most one element; clamping keeps the arithmetic in range.
        let step = steps[k] > 0 ? min(steps[k], max(n, 1)) : max(steps[k], -max(n, 1))
        var s = starts[k] < 0 ? starts[k] + n : starts[k]
        var e = ends[k] < 0 ? ends[k] + n : ends[k]
        if step > 0 {
            s = min(max(s, 0), n); e = min(max(e, 0), n)
        } else {
            s = min(max(s, 0), n - 1); e = min(max(e, -1), n - 1)
        }
        let count = step > 0 ? max(0, (e - s + step - 1) / step) : max(0, (s - e + (-step) - 1) / (-step))
        shape[a] = count
        viewStrides[a] = strides[a] * step
        if count > 0 { offset += s * strides[a] }
    }
    return try stridedCopy(x, shape: shape, strides: viewStrides, offset: offset)
}

/// Pads (or, with negative pads, crops) every axis by `begin`/`end`.
func pad(_ x: Tensor, begin: [Int], end: [Int], mode: String, fill: Tensor?) throws -> Tensor {
    var maps: [[Int]] = []
    var out: [Int] = []
    for d in 0..<x.rank {
        guard magnitude(begin[d], below: 1 << 40), magnitude(end[d], below: 1 << 40) else { throw KernelError("pads \(begin[d]), \(end[d]) are too large") }
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
