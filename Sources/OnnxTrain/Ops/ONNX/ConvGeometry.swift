#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Shared machinery for convolution and pooling: window geometry (auto_pad resolved to explicit
/// pads), im2col/col2im, and the float GEMM entry point. Training kernels (ConvGrad, pooling
/// gradients) reuse these, so they are internal functions with no attribute parsing inside.

/// ONNX `auto_pad` values.
enum AutoPad: Equatable {
    case notSet, sameUpper, sameLower, valid

    init(_ text: String) throws {
        switch text {
        case "NOTSET", "": self = .notSet
        case "SAME_UPPER": self = .sameUpper
        case "SAME_LOWER": self = .sameLower
        case "VALID": self = .valid
        default: throw KernelError("auto_pad '\(text)' is not one of NOTSET, SAME_UPPER, SAME_LOWER, VALID")
        }
    }
}

/// The attributes shared by Conv-like and pooling ops, parsed once per node.
/// Empty arrays mean "use the default for the input's rank" (resolved in `geometry`).
struct WindowAttributes {
    var kernelShape: [Int]     // empty: taken from the weight (Conv)
    var strides: [Int]
    var dilations: [Int]
    var pads: [Int]            // [begin..., end...]
    var autoPad: AutoPad
    var ceilMode: Bool

    init(_ ctx: NodeContext) throws {
        kernelShape = try ctx.ints("kernel_shape", default: [])
        strides = try ctx.ints("strides", default: [])
        dilations = try ctx.ints("dilations", default: [])
        pads = try ctx.ints("pads", default: [])
        autoPad = try AutoPad(ctx.string("auto_pad", default: "NOTSET"))
        ceilMode = try ctx.int("ceil_mode", default: 0) != 0
        if strides.contains(where: { $0 <= 0 }) { throw KernelError("strides must be positive, got \(strides)") }
        if dilations.contains(where: { $0 <= 0 }) { throw KernelError("dilations must be positive, got \(dilations)") }
        if pads.contains(where: { $0 < 0 }) { throw KernelError("pads must not be negative, got \(pads)") }
    }

    /// The window geometry for an input with spatial dims `spatial` and window `kernel`.
    func geometry(spatial: [Int], kernel: [Int]) throws -> ConvGeometry {
        try ConvGeometry(input: spatial, kernel: kernel, strides: strides, dilations: dilations,
                         pads: pads, autoPad: autoPad, ceilMode: ceilMode)
    }
}

/// A sliding window over N spatial dims with explicit pads: output size per dim, and the map
/// from (output position, kernel offset) to input position `o * stride - padBegin + k * dilation`.
struct ConvGeometry: Equatable {
    var input: [Int]
    var kernel: [Int]
    var strides: [Int]
    var dilations: [Int]
    var padsBegin: [Int]
    var padsEnd: [Int]
    var output: [Int]

    var rank: Int { input.count }
    var inputSize: Int { Tensor.elementCount(input) }
    var outputSize: Int { Tensor.elementCount(output) }
    var kernelSize: Int { Tensor.elementCount(kernel) }

