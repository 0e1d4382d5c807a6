/// Cuts data arrays into batches along their first axis.
///
/// The batch count is the first dimension of the first input divided by the batch size; every
/// array is then cut into that many equal parts, so arrays with a different number of rows per
/// example batch together (token-level labels [B*T] with inputs [B, T]).
public struct Batches {
    public let names: [String]
    public let arrays: [String: Tensor]
    public let count: Int
    /// Rows of each array per batch.
    public let rows: [String: Int]
    /// Examples per batch (rows of the first input); every array has `rows / batchSize` rows per example.
    public let batchSize: Int
    /// Examples in the data: batch count x batch size.
    public var exampleCount: Int { count * batchSize }

    /// - Parameters:
    ///   - arrays: the data by name; only `names` are batched.
    ///   - names: the inputs to feed, the first one fixing the batch count.
    public init(arrays: [String: Tensor], names: [String], batchSize: Int) throws {
        guard batchSize > 0 else { throw OnnxTrainError.invalidInput("the batch size must be positive, got \(batchSize)") }
        guard let first = names.first else { throw OnnxTrainError.invalidInput("there are no inputs to batch") }
        var rows: [String: Int] = [:]
        var count = 0
        for name in names {
            guard let t = arrays[name] else {
                throw OnnxTrainError.invalidInput("the data has no array '\(name)' (the graph expects: \(names.joined(separator: ", ")); the data has: \(arrays.keys.sorted().joined(separator: ", ")))")
            }
            guard t.rank >= 1, t.dtype != .string else {
                throw OnnxTrainError.invalidInput("array '\(name)' is \(t); batching needs a numeric array with a first axis")
            }
            if name == first {
                guard t.shape[0] >= batchSize, t.shape[0] % batchSize == 0 else {
                    throw OnnxTrainError.invalidInput("array '\(name)' has \(t.shape[0]) rows, which batch size \(batchSize) does not divide")
                }
                count = t.shape[0] / batchSize
            }
            guard t.shape[0] % count == 0 else {
                throw OnnxTrainError.invalidInput("array '\(name)' has \(t.shape[0]) rows, which do not split into \(count) equal batches (from '\(first)' \(arrays[first]!.shape[0]) rows / batch size \(batchSize))")
            }
            rows[name] = t.shape[0] / count
        }
        self.names = names
        self.arrays = arrays
        self.count = count
        self.rows = rows
        self.batchSize = batchSize
    }

    /// Whether every array has a whole number of rows per example, so examples can be shuffled
    /// one by one (else only the batch order can be).
    public var examplesSeparable: Bool { names.allSatisfy { rows[$0]! % batchSize == 0 } }

    /// Batch `index` of an epoch that visits the examples in `order` (a permutation of
    /// 0..<exampleCount): examples order[index * batchSize ..< (index + 1) * batchSize], each
    /// bringing its `rows / batchSize` rows of every array.
    public func batch(_ index: Int, order: [Int]) -> [String: Tensor] {
        var out: [String: Tensor] = [:]
        let examples = order[(index * batchSize)..<((index + 1) * batchSize)]
        for name in names {
            let t = arrays[name]!
            let perExample = rows[name]! / batchSize
            var shape = t.shape
            shape[0] = rows[name]!
            let unitBytes = t.byteCount / max(t.shape[0], 1) * perExample
            let batch = Tensor(zeros: t.dtype, shape: shape)
            for (slot, example) in examples.enumerated() where unitBytes > 0 {
                (batch.storage.bytes + slot * unitBytes).copyMemory(from: t.storage.bytes + example * unitBytes, byteCount: unitBytes)
            }
            out[name] = batch
        }
        return out
    }

    /// Batch `index` (0..<count): rows [index * r, (index + 1) * r) of every array.
    public func batch(_ index: Int) -> [String: Tensor] {
        var out: [String: Tensor] = [:]
        for name in names {
            let t = arrays[name]!
            let r = rows[name]!
            out[name] = Batches.rows(of: t, from: index * r, count: r)
        }
        return out
    }

    /// Rows [start, start + count) of `t` along axis 0, copied into a new tensor.
    public static func rows(of t: Tensor, from start: Int, count: Int) -> Tensor {
        var shape = t.shape
        shape[0] = count
        let rowBytes = t.byteCount / max(t.shape[0], 1)
        let out = Tensor(zeros: t.dtype, shape: shape)
        if rowBytes * count > 0 {
            out.storage.bytes.copyMemory(from: t.storage.bytes + start * rowBytes, byteCount: rowBytes * count)
        }
        return out
    }
}
