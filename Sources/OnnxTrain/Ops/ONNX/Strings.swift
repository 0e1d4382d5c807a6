import Foundation

/// String ops: StringNormalizer, StringConcat, StringSplit, RegexFullMatch.
func registerStringOps(_ registry: OpRegistry) {
    registry.register("StringNormalizer", since: 10, stringNormalizerKernel)
    registry.register("StringConcat", since: 20, stringConcatKernel)
    registry.register("StringSplit", since: 20, stringSplitKernel)
    registry.register("RegexFullMatch", since: 20, regexFullMatchKernel)
}

/// StringNormalizer, since opset 10.
func stringNormalizerKernel(_ ctx: NodeContext) throws -> Kernel {
    let action = try ctx.string("case_change_action", default: "NONE")
    let caseSensitive = try ctx.int("is_case_sensitive", default: 0) != 0
    let stopwords = try ctx.strings("stopwords") ?? []
    guard ["NONE", "LOWER", "UPPER"].contains(action) else { throw KernelError("unknown case_change_action '\(action)'") }
    let stops = Set(caseSensitive ? stopwords : stopwords.map { $0.lowercased() })
    return AnyKernel { inputs, _ in
        let x = try inputs.tensor(0)
        guard x.dtype == .string, x.rank == 1 || (x.rank == 2 && x.shape[0] == 1) else {
            throw KernelError("input must be a string tensor [C] or [1, C], got \(x)")
        }
        var kept = x.strings.filter { !stops.contains(caseSensitive ? $0 : $0.lowercased()) }
        if action == "LOWER" { kept = kept.map { $0.lowercased() } }
        if action == "UPPER" { kept = kept.map { $0.uppercased() } }
        kept = kept.filter { !$0.isEmpty }
        if kept.isEmpty { kept = [""] }
        return [.tensor(Tensor(shape: x.rank == 1 ? [kept.count] : [1, kept.count], strings: kept))]
    }
}

/// StringConcat, since opset 20.
func stringConcatKernel(_ ctx: NodeContext) throws -> Kernel {
    AnyKernel { inputs, _ in
        let a = try inputs.tensor(0), b = try inputs.tensor(1)
        guard a.dtype == .string, b.dtype == .string else { throw KernelError("inputs must be string tensors") }
        let shape = try Broadcast.shape(a.shape, b.shape)
        let ia = stridedIndices(shape: shape, strides: Broadcast.strides(a.shape, to: shape))
        let ib = stridedIndices(shape: shape, strides: Broadcast.strides(b.shape, to: shape))
        let sa = a.strings, sb = b.strings
        return [.tensor(Tensor(shape: shape, strings: zip(ia, ib).map { sa[$0] + sb[$1] }))]
    }
}

/// StringSplit, since opset 20.
func stringSplitKernel(_ ctx: NodeContext) throws -> Kernel {
    let delimiter = try ctx.string("delimiter", default: "")
    let maxSplit = try ctx.int("maxsplit")
    return AnyKernel { inputs, _ in
        let x = try inputs.tensor(0)
        guard x.dtype == .string else { throw KernelError("input must be a string tensor") }
        let pieces = x.strings.map { pythonSplit($0, delimiter.isEmpty ? nil : delimiter, maxSplit: maxSplit) }
        let width = pieces.map(\.count).max() ?? 0
        var out: [String] = []
        out.reserveCapacity(pieces.count * width)
        for p in pieces { out += p + [String](repeating: "", count: width - p.count) }
        return [.tensor(Tensor(shape: x.shape + [width], strings: out)),
                .tensor(Tensor(shape: x.shape, scalars: pieces.map { Int64($0.count) }))]
    }
}

/// RegexFullMatch, since opset 20.
func regexFullMatchKernel(_ ctx: NodeContext) throws -> Kernel {
    guard let pattern = try ctx.string("pattern") else { throw KernelError("attribute 'pattern' is required") }
    let regex: NSRegularExpression
    do { regex = try NSRegularExpression(pattern: "^(?:" + pattern + ")$") } catch { throw KernelError("invalid pattern '\(pattern)'") }
    return AnyKernel { inputs, _ in
        let x = try inputs.tensor(0)
        guard x.dtype == .string else { throw KernelError("input must be a string tensor") }
        let matches = x.strings.map { s in regex.firstMatch(in: s, range: NSRange(s.startIndex..., in: s)) != nil }
        return [.tensor(Tensor(shape: x.shape, scalars: matches))]
    }
}

/// Python's str.split: with no separator, runs of whitespace split and ends are trimmed.
private func pythonSplit(_ s: String, _ separator: String?, maxSplit: Int?) -> [String] {
    let limit = maxSplit.map { $0 < 0 ? Int.max : $0 } ?? Int.max
    guard let separator else {
        var parts: [String] = []
        var rest = Substring(s)
        while true {
            rest = rest.drop(while: { $0.isWhitespace })
            if rest.isEmpty { break }
            if parts.count == limit { parts.append(String(rest)); break }
            let word = rest.prefix(while: { !$0.isWhitespace })
            parts.append(String(word))
            rest = rest.dropFirst(word.count)
        }
        return parts
    }
    var parts: [String] = []
    var rest = Substring(s)
    while parts.count < limit, let r = rest.range(of: separator) {
        parts.append(String(rest[..<r.lowerBound]))
        rest = rest[r.upperBound...]
    }
    parts.append(String(rest))
    return parts
}
