import Foundation

/// Resize (10, 11+) and Upsample: separable interpolation, one axis at a time, as the onnx
/// reference defines it (nearest/linear/cubic, every coordinate transformation mode, antialias,
/// exclude_outside, axes, keep_aspect_ratio_policy). Computes in Double, rounds once at the end.
func registerResizeOps(_ registry: OpRegistry) {
    registry.register("Resize", since: [10, 11], resizeKernel)
    registry.register("Upsample", since: [7, 9], upsampleKernel)
    registry.registerGradient("Resize", resizeGradient)
    registry.registerGradient("Upsample", resizeGradient)
}

/// Resize, since opset 10, 11.
func resizeKernel(_ ctx: NodeContext) throws -> Kernel {
    let since = ctx.sinceVersion
    var options = try ResizeOptions(ctx)
    if since == 10 { options.coordinateMode = "asymmetric"; options.nearestMode = "floor" }
    let axes = try ctx.ints("axes")
    let opts = options
    return AnyKernel { inputs, _ in
        let x = try inputs.tensor(0)
        if since == 10 {
            return [.tensor(try resize(x, scales: try inputs.tensor(1).doubles(), sizes: nil, roi: nil, axes: nil, opts))]
        }
        let roi = try inputs.optionalTensor(1).flatMap { $0.count > 0 ? try $0.doubles() : nil }
        let scales = try inputs.optionalTensor(2).flatMap { $0.count > 0 ? try $0.doubles() : nil }
        let sizes = try inputs.optionalTensor(3).flatMap { $0.count > 0 ? try $0.ints("sizes") : nil }
        return [.tensor(try resize(x, scales: scales, sizes: sizes, roi: roi, axes: axes, opts))]
    }
}

/// Upsample, since opset 7, 9.
func upsampleKernel(_ ctx: NodeContext) throws -> Kernel {
    let since = ctx.sinceVersion
    var options = try ResizeOptions(ctx)
    options.coordinateMode = "asymmetric"
    options.nearestMode = "floor"
    let attrScales = since < 9 ? try ctx.floats("scales")?.map(Double.init) : nil
    let opts = options
    return AnyKernel { inputs, _ in
        let x = try inputs.tensor(0)
        let scales = try attrScales ?? inputs.tensor(1).doubles()
        return [.tensor(try resize(x, scales: scales, sizes: nil, roi: nil, axes: nil, opts))]
    }
}

struct ResizeOptions {
    var mode: String
    var coordinateMode: String
    var nearestMode: String
    var cubicA: Double
    var excludeOutside: Bool
    var extrapolation: Double
    var antialias: Bool
    var aspectPolicy: String

    init(_ ctx: NodeContext) throws {
        mode = try ctx.string("mode", default: "nearest")
        if mode == "bilinear" || mode == "trilinear" { mode = "linear" }
        coordinateMode = try ctx.string("coordinate_transformation_mode", default: "half_pixel")
        nearestMode = try ctx.string("nearest_mode", default: "round_prefer_floor")
        cubicA = Double(try ctx.float("cubic_coeff_a", default: -0.75))
        excludeOutside = try ctx.int("exclude_outside", default: 0) != 0
        extrapolation = Double(try ctx.float("extrapolation_value", default: 0))
        antialias = try ctx.int("antialias", default: 0) != 0
        aspectPolicy = try ctx.string("keep_aspect_ratio_policy", default: "stretch")
        guard ["nearest", "linear", "cubic"].contains(mode) else { throw KernelError("unknown mode '\(mode)'") }
        guard ["half_pixel", "half_pixel_symmetric", "pytorch_half_pixel", "align_corners", "asymmetric", "tf_crop_and_resize"].contains(coordinateMode) else {
            throw KernelError("unknown coordinate_transformation_mode '\(coordinateMode)'")
        }
        guard ["round_prefer_floor", "round_prefer_ceil", "floor", "ceil"].contains(nearestMode) else { throw KernelError("unknown nearest_mode '\(nearestMode)'") }
        guard ["stretch", "not_larger", "not_smaller"].contains(aspectPolicy) else { throw KernelError("unknown keep_aspect_ratio_policy '\(aspectPolicy)'") }
    }
}

