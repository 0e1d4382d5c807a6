/// Numpy-style multidirectional broadcasting of shapes and index strides.
public enum Broadcast {
    /// The broadcast shape of `shapes`, or a KernelError naming them when they do not fit.
    public static func shape(_ shapes: [[Int]]) throws -> [Int] {
        let rank = shapes.map(\.count).max() ?? 0
        var result = [Int](repeating: 1, count: rank)
        for s in shapes {
            let offset = rank - s.count
            for (i, d) in s.enumerated() {
                let r = result[offset + i]
                if r == d || d == 1 { continue }
                if r == 1 { result[offset + i] = d; continue }
                throw KernelError("shapes \(shapes.map { "\($0)" }.joined(separator: " and ")) do not broadcast")
            }
        }
        return result
    }

    public static func shape(_ a: [Int], _ b: [Int]) throws -> [Int] { try shape([a, b]) }

    /// Element strides of `shape` read as `outShape` (0 where broadcast), right-aligned.
    public static func strides(_ shape: [Int], to outShape: [Int]) -> [Int] {
        var strides = [Int](repeating: 0, count: outShape.count)
        var step = 1
        let offset = outShape.count - shape.count
        for i in stride(from: shape.count - 1, through: 0, by: -1) {
            strides[offset + i] = shape[i] == 1 ? 0 : step
            step *= shape[i]
        }
        return strides
    }
}

/// Row-major contiguous strides of a shape.
public func contiguousStrides(_ shape: [Int]) -> [Int] {
    var strides = [Int](repeating: 1, count: shape.count)
    var s = 1
    for i in stride(from: shape.count - 1, through: 0, by: -1) {
        strides[i] = s
        s *= shape[i]
    }
    return strides
}

/// Resolves a possibly negative axis against `rank`, or throws naming the axis.
public func normalizeAxis(_ axis: Int, rank: Int, name: String = "axis") throws -> Int {
    let a = axis < 0 ? axis + rank : axis
    guard a >= 0 && a < max(rank, 1) else { throw KernelError("\(name) \(axis) is out of range for rank \(rank)") }
    return a
}

/// Applies `body` to every pair of elements of `a` and `b` broadcast to a common shape.
///
/// The shapes are merged into runs (`BroadcastRows`) along which each operand advances or
/// repeats, so the common cases (same shape, scalar operand, bias along the last axis, a mask
/// repeated over a middle axis) are straight-line loops. One thread: a closure handed to the
/// thread pool is no longer inlined and costs a call per element; `broadcastMap` takes the
/// function as a type and splits the work.
@inline(__always)
public func broadcastBinary<A, B, R>(_ a: Tensor, _ b: Tensor, _ aType: A.Type, _ bType: B.Type, _ rType: R.Type,
                                     outDType: DType, _ body: (A, B) -> R) throws -> Tensor {
    let outShape = try Broadcast.shape(a.shape, b.shape)
    var out = Tensor(uninitialized: outDType, shape: outShape)
    let n = out.count
    if n == 0 { return out }
    try a.withUnsafeBufferPointer(as: A.self) { pa in
        try b.withUnsafeBufferPointer(as: B.self) { pb in
            out.uncheckedMutableBufferPointer(as: R.self) { po in
                let layout = BroadcastRows(outShape: outShape, operandShapes: [a.shape, b.shape])
                let ia = layout.innerStrides[0], ib = layout.innerStrides[1]
                layout.forEachRun(0..<n) { o, count, offsets in
                    let x = offsets[0], y = offsets[1]
                    if ia == 1 && ib == 1 {
                        for k in 0..<count { po[o + k] = body(pa[x + k], pb[y + k]) }
                    } else if ia == 0 && ib == 1 {
                        let s = pa[x]
                        for k in 0..<count { po[o + k] = body(s, pb[y + k]) }
                    } else if ia == 1 && ib == 0 {
                        let s = pb[y]
                        for k in 0..<count { po[o + k] = body(pa[x + k], s) }
                    } else {
                        for k in 0..<count { po[o + k] = body(pa[x + k * ia], pb[y + k * ib]) }
                    }
                }
            }
        }
    }
    return out
}

/// A pure elementwise function of two operands, as a type, for `broadcastMap`.
protocol BroadcastFunction {
    associatedtype A
    associatedtype B
    associatedtype R
    func callAsFunction(_ a: A, _ b: B) -> R
}

