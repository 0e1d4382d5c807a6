/// CumSum and CumProd along one axis, optionally exclusive and/or reversed.
struct CumulativeOperation: NumericOperation {
    let x: Tensor, axis: Int, exclusive: Bool, reverse: Bool, product: Bool

    func numeric<T: NumericElement>(_ type: T.Type) throws -> Tensor {
        // x, out: [outer, n, inner]; the scan runs along n.
        let n = x.shape[axis]
        let outer = x.shape[..<axis].reduce(1, *), inner = x.shape[(axis + 1)...].reduce(1, *)
        var out = Tensor(uninitialized: T.dtype, shape: x.shape)
        let start: T = product ? T.one : 0 as T
        let product = self.product, exclusive = self.exclusive, reverse = self.reverse
        try x.withUnsafeBufferPointer(as: T.self) { px in
            out.uncheckedMutableBufferPointer(as: T.self) { po in
                for o in 0..<outer {
                    for i in 0..<inner {
                        var acc = start
                        for step in 0..<n {
                            let k = reverse ? n - 1 - step : step
                            let at = (o * n + k) * inner + i
                            let v = px[at]
                            if exclusive { po[at] = acc }
                            acc = product ? T.mul(acc, v) : T.add(acc, v)
                            if !exclusive { po[at] = acc }
                        }
                    }
                }
            }
        }
        return out
    }
}

/// The CumSum (`product` false) or CumProd kernel builder: `exclusive` and `reverse` read once.
func cumulativeKernel(product: Bool) -> KernelFactory {
    { ctx in
        let exclusive = try ctx.int("exclusive", default: 0) != 0
        let reverse = try ctx.int("reverse", default: 0) != 0
        return AnyKernel { inputs, _ in
            let x = try inputs.tensor(0), axisTensor = try inputs.tensor(1)
            guard let axes = axisTensor.intValues(), axes.count == 1 else {
                throw KernelError("axis must be an integer scalar, got \(axisTensor)")
            }
            let axis = try normalizeAxis(axes[0], rank: x.rank)
            return [.tensor(try computingHalfInFloat([x]) { wide in
                try dispatch(wide[0].dtype, CumulativeOperation(x: wide[0], axis: axis, exclusive: exclusive,
                                                                         reverse: reverse, product: product))
            })]
        }
    }
}

func registerCumulativeOps(_ registry: OpRegistry) {
    registry.register("CumSum", since: [11, 14], cumulativeKernel(product: false))
    registry.register("CumProd", since: [26], cumulativeKernel(product: true))

    // Gradient rules (GradientContext):
    registry.registerGradient("CumSum", cumSumGradient)
}

/// The gradient rule of CumSum.
func cumSumGradient(_ g: GradientContext) throws -> [String?] {
    guard g.needs(0) else { return [nil] }
    let reverse = (g.node.int("reverse") ?? 0) == 0 ? 1 : 0
    return [g.op("CumSum", [try g.requiredDY(), g.input(1)],
                 attributes: ["reverse": .int(reverse), "exclusive": .int(g.node.int("exclusive") ?? 0)])]
}