/// Resizes `x` by `scales` or to `sizes` (per axis in `axes`, all axes when nil).
func resize(_ x: Tensor, scales: [Double]?, sizes: [Int]?, roi: [Double]?, axes: [Int]?, _ o: ResizeOptions) throws -> Tensor {
    let r = x.rank
    let axes = try normalizeAxes(axes ?? Array(0..<r), rank: r)
    var scale = [Double](repeating: 1, count: r)
    var outSize = x.shape
    var roiStart = [Double](repeating: 0, count: r), roiEnd = [Double](repeating: 1, count: r)
    if let roi, o.coordinateMode == "tf_crop_and_resize" {
        guard roi.count == 2 * axes.count else { throw KernelError("roi must hold 2 entries per resized axis") }
        for (i, d) in axes.enumerated() { roiStart[d] = roi[i]; roiEnd[d] = roi[axes.count + i] }
    }
    if let sizes {
        guard sizes.count == axes.count else { throw KernelError("sizes \(sizes) must hold one size per axis \(axes)") }
        for (i, d) in axes.enumerated() {
            guard sizes[i] >= 0 else { throw KernelError("sizes \(sizes) has a negative size") }
            outSize[d] = sizes[i]
            scale[d] = x.shape[d] == 0 ? 1 : Double(sizes[i]) / Double(x.shape[d])
        }
        if o.aspectPolicy != "stretch" {
            let chosen = axes.map { scale[$0] }
            let s = (o.aspectPolicy == "not_larger" ? chosen.min() : chosen.max()) ?? 1
            for d in axes {
                scale[d] = s
                outSize[d] = try checkedInt(s * Double(x.shape[d]) + 0.5, "output size")
            }
        }
    } else if let scales {
        guard scales.count == axes.count else { throw KernelError("scales \(scales) must hold one scale per axis \(axes)") }
        for (i, d) in axes.enumerated() {
            guard scales[i] > 0, scales[i] < 1e6 else { throw KernelError("scales \(scales) must be positive") }
            scale[d] = scales[i]
            outSize[d] = try checkedInt(scales[i] * Double(x.shape[d]), "output size")
        }
    } else {
        throw KernelError("either scales or sizes is required")
    }
    try checkShape(outSize, "output")
    var data = try x.doubles()
    var shape = x.shape
    for d in 0..<r where outSize[d] != shape[d] || scale[d] != 1 || o.coordinateMode == "tf_crop_and_resize" {
        let taps = try resizeTaps(input: shape[d], output: outSize[d], scale: scale[d], roi: (roiStart[d], roiEnd[d]), o)
        let outer = shape[..<d].reduce(1, *), inner = shape[(d + 1)...].reduce(1, *)
        let n = shape[d], m = outSize[d]
        var next = [Double](repeating: 0, count: outer * m * inner)
        for b in 0..<outer {
            for j in 0..<m {
                let dst = (b * m + j) * inner
                guard let tap = taps[j] else {
                    for i in 0..<inner { next[dst + i] = o.extrapolation }
                    continue
                }
                for (index, weight) in tap where weight != 0 {
                    let src = (b * n + index) * inner
                    for i in 0..<inner { next[dst + i] += weight * data[src + i] }
                }
            }
        }
        data = next
        shape[d] = m
    }
    return try Tensor(dtype: x.dtype, shape: outSize, doubles: x.dtype.isFloatingPoint ? data : data.map { $0.rounded(.towardZero) })
}

