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

/// A function with a float32 form eight lanes at a time (VectorMath), which the unary drivers
/// run for float32 tensors when `hasFloat8` is true; the default is the scalar form per lane.
protocol Float8Form {
    static var hasFloat8: Bool { get }
    func float8(_ x: SIMD8<Float>) -> SIMD8<Float>
    /// The scalar Float form.
    func float32(_ x: Float) -> Float
}

extension Float8Form {
    static var hasFloat8: Bool { false }
    func float8(_ x: SIMD8<Float>) -> SIMD8<Float> {
        var r = x
        for i in 0..<8 { r[i] = float32(x[i]) }
        return r
    }
}

/// An elementwise function defined for Float and Double (Exp, Sigmoid, ...). Functions that
/// VectorMath computes give their float32 form eight lanes at a time (`float8`, `hasFloat8`
/// true); float32 tensors then run through it, and the scalar Float form is lane 0 of the same
/// code (`float32Lane`), so every path gives the same values.
protocol FloatUnaryFunction: Float8Form {
    func callAsFunction<T: FloatElement>(_ x: T) -> T
}

extension FloatUnaryFunction {
    func float32(_ x: Float) -> Float { self(x) }
}

/// For Float, lane 0 of `vector` (a VectorMath form); for other types, `other`.
@inline(__always)
func float32Lane<T: FloatElement>(_ x: T, _ vector: (SIMD8<Float>) -> SIMD8<Float>, else other: (T) -> T) -> T {
    guard T.self == Float.self else { return other(x) }
    return unsafeBitCast(vector(SIMD8(repeating: unsafeBitCast(x, to: Float.self)))[0], to: T.self)
}

/// An elementwise function defined for every arithmetic type (Abs, Neg, Relu, ...); `float8`
/// as in FloatUnaryFunction (Relu's in-place scalar loop became a store per negative element,
/// a branch that does not vectorise).
protocol NumericUnaryFunction: Float8Form {
    func callAsFunction<T: NumericElement>(_ x: T) -> T
}

