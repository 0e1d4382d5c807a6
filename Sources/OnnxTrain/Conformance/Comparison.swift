/// Tolerances for comparing float outputs: |actual − expected| ≤ atol + rtol·|expected|.
public struct Tolerance: Equatable, Sendable {
    public var rtol: Double
    public var atol: Double
    public init(rtol: Double = 1e-3, atol: Double = 1e-5) {
        self.rtol = rtol
        self.atol = atol
    }
}

/// Compares a computed value with an expected one: shapes exact, integers, booleans and strings
/// exact, floats within `tolerance` with NaN equal to NaN; sequences and optionals element by
/// element. Returns nil when they match, else a one-line reason.
public func compareValues(_ actual: Value, _ expected: Value, tolerance: Tolerance, label: String = "output") -> String? {
    switch (actual, expected) {
    case (.tensor(let a), .tensor(let e)):
        return compareTensors(a, e, tolerance: tolerance, label: label)
    case (.sequence(let a, _), .sequence(let e, _)):
        guard a.count == e.count else { return "\(label): sequence of \(a.count), expected \(e.count)" }
        for i in 0..<a.count {
            if let r = compareValues(a[i], e[i], tolerance: tolerance, label: "\(label)[\(i)]") { return r }
        }
        return nil
    case (.optional(let a, _), .optional(let e, _)):
        switch (a, e) {
        case (nil, nil): return nil
        case (let a?, let e?): return compareValues(a, e, tolerance: tolerance, label: label)
        default: return "\(label): \(actual.summary), expected \(expected.summary)"
        }
    case (.optional(let a?, _), _):
        return compareValues(a, expected, tolerance: tolerance, label: label)
    case (_, .optional(let e?, _)):
        return compareValues(actual, e, tolerance: tolerance, label: label)
    default:
        return "\(label): \(actual.summary), expected \(expected.summary)"
    }
}

public func compareTensors(_ a: Tensor, _ e: Tensor, tolerance: Tolerance, label: String = "output") -> String? {
    guard a.dtype == e.dtype else { return "\(label): type \(a.dtype), expected \(e.dtype)" }
    guard a.shape == e.shape else { return "\(label): shape \(a.shape), expected \(e.shape)" }
    if a.dtype == .string {
        for i in 0..<a.count where a.strings[i] != e.strings[i] {
            return "\(label)[\(i)]: \"\(a.strings[i])\", expected \"\(e.strings[i])\""
        }
        return nil
    }
    if !a.dtype.isFloatingPoint || a.dtype.byteSize == 1 && a.dtype != .float8e4m3fn && a.dtype != .float8e5m2 && a.dtype != .float8e4m3fnuz && a.dtype != .float8e5m2fnuz && a.dtype != .float8e8m0 && a.dtype != .float4e2m1 {
        // Integers, booleans: bit-exact.
        let n = a.byteCount
        let pa = a.rawBytes, pe = e.rawBytes
        let size = a.dtype.byteSize
        for i in 0..<n where pa[i] != pe[i] {
            let index = i / size
            return "\(label)[\(index)]: \(a.scalarDouble(at: index).map { "\($0)" } ?? "?"), expected \(e.scalarDouble(at: index).map { "\($0)" } ?? "?")"
        }
        return nil
    }
    guard let av = floatValues(a), let ev = floatValues(e) else {
        // 8-bit and 4-bit float formats: compare the encodings exactly.
        let pa = a.rawBytes, pe = e.rawBytes
        for i in 0..<a.byteCount where pa[i] != pe[i] { return "\(label)[\(i)]: bits 0x\(String(pa[i], radix: 16)), expected 0x\(String(pe[i], radix: 16))" }
        return nil
    }
    var worst = -1
    var worstExcess = 0.0
    for i in 0..<av.count {
        let x = av[i], y = ev[i]
        if x.isNaN || y.isNaN {
            if x.isNaN && y.isNaN { continue }
            worst = i; break
        }
        if x == y { continue }
        if x.isInfinite || y.isInfinite { worst = i; break }
        let excess = abs(x - y) - (tolerance.atol + tolerance.rtol * abs(y))
        if excess > 0 && (worst < 0 || excess > worstExcess) { worst = i; worstExcess = excess }
    }
    if worst >= 0 {
        return "\(label)[\(worst)]: \(av[worst]), expected \(ev[worst]) (rtol \(tolerance.rtol), atol \(tolerance.atol))"
    }
    return nil
}

private func floatValues(_ t: Tensor) -> [Double]? {
    switch t.dtype {
    case .float32, .float64, .float16, .bfloat16: return try? t.doubles()
    case .complex64: return UnsafeBufferPointer(start: t.storage.bytes.assumingMemoryBound(to: Float.self), count: t.count * 2).map { Double($0) }
    case .complex128: return Array(UnsafeBufferPointer(start: t.storage.bytes.assumingMemoryBound(to: Double.self), count: t.count * 2))
    default: return nil
    }
}