/// For each output coordinate of one axis, the input indices and weights it mixes (nil: the
/// coordinate falls outside a tf_crop_and_resize box and takes the extrapolation value).
private func resizeTaps(input n: Int, output m: Int, scale: Double, roi: (Double, Double), _ o: ResizeOptions) throws -> [[(Int, Double)]?] {
    guard n > 0 || m == 0 else { throw KernelError("cannot resize an empty axis to \(m)") }
    let outWidth = scale * Double(n)
    var taps: [[(Int, Double)]?] = []
    taps.reserveCapacity(m)
    for j in 0..<m {
        let x = Double(j)
        var xo: Double
        switch o.coordinateMode {
        case "align_corners": xo = outWidth == 1 ? 0 : x * Double(n - 1) / (outWidth - 1)
        case "asymmetric": xo = x / scale
        case "tf_crop_and_resize":
            xo = outWidth == 1 ? (roi.1 - roi.0) * Double(n - 1) / 2 : x * (roi.1 - roi.0) * Double(n - 1) / (outWidth - 1)
            xo += roi.0 * Double(n - 1)
            if !(xo >= 0 && xo <= Double(n - 1)) { taps.append(nil); continue }  // NaN boxes extrapolate too
        case "pytorch_half_pixel": xo = outWidth == 1 ? -0.5 : (x + 0.5) / scale - 0.5
        case "half_pixel_symmetric":
            let adjustment = Double(m) / outWidth
            xo = Double(n) / 2 * (1 - adjustment) + (x + 0.5) / scale - 0.5
        default: xo = (x + 0.5) / scale - 0.5
        }
        // ratio in (0, 1]: an integral coordinate counts as the right end of the cell to its left.
        let base = xo == xo.rounded(.down) ? Int(xo) - 1 : Int(xo.rounded(.down))
        let ratio = xo - Double(base)
        var tap: [(Int, Double)]
        switch o.mode {
        case "nearest":
            var pickRight: Bool
            if ratio == 1 { pickRight = true } else {
                switch o.nearestMode {
                case "round_prefer_ceil": pickRight = ratio >= 0.5
                case "floor": pickRight = false
                case "ceil": pickRight = true
                default: pickRight = ratio > 0.5
                }
            }
            tap = [(base + (pickRight ? 1 : 0), 1)]
        case "linear":
            if o.antialias && scale < 1 {
                let start = Int((-1 / scale).rounded(.down)) + 1
                let footprint = 2 - 2 * start
                tap = (0..<footprint).map { k in (base + start + k, max(0, min(1, 1 - abs((Double(start + k) - ratio) * scale)))) }
            } else {
                tap = [(base, 1 - ratio), (base + 1, ratio)]
            }
        default:
            let a = o.cubicA
            if o.antialias {
                let s = min(scale, 1)
                let start = Int((-2 / s).rounded(.down)) + 1
                tap = (start..<(2 - start)).map { k in
                    let t = abs(s * (Double(k) - ratio))
                    let w = t <= 1 ? (a + 2) * t * t * t - (a + 3) * t * t + 1 : t < 2 ? a * t * t * t - 5 * a * t * t + 8 * a * t - 4 * a : 0
                    return (base + k, w)
                }
            } else {
                let r = ratio
                tap = [(base - 1, ((a * (r + 1) - 5 * a) * (r + 1) + 8 * a) * (r + 1) - 4 * a),
                       (base, ((a + 2) * r - (a + 3)) * r * r + 1),
                       (base + 1, ((a + 2) * (1 - r) - (a + 3)) * (1 - r) * (1 - r) + 1),
                       (base + 2, ((a * ((1 - r) + 1) - 5 * a) * ((1 - r) + 1) + 8 * a) * ((1 - r) + 1) - 4 * a)]
            }
        }
        if o.antialias && o.mode != "nearest" {
            let sum = tap.reduce(0) { $0 + $1.1 }
            if sum != 0 { tap = tap.map { ($0.0, $0.1 / sum) } }
        }
        if o.excludeOutside {
            tap = tap.map { $0.0 < 0 || $0.0 >= n ? ($0.0, 0) : $0 }
            let sum = tap.reduce(0) { $0 + $1.1 }
            if sum != 0 { tap = tap.map { ($0.0, $0.1 / sum) } }
        }
        // Edge padding: indices outside the axis read its nearest end.
        taps.append(tap.map { (min(max($0.0, 0), n - 1), $0.1) })
    }
    return taps
}

