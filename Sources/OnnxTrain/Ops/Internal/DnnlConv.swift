#if canImport(Glibc)
import Glibc
#endif
import CDNNL
import Synchronization

/// Float32 2-D convolutions whose weight is a constant of an inference session, through oneDNN's
/// forward convolution (its AVX-512 kernels) with the weight reordered once into the layout those
/// kernels read, kept in the session's kernel-cache budget (as `PackedWeightCache` keeps a
/// matmul's B, and `WinogradWeightCache` a 3×3 weight's U).
///
/// Activations stay nchw between nodes: each run reorders its input into the implementation's
/// layout (channel blocks of 16, nChw16c, except for few input channels) and its output back, a
/// block at a time while it is in cache, then applies FusedConv's Z and activation
/// (`ConvEpilogue`, the same code as the other kernels) to that block. The threads of the
/// `Parallel` pool split the work, every oneDNN call single-threaded on its pool thread: one image
/// by blocks of output channels (each block its own primitive over its part of the weight; the
/// input reordered once, split by channel blocks, before), several images by images (one
/// primitive, one image a call).
///
/// Only where oneDNN picks an AVX-512 implementation (on other CPUs every convolution stays on
/// im2col + OpenBLAS / Winograd / the direct depthwise loops) and in the classes `DnnlConv.takes`
/// names. Off with `ONNX_TRAIN_DISABLE_PASSES=dnnl-conv` (or `all`).
final class DnnlConvCache: Sendable {
    let budget: KernelCacheBudget
    private let state = Mutex<State>(State())

    struct Key: Hashable { let images: Bool, height: Int, width: Int, parts: Int, layout: Layout, byInputs: Bool }

    /// The activations' layouts at the node's boundary: nchw in and out (reordered inside), or
    /// nChw16c out and nChw16c or nchw in, as the `nchwc` pass's NchwcConv keeps them
    /// (NchwcLayout.swift).
    enum Layout: Hashable { case plain, blocked, plainToBlocked }
    struct State: @unchecked Sendable {
        var source: TensorStorage? = nil
        var shape: [Int] = []
        var plans: [Key: Plan?] = [:]
    }

    init(budget: KernelCacheBudget) { self.budget = budget }

    /// A cache for a node whose weight (input 1) is a constant of its session; nil where it is
    /// not, where the switch is off or oneDNN cannot run here.
    static func make(_ ctx: NodeContext) -> DnnlConvCache? {
        guard ctx.isConstantInput(1), let budget = ctx.cacheBudget, DnnlConv.available else { return nil }
        return DnnlConvCache(budget: budget)
    }

    /// Y = conv(X, W) (+ bias), then `epilogue`, for float32 x [n, c, h, w] and w [m, c/group, kh, kw]
    /// (its elements at `W`). False, Y untouched or to be overwritten, where the convolution does
    /// not take this path: the caller runs its own kernels.
    func forward(_ X: UnsafePointer<Float>, _ w: Tensor, _ W: UnsafePointer<Float>, bias: UnsafePointer<Float>?, _ Y: UnsafeMutablePointer<Float>,
                 images n: Int, channels c: Int, outputs m: Int, group: Int, _ g: ConvGeometry, epilogue: ConvEpilogue<Float>?) -> Bool {
        guard g.rank == 2, DnnlConv.takes(images: n, channels: c, outputs: m, group: group, g) else { return false }
        let threads = Parallel.isInsideRegion ? 1 : Parallel.threadCount
        let work = m * (c / group) * g.kernelSize * g.outputSize
        // One image: blocks of output channels (whole groups, multiples of 16), one per thread.
        let parts = n == 1 && threads > 1 && work >= DnnlConv.splitWork ? DnnlConv.channelParts(channels: c, outputs: m, group: group, threads: threads) : 1
        let key = Key(images: n > 1, height: g.input[0], width: g.input[1], parts: parts, layout: .plain, byInputs: false)
        guard let plan = plan(key, w, W, channels: c, outputs: m, group: group, g, bias: bias != nil) else { return false }
        return plan.run(X, bias: bias, Y, images: n, epilogue: epilogue)
    }

