/// ElementwiseChain (onnx-train's internal domain, written only by the `ElementwiseFusion` pass
/// into a session's compiled graph, never into a saved model): a chain of unary and binary
/// elementwise ops evaluated in one pass over the elements, block by block, so the values between
/// the ops never go to memory.
///
/// Inputs: the chain's start, then one operand per binary step. Attributes: `ops` (op types in
/// order), `operands` (per step: the input index of its other operand, -1 for a unary step),
/// `chain_left` (per step: 1 when the chain's value is the left operand), `alphas` (LeakyRelu's
/// alpha, else 0). Each op computes exactly what its standalone kernel computes per element (the
/// same functions), so a fused chain gives the same values. Operands the same size as the result,
/// scalars, and trailing-dimension operands (a bias row) stream in the fused loop; any other
/// broadcast runs the steps one by one with broadcasting.
public let internalDomain = "ai.onnx-train.internal"

struct ElementwiseChainKernel: Kernel {
    enum Op {
        case add, sub, mul, div
        case relu, neg, abs, sigmoid, tanh, exp, log, sqrt, reciprocal, erf
        case leakyRelu(Double)

        var isBinary: Bool {
            switch self {
            case .add, .sub, .mul, .div: return true
            default: return false
            }
        }
    }
    struct Step {
        let op: Op
        let operand: Int
        let chainLeft: Bool
    }
    let steps: [Step]

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
            guard op.isBinary == (operands[k] >= 1), operands[k] < ctx.node.inputs.count else {
                throw KernelError("ElementwiseChain step \(k) (\(ops[k])) has operand \(operands[k])")
            }
            steps.append(Step(op: op, operand: operands[k], chainLeft: left[k] != 0))
        }
        self.steps = steps
    }

    func run(_ inputs: [Value?], _ context: ExecutionContext) throws -> [Value?] {
        let tensors = try inputs.indices.map { try inputs.tensor($0) }
        let dtype = tensors[0].dtype
        guard dtype == .float32 || dtype == .float64, tensors.allSatisfy({ $0.dtype == dtype }) else {
            throw KernelError("ElementwiseChain computes float32 or float64 of one type, got \(tensors.map(\.dtype))")
        }
        return [.tensor(try dispatch(dtype, Evaluate(steps: steps, inputs: tensors)))]
    }

    struct Evaluate: ElementOperation {
        let steps: [Step]
        let inputs: [Tensor]

        func float<T: FloatElement>(_ type: T.Type) throws -> Tensor {
            var outShape = inputs[0].shape
            for s in steps where s.op.isBinary { outShape = try Broadcast.shape(outShape, inputs[s.operand].shape) }
            let n = Tensor.elementCount(outShape)
            // Streams: the start at full size, each operand full, scalar, or a trailing-dims period.
            func streams(_ t: Tensor) -> Bool {
                if t.count == n || t.count == 1 { return true }
                let dims = t.shape.drop(while: { $0 == 1 })
                return t.rank <= outShape.count && outShape.suffix(dims.count).elementsEqual(dims) && t.count > 0
            }
            guard inputs[0].count == n, steps.allSatisfy({ !$0.op.isBinary || streams(inputs[$0.operand]) }) else {
                return try stepByStep(T.self)
            }
            var out = Tensor(uninitialized: T.dtype, shape: outShape)
            if n == 0 { return out }
            // Every input has elements here (n > 0, and each is full, scalar or a period of n).
            let pointers = inputs.map { t in t.uncheckedBufferPointer(as: T.self) { $0.baseAddress! } }
            let counts = inputs.map(\.count)
            let steps = self.steps
            out.uncheckedMutableBufferPointer(as: T.self) { po in
                guard let Y = po.baseAddress else { return }
                let block = 256
                let blocks = (n + block - 1) / block
                Parallel.forRange(blocks, minimumChunk: 64) { range in
                    let tmp = UnsafeMutablePointer<T>.allocate(capacity: block)
                    defer { tmp.deallocate() }
                    for b in range {
                        let start = b * block, len = min(block, n - start)
                        let y = Y + start
                        y.update(from: pointers[0] + start, count: len)
                        for s in steps {
                            if s.op.isBinary {
                                let src = pointers[s.operand], m = counts[s.operand]
                                let x: UnsafePointer<T>
                                if m == n {
                                    x = src + start
                                } else if m == 1 {
                                    tmp.update(repeating: src[0], count: len)
                                    x = UnsafePointer(tmp)
                                } else {
                                    var j = start % m
                                    for i in 0..<len { tmp[i] = src[j]; j += 1; if j == m { j = 0 } }
                                    x = UnsafePointer(tmp)
                                }
                                ElementwiseChainKernel.binary(s.op, y, x, len, chainLeft: s.chainLeft)
                            } else {
                                ElementwiseChainKernel.unary(s.op, y, len)
                            }
                        }
                    }
                }
            }
            withExtendedLifetime(inputs) {}
            return out
        }

        /// The steps one at a time with full broadcasting (operands that do not stream).
        func stepByStep<T: FloatElement>(_ type: T.Type) throws -> Tensor {
            var value = inputs[0]
            for s in steps {
                if s.op.isBinary {
                    let other = inputs[s.operand]
                    let (a, b) = s.chainLeft ? (value, other) : (other, value)
                    // The standalone ops' paths (their vector loops where the shapes allow).
                    func zip<F: NumericBinaryFunction>(_ f: F) throws -> Tensor { try binaryFastPath(a, b, f) ?? zipNumeric(a, b, f) }
                    switch s.op {
                    case .add: value = try zip(AddFunction())
                    case .sub: value = try zip(SubFunction())
                    case .mul: value = try zip(MulFunction())
                    default: value = try zip(DivFunction())
                    }
                } else {
                    var copy = value.copied()
                    copy.uncheckedMutableBufferPointer(as: T.self) { p in
                        if let base = p.baseAddress { ElementwiseChainKernel.unary(s.op, base, p.count) }
                    }
                    value = copy
                }
            }
            return value
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

    /// y[i] = op(y[i]), with the standalone op's function (float32: its eight-lane form where it
    /// has one, as the standalone kernel runs it).
    static func unary<T: FloatElement>(_ op: Op, _ y: UnsafeMutablePointer<T>, _ n: Int) {
        /// float32 through the eight-lane form; false where the scalar loop runs.
        @inline(__always) func vector<F: Float8Form>(_ f: F) -> Bool {
            guard T.self == Float.self && F.hasFloat8 else { return false }
            let p = UnsafeMutableRawPointer(y).assumingMemoryBound(to: Float.self)
            VectorMath.apply(p, p, n) { f.float8($0) }
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
        case .add, .sub, .mul, .div: return
        }
    }
}

func registerInternalOps(_ registry: OpRegistry) {
    registry.register("ElementwiseChain", domain: internalDomain, since: [1], inPlace: [0]) { ctx in try ElementwiseChainKernel(ctx) }
}
