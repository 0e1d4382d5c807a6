import CDNNL
import Synchronization

/// The blocked-layout ops of the `nchwc` pass (NchwcLayout.swift), onnx-train's internal domain,
/// written only into a session's compiled graph. A blocked tensor of an [N, C, H, W] float32
/// value is [N, ceil(C/16), H, W, 16]: channel c at block c / 16, lane c % 16; the lanes past C
/// are zero (every op below writes them so, and reads them only where a zero is harmless).
///
/// - ReorderToNchwc (X [N, C, H, W]) -> blocked; ReorderFromNchwc (blocked, `channels` C) ->
///   [N, C, H, W]: the region's edges.
/// - NchwcConv (X, W, B?, Z?): Conv's attributes and FusedConv's activation; X blocked (or nchw
///   with `plain_input` 1), W [M, C, kh, kw] (group 1), Z blocked as Y -> Y blocked, oneDNN's
///   convolution with nothing reordered (DnnlConv.swift, `forwardBlocked`; 3x3/1: its Winograd).
/// - NchwcMaxPool, NchwcAveragePool (2-D, pooling's attributes): blocked -> blocked, 16 lanes a
///   step.
/// - NchwcGlobalAveragePool (blocked, `channels` C) -> [N, C, 1, 1] (plain: its readers are
///   Flatten / Gemm).
enum Nchwc {
    static let lanes = 16

    static func blocks(_ c: Int) -> Int { (c + lanes - 1) / lanes }

    /// The blocked shape of [n, c, h, w].
    static func shape(_ n: Int, _ c: Int, _ h: Int, _ w: Int) -> [Int] { [n, blocks(c), h, w, lanes] }

    /// A float32 blocked tensor's [N, blocks, H, W], checked.
    static func dims(_ x: Tensor, _ what: String) throws -> (n: Int, blocks: Int, h: Int, w: Int) {
        guard x.dtype == .float32, x.rank == 5, x.shape[4] == lanes else {
            throw KernelError("\(what) needs a float32 [N, C/16, H, W, 16] tensor, got tensor(\(x.dtype)) \(x.shape)")
        }
        return (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
    }

    /// Zeroes the lanes past `channels` of the last block of every image of blocked y.
    static func zeroPadding(_ y: UnsafeMutablePointer<Float>, images n: Int, channels c: Int, positions P: Int) {
        let used = c % lanes
        guard used != 0 else { return }
        let b = blocks(c)
        for image in 0..<n {
            let block = y + ((image * b + b - 1) * P) * lanes
            for p in 0..<P { (block + p * lanes + used).update(repeating: 0, count: lanes - used) }
        }
    }

    /// x [n, c, h, w] (plain) -> blocked.
    static func block(_ x: Tensor, channels c: Int) throws -> Tensor {
        guard x.dtype == .float32, x.rank == 4, x.shape[1] == c else {
            throw KernelError("ReorderToNchwc needs a float32 [N, \(c), H, W] tensor, got tensor(\(x.dtype)) \(x.shape)")
        }
        let n = x.shape[0], P = x.shape[2] * x.shape[3], b = blocks(c)
        var y = try Tensor(kernelUninitialized: .float32, shape: shape(n, c, x.shape[2], x.shape[3]), "ReorderToNchwc output")
        if y.count == 0 { return y }
        x.uncheckedBufferPointer(as: Float.self) { px in
            y.uncheckedMutableBufferPointer(as: Float.self) { py in
                guard let X = px.baseAddress, let Y = py.baseAddress else { return }
                Parallel.forRange(n * b, minimumChunk: max(1, 16_384 / max(P * lanes, 1))) { r in
                    for u in r {
                        let image = u / b, k = u % b, c0 = k * lanes, used = min(lanes, c - c0)
                        let dst = Y + u * P * lanes, src = X + (image * c + c0) * P
                        for p in 0..<P {
                            let d = dst + p * lanes
                            for l in 0..<used { d[l] = src[l * P + p] }
                            for l in used..<lanes { d[l] = 0 }
                        }
                    }
                }
            }
        }
        return y
    }

    /// blocked x -> [n, c, h, w].
    static func unblock(_ x: Tensor, channels c: Int) throws -> Tensor {
        let (n, b, h, w) = try dims(x, "ReorderFromNchwc")
        guard b == blocks(c) else { throw KernelError("ReorderFromNchwc of \(c) channels got \(x.shape)") }
        let P = h * w
        var y = try Tensor(kernelUninitialized: .float32, shape: [n, c, h, w], "ReorderFromNchwc output")
        if y.count == 0 { return y }
        x.uncheckedBufferPointer(as: Float.self) { px in
            y.uncheckedMutableBufferPointer(as: Float.self) { py in
                guard let X = px.baseAddress, let Y = py.baseAddress else { return }
                Parallel.forRange(n * b, minimumChunk: max(1, 16_384 / max(P * lanes, 1))) { r in
                    for u in r {
                        let image = u / b, k = u % b, c0 = k * lanes, used = min(lanes, c - c0)
                        let src = X + u * P * lanes, dst = Y + (image * c + c0) * P
                        for l in 0..<used {
                            let d = dst + l * P
                            for p in 0..<P { d[p] = src[p * lanes + l] }
                        }
                    }
                }
            }
        }
        return y
    }
}

/// ReorderToNchwc (`toBlocked`) and ReorderFromNchwc: oneDNN's reorder (its JIT transposes)
/// where an engine exists, the threads splitting images or, for one image, channel blocks; else
/// (or on an error of oneDNN) `Nchwc.block` / `unblock`. Same bits either way (a copy).
struct NchwcReorderKernel: Kernel {
    let channels: Int
    let toBlocked: Bool
    let dnnl: NchwcReorderCache?

