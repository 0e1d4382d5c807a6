/// QLinearMatMul: the quantized inputs shifted by their zero points, multiplied in Double, then
/// requantized (registered in Quantization.swift's list).

/// QLinearMatMul, since opset 10.
func qLinearMatMulKernel(_ ctx: NodeContext) throws -> Kernel {
    AnyKernel { inputs, _ in
        // a, a_scale, a_zero_point, b, b_scale, b_zero_point, y_scale, y_zero_point
        let a = try inputs.tensor(0), b = try inputs.tensor(3)
        let yzpT = try inputs.optionalTensor(7)
        for i in [1, 4, 6] where try inputs.tensor(i).count != 1 {
            throw KernelError("input \(i): only per-tensor scales are supported")
        }
        let ad = try shiftedToDouble(a, zeroPoint: inputs.optionalTensor(2), axis: a.rank >= 2 ? a.rank - 2 : 0)
        let bd = try shiftedToDouble(b, zeroPoint: inputs.optionalTensor(5), axis: b.rank - 1)
        let acc = try floatMatMul(ad, bd, Double.self)
        let multiplier = try requantizationMultiplier(inputs.tensor(1), inputs.tensor(4), inputs.tensor(6))
        let yzp = Double(try yzpT.map(quantizedValues)?.first ?? 0)
        let outType = yzpT?.dtype ?? a.dtype
        guard let range = quantizedRange(outType) else { throw KernelError("unsupported output type \(outType)") }
        let values = acc.scalars(as: Double.self).map { v -> Float in
            Float(min(max((v * multiplier + yzp).rounded(.toNearestOrEven), Double(range.0)), Double(range.1)))
        }
        return [.tensor(try quantizedTensor(outType, shape: acc.shape, values, saturate: true))]
    }
}
