/// Add, Sub, Mul, Div, Pow, Mod, BitShift, Bitwise*, Min/Max/Sum/Mean, comparisons, logical ops
/// and Where: binary (or n-ary) elementwise ops with numpy broadcasting.
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

struct EqualFunction: ComparisonFunction {
    @inline(__always) func callAsFunction<T: NumericElement>(_ a: T, _ b: T) -> Bool { a == b }
}
struct LessFunction: ComparisonFunction {
    @inline(__always) func callAsFunction<T: NumericElement>(_ a: T, _ b: T) -> Bool { a < b }
}
struct LessOrEqualFunction: ComparisonFunction {
    @inline(__always) func callAsFunction<T: NumericElement>(_ a: T, _ b: T) -> Bool { a <= b }
}
struct GreaterFunction: ComparisonFunction {
    @inline(__always) func callAsFunction<T: NumericElement>(_ a: T, _ b: T) -> Bool { a > b }
}
struct GreaterOrEqualFunction: ComparisonFunction {
    @inline(__always) func callAsFunction<T: NumericElement>(_ a: T, _ b: T) -> Bool { a >= b }
}

/// Bitwise ops and shifts, on unsigned and signed integers.
struct BitwiseOperation: ElementOperation {
    enum Kind { case and, or, xor, shiftLeft, shiftRight }
    let a: Tensor, b: Tensor, kind: Kind

    func integer<T: IntegerElement>(_ type: T.Type) throws -> Tensor {
        switch kind {
        case .and: return try broadcastBinary(a, b, T.self, T.self, T.self, outDType: T.dtype) { $0 & $1 }
        case .or: return try broadcastBinary(a, b, T.self, T.self, T.self, outDType: T.dtype) { $0 | $1 }
        case .xor: return try broadcastBinary(a, b, T.self, T.self, T.self, outDType: T.dtype) { $0 ^ $1 }
        // Swift's smart shifts give 0 for amounts of the bit width or more (C leaves them undefined).
        case .shiftLeft: return try broadcastBinary(a, b, T.self, T.self, T.self, outDType: T.dtype) { $0 << $1 }
        case .shiftRight: return try broadcastBinary(a, b, T.self, T.self, T.self, outDType: T.dtype) { $0 >> $1 }
        }
    }
}

