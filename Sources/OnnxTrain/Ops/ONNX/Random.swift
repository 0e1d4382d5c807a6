import Foundation

/// Random generators: RandomNormal, RandomUniform, their *Like forms, Bernoulli, Multinomial.
/// A `seed` attribute gives a generator of its own per kernel run (so runs repeat); otherwise
/// the session's seedable generator is used. Samples cannot match numpy's streams bit for bit.
func registerRandomOps(_ registry: OpRegistry) {
    registry.register("RandomNormal", since: 1, randomKernel(normal: true, like: false))
    registry.register("RandomNormalLike", since: 1, randomKernel(normal: true, like: true))
    registry.register("RandomUniform", since: 1, randomKernel(normal: false, like: false))
    registry.register("RandomUniformLike", since: 1, randomKernel(normal: false, like: true))
    registry.register("Bernoulli", since: 15, bernoulliKernel)
    registry.register("Multinomial", since: 7, multinomialKernel)
}

/// The RandomNormal (`normal`) or RandomUniform kernel builder; the *Like forms (`like`) take
/// the shape, and the type unless `dtype` is given, from input 0.
func randomKernel(normal: Bool, like: Bool) -> KernelFactory {
    { ctx in
        let seed = try ctx.float("seed")
        let dtypeCode = try ctx.int("dtype")
        let shape = like ? nil : try ctx.ints("shape")
        let a = Double(try ctx.float(normal ? "mean" : "low", default: 0))
        let b = Double(try ctx.float(normal ? "scale" : "high", default: 1))
        if !like { guard shape != nil else { throw KernelError("attribute 'shape' is required") } }
        return AnyKernel { inputs, context in
            let template = like ? try inputs.tensor(0) : nil
            let outShape = template?.shape ?? shape ?? []
            try checkShape(outShape, "shape")
            let dtype = try dtypeCode.map { try dtypeFromCode($0) } ?? template?.dtype ?? .float32
            let n = Tensor.elementCount(outShape)
            var values = [Double](repeating: 0, count: n)
            context.state.withRandom(seed: seed.map { UInt64($0.bitPattern) }) { rng in
                for i in 0..<n {
                    if normal {
                        // Box-Muller on two uniforms in (0, 1].
                        let u1 = 1 - rng.nextDouble(), u2 = rng.nextDouble()
                        values[i] = a + b * (-2 * log(u1)).squareRoot() * cos(2 * Double.pi * u2)
                    } else {
                        values[i] = a + (b - a) * rng.nextDouble()
                    }
                }
            }
            return [.tensor(try Tensor(dtype: dtype, shape: outShape, doubles: values))]
        }
    }
}

/// Bernoulli, since opset 15.
func bernoulliKernel(_ ctx: NodeContext) throws -> Kernel {
    let seed = try ctx.float("seed")
    let dtypeCode = try ctx.int("dtype")
    return AnyKernel { inputs, context in
        let p = try inputs.tensor(0)
        let dtype = try dtypeCode.map { try dtypeFromCode($0) } ?? p.dtype
        let probabilities = try p.doubles()
        let values = context.state.withRandom(seed: seed.map { UInt64($0.bitPattern) }) { rng in
            probabilities.map { rng.nextDouble() < $0 ? 1.0 : 0.0 }
        }
        return [.tensor(try Tensor(dtype: dtype, shape: p.shape, doubles: values))]
    }
}

/// Multinomial, since opset 7.
func multinomialKernel(_ ctx: NodeContext) throws -> Kernel {
    let seed = try ctx.float("seed")
    let samples = try ctx.int("sample_size", default: 1)
    guard samples >= 0 else { throw KernelError("sample_size must be nonnegative") }
    let dtype = try dtypeFromCode(try ctx.int("dtype", default: Int(DType.int32.rawValue)))
    return AnyKernel { inputs, context in
        let x = try inputs.tensor(0)
        guard x.rank == 2 else { throw KernelError("input must be [batch, classes], got \(x.shape)") }
        let logits = try x.doubles()
        let (batch, classes) = (x.shape[0], x.shape[1])
        try checkShape([batch, samples], "output")
        var out = [Double]()
        context.state.withRandom(seed: seed.map { UInt64($0.bitPattern) }) { rng in
            for b in 0..<batch {
                // Unnormalized log-probabilities: sample from softmax by inverting the cumulative sum.
                let row = logits[(b * classes)..<((b + 1) * classes)]
                let m = row.max() ?? 0
                var cumulative = [Double]()
                var total = 0.0
                for v in row { total += exp(v - m); cumulative.append(total) }
                for _ in 0..<samples {
                    let u = rng.nextDouble() * total
                    out.append(Double(cumulative.firstIndex { u < $0 } ?? classes - 1))
                }
            }
        }
        return [.tensor(try Tensor(dtype: dtype, shape: [batch, samples], doubles: out))]
    }
}
