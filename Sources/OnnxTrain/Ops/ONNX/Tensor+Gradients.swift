/// Gradient rules of the shape and data-movement ops (ShapeOps.swift, MovementOps.swift,
/// TensorMovement.swift, GatherScatter.swift): the gradient is the inverse movement, or a
/// scatter-add (GatherGrad, SliceGrad, ...) where the forward op selects.
func registerTensorGradients(_ registry: OpRegistry) {
    for name in ["Reshape", "Flatten", "Squeeze", "Unsqueeze"] {
        registry.registerGradient(name) { g in
            var grads: [String?] = Array(repeating: nil, count: g.node.inputs.count)
            if g.needs(0) { grads[0] = g.reshape(try g.requiredDY(), like: g.input(0)) }
            return grads
        }
    }
    registry.registerGradient("Transpose") { g in
        guard g.needs(0) else { return [nil] }
        let dY = try g.requiredDY()
        let perm: [Int]
        if let p = g.node.ints("perm") { perm = p } else if let r = g.rank(g.input(0)) { perm = Array((0..<r).reversed()) } else {
            return [g.op("Transpose", [dY])]
        }
        var inverse = [Int](repeating: 0, count: perm.count)
        for (i, p) in perm.enumerated() where p >= 0 && p < perm.count { inverse[p] = i }
        return [g.op("Transpose", [dY], attributes: ["perm": .ints(inverse)])]
    }
    registry.registerGradient("Trilu") { g in
        // The same triangle of the gradient survives.
        var grads: [String?] = Array(repeating: nil, count: g.node.inputs.count)
        if g.needs(0) {
            var inputs = [try g.requiredDY()]
            if g.hasInput(1) { inputs.append(g.input(1)) }
            grads[0] = g.op("Trilu", inputs, attributes: ["upper": .int(g.node.int("upper") ?? 1)])
        }
        return grads
    }
    registry.registerGradient("Expand") { g in
        [g.needs(0) ? g.reduced(try g.requiredDY(), toInput: 0) : nil, nil]
    }
    registry.registerGradient("Concat") { g in
        let dY = try g.requiredDY()
        let n = g.node.inputs.count
        let rawAxis = g.node.int("axis") ?? 0
        guard let r = g.rank(g.output(0)) ?? g.rank(g.input(0)) ?? (rawAxis >= 0 ? rawAxis + 1 : nil) else {
            throw GradientError("Concat with a negative axis needs the rank of its inputs")
        }
        let axis = TypeInference.normalize(rawAxis, r, clamp: false)
        let sizes = g.node.inputs.map { name -> Int? in
            guard let s = g.shapeInfo(name), axis < s.count, case .value(let v) = s[axis] else { return nil }
            return v
        }
        let split: String
        if sizes.allSatisfy({ $0 != nil }) {
            split = g.ints(sizes.map { $0! }, name: "split")
        } else {
            // Each input's length along the axis, at run time.
            let lengths = g.node.inputs.map { name in
                g.op("Gather", [g.shape(of: name), g.ints([axis], name: "axis")], attributes: ["axis": .int(0)])
            }
            split = g.op("Concat", lengths, attributes: ["axis": .int(0)])
        }
        let parts = g.ms("SplitTraining", [dY, split], outputs: n, attributes: ["axis": .int(axis)])
        return (0..<n).map { g.needs($0) ? parts[$0] : nil }
    }
    registry.registerGradient("Split") { g in
        guard g.needs(0) else { return [nil, nil] }
        let x = g.input(0)
        let rawAxis = g.node.int("axis") ?? 0
        guard let r = g.rank(x) ?? (rawAxis >= 0 ? rawAxis + 1 : nil) else { throw GradientError("Split with a negative axis needs the rank of its input") }
        let axis = TypeInference.normalize(rawAxis, r, clamp: false)
        // Outputs without a gradient contribute zeros of their own shape.
        var parts: [String] = []
        for (i, out) in g.node.outputs.enumerated() where !out.isEmpty {
            if let d = g.dY(i) { parts.append(d); continue }
            let zero = try GradientContext.scalarTensor(0, dtype: try g.floatType(x), shape: [1])
            parts.append(g.op("ConstantOfShape", [g.shape(of: out)], attributes: ["value": .tensor(zero)]))
        }
        return [g.op("Concat", parts, attributes: ["axis": .int(axis)]), nil]
    }
    registry.registerGradient("Slice") { g in
        guard g.needs(0) else { return [nil] }
        var inputs = [try g.requiredDY(), g.shape(of: g.input(0))]
        if g.opset < 10 {
            guard let starts = g.node.ints("starts"), let ends = g.node.ints("ends") else { throw GradientError("Slice needs starts and ends") }
            inputs += [g.ints(starts, name: "starts"), g.ints(ends, name: "ends")]
            if let axes = g.node.ints("axes") { inputs.append(g.ints(axes, name: "axes")) }
        } else {
            inputs += (1..<g.node.inputs.count).map { g.input($0) }
            while inputs.last == "" { inputs.removeLast() }
        }
        return [g.ms("SliceGrad", inputs)[0]] + Array(repeating: nil, count: max(0, g.node.inputs.count - 1))
    }
    registry.registerGradient("Gather") { g in
        guard g.needs(0) else { return [nil, nil] }
        return [g.ms("GatherGrad", [g.shape(of: g.input(0)), g.input(1), try g.requiredDY()],
                     attributes: ["axis": .int(g.node.int("axis") ?? 0)])[0], nil]
    }
    registry.registerGradient("GatherElements") { g in
        guard g.needs(0) else { return [nil, nil] }
        return [g.ms("GatherElementsGrad", [try g.requiredDY(), g.shape(of: g.input(0)), g.input(1)],
                     attributes: ["axis": .int(g.node.int("axis") ?? 0)])[0], nil]
    }
    registry.registerGradient("GatherND") { g in
        guard g.needs(0) else { return [nil, nil] }
        var indices = g.input(1)
        if g.dtype(indices) != .int64 { indices = g.op("Cast", [indices], attributes: ["to": .int(Int(DType.int64.rawValue))]) }
        return [g.ms("GatherNDGrad", [g.shape(of: g.input(0)), indices, try g.requiredDY()],
                     attributes: ["batch_dims": .int(g.node.int("batch_dims") ?? 0)])[0], nil]
    }
    registry.registerGradient("ScatterElements") { g in
        if let r = g.node.string("reduction"), r != "none" { throw GradientError("ScatterElements with reduction '\(r)' is not supported") }
        let dY = try g.requiredDY()
        let axis: [String: Attribute] = ["axis": .int(g.node.int("axis") ?? 0)]
        var dData: String?, dUpdates: String?
        if g.needs(0) {
            // The scattered positions were overwritten: their gradient does not reach data.
            let zeros = g.op("ConstantOfShape", [g.shape(of: g.input(2))],
                             attributes: ["value": .tensor(try GradientContext.scalarTensor(0, dtype: try g.floatType(g.input(0)), shape: [1]))])
            dData = g.op("ScatterElements", [dY, g.input(1), zeros], attributes: axis)
        }
        if g.needs(2) { dUpdates = g.op("GatherElements", [dY, g.input(1)], attributes: axis) }
        return [dData, nil, dUpdates]
    }
    registry.registerGradient("ScatterND") { g in
        if let r = g.node.string("reduction"), r != "none" { throw GradientError("ScatterND with reduction '\(r)' is not supported") }
        let dY = try g.requiredDY()
        var dData: String?, dUpdates: String?
        if g.needs(0) {
            let zeros = g.op("ConstantOfShape", [g.shape(of: g.input(2))],
                             attributes: ["value": .tensor(try GradientContext.scalarTensor(0, dtype: try g.floatType(g.input(0)), shape: [1]))])
            dData = g.op("ScatterND", [dY, g.input(1), zeros])
        }
        if g.needs(2) { dUpdates = g.op("GatherND", [dY, g.input(1)]) }
        return [dData, nil, dUpdates]
    }
    registry.registerGradient("Tile") { g in
        guard g.needs(0) else { return [nil, nil] }
        // Y = X tiled r_k times along k: view dY as [r_0, d_0, r_1, d_1, ...] and sum the r_k.
        guard let shape = g.staticShape(g.input(0)), let repeats = g.constantInput(1)?.intValues(), repeats.count == shape.count else {
            throw GradientError("Tile is differentiated for a static input shape and constant repeats")
        }
        var split: [Int] = []
        for (d, r) in zip(shape, repeats) { split += [r, d] }
        let view = g.op("Reshape", [try g.requiredDY(), g.ints(split, name: "tiles")])
        let summed = g.reduceSum(view, axes: (0..<shape.count).map { 2 * $0 }, keepdims: false)
        return [summed, nil]
    }
    registry.registerGradient("Pad") { g in
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
}
