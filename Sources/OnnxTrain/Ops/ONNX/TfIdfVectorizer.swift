/// TfIdfVectorizer (opset 9): counts the pool's n-grams (with skips) in each row of tokens.
///
/// X [C] or [B, C] of int32/int64/string -> Y float32 [K] or [B, K], K = max(ngram_indexes) + 1.
/// The pool lists the 1-grams, then the 2-grams, ... (ngram_counts[i] is where the (i+1)-grams
/// start); n-gram number j (in pool order, counting every length) lands in output column
/// ngram_indexes[j]. Only lengths in [min_gram_length, max_gram_length] are looked for. An n-gram
/// with skip s takes tokens s+1 apart, s in 0...max_skip_count; 1-grams are counted once, not
/// once per skip. Mode TF gives counts, IDF weights[k] (or 1) where the count is non-zero, TFIDF
/// counts times weights[k] (or the counts). Follows the onnx reference / onnxruntime loop exactly.
func registerTfIdfVectorizer(_ registry: OpRegistry) {
    registry.register("TfIdfVectorizer", since: 9) { ctx in try TfIdfVectorizer(ctx) }
}

struct TfIdfVectorizer: Kernel {
    enum Mode: String { case tf = "TF", idf = "IDF", tfidf = "TFIDF" }

    /// A trie edge: from node `parent` by one token.
    struct Edge: Hashable {
        var parent: Int
        var token: MLKey
    }

    var mode: Mode
    var minLength: Int, maxLength: Int, maxSkip: Int
    var outputSize: Int
    var weights: [Float]?
    /// Trie of the pool's n-grams; node 0 is the root. `column[node]` is the output column of the
    /// n-gram ending at the node, or nil when the node is only a prefix.
    var children: [Edge: Int] = [:]
    var column: [Int?] = [nil]

    init(_ ctx: NodeContext) throws {
        let modeName = try ctx.string("mode") ?? ""
        guard let m = Mode(rawValue: modeName) else { throw KernelError("mode must be TF, IDF or TFIDF, got '\(modeName)'") }
        mode = m
        minLength = try ctx.requiredInt("min_gram_length")
        maxLength = try ctx.requiredInt("max_gram_length")
        maxSkip = try ctx.requiredInt("max_skip_count")
        guard minLength >= 1, maxLength >= minLength, maxLength <= 1 << 16 else {
            throw KernelError("need 1 <= min_gram_length (\(minLength)) <= max_gram_length (\(maxLength))")
        }
        guard maxSkip >= 0, maxSkip <= 1 << 20 else { throw KernelError("max_skip_count \(maxSkip) is out of range") }
        guard let counts = try ctx.ints("ngram_counts") else { throw KernelError("attribute 'ngram_counts' is required") }
        guard let indexes = try ctx.ints("ngram_indexes"), !indexes.isEmpty else { throw KernelError("attribute 'ngram_indexes' is required") }
        if let bad = indexes.first(where: { $0 < 0 || $0 >= 1 << 24 }) { throw KernelError("ngram_indexes holds \(bad), out of range") }
        outputSize = (indexes.max() ?? -1) + 1
        weights = try ctx.floats("weights")
        if let w = weights, w.count < outputSize {
            throw KernelError("weights has \(w.count) entries, the output has \(outputSize) columns")
        }
        let pool: [MLKey]
        switch (try ctx.ints("pool_int64s"), try ctx.strings("pool_strings")) {
        case (let ints?, nil): pool = ints.map { .int(Int64($0)) }
        case (nil, let strings?): pool = strings.map { .string($0) }
        default: throw KernelError("exactly one of pool_int64s and pool_strings is required")
        }

        var ngram = 0  // running n-gram number over every length, in pool order
        for (i, begin) in counts.enumerated() {
            let end = i + 1 < counts.count ? counts[i + 1] : pool.count
            guard begin >= 0, begin <= end, end <= pool.count else {
                throw KernelError("ngram_counts[\(i)] = \(begin) does not start a run inside the pool (\(pool.count) items)")
            }
            let size = i + 1
            let grams = (end - begin) / size
            guard size >= minLength, size <= maxLength else { ngram += grams; continue }
            for g in 0..<grams {
                guard ngram < indexes.count else { throw KernelError("ngram_indexes has \(indexes.count) entries, the pool more n-grams") }
                var node = 0
                for token in pool[(begin + g * size)..<(begin + (g + 1) * size)] {
                    let edge = Edge(parent: node, token: token)
                    if let next = children[edge] { node = next } else {
                        column.append(nil)
                        node = column.count - 1
                        children[edge] = node
                    }
                }
                column[node] = indexes[ngram]
                ngram += 1
            }
        }
    }

    func run(_ inputs: [Value?], _ context: ExecutionContext) throws -> [Value?] {
        let x = try inputs.tensor(0)
        guard x.dtype == .int32 || x.dtype == .int64 || x.dtype == .string else {
            throw KernelError("input must be int32, int64 or string, got \(x)")
        }
        let (rows, width): (Int, Int)
        switch x.rank {
        case 0: (rows, width) = (1, 1)
        case 1: (rows, width) = (1, x.shape[0])
        case 2: (rows, width) = (x.shape[0], x.shape[1])
        default: throw KernelError("input must be [C] or [B, C], got \(x)")
        }
        _ = try Tensor.checkedElementCount([rows, outputSize])
        let tokens = try mlKeys(x)
        var counts = [Int](repeating: 0, count: rows * outputSize)  // [B, K]
        for r in 0..<rows {
            let row = tokens[(r * width)..<((r + 1) * width)]
            let base = r * width
            var startLength = minLength
            for skip in 1...(maxSkip + 1) {
                for first in 0..<width {
                    if first + skip * (startLength - 1) >= width { break }
                    var at = first, node = 0, length = 1
                    while length <= maxLength, at < width, let next = children[Edge(parent: node, token: row[base + at])] {
                        if length >= startLength, let c = column[next] { counts[r * outputSize + c] += 1 }
                        node = next
                        length += 1
                        at += skip
                    }
                }
                // 1-grams are counted on the first pass only; later passes start at 2-grams.
                if startLength == 1 {
                    startLength = 2
                    if startLength > maxLength { break }
                }
            }
        }
        let y: [Float]
        switch (mode, weights) {
        case (.tf, _), (.tfidf, nil): y = counts.map { Float($0) }
        case (.idf, nil): y = counts.map { $0 > 0 ? 1 : 0 }
        case (.idf, let w?): y = counts.enumerated().map { $0.element > 0 ? w[$0.offset % outputSize] : 0 }
        case (.tfidf, let w?): y = counts.enumerated().map { Float($0.element) * w[$0.offset % outputSize] }
        }
        return [.tensor(Tensor(shape: x.rank == 2 ? [rows, outputSize] : [outputSize], scalars: y))]
    }
}
