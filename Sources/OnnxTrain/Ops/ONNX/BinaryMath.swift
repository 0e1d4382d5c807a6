/// Add, Sub, Mul, Div, Pow, Mod and Min/Max/Sum/Mean: binary (or n-ary) elementwise arithmetic
/// with numpy broadcasting, and the registration list of the other elementwise binary ops, each
/// family in its own file: comparisons (ComparisonOps.swift), And/Or/Xor/Not (Logical.swift),
/// BitShift and Bitwise* (Bitwise.swift), Where (Where.swift).
struct AddFunction: NumericBinaryFunction {
    @inline(__always) func callAsFunction<T: NumericElement>(_ a: T, _ b: T) -> T { T.add(a, b) }
}
struct SubFunction: NumericBinaryFunction {
    @inline(__always) func callAsFunction<T: NumericElement>(_ a: T, _ b: T) -> T { T.sub(a, b) }
}
struct MulFunction: NumericBinaryFunction {
    @inline(__always) func callAsFunction<T: NumericElement>(_ a: T, _ b: T) -> T { T.mul(a, b) }
}
struct DivFunction: NumericBinaryFunction {
    @inline(__always) func callAsFunction<T: NumericElement>(_ a: T, _ b: T) -> T { T.div(a, b) }
}
/// Mod: fmod = 1 is C's fmod (sign of the dividend); fmod = 0 is Python's (sign of the divisor).
struct ModFunction: NumericBinaryFunction {
    let fmod: Bool
    @inline(__always) func callAsFunction<T: NumericElement>(_ a: T, _ b: T) -> T {
        fmod ? T.fmod(a, b) : T.floorMod(a, b)
    }
}
/// Max and Min propagate NaN, as numpy's maximum/minimum and onnxruntime do.
struct MaxFunction: NumericBinaryFunction {
    @inline(__always) func callAsFunction<T: NumericElement>(_ a: T, _ b: T) -> T {
        a.isNaNValue ? a : (b.isNaNValue ? b : (a < b ? b : a))
    }
}
struct MinFunction: NumericBinaryFunction {
    @inline(__always) func callAsFunction<T: NumericElement>(_ a: T, _ b: T) -> T {
        a.isNaNValue ? a : (b.isNaNValue ? b : (b < a ? b : a))
    }
}
struct PowFunction: FloatBinaryFunction {
    @inline(__always) func callAsFunction<T: FloatElement>(_ a: T, _ b: T) -> T { T.pow(a, b) }
}

/// Pow(X, Y): the result has X's type; mixed types compute in Double (exact for the integer
/// powers integer bases can hold), float32 ^ float32 stays in powf.
func power(_ x: Tensor, _ y: Tensor) throws -> Tensor {
    if x.dtype == y.dtype && (x.dtype == .float32 || x.dtype == .float64 || x.isHalf) {
        return try zipFloat(x, y, PowFunction())
    }
    let result = try zipFloat(try x.cast(to: .float64), try y.cast(to: .float64), PowFunction())
    return try result.cast(to: x.dtype)
}

/// Folds variadic inputs with a broadcasting binary function (Sum, Min, Max, Mean), dividing
/// by the input count for Mean. Half inputs are widened once and the result rounded once, as
/// onnxruntime does (rounding after every pairwise step drifts by an ulp or more).
func foldVariadic<F: NumericBinaryFunction>(_ inputs: [Value?], _ f: F, mean: Bool = false) throws -> Tensor {
    guard !inputs.isEmpty else { throw KernelError("at least one input is required") }
    let tensors = try inputs.indices.map { try inputs.tensor($0) }
    for t in tensors.dropFirst() { try requireSameType(tensors[0], t) }
    return try computingHalfInFloat(tensors) { wide in
        var acc = wide[0]
        for t in wide.dropFirst() {
            acc = try binaryFastPath(acc, t, f) ?? dispatch(acc.dtype, ZipNumeric(a: acc, b: t, f: f))
        }
        if mean { acc = try dispatch(acc.dtype, MapFloat(x: acc, f: DivideByFunction(divisor: Double(wide.count)))) }
        return acc
    }
}

// MARK: - float32 fast path

