/// ConvInteger and QLinearConv: integer convolutions through the float convolution in Double
/// (exact for the integer products), zero points subtracted first.

/// Rounds half to even (as onnxruntime's nearbyint) and saturates to the integer type `dtype`.
func saturatingRound(_ v: Double, to dtype: DType) -> Double {
    let r = v.rounded(.toNearestOrEven)
    let (lo, hi): (Double, Double)
    switch dtype {
    case .uint8: (lo, hi) = (0, 255)
    case .int8: (lo, hi) = (-128, 127)
    case .uint16: (lo, hi) = (0, 65535)
    case .int16: (lo, hi) = (-32768, 32767)
    case .uint4: (lo, hi) = (0, 15)
    case .int4: (lo, hi) = (-8, 7)
    case .int32: (lo, hi) = (-2147483648, 2147483647)
    default: (lo, hi) = (-Double.infinity, .infinity)
    }
    return min(max(r, lo), hi)
}

/// A tensor of integer type `dtype` from Doubles that already hold integer values in range.
func integerTensor(_ dtype: DType, shape: [Int], _ values: [Double]) throws -> Tensor {
    switch dtype {
    case .uint8, .uint4: return Tensor(dtype: dtype, shape: shape, storage: Tensor(shape: shape, scalars: values.map { UInt8($0) }).storage)
    case .int8, .int4: return Tensor(dtype: dtype, shape: shape, storage: Tensor(shape: shape, scalars: values.map { Int8($0) }).storage)
    case .uint16: return Tensor(shape: shape, scalars: values.map { UInt16($0) })
    case .int16: return Tensor(shape: shape, scalars: values.map { Int16($0) })
    case .int32: return Tensor(shape: shape, scalars: values.map { Int32($0) })
    default: throw KernelError("unsupported quantized type \(dtype)")
    }
}

/// ConvInteger, since opset 10.
func convIntegerKernel(_ ctx: NodeContext) throws -> Kernel {
    let attributes = try ConvAttributes(ctx)
    return AnyKernel { inputs, _ in
        // Integers minus zero points as doubles: exact, and padding reads as the zero point.
        let x = try shiftedToDouble(inputs.tensor(0), zeroPoint: inputs.optionalTensor(2), axis: nil)
        let w = try inputs.tensor(1)
        let wd = try shiftedToDouble(w, zeroPoint: inputs.optionalTensor(3), axis: 0)
        let g = try attributes.geometry(x: x, w: wd)
        return [.tensor(doubleToInt32(try convolution(x, wd, bias: nil, group: attributes.group, geometry: g, Double.self)))]
    }
}

/// QLinearConv, since opset 10.
func qLinearConvKernel(_ ctx: NodeContext) throws -> Kernel {
    let attributes = try ConvAttributes(ctx)
    return AnyKernel { inputs, _ in
        // inputs: x, x_scale, x_zero_point, w, w_scale, w_zero_point, y_scale, y_zero_point, B
        let x = try shiftedToDouble(inputs.tensor(0), zeroPoint: inputs.optionalTensor(2), axis: nil)
        let w = try inputs.tensor(3)
        let wd = try shiftedToDouble(w, zeroPoint: inputs.optionalTensor(5), axis: 0)
        let xs = try inputs.tensor(1).doubles(), ws = try inputs.tensor(4).doubles(), ys = try inputs.tensor(6).doubles()
        let yzpTensor = try inputs.optionalTensor(7)
        let yzp = try yzpTensor.map { try $0.doubles() } ?? [0]
        let outType = try yzpTensor?.dtype ?? inputs.tensor(0).dtype
        let bias = try inputs.optionalTensor(8).map { try shiftedToDouble($0, zeroPoint: nil, axis: nil) }
        let g = try attributes.geometry(x: x, w: wd)
        let acc = try convolution(x, wd, bias: bias, group: attributes.group, geometry: g, Double.self)
        let m = acc.shape[1], P = g.outputSize
        guard xs.count == 1, ys.count == 1, yzp.count == 1, ws.count == 1 || ws.count == m else {
            throw KernelError("QLinearConv scales must be scalars (w_scale may be per output channel)")
        }
        let a = acc.scalars(as: Double.self)
        var out = [Double](repeating: 0, count: a.count)
        for i in 0..<a.count {
            let o = (i / P) % m
            // x_scale·w_scale / y_scale in float32, as the ONNX reference computes it.
            let scale = Double(Float(xs[0]) * Float(ws[ws.count == 1 ? 0 : o]) / Float(ys[0]))
            out[i] = saturatingRound(a[i] * scale + yzp[0], to: outType)
        }
        return [.tensor(try integerTensor(outType, shape: acc.shape, out))]
    }
}
