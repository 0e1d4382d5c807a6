/// Scale (com.microsoft v1; registered in TrainingShapeOps.swift's list).

/// Scale(input, scale: scalar float/double/int32/int64; scale_down 0) → input·scale, or input/scale.
struct ScaleKernel: Kernel {
    let scaleDown: Bool
    func run(_ inputs: [Value?], _ context: ExecutionContext) throws -> [Value?] {
        let x = try inputs.tensor(0), s = try inputs.tensor(1)
        guard s.count == 1, let v = s.scalarDouble() else { throw KernelError("scale must hold one number, got \(s)") }
        let factor = scaleDown ? 1 / v : v
        return [.tensor(try mapFloat(x, ScaleFunction(factor: factor)))]
    }
}