    /// The same for NchwcConv (group 1): X [n, ceil(c/16), h, w, 16] (or nchw [n, c, h, w] with
    /// `plainSource`), Y [n, ceil(m/16), oh, ow, 16], every convolution oneDNN's (no `takes`
    /// rule: the layout has no reorders to pay; 3x3 unit-stride ones on its Winograd, blocked source
    /// and destination as its direct kernels). Padded lanes of Y are left as oneDNN and the
    /// epilogue write them (the caller zeroes them). False where oneDNN cannot run it.
    ///
    /// One image whose outputs are one block of 16 (SqueezeNet's squeeze 1x1s) splits its input
    /// channel blocks over the threads instead, the partial sums added before the epilogue.
    func forwardBlocked(_ X: UnsafePointer<Float>, _ w: Tensor, _ W: UnsafePointer<Float>, bias: UnsafePointer<Float>?, _ Y: UnsafeMutablePointer<Float>,
                        images n: Int, channels c: Int, outputs m: Int, _ g: ConvGeometry, plainSource: Bool, epilogue: ConvEpilogue<Float>?) -> Bool {
        guard g.rank == 2 else { return false }
        let threads = Parallel.isInsideRegion ? 1 : Parallel.threadCount
        let work = m * c * g.kernelSize * g.outputSize
        let split = n == 1 && threads > 1 && work >= DnnlConv.splitWork
        let parts = split ? DnnlConv.channelParts(channels: c, outputs: m, group: 1, threads: threads) : 1
        let layout: Layout = plainSource ? .plainToBlocked : .blocked
        // Pieces of whole blocks, at most one piece per full block: the last piece then holds two
        // or more blocks (oneDNN has no AVX-512 kernel for a blocked source of fewer than 16 channels).
        let pieces = min(threads, c / 16)
        if split && parts == 1 && !plainSource && pieces >= 2 {
            let key = Key(images: false, height: g.input[0], width: g.input[1], parts: pieces, layout: layout, byInputs: true)
            // (Where oneDNN refuses a part's shape, the whole convolution on one thread below.)
            if let plan = plan(key, w, W, channels: c, outputs: m, group: 1, g, bias: bias != nil) {
                return plan.runBlocked(X, bias: bias, Y, images: n, epilogue: epilogue)
            }
        }
        let key = Key(images: n > 1, height: g.input[0], width: g.input[1], parts: parts, layout: layout, byInputs: false)
        guard let plan = plan(key, w, W, channels: c, outputs: m, group: 1, g, bias: bias != nil) else { return false }
        return plan.runBlocked(X, bias: bias, Y, images: n, epilogue: epilogue)
    }

    private func plan(_ key: Key, _ w: Tensor, _ W: UnsafePointer<Float>, channels c: Int, outputs m: Int, group: Int, _ g: ConvGeometry, bias: Bool) -> Plan? {
        let found = state.withLock { s -> Plan?? in
            if s.source !== w.storage || s.shape != w.shape {
                s = State(source: w.storage, shape: w.shape, plans: [:])
                return .none
            }
            return s.plans[key]
        }
        if case .some(let kept) = found { return kept }
        let made = Plan(W, channels: c, outputs: m, group: group, g, bias: bias, parts: key.parts, layout: key.layout, byInputs: key.byInputs, budget: budget)
        return state.withLock { s -> Plan? in
            guard s.source === w.storage, s.shape == w.shape else { return made }
            if case .some(let current) = s.plans[key] { return current }
            if s.plans.count < DnnlConv.plansPerWeight { s.plans[key] = made }
            return made
        }
    }

    /// The primitives (and packed weights) for one input shape and one split.
    final class Plan: @unchecked Sendable {
        /// One block of output channels (all of them when the plan runs by images).
        struct Part {
            var conv: ot_conv_t
            let weights: Packed
            let group0: Int, groups: Int, input0: Int, inputs: Int, output0: Int, outputs: Int
            /// Whether the primitive adds the bias (only the first part of a split by input channels).
            let bias: Bool
            /// nchw -> the primitive's source layout, of this part's own input channels (grouped
            /// parts; nil where the source is nchw or shared).
            let sourceReorder: dnnl_primitive_t?
            /// The primitive's destination layout -> nchw (nil where it writes nchw).
            let destinationReorder: dnnl_primitive_t?
        }
        /// The input reordered once for all parts (one image, group 1): channel chunks of the
        /// source layout's blocks, one per thread.
        struct Chunk { let channel0: Int, channels: Int, reorder: dnnl_primitive_t }

