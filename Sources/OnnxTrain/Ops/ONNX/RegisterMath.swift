/// Elementwise math, activations, reductions, softmax and casts. Each family file registers its
/// ops' kernels and gradient rules.
func registerMathOps(_ registry: OpRegistry) {
    registerBinaryMathOps(registry)     // BinaryMath.swift: arithmetic, bitwise, comparison, logical, Where, variadic
    registerUnaryMathOps(registry)      // UnaryMath.swift: Abs ... Erf, IsNaN, IsInf, Clip
    registerActivationOps(registry)     // Activations.swift
    registerReduceOps(registry)         // Reduce.swift
    registerArgMinMaxOps(registry)      // ArgMinMax.swift
    registerCumulativeOps(registry)     // CumSum.swift: CumSum, CumProd
    registerTopKOps(registry)           // TopK.swift
    registerSoftmaxOps(registry)        // Softmax.swift: Softmax, LogSoftmax, Hardmax
    registerCastOps(registry)           // Cast.swift: Cast, CastLike, Tensor.cast(to:)
}
