#if arch(x86_64)
import _Builtin_intrinsics.intel
#endif

/// ElementwiseChain (onnx-train's internal domain, written only by the `ElementwiseFusion` pass
/// into a session's compiled graph, never into a saved model): a chain of unary and binary
/// elementwise ops evaluated in one pass over the elements, block by block, so the values between
/// the ops never go to memory.
///
/// Inputs: the chain's start, then one operand per binary step. Attributes: `ops` (op types in
/// order), `operands` (per step: the input index of its other operand, -1 for a unary step; a Clip
/// step's index of its min input, its max input the next one: both scalars, read when it runs;
/// a ClipGradient step's index of its x, then min, max and fill: the chain's value, a gradient,
/// passes where min <= x <= max and becomes fill elsewhere),
/// `chain_left` (per step: 1 when the chain's value is the left operand), `alphas` (LeakyRelu's
/// alpha, else 0), optional `softmax` (1: the chain's value is then normalised along its last
/// axis, a Softmax the pass fused: scores scaled and masked, then normalised block by block of
/// whole rows while they are in cache). Each op computes exactly what its standalone kernel computes per element (the
/// same functions), so a fused chain gives the same values. Every input streams in the fused loop:
/// inputs the size of the result in place, scalars repeated, any other broadcast (a bias row, a
/// [B, 1, T, T] mask under [B, H, T, T] scores) copied run by run into a block buffer.
public let internalDomain = "ai.onnx-train.internal"

struct ElementwiseChainKernel: Kernel {
    enum Op {
        case add, sub, mul, div
        case relu, neg, abs, sigmoid, tanh, exp, log, sqrt, reciprocal, erf
        case leakyRelu(Double)
        /// Clip with min and max inputs (the step's operand and the next input).
        case clip
        /// ClipGradient with x, min, max and fill inputs (the step's operand and the next three).
        case clipGradient

        var isBinary: Bool {
            switch self {
            case .add, .sub, .mul, .div: return true
            default: return false
            }
        }
        /// Whether the step reads inputs besides the chain's value.
        var hasOperand: Bool {
            switch self {
            case .clip, .clipGradient: return true
            default: return isBinary
            }
        }
        /// How many inputs after the step's operand it reads.
        var extraOperands: Int {
            switch self {
            case .clip: return 1
            case .clipGradient: return 3
            default: return 0
            }
        }
    }
    struct Step {
        let op: Op
        let operand: Int
        let chainLeft: Bool
    }
    let steps: [Step]
    /// Whether a last-axis Softmax follows the steps.
    let softmax: Bool

    static let unaryOps = ["Relu", "Neg", "Abs", "Sigmoid", "Tanh", "Exp", "Log", "Sqrt", "Reciprocal", "Erf", "LeakyRelu"]
    static let binaryOps = ["Add", "Sub", "Mul", "Div"]

    static func op(_ name: String, alpha: Double) -> Op? {
        switch name {
        case "Add": return .add
        case "Sub": return .sub
        case "Mul": return .mul
        case "Div": return .div
        case "Relu": return .relu
        case "Neg": return .neg
        case "Abs": return .abs
        case "Sigmoid": return .sigmoid
        case "Tanh": return .tanh
        case "Exp": return .exp
        case "Log": return .log
        case "Sqrt": return .sqrt
        case "Reciprocal": return .reciprocal
        case "Erf": return .erf
        case "LeakyRelu": return .leakyRelu(alpha)
        case "Clip": return .clip
        case "ClipGradient": return .clipGradient
        default: return nil
        }
    }

    init(_ ctx: NodeContext) throws {
        let ops = try ctx.strings("ops") ?? []
        let operands = try ctx.ints("operands") ?? []
        let left = try ctx.ints("chain_left") ?? []
        let alphas = try ctx.floats("alphas") ?? []
        guard !ops.isEmpty, operands.count == ops.count, left.count == ops.count, alphas.count == ops.count else {
            throw KernelError("ElementwiseChain needs ops, operands, chain_left and alphas of one length")
        }
        var steps: [Step] = []
        for k in ops.indices {
            guard let op = ElementwiseChainKernel.op(ops[k], alpha: Double(alphas[k])) else { throw KernelError("ElementwiseChain cannot run '\(ops[k])'") }
            let last = operands[k] + op.extraOperands
            guard op.hasOperand == (operands[k] >= 1), last < ctx.node.inputs.count else {
                throw KernelError("ElementwiseChain step \(k) (\(ops[k])) has operand \(operands[k])")
            }
            steps.append(Step(op: op, operand: operands[k], chainLeft: left[k] != 0))
        }
        self.steps = steps
        softmax = try ctx.int("softmax", default: 0) != 0
    }

