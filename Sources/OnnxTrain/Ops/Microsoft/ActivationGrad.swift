#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

// Element-wise activation gradients (com.microsoft v1) and the Gelu-family forwards that
// onnxruntime's fusions put into training graphs. float32 computes in float32, as onnxruntime's
// kernels do, with the vectorising FloatElement.erf and fastExp (widening every element to Double
// made erf the top cost of a transformer step); float64 computes in float64; float16/bfloat16
// go through float32.

/// The activations and their derivatives, as functions of the forward's input x (or output y
/// where the op takes y). float32 is the eight-lane form (`…8`, VectorMath's erf, tanh, exp and
/// sigmoid), the scalar Float form lane 0 of it; float64 keeps libm.
enum ActivationMath {
    static let sqrt2OverPi = 0.7978845608028654   // √(2/π)
    static let gamma = 0.044715
    static let invSqrt2Pi = 0.3989422804014327    // 1/√(2π)
    typealias V = SIMD8<Float>

    /// Gelu with erf: x·Φ(x).
    @inline(__always) static func gelu<T: FloatElement>(_ x: T) -> T { float32Lane(x, gelu8) { x in x * T.phi(x) } }
    /// d/dx of x·Φ(x) = Φ(x) + x·φ(x).
    @inline(__always) static func geluGrad<T: FloatElement>(_ x: T) -> T {
        float32Lane(x, geluGrad8) { x in T.phi(x) + x * T.fastExp(-0.5 * x * x) * T(invSqrt2Pi) }
    }
    /// The tanh approximation ½x(1+tanh(a(x+γx³))).
    @inline(__always) static func fastGelu<T: FloatElement>(_ x: T) -> T {
        float32Lane(x, fastGelu8) { x in
            let inner: T = T(sqrt2OverPi) * (x + T(gamma) * x * x * x)
            return 0.5 * x * (1 + T.tanh(inner))
        }
    }
    /// ½[1+t+(1−t²)(a·x+3aγ·x³)] with t = tanh(a(x+γx³)).
    @inline(__always) static func fastGeluGrad<T: FloatElement>(_ x: T) -> T {
        float32Lane(x, fastGeluGrad8) { x in
            let a = T(sqrt2OverPi), g = T(gamma)
            let t = T.tanh(a * (x + g * x * x * x))
            return 0.5 * (1 + t + (1 - t * t) * (a * x + 3 * a * g * x * x * x))
        }
    }
    @inline(__always) static func sigmoid<T: FloatElement>(_ x: T) -> T { float32Lane(x, VectorMath.sigmoid) { x in 1 / (1 + T.fastExp(-x)) } }
    /// x·σ(αx).
    @inline(__always) static func quickGelu<T: FloatElement>(_ x: T, _ alpha: T) -> T { x * sigmoid(alpha * x) }
    /// s·(1+αx(1−s)) with s = σ(αx).
    @inline(__always) static func quickGeluGrad<T: FloatElement>(_ x: T, _ alpha: T) -> T {
        let s = sigmoid(alpha * x)
        return s * (1 + alpha * x * (1 - s))
    }

    // float32, eight lanes.
    /// Φ(x) = ½(1 + erf(x/√2)).
    @inline(__always) static func phi8(_ x: V) -> V { 0.5 * (1 + VectorMath.erf(x * 0.707_106_781_186_547_5)) }
    @inline(__always) static func gelu8(_ x: V) -> V { x * phi8(x) }
    @inline(__always) static func geluGrad8(_ x: V) -> V {
        phi8(x) + x * VectorMath.exp(-0.5 * x * x) * Float(invSqrt2Pi)
    }
    @inline(__always) static func fastGelu8(_ x: V) -> V {
        let cube: V = x * x * x
        let inner: V = Float(sqrt2OverPi) * (x + Float(gamma) * cube)
        return 0.5 * x * (1 + VectorMath.tanh(inner))
    }
    @inline(__always) static func fastGeluGrad8(_ x: V) -> V {
        let a = Float(sqrt2OverPi), g = Float(gamma)
        let t = VectorMath.tanh(a * (x + g * x * x * x))
        return 0.5 * (1 + t + (1 - t * t) * (a * x + 3 * a * g * x * x * x))
    }
    @inline(__always) static func quickGelu8(_ x: V, _ alpha: Float) -> V { x * VectorMath.sigmoid(alpha * x) }
    @inline(__always) static func quickGeluGrad8(_ x: V, _ alpha: Float) -> V {
        let s = VectorMath.sigmoid(alpha * x)
        return s * (1 + alpha * x * (1 - s))
    }
}

