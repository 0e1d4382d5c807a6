/// Equal, Less, Greater, LessOrEqual and GreaterOrEqual: a bool tensor of the comparison with
/// broadcasting (registered in BinaryMath.swift's list).

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

/// Equal, since opset 7, 11, 13, 19.
func equalKernel(_ ctx: NodeContext) throws -> Kernel {
    AnyKernel { inputs, _ in
        let a = try inputs.tensor(0), b = try inputs.tensor(1)
        if a.dtype == .string && b.dtype == .string { return [.tensor(try equalStrings(a, b))] }
        return [.tensor(try zipComparison(a, b, EqualFunction()))]
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

/// The builder of Less, Greater, LessOrEqual and GreaterOrEqual: `f` elementwise with numpy
/// broadcasting (`zipComparison`).
func comparisonKernel<F: ComparisonFunction>(_ f: F) -> KernelFactory {
    { _ in AnyKernel { inputs, _ in [.tensor(try zipComparison(try inputs.tensor(0), try inputs.tensor(1), f))] } }
}
