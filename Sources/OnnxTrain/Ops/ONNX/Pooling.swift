import Foundation
#if arch(x86_64)
import _Builtin_intrinsics.intel
#endif

/// MaxPool (with Indices), AveragePool, LpPool, their Global forms, and MaxUnpool.

enum PoolKind { case max, average(countIncludePad: Bool), lp(p: Int) }

/// Visits, for every output position of one channel, the input offsets its window covers.
///
/// `body(o, offsets, padded)` gets the flat output index, the flat input offsets of the window
/// positions inside the image (kernel row-major order, so ties resolve to the first tap), and
/// how many window positions fall inside the padded image (what count_include_pad divides by).
/// Windows are separable: per dim and output index the valid taps are tabulated once, and a
/// window is their cartesian product.
func forEachWindow(_ g: ConvGeometry, _ body: (Int, [Int], Int) -> Void) {
    let r = g.rank, P = g.outputSize
    if P == 0 { return }
    let inStrides = contiguousStrides(g.input)
    var taps: [[[Int]]] = [], paddedCounts: [[Int]] = []
    for d in 0..<r {
        var perOutput: [[Int]] = [], counts: [Int] = []
        for o in 0..<g.output[d] {
            var list: [Int] = [], count = 0
            for k in 0..<g.kernel[d] {
                let pos = o * g.strides[d] - g.padsBegin[d] + k * g.dilations[d]
                if pos >= -g.padsBegin[d] && pos < g.input[d] + g.padsEnd[d] { count += 1 }
                if pos >= 0 && pos < g.input[d] { list.append(pos * inStrides[d]) }
            }
            perOutput.append(list); counts.append(count)
        }
        taps.append(perOutput); paddedCounts.append(counts)
    }
    var walk = Odometer(shape: g.output)
    var offsets: [Int] = [], next: [Int] = []
    offsets.reserveCapacity(g.kernelSize); next.reserveCapacity(g.kernelSize)
    for o in 0..<P {
        offsets.removeAll(keepingCapacity: true)
        offsets.append(0)
        var padded = 1
        for d in 0..<r {
            let list = taps[d][walk.index[d]]
            padded *= paddedCounts[d][walk.index[d]]
            next.removeAll(keepingCapacity: true)
            for a in offsets { for b in list { next.append(a + b) } }
            swap(&offsets, &next)
        }
        body(o, offsets, padded)
        walk.advance()
    }
}

/// Every window of a geometry as flat input offsets, built once and shared by all channels:
/// window `o` reads `offsets[starts[o]..<starts[o + 1]]`; `padded[o]` counts its taps inside the
/// padded image.
struct PoolWindows {
    var offsets: [Int] = [], starts: [Int] = [0], padded: [Int] = []

    init(_ g: ConvGeometry) throws {
        // A window holds at most min(kernel, input) in-image taps: bounds the table before building it.
        let taps = try Tensor.checkedElementCount([g.outputSize, min(g.kernelSize, g.inputSize)], "pooling window table")
        offsets.reserveCapacity(taps)
        padded.reserveCapacity(g.outputSize)
        forEachWindow(g) { _, window, count in
            offsets += window
            starts.append(offsets.count)
            padded.append(count)
        }
    }
}

/// Pools every channel of x [N, C, in...] -> [N, C, out...]; Float or Double.
func pool<T: FloatElement>(_ x: Tensor, kind: PoolKind, geometry g: ConvGeometry, _ type: T.Type) throws -> Tensor {
    let nc = x.shape[0] * x.shape[1], I = g.inputSize, P = g.outputSize
    if case .average = kind, g.kernel == g.input, P == 1, I > 0, g.padsBegin.allSatisfy({ $0 == 0 }), g.padsEnd.allSatisfy({ $0 == 0 }) {
        return try globalAverage(x, inputSize: I, outputShape: Array(x.shape.prefix(2)) + g.output, T.self)
    }
    if case .average(let includePad) = kind, g.rank == 2 {
        return try averagePoolRows(x, includePad: includePad, geometry: g, T.self)
    }
    var y = try Tensor(kernelZeros: T.dtype, shape: Array(x.shape.prefix(2)) + g.output, "pooling output")
    let w = try PoolWindows(g)
    try x.withUnsafeBufferPointer(as: T.self) { px in
        y.uncheckedMutableBufferPointer(as: T.self) { py in
            w.offsets.withUnsafeBufferPointer { offsets in
                w.starts.withUnsafeBufferPointer { starts in
                    for ch in 0..<nc {
                        let src = px.baseAddress! + ch * I, yb = ch * P
                        for o in 0..<P {
                            let range = starts[o]..<starts[o + 1]
                            switch kind {
                            case .max:
                                var m = -T.infinity
                                for i in range where src[offsets[i]] > m || src[offsets[i]].isNaN { m = src[offsets[i]] }
                                py[yb + o] = range.isEmpty ? 0 : m
                            case .average(let includePad):
                                var sum: T = 0
                                for i in range { sum += src[offsets[i]] }
                                let count = includePad ? w.padded[o] : range.count
                                py[yb + o] = count > 0 ? sum / T(count) : 0
                            case .lp(let p):
                                var sum: T = 0
                                for i in range {
                                    let a = abs(src[offsets[i]])
                                    sum += p == 2 ? a * a : T(fromDouble: pow(a.doubleValue, Double(p)))
                                }
                                py[yb + o] = p == 2 ? sum.squareRoot() : T(fromDouble: pow(sum.doubleValue, 1 / Double(p)))
                            }
                        }
                    }
                }
            }
        }
    }
    return y
}

/// GlobalAveragePool (or an unpadded window covering the whole image): the mean of each channel.
/// x: [N, C, in...] -> [N, C, 1...].
func globalAverage<T: FloatElement>(_ x: Tensor, inputSize I: Int, outputShape: [Int], _ type: T.Type) throws -> Tensor {
    var y = try Tensor(kernelUninitialized: T.dtype, shape: outputShape, "pooling output")
    let nc = y.count
    try x.withUnsafeBufferPointer(as: T.self) { px in
        y.uncheckedMutableBufferPointer(as: T.self) { py in
            guard let X = px.baseAddress, let Y = py.baseAddress else { return }
            Parallel.forRange(nc, minimumChunk: max(1, 16_384 / I)) { channels in
                for ch in channels { Y[ch] = rowSum(X + ch * I, I) / T(I) }
            }
        }
    }
    return y
}

/// MaxPool over any numeric type (uint8 and int8 are allowed since opset 12), with the argmax
/// as flat indices into x ([N, C, in...], row-major, or column-major over the spatial dims when
/// storage_order = 1).
struct MaxPoolOp: NumericOperation {
    let x: Tensor, g: ConvGeometry, storageOrder: Int, wantIndices: Bool
    func numeric<T: NumericElement>(_ type: T.Type) throws -> (Tensor, Tensor?) {
        let nc = x.shape[0] * x.shape[1], I = g.inputSize, P = g.outputSize
        if g.rank == 2, g.kernel == [2, 2], g.strides == [2, 2], g.dilations == [1, 1],
           g.padsBegin == [0, 0], g.padsEnd == [0, 0], g.output[0] * 2 <= g.input[0], g.output[1] * 2 <= g.input[1] {
            return try maxPool2x2(T.self)
        }
        if g.rank == 2 && !wantIndices { return (try maxPoolRows(T.self), nil) }
        if g.rank == 2 && storageOrder == 0 && g.inputSize < Int(Int32.max) { return try maxPoolRowsIndexed(T.self) }
        var y = try Tensor(kernelZeros: T.dtype, shape: Array(x.shape.prefix(2)) + g.output, "MaxPool output")
        var indices = [Int64](repeating: 0, count: wantIndices ? nc * P : 0)
        // Column-major spatial index of a row-major spatial offset (storage_order = 1).
        let rowStrides = contiguousStrides(g.input)
        var colStrides = [Int](repeating: 1, count: g.rank)
        for i in stride(from: 1, to: g.rank, by: 1) { colStrides[i] = colStrides[i - 1] * g.input[i - 1] }
        let w = try PoolWindows(g)
        try x.withUnsafeBufferPointer(as: T.self) { px in
            y.uncheckedMutableBufferPointer(as: T.self) { py in
                w.offsets.withUnsafeBufferPointer { offsets in
                    w.starts.withUnsafeBufferPointer { starts in
                        for ch in 0..<nc {
                            let src = px.baseAddress! + ch * I, yb = ch * P
                            for o in 0..<P {
                                let range = starts[o]..<starts[o + 1]
                                guard !range.isEmpty else { continue }
                                var best = offsets[range.lowerBound]
                                for i in range.dropFirst() where src[offsets[i]] > src[best] { best = offsets[i] }
                                py[yb + o] = src[best]
                                if wantIndices {
                                    var spatial = best
                                    if storageOrder == 1 {
                                        var rem = best; spatial = 0
                                        for i in 0..<g.rank { spatial += (rem / rowStrides[i]) * colStrides[i]; rem %= rowStrides[i] }
                                    }
                                    indices[yb + o] = Int64(ch * I + spatial)
                                }
                            }
                        }
                    }
                }
            }
        }
        return (y, wantIndices ? Tensor(shape: y.shape, scalars: indices) : nil)
    }
}

