import Foundation

/// The rest of onnxruntime 1.19.2's CPU training kernels that a graph can use outside ORTModule
/// (docs/TRAINING_KERNELS.md lists them all, with those left out and why):
///   PassThrough(x...) → x...: a barrier; the outputs are the inputs.
///   Group(x...) → bool [1] true: ties values together so they are computed.
///   RecordEvent(event_id, x...) / WaitEvent(event_id, x...) → x...: pipeline-parallel
///     synchronisation points; a single-stage run has nothing to wait for, so they pass through.
///   ReduceAllL2(x...) → float scalar √(Σ over every tensor Σ x²) (the global gradient norm).
///   ShrunkenGather(data, indices; axis) → Gather(data, indices) (padding elimination's gather).
///   FakeQuant(x, scale, zero_point; quant_min 0, quant_max 255) → fake_quantized, mask:
///     q = round_half_even(x / scale + zero_point); mask = quant_min ≤ q ≤ quant_max;
///     fake_quantized = (clamp(q, quant_min, quant_max) − zero_point) · scale.
///   FakeQuantGrad(dY, mask) → mask ? dY : 0.

struct FakeQuantKernel: Kernel {
    let quantMin: Double, quantMax: Double

    init(_ ctx: NodeContext) throws {
        quantMin = Double(try ctx.int("quant_min", default: 0))
        quantMax = Double(try ctx.int("quant_max", default: 255))
        guard quantMin <= quantMax else { throw KernelError("quant_min \(quantMin) must not exceed quant_max \(quantMax)") }
    }

    struct Op: FloatOperation {
        let x: Tensor, scale: Double, zeroPoint: Double, quantMin: Double, quantMax: Double
        func callAsFunction<T: FloatElement>(_ type: T.Type) throws -> [Tensor] {
            var y = Tensor(uninitialized: T.dtype, shape: x.shape)
            var mask = [Bool](repeating: false, count: x.count)
            // In the element type, as onnxruntime rounds x / scale + zero_point in float.
            let s = T(fromDouble: scale), z = T(fromDouble: zeroPoint)
            let lo = T(fromDouble: quantMin), hi = T(fromDouble: quantMax)
            try x.withUnsafeBufferPointer(as: T.self) { px in
                y.uncheckedMutableBufferPointer(as: T.self) { py in
                    for i in 0..<px.count {
                        let q = (px[i] / s + z).rounded(.toNearestOrEven)
                        mask[i] = q >= lo && q <= hi
                        py[i] = (min(max(q, lo), hi) - z) * s
                    }
                }
            }
            return [y, Tensor(shape: x.shape, scalars: mask)]
        }
    }

    func run(_ inputs: [Value?], _ context: ExecutionContext) throws -> [Value?] {
        let x = try inputs.tensor(0)
        guard let scale = try inputs.tensor(1).scalarDouble(), let zeroPoint = try inputs.tensor(2).scalarDouble(),
              try inputs.tensor(1).count == 1, try inputs.tensor(2).count == 1 else {
            throw KernelError("scale and zero_point must be scalars")
        }
        guard scale != 0 else { throw KernelError("scale must not be 0") }
        // Half inputs compute in float32; the quantized output rounds back (the mask is bool).
        let wide = x.widenedToFloat()
        return try dispatchFloat(wide.dtype, Op(x: wide, scale: scale, zeroPoint: zeroPoint, quantMin: quantMin, quantMax: quantMax))
            .map { .tensor($0.narrowed(to: x.dtype)) }
    }
}

func registerTrainingMiscOps(_ registry: OpRegistry) {
    let ms = "com.microsoft"
    registry.register("PassThrough", domain: ms, since: 1) { _ in AnyKernel { inputs, _ in inputs } }
    registry.register("Group", domain: ms, since: 1) { _ in AnyKernel { _, _ in [.tensor(Tensor(shape: [1], scalars: [true]))] } }
    for op in ["RecordEvent", "WaitEvent"] {
        registry.register(op, domain: ms, since: 1) { _ in
            AnyKernel { inputs, _ in
                let id = try inputs.tensor(0)
                guard id.dtype == .int64, id.count == 1 else { throw KernelError("event_id must be an int64 scalar, got \(id)") }
                return Array(inputs.dropFirst())
            }
        }
    }
    registry.register("ReduceAllL2", domain: ms, since: 1, reduceAllL2Kernel)
    registry.register("ShrunkenGather", domain: ms, since: 1, shrunkenGatherKernel)
    registry.register("FakeQuant", domain: ms, since: 1) { ctx in try FakeQuantKernel(ctx) }
    registry.register("FakeQuantGrad", domain: ms, since: 1, fakeQuantGradKernel)
}

/// ReduceAllL2 (com.microsoft), since opset 1.
func reduceAllL2Kernel(_ ctx: NodeContext) throws -> Kernel {
    AnyKernel { inputs, _ in
        var sum = 0.0
        for i in inputs.indices {
            let t = try inputs.tensor(i)
            guard t.dtype.isFloatingPoint else { throw KernelError("input \(i) is tensor(\(t.dtype)), a float tensor is expected") }
            for k in 0..<t.count { let v = t.scalarDouble(at: k) ?? 0; sum += v * v }
        }
        return [.tensor(Tensor(shape: [], scalars: [Float(sum.squareRoot())]))]
    }
}

/// ShrunkenGather (com.microsoft), since opset 1: Gather's kernel (the shrinking is a hint for
/// onnxruntime's memory planner).
func shrunkenGatherKernel(_ ctx: NodeContext) throws -> Kernel {
    try gatherKernel(ctx)
}

/// FakeQuantGrad (com.microsoft), since opset 1.
func fakeQuantGradKernel(_ ctx: NodeContext) throws -> Kernel {
    AnyKernel { inputs, _ in
        let dy = try inputs.tensor(0), mask = try inputs.tensor(1)
        guard mask.dtype == .bool else { throw KernelError("gradient_mask must be bool, got \(mask.dtype)") }
        try requireSameShape(dy, mask, "dY", "gradient_mask")
        let factors = floatTensor(dy.dtype, shape: mask.shape, mask.uncheckedBufferPointer(as: Bool.self) { $0.map { $0 ? 1 : 0 } })
        _ = try commonElementType([dy], names: ["dY"], floatOnly: true)
        return [.tensor(try zipNumeric(dy, factors, MulFunction()))]
    }
}
