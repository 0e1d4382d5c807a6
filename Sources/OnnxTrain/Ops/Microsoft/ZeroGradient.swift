#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// ZeroGradient (com.microsoft v1; registered in TrainingShapeOps.swift's list).

/// ZeroGradient(old_gradient, reset_signal) → zeros, written into old_gradient's storage (the
/// output aliases input 0, as in onnxruntime's kernel).
struct ZeroGradientKernel: Kernel {
    func run(_ inputs: [Value?], _ context: ExecutionContext) throws -> [Value?] {
        let g = try inputs.tensor(0)
        guard g.dtype != .string else { throw KernelError("old_gradient must not be a string tensor") }
        memset(g.storage.bytes, 0, g.byteCount)
        return [.tensor(g)]
    }
}