    init(_ ctx: NodeContext, toBlocked: Bool) throws {
        let what = toBlocked ? "ReorderToNchwc" : "ReorderFromNchwc"
        channels = try ctx.int("channels", default: 0)
        guard channels > 0 else { throw KernelError("\(what) needs a positive channels, got \(channels)") }
        self.toBlocked = toBlocked
        dnnl = DnnlConv.enabled && PackedGemm.engine != nil ? NchwcReorderCache() : nil
    }

    func run(_ inputs: [Value?], _ context: ExecutionContext) throws -> [Value?] {
        let x = try inputs.tensor(0), c = channels
        let n: Int, h: Int, w: Int
        if toBlocked {
            guard x.dtype == .float32, x.rank == 4, x.shape[1] == c else {
                throw KernelError("ReorderToNchwc needs a float32 [N, \(c), H, W] tensor, got tensor(\(x.dtype)) \(x.shape)")
            }
            (n, h, w) = (x.shape[0], x.shape[2], x.shape[3])
        } else {
            let d = try Nchwc.dims(x, "ReorderFromNchwc")
            guard d.blocks == Nchwc.blocks(c) else { throw KernelError("ReorderFromNchwc of \(c) channels got \(x.shape)") }
            (n, h, w) = (d.n, d.h, d.w)
        }
        guard let dnnl, n * c * h * w > 0 else {
            return [.tensor(toBlocked ? try Nchwc.block(x, channels: c) : try Nchwc.unblock(x, channels: c))]
        }
        var y = try Tensor(kernelUninitialized: .float32, shape: toBlocked ? Nchwc.shape(n, c, h, w) : [n, c, h, w], toBlocked ? "ReorderToNchwc output" : "ReorderFromNchwc output")
        let done = x.uncheckedBufferPointer(as: Float.self) { px in
            y.uncheckedMutableBufferPointer(as: Float.self) { py -> Bool in
                guard let X = px.baseAddress, let Y = py.baseAddress else { return false }
                guard dnnl.run(X, Y, toBlocked: toBlocked, images: n, channels: c, height: h, width: w) else { return false }
                if toBlocked { Nchwc.zeroPadding(Y, images: n, channels: c, positions: h * w) }
                return true
            }
        }
        if done { return [.tensor(y)] }
        return [.tensor(toBlocked ? try Nchwc.block(x, channels: c) : try Nchwc.unblock(x, channels: c))]
    }
}

/// The oneDNN reorders of one ReorderToNchwc / ReorderFromNchwc node, per input shape: one
/// primitive per piece of channel blocks (one image: a piece per thread; several: whole images).
/// Measured against the Swift loops of `Nchwc.block` / `unblock` (see the commit).
final class NchwcReorderCache: Sendable {
    struct Key: Hashable { let toBlocked: Bool, channels: Int, height: Int, width: Int, pieces: Int }

