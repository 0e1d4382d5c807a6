/// SGDOptimizerV2 (in place) and the legacy SGDOptimizer (com.microsoft); TrainingOptimizers.swift
/// registers them.

/// w ← w + (−lr)·g in the weights' type, as onnxruntime's Eigen expression rounds it (the product
/// first, then the sum); a gradient of another float type is converted first.
private struct SGDStep: InPlaceBody {
    let g: Tensor
    let lr: Float
    func callAsFunction<T: FloatElement>(_ w: UnsafeMutableBufferPointer<T>) throws {
        guard let pw = w.baseAddress else { return }
        guard g.dtype.isFloatingPoint else { throw KernelError("gradients must be float tensors, got \(g.dtype)") }
        let grad = g.dtype == T.dtype ? g : try g.converted(toFloat: T.dtype)
        let scale = T(-lr)
        try grad.withUnsafeBufferPointer(as: T.self) { pg in
            guard let pg = pg.baseAddress else { return }
            Parallel.forRange(w.count, minimumChunk: 1 << 15) { r in
                sgdUpdate(pw + r.lowerBound, pg + r.lowerBound, r.count, scale)
            }
        }
    }
}

/// w[0..<n] += scale·g[0..<n] (a function of its own so the loop vectorises).
@inline(never)
private func sgdUpdate<T: FloatElement>(_ w: UnsafeMutablePointer<T>, _ g: UnsafePointer<T>, _ n: Int, _ scale: T) {
    for i in 0..<n { w[i] = w[i] + scale * g[i] }
}

/// SGDOptimizerV2(lr, weights, gradients, update_signal?) → update_completed (bool, lr's shape),
/// updated_weights? (alias). w ← w − lr·g unless update_signal is false.
struct SGDOptimizerV2Kernel: Kernel {
    func run(_ inputs: [Value?], _ context: ExecutionContext) throws -> [Value?] {
        let lrT = try inputs.tensor(0)
        let lr = try learningRate(lrT, "lr")
        let weights = try sequenceTensors(inputs, 1, "weights"), grads = try sequenceTensors(inputs, 2, "gradients")
        try checkGroups([("weights", weights), ("gradients", grads)])
        if try boolFlag(try inputs.optionalTensor(3), "update_signal") == false {
            return [.tensor(Tensor(shape: lrT.shape, scalars: [false])), inputs[1]]
        }
        for i in 0..<weights.count {
            try inPlace(weights[i], "weights[\(i)]", SGDStep(g: grads[i], lr: Float(lr)))
        }
        return [.tensor(Tensor(shape: lrT.shape, scalars: [true])), inputs[1]]
    }
}

/// Legacy SGDOptimizer(ETA, W, G) → NW = W − η·G, NG = −η·G (both optional, new tensors).
struct SGDOptimizerKernel: Kernel {
    func run(_ inputs: [Value?], _ context: ExecutionContext) throws -> [Value?] {
        let eta = try learningRate(try inputs.tensor(0), "ETA")
        let w = try inputs.tensor(1), g = try inputs.tensor(2)
        try requireSameShape(w, g, "W", "G")
        _ = try commonElementType([w, g], names: ["W", "G"], floatOnly: true)
        let nw = try zipFloat(w, g, AddScaledFunction(scale: -eta))
        let ng = try mapFloat(g, ScaleFunction(factor: -eta))
        return [.tensor(nw), .tensor(ng)]
    }
}
