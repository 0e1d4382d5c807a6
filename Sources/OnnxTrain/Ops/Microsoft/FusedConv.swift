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
        conv = ConvKernel(attributes: try ConvAttributes(ctx))
        activation = try ConvActivation(name: try ctx.string("activation", default: ""),
                                        parameters: try ctx.floats("activation_params") ?? [])
    }

    func run(_ inputs: [Value?], _ context: ExecutionContext) throws -> [Value?] {
        guard var y = try conv.run(Array(inputs.prefix(3)), context).first??.tensor else { return [] }
        let z = try inputs.optionalTensor(3)
        if let z {
            guard z.dtype == y.dtype else { throw KernelError("FusedConv Z is tensor(\(z.dtype)), Y is tensor(\(y.dtype))") }
            y = try dispatch(y.dtype, AddInPlace(y: y, z: z))
        }
        if activation != .none { y = try dispatch(y.dtype, Activate(y: y, activation: activation)) }
        return [.tensor(y)]
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
