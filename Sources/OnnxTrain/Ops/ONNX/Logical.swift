/// And, Or, Xor and Not on bool tensors (registered in BinaryMath.swift's list; opset 1's
/// broadcast forms of And, Or and Xor go through legacyBinaryKernel there).

/// Logical And/Or/Xor on bool tensors with broadcasting.
func logical(_ a: Tensor, _ b: Tensor, _ f: (Bool, Bool) -> Bool) throws -> Tensor {
    guard a.dtype == .bool, b.dtype == .bool else { throw KernelError("inputs must be bool, got \(a.dtype) and \(b.dtype)") }
    return try broadcastBinary(a, b, Bool.self, Bool.self, Bool.self, outDType: .bool, f)
}

/// The And/Or/Xor kernel builder (opset 7+, broadcasting bool tensors).
func logicalKernel(_ f: @escaping (Bool, Bool) -> Bool) -> KernelFactory {
    { _ in AnyKernel { inputs, _ in [.tensor(try logical(try inputs.tensor(0), try inputs.tensor(1), f))] } }
}

/// Not, since opset 1.
func notKernel(_ ctx: NodeContext) throws -> Kernel {
    AnyKernel { inputs, _ in
        let x = try inputs.tensor(0)
        guard x.dtype == .bool else { throw KernelError("Not needs a bool input, got \(x.dtype)") }
        return [.tensor(mapElements(x, to: .bool) { (v: Bool) in !v })]
    }
}
