/// FusedConv (com.microsoft v1): Y = activation(Conv(X, W, B) + Z), the convolution of Conv.swift
/// with its epilogue: Z added in place on the fresh output, the activation as the standalone op
/// computes it. The graph pass `ConvFusion` writes it
/// for Conv(+BatchNormalization folded into W, B)(+Add)(+activation) in inference graphs.
///
/// X: [N, C, in...], W: [M, C/group, k...], B: [M] or absent, Z: Y's shape (any shape that
/// broadcasts with Y is accepted, added out of place) -> Y: [N, M, out...].
struct FusedConvKernel: Kernel {
    let conv: ConvKernel
    let activation: FusedConvActivation

    init(_ ctx: NodeContext) throws {
        conv = try ConvKernel(ctx)
        activation = try FusedConvActivation(name: try ctx.string("activation", default: ""),
                                             parameters: try ctx.floats("activation_params") ?? [])
    }

    func run(_ inputs: [Value?], _ context: ExecutionContext) throws -> [Value?] {
        let x = try inputs.tensor(0), w = try inputs.tensor(1), z = try inputs.optionalTensor(3)
        if activation.runsInEpilogue, x.dtype == .float32 || x.dtype == .float64,
           let g = try? conv.attributes.geometry(x: x, w: w), z.map({ $0.shape == [x.shape[0], w.shape[0]] + g.output && $0.dtype == x.dtype }) ?? true {
            // Z and the activation applied by the convolution to each tile of its output while it is in cache.
            let b = try inputs.optionalTensor(2)
            guard w.dtype == x.dtype, b.map({ $0.dtype == x.dtype }) ?? true else { throw KernelError("FusedConv inputs differ in type") }
            return [.tensor(try dispatch(x.dtype, Fused(x: x, w: w, b: b, z: z, activation: activation, group: conv.attributes.group, g: g,
                                                        weightCache: conv.cache(forWeight: w), dnnl: conv.dnnl(forWeight: w))))]
        }
        guard var y = try conv.run(Array(inputs.prefix(3)), context).first??.tensor else { return [] }
        if let z {
            guard z.dtype == y.dtype else { throw KernelError("FusedConv Z is tensor(\(z.dtype)), Y is tensor(\(y.dtype))") }
            y = try dispatch(y.dtype, AddInPlace(y: y, z: z))
        }
        if activation != .standard(.none) { y = try dispatch(y.dtype, Activate(y: y, activation: activation)) }
        return [.tensor(y)]
    }

    /// The convolution with Z and the activation as its epilogue (float32 and float64, Z of Y's shape).
    struct Fused: ElementOperation {
        let x: Tensor, w: Tensor, b: Tensor?, z: Tensor?, activation: FusedConvActivation, group: Int, g: ConvGeometry
        let weightCache: WinogradWeightCache?
        let dnnl: DnnlConvCache?
        func float<T: FloatElement>(_ type: T.Type) throws -> Tensor {
            guard let z else {
                return try convolution(x, w, bias: b, group: group, geometry: g, T.self, epilogue: ConvEpilogue(z: nil, activation: activation),
                                       weightCache: weightCache, dnnl: dnnl)
            }
            return try z.withUnsafeBufferPointer(as: T.self) { pz in
                try convolution(x, w, bias: b, group: group, geometry: g, T.self, epilogue: ConvEpilogue(z: pz.baseAddress, activation: activation),
                                weightCache: weightCache, dnnl: dnnl)
            }
        }
    }

    /// y + z, in y's storage when the shapes agree. y is the convolution's fresh output, which
    /// nothing else holds: it is written through its shared storage (a uniquely-referenced write
    /// would copy it, as this struct holds a second reference).
    struct AddInPlace: ElementOperation {
        let y: Tensor
        let z: Tensor
        func float<T: FloatElement>(_ type: T.Type) throws -> Tensor {
            guard z.shape == y.shape else {
                return try broadcastBinary(y, z, T.self, T.self, T.self, outDType: T.dtype) { $0 + $1 }
            }
            try z.withUnsafeBufferPointer(as: T.self) { pz in
                y.uncheckedSharedMutableBufferPointer(as: T.self) { py in
                    for i in 0..<py.count { py[i] += pz[i] }
                }
            }
            return y
        }
    }