/// Add/Sub/Mul/Div/Sum/Max/Min when both operands have one numeric type: loops over plain
/// pointers in T (no accumulator: each element is one operation), split across threads. One
/// operand has the output's shape and the other the same shape, a suffix of it (a bias row, a
/// [T, T] mask: it repeats every `period` elements) or a single value; or the operands broadcast
/// along other axes (a [B, 1, T, T] mask under [B, H, T, T] scores) in rows of at least 16. nil for
/// short rows, empty tensors and half types: zipNumeric handles those.
func binaryFastPath<F: NumericBinaryFunction>(_ a: Tensor, _ b: Tensor, _ f: F) -> Tensor? {
    guard a.dtype == b.dtype, !a.isHalf, a.dtype.isFloatingPoint || a.dtype.isInteger else { return nil }
    func isSuffix(_ s: [Int], of full: [Int]) -> Bool {
        let dims = s.drop(while: { $0 == 1 })
        return s.count <= full.count && full.suffix(dims.count).elementsEqual(dims)
    }
    let outShape: [Int]
    if a.shape == b.shape || isSuffix(b.shape, of: a.shape) {
        outShape = a.shape
    } else if isSuffix(a.shape, of: b.shape) {
        outShape = b.shape
    } else {
        // Broadcasts along other axes: runs along the merged last axis, if long enough.
        guard let shape = try? Broadcast.shape(a.shape, b.shape), Tensor.elementCount(shape) > 0 else { return nil }
        let layout = BroadcastRows(outShape: shape, operandShapes: [a.shape, b.shape])
        guard layout.inner >= 16 else { return nil }
        return try? dispatch(a.dtype, BroadcastBinary(a: a, b: b, f: f, outShape: shape, layout: layout))
    }
    let n = Tensor.elementCount(outShape), period = min(a.count, b.count)
    guard n > 0, period == 1 || period >= 16 else { return nil }
    return try? dispatch(a.dtype, SuffixBinary(a: a, b: b, f: f, outShape: outShape, period: period))
}

/// The loops of `binaryFastPath` for one element type.
private struct SuffixBinary<F: NumericBinaryFunction>: NumericOperation {
    let a: Tensor, b: Tensor, f: F, outShape: [Int], period: Int

    func numeric<T: NumericElement>(_ type: T.Type) throws -> Tensor {
        var out = Tensor(uninitialized: T.dtype, shape: outShape)
        let (n, period, f) = (out.count, period, f)
        let aFull = a.count == n, bFull = b.count == n
        a.uncheckedBufferPointer(as: T.self) { ba in
            b.uncheckedBufferPointer(as: T.self) { bb in
                out.uncheckedMutableBufferPointer(as: T.self) { bo in
                    guard let pa = ba.baseAddress, let pb = bb.baseAddress, let po = bo.baseAddress else { return }
                    if period == 1 && !(aFull && bFull) {
                        Parallel.forRange(n, minimumChunk: 32_768) { range in
                            let i = range.lowerBound
                            if aFull {
                                binaryScalarLoop(f, pa + i, pb[0], scalarFirst: false, po + i, range.count)
                            } else {
                                binaryScalarLoop(f, pb + i, pa[0], scalarFirst: true, po + i, range.count)
                            }
                        }
                        return
                    }
                    // Rows of `period` elements; the full operand advances, the repeated one restarts.
                    Parallel.forRange(n / period, minimumChunk: max(1, 32_768 / period)) { rows in
                        for r in rows {
                            let o = r * period
                            binaryLoop(f, aFull ? pa + o : pa, bFull ? pb + o : pb, po + o, period)
                        }
                    }
                }
            }
        }
        return out
    }
}

/// The loops of `binaryFastPath` for operands that broadcast along other axes (a [B, 1, T, T]
/// mask under [B, H, T, T] scores): runs along the merged last axis, each operand advancing or
/// repeating, split across threads.
private struct BroadcastBinary<F: NumericBinaryFunction>: NumericOperation {
    let a: Tensor, b: Tensor, f: F, outShape: [Int], layout: BroadcastRows

    func numeric<T: NumericElement>(_ type: T.Type) throws -> Tensor {
        var out = Tensor(uninitialized: T.dtype, shape: outShape)
        let (n, f, layout) = (out.count, f, layout)
        let ia = layout.innerStrides[0], ib = layout.innerStrides[1]
        a.uncheckedBufferPointer(as: T.self) { ba in
            b.uncheckedBufferPointer(as: T.self) { bb in
                out.uncheckedMutableBufferPointer(as: T.self) { bo in
                    guard let pa = ba.baseAddress, let pb = bb.baseAddress, let po = bo.baseAddress else { return }
                    Parallel.forRange(n, minimumChunk: 32_768) { elements in
                        layout.forEachRun(elements) { o, count, offsets in
                            let x = pa + offsets[0], y = pb + offsets[1]
                            switch (ia, ib) {
                            case (1, 1): binaryLoop(f, x, y, po + o, count)
                            case (0, 1): binaryScalarLoop(f, y, x[0], scalarFirst: true, po + o, count)
                            case (1, 0): binaryScalarLoop(f, x, y[0], scalarFirst: false, po + o, count)
                            default: for k in 0..<count { po[o + k] = f(x[k * ia], y[k * ib]) }
                            }
                        }
                    }
                }
            }
        }
        return out
    }
}

