/// Where(condition, X, Y) with numpy broadcasting, and its gradient rule (registered in
/// BinaryMath.swift's list).

/// Where, since opset 9, 16.
func whereKernel(_ ctx: NodeContext) throws -> Kernel {
    AnyKernel { inputs, _ in [.tensor(try select(try inputs.tensor(0), try inputs.tensor(1), try inputs.tensor(2)))] }
}

/// Where(condition, X, Y) with three-way broadcasting; copies elements by their byte size.
func select(_ cond: Tensor, _ x: Tensor, _ y: Tensor) throws -> Tensor {
    guard cond.dtype == .bool else { throw KernelError("condition must be bool, got \(cond.dtype)") }
    try requireSameType(x, y)
    let outShape = try Broadcast.shape([cond.shape, x.shape, y.shape])
    let n = Tensor.elementCount(outShape)
    if x.dtype == .string {
        let c = cond.scalars(as: Bool.self), xs = x.strings, ys = y.strings
        var out = [String](repeating: "", count: n)
        var walk = Odometer(shape: outShape, strides: [cond.shape, x.shape, y.shape].map { Broadcast.strides($0, to: outShape) })
        for o in 0..<n {
            out[o] = c[walk.offsets[0]] ? xs[walk.offsets[1]] : ys[walk.offsets[2]]
            walk.advance()
        }
        return Tensor(shape: outShape, strings: out)
    }
    // Runs along the merged last axis (`BroadcastRows`), each input advancing or repeating (a
    // masked fill: Where(mask, constant, scores)), split across threads.
    let layout = BroadcastRows(outShape: outShape, operandShapes: [cond.shape, x.shape, y.shape])
    func copy<E>(_ type: E.Type) -> Tensor {
        var out = Tensor(uninitialized: x.dtype, shape: outShape)
        guard n > 0 else { return out }
        cond.uncheckedBufferPointer(as: Bool.self) { bc in
            x.uncheckedBufferPointer(as: E.self) { bx in
                y.uncheckedBufferPointer(as: E.self) { by in
                    out.uncheckedMutableBufferPointer(as: E.self) { bo in
                        guard let pc = bc.baseAddress, let px = bx.baseAddress, let py = by.baseAddress, let po = bo.baseAddress else { return }
                        let along = layout.innerStrides
                        Parallel.forRange(n, minimumChunk: 32_768) { elements in
                            layout.forEachRun(elements) { o, count, offsets in
                                selectRun(pc + offsets[0], px + offsets[1], py + offsets[2], po + o, count, strides: along)
                            }
                        }
                    }
                }
            }
        }
        return out
    }
    switch x.dtype.byteSize {
    case 1: return copy(UInt8.self)
    case 2: return copy(UInt16.self)
    case 4: return copy(UInt32.self)
    case 8: return copy(UInt64.self)
    default: throw KernelError("element type \(x.dtype) is not supported by Where")
    }
}

/// One run of Where: out[j] = c[j·s0] ? x[j·s1] : y[j·s2], each stride 0 (repeated) or 1. A
/// function of its own so the loops vectorise (they stay scalar inside a Parallel.forRange closure).
@inline(never)
func selectRun<E>(_ c: UnsafePointer<Bool>, _ x: UnsafePointer<E>, _ y: UnsafePointer<E>, _ out: UnsafeMutablePointer<E>,
                  _ count: Int, strides: SIMD4<Int>) {
    switch (strides[0], strides[1], strides[2]) {
    case (1, 0, 1):
        let v = x[0]
        for j in 0..<count { out[j] = c[j] ? v : y[j] }
    case (1, 1, 0):
        let v = y[0]
        for j in 0..<count { out[j] = c[j] ? x[j] : v }
    case (1, 0, 0):
        let u = x[0], v = y[0]
        for j in 0..<count { out[j] = c[j] ? u : v }
    case (1, 1, 1):
        for j in 0..<count { out[j] = c[j] ? x[j] : y[j] }
    default:
        let (sc, sx, sy) = (strides[0], strides[1], strides[2])
        for j in 0..<count { out[j] = c[j * sc] ? x[j * sx] : y[j * sy] }
    }
}

/// The gradient rule of Where.
func whereGradient(_ g: GradientContext) throws -> [String?] {
    let dY = try g.requiredDY()
    let zero = try g.scalar(0, like: g.output(0), name: "zero")
    let cond = g.input(0)
    return [nil,
            g.needs(1) ? g.reduced(g.op("Where", [cond, dY, zero]), toInput: 1) : nil,
            g.needs(2) ? g.reduced(g.op("Where", [cond, zero, dY]), toInput: 2) : nil]
}