    /// Resolves strides/dilations defaults (1), `auto_pad` and `ceil_mode` into explicit pads and
    /// the output size (pooling ceil mode as in PyTorch and the ONNX reference: a last window that
    /// would start in the end padding is dropped).
    init(input: [Int], kernel: [Int], strides: [Int] = [], dilations: [Int] = [], pads: [Int] = [],
         autoPad: AutoPad = .notSet, ceilMode: Bool = false) throws {
        let r = input.count
        guard kernel.count == r else { throw KernelError("kernel shape \(kernel) does not fit \(r) spatial dims") }
        let s = strides.isEmpty ? Array(repeating: 1, count: r) : strides
        let d = dilations.isEmpty ? Array(repeating: 1, count: r) : dilations
        guard s.count == r else { throw KernelError("strides \(strides) do not fit \(r) spatial dims") }
        guard d.count == r else { throw KernelError("dilations \(dilations) do not fit \(r) spatial dims") }
        guard kernel.allSatisfy({ $0 > 0 }) else { throw KernelError("kernel shape \(kernel) must be positive") }
        var pb = Array(repeating: 0, count: r), pe = Array(repeating: 0, count: r)
        var out = Array(repeating: 0, count: r)
        guard input.allSatisfy({ $0 >= 0 }) else { throw KernelError("input spatial shape \(input) has a negative dimension") }
        if autoPad == .notSet && !pads.isEmpty && pads.count != 2 * r {
            throw KernelError("pads \(pads) do not fit \(r) spatial dims")
        }
        // Attribute values up to Int.max reach here: every sum and product is overflow-checked
        // (a KernelError naming the attribute), then the output and window element counts.
        for i in 0..<r {
            let (span0, o1) = (kernel[i] - 1).multipliedReportingOverflow(by: d[i])
            guard !o1, span0 < Int.max else {
                throw KernelError("kernel_shape \(kernel) with dilations \(d) spans more than Int.max elements")
            }
            let extent = span0 + 1
            switch autoPad {
            case .sameUpper, .sameLower:
                out[i] = input[i] / s[i] + (input[i] % s[i] == 0 ? 0 : 1)
                let (stridden, o2) = max(out[i] - 1, 0).multipliedReportingOverflow(by: s[i])
                let (reach, o3) = stridden.addingReportingOverflow(extent)
                guard !o2, !o3 else {
                    throw KernelError("strides \(s) and kernel_shape \(kernel) (dilations \(d)) overflow Int for auto_pad padding")
                }
                let total = max(0, reach - input[i])
                pb[i] = autoPad == .sameUpper ? total / 2 : total - total / 2
                pe[i] = total - pb[i]
            case .valid:
                out[i] = input[i] >= extent ? (input[i] - extent) / s[i] + 1 : 0
            case .notSet:
                if !pads.isEmpty { pb[i] = pads[i]; pe[i] = pads[i + r] }
                let (a, o2) = input[i].addingReportingOverflow(pb[i])
                let (padded, o3) = a.addingReportingOverflow(pe[i])
                guard !o2, !o3 else { throw KernelError("pads \(pads) overflow Int on an input of size \(input[i])") }
                let span = padded - extent
                if span < 0 { out[i] = 0; break }
                if ceilMode {
                    out[i] = span / s[i] + (span % s[i] == 0 ? 0 : 1) + 1
                    // (out - 1) * s <= span + s - 1 cannot overflow unless s is huge: check it.
                    let (start, o4) = (out[i] - 1).multipliedReportingOverflow(by: s[i])
                    if o4 || start >= a { out[i] -= 1 }
                } else {
                    out[i] = span / s[i] + 1
                }
            }
        }
        _ = try Tensor.checkedElementCount(out, "output spatial")
        _ = try Tensor.checkedElementCount(kernel, "kernel_shape")
        self.input = input; self.kernel = kernel; self.strides = s; self.dilations = d
        self.padsBegin = pb; self.padsEnd = pe; self.output = out
    }

    /// A geometry from fully explicit values (ConvTranspose builds its own).
    init(input: [Int], kernel: [Int], strides: [Int], dilations: [Int], padsBegin: [Int], padsEnd: [Int], output: [Int]) {
        self.input = input; self.kernel = kernel; self.strides = strides; self.dilations = dilations
        self.padsBegin = padsBegin; self.padsEnd = padsEnd; self.output = output
    }
}

// MARK: - im2col / col2im

/// Where kernel tap `k` reads, per output row (every output axis but the last): the input offset
/// of the row's tap (-1 when the row falls in padding), and along the last axis the output range
/// [lo, hi) that lands inside the input, reading input position `first + j * step` for output j.
/// Computed once per tap, so the per-channel loops of im2col/col2im hold no index arithmetic.
struct ConvTapRows {
    var bases: [Int]
    var lo = 0, hi = 0, first = 0, step = 1
    /// For 2-D geometries whose rows map onto consecutive input rows (row stride 1, column
    /// stride 1, output width = input width): the valid output rows rowLo..<rowHi, which read one
    /// contiguous run of the input (im2col copies it at once and zeroes the edges).
    var contiguous = false, rowLo = 0, rowHi = 0

