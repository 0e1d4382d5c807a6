/// ChannelAffine (onnx-train's internal domain, written only by the `ChannelAffineFusion` pass into
/// a session's compiled graph, never into a saved model): a per-channel scale and shift and an
/// activation in one pass over the tensor.
///
/// Inputs: X [N, C, d1, ...], scale [C], shift [C] (X's element type, float32 or float64).
/// Attributes: `activation` and `activation_params`, as com.microsoft FusedConv names them
/// (Relu, LeakyRelu, Sigmoid, Tanh, HardSigmoid, Clip; none when absent).
/// Y[n, c, ...] = activation(X[n, c, ...]·scale[c] + shift[c]), the activation computed with the
/// standalone op's function. What it replaces (an inference BatchNormalization, a Mul and an Add
/// by per-channel constants, a Relu: DenseNet's pre-activation blocks) made one pass each.
struct ChannelAffineKernel: Kernel {
    let activation: ConvActivation

    init(_ ctx: NodeContext) throws {
        activation = try ConvActivation(name: try ctx.string("activation", default: ""),
                                        parameters: try ctx.floats("activation_params") ?? [])
    }

    func run(_ inputs: [Value?], _ context: ExecutionContext) throws -> [Value?] {
        let x = try inputs.tensor(0), scale = try inputs.tensor(1), shift = try inputs.tensor(2)
        guard x.dtype == .float32 || x.dtype == .float64, scale.dtype == x.dtype, shift.dtype == x.dtype else {
            throw KernelError("ChannelAffine computes float32 or float64 of one type, got \(x.dtype), \(scale.dtype), \(shift.dtype)")
        }
        guard x.rank >= 2, scale.count == x.shape[1], shift.count == x.shape[1] else {
            throw KernelError("ChannelAffine needs X of rank >= 2 and a scale and shift per channel, got X \(x.shape), scale \(scale.shape), shift \(shift.shape)")
        }
        return [.tensor(try dispatch(x.dtype, Op(activation: activation, x: x, scale: scale, shift: shift)))]
    }

    struct Op: ElementOperation {
        let activation: ConvActivation
        let x: Tensor, scale: Tensor, shift: Tensor

        func float<T: FloatElement>(_ type: T.Type) throws -> Tensor {
            switch activation {
            case .none: return apply(T.self, Identity())
            case .relu: return apply(T.self, Relu())
            case .sigmoid: return apply(T.self, SigmoidFunction())
            case .tanh: return apply(T.self, TanhFunction())
            case .leakyRelu(let alpha): return apply(T.self, LeakyReluFunction(alpha: alpha))
            case .hardSigmoid(let a, let b): return apply(T.self, HardSigmoidFunction(alpha: a, beta: b))
            case .clip(let lo, let hi): return apply(T.self, Clip(lo: lo, hi: hi))
            }
        }

        /// Rows of the spatial size (one image's channel plane each), spread over the threads.
        func apply<T: FloatElement, F: FloatUnaryFunction>(_: T.Type, _ f: F) -> Tensor {
            let c = x.shape[1]
            let inner = Tensor.elementCount(Array(x.shape.dropFirst(2)))
            let rows = x.shape[0] * c
            var y = Tensor(uninitialized: T.dtype, shape: x.shape)
            guard rows > 0, inner > 0 else { return y }
            x.uncheckedBufferPointer(as: T.self) { px in
                scale.uncheckedBufferPointer(as: T.self) { pa in
                    shift.uncheckedBufferPointer(as: T.self) { pb in
                        y.uncheckedMutableBufferPointer(as: T.self) { py in
                            guard let X = px.baseAddress, let A = pa.baseAddress, let B = pb.baseAddress, let Y = py.baseAddress else { return }
                            Parallel.forRange(rows, minimumChunk: max(1, 16_384 / inner)) { range in
                                for r in range { channelAffineRow(X + r * inner, Y + r * inner, inner, A[r % c], B[r % c], f) }
                            }
                        }
                    }
                }
            }
            return y
        }
    }

    struct Identity: FloatUnaryFunction {
        @inline(__always) func callAsFunction<T: FloatElement>(_ x: T) -> T { x }
    }
    /// Relu's own function (defined for every arithmetic type) as a float function.
    struct Relu: FloatUnaryFunction {
        @inline(__always) func callAsFunction<T: FloatElement>(_ x: T) -> T { ReluFunction()(x) }
    }
    /// Clip's order, as FusedConv applies it: raise to min, then lower to max; NaN kept.
    struct Clip: FloatUnaryFunction {
        let lo: Double, hi: Double
        @inline(__always) func callAsFunction<T: FloatElement>(_ x: T) -> T {
            var v = x
            if v < T(lo) { v = T(lo) }
            if v > T(hi) { v = T(hi) }
            return v
        }
    }
}

/// dst[i] = f(src[i]·a + b) over `count` values: a function of its own, never inlined, so the loop
/// vectorises (inlined into the `Parallel.forRange` closure it stays scalar, as elementLoop's do).
@inline(never)
func channelAffineRow<T: FloatElement, F: FloatUnaryFunction>(_ src: UnsafePointer<T>, _ dst: UnsafeMutablePointer<T>, _ count: Int,
                                                               _ a: T, _ b: T, _ f: F) {
    for i in 0..<count { dst[i] = f(src[i] * a + b) }
}

func registerChannelAffineOps(_ registry: OpRegistry) {
    registry.register("ChannelAffine", domain: internalDomain, since: [1], inPlace: [0]) { ctx in try ChannelAffineKernel(ctx) }
}