    /// The primitives of one shape: piece i converts channels `starts[i] ..< starts[i + 1]` of an image.
    final class Plan: @unchecked Sendable {
        let starts: [Int]
        let primitives: [dnnl_primitive_t]
        init(starts: [Int], primitives: [dnnl_primitive_t]) { (self.starts, self.primitives) = (starts, primitives) }
        deinit { for p in primitives { dnnl_primitive_destroy(p) } }
    }

    private let plans = Mutex<[Key: Plan]>([:])
    /// Shapes kept per node.
    static let plansKept = 8

    private func plan(_ key: Key) -> Plan? {
        if let kept = plans.withLock({ $0[key] }) { return kept }
        guard let engine = PackedGemm.engine else { return nil }
        let blocks = Nchwc.blocks(key.channels)
        var starts: [Int] = [], primitives: [dnnl_primitive_t] = []
        for p in 0..<key.pieces {
            let r = Parallel.chunk(p, of: key.pieces, count: blocks)
            let c0 = r.lowerBound * Nchwc.lanes, c1 = min(r.upperBound * Nchwc.lanes, key.channels)
            let (from, to) = key.toBlocked ? (OT_LAYOUT_NCHW, OT_LAYOUT_16C) : (OT_LAYOUT_16C, OT_LAYOUT_NCHW)
            guard let reorder = ot_layout_reorder_create(engine, 1, Int64(c1 - c0), Int64(key.height), Int64(key.width), from, to) else {
                for made in primitives { dnnl_primitive_destroy(made) }
                return nil
            }
            starts.append(c0)
            primitives.append(reorder)
        }
        starts.append(key.channels)
        let made = Plan(starts: starts, primitives: primitives)
        return plans.withLock { kept in
            if let current = kept[key] { return current }
            if kept.count < Self.plansKept { kept[key] = made }
            return made
        }
    }

    /// x (plain [n, c, h, w] or blocked) into y (the other); false where oneDNN cannot (y to be overwritten).
    func run(_ X: UnsafePointer<Float>, _ Y: UnsafeMutablePointer<Float>, toBlocked: Bool, images n: Int, channels c: Int, height h: Int, width w: Int) -> Bool {
        guard let engine = PackedGemm.engine else { return false }
        let threads = Parallel.isInsideRegion ? 1 : Parallel.threadCount
        let pieces = n >= threads ? 1 : min(threads, Nchwc.blocks(c))
        guard let plan = plan(Key(toBlocked: toBlocked, channels: c, height: h, width: w, pieces: pieces)) else { return false }
        let P = h * w, plainImage = c * P, blockedImage = Nchwc.blocks(c) * Nchwc.lanes * P
        let (fromLayout, toLayout) = toBlocked ? (OT_LAYOUT_NCHW, OT_LAYOUT_16C) : (OT_LAYOUT_16C, OT_LAYOUT_NCHW)
        let (fromImage, toImage) = toBlocked ? (plainImage, blockedImage) : (blockedImage, plainImage)
        let failed = Atomic<Bool>(false)
        // Tiny tensors on one thread (a handoff costs more than the copy).
        Parallel.forRange(n * pieces, minimumChunk: P * c / max(n * pieces, 1) < 4_096 ? n * pieces : 1) { r in
            for item in r {
                let image = item / pieces, piece = item % pieces
                let c0 = plan.starts[piece], count = plan.starts[piece + 1] - c0
                // Channels c0 ..< c0 + count (c0 a multiple of 16) start at c0·P in both layouts.
                if SignalHold.around({ ot_layout_reorder_run(engine, plan.primitives[piece], 1, Int64(count), Int64(h), Int64(w), fromLayout,
                                         X + image * fromImage + c0 * P, toLayout, Y + image * toImage + c0 * P) }) != 0 {
                    failed.store(true, ordering: .relaxed)
                }
            }
        }
        return !failed.load(ordering: .relaxed)
    }
}

struct NchwcConvKernel: Kernel {
    let attributes: ConvAttributes
    let activation: FusedConvActivation
    let plainInput: Bool
    let dnnl: DnnlConvCache?