    init(_ g: ConvGeometry, tap k: Int) {
        let r = g.rank, last = r - 1
        var kIdx = [Int](repeating: 0, count: r)
        var rem = k
        for i in stride(from: r - 1, through: 0, by: -1) { kIdx[i] = rem % g.kernel[i]; rem /= g.kernel[i] }
        let lastOut = g.output[last]
        let outer = lastOut == 0 ? 0 : g.outputSize / lastOut
        let inStrides = contiguousStrides(g.input)
        bases = [Int](repeating: -1, count: outer)
        for o in 0..<outer {
            var rem = o, base = 0, valid = true
            for i in stride(from: last - 1, through: 0, by: -1) {
                let oi = rem % g.output[i]; rem /= g.output[i]
                let pos = oi * g.strides[i] - g.padsBegin[i] + kIdx[i] * g.dilations[i]
                if pos < 0 || pos >= g.input[i] { valid = false }
                base += pos * inStrides[i]
            }
            if valid { bases[o] = base }
        }
        first = kIdx[last] * g.dilations[last] - g.padsBegin[last]
        step = g.strides[last]
        let inLast = g.input[last]
        // lo: the first j with first + j*step >= 0; hi: one past the last with first + j*step < inLast.
        // Ceiling divisions written so that a stride near Int.max cannot overflow.
        let before = -first, span = inLast - first
        lo = first >= 0 ? 0 : before / step + (before % step == 0 ? 0 : 1)
        hi = span <= 0 ? 0 : min(lastOut, span / step + (span % step == 0 ? 0 : 1))
        lo = min(lo, lastOut)
        if hi < lo { hi = lo }
        if r == 2 && g.strides[0] == 1 && step == 1 && lastOut == inLast && hi > lo {
            rowLo = bases.firstIndex(where: { $0 >= 0 }) ?? 0
            rowHi = (bases.lastIndex(where: { $0 >= 0 }) ?? -1) + 1
            contiguous = rowHi > rowLo
        }
    }

    /// The rows of every kernel tap of `g`, in tap order.
    static func all(_ g: ConvGeometry) -> [ConvTapRows] {
        (0..<g.kernelSize).map { ConvTapRows(g, tap: $0) }
    }
}

/// Unfolds one image into columns: col[(c*K + k) * P + p] = x[c, o_p*s - pb + k*d] (0 in padding).
///
/// x: [channels, input...], col: [channels * kernelSize, outputSize]. Per tap, the rows' offsets
/// and the last axis's in-bounds range are computed once (ConvTapRows); each row is then a copy
/// (a memcpy at stride 1) between zero-filled edges.
/// `taps` (ConvTapRows.all(g)) may be passed in when many images share one geometry; `ld` is
/// col's row stride (the columns written by default; larger when several images' columns sit
/// side by side). `rows` limits the unfolding to those output rows (every output axis but the
/// last): col then holds rows.count · lastOut columns, the first for output row rows.lowerBound.
func im2col<T: TensorElement>(_ x: UnsafePointer<T>, channels: Int, _ g: ConvGeometry, _ col: UnsafeMutablePointer<T>,
                              ld: Int? = nil, taps: [ConvTapRows]? = nil, rows: Range<Int>? = nil) {
    let K = g.kernelSize, P = g.outputSize, I = g.inputSize
    if P == 0 || K == 0 { return }
    let lastOut = g.output[g.rank - 1]
    let rows = rows ?? 0..<(P / lastOut)
    let r0 = rows.lowerBound, width = rows.count * lastOut, ld = ld ?? width
    if width == 0 { return }
    let taps = taps ?? ConvTapRows.all(g)
    for k in 0..<K {
        let tap = taps[k]
        let lo = tap.lo, hi = tap.hi, first = tap.first, step = tap.step
        if tap.contiguous {
            // One copy per channel from the first valid element of row rowLo to the last of row
            // rowHi - 1; the columns outside lo..<hi and the rows outside are zeroed after.
            let rowLo = max(tap.rowLo, r0), rowHi = min(tap.rowHi, rows.upperBound)
            if rowHi <= rowLo {
                for c in 0..<channels { (col + (c * K + k) * ld).update(repeating: T.zero, count: width) }
                continue
            }
            let start = tap.bases[rowLo] + first + lo
            let outStart = (rowLo - r0) * lastOut + lo, outEnd = (rowHi - 1 - r0) * lastOut + hi
            let validEnd = (rowHi - r0) * lastOut
            for c in 0..<channels {
                let dst = col + (c * K + k) * ld
                if rowLo > r0 { dst.update(repeating: T.zero, count: (rowLo - r0) * lastOut) }
                (dst + outStart).update(from: x + c * I + start, count: outEnd - outStart)
                if validEnd < width { (dst + validEnd).update(repeating: T.zero, count: width - validEnd) }
                if lo > 0 || hi < lastOut {
                    for r in rowLo..<rowHi {
                        let row = dst + (r - r0) * lastOut
                        for j in 0..<lo { row[j] = T.zero }
                        for j in hi..<lastOut { row[j] = T.zero }
                    }
                }
            }
            continue
        }
        tap.bases.withUnsafeBufferPointer { allBases in
            let bases = UnsafeBufferPointer(rebasing: allBases[rows])
            for c in 0..<channels {
                let src = x + c * I
                var dst = col + (c * K + k) * ld
                for base in bases {
                    if base < 0 {
                        dst.update(repeating: T.zero, count: lastOut)
                    } else {
                        if lo > 0 { dst.update(repeating: T.zero, count: lo) }
                        let row = src + base + first
                        if step == 1 {
                            (dst + lo).update(from: row + lo, count: hi - lo)
                        } else {
                            var j = lo
                            if step == 2 && T.self == Float.self {
                                j = copyEvenFloats(UnsafeRawPointer(row), UnsafeMutableRawPointer(dst), lo: lo, hi: hi)
                            }
                            while j < hi { dst[j] = row[j * step]; j += 1 }
                        }
                        if hi < lastOut { (dst + hi).update(repeating: T.zero, count: lastOut - hi) }
                    }
                    dst += lastOut
                }
            }
        }
    }
}