    func run(_ inputs: [Value?], _ context: ExecutionContext) throws -> [Value?] {
        let tensors = try inputs.indices.map { try inputs.tensor($0) }
        let dtype = tensors[0].dtype
        guard dtype == .float32 || dtype == .float64, tensors.allSatisfy({ $0.dtype == dtype }) else {
            throw KernelError("ElementwiseChain computes float32 or float64 of one type, got \(tensors.map(\.dtype))")
        }
        return [.tensor(try dispatch(dtype, Evaluate(steps: steps, inputs: tensors, softmax: softmax)))]
    }

    struct Evaluate: ElementOperation {
        let steps: [Step]
        let inputs: [Tensor]
        let softmax: Bool

        func float<T: FloatElement>(_ type: T.Type) throws -> Tensor {
            var outShape = inputs[0].shape
            for s in steps {
                if s.op.isBinary { outShape = try Broadcast.shape(outShape, inputs[s.operand].shape) }
                if case .clipGradient = s.op { outShape = try Broadcast.shape(outShape, inputs[s.operand].shape) }
            }
            let n = Tensor.elementCount(outShape)
            if softmax && outShape.isEmpty { throw KernelError("ElementwiseChain's softmax needs a value of rank 1 or more") }
            if n == 0 { return Tensor(uninitialized: T.dtype, shape: outShape) }
            // The leading steps that read only the start and scalars run on the start alone when
            // it is broadcast, then the rest on their result: MobileNetV3's squeeze-excite scale,
            // where fc2's FusedConv output has no inferred shape so its [N, C, 1, 1] joins
            // [Clip, Div 6, Mul x], ran Clip and Div on every element of [N, C, H, W]. The same
            // functions on the same values (each per element, wherever its block starts), so the
            // same bits.
            if inputs[0].count < n {
                let lead = steps.prefix { s in
                    switch s.op {
                    case .clip: return true
                    case .clipGradient: return false
                    default: return !s.op.isBinary || inputs[s.operand].count == 1
                    }
                }.count
                if lead > 0 {
                    var rest = inputs
                    rest[0] = try Evaluate(steps: Array(steps[..<lead]), inputs: inputs, softmax: false).float(type)
                    return try Evaluate(steps: Array(steps[lead...]), inputs: rest, softmax: softmax).float(type)
                }
            }
            var out = Tensor(uninitialized: T.dtype, shape: outShape)
            // Blocks of about 1024 elements (4 KiB of float32: the value and an operand stay in L1
            // while every step runs over them, and the steps' calls are paid once per 1024); whole
            // rows of about 256 elements when a Softmax follows.
            let row = softmax ? outShape[outShape.count - 1] : 1
            let block = softmax ? max(1, 256 / row) * row : 1024
            // Every input has elements here (n > 0 and each broadcasts to the output). Inputs of the
            // output's size are read in place, scalars repeated, and any other broadcast walked
            // run by run (`BroadcastRows`): a bias row, a [B, 1, T, T] mask under [B, H, T, T].
            let pointers = inputs.map { t in t.uncheckedBufferPointer(as: T.self) { $0.baseAddress! } }
            // (The leading steps run on a broadcast start below see the chain's larger inputs too,
            // which they never read: no layout for those.)
            let layouts: [BroadcastRows?] = inputs.map { t in
                t.count == n || t.count == 1 || t.count > n || t.rank > outShape.count
                    ? nil : BroadcastRows(outShape: outShape, operandShapes: [t.shape])
            }
            let counts = inputs.map(\.count)
            let steps = self.steps
            // A Clip step's bounds, a ClipGradient step's bounds and fill: scalars of the chain's
            // type, as the Clip and ClipGradient kernels take them.
            let bounds: [(low: T, high: T, fill: T)] = try steps.map { s in
                switch s.op {
                case .clip:
                    guard counts[s.operand] == 1, counts[s.operand + 1] == 1 else {
                        throw KernelError("ElementwiseChain's Clip bounds must be scalars, got \(counts[s.operand]) and \(counts[s.operand + 1]) elements")
                    }
                    return (pointers[s.operand][0], pointers[s.operand + 1][0], T.zero)
                case .clipGradient:
                    let k = s.operand
                    guard counts[k + 1] == 1, counts[k + 2] == 1, counts[k + 3] == 1 else {
                        throw KernelError("ElementwiseChain's ClipGradient bounds and fill must be scalars, got \(counts[k + 1]), \(counts[k + 2]) and \(counts[k + 3]) elements")
                    }
                    return (pointers[k + 1][0], pointers[k + 2][0], pointers[k + 3][0])
                default:
                    return (T.zero, T.zero, T.zero)
                }
            }
            // A float32 division of the chain's value by a scalar whose reciprocal gives the same
            // quotients (`ReciprocalDivision`), set up once per run rather than once per block.
            let divisions: [ReciprocalDivision?] = steps.map { s in
                guard T.self == Float.self, case .div = s.op, s.chainLeft, counts[s.operand] == 1,
                      let d = pointers[s.operand][0] as? Float else { return nil }
                return ReciprocalDivision(divisor: d)
            }
            /// Elements start..<start+len of input k as broadcast to the output: a pointer into the
            /// input where they are contiguous there, else `buffer` filled with them.
            func load(_ k: Int, _ start: Int, _ len: Int, into buffer: UnsafeMutablePointer<T>) -> UnsafePointer<T> {
                let src = pointers[k]
                if counts[k] == n { return src + start }
                guard let layout = layouts[k] else {
                    buffer.update(repeating: src[0], count: len)
                    return UnsafePointer(buffer)
                }
                let contiguous = layout.innerStrides[0] == 1
                var direct: UnsafePointer<T>?
                layout.forEachRun(start..<(start + len)) { e, count, offsets in
                    let from = src + offsets[0]
                    if count == len && contiguous { direct = from; return }
                    if contiguous {
                        (buffer + (e - start)).update(from: from, count: count)
                    } else {
                        (buffer + (e - start)).update(repeating: from[0], count: count)
                    }
                }
                return direct ?? UnsafePointer(buffer)
            }
            out.uncheckedMutableBufferPointer(as: T.self) { po in
                guard let Y = po.baseAddress else { return }
                let blocks = (n + block - 1) / block
                // At least 64K elements a thread: GPT-2 tiny's chains of 32K elements (attention's
                // scale, mask and softmax; tanh GELU) took 2.3x as long split over two threads as on
                // one on a loaded machine (profile: 0.21-0.24 ms -> 0.53-0.59 ms for its six chains a
                // run, load 6.5), and the run's least time was no better split (0.96 against 0.98-1.04 ms).
                Parallel.forRange(blocks, minimumChunk: max(1, 256 * 256 / block)) { range in
                    let tmp = UnsafeMutablePointer<T>.allocate(capacity: block)
                    defer { tmp.deallocate() }
                    for b in range {
                        let start = b * block, len = min(block, n - start)
                        let y = Y + start
                        let first = load(0, start, len, into: y)
                        if first != UnsafePointer(y) { y.update(from: first, count: len) }
                        for (k, s) in steps.enumerated() {
                            if case .clip = s.op {
                                ElementwiseChainKernel.clip(y, len, bounds[k].low, bounds[k].high)
                            } else if case .clipGradient = s.op {
                                let x = load(s.operand, start, len, into: tmp)
                                ClipGradientKernel.select(y, UnsafePointer(y), x, len, bounds[k].low, bounds[k].high, bounds[k].fill)
                            } else if s.op.isBinary && counts[s.operand] == 1 {
                                // A scalar operand (Hardswish's 3 and 6) is read once, not repeated into the buffer.
                                ElementwiseChainKernel.binary(s.op, y, pointers[s.operand][0], len, chainLeft: s.chainLeft,
                                                              division: divisions[k])
                            } else if s.op.isBinary {
                                let x = load(s.operand, start, len, into: tmp)
                                ElementwiseChainKernel.binary(s.op, y, x, len, chainLeft: s.chainLeft)
                            } else {
                                ElementwiseChainKernel.unary(s.op, y, len)
                            }
                        }
                        if softmax {
                            for r in stride(from: 0, to: len, by: row) { softmaxRowInPlace(y + r, row) }
                        }
                    }
                }
            }
            withExtendedLifetime(inputs) {}
            return out
        }
    }