    init(_ ctx: NodeContext) throws {
        attributes = try ConvAttributes(ctx)
        activation = try FusedConvActivation(name: try ctx.string("activation", default: ""), parameters: try ctx.floats("activation_params") ?? [])
        guard activation.runsInEpilogue else { throw KernelError("NchwcConv cannot apply activation \(activation) in its epilogue") }
        plainInput = try ctx.int("plain_input", default: 0) != 0
        guard attributes.group == 1 else { throw KernelError("NchwcConv needs group 1, got \(attributes.group)") }
        dnnl = DnnlConvCache.make(ctx)
    }

    func run(_ inputs: [Value?], _ context: ExecutionContext) throws -> [Value?] {
        let x = try inputs.tensor(0), w = try inputs.tensor(1), b = try inputs.optionalTensor(2), z = try inputs.optionalTensor(3)
        guard w.dtype == .float32, w.rank == 4, b.map({ $0.dtype == .float32 && $0.count == w.shape[0] }) ?? true else {
            throw KernelError("NchwcConv needs a float32 [M, C, kh, kw] weight and bias [M], got \(w.shape), \(b?.shape ?? [])")
        }
        let m = w.shape[0], c = w.shape[1]
        if plainInput {
            guard x.dtype == .float32, x.rank == 4, x.shape[1] == c else { throw KernelError("NchwcConv input \(x.shape) does not fit weight \(w.shape)") }
        } else {
            guard try Nchwc.dims(x, "NchwcConv").blocks == Nchwc.blocks(c) else { throw KernelError("NchwcConv input \(x.shape) does not fit weight \(w.shape)") }
        }
        let n = x.shape[0], h = x.shape[2], width = x.shape[3]
        let g = try attributes.window.geometry(spatial: [h, width], kernel: Array(w.shape.dropFirst(2)))
        if !attributes.window.kernelShape.isEmpty && attributes.window.kernelShape != g.kernel {
            throw KernelError("kernel_shape \(attributes.window.kernelShape) does not match weight \(w.shape)")
        }
        let shape = Nchwc.shape(n, m, g.output[0], g.output[1])
        if let z, z.shape != shape {
            // A Z that broadcasts: FusedConv's steps on the plain values.
            guard z.dtype == .float32 else { throw KernelError("NchwcConv Z is tensor(\(z.dtype)), Y is tensor(float)") }
            let plainX = plainInput ? x : try Nchwc.unblock(x, channels: c)
            var out = try convolution(plainX, w, bias: b, group: 1, geometry: g, Float.self)
            out = try FusedConvKernel.AddInPlace(y: out, z: try Nchwc.unblock(z, channels: m)).float(Float.self)
            if activation != .standard(.none) { out = activation.applied(to: out, Float.self) }
            return [.tensor(try Nchwc.block(out, channels: m))]
        }
        var y = try Tensor(kernelUninitialized: .float32, shape: shape, "NchwcConv output")
        if y.count == 0 { return [.tensor(y)] }
        let P = g.outputSize
        let done = try x.withUnsafeBufferPointer(as: Float.self) { px in
            try w.withUnsafeBufferPointer(as: Float.self) { pw in
                try (b?.scalars(as: Float.self) ?? []).withUnsafeBufferPointer { pb in
                    try withZ(z) { Z in
                        y.uncheckedMutableBufferPointer(as: Float.self) { py -> Bool in
                            guard let X = px.baseAddress, let W = pw.baseAddress, let Y = py.baseAddress, let dnnl else { return false }
                            let epilogue = Z == nil && activation == .standard(.none) ? nil : ConvEpilogue<Float>(z: Z, activation: activation)
                            guard dnnl.forwardBlocked(X, w, W, bias: b == nil ? nil : pb.baseAddress, Y, images: n, channels: c, outputs: m, g,
                                                      plainSource: plainInput, epilogue: epilogue) else { return false }
                            Nchwc.zeroPadding(Y, images: n, channels: m, positions: P)
                            return true
                        }
                    }
                }
            }
        }
        if done { return [.tensor(y)] }
        // oneDNN cannot run it here: the plain convolution between reorders (same values).
        let plainX = plainInput ? x : try Nchwc.unblock(x, channels: c)
        let plainZ = try z.map { try Nchwc.unblock($0, channels: m) }
        let out = try withZ(plainZ) { Z in
            try convolution(plainX, w, bias: b, group: 1, geometry: g, Float.self, epilogue: ConvEpilogue<Float>(z: Z, activation: activation))
        }
        return [.tensor(try Nchwc.block(out, channels: m))]
    }