func bitwise(_ a: Tensor, _ b: Tensor, _ kind: BitwiseOperation.Kind) throws -> Tensor {
    try requireSameType(a, b)
    guard !a.dtype.isFloatingPoint, a.dtype != .bool else { throw KernelError("bitwise ops need integer inputs, got \(a.dtype)") }
    return try dispatch(a.dtype, BitwiseOperation(a: a, b: b, kind: kind))
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

/// Logical And/Or/Xor on bool tensors with broadcasting.
func logical(_ a: Tensor, _ b: Tensor, _ f: (Bool, Bool) -> Bool) throws -> Tensor {
    guard a.dtype == .bool, b.dtype == .bool else { throw KernelError("inputs must be bool, got \(a.dtype) and \(b.dtype)") }
    return try broadcastBinary(a, b, Bool.self, Bool.self, Bool.self, outDType: .bool, f)
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

/// Add/Sub/Mul/Div/Sum when both operands have one numeric type, one has the output's shape and
/// the other the same shape, a suffix of it (a bias row, a [T, T] mask: it repeats every
/// `period` elements) or a single value: loops over plain pointers in T (no accumulator: each
/// element is one operation), split across threads. nil where general broadcasting is needed (or
/// for short rows, empty tensors and half types): zipNumeric handles those.
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
        return nil
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

/// out[i] = f(a[i], b[i]). Functions of their own so the loops vectorise (they stay scalar inside
/// a Parallel.forRange closure).
@inline(never)
func binaryLoop<F: NumericBinaryFunction, T: NumericElement>(_ f: F, _ a: UnsafePointer<T>, _ b: UnsafePointer<T>,
                                                             _ out: UnsafeMutablePointer<T>, _ count: Int) {
    for i in 0..<count { out[i] = f(a[i], b[i]) }
}

/// out[i] = f(x[i], s), or f(s, x[i]) when the scalar is the first operand.
@inline(never)
func binaryScalarLoop<F: NumericBinaryFunction, T: NumericElement>(_ f: F, _ x: UnsafePointer<T>, _ s: T, scalarFirst: Bool,
                                                                   _ out: UnsafeMutablePointer<T>, _ count: Int) {
    if scalarFirst {
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

/// The And/Or/Xor kernel builder (opset 7+, broadcasting bool tensors).
func logicalKernel(_ f: @escaping (Bool, Bool) -> Bool) -> KernelFactory {
    { _ in AnyKernel { inputs, _ in [.tensor(try logical(try inputs.tensor(0), try inputs.tensor(1), f))] } }
}

/// The BitwiseAnd/Or/Xor kernel builder (opset 18).
func bitwiseKernel(_ kind: BitwiseOperation.Kind) -> KernelFactory {
    { _ in AnyKernel { inputs, _ in [.tensor(try bitwise(try inputs.tensor(0), try inputs.tensor(1), kind))] } }
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

/// BitShift, since opset 11.
func bitShiftKernel(_ ctx: NodeContext) throws -> Kernel {
    let direction = try ctx.string("direction", default: "")
    guard direction == "LEFT" || direction == "RIGHT" else {
        throw KernelError("attribute 'direction' must be LEFT or RIGHT, got '\(direction)'")
    }
    let kind: BitwiseOperation.Kind = direction == "LEFT" ? .shiftLeft : .shiftRight
    return AnyKernel { inputs, _ in [.tensor(try bitwise(try inputs.tensor(0), try inputs.tensor(1), kind))] }
}

/// BitwiseNot, since opset 18.
func bitwiseNotKernel(_ ctx: NodeContext) throws -> Kernel {
    AnyKernel { inputs, _ in
        let x = try inputs.tensor(0)
        guard x.dtype.isInteger else { throw KernelError("BitwiseNot needs an integer input, got \(x.dtype)") }
        // ~x on the raw bytes is the same for every integer width.
        let bytes = Tensor(dtype: .uint8, shape: [x.byteCount], storage: x.storage)
        let flipped = mapElements(bytes, to: .uint8) { (v: UInt8) in ~v }
        return [.tensor(Tensor(dtype: x.dtype, shape: x.shape, storage: flipped.storage))]
    }
}

/// Equal, since opset 7, 11, 13, 19.
func equalKernel(_ ctx: NodeContext) throws -> Kernel {
    AnyKernel { inputs, _ in
        let a = try inputs.tensor(0), b = try inputs.tensor(1)
        if a.dtype == .string && b.dtype == .string { return [.tensor(try equalStrings(a, b))] }
        return [.tensor(try zipComparison(a, b, EqualFunction()))]
    }
}

/// Not, since opset 1.
func notKernel(_ ctx: NodeContext) throws -> Kernel {
    AnyKernel { inputs, _ in
        let x = try inputs.tensor(0)
        guard x.dtype == .bool else { throw KernelError("Not needs a bool input, got \(x.dtype)") }
        return [.tensor(mapElements(x, to: .bool) { (v: Bool) in !v })]
    }
}

/// Where, since opset 9, 16.
func whereKernel(_ ctx: NodeContext) throws -> Kernel {
    AnyKernel { inputs, _ in [.tensor(try select(try inputs.tensor(0), try inputs.tensor(1), try inputs.tensor(2)))] }
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

/// Where(condition, X, Y) with three-way broadcasting; copies elements by their byte size.
func select(_ cond: Tensor, _ x: Tensor, _ y: Tensor) throws -> Tensor {
    guard cond.dtype == .bool else { throw KernelError("condition must be bool, got \(cond.dtype)") }
    try requireSameType(x, y)
    let outShape = try Broadcast.shape([cond.shape, x.shape, y.shape])
    let n = Tensor.elementCount(outShape)
    let sc = Broadcast.strides(cond.shape, to: outShape)
    let sx = Broadcast.strides(x.shape, to: outShape)
    let sy = Broadcast.strides(y.shape, to: outShape)
    // offsets(o) gives the three input offsets of output element o.
    let rank = outShape.count
    func offsets(_ visit: (Int, Int, Int, Int) -> Void) {
        var walk = Odometer(shape: outShape, strides: [sc, sx, sy])
        for o in 0..<n {
            visit(o, walk.offsets[0], walk.offsets[1], walk.offsets[2])
            walk.advance()
        }
    }
    if x.dtype == .string {
        let c = cond.scalars(as: Bool.self), xs = x.strings, ys = y.strings
        var out = [String](repeating: "", count: n)
        offsets { o, oc, ox, oy in out[o] = c[oc] ? xs[ox] : ys[oy] }
        return Tensor(shape: outShape, strings: out)
    }
    // Each input a scalar or the output shape's trailing dims (a [T, T] mask under [B, H, T, T]
    // scores): input element = output element mod its count, so runs of `period` are contiguous.
    let suffixOnly = [cond.shape, x.shape, y.shape].allSatisfy { s in
        let dims = Array(s.drop(while: { $0 == 1 }))
        return dims.count <= rank && Array(outShape.suffix(dims.count)) == dims
    }
    let period = [cond.count, x.count, y.count].filter { $0 > 1 }.min() ?? 1
    func copy<E>(_ type: E.Type) -> Tensor {
        var out = Tensor(uninitialized: x.dtype, shape: outShape)
        cond.uncheckedBufferPointer(as: Bool.self) { pc in
            x.uncheckedBufferPointer(as: E.self) { px in
                y.uncheckedBufferPointer(as: E.self) { py in
                    out.uncheckedMutableBufferPointer(as: E.self) { po in
                        guard suffixOnly, n > 0 else {
                            offsets { o, oc, ox, oy in po[o] = pc[oc] ? px[ox] : py[oy] }
                            return
                        }
                        let (cc, cx, cy) = (cond.count, x.count, y.count)
                        let (sc, sx, sy) = (cc == 1 ? 0 : 1, cx == 1 ? 0 : 1, cy == 1 ? 0 : 1)
                        var o = 0
                        while o < n {
                            let (bc, bx, by) = (o % cc, o % cx, o % cy)
                            if sc == 1 && sx == 0 && sy == 1 {  // a masked fill: Where(mask, constant, scores)
                                let v = px[bx]
                                for j in 0..<period { po[o + j] = pc[bc + j] ? v : py[by + j] }
                            } else if sc == 1 && sx == 1 && sy == 0 {
                                let v = py[by]
                                for j in 0..<period { po[o + j] = pc[bc + j] ? px[bx + j] : v }
                            } else {
                                for j in 0..<period { po[o + j] = pc[bc + j * sc] ? px[bx + j * sx] : py[by + j * sy] }
                            }
                            o += period
                        }
                    }
                }
            }
        }
        return out
    }
    switch x.dtype.byteSize {
    case 1: return copy(UInt8.self)
    case 2: return copy(UInt16.self)
    case 4: return copy(UInt32.self)
    case 8: return copy(UInt64.self)
    default: throw KernelError("element type \(x.dtype) is not supported by Where")
    }
}

/// Equal on string tensors, with broadcasting.
func equalStrings(_ a: Tensor, _ b: Tensor) throws -> Tensor {
    let outShape = try Broadcast.shape(a.shape, b.shape)
    let n = Tensor.elementCount(outShape)
    let sa = Broadcast.strides(a.shape, to: outShape), sb = Broadcast.strides(b.shape, to: outShape)
    let strides = contiguousStrides(outShape)
    let xs = a.strings, ys = b.strings
    var out = [Bool](repeating: false, count: n)
    for o in 0..<n {
        var rest = o, ia = 0, ib = 0
        for d in 0..<outShape.count {
            let k = rest / strides[d]
            rest -= k * strides[d]
            ia += k * sa[d]; ib += k * sb[d]
        }
        out[o] = xs[ia] == ys[ib]
    }
    return Tensor(shape: outShape, scalars: out)
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
    registry.register("And", since: [1], legacyBinaryKernel { try logical($0, $1) { $0 && $1 } })
    registry.register("Or", since: [1], legacyBinaryKernel { try logical($0, $1) { $0 || $1 } })
    registry.register("Xor", since: [1], legacyBinaryKernel { try logical($0, $1) { $0 != $1 } })

    registry.register("Add", since: [7, 13, 14], arithmeticKernel(AddFunction()))
    registry.register("Sub", since: [7, 13, 14], arithmeticKernel(SubFunction()))
    registry.register("Mul", since: [7, 13, 14], arithmeticKernel(MulFunction()))
    registry.register("Div", since: [7, 13, 14], arithmeticKernel(DivFunction()))
    registry.registerNumericBinary("Mod", since: [10, 13]) { ctx in ModFunction(fmod: try ctx.int("fmod", default: 0) != 0) }
    registry.register("Pow", since: [7, 12, 13, 15], powKernel)

    registry.register("BitShift", since: 11, bitShiftKernel)
    registry.register("BitwiseAnd", since: 18, bitwiseKernel(.and))
    registry.register("BitwiseOr", since: 18, bitwiseKernel(.or))
    registry.register("BitwiseXor", since: 18, bitwiseKernel(.xor))
    registry.register("BitwiseNot", since: 18, bitwiseNotKernel)

    // Comparisons; Equal also takes bool (as bytes) and, since 19, strings.
    registry.register("Equal", since: [7, 11, 13, 19], equalKernel)
    registry.registerComparison("Less", since: [7, 9, 13], LessFunction())
    registry.registerComparison("Greater", since: [7, 9, 13], GreaterFunction())
    registry.registerComparison("LessOrEqual", since: [12, 16], LessOrEqualFunction())
    registry.registerComparison("GreaterOrEqual", since: [12, 16], GreaterOrEqualFunction())

    registry.register("And", since: 7, logicalKernel { $0 && $1 })
    registry.register("Or", since: 7, logicalKernel { $0 || $1 })
    registry.register("Xor", since: 7, logicalKernel { $0 != $1 })
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

/// The gradient rule of Where.
func whereGradient(_ g: GradientContext) throws -> [String?] {
    let dY = try g.requiredDY()
    let zero = try g.scalar(0, like: g.output(0), name: "zero")
    let cond = g.input(0)
    return [nil,
            g.needs(1) ? g.reduced(g.op("Where", [cond, dY, zero]), toInput: 1) : nil,
            g.needs(2) ? g.reduced(g.op("Where", [cond, zero, dY]), toInput: 2) : nil]
}
