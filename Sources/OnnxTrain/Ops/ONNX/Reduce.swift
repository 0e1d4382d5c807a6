#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The Reduce* family: one generic reduction over any set of axes, with each op's identity,
/// combine loop and finishing step. Axes come from an attribute before ReduceSum-13 / the
/// others' opset 18, from an optional input after.

/// One reduction: its identity and how the accumulator becomes the output (the combine step
/// is a loop per kind in `Reduction`).
enum ReduceKind: Sendable {
    case sum, mean, max, min, prod, l1, l2, logSum, logSumExp, sumSquare

    /// The accumulator of an empty set: 0 for sums, 1 for products, -inf / +inf for max / min
    /// (the lowest / highest integer for integer types), as the ONNX reference gives.
    func identity<T: NumericElement>(_ type: T.Type) -> T {
        switch self {
        case .prod: return T.one
        case .max: return T.lowest
        case .min: return T.highest
        default: return 0 as T
        }
    }

    func finish<T: NumericElement>(_ acc: T, count: Int) -> T {
        switch self {
        case .mean: return T.div(acc, T(fromDouble: Double(count)))
        case .l2: return T(fromDouble: acc.doubleValue.squareRoot())
        case .logSum: return T(fromDouble: log(acc.doubleValue))
        default: return acc
        }
    }
}

/// The reduced output shape (reduced dimensions kept as 1), and each input dimension's stride
/// in the output (0 for reduced dimensions).
func reductionLayout(shape: [Int], reduced: [Bool]) -> (keptShape: [Int], outStrides: [Int]) {
    let kept = shape.enumerated().map { reduced[$0.offset] ? 1 : $0.element }
    let strides = contiguousStrides(kept)
    return (kept, strides.enumerated().map { reduced[$0.offset] ? 0 : $0.element })
}

/// Calls `body(inputIndex, outputIndex)` for every input element in row-major order; the
/// inner loop runs along the last dimension with a fixed output step.
@inline(__always)
func forEachReduced(shape: [Int], outStrides: [Int], _ body: (Int, Int) -> Void) {
    let n = Tensor.elementCount(shape)
    if n == 0 { return }
    let rank = shape.count
    if rank == 0 { body(0, 0); return }
    let inner = shape[rank - 1], step = outStrides[rank - 1]
    var rows = Odometer(shape: shape, strides: [outStrides])
    var i = 0
    while i < n {
        var p = rows.offsets[0]
        for _ in 0..<inner { body(i, p); i += 1; p += step }
        rows.advance(axes: rank - 1)
    }
}

/// The sum of `f(p[0..<n])` with four independent partial sums (so the loop vectorises), added
/// pairwise at the end.
@inline(__always)
func contiguousSum<T: NumericElement>(_ p: UnsafePointer<T>, _ n: Int, _ f: (T) -> T) -> T {
    var s0 = 0 as T, s1 = 0 as T, s2 = 0 as T, s3 = 0 as T
    var i = 0
    while i + 4 <= n {
        s0 = T.add(s0, f(p[i])); s1 = T.add(s1, f(p[i + 1]))
        s2 = T.add(s2, f(p[i + 2])); s3 = T.add(s3, f(p[i + 3]))
        i += 4
    }
    while i < n { s0 = T.add(s0, f(p[i])); i += 1 }
    return T.add(T.add(s0, s1), T.add(s2, s3))
}

struct Reduction: NumericOperation {
    let x: Tensor, reduced: [Bool], kind: ReduceKind, outDType: DType?

    /// The length of the contiguous run each output reduces when the reduced axes are exactly
    /// the trailing ones (and there is something to reduce), else nil.
    private var trailingRun: Int? {
        guard let first = reduced.firstIndex(of: true), !reduced[first...].contains(false) else { return nil }
        let run = x.shape[first...].reduce(1, *)
        return run > 0 ? run : nil
    }