/// `f` applied to every pair of elements of `a` and `b` broadcast to a common shape, in runs
/// (`BroadcastRows`) split across threads; the run loop is specialised for `F`.
func broadcastMap<F: BroadcastFunction>(_ a: Tensor, _ b: Tensor, outDType: DType, _ f: F) throws -> Tensor {
    let outShape = try Broadcast.shape(a.shape, b.shape)
    var out = Tensor(uninitialized: outDType, shape: outShape)
    let n = out.count
    if n == 0 { return out }
    let layout = BroadcastRows(outShape: outShape, operandShapes: [a.shape, b.shape])
    let along = layout.innerStrides
    try a.withUnsafeBufferPointer(as: F.A.self) { ba in
        try b.withUnsafeBufferPointer(as: F.B.self) { bb in
            out.uncheckedMutableBufferPointer(as: F.R.self) { bo in
                guard let pa = ba.baseAddress, let pb = bb.baseAddress, let po = bo.baseAddress else { return }
                Parallel.forRange(n, minimumChunk: 32_768) { elements in
                    layout.forEachRun(elements) { o, count, offsets in
                        broadcastRun(f, pa + offsets[0], along[0], pb + offsets[1], along[1], po + o, count)
                    }
                }
            }
        }
    }
    return out
}

/// One run of `broadcastMap`: out[k] = f(a[k·ia], b[k·ib]), each stride 0 (repeated) or 1. A
/// function of its own so the loops vectorise (they stay scalar inside a Parallel.forRange closure).
@inline(never)
func broadcastRun<F: BroadcastFunction>(_ f: F, _ a: UnsafePointer<F.A>, _ ia: Int, _ b: UnsafePointer<F.B>, _ ib: Int,
                                        _ out: UnsafeMutablePointer<F.R>, _ count: Int) {
    switch (ia, ib) {
    case (1, 1): for k in 0..<count { out[k] = f(a[k], b[k]) }
    case (0, 1): let s = a[0]; for k in 0..<count { out[k] = f(s, b[k]) }
    case (1, 0): let s = b[0]; for k in 0..<count { out[k] = f(a[k], s) }
    default: for k in 0..<count { out[k] = f(a[k * ia], b[k * ib]) }
    }
}

/// A broadcast of up to four operands to one output shape, walked row by row: adjacent axes are
/// merged where every operand continues across them with the same layout (contiguous, or
/// repeated) and size-1 axes dropped, so the last axis (`inner`) is as long as the shapes allow
/// and each operand's stride along it is 1 (it advances) or 0 (it repeats). 
struct BroadcastRows {
    /// The merged output shape (rank >= 1).
    let shape: [Int]
    /// Per merged axis, each operand's element stride (lane k = operand k).
    let strides: [SIMD4<Int>]
    /// Elements per row (the last merged axis).
    let inner: Int
    /// Each operand's stride along a row (lane k = operand k).
    var innerStrides: SIMD4<Int> { strides[strides.count - 1] }

    /// The walk of `operandShapes` (each broadcastable to `outShape`, at most four) over `outShape`.
    init(outShape: [Int], operandShapes: [[Int]]) {
        precondition(operandShapes.count <= 4)
        let operandStrides = operandShapes.map { Broadcast.strides($0, to: outShape) }
        var shape: [Int] = [], strides: [SIMD4<Int>] = []
        for d in outShape.indices where outShape[d] != 1 {
            var s = SIMD4<Int>.zero
            for (k, operand) in operandStrides.enumerated() { s[k] = operand[d] }
            if let last = strides.last, last == s &* outShape[d] {
                shape[shape.count - 1] *= outShape[d]
                strides[strides.count - 1] = s
            } else {
                shape.append(outShape[d])
                strides.append(s)
            }
        }
        if shape.isEmpty { shape = [1]; strides = [.zero] }
        self.shape = shape
        self.strides = strides
        inner = shape[shape.count - 1]
    }

    /// Calls `body(start, count, offsets)` for each run of `elements` (output elements in order)
    /// that lies within one row: the run's first output element, its length, and each operand's
    /// element offset at that element.
    @inline(__always)
    func forEachRun(_ elements: Range<Int>, _ body: (Int, Int, SIMD4<Int>) -> Void) {
        guard !elements.isEmpty else { return }
        let outer = shape.count - 1, along = innerStrides
        withUnsafeTemporaryAllocation(of: Int.self, capacity: max(outer, 1)) { index in
            var rowOffsets = SIMD4<Int>.zero
            var r = elements.lowerBound / inner, column = elements.lowerBound % inner
            for d in stride(from: outer - 1, through: 0, by: -1) {
                index[d] = r % shape[d]
                r /= shape[d]
                rowOffsets &+= strides[d] &* index[d]
            }
            var e = elements.lowerBound
            while true {
                let count = min(inner - column, elements.upperBound - e)
                body(e, count, rowOffsets &+ along &* column)
                e += count
                if e >= elements.upperBound { return }
                column = 0
                var d = outer - 1
                while d >= 0 {
                    index[d] += 1
                    rowOffsets &+= strides[d]
                    if index[d] < shape[d] { break }
                    rowOffsets &-= strides[d] &* shape[d]
                    index[d] = 0
                    d -= 1
                }
            }
        }
    }
}
