/// FusedConv (com.microsoft v1): Y = activation(Conv(X, W, B) + Z), the convolution of Conv.swift
/// with its epilogue: Z added in place on the fresh output, the activation as the standalone op
/// computes it. The graph pass `ConvFusion` writes it
/// for Conv(+BatchNormalization folded into W, B)(+Add)(+activation) in inference graphs.
///
/// X: [N, C, in...], W: [M, C/group, k...], B: [M] or absent, Z: Y's shape (any shape that
/// broadcasts with Y is accepted, added out of place) -> Y: [N, M, out...].
struct FusedConvKernel: Kernel {
    let conv: ConvKernel
    let activation: ConvActivation

    init(_ ctx: NodeContext) throws {
        conv = try ConvKernel(ctx)
        activation = try ConvActivation(name: try ctx.string("activation", default: ""),
                                        parameters: try ctx.floats("activation_params") ?? [])
    }

    func run(_ inputs: [Value?], _ context: ExecutionContext) throws -> [Value?] {
        let x = try inputs.tensor(0), w = try inputs.tensor(1), z = try inputs.optionalTensor(3)
        if activation == .none || activation == .relu, x.dtype == .float32 || x.dtype == .float64,
           let g = try? conv.attributes.geometry(x: x, w: w), z.map({ $0.shape == [x.shape[0], w.shape[0]] + g.output && $0.dtype == x.dtype }) ?? true {
            // Z and Relu applied by the convolution to each tile of its output while it is in cache.
            let b = try inputs.optionalTensor(2)
            guard w.dtype == x.dtype, b.map({ $0.dtype == x.dtype }) ?? true else { throw KernelError("FusedConv inputs differ in type") }
            return [.tensor(try dispatch(x.dtype, Fused(x: x, w: w, b: b, z: z, relu: activation == .relu, group: conv.attributes.group, g: g,
                                                        weightCache: conv.cache(forWeight: w))))]
        }
        guard var y = try conv.run(Array(inputs.prefix(3)), context).first??.tensor else { return [] }
        if let z {
            guard z.dtype == y.dtype else { throw KernelError("FusedConv Z is tensor(\(z.dtype)), Y is tensor(\(y.dtype))") }
            y = try dispatch(y.dtype, AddInPlace(y: y, z: z))
        }
        if activation != .none { y = try dispatch(y.dtype, Activate(y: y, activation: activation)) }
        return [.tensor(y)]
    }

    /// The convolution with Z and Relu as its epilogue (float32 and float64, Z of Y's shape).
    struct Fused: ElementOperation {
        let x: Tensor, w: Tensor, b: Tensor?, z: Tensor?, relu: Bool, group: Int, g: ConvGeometry
        let weightCache: WinogradWeightCache?
        func float<T: FloatElement>(_ type: T.Type) throws -> Tensor {
            guard let z else {
                return try convolution(x, w, bias: b, group: group, geometry: g, T.self, epilogue: ConvEpilogue(z: nil, relu: relu),
                                       weightCache: weightCache)
            }
            return try z.withUnsafeBufferPointer(as: T.self) { pz in
                try convolution(x, w, bias: b, group: group, geometry: g, T.self, epilogue: ConvEpilogue(z: pz.baseAddress, relu: relu),
                                weightCache: weightCache)
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
        let activation: ConvActivation
        func float<T: FloatElement>(_ type: T.Type) throws -> Tensor { activation.applied(to: y, T.self) }
    }
}

/// What FusedConv does to a run of the convolution's output while it is in cache:
/// y[offset ..< offset + count] += z[same] (when Z is given), then Relu (when asked) as the
/// standalone op computes it (`x < 0 ? 0 : x`: NaN and -0 kept). Float runs eight lanes at a
/// time as explicit vector selects (an in-place scalar Relu compiles to a branch per element).
struct ConvEpilogue<T: FloatElement> {
    let z: UnsafePointer<T>?
    let relu: Bool

    @inline(__always)
    func apply(_ y: UnsafeMutablePointer<T>, _ offset: Int, _ count: Int) {
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

func registerFusedConvOps(_ registry: OpRegistry) {
    registry.register("FusedConv", domain: "com.microsoft", since: 1) { ctx in try FusedConvKernel(ctx) }
}
