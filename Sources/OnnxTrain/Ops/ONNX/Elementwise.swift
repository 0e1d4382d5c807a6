/// Binary arithmetic with numpy broadcasting, generic over numeric types; half types through Float.
struct BinaryArithmetic: NumericOperation {
    let a: Tensor, b: Tensor
    let op: String
    func callAsFunction<T: NumericElement>(_ type: T.Type) throws -> Tensor {
        switch op {
        case "Add": return try broadcastBinary(a, b, T.self, T.self, T.self, outDType: T.dtype) { T(fromDouble: $0.doubleValue + $1.doubleValue) }
        default: throw KernelError("unknown binary op \(op)")
        }
    }
}

func registerElementwiseOps(_ registry: OpRegistry) {
    registry.register("Add", since: 7) { _ in
        AnyKernel { inputs, _ in
            let a = try inputs.tensor(0), b = try inputs.tensor(1)
            guard a.dtype == .float32, b.dtype == .float32 else {
                return [.tensor(try dispatchNumeric(a.dtype, BinaryArithmetic(a: a, b: b, op: "Add")))]
            }
            return [.tensor(try broadcastBinary(a, b, Float.self, Float.self, Float.self, outDType: .float32) { $0 + $1 })]
        }
    }
    registry.register("Relu", since: 6) { _ in
        AnyKernel { inputs, _ in
            var x = try inputs.tensor(0)
            guard x.dtype == .float32 else { throw KernelError("Relu supports float only so far") }
            x.withUnsafeMutableBufferPointer(as: Float.self) { p in for i in p.indices { p[i] = max(p[i], 0) } }
            return [.tensor(x)]
        }
    }
}