    /// y[i] = op(y[i], x[i]) (or op(x[i], y[i]) when the chain is the right operand).
    static func binary<T: FloatElement>(_ op: Op, _ y: UnsafeMutablePointer<T>, _ x: UnsafePointer<T>, _ n: Int, chainLeft: Bool) {
        switch (op, chainLeft) {
        case (.add, _): let f = AddFunction(); for i in 0..<n { y[i] = f(y[i], x[i]) }
        case (.mul, _): let f = MulFunction(); for i in 0..<n { y[i] = f(y[i], x[i]) }
        case (.sub, true): let f = SubFunction(); for i in 0..<n { y[i] = f(y[i], x[i]) }
        case (.sub, false): let f = SubFunction(); for i in 0..<n { y[i] = f(x[i], y[i]) }
        case (.div, true): let f = DivFunction(); for i in 0..<n { y[i] = f(y[i], x[i]) }
        case (.div, false): let f = DivFunction(); for i in 0..<n { y[i] = f(x[i], y[i]) }
        default: return
        }
    }

    /// y[i] = op(y[i], s) (or op(s, y[i]) when the chain is the right operand) for a scalar s,
    /// with the binary kernels' functions (`binaryScalarLoop`). A float32 division of the chain's
    /// value by s multiplies through `division` when there is one (`ReciprocalDivision(divisor: s)`).
    static func binary<T: FloatElement>(_ op: Op, _ y: UnsafeMutablePointer<T>, _ s: T, _ n: Int, chainLeft: Bool,
                                        division: ReciprocalDivision?) {
        switch (op, chainLeft) {
        case (.add, _): binaryScalarLoop(AddFunction(), y, s, scalarFirst: !chainLeft, y, n)
        case (.mul, _): binaryScalarLoop(MulFunction(), y, s, scalarFirst: !chainLeft, y, n)
        case (.sub, _): binaryScalarLoop(SubFunction(), y, s, scalarFirst: !chainLeft, y, n)
        case (.div, true):
            if T.self == Float.self, let division {
                division.divide(UnsafeMutableRawPointer(y).assumingMemoryBound(to: Float.self), n)
            } else {
                binaryScalarLoop(DivFunction(), y, s, scalarFirst: false, y, n)
            }
        case (.div, false): binaryScalarLoop(DivFunction(), y, s, scalarFirst: true, y, n)
        default: return
        }
    }