        let parts: [Part]
        let shared: [Chunk]
        let sharedBytes: Int
        let c: Int, h: Int, w: Int, m: Int, oh: Int, ow: Int
        let sourceLayout: Int32
        /// The parts are pieces of the input channels (each all the outputs; `runBlocked` adds them).
        let byInputs: Bool
        /// Whether the parts run oneDNN's Winograd (their weights in its wino format).
        var winograd: Bool { parts.contains { $0.conv.weights.format_kind == dnnl_format_kind_wino } }

        init?(_ W: UnsafePointer<Float>, channels c: Int, outputs m: Int, group: Int, _ g: ConvGeometry, bias: Bool, parts count: Int,
              layout: Layout = .plain, byInputs: Bool = false, budget: KernelCacheBudget) {
            guard let engine = PackedGemm.engine else { return nil }
            let h = g.input[0], width = g.input[1], oh = g.output[0], ow = g.output[1]
            let cg = c / group, mg = m / group, K = g.kernelSize
            // Split: parts of whole groups (group > 1) or of output channels (group 1), each a multiple of 16.
            var ranges: [(g0: Int, gs: Int, o0: Int, os: Int, i0: Int, inputs: Int, bias: Bool)] = []
            if byInputs {
                // Group 1, blocked source: pieces of the input channel blocks, every output.
                guard group == 1, layout == .blocked else { return nil }
                let blocks = (c + 15) / 16
                for p in 0..<count {
                    let r = Parallel.chunk(p, of: count, count: blocks)
                    let i0 = r.lowerBound * 16, i1 = min(r.upperBound * 16, c)
                    ranges.append((0, 1, 0, m, i0, i1 - i0, bias && p == 0))
                }
            } else if group == 1 {
                let blocks = (m + 15) / 16
                for p in 0..<count {
                    let r = Parallel.chunk(p, of: count, count: blocks)
                    let o0 = r.lowerBound * 16, o1 = min(r.upperBound * 16, m)
                    ranges.append((0, 1, o0, o1 - o0, 0, c, bias))
                }
            } else {
                for p in 0..<count {
                    let r = Parallel.chunk(p, of: count, count: group)
                    ranges.append((r.lowerBound, r.count, r.lowerBound * mg, r.count * mg, r.lowerBound * cg, r.count * cg, bias))
                }
            }
            var made: [Part] = []
            var destroy: [dnnl_primitive_t] = []
            func fail() {
                for p in made { dnnl_primitive_destroy(p.conv.primitive) }
                for p in destroy { dnnl_primitive_destroy(p) }
            }
            var packed: [SIMD2<Int>: Packed] = [:]
            for (g0, gs, o0, os, i0, inputs, partBias) in ranges {
                // Blocked layouts: the source as NchwcConv holds it (no reorder in the plan).
                let wantedSource: Int32 = layout == .blocked ? OT_LAYOUT_16C : layout == .plainToBlocked ? OT_LAYOUT_NCHW
                    : inputs >= 16 ? OT_LAYOUT_16C : OT_LAYOUT_NCHW
                func create(_ algorithm: Int32) -> ot_conv_t? {
                    var conv = ot_conv_t()
                    let status = ot_conv_create(engine, 1, Int64(inputs), Int64(h), Int64(width), Int64(os), Int64(group == 1 ? 1 : gs),
                                                Int64(g.kernel[0]), Int64(g.kernel[1]), Int64(oh), Int64(ow), Int64(g.strides[0]), Int64(g.strides[1]),
                                                Int64(g.dilations[0]), Int64(g.dilations[1]), Int64(g.padsBegin[0]), Int64(g.padsBegin[1]),
                                                Int64(g.padsEnd[0]), Int64(g.padsEnd[1]), partBias ? 1 : 0,
                                                wantedSource, OT_LAYOUT_16C, algorithm, &conv)
                    return status == 0 && conv.primitive != nil ? conv : nil
                }
                // NchwcConv's 3x3 unit-stride convolutions: oneDNN's Winograd on the blocked
                // layouts (its direct kernel where refused, or not AVX-512).
                var conv = ot_conv_t()
                if layout == .blocked, DnnlConv.winogradShape(group: group, g), let wino = create(OT_CONV_WINOGRAD) {
                    if wino.avx512 != 0, wino.src_layout == OT_LAYOUT_16C, wino.dst_layout == OT_LAYOUT_16C {
                        conv = wino
                    } else if let p = wino.primitive {
                        dnnl_primitive_destroy(p)
                    }
                }
                if conv.primitive == nil, let direct = create(OT_CONV_DIRECT) { conv = direct }
                guard let primitive = conv.primitive else { fail(); return nil }
                guard conv.avx512 != 0, conv.src_layout != OT_LAYOUT_OTHER, conv.dst_layout != OT_LAYOUT_OTHER,
                      made.first.map({ $0.conv.src_layout == conv.src_layout }) ?? true,
                      // Parts start at a block of the source's and destination's layouts.
                      group == 1 || conv.src_layout == OT_LAYOUT_NCHW || (g0 * cg) % Int(conv.src_layout) == 0,
                      conv.dst_layout == OT_LAYOUT_NCHW || o0 % Int(conv.dst_layout) == 0,
                      layout == .plain || (conv.src_layout == wantedSource && conv.dst_layout == OT_LAYOUT_16C) else {
                    dnnl_primitive_destroy(primitive)
                    fail(); return nil
                }
                // The weight of this part: output channels o0 ..< o0 + os (whole groups), of input
                // channels i0 ..< i0 + inputs when the parts split them (copied out: not contiguous).
                let weights: Packed
                if let kept = packed[SIMD2(o0, i0)], ot_weights_equal(&kept.layout, &conv.weights) != 0 {
                    weights = kept
                } else {
                    var slice: [Float] = []
                    if byInputs {
                        slice = [Float](unsafeUninitializedCapacity: os * inputs * K) { buffer, initialized in
                            for o in 0..<os {
                                for i in 0..<inputs { for k in 0..<K { buffer[(o * inputs + i) * K + k] = W[((o0 + o) * cg + i0 + i) * K + k] } }
                            }
                            initialized = os * inputs * K
                        }
                    }
                    let made = slice.isEmpty ? Packed(engine, W + o0 * cg * K, outputs: os, inputs: inputs, groups: group == 1 ? 1 : gs,
                                                      kernel: g.kernel, layout: conv.weights, budget: budget)
                        : slice.withUnsafeBufferPointer { b in
                            b.baseAddress.flatMap { Packed(engine, $0, outputs: os, inputs: inputs, groups: 1, kernel: g.kernel, layout: conv.weights, budget: budget) }
                        }
                    guard let p = made else {
                        dnnl_primitive_destroy(primitive)
                        fail(); return nil
                    }
                    weights = p
                    packed[SIMD2(o0, i0)] = p
                }
                var sourceReorder: dnnl_primitive_t? = nil, destinationReorder: dnnl_primitive_t? = nil
                if layout == .plain && group > 1 && conv.src_layout != OT_LAYOUT_NCHW {
                    guard let r = ot_layout_reorder_create(engine, 1, Int64(inputs), Int64(h), Int64(width), OT_LAYOUT_NCHW, conv.src_layout) else {
                        dnnl_primitive_destroy(primitive); fail(); return nil
                    }
                    sourceReorder = r
                    destroy.append(r)
                }
                if layout == .plain && conv.dst_layout != OT_LAYOUT_NCHW {
                    guard let r = ot_layout_reorder_create(engine, 1, Int64(os), Int64(oh), Int64(ow), conv.dst_layout, OT_LAYOUT_NCHW) else {
                        dnnl_primitive_destroy(primitive); fail(); return nil
                    }
                    destinationReorder = r
                    destroy.append(r)
                }
                made.append(Part(conv: conv, weights: weights, group0: g0, groups: gs, input0: i0, inputs: inputs,
                                 output0: o0, outputs: os, bias: partBias, sourceReorder: sourceReorder, destinationReorder: destinationReorder))
            }
            let sourceLayout = made[0].conv.src_layout
            // Group 1 with a blocked source: the whole input reordered once, by chunks of channel blocks.
            var chunks: [Chunk] = []
            if layout == .plain && group == 1 && sourceLayout != OT_LAYOUT_NCHW {
                let block = Int(sourceLayout), blocks = (c + block - 1) / block
                let pieces = min(count, blocks)
                for p in 0..<pieces {
                    let r = Parallel.chunk(p, of: pieces, count: blocks)
                    let c0 = r.lowerBound * block, c1 = min(r.upperBound * block, c)
                    guard let reorder = ot_layout_reorder_create(engine, 1, Int64(c1 - c0), Int64(h), Int64(width), OT_LAYOUT_NCHW, sourceLayout) else {
                        for chunk in chunks { dnnl_primitive_destroy(chunk.reorder) }
                        fail(); return nil
                    }
                    chunks.append(Chunk(channel0: c0, channels: c1 - c0, reorder: reorder))
                }
            }
            parts = made
            shared = chunks
            sharedBytes = chunks.isEmpty ? 0 : made[0].conv.src_bytes
            self.sourceLayout = sourceLayout
            self.byInputs = byInputs
            (self.c, self.h, self.w, self.m, self.oh, self.ow) = (c, h, width, m, oh, ow)
        }