extension MaxPoolOp {
    /// The common 2×2, stride-2, unpadded 2-D window: y [N, C, oh, ow] and the flat argmax
    /// indices, straight from the two input rows of each output row, spread over the threads by
    /// channel. Taps are compared in row-major order and only a strictly greater value wins, as in
    /// the general path (so ties and NaNs resolve the same way).
    func maxPool2x2<T: NumericElement>(_ type: T.Type) throws -> (Tensor, Tensor?) {
        let nc = x.shape[0] * x.shape[1], I = g.inputSize, P = g.outputSize
        let (ih, iw, oh, ow) = (g.input[0], g.input[1], g.output[0], g.output[1])
        let shape = Array(x.shape.prefix(2)) + g.output
        var y = try Tensor(kernelUninitialized: T.dtype, shape: shape, "MaxPool output")
        let indices = wantIndices ? try Tensor(kernelUninitialized: .int64, shape: shape, "MaxPool indices") : nil
        if y.count == 0 { return (y, indices) }
        let idx = indices?.storage.bytes.assumingMemoryBound(to: Int64.self)   // fresh, not shared
        let columnMajor = storageOrder == 1
        try x.withUnsafeBufferPointer(as: T.self) { px in
            y.uncheckedMutableBufferPointer(as: T.self) { py in
                guard let X = px.baseAddress, let Y = py.baseAddress else { return }
                Parallel.forRange(nc, minimumChunk: max(1, 8_192 / max(P, 1))) { channels in
                    if T.self == Float.self && !columnMajor && I < Int(Int32.max) {
                        let X = UnsafeRawPointer(X).assumingMemoryBound(to: Float.self)
                        let Y = UnsafeMutableRawPointer(Y).assumingMemoryBound(to: Float.self)
                        for ch in channels {
                            maxPool2x2Float(X + ch * I, Y + ch * P, idx.map { $0 + ch * P }, base: Int64(ch * I), iw: iw, oh: oh, ow: ow)
                        }
                        return
                    }
                    for ch in channels {
                        let src = X + ch * I, dst = Y + ch * P
                        for i in 0..<oh {
                            let r0 = src + 2 * i * iw, r1 = r0 + iw
                            for j in 0..<ow {
                                // Selects rather than branches: which tap wins is data, and unpredictable.
                                let v0 = r0[2 * j], v1 = r0[2 * j + 1], v2 = r1[2 * j], v3 = r1[2 * j + 1]
                                var best = v0, tap = 0
                                let c1 = v1 > best; best = c1 ? v1 : best; tap = c1 ? 1 : tap
                                let c2 = v2 > best; best = c2 ? v2 : best; tap = c2 ? iw : tap
                                let c3 = v3 > best; best = c3 ? v3 : best; tap = c3 ? iw + 1 : tap
                                dst[i * ow + j] = best
                                if let idx {
                                    let at = 2 * i * iw + 2 * j + tap
                                    let spatial = columnMajor ? (at % iw) * ih + at / iw : at
                                    idx[ch * P + i * ow + j] = Int64(ch * I + spatial)
                                }
                            }
                        }
                    }
                }
            }
        }
        return (y, indices)
    }
}

/// A 2-D pooling geometry by kernel taps rather than by windows, for the row kernels below:
/// column tap kj reaches outputs jLo[kj]..<jHi[kj] (input column j·sw + kj·dw - pw inside),
/// output row i reads kernel rows kiLo[i]..<kiHi[i], firstKj[j] is output j's first in-image
/// column tap (-1: none), validCols[j] counts its in-image column taps, and paddedRows[i] ·
/// paddedCols[j] is the window's size inside the padded image (what count_include_pad divides by).
struct PoolTapRuns {
    var jLo: [Int], jHi: [Int], firstKj: [Int], validCols: [Int], paddedCols: [Int]
    var kiLo: [Int], kiHi: [Int], paddedRows: [Int]

    init(_ g: ConvGeometry) {
        let (ih, iw, oh, ow) = (g.input[0], g.input[1], g.output[0], g.output[1])
        let (kh, kw, sh, sw) = (g.kernel[0], g.kernel[1], g.strides[0], g.strides[1])
        let (dh, dw, ph, pw) = (g.dilations[0], g.dilations[1], g.padsBegin[0], g.padsBegin[1])
        jLo = [Int](repeating: 0, count: kw); jHi = jLo
        firstKj = [Int](repeating: -1, count: ow); validCols = [Int](repeating: 0, count: ow)
        // Ceiling divisions written so that a stride near Int.max cannot overflow (the geometry
        // checked kj·dw and iw + pw).
        func ceilDiv(_ a: Int, _ b: Int) -> Int { a / b + (a % b == 0 ? 0 : 1) }
        for kj in 0..<kw {
            let off = kj * dw - pw, end = iw - off
            jLo[kj] = min(ow, off >= 0 ? 0 : ceilDiv(-off, sw))
            jHi[kj] = max(jLo[kj], end <= 0 ? 0 : min(ow, ceilDiv(end, sw)))
            for j in jLo[kj]..<jHi[kj] {
                if firstKj[j] < 0 { firstKj[j] = kj }
                validCols[j] += 1
            }
        }
        kiLo = [Int](repeating: 0, count: oh); kiHi = kiLo
        for i in 0..<oh {
            let valid = (0..<kh).filter { let r = i * sh - ph + $0 * dh; return r >= 0 && r < ih }
            kiLo[i] = valid.first ?? 0; kiHi[i] = (valid.last ?? -1) + 1
        }
        func padded(_ o: Int, _ d: Int) -> Int {
            (0..<g.kernel[d]).filter { let at = o * g.strides[d] - g.padsBegin[d] + $0 * g.dilations[d]; return at >= -g.padsBegin[d] && at < g.input[d] + g.padsEnd[d] }.count
        }
        paddedRows = (0..<oh).map { padded($0, 0) }
        paddedCols = (0..<ow).map { padded($0, 1) }
    }

    /// For output row `i` of one channel: body(input row, kj, jLo, jHi) for every in-image tap,
    /// kernel row-major, the input row `src` offset so that output j of the run reads `row[j·sw]`.
    @inline(__always)
    func forEachTap<T>(row i: Int, _ g: ConvGeometry, _ src: UnsafePointer<T>, _ body: (UnsafePointer<T>, Int, Int) -> Void) {
        let (iw, sh, ph, dh, dw, pw) = (g.input[1], g.strides[0], g.padsBegin[0], g.dilations[0], g.dilations[1], g.padsBegin[1])
        for ki in kiLo[i]..<kiHi[i] {
            let row = src + (i * sh - ph + ki * dh) * iw
            for kj in 0..<jLo.count where jLo[kj] < jHi[kj] { body(row + kj * dw - pw, jLo[kj], jHi[kj]) }
        }
    }
}

