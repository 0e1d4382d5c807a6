#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

// Shared machinery of the math families: element protocols with the arithmetic ONNX defines
// (C-like integer division, both Mod flavours, wrapping integer overflow), dtype dispatch, and the
// unary / binary / comparison drivers every elementwise op is a few lines on.
// float16 and bfloat16 are computed through Float and rounded back once per op.

// MARK: - Unary drivers

/// An elementwise function defined for Float and Double (Exp, Sigmoid, ...).
protocol FloatUnaryFunction {
    func callAsFunction<T: FloatElement>(_ x: T) -> T
}

/// An elementwise function defined for every arithmetic type (Abs, Neg, Relu, ...).
protocol NumericUnaryFunction {
    func callAsFunction<T: NumericElement>(_ x: T) -> T
}

/// `out[i] = f(x[i])` for contiguous buffers; `x` and `out` have the same count.
@inline(__always)
func mapElements<T, R>(_ x: Tensor, to outDType: DType, _ f: (T) -> R) -> Tensor {
    var out = Tensor(uninitialized: outDType, shape: x.shape)
    x.uncheckedBufferPointer(as: T.self) { px in
        out.uncheckedMutableBufferPointer(as: R.self) { po in
            for i in 0..<po.count { po[i] = f(px[i]) }
        }
    }
    return out
}

struct MapFloat<F: FloatUnaryFunction>: ElementOperation {
    let x: Tensor, f: F
    func float<T: FloatElement>(_ type: T.Type) throws -> Tensor {
        mapElements(x, to: T.dtype) { (v: T) -> T in f(v) }
    }
}

struct MapNumeric<F: NumericUnaryFunction>: NumericOperation {
    let x: Tensor, f: F
    func numeric<T: NumericElement>(_ type: T.Type) throws -> Tensor {
        mapElements(x, to: T.dtype) { (v: T) -> T in f(v) }
    }
}

/// Applies a float function elementwise (float16/bfloat16 through Float).
func mapFloat<F: FloatUnaryFunction>(_ x: Tensor, _ f: F) throws -> Tensor {
    try computingHalfInFloat([x]) { try dispatch($0[0].dtype, MapFloat(x: $0[0], f: f)) }
}

/// Applies a numeric function elementwise (float16/bfloat16 through Float).
func mapNumeric<F: NumericUnaryFunction>(_ x: Tensor, _ f: F) throws -> Tensor {
    try computingHalfInFloat([x]) { try dispatch($0[0].dtype, MapNumeric(x: $0[0], f: f)) }
}

// MARK: - Binary drivers

/// A binary function of two same-typed numeric elements (Add, Max, PRelu, ...).
protocol NumericBinaryFunction {
    func callAsFunction<T: NumericElement>(_ a: T, _ b: T) -> T
}

/// A binary function of two same-typed float elements (Pow).
protocol FloatBinaryFunction {
    func callAsFunction<T: FloatElement>(_ a: T, _ b: T) -> T
}

/// A predicate on two same-typed elements (Equal, Less, ...).
protocol ComparisonFunction {
    func callAsFunction<T: NumericElement>(_ a: T, _ b: T) -> Bool
}

struct ZipNumeric<F: NumericBinaryFunction>: NumericOperation {
    let a: Tensor, b: Tensor, f: F
    func numeric<T: NumericElement>(_ type: T.Type) throws -> Tensor {
        try broadcastBinary(a, b, T.self, T.self, T.self, outDType: T.dtype) { f($0, $1) }
    }
}

struct ZipFloat<F: FloatBinaryFunction>: ElementOperation {
    let a: Tensor, b: Tensor, f: F
    func float<T: FloatElement>(_ type: T.Type) throws -> Tensor {
        try broadcastBinary(a, b, T.self, T.self, T.self, outDType: T.dtype) { f($0, $1) }
    }
}

struct ZipComparison<F: ComparisonFunction>: NumericOperation {
    let a: Tensor, b: Tensor, f: F
    func numeric<T: NumericElement>(_ type: T.Type) throws -> Tensor {
        try broadcastBinary(a, b, T.self, T.self, Bool.self, outDType: .bool) { f($0, $1) }
    }
}