    /// The activation into a new tensor, as the standalone op's kernel writes it. Not in place: an
    /// in-place `y[i] = y[i] < 0 ? 0 : y[i]` compiles to a store only for negative elements, a
    /// branch per element that does not vectorise (SqueezeNet ran 1.3x slower fused so); from one
    /// buffer into another the same loop is a vector select.
    struct Activate: ElementOperation {
        let y: Tensor
        let activation: FusedConvActivation
        func float<T: FloatElement>(_ type: T.Type) throws -> Tensor { activation.applied(to: y, T.self) }
    }
}

/// What FusedConv does to a run of the convolution's output while it is in cache:
/// y[offset ..< offset + count] += z[same] (when Z is given), then the activation as the
/// standalone ops compute it (Relu `x < 0 ? 0 : x`: NaN and -0 kept; the others in
/// `FusedConvActivation.value`). Float runs eight lanes at a time as explicit vector selects
/// (an in-place scalar Relu compiles to a branch per element).
struct ConvEpilogue<T: FloatElement> {
    let z: UnsafePointer<T>?
    let activation: FusedConvActivation
    /// Relu, or nothing after Z (the loop kept apart: most of the fused convolutions).
    let relu: Bool
    let plain: Bool
    /// A float32 division by a ClipRatio's divisor as multiplications giving the same bits
    /// (`ReciprocalDivision`), when the division is the activation's last step.
    let division: ReciprocalDivision?

    init(z: UnsafePointer<T>?, activation: FusedConvActivation) {
        self.z = z
        self.activation = activation
        relu = activation == .standard(.relu)
        plain = relu || activation == .standard(.none)
        if T.self == Float.self, case .clipRatio(let r) = activation, r.form != .timesRatio {
            division = ReciprocalDivision(divisor: Float(r.divisor))
        } else {
            division = nil
        }
    }

    init(z: UnsafePointer<T>?, relu: Bool) {
        self.init(z: z, activation: .standard(relu ? .relu : .none))
    }

    /// The same epilogue for float32 (T is Float, checked by the caller).
    func asFloat() -> ConvEpilogue<Float> { ConvEpilogue<Float>(z: z.map(BLAS.rebound), activation: activation) }

    @inline(__always)
    func apply(_ y: UnsafeMutablePointer<T>, _ offset: Int, _ count: Int) {
        guard plain else {
            applyActivation(y + offset, z.map { $0 + offset }, count)
            return
        }
        let p = y + offset, q = z.map { $0 + offset }
        var i = 0
        if T.self == Float.self {
            let raw = UnsafeMutableRawPointer(p), zraw = q.map { UnsafeRawPointer($0) }
            while i + 8 <= count {
                var v = raw.loadUnaligned(fromByteOffset: 4 * i, as: SIMD8<Float>.self)
                if let zraw { v += zraw.loadUnaligned(fromByteOffset: 4 * i, as: SIMD8<Float>.self) }
                if relu { v.replace(with: 0, where: v .< 0) }
                raw.storeBytes(of: v, toByteOffset: 4 * i, as: SIMD8<Float>.self)
                i += 8
            }
        }
        let f = ReluFunction()
        while i < count {
            var v = p[i]
            if let q { v += q[i] }
            p[i] = relu ? f(v) : v
            i += 1
        }
    }

    /// p[i] = activation(p[i] + q[i]) for the activations other than Relu, each as its
    /// standalone ops compute it (float32 eight lanes at a time with the same operations; the
    /// activation picked once per run, not per eight lanes).
    @inline(never)
    func applyActivation(_ p: UnsafeMutablePointer<T>, _ q: UnsafePointer<T>?, _ count: Int) {
        var i = 0
        if T.self == Float.self {
            let raw = UnsafeMutableRawPointer(p), zraw = q.map { UnsafeRawPointer($0) }
            let lanes = EightLanes(activation, deferredDivision: division != nil)
            @inline(__always) func run(_ f: (SIMD8<Float>) -> SIMD8<Float>) {
                while i + 8 <= count {
                    var v = raw.loadUnaligned(fromByteOffset: 4 * i, as: SIMD8<Float>.self)
                    if let zraw { v += zraw.loadUnaligned(fromByteOffset: 4 * i, as: SIMD8<Float>.self) }
                    raw.storeBytes(of: f(v), toByteOffset: 4 * i, as: SIMD8<Float>.self)
                    i += 8
                }
            }
            switch lanes.kind {
            case .clip: run { lanes.clip($0) }
            case .hardSigmoid: run { lanes.unit(lanes.a * $0 + lanes.b) }
            case .hardSigmoidTimesInput: run { $0 * lanes.unit(lanes.a * $0 + lanes.b) }
            case .hardSwish: run { $0 * lanes.unit(lanes.sixth($0) + SIMD8(repeating: 0.5)) }
            case .ratio: run { lanes.clip($0 + lanes.b) }
            case .ratioDivided: run { lanes.clip($0 + lanes.b) / lanes.d }
            case .productRatio: run { $0 * lanes.clip($0 + lanes.b) }
            case .productRatioDivided: run { ($0 * lanes.clip($0 + lanes.b)) / lanes.d }
            case .timesRatio: run { $0 * (lanes.clip($0 + lanes.b) / lanes.d) }
            case .identity: run { $0 }
            }
            if let division {
                // The numerators are in place (and in cache): the division, exactly rounded.
                let f = BLAS.rebound(p) as UnsafeMutablePointer<Float>
                division.divide(f, i)
            }
        }
        while i < count {
            var v = p[i]
            if let q { v += q[i] }
            p[i] = activation.value(v)
            i += 1
        }
    }

