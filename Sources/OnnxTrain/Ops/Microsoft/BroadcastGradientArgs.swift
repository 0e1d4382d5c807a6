/// BroadcastGradientArgs (com.microsoft v1; registered in TrainingShapeOps.swift's list).

/// BroadcastGradientArgs(a_shape, b_shape) → a_axes, b_axes: the output axes each operand was
/// broadcast along, found by walking the right-aligned shapes from the last dim; in descending order.
struct BroadcastGradientArgsKernel: Kernel {
    func run(_ inputs: [Value?], _ context: ExecutionContext) throws -> [Value?] {
        let a = try indexValues(try inputs.tensor(0), "a_shape"), b = try indexValues(try inputs.tensor(1), "b_shape")
        var aAxes: [Int] = [], bAxes: [Int] = []
        var i = a.count - 1, j = b.count - 1, k = max(a.count, b.count) - 1
        while i >= 0 && j >= 0 {
            if a[i] != b[j] {
                if a[i] == 1 { aAxes.append(k) } else if b[j] == 1 { bAxes.append(k) } else {
                    throw KernelError("shapes \(a) and \(b) do not broadcast (dims \(a[i]) and \(b[j]) at axis \(k))")
                }
            }
            i -= 1; j -= 1; k -= 1
        }
        while i >= 0 { bAxes.append(k); i -= 1; k -= 1 }
        while j >= 0 { aAxes.append(k); j -= 1; k -= 1 }
        return [.tensor(int64Tensor(aAxes)), .tensor(int64Tensor(bAxes))]
    }
}