/// out[i] = f(a[i], b[i]). Functions of their own so the loops vectorise (they stay scalar inside
/// a Parallel.forRange closure). An output written over an operand (the executor's in-place
/// plan) gets a loop of its own: with `out == a` the general loop's overlap check fails and it
/// runs scalar, 2.3x slower.
@inline(never)
func binaryLoop<F: NumericBinaryFunction, T: NumericElement>(_ f: F, _ a: UnsafePointer<T>, _ b: UnsafePointer<T>,
                                                             _ out: UnsafeMutablePointer<T>, _ count: Int) {
    if UnsafePointer(out) == a {
        for i in 0..<count { out[i] = f(out[i], b[i]) }
    } else if UnsafePointer(out) == b {
        for i in 0..<count { out[i] = f(a[i], out[i]) }
    } else {
        for i in 0..<count { out[i] = f(a[i], b[i]) }
    }
}

/// out[i] = f(x[i], s), or f(s, x[i]) when the scalar is the first operand.
@inline(never)
func binaryScalarLoop<F: NumericBinaryFunction, T: NumericElement>(_ f: F, _ x: UnsafePointer<T>, _ s: T, scalarFirst: Bool,
                                                                   _ out: UnsafeMutablePointer<T>, _ count: Int) {
    if UnsafePointer(out) == x {  // in place (see binaryLoop)
        if scalarFirst {
            for i in 0..<count { out[i] = f(s, out[i]) }
        } else {
            for i in 0..<count { out[i] = f(out[i], s) }
        }
    } else if scalarFirst {
        for i in 0..<count { out[i] = f(s, x[i]) }
    } else {
        for i in 0..<count { out[i] = f(x[i], s) }
    }
}

/// The Add/Sub/Mul/Div kernel builder (opset 7+, broadcasting): the pointer path, else zipNumeric.
func arithmeticKernel<F: NumericBinaryFunction>(_ f: F) -> KernelFactory {
    { _ in
        AnyKernel { inputs, _ in
            let a = try inputs.tensor(0), b = try inputs.tensor(1)
            return [.tensor(try binaryFastPath(a, b, f) ?? zipNumeric(a, b, f))]
        }
    }
}

/// The Max/Min/Sum/Mean kernel builder: `f` folded over every input with broadcasting (since
/// opset 8; earlier versions required equal shapes, which broadcasting accepts too).
func variadicKernel<F: NumericBinaryFunction>(_ f: F, mean: Bool = false) -> KernelFactory {
    { _ in AnyKernel { inputs, _ in [.tensor(try foldVariadic(inputs, f, mean: mean))] } }
}

/// Pow, since opset 7, 12, 13, 15.
func powKernel(_ ctx: NodeContext) throws -> Kernel {
    AnyKernel { inputs, _ in [.tensor(try power(try inputs.tensor(0), try inputs.tensor(1)))] }
}

/// x / divisor (a division, not a multiplication by the reciprocal, to round as onnxruntime does).
struct DivideByFunction: FloatUnaryFunction {
    let divisor: Double
    @inline(__always) func callAsFunction<T: FloatElement>(_ x: T) -> T { x / T(divisor) }
}
/// x · factor, the factor rounded to the element type once (Scale, SGD's −η·G).
struct ScaleFunction: FloatUnaryFunction {
    let factor: Double
    @inline(__always) func callAsFunction<T: FloatElement>(_ x: T) -> T { x * T(factor) }
}
/// a + scale · b, the scale rounded to the element type once (SGD's W − η·G).
struct AddScaledFunction: FloatBinaryFunction {
    let scale: Double
    @inline(__always) func callAsFunction<T: FloatElement>(_ a: T, _ b: T) -> T { a + T(scale) * b }
}