        deinit {
            for p in parts {
                dnnl_primitive_destroy(p.conv.primitive)
                if let r = p.sourceReorder { dnnl_primitive_destroy(r) }
                if let r = p.destinationReorder { dnnl_primitive_destroy(r) }
            }
            for chunk in shared { dnnl_primitive_destroy(chunk.reorder) }
        }

        /// The convolution of `images` images; false on an error of oneDNN (an allocation inside it).
        func run(_ X: UnsafePointer<Float>, bias: UnsafePointer<Float>?, _ Y: UnsafeMutablePointer<Float>, images n: Int,
                 epilogue: ConvEpilogue<Float>?) -> Bool {
            guard let engine = PackedGemm.engine else { return false }
            let I = h * w, P = oh * ow
            let failed = Atomic<Bool>(false)
            // The input in the source layout, for all parts (one image, group 1, blocked source).
            var sharedSource: UnsafeMutablePointer<Float>? = nil
            if n == 1 && !shared.isEmpty {
                guard let buffer = DnnlConv.allocate(sharedBytes) else { return false }
                sharedSource = buffer
                Parallel.forRange(shared.count) { r in
                    for i in r {
                        let chunk = shared[i]
                        if SignalHold.around({ ot_layout_reorder_run(engine, chunk.reorder, 1, Int64(chunk.channels), Int64(h), Int64(w), OT_LAYOUT_NCHW,
                                                 X + chunk.channel0 * I, sourceLayout, buffer + chunk.channel0 * I) }) != 0 {
                            failed.store(true, ordering: .relaxed)
                        }
                    }
                }
            }
            defer { sharedSource.map { free($0) } }
            if failed.load(ordering: .relaxed) { return false }
            // One part on one image (b): source reorder, convolution, destination reorder, epilogue.
            func convolve(_ part: Part, image b: Int, source: UnsafeMutablePointer<Float>?, destination: UnsafeMutablePointer<Float>?) -> Bool {
                let x = X + b * c * I + part.input0 * I
                var input: UnsafePointer<Float> = x
                if let shared = sharedSource {
                    input = UnsafePointer(shared)
                } else if part.conv.src_layout != OT_LAYOUT_NCHW, let source {
                    let reorder = part.sourceReorder ?? shared.first?.reorder
                    guard let reorder, SignalHold.around({ ot_layout_reorder_run(engine, reorder, 1, Int64(part.inputs), Int64(h), Int64(w), OT_LAYOUT_NCHW, x,
                                                             part.conv.src_layout, source) }) == 0 else { return false }
                    input = UnsafePointer(source)
                }
                let y = Y + (b * m + part.output0) * P
                let out = destination ?? y
                var conv = part.conv
                guard SignalHold.around({ ot_conv_run(engine, &conv, 1, Int64(part.inputs), Int64(h), Int64(w), input, part.weights.memory, bias.map { $0 + part.output0 },
                                  Int64(part.outputs), Int64(oh), Int64(ow), out) }) == 0 else { return false }
                if let reorder = part.destinationReorder, let destination {
                    guard SignalHold.around({ ot_layout_reorder_run(engine, reorder, 1, Int64(part.outputs), Int64(oh), Int64(ow), part.conv.dst_layout, destination,
                                                OT_LAYOUT_NCHW, y) }) == 0 else { return false }
                }
                if let epilogue {
                    let offset = (b * m + part.output0) * P, count = part.outputs * P
                    for start in stride(from: 0, to: count, by: convEpilogueRun) { epilogue.apply(Y, offset + start, min(convEpilogueRun, count - start)) }
                }
                return true
            }
            let items = n == 1 ? parts.count : n
            Parallel.forRange(items) { r in
                // A thread's own buffers for the blocked source and destination of one image.
                var source: UnsafeMutablePointer<Float>? = nil, destination: UnsafeMutablePointer<Float>? = nil
                let sourceBytes = parts.map { $0.conv.src_layout == OT_LAYOUT_NCHW || sharedSource != nil ? 0 : $0.conv.src_bytes }.max() ?? 0
                let destinationBytes = parts.map { $0.destinationReorder == nil ? 0 : $0.conv.dst_bytes }.max() ?? 0
                if sourceBytes > 0 { source = DnnlConv.allocate(sourceBytes) }
                if destinationBytes > 0 { destination = DnnlConv.allocate(destinationBytes) }
                defer {
                    source.map { free($0) }
                    destination.map { free($0) }
                }
                if (sourceBytes > 0 && source == nil) || (destinationBytes > 0 && destination == nil) {
                    failed.store(true, ordering: .relaxed)
                    return
                }
                for item in r {
                    if n == 1 {
                        if !convolve(parts[item], image: 0, source: source, destination: destination) { failed.store(true, ordering: .relaxed) }
                    } else {
                        for part in parts where !convolve(part, image: item, source: source, destination: destination) {
                            failed.store(true, ordering: .relaxed)
                        }
                    }
                }
            }
            return !failed.load(ordering: .relaxed)
        }