extension PoolTapRuns {
    /// y [N, C, oh, ow] (zeros first) from x [N, C, ih, iw] row by row: body(x's channel plane,
    /// y's output row, i) for every output row i that has in-image kernel rows, channels spread
    /// over the threads. The shared frame of the row kernels below.
    static func pooled<T: TensorElement>(_ x: Tensor, _ g: ConvGeometry, _ name: String,
                                         _ body: (_ runs: PoolTapRuns, _ src: UnsafePointer<T>, _ row: UnsafeMutablePointer<T>, _ i: Int) -> Void) throws -> Tensor {
        let nc = x.shape[0] * x.shape[1], I = g.inputSize, P = g.outputSize, K = g.kernelSize
        let (oh, ow) = (g.output[0], g.output[1])
        var y = try Tensor(kernelZeros: T.dtype, shape: Array(x.shape.prefix(2)) + g.output, name)
        if y.count == 0 || I == 0 { return y }
        let runs = PoolTapRuns(g)
        try x.withUnsafeBufferPointer(as: T.self) { px in
            y.uncheckedMutableBufferPointer(as: T.self) { py in
                guard let X = px.baseAddress, let Y = py.baseAddress else { return }
                Parallel.forRange(nc, minimumChunk: max(1, 8_192 / max(P * K, 1))) { channels in
                    for ch in channels {
                        for i in 0..<oh where runs.kiLo[i] < runs.kiHi[i] { body(runs, X + ch * I, Y + ch * P + i * ow, i) }
                    }
                }
            }
        }
        return y
    }
}

/// What `PoolTapRuns.paddedFloat` folds, a type so that each kernel is compiled for its own.
protocol PoolLaneFold { static var isMax: Bool { get } }
enum MaxLanes: PoolLaneFold { static var isMax: Bool { true } }
enum SumLanes: PoolLaneFold { static var isMax: Bool { false } }