/// Before opset 7, B broadcasts to A only when `broadcast` = 1, its dimensions aligned with A's
/// from `axis` on (trailing alignment when `axis` is absent); otherwise the shapes must match.
func legacyAligned(_ b: Tensor, to a: Tensor, broadcast: Bool, axis: Int?) throws -> Tensor {
    guard broadcast else {
        guard a.shape == b.shape else { throw KernelError("shapes \(a.shape) and \(b.shape) differ and broadcast is 0") }
        return b
    }
    guard let axis else { return b }
    let start = axis < 0 ? axis + a.rank : axis
    guard start >= 0 && start + b.rank <= a.rank else {
        throw KernelError("axis \(axis) cannot align shape \(b.shape) with \(a.shape)")
    }
    return b.reshaped(b.shape + [Int](repeating: 1, count: a.rank - start - b.rank))
}

/// The kernel builder of a binary op's pre-7 form (`broadcast` and `axis` attributes).
func legacyBinaryKernel(_ body: @escaping (Tensor, Tensor) throws -> Tensor) -> KernelFactory {
    { ctx in
        let broadcast = try ctx.int("broadcast", default: 0) != 0
        let axis = try ctx.int("axis")
        return AnyKernel { inputs, _ in
            let a = try inputs.tensor(0)
            let b = try legacyAligned(try inputs.tensor(1), to: a, broadcast: broadcast, axis: axis)
            return [.tensor(try body(a, b))]
        }
    }
}

func registerBinaryMathOps(_ registry: OpRegistry) {
    // The pre-7 forms (broadcast and axis attributes).
    registry.register("Add", since: [1, 6], legacyBinaryKernel { try zipNumeric($0, $1, AddFunction()) })
    registry.register("Sub", since: [1, 6], legacyBinaryKernel { try zipNumeric($0, $1, SubFunction()) })
    registry.register("Mul", since: [1, 6], legacyBinaryKernel { try zipNumeric($0, $1, MulFunction()) })
    registry.register("Div", since: [1, 6], legacyBinaryKernel { try zipNumeric($0, $1, DivFunction()) })
    registry.register("Pow", since: [1], legacyBinaryKernel { try power($0, $1) })
    registry.register("Equal", since: [1], legacyBinaryKernel { try zipComparison($0, $1, EqualFunction()) })
    registry.register("Less", since: [1], legacyBinaryKernel { try zipComparison($0, $1, LessFunction()) })
    registry.register("Greater", since: [1], legacyBinaryKernel { try zipComparison($0, $1, GreaterFunction()) })
    registry.register("And", since: [1], legacyBinaryKernel { try logical($0, $1, .and) })
    registry.register("Or", since: [1], legacyBinaryKernel { try logical($0, $1, .or) })
    registry.register("Xor", since: [1], legacyBinaryKernel { try logical($0, $1, .xor) })

    registry.register("Add", since: [7, 13, 14], inPlace: [0, 1], arithmeticKernel(AddFunction()))
    registry.register("Sub", since: [7, 13, 14], inPlace: [0, 1], arithmeticKernel(SubFunction()))
    registry.register("Mul", since: [7, 13, 14], inPlace: [0, 1], arithmeticKernel(MulFunction()))
    registry.register("Div", since: [7, 13, 14], inPlace: [0, 1], arithmeticKernel(DivFunction()))
    registry.registerNumericBinary("Mod", since: [10, 13]) { ctx in ModFunction(fmod: try ctx.int("fmod", default: 0) != 0) }
    registry.register("Pow", since: [7, 12, 13, 15], powKernel)

    registry.register("BitShift", since: 11, bitShiftKernel)
    registry.register("BitwiseAnd", since: 18, bitwiseKernel(.and))
    registry.register("BitwiseOr", since: 18, bitwiseKernel(.or))
    registry.register("BitwiseXor", since: 18, bitwiseKernel(.xor))
    registry.register("BitwiseNot", since: 18, bitwiseNotKernel)

    // Comparisons; Equal also takes bool (as bytes) and, since 19, strings.
    registry.register("Equal", since: [7, 11, 13, 19], equalKernel)
    registry.register("Less", since: [7, 9, 13], comparisonKernel(LessFunction()))
    registry.register("Greater", since: [7, 9, 13], comparisonKernel(GreaterFunction()))
    registry.register("LessOrEqual", since: [12, 16], comparisonKernel(LessOrEqualFunction()))
    registry.register("GreaterOrEqual", since: [12, 16], comparisonKernel(GreaterOrEqualFunction()))

    registry.register("And", since: 7, logicalKernel(.and))
    registry.register("Or", since: 7, logicalKernel(.or))
    registry.register("Xor", since: 7, logicalKernel(.xor))
    registry.register("Not", since: 1, notKernel)
    registry.register("Where", since: [9, 16], whereKernel)

    registry.register("Max", since: [1, 6, 8, 12, 13], variadicKernel(MaxFunction()))
    registry.register("Min", since: [1, 6, 8, 12, 13], variadicKernel(MinFunction()))
    registry.register("Sum", since: [1, 6, 8, 13], variadicKernel(AddFunction()))
    registry.register("Mean", since: [1, 6, 8, 13], variadicKernel(AddFunction(), mean: true))

    // Gradient rules (GradientContext):
    registry.registerGradient("Add", addGradient)
    registry.registerGradient("Sub", subGradient)
    registry.registerGradient("Mul", mulGradient)
    registry.registerGradient("Div", divGradient)
    registry.registerGradient("Pow", powGradient)
    registry.registerGradient("Sum", sumGradient)
    registry.registerGradient("Mean", meanGradient)
    for name in ["Max", "Min"] {
        // Each input that equals the result gets the gradient (ties: every tied input, as onnxruntime).
        registry.registerGradient(name) { g in
            let dY = try g.requiredDY()
            let y = g.output(0)
            return try g.node.inputs.indices.map { i in
                guard g.needs(i) else { return nil }
                if g.node.inputs.count == 1 { return dY }
                let mask = g.op("Cast", [g.op("Equal", [g.input(i), y])], attributes: ["to": .int(Int(try g.floatType(y).rawValue))])
                return g.reduced(g.op("Mul", [dY, mask]), toInput: i)
            }
        }
    }
    registry.registerGradient("Where", whereGradient)
}