    /// A float32 activation on eight lanes: the scalar `FusedConvActivation.value` with the same
    /// operations in the same order (selects for min, max and Clip, as Swift.min, Swift.max and
    /// `clipValue` choose), so the same bits. The `...Divided` kinds divide here; the others of a
    /// ClipRatio leave the numerator for `ReciprocalDivision`.
    struct EightLanes {
        enum Kind { case identity, clip, hardSigmoid, hardSigmoidTimesInput, hardSwish, ratio, ratioDivided, productRatio, productRatioDivided, timesRatio }
        let kind: Kind
        let a: SIMD8<Float>, b: SIMD8<Float>, low: SIMD8<Float>, high: SIMD8<Float>, d: SIMD8<Float>

        init(_ activation: FusedConvActivation, deferredDivision: Bool) {
            var (a, b, low, high, d) = (Float(0), Float(0), -Float.infinity, Float.infinity, Float(1))
            switch activation {
            case .standard(.clip(let lo, let hi)):
                (low, high) = (Float(lo), Float(hi))
                kind = .clip
            case .standard(.hardSigmoid(let alpha, let beta)):
                (a, b) = (Float(alpha), Float(beta))
                kind = .hardSigmoid
            case .hardSigmoidTimesInput(let alpha, let beta):
                (a, b) = (Float(alpha), Float(beta))
                kind = .hardSigmoidTimesInput
            case .hardSwish:
                kind = .hardSwish
            case .clipRatio(let r):
                (b, low, high, d) = (Float(r.shift), Float(r.low), Float(r.high), Float(r.divisor))
                switch r.form {
                case .ratio: kind = deferredDivision ? .ratio : .ratioDivided
                case .productRatio: kind = deferredDivision ? .productRatio : .productRatioDivided
                case .timesRatio: kind = .timesRatio
                }
            case .standard:
                kind = .identity
            }
            (self.a, self.b, self.low, self.high, self.d) = (SIMD8(repeating: a), SIMD8(repeating: b), SIMD8(repeating: low),
                                                             SIMD8(repeating: high), SIMD8(repeating: d))
        }

        /// Swift.max(0, Swift.min(1, t)): `t < 1 ? t : 1`, then `m >= 0 ? m : 0`.
        @inline(__always) func unit(_ t: SIMD8<Float>) -> SIMD8<Float> {
            let one = SIMD8<Float>(repeating: 1), zero = SIMD8<Float>(repeating: 0)
            let m = one.replacing(with: t, where: t .< one)
            return zero.replacing(with: m, where: m .>= zero)
        }

        /// x / 6 with the division's bits: where every lane has 2^-99 <= |x| < ∞, Markstein's
        /// correction of x·(1/6) by two fused multiply-adds, exact there (`ReciprocalDivision`);
        /// else the division. vdivps bounded the fused Hardswish at ~1.5 elements/ns a thread.
        @inline(__always) func sixth(_ x: SIMD8<Float>) -> SIMD8<Float> {
            #if ONNX_TRAIN_X86_64_V3 && arch(x86_64)
            let magnitude = unsafeBitCast(x, to: SIMD8<UInt32>.self) & 0x7FFF_FFFF
            if all((magnitude &- 0x0E00_0000) .< SIMD8<UInt32>(repeating: 0x7F80_0000 - 0x0E00_0000)) {
                let six = SIMD8<Float>(repeating: 6), r = SIMD8<Float>(repeating: 1 / Float(6)), q0 = x * r
                return q0.addingProduct(x.addingProduct(-q0, six), r)
            }
            #endif
            return x / SIMD8(repeating: 6)
        }