extension PoolTapRuns {
    /// Float32 2-D MaxPool (`MaxLanes`, no indices) or AveragePool sums (`SumLanes`) at column stride 1 or 2,
    /// every output written once: per channel the input rows are copied once into a scratch
    /// plane with filler columns on both sides (-inf for MaxPool, which is never strictly
    /// greater; +0 for the sums, which adds nothing to a sum that starts at +0), then each output
    /// row is folded 8 outputs at a time in a register over its in-image kernel rows and every
    /// column tap (kernel row-major). MaxPool's lanes start from each output's first in-image
    /// tap (0 for a window wholly in the padding, whose taps are all filler), the sums from +0:
    /// per output the same operations on the same in-image values in the same order as the
    /// tap-by-tap row kernels, so the results are bit for bit theirs (NaNs included).
    /// `finish(runs, y row, i)` runs on each output row with in-image kernel rows (AveragePool's
    /// division). Nil when the row kernels should run instead (stride past 2, or a scratch row
    /// that padding or dilation would make over 64 KiB, or a scratch plane over 16 MiB).
    static func paddedFloat<Fold: PoolLaneFold>(_ x: Tensor, _ g: ConvGeometry, _ name: String, _ fold: Fold.Type,
                            _ finish: (PoolTapRuns, UnsafeMutablePointer<Float>, Int) -> Void) throws -> Tensor? {
        let (ih, iw, oh, ow) = (g.input[0], g.input[1], g.output[0], g.output[1])
        let (kw, sh, sw, ph, pw, dh, dw) = (g.kernel[1], g.strides[0], g.strides[1], g.padsBegin[0], g.padsBegin[1],
                                            g.dilations[0], g.dilations[1])
        let blocks = (ow + 7) / 8
        // Output j's column tap kj reads scratch column j·sw + kj·dw (input column minus pw); a
        // stride-2 block loads 16 lanes, one past its last even lane.
        let (reach, o1) = (8 * blocks - 1).multipliedReportingOverflow(by: sw)
        let (taps, o2) = (kw - 1).multipliedReportingOverflow(by: dw)
        guard sw <= 2, !o1, !o2, pw < 1 << 14, reach < 1 << 14, taps < 1 << 14 else { return nil }
        // Even, so that a stride-2 sum's plane row splits into two halves of `width / 2` (see `split`).
        let width = (max(pw + iw, reach + taps + 2) + 1) & ~1
        guard width <= 16_384, ih <= (1 << 22) / width else { return nil }
        // AveragePool at column stride 2: each plane row is stored as its even padded columns then
        // its odd ones (`splitRow`), so that every column tap of 8 outputs is one 8-lane load
        // rather than a 16-lane load and an even-lane shuffle, the shuffles done once per input row
        // instead of once per tap and output row (3·3 = 9 per ShuffleNet's 3×3 stride-2 window).
        let split = !Fold.isMax && sw == 2, half = width / 2
        let nc = x.shape[0] * x.shape[1], I = g.inputSize, P = g.outputSize, K = g.kernelSize
        // Every output row with in-image kernel rows is written below, the others zeroed there.
        var y = I == 0 ? try Tensor(kernelZeros: .float32, shape: Array(x.shape.prefix(2)) + g.output, name)
                       : try Tensor(kernelUninitialized: .float32, shape: Array(x.shape.prefix(2)) + g.output, name)
        if y.count == 0 || I == 0 { return y }
        let runs = PoolTapRuns(g)
        let fill: Float = Fold.isMax ? -.infinity : 0
        // Blocks of 8 outputs with a lane whose first in-image tap is not column tap 0.
        let edgeBlock = (0..<blocks).map { b in (8 * b..<min(8 * b + 8, ow)).contains { runs.firstKj[$0] != 0 } }
        // Outputs with no in-image column tap (only where the padding is as wide as the window).
        let emptyColumns = (0..<ow).filter { runs.firstKj[$0] < 0 }
        try x.withUnsafeBufferPointer(as: Float.self) { px in
            y.uncheckedMutableBufferPointer(as: Float.self) { py in
                guard let X = px.baseAddress, let Y = py.baseAddress else { return }
                Parallel.forRange(nc, minimumChunk: max(1, 8_192 / max(P * K, 1))) { channels in
                    let plane = UnsafeMutablePointer<Float>.allocate(capacity: ih * width)
                    let out = UnsafeMutablePointer<Float>.allocate(capacity: 8 * blocks)
                    // MaxPool: each plane row's column-tap maxima, 8·blocks a row (see `separableMax`).
                    let rowMax = UnsafeMutablePointer<Float>.allocate(capacity: Fold.isMax ? ih * 8 * blocks : 0)
                    // `directRowMaxima`'s padded row: the -inf filler but where it copies input columns.
                    let edge = UnsafeMutablePointer<Float>.allocate(capacity: Fold.isMax ? width : 0)
                    defer { plane.deallocate(); out.deallocate(); rowMax.deallocate(); edge.deallocate() }
                    edge.initialize(repeating: fill, count: Fold.isMax ? width : 0)
                    plane.initialize(repeating: fill, count: ih * width)
                    out.initialize(repeating: 0, count: 8 * blocks)
                    for ch in channels {
                        let src = X + ch * I
                        if Fold.isMax {
                            if separableMax(src, plane, rowMax, out, Y + ch * P, edge) { continue }
                        } else if split {
                            for r in 0..<ih { splitRow(src + r &* iw, plane + r &* width) }
                        } else {
                            for r in 0..<ih { _ = copyRow(src + r &* iw, plane + (r &* width &+ pw), iw, checkNaN: false) }
                        }
                        for i in 0..<oh {
                            let d = Y + ch * P + i * ow
                            guard runs.kiLo[i] < runs.kiHi[i] else {
                                d.update(repeating: 0, count: ow)
                                continue
                            }
                            if split {
                                sumSplitRow(plane, d, out, i)
                            } else if sw == 1 {
                                foldRow(plane, d, out, i, sw: 1)
                            } else {
                                foldRow(plane, d, out, i, sw: 2)
                            }
                            finish(runs, d, i)
                        }
                    }
                }
            }
        }
        /// MaxPool of one channel without NaNs, in two passes: once the input rows are copied into
        /// the plane (and checked for NaNs; read in place for 3 column taps at stride 2, see
        /// `directRowMaxima`), each plane row's column taps are folded into `rowMax`
        /// (output column j: the row's taps kj = 0..<kw at j·sw + kj·dw, filler included); then each
        /// output folds its kernel rows' `rowMax` entries. Both folds run in kernel row-major order
        /// with "strictly greater wins" from the window's first tap, and without NaNs that rule is
        /// "the first of the window's largest values" whatever the grouping, the -inf filler never
        /// being strictly greater: the same bits as the per-window rule (-0 and +0 ties included),
        /// but with chains of kw and kh taps instead of kw·kh, and each row's column taps folded
        /// once rather than once per output row that reads it. Outputs whose window has no
        /// in-image tap are 0, as in the per-window loops. Returns false, with the plane holding the
        /// channel and `y` not written, when the channel holds a NaN (whose rule depends on
        /// which tap comes first: the register blocks below run it).
        func separableMax(_ src: UnsafePointer<Float>, _ plane: UnsafeMutablePointer<Float>, _ rowMax: UnsafeMutablePointer<Float>,
                          _ out: UnsafeMutablePointer<Float>, _ y: UnsafeMutablePointer<Float>, _ edge: UnsafeMutablePointer<Float>) -> Bool {
            let hw = 8 &* blocks
            if sw == 2 && kw == 3 && dw == 1 {
                if !directRowMaxima(src, rowMax, edge) {
                    for r in 0..<ih { _ = copyRow(src + r &* iw, plane + (r &* width &+ pw), iw, checkNaN: false) }
                    return false
                }
            } else {
                var nan = false
                for r in 0..<ih where copyRow(src + r &* iw, plane + (r &* width &+ pw), iw, checkNaN: true) { nan = true }
                if nan { return false }
                // A second loop: loads of a row just stored (across two stores) would wait for them.
                for r in 0..<ih {
                    let p = plane + r &* width
                    // Column taps with the stride (and the common 3-tap run) constant where inlined.
                    let h = rowMax + r &* hw
                    if sw == 1 {
                        if kw == 3 && dw == 1 { rowMaxima(p, h, sw: 1, kw: 3, dw: 1) } else { rowMaxima(p, h, sw: 1, kw: kw, dw: dw) }
                    } else {
                        rowMaxima(p, h, sw: 2, kw: kw, dw: dw)
                    }
                }
            }
            for i in 0..<oh {
                let d = y + i &* ow
                let (k0, k1) = (runs.kiLo[i], runs.kiHi[i])
                guard k0 < k1 else {
                    d.update(repeating: 0, count: ow)
                    continue
                }
                let first = rowMax + (i &* sh &- ph &+ k0 &* dh) &* hw, step = dh &* hw, rows = k1 &- k0
                for b in 0..<blocks {
                    let j = 8 &* b
                    var acc = UnsafeRawPointer(first + j).loadUnaligned(as: SIMD8<Float>.self)
                    for k in 1..<rows { acc = laterWins(acc, UnsafeRawPointer(first + (k &* step &+ j)).loadUnaligned(as: SIMD8<Float>.self)) }
                    if j &+ 8 <= ow {
                        UnsafeMutableRawPointer(d + j).storeBytes(of: acc, as: SIMD8<Float>.self)
                    } else {
                        UnsafeMutableRawPointer(out).storeBytes(of: acc, as: SIMD8<Float>.self)
                        _ = copyRow(out, d + j, ow &- j, checkNaN: false)
                    }
                }
                for j in emptyColumns { d[j] = 0 }
            }
            return true
        }
        /// `separableMax`'s row pass for 3 column taps at stride 2 (ResNet's and ShuffleNet's 3×3
        /// stride-2 pad-1 pools) straight from the channel's rows rather than from the plane: output
        /// j's taps, padded columns 2j, 2j + 1, 2j + 2, are the even and odd lanes of the 16 columns
        /// from 2j and the even lanes of the 16 from 2j + 2, loaded from the input row where both
        /// runs lie inside it, else from `edge`, a row with the -inf filler around the input
        /// columns they read. The same values in the same order as from the plane, without writing
        /// and re-reading the plane (a third of the pool's memory traffic per channel). False when a
        /// value read is a NaN (`rowMax` then partly written).
        func directRowMaxima(_ src: UnsafePointer<Float>, _ rowMax: UnsafeMutablePointer<Float>, _ edge: UnsafeMutablePointer<Float>) -> Bool {
            var nan = SIMDMask<SIMD16<Int32>>(repeating: false)
            let hw = 8 &* blocks
            for r in 0..<ih {
                let s = src + r &* iw, h = rowMax + r &* hw
                for b in 0..<blocks {
                    // Padded columns q ..< q + 18 are input columns q - pw ..< q + 18 - pw.
                    let q = 16 &* b, lo = q &- pw
                    let p: UnsafePointer<Float>
                    if lo >= 0 && lo &+ 18 <= iw {
                        p = s + lo
                    } else {
                        for c in max(0, lo)..<min(iw, lo &+ 18) { edge[c &+ pw] = s[c] }
                        p = UnsafePointer(edge + q)
                    }
                    let a = UnsafeRawPointer(p).loadUnaligned(as: SIMD16<Float>.self)
                    let c = UnsafeRawPointer(p + 2).loadUnaligned(as: SIMD16<Float>.self)
                    nan .|= (a .!= a) .| (c .!= c)
                    UnsafeMutableRawPointer(h + 8 &* b).storeBytes(of: laterWins(laterWins(a.evenHalf, a.oddHalf), c.evenHalf), as: SIMD8<Float>.self)
                }
            }
            return !any(nan)
        }
        /// One input row into a stride-2 sum's plane row `p`: input column c is padded column
        /// q = c + pw, stored at p[q / 2] when q is even and at p[half + q / 2] when odd; the
        /// padding columns keep their +0 filler.
        @inline(__always)
        func splitRow(_ s: UnsafePointer<Float>, _ p: UnsafeMutablePointer<Float>) {
            let odd = p + half
            var c = 0
            if pw & 1 == 1 && iw > 0 {
                odd[pw >> 1] = s[0]
                c = 1
            }
            // From here c + pw is even: 16 columns are 8 even and 8 odd padded columns.
            while c &+ 16 <= iw {
                let v = UnsafeRawPointer(s + c).loadUnaligned(as: SIMD16<Float>.self), q = (c &+ pw) >> 1
                UnsafeMutableRawPointer(p + q).storeBytes(of: v.evenHalf, as: SIMD8<Float>.self)
                UnsafeMutableRawPointer(odd + q).storeBytes(of: v.oddHalf, as: SIMD8<Float>.self)
                c &+= 16
            }
            while c < iw {
                let q = c &+ pw
                if q & 1 == 0 { p[q >> 1] = s[c] } else { odd[q >> 1] = s[c] }
                c &+= 1
            }
        }
        /// `foldRow`'s sums at column stride 2 on a split plane: output j's column tap kj, padded
        /// column 2j + kj·dw, is the even half's entry j + kj·dw/2 or the odd half's, 8 outputs one
        /// load; the same values added in the same order from +0.
        @inline(__always)
        func sumSplitRow(_ plane: UnsafeMutablePointer<Float>, _ d: UnsafeMutablePointer<Float>, _ out: UnsafeMutablePointer<Float>, _ i: Int) {
            let (k0, k1) = (runs.kiLo[i], runs.kiHi[i])
            for b in 0..<blocks {
                let j = 8 &* b
                var acc = SIMD8<Float>()
                for ki in k0..<k1 {
                    let r: Int = i &* sh &- ph &+ ki &* dh
                    let row: UnsafeMutablePointer<Float> = plane + (r &* width &+ j)
                    for kj in 0..<kw {
                        let at: Int = kj &* dw
                        let offset: Int = (at & 1) &* half &+ (at >> 1)
                        acc += UnsafeRawPointer(row + offset).loadUnaligned(as: SIMD8<Float>.self)
                    }
                }
                if j &+ 8 <= ow {
                    UnsafeMutableRawPointer(d + j).storeBytes(of: acc, as: SIMD8<Float>.self)
                } else {
                    UnsafeMutableRawPointer(out).storeBytes(of: acc, as: SIMD8<Float>.self)
                    _ = copyRow(out, d + j, ow &- j, checkNaN: false)
                }
            }
        }
        /// `rowMax[j]` = the fold of plane row `p`'s column taps of output j ("strictly greater wins",
        /// tap 0 first), 8 outputs a step; reads as far as `foldRow`.
        @inline(__always)
        func rowMaxima(_ p: UnsafeMutablePointer<Float>, _ h: UnsafeMutablePointer<Float>, sw: Int, kw: Int, dw: Int) {
            for b in 0..<blocks {
                let j = 8 &* b
                var acc = strided8(p, j, sw)
                for kj in 1..<kw { acc = laterWins(acc, strided8(p + kj &* dw, j, sw)) }
                UnsafeMutableRawPointer(h + j).storeBytes(of: acc, as: SIMD8<Float>.self)
            }
        }
        /// Output row i into `d` (the last partial block through `out`), with the column stride a
        /// constant where it is inlined.
        @inline(__always)
        func foldRow(_ plane: UnsafeMutablePointer<Float>, _ d: UnsafeMutablePointer<Float>, _ out: UnsafeMutablePointer<Float>, _ i: Int, sw: Int) {
            let (k0, k1) = (runs.kiLo[i], runs.kiHi[i])
            let first = plane + (i &* sh &- ph &+ k0 &* dh) &* width
            for b in 0..<blocks {
                let j = 8 &* b
                var acc = SIMD8<Float>()
                if Fold.isMax {
                    // Each lane starts from its first in-image tap: column tap 0 but in the lanes
                    // whose tap 0 is in the padding (set one by one, in the register: a vector
                    // load of lanes just stored one by one would stall).
                    acc = strided8(first, j, sw)
                    if edgeBlock[b] {
                        for l in j..<min(j + 8, ow) where runs.firstKj[l] != 0 {
                            acc[l - j] = runs.firstKj[l] > 0 ? first[l * sw + runs.firstKj[l] * dw] : 0
                        }
                    }
                }
                for ki in k0..<k1 {
                    let row = plane + (i &* sh &- ph &+ ki &* dh) &* width
                    for kj in 0..<kw {
                        let v = strided8(row + kj &* dw, j, sw)
                        if Fold.isMax { acc = laterWins(acc, v) } else { acc += v }
                    }
                }
                if j &+ 8 <= ow {
                    UnsafeMutableRawPointer(d + j).storeBytes(of: acc, as: SIMD8<Float>.self)
                } else {
                    UnsafeMutableRawPointer(out).storeBytes(of: acc, as: SIMD8<Float>.self)
                    _ = copyRow(out, d + j, ow &- j, checkNaN: false)
                }
            }
        }
        return y
    }
}

