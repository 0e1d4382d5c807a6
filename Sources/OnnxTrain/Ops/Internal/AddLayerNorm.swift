/// AddLayerNormalization (onnx-train's internal domain, written only by the `AddLayerNormFusion`
/// pass into a session's compiled graph, never into a saved model): a transformer's residual Add
/// and the LayerNormalization of its sum in one pass over the rows (onnxruntime's
/// SkipLayerNormalization).
///
/// Inputs: A, B (one shape), Scale, B_ln (optional) of the normalized shape's size. Attributes:
/// `axis`, `epsilon` (as LayerNormalization's). Outputs: Y = LayerNormalization(A + B), and
/// optionally the sum A + B (a pre-LN block's residual stream reads it). Each row's sum is made and
/// normalized while it is in cache: the Add's pass over the tensor and LayerNormalization's re-read
/// of its output go. The sum is A + B rounded once and the row is normalized by the very function
/// LayerNormalization runs (`layerNormRow`), so Y and the sum are bit for bit the two ops' outputs.
/// Inputs whose shapes differ at run time (the fusion saw them equal) run the two ops one after
/// the other.
struct AddLayerNormKernel: Kernel {
    let axis: Int, epsilon: Double
    /// Whether the node names its second output (else each row's sum goes through a scratch row).
    let keepsSum: Bool

    init(_ ctx: NodeContext) throws {
        axis = try ctx.int("axis", default: -1)
        epsilon = Double(try ctx.float("epsilon", default: 1e-5))
        keepsSum = ctx.hasOutput(1)
    }

    func run(_ inputs: [Value?], _ context: ExecutionContext) throws -> [Value?] {
        let a = try inputs.tensor(0), b = try inputs.tensor(1)
        let scale = try inputs.tensor(2), bias = try inputs.optionalTensor(3)
        guard a.dtype == .float32 || a.dtype == .float64, b.dtype == a.dtype, scale.dtype == a.dtype, bias.map({ $0.dtype == a.dtype }) ?? true else {
            throw KernelError("AddLayerNormalization computes float32 or float64 of one type, got \(a.dtype), \(b.dtype), \(scale.dtype)")
        }
        let ax = try normalizeAxis(axis, rank: a.rank)
        let cols = Tensor.elementCount(Array(a.shape[ax...]))
        let fused = a.shape == b.shape && cols > 0 && scale.count == cols && (bias?.count ?? cols) == cols
            && scale.shape.drop(while: { $0 == 1 }).elementsEqual(a.shape[ax...].drop(while: { $0 == 1 }))
            && (bias.map { $0.shape.drop(while: { $0 == 1 }).elementsEqual(a.shape[ax...].drop(while: { $0 == 1 })) } ?? true)
        let (y, sum) = try dispatch(a.dtype, Op(a: a, b: b, scale: scale, bias: bias, axis: ax, epsilon: epsilon, fused: fused, keepsSum: keepsSum))
        return [.tensor(y), sum.map(Value.tensor)]
    }

    struct Op: ElementOperation {
        let a: Tensor, b: Tensor, scale: Tensor, bias: Tensor?, axis: Int, epsilon: Double, fused: Bool, keepsSum: Bool

        func float<T: FloatElement>(_ type: T.Type) throws -> (Tensor, Tensor?) {
            guard fused else {
                // The two ops one after the other (broadcasting Add, then LayerNormalization).
                let sum = try broadcastBinary(a, b, T.self, T.self, T.self, outDType: T.dtype) { $0 + $1 }
                let outs = try LayerNormKernel.Op(x: sum, scale: scale, bias: bias, axis: axis, epsilon: epsilon, simplified: false).float(T.self)
                return (outs[0], keepsSum ? sum : nil)
            }
            let cols = Tensor.elementCount(Array(a.shape[axis...])), rows = Tensor.elementCount(Array(a.shape[..<axis]))
            var y = Tensor(uninitialized: T.dtype, shape: a.shape)
            var sum = keepsSum ? Tensor(uninitialized: T.dtype, shape: a.shape) : nil
            let epsilon = T(fromDouble: epsilon)
            a.uncheckedBufferPointer(as: T.self) { pa in
                b.uncheckedBufferPointer(as: T.self) { pb in
                    scale.uncheckedBufferPointer(as: T.self) { ps in
                        withOptionalPointer(bias, T.self) { pbias in
                            y.uncheckedMutableBufferPointer(as: T.self) { py in
                                withOptionalMutablePointer(&sum, T.self) { pt in
                                    guard rows > 0, let A = pa.baseAddress, let B = pb.baseAddress, let S = ps.baseAddress,
                                          let Y = py.baseAddress else { return }
                                    Parallel.forRange(rows, minimumChunk: max(1, 8192 / cols)) { range in
                                        // Without the sum output, each row's sum goes through one scratch row.
                                        let sums = pt ?? UnsafeMutablePointer<T>.allocate(capacity: cols)
                                        let stride = pt == nil ? 0 : cols
                                        defer { if pt == nil { sums.deallocate() } }
                                        for r in range {
                                            let o = r * cols, u = sums + r * stride
                                            addRow(A + o, B + o, u, cols)
                                            _ = layerNormRow(UnsafePointer(u), S, pbias, Y + o, cols, epsilon, true)
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            return (y, sum)
        }
    }
}

/// The base address of `t`'s elements for writing (nil for a nil tensor or no elements).
private func withOptionalMutablePointer<T, R>(_ t: inout Tensor?, _ type: T.Type, _ body: (UnsafeMutablePointer<T>?) -> R) -> R {
    guard var tensor = t else { return body(nil) }
    // Out of the optional while it is written: one reference, so the write copies nothing.
    t = nil
    defer { t = tensor }
    return tensor.uncheckedMutableBufferPointer(as: T.self) { body($0.baseAddress) }
}

/// dst[i] = a[i] + b[i]: a function of its own so the loop vectorises (see LayerNormalization.swift).
@inline(never)
func addRow<T: FloatElement>(_ a: UnsafePointer<T>, _ b: UnsafePointer<T>, _ dst: UnsafeMutablePointer<T>, _ count: Int) {
    for i in 0..<count { dst[i] = a[i] + b[i] }
}

func registerAddLayerNormOps(_ registry: OpRegistry) {
    registry.register("AddLayerNormalization", domain: internalDomain, since: [1], inPlace: [0, 1]) { ctx in try AddLayerNormKernel(ctx) }
}