    /// The number of rows summed when the reduced axes are exactly the leading ones (a bias
    /// gradient: x [rows, inner] -> [inner]), else nil.
    private var leadingRows: Int? {
        guard let last = reduced.lastIndex(of: true), !reduced[...last].contains(false), last + 1 < reduced.count else { return nil }
        return x.shape[...last].reduce(1, *)
    }

    func numeric<T: NumericElement>(_ type: T.Type) throws -> Tensor {
        let (kept, outStrides) = reductionLayout(shape: x.shape, reduced: reduced)
        var count = 1
        for (d, r) in zip(x.shape, reduced) where r { count *= d }
        var out = Tensor(uninitialized: outDType ?? T.dtype, shape: kept)
        let kind = self.kind
        try x.withUnsafeBufferPointer(as: T.self) { px in
            out.uncheckedMutableBufferPointer(as: T.self) { po in
                if kind == .logSumExp {
                    // log(sum(exp(x - m))) + m with m the max, so large inputs do not overflow.
                    for o in po.indices { po[o] = T.lowest }
                    forEachReduced(shape: x.shape, outStrides: outStrides) { i, o in po[o] = MaxFunction()(po[o], px[i]) }
                    let shift = po.map { $0.doubleValue.isFinite ? $0.doubleValue : 0 }
                    var sums = [Double](repeating: 0, count: po.count)
                    forEachReduced(shape: x.shape, outStrides: outStrides) { i, o in sums[o] += exp(px[i].doubleValue - shift[o]) }
                    // log(sum) and the max join in T: integer types truncate the (non-negative) log
                    // part as onnxruntime does.
                    for o in po.indices { po[o] = T.add(T(fromDouble: log(sums[o])), T(fromDouble: shift[o])) }
                    return
                }
                let identity = kind.identity(T.self)
                for o in po.indices { po[o] = identity }
                // One loop per kind, so each combine step inlines into its loop.
                let shape = x.shape
                if let run = trailingRun, kind == .sum || kind == .mean || kind == .logSum || kind == .sumSquare || kind == .l2 {
                    // Reduced axes are the trailing ones: each output sums a contiguous run
                    // (x: [outer, run] -> [outer]), with independent partial sums so it vectorises.
                    let square = kind == .sumSquare || kind == .l2
                    for o in po.indices {
                        let base = px.baseAddress! + o * run
                        po[o] = square ? contiguousSum(base, run) { T.mul($0, $0) } : contiguousSum(base, run) { $0 }
                    }
                } else if let rows = leadingRows, kind == .sum || kind == .mean {
                    // Reduced axes are the leading ones: add the rows of x [rows, inner] into the
                    // output one after another (the same order as the general loop), a contiguous
                    // inner loop that vectorises.
                    let inner = po.count
                    if let out = po.baseAddress, let input = px.baseAddress {
                        for r in 0..<rows {
                            let row = input + r * inner
                            for j in 0..<inner { out[j] = T.add(out[j], row[j]) }
                        }
                    }
                } else {
                    switch kind {
                    case .sum, .mean, .logSum: forEachReduced(shape: shape, outStrides: outStrides) { i, o in po[o] = T.add(po[o], px[i]) }
                    case .l1: forEachReduced(shape: shape, outStrides: outStrides) { i, o in po[o] = T.add(po[o], T.magnitude(px[i])) }
                    case .l2, .sumSquare: forEachReduced(shape: shape, outStrides: outStrides) { i, o in po[o] = T.add(po[o], T.mul(px[i], px[i])) }
                    case .prod: forEachReduced(shape: shape, outStrides: outStrides) { i, o in po[o] = T.mul(po[o], px[i]) }
                    case .max: forEachReduced(shape: shape, outStrides: outStrides) { i, o in po[o] = MaxFunction()(po[o], px[i]) }
                    case .min: forEachReduced(shape: shape, outStrides: outStrides) { i, o in po[o] = MinFunction()(po[o], px[i]) }
                    case .logSumExp: break  // handled above
                    }
                }
                if kind == .mean || kind == .l2 || kind == .logSum {
                    for o in po.indices { po[o] = kind.finish(po[o], count: count) }
                }
            }
        }
        return out
    }
}