/// One activation (or derivative) per struct, so the element loop specialises on it and
/// inlines it (a closure would stay an indirect call per element inside the parallel loop);
/// each has its float32 eight-lane form.
typealias ActivationElementFunction = FloatUnaryFunction

struct ReluDerivative: ActivationElementFunction {
    @inline(__always) func callAsFunction<T: FloatElement>(_ x: T) -> T { x > 0 ? 1 : 0 }
    static var hasFloat8: Bool { true }
    @inline(__always) func float8(_ x: SIMD8<Float>) -> SIMD8<Float> { SIMD8(repeating: 0).replacing(with: 1, where: x .> 0) }
}
struct SigmoidDerivativeFromY: ActivationElementFunction {
    @inline(__always) func callAsFunction<T: FloatElement>(_ y: T) -> T { y * (1 - y) }
    static var hasFloat8: Bool { true }
    @inline(__always) func float8(_ y: SIMD8<Float>) -> SIMD8<Float> { y * (1 - y) }
}
struct TanhDerivativeFromY: ActivationElementFunction {
    @inline(__always) func callAsFunction<T: FloatElement>(_ y: T) -> T { 1 - y * y }
    static var hasFloat8: Bool { true }
    @inline(__always) func float8(_ y: SIMD8<Float>) -> SIMD8<Float> { 1 - y * y }
}
struct GeluDerivative: ActivationElementFunction {
    @inline(__always) func callAsFunction<T: FloatElement>(_ x: T) -> T { ActivationMath.geluGrad(x) }
    static var hasFloat8: Bool { true }
    @inline(__always) func float8(_ x: SIMD8<Float>) -> SIMD8<Float> { ActivationMath.geluGrad8(x) }
}
struct FastGeluDerivative: ActivationElementFunction {
    @inline(__always) func callAsFunction<T: FloatElement>(_ x: T) -> T { ActivationMath.fastGeluGrad(x) }
    static var hasFloat8: Bool { true }
    @inline(__always) func float8(_ x: SIMD8<Float>) -> SIMD8<Float> { ActivationMath.fastGeluGrad8(x) }
}
struct QuickGeluDerivative: ActivationElementFunction {
    let alpha: Double
    @inline(__always) func callAsFunction<T: FloatElement>(_ x: T) -> T { ActivationMath.quickGeluGrad(x, T(alpha)) }
    static var hasFloat8: Bool { true }
    @inline(__always) func float8(_ x: SIMD8<Float>) -> SIMD8<Float> { ActivationMath.quickGeluGrad8(x, Float(alpha)) }
}
struct LeakyReluDerivative: ActivationElementFunction {
    let alpha: Double
    @inline(__always) func callAsFunction<T: FloatElement>(_ x: T) -> T { x > 0 ? 1 : T(alpha) }
    static var hasFloat8: Bool { true }
    @inline(__always) func float8(_ x: SIMD8<Float>) -> SIMD8<Float> { SIMD8(repeating: Float(alpha)).replacing(with: 1, where: x .> 0) }
}
struct GeluForward: ActivationElementFunction {
    @inline(__always) func callAsFunction<T: FloatElement>(_ x: T) -> T { ActivationMath.gelu(x) }
    static var hasFloat8: Bool { true }
    @inline(__always) func float8(_ x: SIMD8<Float>) -> SIMD8<Float> { ActivationMath.gelu8(x) }
}
struct FastGeluForward: ActivationElementFunction {
    @inline(__always) func callAsFunction<T: FloatElement>(_ x: T) -> T { ActivationMath.fastGelu(x) }
    static var hasFloat8: Bool { true }
    @inline(__always) func float8(_ x: SIMD8<Float>) -> SIMD8<Float> { ActivationMath.fastGelu8(x) }
}
struct QuickGeluForward: ActivationElementFunction {
    let alpha: Double
    @inline(__always) func callAsFunction<T: FloatElement>(_ x: T) -> T { ActivationMath.quickGelu(x, T(alpha)) }
    static var hasFloat8: Bool { true }
    @inline(__always) func float8(_ x: SIMD8<Float>) -> SIMD8<Float> { ActivationMath.quickGelu8(x, Float(alpha)) }
}

