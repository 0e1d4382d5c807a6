/// Shared helpers for the shape and data movement ops: one byte-copy path per element size serves
/// every element type (strings through their array), and Double round trips let numeric ops that
/// are not hot (Range, windows, Resize, sampling) be written once for every numeric type.

extension Tensor {
    /// The elements as an array of `T`, the storage type of the element size (strings included).
    func elements<T>(_ type: T.Type) -> [T] {
        if dtype == .string { return strings as! [T] }
        // Reinterprets the bytes as T, which has the element's size; the types differ on purpose.
        return Array(UnsafeBufferPointer(start: storage.bytes.assumingMemoryBound(to: T.self), count: count))
    }

    /// A tensor of `dtype` and `shape` holding `elements` (storage type of the element size).
    init<T>(dtype: DType, shape: [Int], elements: [T]) {
        if dtype == .string {
            self.init(shape: shape, strings: elements as! [String])
            return
        }
        self.init(uninitialized: dtype, shape: shape)
        elements.withUnsafeBytes { source in
            if source.count > 0 { storage.bytes.copyMemory(from: source.baseAddress!, byteCount: source.count) }
        }
    }
}

private struct TakeOp: ElementMove {
    let t: Tensor, indices: [Int], shape: [Int], fill: Tensor?
    func move<T>(_ type: T.Type) throws -> Tensor {
        var filler = Tensor(zeros: t.dtype, shape: [1])
        if let fill, fill.count > 0 { filler = fill }
        let fillValue = filler.elements(T.self)[0]
        if t.dtype == .string {
            let source = t.elements(T.self)
            return Tensor(dtype: t.dtype, shape: shape, elements: indices.map { $0 >= 0 ? source[$0] : fillValue })
        }
        // Straight from the source bytes into the fresh output: one pass, no intermediate arrays.
        let out = Tensor(uninitialized: t.dtype, shape: shape)
        let src = t.storage.bytes.assumingMemoryBound(to: T.self)
        let dst = out.storage.bytes.assumingMemoryBound(to: T.self)
        for (o, i) in indices.enumerated() { dst[o] = i >= 0 ? src[i] : fillValue }
        return out
    }
}

/// Output element i is `t`'s flat element `indices[i]`, or `fill`'s first element (zero when
/// `fill` is nil) where the index is negative. Callers validate indices against `t.count`.
func take(_ t: Tensor, _ indices: [Int], shape: [Int], fill: Tensor? = nil) throws -> Tensor {
    precondition(indices.count == Tensor.elementCount(shape))
    return try dispatch(t.dtype, TakeOp(t: t, indices: indices, shape: shape, fill: fill))
}

private struct StridedCopy: ElementMove {
    let t: Tensor, shape: [Int], strides: [Int], offset: Int
    func move<T>(_ type: T.Type) throws -> Tensor {
        if t.dtype == .string {
            return try take(t, stridedIndices(shape: shape, strides: strides, offset: offset), shape: shape)
        }
        let out = Tensor(uninitialized: t.dtype, shape: shape)
        let n = out.count
        if n == 0 { return out }
        let src = t.storage.bytes.assumingMemoryBound(to: T.self)
        let dst = out.storage.bytes.assumingMemoryBound(to: T.self)
        let rank = shape.count
        if rank == 0 { dst[0] = src[offset]; return out }
        if strides[rank - 1] != 1, shape[rank - 1] > 1, let p = (0..<(rank - 1)).last(where: { strides[$0] == 1 && shape[$0] > 1 }) {
            tiledCopy(src, dst, contiguousAxis: p)
            return out
        }
        let inner = shape[rank - 1], step = strides[rank - 1], rowCount = n / inner
        let (outShape, viewStrides, start) = (shape, strides, offset)
        /// Output rows `rows` (runs of the last axis), each from its source offset.
        func copyRows(_ rows: Range<Int>) {
            // The first row's index over the outer axes and its source offset, then row by row.
            var index = [Int](repeating: 0, count: rank - 1)
            var base = start, rest = rows.lowerBound
            for d in stride(from: rank - 2, through: 0, by: -1) {
                index[d] = rest % outShape[d]
                rest /= outShape[d]
                base += index[d] * viewStrides[d]
            }
            for r in rows {
                let o = r * inner
                if step == 1 {
                    (dst + o).update(from: src + base, count: inner)
                } else {
                    var x = base
                    for k in 0..<inner { dst[o + k] = src[x]; x += step }
                }
                var d = rank - 2
                while d >= 0 {
                    index[d] += 1
                    base += viewStrides[d]
                    if index[d] < outShape[d] { break }
                    base -= viewStrides[d] * outShape[d]
                    index[d] = 0
                    d -= 1
                }
            }
        }
        // Large copies (ShuffleNet's channel shuffles at batch 32) spread their rows over the threads.
        if n * MemoryLayout<T>.stride >= BlockCopies.threadedBytes {
            Parallel.forRange(rowCount, minimumChunk: max(1, 16_384 / inner)) { copyRows($0) }
        } else {
            copyRows(0..<rowCount)
        }
        return out
    }
}