    /// y[i] = Clip(y[i], low, high), with the Clip kernel's function (`clipValue`).
    @inline(never)
    static func clip<T: FloatElement>(_ y: UnsafeMutablePointer<T>, _ n: Int, _ low: T, _ high: T) {
        for i in 0..<n { y[i] = clipValue(y[i], low, high) }
    }

    /// y[i] = op(y[i]), with the standalone op's function (float32: its eight-lane form where it
    /// has one, as the standalone kernel runs it).
    static func unary<T: FloatElement>(_ op: Op, _ y: UnsafeMutablePointer<T>, _ n: Int) {
        /// float32 through the eight-lane form; false where the scalar loop runs.
        @inline(__always) func vector<F: Float8Form>(_ f: F) -> Bool {
            guard T.self == Float.self && F.hasFloat8 else { return false }
            let p = UnsafeMutableRawPointer(y).assumingMemoryBound(to: Float.self)
            float8Map(f, p, p, n)
            return true
        }
        @inline(__always) func map<F: FloatUnaryFunction>(_ f: F) { if !vector(f) { for i in 0..<n { y[i] = f(y[i]) } } }
        @inline(__always) func mapNumeric<F: NumericUnaryFunction>(_ f: F) { if !vector(f) { for i in 0..<n { y[i] = f(y[i]) } } }
        switch op {
        case .relu: mapNumeric(ReluFunction())
        case .neg: mapNumeric(NegFunction())
        case .abs: mapNumeric(AbsFunction())
        case .sigmoid: map(SigmoidFunction())
        case .tanh: map(TanhFunction())
        case .exp: map(ExpFunction())
        case .log: map(LogFunction())
        case .sqrt: map(SqrtFunction())
        case .reciprocal: map(ReciprocalFunction())
        case .erf: map(ErfFunction())
        case .leakyRelu(let alpha): map(LeakyReluFunction(alpha: alpha))
        case .add, .sub, .mul, .div, .clip, .clipGradient: return
        }
    }
}