/// Which element-wise function a kernel applies.
enum ActivationFunction {
    // Derivatives, multiplied into dY.
    case reluGrad, sigmoidGradFromY, tanhGradFromY, geluGrad, fastGeluGrad, quickGeluGrad(Double), leakyReluGrad(Double)
    // Forwards.
    case gelu, fastGelu, quickGelu(Double)

    var isGradient: Bool {
        switch self {
        case .gelu, .fastGelu, .quickGelu: return false
        default: return true
        }
    }
}

/// out = f(x + bias) for a forward, dY ⊙ f′(x + bias) for a gradient; bias (optional) repeats
/// along the last axis. Shapes: x, dY, out [..., n]; bias [n].
struct ActivationOp: ElementOperation {
    let function: ActivationFunction
    let dy: Tensor?, x: Tensor, bias: Tensor?

    func float<T: FloatElement>(_ type: T.Type) throws -> Tensor {
        switch function {
        case .reluGrad: return apply(T.self, ReluDerivative())
        case .sigmoidGradFromY: return apply(T.self, SigmoidDerivativeFromY())
        case .tanhGradFromY: return apply(T.self, TanhDerivativeFromY())
        case .geluGrad: return apply(T.self, GeluDerivative())
        case .fastGeluGrad: return apply(T.self, FastGeluDerivative())
        case .quickGeluGrad(let alpha): return apply(T.self, QuickGeluDerivative(alpha: alpha))
        case .leakyReluGrad(let alpha): return apply(T.self, LeakyReluDerivative(alpha: alpha))
        case .gelu: return apply(T.self, GeluForward())
        case .fastGelu: return apply(T.self, FastGeluForward())
        case .quickGelu(let alpha): return apply(T.self, QuickGeluForward(alpha: alpha))
        }
    }

    /// The element loop: rows of the bias length (the bias repeats per row), split across threads.
    @inline(__always)
    private func apply<T: FloatElement, F: ActivationElementFunction>(_ type: T.Type, _ f: F) -> Tensor {
        var out = Tensor(uninitialized: T.dtype, shape: x.shape)
        let n = out.count
        guard n > 0 else { return out }
        let cols = bias?.count ?? n
        guard cols > 0 else { return out }
        let rows = n / cols
        x.uncheckedBufferPointer(as: T.self) { bx in
            out.uncheckedMutableBufferPointer(as: T.self) { bo in
                withOptionalPointer(bias, T.self) { pb in
                    withOptionalPointer(dy, T.self) { pg in
                        guard let px = bx.baseAddress, let po = bo.baseAddress else { return }
                        if let pb {
                            // x, dY, out: [rows, cols]; bias: [cols].
                            Parallel.forRange(rows, minimumChunk: max(1, 16_384 / cols)) { range in
                                for r in range {
                                    let base = r * cols
                                    activationLoop(f, x: px + base, bias: pb, dy: pg.map { $0 + base }, out: po + base, count: cols)
                                }
                            }
                        } else {
                            Parallel.forRange(n, minimumChunk: 16_384) { range in
                                let start = range.lowerBound
                                activationLoop(f, x: px + start, bias: nil, dy: pg.map { $0 + start }, out: po + start, count: range.count)
                            }
                        }
                    }
                }
            }
        }
        return out
    }
}

/// out[i] = f(x[i] + bias[i]), times dy[i] for a gradient (bias and dy optional).
/// A function of its own, not code inside the Parallel.forRange closure: LLVM vectorises loops
/// over plain pointer arguments but kept the closure's loop scalar.
@inline(never)
func activationLoop<T: FloatElement, F: ActivationElementFunction>(_ f: F, x: UnsafePointer<T>, bias: UnsafePointer<T>?,
                                                                     dy: UnsafePointer<T>?, out: UnsafeMutablePointer<T>, count: Int) {
    if T.self == Float.self && F.hasFloat8 {
        activationLoop8(f, x: floats(x), bias: bias.map { floats($0) }, dy: dy.map { floats($0) }, out: floats(out), count: count)
        return
    }
    switch (bias, dy) {
    case let (b?, g?): for i in 0..<count { out[i] = g[i] * f(x[i] + b[i]) }
    case let (b?, nil): for i in 0..<count { out[i] = f(x[i] + b[i]) }
    case let (nil, g?): for i in 0..<count { out[i] = g[i] * f(x[i]) }
    case (nil, nil): for i in 0..<count { out[i] = f(x[i]) }
    }
}