/// Reduces `x` over `axes` (all axes when nil); bool inputs (ReduceMax/Min) reduce as bytes.
func reduce(_ x: Tensor, axes: [Int]?, keepDims: Bool, kind: ReduceKind) throws -> Tensor {
    var reduced = [Bool](repeating: axes == nil, count: x.rank)
    for a in axes ?? [] {
        // normalizeAxis accepts axis 0/-1 of a scalar; reducing a scalar leaves it as it is.
        let axis = try normalizeAxis(a, rank: x.rank, name: "axis")
        if axis < x.rank { reduced[axis] = true }
    }
    let result: Tensor
    if x.dtype == .bool {
        guard kind == .max || kind == .min else { throw KernelError("bool input is only supported by ReduceMax and ReduceMin") }
        result = try Reduction(x: x.reinterpreted(as: .uint8), reduced: reduced, kind: kind, outDType: .bool).numeric(UInt8.self)
    } else {
        result = try computingHalfInFloat([x]) { wide in
            try dispatch(wide[0].dtype, Reduction(x: wide[0], reduced: reduced, kind: kind, outDType: nil))
        }
    }
    if keepDims { return result }
    return result.reshaped(x.shape.enumerated().filter { !reduced[$0.offset] }.map(\.element))
}

/// A Reduce* kernel builder: the axes are an attribute before opset `axesInputSince` (13 for
/// ReduceSum, 18 for the others) and the optional input 1 from then on.
func reduceKernel(_ kind: ReduceKind, axesInputSince: Int) -> KernelFactory {
    { ctx in
        let keepDims = try ctx.int("keepdims", default: 1) != 0
        if ctx.sinceVersion < axesInputSince {
            let axes = try ctx.ints("axes")
            return AnyKernel { inputs, _ in [.tensor(try reduce(try inputs.tensor(0), axes: axes, keepDims: keepDims, kind: kind))] }
        }
        let noop = try ctx.int("noop_with_empty_axes", default: 0) != 0
        return AnyKernel { inputs, _ in
            let x = try inputs.tensor(0)
            var axes: [Int]? = nil
            if let t = try inputs.optionalTensor(1) {
                guard let values = t.intValues() else { throw KernelError("axes must be an integer tensor, got \(t.dtype)") }
                if !values.isEmpty { axes = values }
            }
            // Empty axes with noop_with_empty_axes: the input passes through unchanged.
            if axes == nil && noop { return [.tensor(x)] }
            return [.tensor(try reduce(x, axes: axes, keepDims: keepDims, kind: kind))]
        }
    }
}