/// Float32 division by a scalar divisor d as multiplications giving the same bits as x / d: for a
/// power of two (1/d exact) x·(1/d), the correct rounding of the same real number; for ±3 and ±6
/// (Hardswish and Hardsigmoid written out divide by 6) Markstein's correction, q0 = x·r,
/// e = fma(−q0, d, x) (exact), q = fma(e, r, q0) with r = 1/d rounded, which equals x / d for every
/// float32 x with 2^-99 <= |x| < ∞ (checked for all 2^32 bit patterns and each of the four
/// divisors); other x (zeros, subnormal-range quotients, infinities, NaN) take the division, eight
/// lanes at a time. vdivps was what bounded MobileNetV3's Hardswish chains (about 1.5 elements a
/// nanosecond a thread); the correction is three FMA-port operations.
struct ReciprocalDivision {
    let divisor: Float
    let reciprocal: Float
    /// Whether x·reciprocal alone is exact (a power of two).
    let exact: Bool

    init?(divisor d: Float) {
        guard d.isFinite, d != 0 else { return nil }
        let r = 1 / d
        divisor = d
        reciprocal = r
        if d.significandBitPattern == 0 && d.isNormal && r.isNormal && r.significandBitPattern == 0 {
            exact = true
            return
        }
        exact = false
        #if ONNX_TRAIN_X86_64_V3 && arch(x86_64)
        guard abs(d) == 3 || abs(d) == 6 else { return nil }
        #else
        return nil
        #endif
    }

    /// y[i] = y[i] / divisor, in place.
    @inline(never)
    func divide(_ y: UnsafeMutablePointer<Float>, _ n: Int) {
        if exact {
            binaryScalarLoop(MulFunction(), y, reciprocal, scalarFirst: false, y, n)
            return
        }
        #if ONNX_TRAIN_X86_64_V3 && arch(x86_64)
        let d = SIMD8<Float>(repeating: divisor), r = SIMD8<Float>(repeating: reciprocal)
        // 2^-99 <= |x| < ∞ as one unsigned comparison of the magnitude's bits.
        let low = SIMD8<UInt32>(repeating: 0x0E00_0000), span = SIMD8<UInt32>(repeating: 0x7F80_0000 - 0x0E00_0000)
        var i = 0
        while i &+ 8 <= n {
            let p = UnsafeMutableRawPointer(y + i)
            let x = p.loadUnaligned(as: SIMD8<Float>.self)
            let magnitude = unsafeBitCast(x, to: SIMD8<UInt32>.self) & 0x7FFF_FFFF
            let q: SIMD8<Float>
            if all((magnitude &- low) .< span) {
                let q0 = _mm256_mul_ps(x, r)
                q = _mm256_fmadd_ps(_mm256_fnmadd_ps(q0, d, x), r, q0)
            } else {
                q = _mm256_div_ps(x, d)
            }
            p.storeBytes(of: q, as: SIMD8<Float>.self)
            i &+= 8
        }
        while i < n {
            y[i] = y[i] / divisor
            i &+= 1
        }
        #else
        binaryScalarLoop(DivFunction(), y, divisor, scalarFirst: false, y, n)
        #endif
    }
}

/// ClipGradient (onnx-train's internal domain, written only by the `ClipGradientFusion` pass):
/// inputs dY, x, min?, max?, fill; dX = dY where min <= x <= max (either bound absent: no test; a
/// NaN x passes), else fill, all broadcast together as Less, Greater, And and Where broadcast.
/// What Clip's gradient rule writes as Less, Greater, Not, And and Where, in one pass; inputs that
/// are not of the result's shape (bounds, fill, a broadcast dY) are read as single elements or,
/// else, copied out to the result's shape first.
struct ClipGradientKernel: Kernel {
    func run(_ inputs: [Value?], _ context: ExecutionContext) throws -> [Value?] {
        let dY = try inputs.tensor(0), x = try inputs.tensor(1), fill = try inputs.tensor(4)
        let low = try inputs.optionalTensor(2), high = try inputs.optionalTensor(3)
        guard dY.dtype == .float32 || dY.dtype == .float64, x.dtype == dY.dtype, fill.dtype == dY.dtype,
              [low, high].allSatisfy({ $0 == nil || $0?.dtype == dY.dtype }) else {
            throw KernelError("ClipGradient computes float32 or float64 of one type, got dY \(dY.dtype), x \(x.dtype), fill \(fill.dtype)")
        }
        var shape = x.shape
        for t in [low, high, dY, fill].compactMap({ $0 }) { shape = try Broadcast.shape(shape, t.shape) }
        try checkShape(shape, "output")
        /// `t` as an input of the loop: as it is when it has the result's shape or is one element
        /// (read once), else copied out to the result's shape.
        func operand(_ t: Tensor) throws -> Tensor {
            t.shape == shape || (t.count == 1 && t.rank <= shape.count) ? t : try stridedCopy(t, shape: shape, strides: Broadcast.strides(t.shape, to: shape))
        }
        let select = Select(dY: try operand(dY), x: try operand(x), low: try low.map(operand), high: try high.map(operand),
                            fill: try operand(fill), shape: shape)
        return [.tensor(try dispatch(dY.dtype, select))]
    }