        /// The convolution of a blocked layout (`Layout.blocked`, `.plainToBlocked`): each part
        /// reads the image where it lies and writes its channel blocks of Y in place, the
        /// epilogue applied to them while they are in cache. False on an error of oneDNN.
        func runBlocked(_ X: UnsafePointer<Float>, bias: UnsafePointer<Float>?, _ Y: UnsafeMutablePointer<Float>, images n: Int,
                        epilogue: ConvEpilogue<Float>?) -> Bool {
            guard let engine = PackedGemm.engine else { return false }
            let I = h * w, P = oh * ow
            let sourceImage = sourceLayout == OT_LAYOUT_NCHW ? c * I : (c + 15) / 16 * 16 * I
            let destinationImage = (m + 15) / 16 * 16 * P
            let failed = Atomic<Bool>(false)
            if byInputs { return runByInputs(X, bias: bias, Y, images: n, epilogue: epilogue) }
            func convolve(_ part: Part, image b: Int) -> Bool {
                var conv = part.conv
                let offset = b * destinationImage + part.output0 * P
                guard SignalHold.around({ ot_conv_run(engine, &conv, 1, Int64(c), Int64(h), Int64(w), X + b * sourceImage, part.weights.memory,
                                  part.bias ? bias.map { $0 + part.output0 } : nil, Int64(part.outputs), Int64(oh), Int64(ow), Y + offset) }) == 0 else { return false }
                if let epilogue {
                    let count = (part.outputs + 15) / 16 * 16 * P
                    for start in stride(from: 0, to: count, by: convEpilogueRun) { epilogue.apply(Y, offset + start, min(convEpilogueRun, count - start)) }
                }
                return true
            }
            Parallel.forRange(n == 1 ? parts.count : n) { r in
                for item in r {
                    if n == 1 {
                        if !convolve(parts[item], image: 0) { failed.store(true, ordering: .relaxed) }
                    } else {
                        for part in parts where !convolve(part, image: item) { failed.store(true, ordering: .relaxed) }
                    }
                }
            }
            return !failed.load(ordering: .relaxed)
        }