func registerReduceOps(_ registry: OpRegistry) {
    registry.register("ReduceSum", since: [1, 11, 13], reduceKernel(.sum, axesInputSince: 13))
    registry.register("ReduceMean", since: [1, 11, 13, 18], reduceKernel(.mean, axesInputSince: 18))
    registry.register("ReduceProd", since: [1, 11, 13, 18], reduceKernel(.prod, axesInputSince: 18))
    registry.register("ReduceL1", since: [1, 11, 13, 18], reduceKernel(.l1, axesInputSince: 18))
    registry.register("ReduceL2", since: [1, 11, 13, 18], reduceKernel(.l2, axesInputSince: 18))
    registry.register("ReduceLogSum", since: [1, 11, 13, 18], reduceKernel(.logSum, axesInputSince: 18))
    registry.register("ReduceLogSumExp", since: [1, 11, 13, 18], reduceKernel(.logSumExp, axesInputSince: 18))
    registry.register("ReduceSumSquare", since: [1, 11, 13, 18], reduceKernel(.sumSquare, axesInputSince: 18))
    registry.register("ReduceMax", since: [1, 11, 12, 13, 18, 20], reduceKernel(.max, axesInputSince: 18))
    registry.register("ReduceMin", since: [1, 11, 12, 13, 18, 20], reduceKernel(.min, axesInputSince: 18))

    // Gradient rules (GradientContext):
    registry.registerGradient("ReduceSum", reduceSumGradient)
    registry.registerGradient("ReduceMean", reduceMeanGradient)
    registry.registerGradient("ReduceSumSquare", reduceSumSquareGradient)
    registry.registerGradient("ReduceL1", reduceL1Gradient)
    registry.registerGradient("ReduceL2", reduceL2Gradient)
    registry.registerGradient("ReduceLogSumExp", reduceLogSumExpGradient)
    registry.registerGradient("ReduceLogSum", reduceLogSumGradient)
    registry.registerGradient("ReduceProd", reduceProdGradient)
    for name in ["ReduceMax", "ReduceMin"] {
        registry.registerGradient(name) { g in
            guard g.needs(0) else { return [nil] }
            let r = try ReducedGradient(g, axesFromInput: g.opset >= 18)
            // The gradient is shared evenly by the elements equal to the extreme (PyTorch's amax/amin).
            let x = g.input(0)
            let mask = g.op("Cast", [g.op("Equal", [x, r.unsqueezed(g.output(0))])], attributes: ["to": .int(Int(try g.floatType(x).rawValue))])
            let count = r.sumKeepingDims(mask)
            return [g.op("Mul", [mask, g.op("Div", [r.unsqueezed(try g.requiredDY()), count])])]
        }
    }
}

/// The gradient rule of ReduceSum.
func reduceSumGradient(_ g: GradientContext) throws -> [String?] {
    guard g.needs(0) else { return [nil] }
    let r = try ReducedGradient(g, axesFromInput: g.opset >= 13)
    return [g.op("Expand", [r.unsqueezed(try g.requiredDY()), g.shape(of: g.input(0))])]
}

/// The gradient rule of ReduceMean.
func reduceMeanGradient(_ g: GradientContext) throws -> [String?] {
    guard g.needs(0) else { return [nil] }
    let r = try ReducedGradient(g, axesFromInput: g.opset >= 18)
    let dY = try g.requiredDY()
    // As onnxruntime: dY scaled down by Size(X) / Size(dY), then broadcast back.
    let scale = g.op("Div", [g.op("Size", [g.input(0)]), g.op("Size", [dY])])
    let scaled = g.ms("Scale", [dY, scale], attributes: ["scale_down": .int(1)])[0]
    return [g.op("Expand", [r.unsqueezed(scaled), g.shape(of: g.input(0))])]
}

/// The gradient rule of ReduceSumSquare.
func reduceSumSquareGradient(_ g: GradientContext) throws -> [String?] {
    guard g.needs(0) else { return [nil] }
    let r = try ReducedGradient(g, axesFromInput: g.opset >= 18)
    let x = g.input(0)
    let twice = g.op("Mul", [x, try g.scalar(2, like: x, name: "two")])
    return [g.op("Mul", [twice, r.unsqueezed(try g.requiredDY())])]
}

/// The gradient rule of ReduceL1.
func reduceL1Gradient(_ g: GradientContext) throws -> [String?] {
    guard g.needs(0) else { return [nil] }
    let r = try ReducedGradient(g, axesFromInput: g.opset >= 18)
    return [g.op("Mul", [g.op("Sign", [g.input(0)]), r.unsqueezed(try g.requiredDY())])]
}

/// The gradient rule of ReduceL2.
func reduceL2Gradient(_ g: GradientContext) throws -> [String?] {
    guard g.needs(0) else { return [nil] }
    let r = try ReducedGradient(g, axesFromInput: g.opset >= 18)
    // dX = dY * X / Y (where Y = 0 the gradient is 0, as PyTorch's norm)
    let x = g.input(0), y = r.unsqueezed(g.output(0))
    let zero = try g.scalar(0, like: x, name: "zero")
    let safe = g.op("Where", [g.op("Equal", [y, zero]), try g.scalar(1, like: x, name: "one"), y])
    let ratio = g.op("Where", [g.op("Equal", [y, zero]), zero, g.op("Div", [x, safe])])
    return [g.op("Mul", [ratio, r.unsqueezed(try g.requiredDY())])]
}