extension MaxPoolOp {
    /// Any 2-D MaxPool without indices (3×3 stride 2 in ResNet and SqueezeNet), by kernel taps
    /// (PoolTapRuns): per output row, each output starts from its first in-image tap, then every
    /// in-image tap (kernel row-major) is folded in as "strictly greater wins" over the run of
    /// outputs it reaches. That is the per-window rule (so NaNs, and windows wholly in the
    /// padding, which stay 0, come out the same) in loops over runs that vectorise.
    /// x [N, C, ih, iw] -> y [N, C, oh, ow].
    func maxPoolRows<T: NumericElement>(_ type: T.Type) throws -> Tensor {
        let (iw, ow, sh, sw, ph, pw, dh, dw) = (g.input[1], g.output[1], g.strides[0], g.strides[1],
                                                g.padsBegin[0], g.padsBegin[1], g.dilations[0], g.dilations[1])
        if T.self == Float.self, let y = try channelLanesPool(x, g, average: nil) { return y }
        if T.self == Float.self, let y = try PoolTapRuns.paddedFloat(x, g, "MaxPool output", MaxLanes.self, { _, _, _ in }) { return y }
        return try PoolTapRuns.pooled(x, g, "MaxPool output") { (runs, src: UnsafePointer<T>, d, i) in
            let first = src + (i * sh - ph + runs.kiLo[i] * dh) * iw - pw
            for j in 0..<ow where runs.firstKj[j] >= 0 { d[j] = first[j * sw + runs.firstKj[j] * dw] }
            runs.forEachTap(row: i, g, src) { s, lo, hi in
                var j = lo
                if T.self == Float.self {
                    // "Strictly greater wins" as a lane select (NaN taps never win, ties keep the earlier tap).
                    j = floatLaneRuns(s, d, lo: lo, hi: hi, sw: sw) { current, v in current.replacing(with: v, where: v .> current) }
                }
                if sw == 1 {
                    for j in j..<hi { let v = s[j]; d[j] = v > d[j] ? v : d[j] }
                } else {
                    for j in j..<hi { let v = s[j * sw]; d[j] = v > d[j] ? v : d[j] }
                }
            }
        }
    }
}

/// Float32 2-D MaxPool (without indices) and AveragePool on planes under 16 outputs wide
/// (Inception's 13×13 and 6×6 MaxPools, ShuffleNet's 14×14 and 7×7 AveragePools, where a row is
/// less than two vectors and the row kernels spent their time on per-row and per-channel
/// bookkeeping: [1, 832, 6, 6] took 3-6x onnxruntime's time), eight channels at a time, one per
/// lane: the eight planes are interleaved into a scratch buffer, every window folds its in-image
/// taps in kernel row-major order, and the results are spread back to the eight planes. MaxPool
/// folds with "strictly greater wins" from the window's first tap (`laterWins`), AveragePool adds
/// from +0 and divides by the window's count (its taps inside the padded image with
/// count_include_pad, else its in-image taps): per lane the per-window loops' operations in their
/// order, so NaNs, ties of -0 and +0 and windows wholly in the padding (0) come out bit for bit
/// as there. The last group of a channel count not a multiple of eight overlaps the one before
/// and writes only its new channels. Nil (the row kernels run) for wider planes, fewer than
/// eight channels, or planes over 4096 elements. `average`: nil for MaxPool, else count_include_pad.
func channelLanesPool(_ x: Tensor, _ g: ConvGeometry, average includePad: Bool?) throws -> Tensor? {
    let nc = x.shape[0] * x.shape[1], I = g.inputSize, P = g.outputSize
    guard x.dtype == .float32, g.rank == 2, g.output[1] < 16, nc >= 8, I > 0, P > 0, I <= 4096, P <= 4096 else { return nil }
    let w = try PoolWindows(g)
    var y = try Tensor(kernelUninitialized: .float32, shape: Array(x.shape.prefix(2)) + g.output, "pooling output")
    let groups = (nc + 7) / 8, taps = max(1, w.offsets.count)
    // Each window's divisor (0: a window with no tap to divide, whose output is 0).
    let counts: [Float] = (0..<P).map { o in Float(includePad == true ? w.padded[o] : w.starts[o + 1] - w.starts[o]) }
    try x.withUnsafeBufferPointer(as: Float.self) { px in
        y.uncheckedMutableBufferPointer(as: Float.self) { py in
            w.offsets.withUnsafeBufferPointer { offsets in
                w.starts.withUnsafeBufferPointer { starts in
                    counts.withUnsafeBufferPointer { counts in
                        guard let X = px.baseAddress, let Y = py.baseAddress else { return }
                        Parallel.forRange(groups, minimumChunk: max(1, 4_096 / (taps + I + P))) { range in
                            let lanesIn = UnsafeMutablePointer<Float>.allocate(capacity: 8 * I)
                            let lanesOut = UnsafeMutablePointer<Float>.allocate(capacity: 8 * P)
                            defer { lanesIn.deallocate(); lanesOut.deallocate() }
                            for group in range {
                                let c0 = min(8 * group, nc - 8)
                                poolChannelLanes(X + c0 * I, Y + c0 * P, inputSize: I, outputSize: P, firstLane: 8 * group - c0,
                                                 offsets, starts, includePad == nil ? nil : counts, lanesIn, lanesOut)
                            }
                        }
                    }
                }
            }
        }
    }
    return y
}