        /// `runBlocked` of parts that split the input channels (blocked source, group 1): part 0
        /// writes Y (with the bias), each other part its own buffer, then the threads add the
        /// buffers into Y by ranges of positions and apply the epilogue to each range.
        private func runByInputs(_ X: UnsafePointer<Float>, bias: UnsafePointer<Float>?, _ Y: UnsafeMutablePointer<Float>, images n: Int,
                                 epilogue: ConvEpilogue<Float>?) -> Bool {
            guard let engine = PackedGemm.engine else { return false }
            let I = h * w, P = oh * ow
            let sourceImage = (c + 15) / 16 * 16 * I, destinationImage = (m + 15) / 16 * 16 * P
            let partials = parts.count - 1
            guard let buffer = DnnlConv.allocate(max(partials, 1) * destinationImage * MemoryLayout<Float>.size) else { return false }
            defer { free(buffer) }
            let failed = Atomic<Bool>(false)
            for b in 0..<n {
                let y = Y + b * destinationImage
                Parallel.forRange(parts.count) { r in
                    for i in r {
                        let part = parts[i]
                        var conv = part.conv
                        if SignalHold.around({ ot_conv_run(engine, &conv, 1, Int64(part.inputs), Int64(h), Int64(w), X + b * sourceImage + part.input0 * I, part.weights.memory,
                                       part.bias ? bias : nil, Int64(m), Int64(oh), Int64(ow), i == 0 ? y : buffer + (i - 1) * destinationImage) }) != 0 {
                            failed.store(true, ordering: .relaxed)
                        }
                    }
                }
                if failed.load(ordering: .relaxed) { return false }
                let runs = (destinationImage + convEpilogueRun - 1) / convEpilogueRun
                Parallel.forRange(runs) { r in
                    for run in r {
                        let start = run * convEpilogueRun, count = min(convEpilogueRun, destinationImage - start)
                        let out = UnsafeMutableRawPointer(y + start)
                        for k in 0..<partials {
                            let add = UnsafeRawPointer(buffer + k * destinationImage + start)
                            var i = 0
                            while i + 8 <= count {
                                let v = out.loadUnaligned(fromByteOffset: 4 * i, as: SIMD8<Float>.self) + add.loadUnaligned(fromByteOffset: 4 * i, as: SIMD8<Float>.self)
                                out.storeBytes(of: v, toByteOffset: 4 * i, as: SIMD8<Float>.self)
                                i += 8
                            }
                            while i < count {
                                y[start + i] += buffer[k * destinationImage + start + i]
                                i += 1
                            }
                        }
                        epilogue?.apply(Y, b * destinationImage + start, count)
                    }
                }
            }
            return true
        }
    }