extension StridedCopy {
    /// Transposes' cache-friendly path: output axis `p` is contiguous in the input, the last
    /// output axis is contiguous in the output. Copying 16 x 16 tiles of (p, last) reads and
    /// writes whole cache lines instead of touching a new input line for every element.
    func tiledCopy<T>(_ src: UnsafeMutablePointer<T>, _ dst: UnsafeMutablePointer<T>, contiguousAxis p: Int) {
        let rank = shape.count, last = rank - 1, tile = 16
        let outStrides = contiguousStrides(shape)
        let others = (0..<rank).filter { $0 != p && $0 != last }
        let rows = shape[p], cols = shape[last]
        let colStride = strides[last], rowStride = outStrides[p]
        let otherShape = others.map { shape[$0] }, otherCount = otherShape.reduce(1, *)
        let otherSource = others.map { strides[$0] }, otherDest = others.map { outStrides[$0] }
        let rowTiles = (rows + tile - 1) / tile
        let offset = self.offset
        // Work items: (index over the other axes, band of `tile` rows), split across threads.
        Parallel.forRange(otherCount * rowTiles, minimumChunk: max(1, 16_384 / max(1, tile * cols))) { items in
            for item in items {
                var rest = item / rowTiles, sBase = offset, dBase = 0
                for k in stride(from: others.count - 1, through: 0, by: -1) {
                    let i = rest % otherShape[k]
                    rest /= otherShape[k]
                    sBase += i * otherSource[k]; dBase += i * otherDest[k]
                }
                let i0 = (item % rowTiles) * tile, i1 = min(i0 + tile, rows)
                var j0 = 0
                while j0 < cols {
                    let j1 = min(j0 + tile, cols)
                    for i in i0..<i1 {
                        let row = dst + dBase + i * rowStride
                        var x = sBase + i + j0 * colStride
                        for j in j0..<j1 { row[j] = src[x]; x += colStride }
                    }
                    j0 = j1
                }
            }
        }
    }
}

/// The strided view of `t` (`shape` read through `strides` from `offset`) copied out contiguously:
/// Transpose, Slice and Expand without an index array, runs of unit stride copied whole.
func stridedCopy(_ t: Tensor, shape: [Int], strides: [Int], offset: Int = 0) throws -> Tensor {
    try dispatch(t.dtype, StridedCopy(t: t, shape: shape, strides: strides, offset: offset))
}

private struct BlockGather: ElementMove {
    let t: Tensor, starts: [Int], block: Int, shape: [Int]
    func move<T>(_ type: T.Type) throws -> Tensor {
        if t.dtype == .string {
            return try take(t, starts.flatMap { $0..<($0 + block) }, shape: shape)
        }
        let out = Tensor(uninitialized: t.dtype, shape: shape)
        let size = MemoryLayout<T>.stride
        let src = UnsafeRawPointer(t.storage.bytes), dst = out.storage.bytes
        guard block > 0 else { return out }
        BlockCopies.run(starts.enumerated().map { (k, s) in (dst + k * block * size, src + s * size, block * size) })
        return out
    }
}

