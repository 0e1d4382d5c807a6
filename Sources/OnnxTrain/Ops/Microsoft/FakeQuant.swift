import Foundation

/// FakeQuant and FakeQuantGrad (com.microsoft v1): quantize-dequantize in the forward, the
/// straight-through gradient masked to the unclipped range in the backward.
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

    struct Op: ElementOperation {
        let x: Tensor, scale: Double, zeroPoint: Double, quantMin: Double, quantMax: Double
        func float<T: FloatElement>(_ type: T.Type) throws -> [Tensor] {
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
        return try dispatch(wide.dtype, Op(x: wide, scale: scale, zeroPoint: zeroPoint, quantMin: quantMin, quantMax: quantMax))
            .map { .tensor($0.narrowed(to: x.dtype)) }
    }
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