    /// One part's weight in the layout its primitive reads, its bytes reserved from the budget.
    final class Packed: @unchecked Sendable {
        let memory: dnnl_memory_t
        var layout: dnnl_memory_desc_t
        let bytes: Int
        let budget: KernelCacheBudget

        init?(_ engine: dnnl_engine_t, _ W: UnsafePointer<Float>, outputs: Int, inputs: Int, groups: Int, kernel: [Int],
              layout: dnnl_memory_desc_t, budget: KernelCacheBudget) {
            var layout = layout
            let bytes = ot_weights_size(&layout)
            guard budget.reserve(bytes) else { return nil }
            guard let memory = SignalHold.around({ ot_conv_pack_weights(engine, W, Int64(outputs), Int64(inputs), Int64(groups), Int64(kernel[0]), Int64(kernel[1]), &layout) }) else {
                budget.release(bytes)
                return nil
            }
            self.memory = memory
            self.layout = layout
            self.bytes = bytes
            self.budget = budget
        }

        deinit {
            dnnl_memory_destroy(memory)
            budget.release(bytes)
        }
    }
}

/// The switches of `DnnlConvCache`.
enum DnnlConv: Sendable {
    /// One image splits over the threads from this many multiply-adds (below, a thread's part
    /// costs less than its call and the reorders).
    static let splitWork = 1 << 20
    /// Input shapes (and splits) whose primitives one weight keeps.
    static let plansPerWeight = 8