/// Eight channels of `channelLanesPool`: src and dst at the group's first channel, lanes
/// firstLane..<8 written back; `counts` nil for MaxPool, else AveragePool's divisors.
@inline(never)
func poolChannelLanes(_ src: UnsafePointer<Float>, _ dst: UnsafeMutablePointer<Float>, inputSize I: Int, outputSize P: Int, firstLane: Int,
                      _ offsets: UnsafeBufferPointer<Int>, _ starts: UnsafeBufferPointer<Int>, _ counts: UnsafeBufferPointer<Float>?,
                      _ lanesIn: UnsafeMutablePointer<Float>, _ lanesOut: UnsafeMutablePointer<Float>) {
    // In and out by 8×8 transposes in registers (a scalar move per element was most of a 14×14 pool's time).
    var p = 0
    while p &+ 8 <= I {
        transpose8x8Float(src + p, I, lanesIn + p &* 8, 8)
        p &+= 8
    }
    for l in 0..<8 {
        let s = src + l &* I
        for p in p..<I { lanesIn[p &* 8 &+ l] = s[p] }
    }
    let taps = UnsafeRawPointer(lanesIn)
    @inline(__always) func tap(_ k: Int) -> SIMD8<Float> { taps.loadUnaligned(fromByteOffset: offsets[k] &* 32, as: SIMD8<Float>.self) }
    if let counts {
        for o in 0..<P {
            let lo = starts[o], hi = starts[o &+ 1]
            var acc = SIMD8<Float>()
            var k = lo
            while k < hi {
                acc += tap(k)
                k &+= 1
            }
            let count = counts[o]
            UnsafeMutableRawPointer(lanesOut + o &* 8).storeBytes(of: count > 0 ? acc / SIMD8(repeating: count) : SIMD8(), as: SIMD8<Float>.self)
        }
    } else {
        for o in 0..<P {
            let lo = starts[o], hi = starts[o &+ 1]
            var acc = SIMD8<Float>()
            if lo < hi {
                acc = tap(lo)
                var k = lo &+ 1
                while k < hi {
                    acc = laterWins(acc, tap(k))
                    k &+= 1
                }
            }
            UnsafeMutableRawPointer(lanesOut + o &* 8).storeBytes(of: acc, as: SIMD8<Float>.self)
        }
    }
    var o = 0
    if firstLane == 0 {
        while o &+ 8 <= P {
            transpose8x8Float(lanesOut + o &* 8, 8, dst + o, P)
            o &+= 8
        }
    }
    for l in firstLane..<8 {
        let d = dst + l &* P
        for o in o..<P { d[o] = lanesOut[o &* 8 &+ l] }
    }
}

/// dst[i·dstStride + k] = src[k·srcStride + i] for i, k in 0..<8: eight 8-lane loads, three rounds
/// of even/odd unshuffles (each rotates the 6-bit index (row, column) of the 64 values right by one
/// bit, so three swap row and column, as in `transposeBand`), eight 8-lane stores. Moves bits.
@inline(__always)
func transpose8x8Float(_ src: UnsafePointer<Float>, _ srcStride: Int, _ dst: UnsafeMutablePointer<Float>, _ dstStride: Int) {
    typealias V = SIMD8<Float>
    @inline(__always) func load(_ k: Int) -> V { UnsafeRawPointer(src + k &* srcStride).loadUnaligned(as: V.self) }
    @inline(__always) func even(_ a: V, _ b: V) -> V { V(lowHalf: a.evenHalf, highHalf: b.evenHalf) }
    @inline(__always) func odd(_ a: V, _ b: V) -> V { V(lowHalf: a.oddHalf, highHalf: b.oddHalf) }
    var (r0, r1, r2, r3, r4, r5, r6, r7) = (load(0), load(1), load(2), load(3), load(4), load(5), load(6), load(7))
    for _ in 0..<3 {
        (r0, r1, r2, r3, r4, r5, r6, r7) = (even(r0, r1), even(r2, r3), even(r4, r5), even(r6, r7),
                                            odd(r0, r1), odd(r2, r3), odd(r4, r5), odd(r6, r7))
    }
    @inline(__always) func store(_ i: Int, _ v: V) { UnsafeMutableRawPointer(dst + i &* dstStride).storeBytes(of: v, as: V.self) }
    store(0, r0); store(1, r1); store(2, r2); store(3, r3); store(4, r4); store(5, r5); store(6, r6); store(7, r7)
}

extension MaxPoolOp {
    /// `maxPoolRows` with the flat argmax indices (training's 3×3 stride-2 MaxPool in ResNet ran
    /// the per-window scalar loop, one thread): beside each output row, the row-major input
    /// offset of its winning tap, replaced whenever a tap is strictly greater, so ties and NaNs
    /// resolve as in the per-window loop; windows wholly in the padding give 0 and index 0, as
    /// there. x [N, C, ih, iw] -> y, indices [N, C, oh, ow] (index = ch·ih·iw + offset).
    /// Every output and index is written once, those windows' zeros too, so neither is zero-filled
    /// first (ResNet-18's 224×224 pool zeroed 19 MB per step for nothing).
    func maxPoolRowsIndexed<T: NumericElement>(_ type: T.Type) throws -> (Tensor, Tensor?) {
        let nc = x.shape[0] * x.shape[1], I = g.inputSize, P = g.outputSize, K = g.kernelSize
        let (iw, oh, ow) = (g.input[1], g.output[0], g.output[1])
        let (sh, sw, ph, pw, dh, dw) = (g.strides[0], g.strides[1], g.padsBegin[0], g.padsBegin[1], g.dilations[0], g.dilations[1])
        let shape = Array(x.shape.prefix(2)) + g.output
        if nc * P == 0 || I == 0 {
            return (try Tensor(kernelZeros: T.dtype, shape: shape, "MaxPool output"), try Tensor(kernelZeros: .int64, shape: shape, "MaxPool indices"))
        }
        var y = try Tensor(kernelUninitialized: T.dtype, shape: shape, "MaxPool output")
        var indices = try Tensor(kernelUninitialized: .int64, shape: shape, "MaxPool indices")
        let runs = PoolTapRuns(g)
        try x.withUnsafeBufferPointer(as: T.self) { px in
            y.uncheckedMutableBufferPointer(as: T.self) { py in
                indices.uncheckedMutableBufferPointer(as: Int64.self) { pi in
                    guard let X = px.baseAddress, let Y = py.baseAddress, let IX = pi.baseAddress else { return }
                    Parallel.forRange(nc, minimumChunk: max(1, 8_192 / max(P * K, 1))) { channels in
                        let best = UnsafeMutablePointer<Int32>.allocate(capacity: ow)
                        defer { best.deallocate() }
                        for ch in channels {
                            let src = X + ch * I
                            for i in 0..<oh {
                                let d = Y + ch * P + i * ow, out = IX + ch * P + i * ow
                                guard runs.kiLo[i] < runs.kiHi[i] else {
                                    d.update(repeating: 0, count: ow)
                                    out.update(repeating: 0, count: ow)
                                    continue
                                }
                                let first = (i * sh - ph + runs.kiLo[i] * dh) * iw - pw
                                for j in 0..<ow {
                                    guard runs.firstKj[j] >= 0 else { d[j] = 0; continue }
                                    let at = first + j * sw + runs.firstKj[j] * dw
                                    best[j] = Int32(at)
                                    d[j] = src[at]
                                }
                                runs.forEachTap(row: i, g, src) { s, lo, hi in
                                    let base = src.distance(to: s)
                                    var j = lo
                                    if T.self == Float.self {
                                        j = maxPoolIndexedRunFloat(UnsafeRawPointer(s).assumingMemoryBound(to: Float.self),
                                                                   UnsafeMutableRawPointer(d).assumingMemoryBound(to: Float.self),
                                                                   best, lo: lo, hi: hi, sw: sw, base: base)
                                    }
                                    while j < hi {
                                        let v = s[j * sw]
                                        if v > d[j] { d[j] = v; best[j] = Int32(base + j * sw) }
                                        j += 1
                                    }
                                }
                                for j in 0..<ow { out[j] = runs.firstKj[j] >= 0 ? Int64(ch * I) + Int64(best[j]) : 0 }
                            }
                        }
                    }
                }
            }
        }
        return (y, indices)
    }
}

/// The vector part of one kernel tap's run in `maxPoolRowsIndexed` for float32 at column stride 1
/// or 2 (stride 2 splits 16 loaded lanes into even and odd, reading no further than the run's last
/// element): eight outputs at a time, "strictly greater wins" as lane selects for the value and
/// its offset. Returns the first output it left for the scalar loop.
@inline(__always)
func maxPoolIndexedRunFloat(_ s: UnsafePointer<Float>, _ d: UnsafeMutablePointer<Float>, _ best: UnsafeMutablePointer<Int32>,
                            lo: Int, hi: Int, sw: Int, base: Int) -> Int {
    var j = lo
    guard sw <= 2 else { return j }
    let lanes = SIMD8<Int32>(0, 1, 2, 3, 4, 5, 6, 7) &* Int32(sw)
    while j + 8 + (sw - 1) <= hi {
        let v = strided8(s, j, sw)
        var current = UnsafeRawPointer(d + j).loadUnaligned(as: SIMD8<Float>.self)
        var offsets = UnsafeRawPointer(best + j).loadUnaligned(as: SIMD8<Int32>.self)
        let wins = v .> current
        current.replace(with: v, where: wins)
        offsets.replace(with: SIMD8<Int32>(repeating: Int32(base + j * sw)) &+ lanes, where: wins)
        UnsafeMutableRawPointer(d + j).storeBytes(of: current, as: SIMD8<Float>.self)
        UnsafeMutableRawPointer(best + j).storeBytes(of: offsets, as: SIMD8<Int32>.self)
        j += 8
    }
    return j
}

