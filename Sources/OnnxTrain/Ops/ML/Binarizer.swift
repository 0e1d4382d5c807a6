/// Binarizer (ai.onnx.ml 1): Y = X > threshold ? 1 : 0, in X's element type (NaN gives 0).
func registerBinarizer(_ registry: OpRegistry) {
    registry.register("Binarizer", domain: mlDomain, since: 1, binarizerKernel)
}

/// Binarizer (ai.onnx.ml), since opset 1.
func binarizerKernel(_ ctx: NodeContext) throws -> Kernel {
    let threshold = Double(try ctx.float("threshold", default: 0))
    return AnyKernel { inputs, _ in
        let x = try inputs.tensor(0)
        let values = try x.doubles().map { $0 > threshold ? 1.0 : 0.0 }
        return [.tensor(try Tensor(dtype: x.dtype, shape: x.shape, doubles: values))]
    }
}