        /// clipValue(t, low, high): raised to low, then lowered to high.
        @inline(__always) func clip(_ t: SIMD8<Float>) -> SIMD8<Float> {
            let raised = t.replacing(with: low, where: t .< low)
            return raised.replacing(with: high, where: raised .> high)
        }
    }
}

/// The activations FusedConv applies (onnxruntime's names and activation_params), each the same
/// function as the standalone op's kernel so a fused graph computes the same values.
enum ConvActivation: Equatable {
    case none, relu, sigmoid, tanh
    case leakyRelu(alpha: Double)
    case clip(min: Double, max: Double)
    case hardSigmoid(alpha: Double, beta: Double)

    init(name: String, parameters p: [Float]) throws {
        switch name {
        case "": self = .none
        case "Relu": self = .relu
        case "Sigmoid": self = .sigmoid
        case "Tanh": self = .tanh
        case "LeakyRelu": self = .leakyRelu(alpha: Double(p.first ?? 0.01))
        case "Clip":
            guard p.count == 2 else { throw KernelError("FusedConv activation Clip needs activation_params [min, max], got \(p)") }
            self = .clip(min: Double(p[0]), max: Double(p[1]))
        case "HardSigmoid":
            self = .hardSigmoid(alpha: Double(p.count > 0 ? p[0] : 0.2), beta: Double(p.count > 1 ? p[1] : 0.5))
        default: throw KernelError("FusedConv activation '\(name)' is not supported (Relu, Sigmoid, Tanh, LeakyRelu, Clip, HardSigmoid)")
        }
    }

    /// The name and activation_params a FusedConv node carries for this activation.
    var attributes: [String: Attribute] {
        switch self {
        case .none: return [:]
        case .relu: return ["activation": .string("Relu")]
        case .sigmoid: return ["activation": .string("Sigmoid")]
        case .tanh: return ["activation": .string("Tanh")]
        case .leakyRelu(let a): return ["activation": .string("LeakyRelu"), "activation_params": .floats([Float(a)])]
        case .clip(let lo, let hi): return ["activation": .string("Clip"), "activation_params": .floats([Float(lo), Float(hi)])]
        case .hardSigmoid(let a, let b): return ["activation": .string("HardSigmoid"), "activation_params": .floats([Float(a), Float(b)])]
        }
    }

    /// `activation(y)` elementwise, with the standalone op's function.
    func applied<T: FloatElement>(to y: Tensor, _: T.Type) -> Tensor {
        switch self {
        case .none: return y
        case .relu: let f = ReluFunction(); return mapElements(y, to: T.dtype) { (v: T) -> T in f(v) }
        case .sigmoid: let f = SigmoidFunction(); return mapElements(y, to: T.dtype) { (v: T) -> T in f(v) }
        case .tanh: let f = TanhFunction(); return mapElements(y, to: T.dtype) { (v: T) -> T in f(v) }
        case .leakyRelu(let alpha): let f = LeakyReluFunction(alpha: alpha); return mapElements(y, to: T.dtype) { (v: T) -> T in f(v) }
        case .hardSigmoid(let a, let b): let f = HardSigmoidFunction(alpha: a, beta: b); return mapElements(y, to: T.dtype) { (v: T) -> T in f(v) }
        case .clip(let lo, let hi):
            // Clip's order: raise to min, then lower to max (min > max gives max); NaN kept.
            let (l, h) = (T(lo), T(hi))
            return mapElements(y, to: T.dtype) { (v: T) -> T in
                var v = v
                if v < l { v = l }
                if v > h { v = h }
                return v
            }
        }
    }
}

/// The activations a FusedConv node carries: onnxruntime's (`ConvActivation`), and onnx-train's
/// own names for the hard activations MobileNetV3 uses, as the ops that compute them are written
/// (so a fused graph computes the same values as the graph it came from):
///   * "HardSwish": the HardSwish op, x · max(0, min(1, x / 6 + 1/2)) (`HardSwishFunction`);
///   * "HardSigmoidMul" [alpha, beta]: Mul(x, HardSigmoid(x)), HardSwish before opset 14;
///   * "HardSigmoidClip", "HardSwishClip", "HardSwishClipRatio" [shift, low, high, divisor]:
///     Hardsigmoid and Hardswish written out in elementary ops, Clip(x + shift, low, high) / divisor,
///     (x · Clip(x + shift, low, high)) / divisor and x · (Clip(x + shift, low, high) / divisor)
///     (`ClipRatio`; PyTorch's relu6(x + 3) / 6 forms).
/// Only the passes of a session write these names (onnxruntime's FusedConv does not know them).
enum FusedConvActivation: Equatable {
    case standard(ConvActivation)
    case hardSwish
    case hardSigmoidTimesInput(alpha: Double, beta: Double)
    case clipRatio(ClipRatio)

