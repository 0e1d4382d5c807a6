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
    let sc = Broadcast.strides(cond.shape, to: outShape)
    let sx = Broadcast.strides(x.shape, to: outShape)
    let sy = Broadcast.strides(y.shape, to: outShape)
    // offsets(o) gives the three input offsets of output element o.
    let rank = outShape.count
    func offsets(_ visit: (Int, Int, Int, Int) -> Void) {
        var walk = Odometer(shape: outShape, strides: [sc, sx, sy])
        for o in 0..<n {
            visit(o, walk.offsets[0], walk.offsets[1], walk.offsets[2])
            walk.advance()
        }
    }
    if x.dtype == .string {
        let c = cond.scalars(as: Bool.self), xs = x.strings, ys = y.strings
        var out = [String](repeating: "", count: n)
        offsets { o, oc, ox, oy in out[o] = c[oc] ? xs[ox] : ys[oy] }
        return Tensor(shape: outShape, strings: out)
    }
    // Each input a scalar or the output shape's trailing dims (a [T, T] mask under [B, H, T, T]
    // scores): input element = output element mod its count, so runs of `period` are contiguous.
    let suffixOnly = [cond.shape, x.shape, y.shape].allSatisfy { s in
        let dims = Array(s.drop(while: { $0 == 1 }))
        return dims.count <= rank && Array(outShape.suffix(dims.count)) == dims
    }
    let period = [cond.count, x.count, y.count].filter { $0 > 1 }.min() ?? 1
    func copy<E>(_ type: E.Type) -> Tensor {
        var out = Tensor(uninitialized: x.dtype, shape: outShape)
        cond.uncheckedBufferPointer(as: Bool.self) { pc in
            x.uncheckedBufferPointer(as: E.self) { px in
                y.uncheckedBufferPointer(as: E.self) { py in
                    out.uncheckedMutableBufferPointer(as: E.self) { po in
                        guard suffixOnly, n > 0 else {
                            offsets { o, oc, ox, oy in po[o] = pc[oc] ? px[ox] : py[oy] }
                            return
                        }
                        let (cc, cx, cy) = (cond.count, x.count, y.count)
                        let (sc, sx, sy) = (cc == 1 ? 0 : 1, cx == 1 ? 0 : 1, cy == 1 ? 0 : 1)
                        var o = 0
                        while o < n {
                            let (bc, bx, by) = (o % cc, o % cx, o % cy)
                            if sc == 1 && sx == 0 && sy == 1 {  // a masked fill: Where(mask, constant, scores)
                                let v = px[bx]
                                for j in 0..<period { po[o + j] = pc[bc + j] ? v : py[by + j] }
                            } else if sc == 1 && sx == 1 && sy == 0 {
                                let v = py[by]
                                for j in 0..<period { po[o + j] = pc[bc + j] ? px[bx + j] : v }
                            } else {
                                for j in 0..<period { po[o + j] = pc[bc + j * sc] ? px[bx + j * sx] : py[by + j * sy] }
                            }
                            o += period
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

/// The gradient rule of Where.
func whereGradient(_ g: GradientContext) throws -> [String?] {
    let dY = try g.requiredDY()
    let zero = try g.scalar(0, like: g.output(0), name: "zero")
    let cond = g.input(0)
    return [nil,
            g.needs(1) ? g.reduced(g.op("Where", [cond, dY, zero]), toInput: 1) : nil,
            g.needs(2) ? g.reduced(g.op("Where", [cond, zero, dY]), toInput: 2) : nil]
}