/// `activationLoop` for float32, eight elements at a time through `f.float8` (same values as
/// the scalar Float form, which is lane 0 of it); `out` may alias `x` or `dy`. Each case passes
/// its flags as constants, so the step folds to exactly the work that case needs.
@inline(never)
func activationLoop8<F: ActivationElementFunction>(_ f: F, x: UnsafePointer<Float>, bias: UnsafePointer<Float>?,
                                                   dy: UnsafePointer<Float>?, out: UnsafeMutablePointer<Float>, count: Int) {
    switch (bias, dy) {
    case let (b?, g?): VectorMath.apply(ActivationStep(f: f, hasBias: true, hasDY: true), x, b, g, out, count)
    case let (b?, nil): VectorMath.apply(ActivationStep(f: f, hasBias: true, hasDY: false), x, b, nil, out, count)
    case let (nil, g?): VectorMath.apply(ActivationStep(f: f, hasBias: false, hasDY: true), x, nil, g, out, count)
    case (nil, nil): VectorMath.apply(ActivationStep(f: f, hasBias: false, hasDY: false), x, nil, nil, out, count)
    }
}

/// One step of `activationLoop8`: dY ⊙ f(x + bias) on eight elements, without dY or bias when
/// their flag is off (x + 0 would turn -0 into +0).
struct ActivationStep<F: ActivationElementFunction>: VectorStep {
    let f: F
    let hasBias: Bool, hasDY: Bool

    @inline(__always)
    func callAsFunction(_ x: SIMD8<Float>, _ b: SIMD8<Float>, _ g: SIMD8<Float>) -> SIMD8<Float> {
        let r = f.float8(hasBias ? x + b : x)
        return hasDY ? g * r : r
    }
}

/// Runs `body` with the tensor's element pointer, or nil when there is no tensor.
@inline(__always)
func withOptionalPointer<T, R>(_ t: Tensor?, _ type: T.Type, _ body: (UnsafePointer<T>?) -> R) -> R {
    guard let t else { return body(nil) }
    return t.uncheckedBufferPointer(as: T.self) { body($0.baseAddress) }
}

/// B must be 1-D with the length of X's last axis.
func requireLastAxisBias(_ b: Tensor, of x: Tensor, name: String = "B") throws {
    guard b.rank == 1, let last = x.shape.last, b.shape[0] == last else {
        throw KernelError("\(name) \(b.shape) must be 1-D with the length of the input's last axis (\(x.shape))")
    }
}

/// The kernel for one activation op. Gradients read (dY, X or Y[, B]); forwards read (X[, bias]).
/// `biasIndex` is the bias input, if the op has one; `biasRequired` for BiasGelu and the bias grads.
struct ActivationKernel: Kernel {
    let function: ActivationFunction
    let biasIndex: Int?
    let biasRequired: Bool
    let secondName: String

    func run(_ inputs: [Value?], _ context: ExecutionContext) throws -> [Value?] {
        let gradient = function.isGradient
        let dy = gradient ? try inputs.tensor(0) : nil
        let x = try inputs.tensor(gradient ? 1 : 0)
        if let dy { try requireSameShape(dy, x, "dY", secondName) }
        var bias: Tensor?
        if let biasIndex { bias = try biasRequired ? inputs.tensor(biasIndex) : inputs.optionalTensor(biasIndex) }
        if let bias { try requireLastAxisBias(bias, of: x) }
        let operands = [dy, x, bias].compactMap { $0 }
        let names = [gradient ? "dY" : nil, secondName, bias == nil ? nil : "B"].compactMap { $0 }
        return [.tensor(try computingHalfInFloat(operands, names: names, floatOnly: true) { t in
            try dispatch(t[0].dtype, ActivationOp(function: function, dy: gradient ? t[0] : nil, x: t[gradient ? 1 : 0], bias: bias == nil ? nil : t.last))
        })]
    }
}

/// The builder of one ActivationKernel op: `function` reads the node's attributes once;
/// `second` names the op's second input in errors (X, or Y for grads taken from the output).
func activationKernel(_ second: String = "X", biasIndex: Int? = nil, biasRequired: Bool = false,
                      _ function: @escaping (NodeContext) throws -> ActivationFunction) -> KernelFactory {
    { ctx in ActivationKernel(function: try function(ctx), biasIndex: biasIndex, biasRequired: biasRequired, secondName: second) }
}

