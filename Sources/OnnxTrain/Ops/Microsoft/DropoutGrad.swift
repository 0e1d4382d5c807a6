/// DropoutGrad(dy, mask: bool, ratio?, training_mode?) → dx = mask ? dy/(1−ratio) : 0 (com.microsoft v1).
/// ratio defaults to 0.5; ratio 0 passes dy through and ignores the mask; training_mode is
/// ignored, as in onnxruntime's CPU kernel.
struct DropoutGradKernel: Kernel {
    func run(_ inputs: [Value?], _ context: ExecutionContext) throws -> [Value?] {
        let dy = try inputs.tensor(0), mask = try inputs.tensor(1)
        guard mask.dtype == .bool else { throw KernelError("mask must be bool, got \(mask.dtype)") }
        try requireSameShape(dy, mask, "dy", "mask")
        var ratio = 0.5
        if let r = try inputs.optionalTensor(2) {
            guard r.dtype.isFloatingPoint, let v = r.scalarDouble() else { throw KernelError("ratio must be a float scalar") }
            ratio = v
        }
        guard ratio >= 0 && ratio < 1 else { throw KernelError("ratio \(ratio) must be in [0, 1)") }
        if ratio == 0 { return [.tensor(dy)] }
        guard dy.dtype.isFloatingPoint else { throw KernelError("dy must be a float tensor, got \(dy.dtype)") }
        // The per-element factor mask/(1−ratio), in dy's type, multiplied in.
        let scale = 1 / (1 - ratio)
        let factors = floatTensor(dy.dtype, shape: mask.shape, try mask.withUnsafeBufferPointer(as: Bool.self) { $0.map { $0 ? scale : 0 } })
        return [.tensor(try zipNumeric(dy, factors, MulFunction()))]
    }
}

func registerDropoutGradOps(_ registry: OpRegistry) {
    registry.register("DropoutGrad", domain: "com.microsoft", since: 1) { _ in DropoutGradKernel() }
}