/// Resize and Upsample are linear in X and separable by axis (nearest, linear, cubic, with any
/// coordinate transformation), so Y = X ×_a M_a over the resized axes, and dX = dY ×_a M_aᵀ.
/// Each M_a is computed once, while the gradient graph is built, by resizing an identity matrix
/// with the node's own attributes; it needs the input's static shape and constant scales or sizes.
func resizeGradient(_ g: GradientContext) throws -> [String?] {
    guard g.needs(0) else { return Array(repeating: nil, count: g.node.inputs.count) }
    let dY = try g.requiredDY()
    let x = g.input(0)
    guard let shape = g.staticShape(x) else { throw GradientError("\(g.node.opType) is differentiated for a static input shape") }
    let dtype = try g.floatType(x)
    let r = shape.count
    // Per-axis scale (or output size) from the constant inputs or attributes.
    var scales: [Double]?
    var sizes: [Int]?
    if g.node.opType == "Upsample" || g.opset < 11 {
        if let s = g.node.attributes["scales"], case .floats(let v) = s { scales = v.map(Double.init) }
        else if let t = g.constantInput(1) { scales = (0..<t.count).compactMap { t.scalarDouble(at: $0) } }
    } else {
        if let t = g.constantInput(3), t.count > 0 { sizes = t.intValues() }
        else if let t = g.constantInput(2), t.count > 0 { scales = (0..<t.count).compactMap { t.scalarDouble(at: $0) } }
    }
    if let axes = g.node.ints("axes") {
        // Opset 18: scales/sizes name only some axes.
        var fullScales = [Double](repeating: 1, count: r), fullSizes = shape
        for (k, a) in axes.enumerated() {
            let axis = a < 0 ? a + r : a
            if let s = scales, k < s.count { fullScales[axis] = s[k] }
            if let s = sizes, k < s.count { fullSizes[axis] = s[k] }
        }
        if scales != nil { scales = fullScales }
        if sizes != nil { sizes = fullSizes }
    }
    guard scales?.count == r || sizes?.count == r else {
        throw GradientError("\(g.node.opType) is differentiated for constant scales or sizes")
    }
    if g.node.string("keep_aspect_ratio_policy").map({ $0 != "stretch" }) == true {
        throw GradientError("Resize with keep_aspect_ratio_policy is not differentiated")
    }
    var grad = dY
    for axis in 0..<r {
        let n = shape[axis]
        let resized = sizes.map { $0[axis] != n } ?? (scales![axis] != 1)
        guard resized else { continue }
        // M_aᵀ: resize the rows of an n x n identity along axis 1 with this axis's scale or size.
        var basis = Graph()
        basis.inputs = [ValueInfo(name: "I", type: .tensor(dtype, shape: [.value(n), .value(n)]))]
        var attributes = g.attributes
        attributes["axes"] = nil
        var inputs = ["I"]
        if g.node.opType == "Upsample" || g.opset < 11 {
            if g.node.opType == "Upsample" && g.opset < 9 { attributes["scales"] = .floats([1, Float(scales![axis])]) }
            else { basis.setInitializer("scales", Tensor(shape: [2], scalars: [Float(1), Float(scales![axis])])); inputs.append("scales") }
        } else {
            basis.setInitializer("roi", try GradientContext.scalarTensor(0, dtype: dtype, shape: [0]))
            if let sizes {
                basis.setInitializer("scales", Tensor(shape: [0], scalars: [Float]()))
                basis.setInitializer("sizes", Tensor(shape: [2], scalars: [Int64(n), Int64(sizes[axis])]))
                inputs += ["roi", "scales", "sizes"]
            } else {
                basis.setInitializer("scales", Tensor(shape: [2], scalars: [Float(1), Float(scales![axis])]))
                inputs += ["roi", "scales"]
            }
        }
        if let roi = g.constantInput(1), roi.count == 2 * r, g.node.string("coordinate_transformation_mode") == "tf_crop_and_resize" {
            basis.setInitializer("roi", try GradientContext.scalarTensor(0, dtype: dtype, shape: [4]))
            var values = [Double](repeating: 0, count: 4)
            values[0] = 0; values[2] = 1
            values[1] = roi.scalarDouble(at: axis) ?? 0
            values[3] = roi.scalarDouble(at: axis + r) ?? 1
            basis.setInitializer("roi", try Tensor(shape: [4], scalars: values).cast(to: dtype))
        }
        basis.nodes = [Node(opType: g.node.opType, name: "basis", inputs: inputs, outputs: ["R"], attributes: attributes)]
        basis.outputs = [ValueInfo(name: "R", type: nil)]
        var model = Model(graph: basis)
        model.opsetImports = ["": g.onnxOpset]
        var identity = [Double](repeating: 0, count: n * n)
        for i in 0..<n { identity[i * n + i] = 1 }
        let feeds: [String: Value] = ["I": .tensor(try Tensor(shape: [n, n], scalars: identity).cast(to: dtype))]
        guard let transposedM = try InferenceSession(model: model).run(feeds)["R"]?.tensor else {
            throw GradientError("could not compute the interpolation matrix of axis \(axis)")
        }
        // R = Mᵀ [n, out]: dX along the axis = dY (axis last) @ M = dY @ Rᵀ.
        let m = g.constant(transposedM, name: "interpolation_\(axis)")
        var perm = Array(0..<r)
        perm.swapAt(axis, r - 1)
        let moved = axis == r - 1 ? grad : g.op("Transpose", [grad], attributes: ["perm": .ints(perm)])
        let product = g.ms("FusedMatMul", [moved, m], attributes: ["transB": .int(1), "alpha": .float(1)])[0]
        grad = axis == r - 1 ? product : g.op("Transpose", [product], attributes: ["perm": .ints(perm)])
    }
    return [grad] + Array(repeating: nil, count: g.node.inputs.count - 1)
}