    private func withZ<R>(_ z: Tensor?, _ body: (UnsafePointer<Float>?) throws -> R) throws -> R {
        guard let z else { return try body(nil) }
        return try z.withUnsafeBufferPointer(as: Float.self) { try body($0.baseAddress) }
    }
}

/// MaxPool and AveragePool of a blocked tensor, 2-D: one vector of 16 channels a tap.
struct NchwcPoolKernel: Kernel {
    let window: WindowAttributes
    /// nil: max; else average, the divisor counting the pads (`count_include_pad`).
    let average: Bool?

    init(_ ctx: NodeContext, average: Bool?) throws {
        window = try WindowAttributes(ctx)
        self.average = average
        guard window.kernelShape.count == 2 else { throw KernelError("NchwcPool needs a 2-D kernel_shape, got \(window.kernelShape)") }
    }

    func run(_ inputs: [Value?], _ context: ExecutionContext) throws -> [Value?] {
        let x = try inputs.tensor(0)
        let (n, b, h, w) = try Nchwc.dims(x, "NchwcPool")
        let g = try window.geometry(spatial: [h, w], kernel: window.kernelShape)
        let oh = g.output[0], ow = g.output[1]
        var y = try Tensor(kernelUninitialized: .float32, shape: [n, b, oh, ow, Nchwc.lanes], "NchwcPool output")
        if y.count == 0 { return [.tensor(y)] }
        let (kh, kw) = (g.kernel[0], g.kernel[1]), (sh, sw) = (g.strides[0], g.strides[1]), (dh, dw) = (g.dilations[0], g.dilations[1])
        let (pt, pl) = (g.padsBegin[0], g.padsBegin[1])
        let average = self.average, isMax = average == nil, divisor = average == true ? kh * kw : 0
        // Each output's taps inside the input: rows a0 ..< a1, columns e0 ..< e1 of its window
        // (no bounds test per tap).
        let rows = (0..<oh).map { NchwcPoolKernel.inside(start: $0 * sh - pt, kernel: kh, dilation: dh, size: h) }
        let columns = (0..<ow).map { NchwcPoolKernel.inside(start: $0 * sw - pl, kernel: kw, dilation: dw, size: w) }
        x.uncheckedBufferPointer(as: Float.self) { px in
            y.uncheckedMutableBufferPointer(as: Float.self) { py in
                guard let X = px.baseAddress, let Y = py.baseAddress else { return }
                let input = UnsafeRawPointer(X), output = UnsafeMutableRawPointer(Y)
                Parallel.forRange(n * b, minimumChunk: max(1, 8_192 / max(oh * ow * kh * kw * 16, 1))) { r in
                    for u in r {
                        let src = input + u * h * w * 64, dst = output + u * oh * ow * 64
                        for i in 0..<oh {
                            let h0 = i * sh - pt, (a0, a1) = rows[i]
                            for j in 0..<ow {
                                let w0 = j * sw - pl, (e0, e1) = columns[j]
                                // Two halves of 8 lanes (AVX2 registers); the maximum as a select
                                // (`pointwiseMax` ran ~100x slower, not vectorised).
                                var lo = SIMD8<Float>(repeating: isMax ? -.infinity : 0), hi = lo
                                var a = a0
                                while a < a1 {
                                    let row = src + ((h0 + a * dh) * w + w0) * 64
                                    var e = e0
                                    while e < e1 {
                                        let v0 = row.loadUnaligned(fromByteOffset: e * dw * 64, as: SIMD8<Float>.self)
                                        let v1 = row.loadUnaligned(fromByteOffset: e * dw * 64 + 32, as: SIMD8<Float>.self)
                                        if isMax {
                                            lo.replace(with: v0, where: v0 .> lo)
                                            hi.replace(with: v1, where: v1 .> hi)
                                        } else {
                                            lo += v0
                                            hi += v1
                                        }
                                        e += 1
                                    }
                                    a += 1
                                }
                                if !isMax {
                                    let count = SIMD8<Float>(repeating: Float(max(divisor > 0 ? divisor : (a1 - a0) * (e1 - e0), 1)))
                                    lo /= count
                                    hi /= count
                                }
                                dst.storeBytes(of: lo, toByteOffset: (i * ow + j) * 64, as: SIMD8<Float>.self)
                                dst.storeBytes(of: hi, toByteOffset: (i * ow + j) * 64 + 32, as: SIMD8<Float>.self)
                            }
                        }
                    }
                }
            }
        }
        return [.tensor(y)]
    }

