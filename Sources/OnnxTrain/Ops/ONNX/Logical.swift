/// And, Or, Xor and Not on bool tensors (registered in BinaryMath.swift's list; opset 1's
/// broadcast forms of And, Or and Xor go through legacyBinaryKernel there).

/// And, Or or Xor of two bools.
enum LogicalOperator {
    case and, or, xor
    @inline(__always) func callAsFunction(_ a: Bool, _ b: Bool) -> Bool {
        switch self {
        case .and: a && b
        case .or: a || b
        case .xor: a != b
        }
    }
}

extension LogicalOperator: BroadcastFunction {
    typealias A = Bool
    typealias B = Bool
    typealias R = Bool
}

/// Logical And/Or/Xor on bool tensors with broadcasting, split across threads.
func logical(_ a: Tensor, _ b: Tensor, _ op: LogicalOperator) throws -> Tensor {
    guard a.dtype == .bool, b.dtype == .bool else { throw KernelError("inputs must be bool, got \(a.dtype) and \(b.dtype)") }
    return try broadcastMap(a, b, outDType: .bool, op)
}

/// The And/Or/Xor kernel builder (opset 7+, broadcasting bool tensors).
func logicalKernel(_ op: LogicalOperator) -> KernelFactory {
    { _ in AnyKernel { inputs, _ in [.tensor(try logical(try inputs.tensor(0), try inputs.tensor(1), op))] } }
}

/// Not, since opset 1.
func notKernel(_ ctx: NodeContext) throws -> Kernel {
    AnyKernel { inputs, _ in
        let x = try inputs.tensor(0)
        guard x.dtype == .bool else { throw KernelError("Not needs a bool input, got \(x.dtype)") }
        return [.tensor(mapElements(x, to: .bool) { (v: Bool) in !v })]
    }
}
