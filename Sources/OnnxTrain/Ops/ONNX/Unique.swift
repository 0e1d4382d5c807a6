/// Unique: the distinct elements (sorted or in first-seen order) with indices and counts.

/// Unique, since opset 11.
func uniqueKernel(_ ctx: NodeContext) throws -> Kernel {
    let sorted = try ctx.int("sorted", default: 1) != 0
    let axis = try ctx.int("axis")
    return AnyKernel { inputs, _ in
        let x = try inputs.tensor(0)
        return try unique(x, axis: axis.map { try normalizeAxis($0, rank: x.rank) }, sorted: sorted).map { .tensor($0) }
    }
}

/// Unique slices (or elements when `axis` is nil) with first indices, inverse indices and counts.
private func unique(_ x: Tensor, axis: Int?, sorted: Bool) throws -> [Tensor] {
    let flat = axis == nil
    let source = flat ? x.reshaped([x.count]) : x
    let a = axis ?? 0
    let n = source.shape[a]
    let outer = source.shape[..<a].reduce(1, *), inner = source.shape[(a + 1)...].reduce(1, *)
    func sliceElements(_ j: Int) -> [Int] {
        var r = [Int]()
        for o in 0..<outer { for i in 0..<inner { r.append((o * n + j) * inner + i) } }
        return r
    }
    // Keys compare as numbers (or strings), slice by slice, lexicographically.
    let numbers = x.dtype == .string ? [] : try source.doubles()
    let strings = x.dtype == .string ? source.strings : []
    let slices = (0..<n).map { sliceElements($0) }
    func less(_ p: Int, _ q: Int) -> Bool {
        for (i, j) in zip(slices[p], slices[q]) {
            if x.dtype == .string {
                if strings[i] != strings[j] { return strings[i] < strings[j] }
            } else if numbers[i] != numbers[j] { return numbers[i] < numbers[j] }
        }
        return false
    }
    func equal(_ p: Int, _ q: Int) -> Bool { !less(p, q) && !less(q, p) }
    var firsts: [Int] = []
    var inverse = [Int](repeating: 0, count: n)
    if sorted {
        let order = (0..<n).sorted { less($0, $1) || (!less($1, $0) && $0 < $1) }
        for j in order {
            if let last = firsts.last, equal(last, j) { inverse[j] = firsts.count - 1 } else { firsts.append(j); inverse[j] = firsts.count - 1 }
        }
    } else {
        // Hash on the slice's values so unsorted uniqueness stays linear.
        var seen: [String: Int] = [:]
        for j in 0..<n {
            let key = x.dtype == .string ? slices[j].map { strings[$0] }.joined(separator: "\u{0}") : slices[j].map { String(numbers[$0]) }.joined(separator: ",")
            if let u = seen[key] { inverse[j] = u } else { seen[key] = firsts.count; inverse[j] = firsts.count; firsts.append(j) }
        }
    }
    var counts = [Int64](repeating: 0, count: firsts.count)
    for j in 0..<n { counts[inverse[j]] += 1 }
    var maps = (0..<source.rank).map { Array(0..<source.shape[$0]) }
    maps[a] = firsts
    var outShape = source.shape
    outShape[a] = firsts.count
    let y = try take(source, combineAxisMaps(maps, inputShape: source.shape), shape: outShape)
    return [y,
            Tensor(shape: [firsts.count], scalars: firsts.map { Int64($0) }),
            Tensor(shape: [n], scalars: inverse.map { Int64($0) }),
            Tensor(shape: [firsts.count], scalars: counts)]
}