func registerActivationGradOps(_ registry: OpRegistry) {
    let ms = "com.microsoft"
    // In place (the memory plan): ActivationOp makes its output first and reads dY, X (and B) at
    // each index before writing it, so the output may take dY's or X's block (not B's: a row).
    // ReluGrad(dY, X): dY where X > 0 (X == 0 gives 0).
    registry.register("ReluGrad", domain: ms, since: [1], inPlace: [0, 1], activationKernel { _ in .reluGrad })
    // SigmoidGrad(dY, Y): dY·Y·(1−Y) and TanhGrad(dY, Y): dY·(1−Y²), from the forward outputs.
    registry.register("SigmoidGrad", domain: ms, since: [1], inPlace: [0, 1], activationKernel("Y") { _ in .sigmoidGradFromY })
    registry.register("TanhGrad", domain: ms, since: [1], inPlace: [0, 1], activationKernel("Y") { _ in .tanhGradFromY })
    registry.register("GeluGrad", domain: ms, since: [1], inPlace: [0, 1], activationKernel { _ in .geluGrad })
    registry.register("FastGeluGrad", domain: ms, since: [1], inPlace: [0, 1], activationKernel { _ in .fastGeluGrad })
    registry.register("QuickGeluGrad", domain: ms, since: [1], inPlace: [0, 1], activationKernel { .quickGeluGrad(Double(try $0.float("alpha", default: 1.702))) })
    registry.register("LeakyReluGrad", domain: ms, since: [1], inPlace: [0, 1], activationKernel { .leakyReluGrad(Double(try $0.float("alpha", default: 0.01))) })
    // dX = dY ⊙ f′(X + B); dB is a separate ReduceSum in the graph.
    registry.register("BiasGeluGrad_dX", domain: ms, since: [1], inPlace: [0, 1], activationKernel(biasIndex: 2, biasRequired: true) { _ in .geluGrad })
    registry.register("BiasFastGeluGrad_dX", domain: ms, since: [1], inPlace: [0, 1], activationKernel(biasIndex: 2, biasRequired: true) { _ in .fastGeluGrad })

    // Forwards produced by onnxruntime's Gelu fusions.
    registry.register("Gelu", domain: ms, since: [1], inPlace: [0], activationKernel { _ in .gelu })
    registry.register("BiasGelu", domain: ms, since: [1], inPlace: [0], activationKernel(biasIndex: 1, biasRequired: true) { _ in .gelu })
    registry.register("FastGelu", domain: ms, since: [1], inPlace: [0], activationKernel(biasIndex: 1) { _ in .fastGelu })
    registry.register("QuickGelu", domain: ms, since: [1], inPlace: [0], activationKernel { .quickGelu(Double(try $0.float("alpha", default: 1.702))) })

    // Gradient rules (GradientContext):
    registry.registerGradient("Gelu", domain: ms) { g in g.needs(0) ? [g.ms("GeluGrad", [try g.requiredDY(), g.input(0)])[0]] : [nil] }
    registry.registerGradient("FastGelu", domain: ms, fastGeluGradient)
    registry.registerGradient("BiasGelu", domain: ms, biasGeluGradient)
    registry.registerGradient("QuickGelu", domain: ms) { g in
        [g.needs(0) ? g.ms("QuickGeluGrad", [try g.requiredDY(), g.input(0)], attributes: ["alpha": .float(g.node.float("alpha") ?? 1.702)])[0] : nil]
    }
}

/// The gradient rule of FastGelu (com.microsoft).
func fastGeluGradient(_ g: GradientContext) throws -> [String?] {
    guard g.hasInput(1) else { return [g.needs(0) ? g.ms("FastGeluGrad", [try g.requiredDY(), g.input(0)])[0] : nil] }
    let dX = g.ms("BiasFastGeluGrad_dX", [try g.requiredDY(), g.input(0), g.input(1)])[0]
    return [g.needs(0) ? dX : nil, g.needs(1) ? g.reduced(dX, toInput: 1) : nil]
}

/// The gradient rule of BiasGelu (com.microsoft).
func biasGeluGradient(_ g: GradientContext) throws -> [String?] {
    let dX = g.ms("BiasGeluGrad_dX", [try g.requiredDY(), g.input(0), g.input(1)])[0]
    return [g.needs(0) ? dX : nil, g.needs(1) ? g.reduced(dX, toInput: 1) : nil]
}
