/// BitShift, BitwiseAnd, BitwiseOr, BitwiseXor and BitwiseNot on integer tensors (registered in
/// BinaryMath.swift's list).

/// Bitwise ops and shifts, on unsigned and signed integers.
struct BitwiseOperation: ElementOperation {
    enum Kind { case and, or, xor, shiftLeft, shiftRight }
    let a: Tensor, b: Tensor, kind: Kind

    func integer<T: IntegerElement>(_ type: T.Type) throws -> Tensor {
        switch kind {
        case .and: return try broadcastBinary(a, b, T.self, T.self, T.self, outDType: T.dtype) { $0 & $1 }
        case .or: return try broadcastBinary(a, b, T.self, T.self, T.self, outDType: T.dtype) { $0 | $1 }
        case .xor: return try broadcastBinary(a, b, T.self, T.self, T.self, outDType: T.dtype) { $0 ^ $1 }
        // Swift's smart shifts give 0 for amounts of the bit width or more (C leaves them undefined).
        case .shiftLeft: return try broadcastBinary(a, b, T.self, T.self, T.self, outDType: T.dtype) { $0 << $1 }
        case .shiftRight: return try broadcastBinary(a, b, T.self, T.self, T.self, outDType: T.dtype) { $0 >> $1 }
        }
    }
}

func bitwise(_ a: Tensor, _ b: Tensor, _ kind: BitwiseOperation.Kind) throws -> Tensor {
    try requireSameType(a, b)
    guard !a.dtype.isFloatingPoint, a.dtype != .bool else { throw KernelError("bitwise ops need integer inputs, got \(a.dtype)") }
    return try dispatch(a.dtype, BitwiseOperation(a: a, b: b, kind: kind))
}

/// The BitwiseAnd/Or/Xor kernel builder (opset 18).
func bitwiseKernel(_ kind: BitwiseOperation.Kind) -> KernelFactory {
    { _ in AnyKernel { inputs, _ in [.tensor(try bitwise(try inputs.tensor(0), try inputs.tensor(1), kind))] } }
}

/// BitShift, since opset 11.
func bitShiftKernel(_ ctx: NodeContext) throws -> Kernel {
    let direction = try ctx.string("direction", default: "")
    guard direction == "LEFT" || direction == "RIGHT" else {
        throw KernelError("attribute 'direction' must be LEFT or RIGHT, got '\(direction)'")
    }
    let kind: BitwiseOperation.Kind = direction == "LEFT" ? .shiftLeft : .shiftRight
    return AnyKernel { inputs, _ in [.tensor(try bitwise(try inputs.tensor(0), try inputs.tensor(1), kind))] }
}

/// BitwiseNot, since opset 18.
func bitwiseNotKernel(_ ctx: NodeContext) throws -> Kernel {
    AnyKernel { inputs, _ in
        let x = try inputs.tensor(0)
        guard x.dtype.isInteger else { throw KernelError("BitwiseNot needs an integer input, got \(x.dtype)") }
        // ~x on the raw bytes is the same for every integer width.
        let bytes = Tensor(dtype: .uint8, shape: [x.byteCount], storage: x.storage)
        let flipped = mapElements(bytes, to: .uint8) { (v: UInt8) in ~v }
        return [.tensor(Tensor(dtype: x.dtype, shape: x.shape, storage: flipped.storage))]
    }
}