extension NumericUnaryFunction {
    func float32(_ x: Float) -> Float { self(x) }
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

/// Elements per thread chunk of the unary loops.
private let unaryChunk = 16_384

/// body(start, count) over n elements in chunks of `unaryChunk`, split across threads.
@inline(__always)
private func unaryChunks(_ n: Int, _ body: (Int, Int) -> Void) {
    Parallel.forRange((n + unaryChunk - 1) / unaryChunk) { chunks in
        let start = chunks.lowerBound * unaryChunk
        body(start, min(chunks.upperBound * unaryChunk, n) - start)
    }
}

/// The same address as a float32 pointer (callers check T is Float).
@inline(__always) func floats<T>(_ p: UnsafePointer<T>) -> UnsafePointer<Float> { UnsafeRawPointer(p).assumingMemoryBound(to: Float.self) }
@inline(__always) func floats<T>(_ p: UnsafeMutablePointer<T>) -> UnsafeMutablePointer<Float> {
    UnsafeMutableRawPointer(p).assumingMemoryBound(to: Float.self)
}

/// out[i] = f(x[i]) over `n` elements, split across threads; `out` may be `x` (the executor's
/// in-place plan). float32 through `f.float8` where the function has it.
@inline(__always)
func unaryFloatLoop<F: FloatUnaryFunction, T: FloatElement>(_ f: F, _ x: UnsafePointer<T>, _ out: UnsafeMutablePointer<T>, _ n: Int) {
    unaryChunks(n) { start, count in
        if T.self == Float.self && F.hasFloat8 {
            float8Loop(f, floats(x + start), floats(out + start), count)
        } else {
            elementLoop(f, x + start, out + start, count)
        }
    }
}

/// The same for a numeric function.
@inline(__always)
func unaryNumericLoop<F: NumericUnaryFunction, T: NumericElement>(_ f: F, _ x: UnsafePointer<T>, _ out: UnsafeMutablePointer<T>, _ n: Int) {
    unaryChunks(n) { start, count in
        if T.self == Float.self && F.hasFloat8 {
            float8Loop(f, floats(x + start), floats(out + start), count)
        } else {
            numericElementLoop(f, x + start, out + start, count)
        }
    }
}

/// The float32 vector loop (a function of its own: loops inside Parallel closures stay scalar).
@inline(never)
func float8Loop<F: Float8Form>(_ f: F, _ x: UnsafePointer<Float>, _ out: UnsafeMutablePointer<Float>, _ n: Int) {
    float8Map(f, x, out, n)
}

/// out[i] = f.float8(x[i]) through `VectorMath.apply` (the tail padded with zeros; `out` may be `x`).
@inline(__always)
func float8Map<F: Float8Form>(_ f: F, _ x: UnsafePointer<Float>, _ out: UnsafeMutablePointer<Float>, _ n: Int) {
    VectorMath.apply(Float8Step(f: f), x, nil, nil, out, n)
}

/// A Float8Form as a VectorStep on its first input.
struct Float8Step<F: Float8Form>: VectorStep {
    let f: F
    @inline(__always)
    func callAsFunction(_ x: SIMD8<Float>, _: SIMD8<Float>, _: SIMD8<Float>) -> SIMD8<Float> { f.float8(x) }
}

/// The scalar loop, with a loop of its own for `out == x`: two pointers to one address fail
/// LLVM's overlap check and the general loop would run scalar.
@inline(never)
func elementLoop<F: FloatUnaryFunction, T: FloatElement>(_ f: F, _ x: UnsafePointer<T>, _ out: UnsafeMutablePointer<T>, _ n: Int) {
    if UnsafePointer(out) == x {
        for i in 0..<n { out[i] = f(out[i]) }
    } else {
        for i in 0..<n { out[i] = f(x[i]) }
    }
}

/// The scalar loop of a numeric function (see elementLoop).
@inline(never)
func numericElementLoop<F: NumericUnaryFunction, T: NumericElement>(_ f: F, _ x: UnsafePointer<T>, _ out: UnsafeMutablePointer<T>, _ n: Int) {
    if UnsafePointer(out) == x {
        for i in 0..<n { out[i] = f(out[i]) }
    } else {
        for i in 0..<n { out[i] = f(x[i]) }
    }
}

struct MapFloat<F: FloatUnaryFunction>: ElementOperation {
    let x: Tensor, f: F
    func float<T: FloatElement>(_ type: T.Type) throws -> Tensor {
        var out = Tensor(uninitialized: T.dtype, shape: x.shape)
        x.uncheckedBufferPointer(as: T.self) { px in
            out.uncheckedMutableBufferPointer(as: T.self) { po in
                guard let x = px.baseAddress, let out = po.baseAddress else { return }
                unaryFloatLoop(f, x, out, po.count)
            }
        }
        return out
    }
}

struct MapNumeric<F: NumericUnaryFunction>: NumericOperation {
    let x: Tensor, f: F
    func numeric<T: NumericElement>(_ type: T.Type) throws -> Tensor {
        var out = Tensor(uninitialized: T.dtype, shape: x.shape)
        x.uncheckedBufferPointer(as: T.self) { px in
            out.uncheckedMutableBufferPointer(as: T.self) { po in
                guard let x = px.baseAddress, let out = po.baseAddress else { return }
                unaryNumericLoop(f, x, out, po.count)
            }
        }
        return out
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
        try broadcastMap(a, b, outDType: .bool, ComparisonElements<F, T>(f: f))
    }
}

/// A comparison of two T as a `BroadcastFunction` (its loops specialise and are split across threads).
struct ComparisonElements<F: ComparisonFunction, T: NumericElement>: BroadcastFunction {
    let f: F
    @inline(__always) func callAsFunction(_ a: T, _ b: T) -> Bool { f(a, b) }
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
        register(opType, since: versions, inPlace: [0], file: file) { ctx in
            let f = try make(ctx)
            return AnyKernel { inputs, _ in [.tensor(try mapFloat(try inputs.tensor(0), f))] }
        }
    }

    /// Registers a numeric elementwise op at each since-version.
    func registerNumericUnary<F: NumericUnaryFunction>(_ opType: String, since versions: [Int], file: String = #filePath,
                                                       _ make: @escaping (NodeContext) throws -> F) {
        register(opType, since: versions, inPlace: [0], file: file) { ctx in
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