/// Outputs j..<j+8 of a kernel tap's run at column stride `sw` (1 or 2), `s[j·sw]` as eight lanes:
/// stride 2 loads 16 lanes and keeps the even ones, so it reads up to `s[2j + 15]`; callers keep
/// `j + 8 + (sw - 1) <= hi`, which stays inside the run's in-image columns.
@inline(__always)
func strided8(_ s: UnsafePointer<Float>, _ j: Int, _ sw: Int) -> SIMD8<Float> {
    sw == 1 ? UnsafeRawPointer(s + j).loadUnaligned(as: SIMD8<Float>.self)
            : UnsafeRawPointer(s + 2 * j).loadUnaligned(as: SIMD16<Float>.self).evenHalf
}

/// MaxPool's "strictly greater wins" on eight lanes: `later` where it is strictly greater than
/// `earlier`, else `earlier` (a NaN in `later` never wins, one in `earlier` stays, ties keep
/// `earlier`), which is one vmaxps(later, earlier). Written as the intrinsic where there is one:
/// LLVM lowered a chain of the generic lane selects to mask extractions and inserts.
@inline(__always)
func laterWins(_ earlier: SIMD8<Float>, _ later: SIMD8<Float>) -> SIMD8<Float> {
    #if ONNX_TRAIN_X86_64_V3 && arch(x86_64)
    return _mm256_max_ps(later, earlier)
    #else
    return earlier.replacing(with: later, where: later .> earlier)
    #endif
}

/// Copies `n` floats from `s` to `d`, eight lanes a step (the rows are short: a memmove call per
/// row cost more than the copy), and tells whether any of them is a NaN when `checkNaN`.
@inline(__always)
func copyRow(_ s: UnsafePointer<Float>, _ d: UnsafeMutablePointer<Float>, _ n: Int, checkNaN: Bool) -> Bool {
    var nan = SIMDMask<SIMD8<Int32>>(repeating: false), scalarNaN = false
    var c = 0
    while c &+ 8 <= n {
        let v = UnsafeRawPointer(s + c).loadUnaligned(as: SIMD8<Float>.self)
        if checkNaN { nan .|= v .!= v }
        UnsafeMutableRawPointer(d + c).storeBytes(of: v, as: SIMD8<Float>.self)
        c &+= 8
    }
    while c < n {
        let v = s[c]
        if checkNaN { scalarNaN = scalarNaN || v.isNaN }
        d[c] = v
        c &+= 1
    }
    return checkNaN && (any(nan) || scalarNaN)
}

/// The vector part of one kernel tap's run in the float32 row kernels without indices (MaxPool,
/// AveragePool), column stride 1 or 2: `d[j] = combine(d[j], s[j·sw])` eight outputs at a time,
/// each lane the same operation in the same order as the scalar loop. `s` and `d` are the kernels'
/// generic pointers, bound to Float by the caller's type check. Returns the first output it left
/// for the scalar loop.
@inline(__always)
func floatLaneRuns<T>(_ s: UnsafePointer<T>, _ d: UnsafeMutablePointer<T>, lo: Int, hi: Int, sw: Int,
                      _ combine: (SIMD8<Float>, SIMD8<Float>) -> SIMD8<Float>) -> Int {
    let s = UnsafeRawPointer(s).assumingMemoryBound(to: Float.self), d = UnsafeMutableRawPointer(d)
    var j = lo
    if sw == 1 {
        while j + 8 <= hi {
            let at = d + 4 * j
            at.storeBytes(of: combine(at.loadUnaligned(as: SIMD8<Float>.self), strided8(s, j, 1)), as: SIMD8<Float>.self)
            j += 8
        }
    } else if sw == 2 {
        while j + 9 <= hi {
            let at = d + 4 * j
            at.storeBytes(of: combine(at.loadUnaligned(as: SIMD8<Float>.self), strided8(s, j, 2)), as: SIMD8<Float>.self)
            j += 8
        }
    }
    return j
}

/// Any 2-D AveragePool by kernel taps (PoolTapRuns): per output row, every in-image tap is added
/// over the run of outputs it reaches (kernel row-major, so each sum is added in the per-window
/// order), then each output is divided by its count. x [N, C, ih, iw] -> y [N, C, oh, ow].
func averagePoolRows<T: FloatElement>(_ x: Tensor, includePad: Bool, geometry g: ConvGeometry, _ type: T.Type) throws -> Tensor {
    let (ow, sw) = (g.output[1], g.strides[1])
    /// Output row i of sums -> averages.
    func divide<U: FloatElement>(_ runs: PoolTapRuns, _ d: UnsafeMutablePointer<U>, _ i: Int) {
        let rows = includePad ? runs.paddedRows[i] : runs.kiHi[i] - runs.kiLo[i]
        for j in 0..<ow {
            let count = rows * (includePad ? runs.paddedCols[j] : runs.validCols[j])
            d[j] = count > 0 ? d[j] / U(count) : 0
        }
    }
    if T.self == Float.self, let y = try channelLanesPool(x, g, average: includePad) { return y }
    if T.self == Float.self {
        // Each output's count as a float32 (exact: at most the kernel size), so that a row divides
        // 8 lanes at a time: the same correctly rounded divisions as `divide`, which was a quarter
        // of a 7-wide pool's time. A row with a zero count (a window wholly in the padding,
        // without count_include_pad) divides one by one.
        let runs = PoolTapRuns(g), oh = g.output[0]
        var counts = [Float](repeating: 0, count: oh * ow), zeroRow = [Bool](repeating: false, count: oh)
        for i in 0..<oh {
            let rows = includePad ? runs.paddedRows[i] : runs.kiHi[i] - runs.kiLo[i]
            for j in 0..<ow {
                let count = rows * (includePad ? runs.paddedCols[j] : runs.validCols[j])
                counts[i * ow + j] = Float(count)
                if count == 0 { zeroRow[i] = true }
            }
        }
        let y = try counts.withUnsafeBufferPointer { counts in
            try PoolTapRuns.paddedFloat(x, g, "pooling output", SumLanes.self) { runs, d, i in
                guard !zeroRow[i], let c = counts.baseAddress.map({ $0 + i * ow }) else { return divide(runs, d, i) }
                var j = 0
                while j + 8 <= ow {
                    let at = UnsafeMutableRawPointer(d + j)
                    at.storeBytes(of: at.loadUnaligned(as: SIMD8<Float>.self) / UnsafeRawPointer(c + j).loadUnaligned(as: SIMD8<Float>.self), as: SIMD8<Float>.self)
                    j += 8
                }
                while j < ow { d[j] = d[j] / c[j]; j += 1 }
            }
        }
        if let y { return y }
    }
    return try PoolTapRuns.pooled(x, g, "pooling output") { (runs, src: UnsafePointer<T>, d, i) in
        runs.forEachTap(row: i, g, src) { s, lo, hi in
            var j = lo
            if T.self == Float.self { j = floatLaneRuns(s, d, lo: lo, hi: hi, sw: sw) { sum, v in sum + v } }
            if sw == 1 {
                for j in j..<hi { d[j] += s[j] }
            } else {
                for j in j..<hi { d[j] += s[j * sw] }
            }
        }
        divide(runs, d, i)
    }
}