/// dst[j] = src[2·j] for float32 from j = lo, eight at a time (16 lanes loaded and split), reading
/// no further than src[2·(hi-1)]: a stride-2 convolution's im2col rows (MobileNetV3's first layer
/// copied them one scalar at a time, 5% of its batch-32 inference). Returns the first j left for
/// the caller's scalar loop.
@inline(__always)
func copyEvenFloats(_ src: UnsafeRawPointer, _ dst: UnsafeMutableRawPointer, lo: Int, hi: Int) -> Int {
    var j = lo
    while j + 9 <= hi {
        let v = src.loadUnaligned(fromByteOffset: 8 * j, as: SIMD16<Float>.self)
        dst.storeBytes(of: v.evenHalf, toByteOffset: 4 * j, as: SIMD8<Float>.self)
        j += 8
    }
    return j
}

/// Folds columns back into an image, accumulating overlaps: the adjoint of `im2col`.
/// x += fold(col); x must be initialized by the caller (zeros for a plain col2im). `ld` is col's
/// row stride, as in `im2col`.
func col2im<T: FloatElement>(_ col: UnsafePointer<T>, channels: Int, _ g: ConvGeometry, _ x: UnsafeMutablePointer<T>,
                            ld: Int? = nil, taps: [ConvTapRows]? = nil) {
    let K = g.kernelSize, P = g.outputSize, I = g.inputSize, ld = ld ?? g.outputSize
    if P == 0 || K == 0 { return }
    let lastOut = g.output[g.rank - 1]
    let taps = taps ?? ConvTapRows.all(g)
    for k in 0..<K {
        let tap = taps[k]
        let lo = tap.lo, hi = tap.hi, first = tap.first, step = tap.step
        if tap.contiguous && lo == 0 && hi == lastOut {
            // Every column of rows rowLo..<rowHi is valid: one run per channel.
            let start = tap.bases[tap.rowLo] + first, outStart = tap.rowLo * lastOut
            let n = (tap.rowHi - tap.rowLo) * lastOut
            for c in 0..<channels {
                let dst = x + c * I + start, src = col + (c * K + k) * ld + outStart
                for j in 0..<n { dst[j] += src[j] }
            }
            continue
        }
        tap.bases.withUnsafeBufferPointer { bases in
            for c in 0..<channels {
                let dstImage = x + c * I
                var src = col + (c * K + k) * ld
                for base in bases {
                    if base >= 0 {
                        let row = dstImage + base + first
                        if step == 1 {
                            for j in lo..<hi { row[j] += src[j] }
                        } else {
                            for j in lo..<hi { row[j * step] += src[j] }
                        }
                    }
                    src += lastOut
                }
            }
        }
    }
}

// MARK: - Float compute with half types through float32


extension Tensor {
    /// This tensor converted to float32 or float64 (`dtype`), from any numeric type: half types
    /// widen to float32 directly, everything else goes through the shared Double reader.
    func converted(toFloat dtype: DType) throws -> Tensor {
        if self.dtype == dtype { return self }
        if isHalf && dtype == .float32 { return widenedToFloat() }
        guard dtype == .float32 || dtype == .float64 else { throw KernelError("cannot convert \(self.dtype) to \(dtype)") }
        return floatTensor(dtype, shape: shape, try doubles())
    }
}