/// The gradient rule of ReduceLogSumExp.
func reduceLogSumExpGradient(_ g: GradientContext) throws -> [String?] {
    guard g.needs(0) else { return [nil] }
    let r = try ReducedGradient(g, axesFromInput: g.opset >= 18)
    let softmax = g.op("Exp", [g.op("Sub", [g.input(0), r.unsqueezed(g.output(0))])])
    return [g.op("Mul", [softmax, r.unsqueezed(try g.requiredDY())])]
}

/// The gradient rule of ReduceLogSum.
func reduceLogSumGradient(_ g: GradientContext) throws -> [String?] {
    guard g.needs(0) else { return [nil] }
    let r = try ReducedGradient(g, axesFromInput: g.opset >= 18)
    let sum = g.op("Exp", [r.unsqueezed(g.output(0))])
    return [g.op("Expand", [g.op("Div", [r.unsqueezed(try g.requiredDY()), sum]), g.shape(of: g.input(0))])]
}

/// The gradient rule of ReduceProd.
func reduceProdGradient(_ g: GradientContext) throws -> [String?] {
    guard g.needs(0) else { return [nil] }
    let r = try ReducedGradient(g, axesFromInput: g.opset >= 18)
    // dX = dY * Y / X (inputs with zeros are not supported: their gradient would be inf/NaN).
    return [g.op("Mul", [r.unsqueezed(try g.requiredDY()), g.op("Div", [r.unsqueezed(g.output(0)), g.input(0)])])]
}

/// The axes of a Reduce* node and how to undo the reduction's shape on its gradient.
struct ReducedGradient {
    let g: GradientContext
    /// Fixed axes ([] = every axis), or the name of the run-time axes input.
    let axes: [Int]?
    let axesValue: String?
    let keepdims: Bool
    let noop: Bool

    init(_ g: GradientContext, axesFromInput: Bool) throws {
        self.g = g
        keepdims = (g.node.int("keepdims") ?? 1) != 0
        if axesFromInput {
            if !g.hasInput(1) {
                axes = []
                axesValue = nil
            } else if let t = g.constantInput(1), let v = t.intValues() {
                axes = v
                axesValue = nil
            } else {
                axes = nil
                axesValue = g.input(1)
            }
        } else {
            axes = g.node.ints("axes") ?? []
            axesValue = nil
        }
        noop = g.node.int("noop_with_empty_axes") == 1
    }

    /// A reduced tensor given back the reduced axes as size-1 dimensions (nothing to do with keepdims).
    func unsqueezed(_ value: String) -> String {
        if keepdims { return value }
        if let axes {
            if axes.isEmpty { return value }  // a scalar broadcasts against anything
            return g.unsqueeze(value, axes: axes)
        }
        // Run-time axes: unsqueeze through the input's shape with ones at the reduced axes.
        return g.op("Reshape", [value, g.op("Shape", [sumKeepingDims(g.input(0))])])
    }

    /// `x` summed over the node's axes with keepdims.
    func sumKeepingDims(_ x: String) -> String {
        if let axes {
            if axes.isEmpty && noop { return x }
            if axes.isEmpty, let r = g.rank(g.input(0)) { return g.reduceSum(x, axes: Array(0..<r), keepdims: true) }
            if axes.isEmpty { return g.op("ReduceSum", [x], attributes: ["keepdims": .int(1)]) }
            return g.reduceSum(x, axes: axes, keepdims: true)
        }
        return g.reduceSum(x, axesValue: axesValue!, keepdims: true)
    }
}