/// One channel of the 2×2 stride-2 MaxPool in float32, eight outputs at a time: each input row
/// pair is loaded as 16 lanes and split into even and odd columns; the taps are compared in
/// row-major order with "strictly greater wins" as lane selects (so ties and NaNs resolve as in
/// the scalar path), and the winning tap's flat index (`base` + spatial offset) is written when
/// `indices` is given.
@inline(__always)
func maxPool2x2Float(_ src: UnsafePointer<Float>, _ dst: UnsafeMutablePointer<Float>, _ indices: UnsafeMutablePointer<Int64>?,
                     base: Int64, iw: Int, oh: Int, ow: Int) {
    let lanes = SIMD8<Int32>(0, 1, 2, 3, 4, 5, 6, 7)
    for i in 0..<oh {
        let r0 = src + 2 * i * iw, r1 = r0 + iw
        let rowBase = base + Int64(2 * i * iw)
        var j = 0
        while j + 8 <= ow {
            let a = UnsafeRawPointer(r0 + 2 * j).loadUnaligned(as: SIMD16<Float>.self)
            let b = UnsafeRawPointer(r1 + 2 * j).loadUnaligned(as: SIMD16<Float>.self)
            let v1 = a.oddHalf, v2 = b.evenHalf, v3 = b.oddHalf
            var best = a.evenHalf
            var tap = SIMD8<Int32>(repeating: 0)
            let m1 = v1 .> best; best.replace(with: v1, where: m1); tap.replace(with: 1, where: m1)
            let m2 = v2 .> best; best.replace(with: v2, where: m2); tap.replace(with: Int32(iw), where: m2)
            let m3 = v3 .> best; best.replace(with: v3, where: m3); tap.replace(with: Int32(iw + 1), where: m3)
            UnsafeMutableRawPointer(dst + i * ow + j).storeBytes(of: best, as: SIMD8<Float>.self)
            if let indices {
                let at = tap &+ (lanes &+ Int32(j)) &* 2
                let out = indices + i * ow + j
                for l in 0..<8 { out[l] = rowBase + Int64(at[l]) }
            }
            j += 8
        }
        while j < ow {
            let v0 = r0[2 * j], v1 = r0[2 * j + 1], v2 = r1[2 * j], v3 = r1[2 * j + 1]
            var best = v0, tap = 0
            if v1 > best { best = v1; tap = 1 }
            if v2 > best { best = v2; tap = iw }
            if v3 > best { best = v3; tap = iw + 1 }
            dst[i * ow + j] = best
            indices?[i * ow + j] = rowBase + Int64(2 * j + tap)
            j += 1
        }
    }
}

struct PoolKernel: Kernel {
    let window: WindowAttributes
    let kind: PoolKind
    let storageOrder: Int
    let global: Bool
    let wantIndices: Bool

    init(_ ctx: NodeContext, kind: PoolKind, global: Bool = false) throws {
        wantIndices = ctx.hasOutput(1)
        window = try WindowAttributes(ctx)
        self.kind = kind
        self.global = global
        storageOrder = try ctx.int("storage_order", default: 0)
        if !global && window.kernelShape.isEmpty { throw KernelError("attribute 'kernel_shape' is required") }
    }

    func geometry(_ x: Tensor) throws -> ConvGeometry {
        guard x.rank >= 3 else { throw KernelError("pooling input must be [N, C, spatial...], got \(x.shape)") }
        let spatial = Array(x.shape.dropFirst(2))
        if global { return try ConvGeometry(input: spatial, kernel: spatial.map { max($0, 1) }) }
        return try window.geometry(spatial: spatial, kernel: window.kernelShape)
    }

    struct Op: ElementOperation {
        let x: Tensor, kind: PoolKind, g: ConvGeometry
        func float<T: FloatElement>(_ type: T.Type) throws -> Tensor { try pool(x, kind: kind, geometry: g, T.self) }
    }

    func run(_ inputs: [Value?], _ context: ExecutionContext) throws -> [Value?] {
        let x = try inputs.tensor(0)
        let g = try geometry(x)
        if case .max = kind {
            let wide = x.isHalf ? x.widenedToFloat() : x
            let (y, indices) = try dispatch(wide.dtype, MaxPoolOp(x: wide, g: g, storageOrder: storageOrder, wantIndices: wantIndices))
            return [.tensor(x.isHalf ? y.narrowed(to: x.dtype) : y), indices.map(Value.tensor)]
        }
        return try withFloatCompute([x]) { t in [try dispatch(t[0]!.dtype, Op(x: t[0]!, kind: kind, g: g))] }.map { $0.map(Value.tensor) }
    }
}

/// MaxUnpool: scatters X into zeros at the flat Indices of a MaxPool; the output shape is the
/// `output_shape` input, or the pooling input size implied by kernel, strides and pads.
struct MaxUnpoolKernel: Kernel {
    let window: WindowAttributes
    init(_ ctx: NodeContext) throws {
        window = try WindowAttributes(ctx)
        if window.kernelShape.isEmpty { throw KernelError("attribute 'kernel_shape' is required") }
    }
    func run(_ inputs: [Value?], _ context: ExecutionContext) throws -> [Value?] {
        let x = try inputs.tensor(0)
        guard let indices = try inputs.tensor(1).intValues() else { throw KernelError("I must be an integer tensor") }
        guard indices.count == x.count else { throw KernelError("I has \(indices.count) elements, X has \(x.count)") }
        let r = x.rank - 2
        guard r >= 1, window.kernelShape.count == r else { throw KernelError("X \(x.shape) does not fit kernel_shape \(window.kernelShape)") }
        let s = window.strides.isEmpty ? Array(repeating: 1, count: r) : window.strides
        let p = window.pads.isEmpty ? Array(repeating: 0, count: 2 * r) : window.pads
        guard s.count == r, p.count == 2 * r else { throw KernelError("strides \(window.strides) or pads \(window.pads) do not fit \(r) spatial dims") }
        let inferred = try Array(x.shape.prefix(2)) + (0..<r).map { i in
            let (a, o1) = (x.shape[i + 2] - 1).multipliedReportingOverflow(by: s[i])
            let (b, o2) = a.addingReportingOverflow(window.kernelShape[i])
            let (c, o3) = b.subtractingReportingOverflow(p[i])
            let (d, o4) = c.subtractingReportingOverflow(p[i + r])
            guard !(o1 || o2 || o3 || o4) else { throw KernelError("strides \(s), kernel_shape \(window.kernelShape) and pads \(p) overflow Int") }
            return d
        }
        guard inferred.allSatisfy({ $0 >= 0 }) else { throw KernelError("MaxUnpool output shape \(inferred) is negative") }
        // Indices address the inferred shape; an explicit output_shape places that block at the
        // origin of a larger zero tensor (as the ONNX reference does).
        var outShape = inferred
        if let shapeTensor = try inputs.optionalTensor(2) {
            guard let s = shapeTensor.intValues(), s.count == x.rank, zip(s, inferred).allSatisfy({ $0 >= $1 }) else {
                throw KernelError("output_shape must hold \(x.rank) sizes no smaller than \(inferred)")
            }
            outShape = s
        }
        let y = try Tensor(kernelZeros: x.dtype, shape: outShape, "MaxUnpool output")  // fresh, so its storage is not shared
        let total = Tensor.elementCount(inferred)
        let size = x.dtype.byteSize
        let src = x.rawBytes
        let dst = y.storage.bytes
        let inferredStrides = contiguousStrides(inferred), outStrides = contiguousStrides(outShape)
        for (i, index) in indices.enumerated() {
            guard index >= 0 && index < total else { throw KernelError("index \(index) is out of range for output \(inferred)") }
            var rem = index, target = 0
            for d in 0..<inferred.count { target += (rem / inferredStrides[d]) * outStrides[d]; rem %= inferredStrides[d] }
            if size > 0 { (dst + target * size).copyMemory(from: src.baseAddress! + i * size, byteCount: size) }
        }
        return [.tensor(y)]
    }
}

func registerPoolingOps(_ registry: OpRegistry) {
    registry.register("MaxPool", since: 1) { ctx in try PoolKernel(ctx, kind: .max) }
    registry.register("AveragePool", since: 1) { ctx in
        try PoolKernel(ctx, kind: .average(countIncludePad: ctx.int("count_include_pad", default: 0) != 0))
    }
    registry.register("LpPool", since: 1) { ctx in try PoolKernel(ctx, kind: .lp(p: ctx.int("p", default: 2))) }
    registry.register("GlobalMaxPool", since: 1) { ctx in try PoolKernel(ctx, kind: .max, global: true) }
    registry.register("GlobalAveragePool", since: 1) { ctx in try PoolKernel(ctx, kind: .average(countIncludePad: false), global: true) }
    registry.register("GlobalLpPool", since: 2) { ctx in try PoolKernel(ctx, kind: .lp(p: ctx.int("p", default: 2)), global: true) }
    registry.register("MaxUnpool", since: 9) { ctx in try MaxUnpoolKernel(ctx) }
}