func requireSameType(_ a: Tensor, _ b: Tensor) throws {
    guard a.dtype == b.dtype else {
        throw KernelError("inputs must have the same element type, got \(a.dtype) and \(b.dtype)")
    }
}

/// `f(a, b)` elementwise with numpy broadcasting; both inputs of one numeric type.
func zipNumeric<F: NumericBinaryFunction>(_ a: Tensor, _ b: Tensor, _ f: F) throws -> Tensor {
    try requireSameType(a, b)
    return try computingHalfInFloat([a, b]) { try dispatch($0[0].dtype, ZipNumeric(a: $0[0], b: $0[1], f: f)) }
}

/// `f(a, b)` elementwise with numpy broadcasting; both inputs of one float type.
func zipFloat<F: FloatBinaryFunction>(_ a: Tensor, _ b: Tensor, _ f: F) throws -> Tensor {
    try requireSameType(a, b)
    return try computingHalfInFloat([a, b]) { try dispatch($0[0].dtype, ZipFloat(a: $0[0], b: $0[1], f: f)) }
}

/// A bool tensor of `f(a, b)` with broadcasting; bool inputs compare as 0/1 bytes.
func zipComparison<F: ComparisonFunction>(_ a: Tensor, _ b: Tensor, _ f: F) throws -> Tensor {
    try requireSameType(a, b)
    if a.dtype == .bool {
        return try ZipComparison(a: a.reinterpreted(as: .uint8), b: b.reinterpreted(as: .uint8), f: f).numeric(UInt8.self)
    }
    let wide = a.isHalf ? [a.widenedToFloat(), b.widenedToFloat()] : [a, b]
    return try dispatch(wide[0].dtype, ZipComparison(a: wide[0], b: wide[1], f: f))
}

extension Tensor {
    /// The same bytes read as another type of the same size (bool as uint8, int4 as int8, ...).
    func reinterpreted(as dtype: DType) -> Tensor {
        precondition(dtype.byteSize == self.dtype.byteSize && dtype != .string && self.dtype != .string)
        return Tensor(dtype: dtype, shape: shape, storage: storage)
    }
}

// MARK: - Registration helpers

extension OpRegistry {
    /// Registers a float-only elementwise op at each since-version; `make` reads attributes once.
    func registerFloatUnary<F: FloatUnaryFunction>(_ opType: String, since versions: [Int], file: String = #filePath,
                                                   _ make: @escaping (NodeContext) throws -> F) {
        register(opType, since: versions, file: file) { ctx in
            let f = try make(ctx)
            return AnyKernel { inputs, _ in [.tensor(try mapFloat(try inputs.tensor(0), f))] }
        }
    }

    /// Registers a numeric elementwise op at each since-version.
    func registerNumericUnary<F: NumericUnaryFunction>(_ opType: String, since versions: [Int], file: String = #filePath,
                                                       _ make: @escaping (NodeContext) throws -> F) {
        register(opType, since: versions, file: file) { ctx in
            let f = try make(ctx)
            return AnyKernel { inputs, _ in [.tensor(try mapNumeric(try inputs.tensor(0), f))] }
        }
    }

    /// Registers a numeric binary op with broadcasting at each since-version.
    func registerNumericBinary<F: NumericBinaryFunction>(_ opType: String, since versions: [Int], file: String = #filePath,
                                                         _ make: @escaping (NodeContext) throws -> F) {
        register(opType, since: versions, file: file) { ctx in
            let f = try make(ctx)
            return AnyKernel { inputs, _ in [.tensor(try zipNumeric(try inputs.tensor(0), try inputs.tensor(1), f))] }
        }
    }

    /// Registers the gradient rule of a unary op, dX = `rule(g, dY, X, Y)`: the rule names the
    /// input and the forward output so it can use whichever is cheaper.
    func registerUnaryGradient(_ opType: String, file: String = #filePath,
                               _ rule: @escaping (GradientContext, String, String, String) throws -> String) {
        registerGradient(opType, file: file) { g in
            guard g.needs(0) else { return [nil] }
            return [try rule(g, try g.requiredDY(), g.input(0), g.output(0))]
        }
    }
}