/// The gradient rule of Add.
func addGradient(_ g: GradientContext) throws -> [String?] {
    let dY = try g.requiredDY()
    return [g.needs(0) ? g.reduced(dY, toInput: 0) : nil, g.needs(1) ? g.reduced(dY, toInput: 1) : nil]
}

/// The gradient rule of Sub.
func subGradient(_ g: GradientContext) throws -> [String?] {
    let dY = try g.requiredDY()
    return [g.needs(0) ? g.reduced(dY, toInput: 0) : nil, g.needs(1) ? g.reduced(g.op("Neg", [dY]), toInput: 1) : nil]
}

/// The gradient rule of Mul.
func mulGradient(_ g: GradientContext) throws -> [String?] {
    let dY = try g.requiredDY()
    return [g.needs(0) ? g.reduced(g.op("Mul", [dY, g.input(1)]), toInput: 0) : nil,
            g.needs(1) ? g.reduced(g.op("Mul", [dY, g.input(0)]), toInput: 1) : nil]
}

/// The gradient rule of Div.
func divGradient(_ g: GradientContext) throws -> [String?] {
    let dY = try g.requiredDY()
    // dA = dY / B;  dB = -dY * A / B^2 = -(dY * Y) / B
    return [g.needs(0) ? g.reduced(g.op("Div", [dY, g.input(1)]), toInput: 0) : nil,
            g.needs(1) ? g.reduced(g.op("Neg", [g.op("Div", [g.op("Mul", [dY, g.output(0)]), g.input(1)])]), toInput: 1) : nil]
}

/// The gradient rule of Pow.
func powGradient(_ g: GradientContext) throws -> [String?] {
    let dY = try g.requiredDY()
    let x = g.input(0), e = g.input(1)
    var dX: String?
    if g.needs(0) {
        // As onnxruntime: dX = (X^(E-1) * E) * dY, in the exponent's type.
        let one = try g.scalar(1, like: e, name: "one")
        let pow = g.op("Pow", [x, g.op("Sub", [e, one])])
        dX = g.reduced(g.op("Mul", [g.op("Mul", [pow, e]), dY]), toInput: 0)
    }
    // dE = dY * Y * ln(X)
    let dE = g.needs(1) ? g.reduced(g.op("Mul", [dY, g.op("Mul", [g.output(0), g.op("Log", [x])])]), toInput: 1) : nil
    return [dX, dE]
}

/// The gradient rule of Sum.
func sumGradient(_ g: GradientContext) throws -> [String?] {
    let dY = try g.requiredDY()
    return g.node.inputs.indices.map { g.needs($0) ? g.reduced(dY, toInput: $0) : nil }
}

/// The gradient rule of Mean.
func meanGradient(_ g: GradientContext) throws -> [String?] {
    let dY = try g.requiredDY()
    let scaled = g.op("Div", [dY, try g.scalar(Double(g.node.inputs.count), like: g.output(0), name: "count")])
    return g.node.inputs.indices.map { g.needs($0) ? g.reduced(scaled, toInput: $0) : nil }
}
