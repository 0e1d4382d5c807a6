/// Cuts data arrays into batches along their first axis.
///
/// The examples are the rows of the first input. When every array has a whole number of rows per
/// example (token-level labels [B*T] beside inputs [B, T]), a batch takes `batchSize` examples with
/// all their rows, the last batch keeps the examples left over (unless `dropLast`), and examples can
/// be shuffled one by one. Otherwise every array is cut into the same number of equal parts (the
/// batch size must then divide the examples) and only the batch order can be shuffled.
public struct Batches {
    public let names: [String]
    public let arrays: [String: Tensor]
    /// Batches per pass over the data.
    public let count: Int
    /// Rows of each array per full batch.
    public let rows: [String: Int]
    /// Examples per full batch.
    public let batchSize: Int
    /// Examples one pass visits: `count` batches, the last one possibly partial.
    public let exampleCount: Int
    /// Examples in the data (rows of the first input); more than `exampleCount` when the last
    /// partial batch is dropped.
    public let totalExamples: Int
    /// Whether every array has a whole number of rows per example, so examples can be shuffled one
    /// by one and the last batch may be partial.
    public let examplesSeparable: Bool

    /// - Parameters:
    ///   - arrays: the data by name; only `names` are batched.
    ///   - names: the inputs to feed, the first one giving the examples.
    ///   - dropLast: leave out the examples past the last full batch (else they form a last,
    ///     smaller batch).
    public init(arrays: [String: Tensor], names: [String], batchSize: Int, dropLast: Bool = false) throws {
        guard batchSize > 0 else { throw OnnxTrainError.invalidInput("the batch size must be positive, got \(batchSize)") }
        guard let first = names.first else { throw OnnxTrainError.invalidInput("there are no inputs to batch") }
        for name in names {
            guard let t = arrays[name] else {
                throw OnnxTrainError.invalidInput("the data has no array '\(name)' (the graph expects: \(names.joined(separator: ", ")); the data has: \(arrays.keys.sorted().joined(separator: ", ")))")
            }
            guard t.rank >= 1, t.dtype != .string else {
                throw OnnxTrainError.invalidInput("array '\(name)' is \(t); batching needs a numeric array with a first axis")
            }
        }
        let n = arrays[first]!.shape[0]
        guard n > 0 else { throw OnnxTrainError.invalidInput("array '\(first)' has no rows") }
        let separable = names.allSatisfy { arrays[$0]!.shape[0] % n == 0 }
        var rows: [String: Int] = [:]
        if separable {
            guard !dropLast || n >= batchSize else {
                throw OnnxTrainError.invalidInput("array '\(first)' has \(n) rows, fewer than one batch of \(batchSize) (--drop-last leaves nothing)")
            }
            count = dropLast ? n / batchSize : (n + batchSize - 1) / batchSize
            exampleCount = dropLast ? count * batchSize : n
            for name in names { rows[name] = arrays[name]!.shape[0] / n * min(batchSize, n) }
        } else {
            // Some array's rows do not split per example: equal parts, as many as full batches.
            guard n >= batchSize, n % batchSize == 0 else {
                throw OnnxTrainError.invalidInput("array '\(first)' has \(n) rows, which batch size \(batchSize) does not divide (needed because some array has no whole number of rows per example)")
            }
            count = n / batchSize
            exampleCount = n
            for name in names {
                let t = arrays[name]!
                guard t.shape[0] % count == 0 else {
                    throw OnnxTrainError.invalidInput("array '\(name)' has \(t.shape[0]) rows, which do not split into \(count) equal batches (from '\(first)' \(n) rows / batch size \(batchSize))")
                }
                rows[name] = t.shape[0] / count
            }
        }
        self.names = names
        self.arrays = arrays
        self.rows = rows
        self.batchSize = batchSize
        self.totalExamples = n
        self.examplesSeparable = separable
    }

    /// Examples in batch `index` (the last one may be smaller).
    public func examples(inBatch index: Int) -> Int {
        examplesSeparable ? min(batchSize, exampleCount - index * batchSize) : batchSize
    }

    /// Batch `index` of a pass that visits the examples in `order` (a permutation of
    /// 0..<totalExamples): examples order[index * batchSize ..< ...], each bringing its rows of
    /// every array. Needs `examplesSeparable`.
    public func batch(_ index: Int, order: [Int]) -> [String: Tensor] {
        let start = index * batchSize
        return gather(examples: order[start..<(start + self.examples(inBatch: index))])
    }

    /// The rows of `examples` (indices into the data), in that order, of every array.
    func gather(examples: ArraySlice<Int>) -> [String: Tensor] {
        var out: [String: Tensor] = [:]
        for name in names {
            let t = arrays[name]!
            let perExample = t.shape[0] / totalExamples
            var shape = t.shape
            shape[0] = perExample * examples.count
            let unitBytes = t.byteCount / max(t.shape[0], 1) * perExample
            // Every byte is copied below (examples.count units of unitBytes make the batch).
            let batch = t.dtype == .string ? Tensor(zeros: t.dtype, shape: shape) : Tensor(uninitialized: t.dtype, shape: shape)
            for (slot, example) in examples.enumerated() where unitBytes > 0 {
                (batch.storage.bytes + slot * unitBytes).copyMemory(from: t.storage.bytes + example * unitBytes, byteCount: unitBytes)
            }
            out[name] = batch
        }
        return out
    }

    /// Batch `index` (0..<count) in file order.
    public func batch(_ index: Int) -> [String: Tensor] {
        var out: [String: Tensor] = [:]
        for name in names {
            let t = arrays[name]!
            if examplesSeparable {
                let perExample = t.shape[0] / totalExamples
                out[name] = Batches.rows(of: t, from: index * batchSize * perExample, count: examples(inBatch: index) * perExample)
            } else {
                let r = rows[name]!
                out[name] = Batches.rows(of: t, from: index * r, count: r)
            }
        }
        return out
    }

    /// Rows [start, start + count) of `t` along axis 0, copied into a new tensor.
    public static func rows(of t: Tensor, from start: Int, count: Int) -> Tensor {
        var shape = t.shape
        shape[0] = count
        let rowBytes = t.byteCount / max(t.shape[0], 1)
        // Every byte is copied below.
        let out = t.dtype == .string ? Tensor(zeros: t.dtype, shape: shape) : Tensor(uninitialized: t.dtype, shape: shape)
        if rowBytes * count > 0 {
            out.storage.bytes.copyMemory(from: t.storage.bytes + start * rowBytes, byteCount: rowBytes * count)
        }
        return out
    }
}