    struct Select: ElementOperation {
        let dY: Tensor, x: Tensor, low: Tensor?, high: Tensor?, fill: Tensor, shape: [Int]

        func float<T: FloatElement>(_ type: T.Type) throws -> Tensor {
            var out = Tensor(uninitialized: T.dtype, shape: shape)
            let n = out.count
            guard n > 0 else { return out }
            // A single element repeats (stride 0); an absent bound tests nothing: x < -inf and
            // x > +inf are false for every x, NaN too.
            let infinities = UnsafeMutablePointer<T>.allocate(capacity: 2)
            infinities[0] = -T.infinity
            infinities[1] = T.infinity
            defer { infinities.deallocate() }
            func source(_ t: Tensor?, _ absent: Int) -> (pointer: UnsafePointer<T>, step: Int) {
                guard let t else { return (UnsafePointer(infinities + absent), 0) }
                return (t.uncheckedBufferPointer(as: T.self) { $0.baseAddress! }, t.count == n ? 1 : 0)
            }
            let d = source(dY, 0), v = source(x, 0), lo = source(low, 0), hi = source(high, 1), z = source(fill, 0)
            out.uncheckedMutableBufferPointer(as: T.self) { po in
                guard let y = po.baseAddress else { return }
                Parallel.forRange(n, minimumChunk: 32_768) { range in
                    let i = range.lowerBound
                    if d.step == 1 && v.step == 1 && lo.step == 0 && hi.step == 0 && z.step == 0 {
                        ClipGradientKernel.select(y + i, d.pointer + i, v.pointer + i, range.count, lo.pointer[0], hi.pointer[0], z.pointer[0])
                    } else {
                        for k in range {
                            let e = v.pointer[k * v.step]
                            y[k] = e < lo.pointer[k * lo.step] || e > hi.pointer[k * hi.step] ? z.pointer[k * z.step] : d.pointer[k * d.step]
                        }
                    }
                }
            }
            withExtendedLifetime((dY, x, low, high, fill)) {}
            return out
        }
    }

    /// y[i] = dy[i] unless x[i] < lo or x[i] > hi, else z. y may be dy (the executor's in-place
    /// plan, a chain's value): that case gets a loop of its own, reading y, so the compiler's
    /// overlap check passes and the loop vectorises (as `binaryLoop`; Swift's SIMD masks,
    /// `replacing(with:where:)`, went lane by lane through memory, 10x slower).
    @inline(never)
    static func select<T: FloatElement>(_ y: UnsafeMutablePointer<T>, _ dy: UnsafePointer<T>, _ x: UnsafePointer<T>, _ n: Int,
                                        _ lo: T, _ hi: T, _ z: T) {
        if UnsafePointer(y) == dy {
            for i in 0..<n {
                let v = x[i]
                y[i] = v < lo || v > hi ? z : y[i]
            }
        } else {
            for i in 0..<n {
                let v = x[i]
                y[i] = v < lo || v > hi ? z : dy[i]
            }
        }
    }
}

func registerInternalOps(_ registry: OpRegistry) {
    registry.register("ElementwiseChain", domain: internalDomain, since: [1], inPlace: [0]) { ctx in try ElementwiseChainKernel(ctx) }
    registry.register("ClipGradient", domain: internalDomain, since: [1], inPlace: [0]) { _ in ClipGradientKernel() }
}