/// Output block k is the `block` contiguous elements of `t` starting at `starts[k]` (Gather,
/// GatherND, Split: whole rows at a time). Callers check the blocks lie inside `t`.
func gatherBlocks(_ t: Tensor, starts: [Int], block: Int, shape: [Int]) throws -> Tensor {
    precondition(starts.count * block == Tensor.elementCount(shape))
    return try dispatch(t.dtype, BlockGather(t: t, starts: starts, block: block, shape: shape))
}


/// Concat's copy: for each outer index, each part's contiguous block in turn.
private struct BlockCopy: ElementMove {
    let parts: [Tensor]
    let outShape: [Int]
    let dtype: DType
    let outer: Int
    /// Elements per outer index of each part.
    let blocks: [Int]
    func move<T>(_ type: T.Type) throws -> Tensor {
        let total = blocks.reduce(0, +)
        if dtype == .string {
            var out = [T]()
            out.reserveCapacity(outer * total)
            let sources = parts.map { $0.elements(T.self) }
            for o in 0..<outer {
                for (k, src) in sources.enumerated() { out.append(contentsOf: src[(o * blocks[k])..<(o * blocks[k] + blocks[k])]) }
            }
            return Tensor(dtype: dtype, shape: outShape, elements: out)
        }
        // Whole blocks with memcpy: Concat along an outer axis is a handful of large copies.
        let out = Tensor(uninitialized: dtype, shape: outShape)
        let size = MemoryLayout<T>.stride
        var copies: [BlockCopies.Copy] = []
        copies.reserveCapacity(outer * parts.count)
        var dst = out.storage.bytes
        for o in 0..<outer {
            for (k, part) in parts.enumerated() where blocks[k] > 0 {
                copies.append((dst, UnsafeRawPointer(part.storage.bytes + o * blocks[k] * size), blocks[k] * size))
                dst += blocks[k] * size
            }
        }
        BlockCopies.run(copies)
        return out
    }
}

/// Byte copies between disjoint blocks, spread over the threads when they are large: Concat and
/// Split of activations are memory-bound copies (a batch-32 SqueezeNet's Concats move 200 MB per
/// run), which on one thread left the other core idle for 4-5% of the run.
enum BlockCopies {
    typealias Copy = (dst: UnsafeMutableRawPointer, src: UnsafeRawPointer, bytes: Int)
    /// Fewer bytes than this in all are copied on the calling thread.
    static let threadedBytes = 1 << 20
    /// Copies are cut into pieces of at most this many bytes, so the threads get equal shares.
    static let pieceBytes = 1 << 17

    static func run(_ copies: [Copy]) {
        let total = copies.reduce(0) { $0 + $1.bytes }
        guard total >= threadedBytes, Parallel.threadCount > 1, !Parallel.isInsideRegion else {
            for c in copies { c.dst.copyMemory(from: c.src, byteCount: c.bytes) }
            return
        }
        var pieces: [Copy] = []
        pieces.reserveCapacity(total / pieceBytes + copies.count)
        for c in copies {
            var offset = 0
            while offset < c.bytes {
                let n = min(pieceBytes, c.bytes - offset)
                pieces.append((c.dst + offset, c.src + offset, n))
                offset += n
            }
        }
        Parallel.forRange(pieces.count) { r in
            for i in r { pieces[i].dst.copyMemory(from: pieces[i].src, byteCount: pieces[i].bytes) }
        }
    }
}

/// The shape of `parts` laid end to end along `axis`, after checking that they have one dtype
/// and rank and equal sizes on every other axis.
func concatenatedShape(_ parts: [Tensor], axis: Int) throws -> [Int] {
    guard let first = parts.first else { throw KernelError("nothing to concatenate") }
    var outShape = first.shape
    outShape[axis] = 0
    for p in parts {
        guard p.dtype == first.dtype else { throw KernelError("inputs mix \(first.dtype) and \(p.dtype)") }
        guard p.rank == first.rank else { throw KernelError("inputs have ranks \(first.rank) and \(p.rank)") }
        for d in 0..<p.rank where d != axis && p.shape[d] != first.shape[d] {
            throw KernelError("shapes \(first.shape) and \(p.shape) differ outside axis \(axis)")
        }
        outShape[axis] += p.shape[axis]
    }
    return outShape
}