    /// The taps a0 ..< a1 of a window from `start` (taps start + a·dilation) inside 0 ..< size.
    static func inside(start: Int, kernel: Int, dilation: Int, size: Int) -> (Int, Int) {
        let a0 = start >= 0 ? 0 : (-start + dilation - 1) / dilation
        let a1 = start >= size ? 0 : min(kernel, (size - start + dilation - 1) / dilation)
        return (min(a0, a1), a1)
    }
}

/// GlobalAveragePool of a blocked tensor into [N, C, 1, 1] (plain).
struct NchwcGlobalAveragePoolKernel: Kernel {
    let channels: Int
    init(_ ctx: NodeContext) throws {
        channels = try ctx.int("channels", default: 0)
        guard channels > 0 else { throw KernelError("NchwcGlobalAveragePool needs a positive channels, got \(channels)") }
    }

    func run(_ inputs: [Value?], _ context: ExecutionContext) throws -> [Value?] {
        let x = try inputs.tensor(0)
        let (n, b, h, w) = try Nchwc.dims(x, "NchwcGlobalAveragePool")
        let c = channels
        guard b == Nchwc.blocks(c) else { throw KernelError("NchwcGlobalAveragePool of \(c) channels got \(x.shape)") }
        var y = try Tensor(kernelUninitialized: .float32, shape: [n, c, 1, 1], "NchwcGlobalAveragePool output")
        if y.count == 0 { return [.tensor(y)] }
        let P = h * w
        x.uncheckedBufferPointer(as: Float.self) { px in
            y.uncheckedMutableBufferPointer(as: Float.self) { py in
                guard let X = px.baseAddress, let Y = py.baseAddress else { return }
                let input = UnsafeRawPointer(X)
                Parallel.forRange(n * b, minimumChunk: max(1, 8_192 / max(P * 16, 1))) { r in
                    for u in r {
                        let image = u / b, c0 = (u % b) * Nchwc.lanes, used = min(Nchwc.lanes, c - c0)
                        let src = input + u * P * 64
                        var acc = SIMD16<Float>(repeating: 0)
                        for p in 0..<P { acc += src.loadUnaligned(fromByteOffset: p * 64, as: SIMD16<Float>.self) }
                        acc /= SIMD16<Float>(repeating: Float(max(P, 1)))
                        for l in 0..<used { Y[image * c + c0 + l] = acc[l] }
                    }
                }
            }
        }
        return [.tensor(y)]
    }
}

func registerNchwcOps(_ registry: OpRegistry) {
    registry.register("ReorderToNchwc", domain: internalDomain, since: [1]) { ctx in try NchwcReorderKernel(ctx, toBlocked: true) }
    registry.register("ReorderFromNchwc", domain: internalDomain, since: [1]) { ctx in try NchwcReorderKernel(ctx, toBlocked: false) }
    registry.register("NchwcConv", domain: internalDomain, since: [1]) { ctx in try NchwcConvKernel(ctx) }
    registry.register("NchwcMaxPool", domain: internalDomain, since: [1]) { ctx in try NchwcPoolKernel(ctx, average: nil) }
    registry.register("NchwcAveragePool", domain: internalDomain, since: [1]) { ctx in
        try NchwcPoolKernel(ctx, average: ctx.int("count_include_pad", default: 0) != 0)
    }
    registry.register("NchwcGlobalAveragePool", domain: internalDomain, since: [1]) { ctx in try NchwcGlobalAveragePoolKernel(ctx) }
}