    /// The convolutions that take oneDNN: the classes measured faster than our kernels (per-node
    /// minima, same binary with the switch off and on, interleaved, 2 threads, load 5-6; oneDNN's
    /// time over ours):
    /// - stems 7x7/2 (0.61-0.88, ResNet-18/50 and Inception at b1 and b32), AlexNet's 11x11/4
    ///   (0.93), 3x3/2 (0.60-0.81), 5x5/1 (0.50), AlexNet's two-group 3x3 and 5x5 (0.88, 0.61):
    ///   every one;
    /// - 1x1 (1/1 and 1/2): only with 256+ outputs and 8M+ multiply-adds an image (0.64-0.99: ResNet-50's,
    ///   SqueezeNet's last); below, 1.0-4.9x (SqueezeNet's and Inception's small 1x1 at b1, MobileNet's at b32);
    /// - 3x3/1 (against Winograd): only one image of 13x13 or fewer positions with 64+ outputs (0.55-0.91,
    ///   SqueezeNet and Inception at 13x13, ResNet's 7x7); 14x14 and above 1.14-1.49x, and every 3x3/1
    ///   at batch 32 1.16-2.3x (Winograd over many images);
    /// - depthwise: 5x5 and strided over several images (0.57-0.77, MobileNet-V3 at b32); 3x3/1 1.40x;
    ///   at one image the strided ones lose (MobileNet-V3 b1: 207 against 110 us, 154 against 61).
    static func takes(images n: Int, channels c: Int, outputs m: Int, group: Int, _ g: ConvGeometry) -> Bool {
        guard g.rank == 2 else { return false }
        let k = g.kernel, strided = g.strides.contains { $0 > 1 }, dense = g.dilations.allSatisfy { $0 == 1 }
        if group == c && group > 1 { return n > 1 && (k[0] * k[1] >= 25 || strided) }
        if group > 1 { return true }
        if k == [1, 1] { return m >= 256 && m * c * g.outputSize >= 8 << 20 }
        if k == [3, 3] && !strided && dense { return n == 1 && g.outputSize <= 169 && m >= 64 }
        return true
    }

    /// Whether a convolution is of Winograd's class: 2-D 3x3, unit strides, dense, group 1.
    static func winogradShape(group: Int, _ g: ConvGeometry) -> Bool {
        g.rank == 2 && group == 1 && g.kernel == [3, 3] && g.strides.allSatisfy { $0 == 1 } && g.dilations.allSatisfy { $0 == 1 }
    }

    /// Parts of one image's output channels: whole groups, multiples of 16 channels.
    static func channelParts(channels c: Int, outputs m: Int, group: Int, threads: Int) -> Int {
        if group == 1 { return max(1, min(threads, m / 16)) }
        let cg = c / group, mg = m / group
        // Each part's first input and output channel on a block of 16.
        var parts = min(threads, group)
        while parts > 1 {
            let ok = (0..<parts).allSatisfy { p in
                let g0 = Parallel.chunk(p, of: parts, count: group).lowerBound
                return (g0 * cg) % 16 == 0 && (g0 * mg) % 16 == 0
            }
            if ok { return parts }
            parts -= 1
        }
        return 1
    }

    /// Whether oneDNN picks an AVX-512 implementation for a 3×3 convolution of 64 channels here.
    static let hasAVX512Kernels: Bool = {
        var conv = ot_conv_t()
        guard let engine = PackedGemm.engine,
              ot_conv_create(engine, 1, 64, 14, 14, 64, 1, 3, 3, 14, 14, 1, 1, 1, 1, 1, 1, 1, 1, 1, OT_LAYOUT_16C, OT_LAYOUT_16C, OT_CONV_DIRECT, &conv) == 0 else { return false }
        if let p = conv.primitive { dnnl_primitive_destroy(p) }
        return conv.avx512 != 0
    }()

    static func allocate(_ bytes: Int) -> UnsafeMutablePointer<Float>? {
        var raw: UnsafeMutableRawPointer?
        guard posix_memalign(&raw, 64, max(bytes, 64)) == 0, let raw else { return nil }
        return raw.assumingMemoryBound(to: Float.self)
    }

    /// False with `ONNX_TRAIN_DISABLE_PASSES=dnnl-conv` (or `all`), and on CPUs where oneDNN has no
    /// AVX-512 convolution (no engine, or another implementation picked).
    static var available: Bool { enabled && hasAVX512Kernels }

    static var enabled: Bool {
        let off = PassPipeline.disabledNames
        return !off.contains("dnnl-conv") && !off.contains("all")
    }
}