/// Concatenates `parts` (same dtype and rank, equal except along `axis`) along `axis`.
func concatenate(_ parts: [Tensor], axis: Int, dtype: DType) throws -> Tensor {
    let outShape = try concatenatedShape(parts, axis: axis)
    let first = parts[0]
    let outer = first.shape[..<axis].reduce(1, *)
    let blocks = parts.map { $0.shape[axis...].reduce(1, *) }
    return try dispatch(dtype, BlockCopy(parts: parts, outShape: outShape, dtype: dtype, outer: outer, blocks: blocks))
}

/// Splits `t` along `axis` into pieces of `sizes` (which sum to the axis length).
func splitTensor(_ t: Tensor, axis: Int, sizes: [Int]) throws -> [Tensor] {
    guard sizes.allSatisfy({ $0 >= 0 && $0 <= t.shape[axis] }), sizes.reduce(0, +) == t.shape[axis] else {
        throw KernelError("split sizes \(sizes) do not add up to dimension \(t.shape[axis]) of axis \(axis)")
    }
    let inner = t.shape[(axis + 1)...].reduce(1, *)
    let outer = t.shape[..<axis].reduce(1, *)
    let axisLen = t.shape[axis]
    var result: [Tensor] = []
    var start = 0
    for s in sizes {
        var shape = t.shape
        shape[axis] = s
        let starts = (0..<outer).map { (o: Int) -> Int in (o * axisLen + start) * inner }
        result.append(try gatherBlocks(t, starts: starts, block: s * inner, shape: shape))
        start += s
    }
    return result
}

extension Tensor {
    /// The integer elements of a shape/axes/indices input, or a KernelError naming `what`.
    func ints(_ what: String) throws -> [Int] {
        guard let v = intValues() else { throw KernelError("\(what) must be an integer tensor, got \(dtype)") }
        return v
    }
}

extension Int64 { init(_ b: Bool) { self = b ? 1 : 0 } }

/// `v` as an Int, or a KernelError naming `what` when it is not finite or beyond 2^53 (Swift's
/// Int(_:) would trap).
func checkedInt(_ v: Double, _ what: String) throws -> Int {
    guard v.isFinite, abs(v) <= 9_007_199_254_740_992 else { throw KernelError("\(what) \(v) is not a usable integer") }
    return Int(v)
}

/// Whether |v| < limit, without abs(Int.min)'s overflow.
@inline(__always)
func magnitude(_ v: Int, below limit: Int) -> Bool { v > -limit && v < limit }

/// Resolves each axis against `rank` and rejects repeats.
func normalizeAxes(_ axes: [Int], rank: Int, name: String = "axes") throws -> [Int] {
    let result = try axes.map { try normalizeAxis($0, rank: rank, name: name) }
    guard Set(result).count == result.count else { throw KernelError("\(name) \(axes) repeat an axis") }
    return result
}

/// Makes sure every shape entry is a valid dimension and the whole is allocatable in principle.
///
/// The cap, `SizePolicy.maxIndexMapElements`, is far above any real model's tensors and keeps
/// shapes computed from hostile data (pads, repeats, sizes) from reaching an allocation that
/// aborts the process.
func checkShape(_ shape: [Int], _ what: String) throws {
    guard shape.allSatisfy({ $0 >= 0 }) else { throw KernelError("\(what) \(shape) has a negative dimension") }
    var n = 1
    for d in shape {
        let (m, overflow) = n.multipliedReportingOverflow(by: d)
        guard !overflow, m <= SizePolicy.maxIndexMapElements else { throw KernelError("\(what) \(shape) is too large") }
        n = m
    }
    // Per-axis maps hold one Int per output coordinate; a zero elsewhere must not let one axis run away.
    guard shape.allSatisfy({ $0 <= SizePolicy.maxIndexMapElements }) else { throw KernelError("\(what) \(shape) is too large") }
}