    /// Clip(x + shift, low, high) / divisor in one of three forms (Add, Clip, Mul and Div as the
    /// standalone kernels compute them, in the graph's order).
    struct ClipRatio: Equatable {
        enum Form: Equatable {
            /// Clip(x + shift, low, high) / divisor (Hardsigmoid).
            case ratio
            /// (x · Clip(x + shift, low, high)) / divisor (Hardswish, Mul then Div).
            case productRatio
            /// x · (Clip(x + shift, low, high) / divisor) (Hardswish, Div then Mul).
            case timesRatio
        }
        var shift: Double, low: Double, high: Double, divisor: Double
        var form: Form

        static let names: [(String, Form)] = [("HardSigmoidClip", .ratio), ("HardSwishClip", .productRatio), ("HardSwishClipRatio", .timesRatio)]
    }

    init(name: String, parameters p: [Float]) throws {
        switch name {
        case "HardSwish":
            self = .hardSwish
        case "HardSigmoidMul":
            self = .hardSigmoidTimesInput(alpha: Double(p.count > 0 ? p[0] : 0.2), beta: Double(p.count > 1 ? p[1] : 0.5))
        default:
            if let form = ClipRatio.names.first(where: { $0.0 == name })?.1 {
                guard p.count == 4 else { throw KernelError("FusedConv activation \(name) needs activation_params [shift, low, high, divisor], got \(p)") }
                self = .clipRatio(ClipRatio(shift: Double(p[0]), low: Double(p[1]), high: Double(p[2]), divisor: Double(p[3]), form: form))
            } else {
                self = .standard(try ConvActivation(name: name, parameters: p))
            }
        }
    }

    /// The name and activation_params a FusedConv node carries for this activation.
    var attributes: [String: Attribute] {
        switch self {
        case .standard(let a): return a.attributes
        case .hardSwish: return ["activation": .string("HardSwish")]
        case .hardSigmoidTimesInput(let a, let b): return ["activation": .string("HardSigmoidMul"), "activation_params": .floats([Float(a), Float(b)])]
        case .clipRatio(let r):
            let name = ClipRatio.names.first { $0.1 == r.form }?.0 ?? ""
            return ["activation": .string(name), "activation_params": .floats([Float(r.shift), Float(r.low), Float(r.high), Float(r.divisor)])]
        }
    }

    /// Whether the convolution applies it to its output while in cache (`ConvEpilogue`); Sigmoid,
    /// Tanh and LeakyRelu run as a pass of the standalone op's kernel after it.
    var runsInEpilogue: Bool {
        switch self {
        case .standard(.none), .standard(.relu), .standard(.clip), .standard(.hardSigmoid): return true
        case .standard: return false
        case .hardSwish, .hardSigmoidTimesInput, .clipRatio: return true
        }
    }

    /// activation(v) for the activations `ConvEpilogue.applyActivation` computes, as the
    /// standalone kernels compute them (HardSigmoidFunction, HardSwishFunction, clipValue, and
    /// IEEE +, ·, / of T).
    @inline(__always)
    func value<T: FloatElement>(_ v: T) -> T {
        switch self {
        case .standard(.clip(let lo, let hi)): return clipValue(v, T(lo), T(hi))
        case .standard(.hardSigmoid(let a, let b)): return HardSigmoidFunction(alpha: a, beta: b)(v)
        case .standard(.relu): return ReluFunction()(v)
        case .standard: return v
        case .hardSwish: return HardSwishFunction()(v)
        case .hardSigmoidTimesInput(let a, let b): return v * HardSigmoidFunction(alpha: a, beta: b)(v)
        case .clipRatio(let r):
            let t = clipValue(v + T(r.shift), T(r.low), T(r.high)), d = T(r.divisor)
            switch r.form {
            case .ratio: return t / d
            case .productRatio: return (v * t) / d
            case .timesRatio: return v * (t / d)
            }
        }
    }

    /// `activation(y)` elementwise, with the standalone ops' functions.
    func applied<T: FloatElement>(to y: Tensor, _: T.Type) -> Tensor {
        if case .standard(let a) = self { return a.applied(to: y, T.self) }
        return mapElements(y, to: T.dtype) { (v: T) -> T in value(v) }
    }
}

func registerFusedConvOps(_ registry: OpRegistry) {
    registry.register("FusedConv", domain: "com.microsoft", since: 1) { ctx in try FusedConvKernel(ctx) }
}
