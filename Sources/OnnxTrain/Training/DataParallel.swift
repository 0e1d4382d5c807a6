/// A group of processes training one model data-parallel, as PyTorch's DistributedDataParallel
/// does: every process holds the whole model, takes its own shard of every global batch, and the
/// gradients are averaged over the group before each optimizer step, so every process's
/// parameters stay identical. `Trainer(..., dataParallel:)` takes one; OnnxTrainMPI's `MPIGroup`
/// implements it over MPI (the core library needs no MPI).
///
/// Every method is collective: each process of the group calls it, in the same order, with buffers
/// of the same size; a process that does not (it died, it failed alone) leaves the others waiting
/// inside the transport, which the transport must end (mpirun ends the whole job).
public protocol DataParallel: AnyObject {
    /// This process's index in the group, 0..<size. Rank 0 alone reports and writes files.
    var rank: Int { get }
    /// Processes in the group.
    var size: Int { get }
    /// Replaces `bytes` on every process with rank `root`'s.
    func broadcast(_ bytes: UnsafeMutableRawBufferPointer, root: Int) throws
    /// Elementwise sum over the group, in place, the same result on every process.
    func allreduceSum(_ values: UnsafeMutableBufferPointer<Float>) throws
    func allreduceSum(_ values: UnsafeMutableBufferPointer<Double>) throws
    /// Elementwise maximum over the group, in place.
    func allreduceMax(_ values: UnsafeMutableBufferPointer<Double>) throws
    /// Called with the failure every process agreed on (`agree(_:)`) before it is thrown: a
    /// transport can remember that the whole group knows, so the job ends without an abort.
    func failureAgreed(_ failure: DataParallelFailure)
}

/// A failure one process of a data-parallel group met, once the whole group knows it.
public struct DataParallelFailure: Error, Equatable {
    /// The lowest rank that failed.
    public var rank: Int
    public var error: OnnxTrainError
}

extension DataParallel {
    public var isMainProcess: Bool { rank == 0 }

    public func failureAgreed(_ failure: DataParallelFailure) {}

    /// Broadcasts `tensor`'s bytes from `root` in place.
    public func broadcast(_ tensor: Tensor, root: Int = 0) throws {
        guard tensor.byteCount > 0 else { return }
        try broadcast(UnsafeMutableRawBufferPointer(start: tensor.storage.bytes, count: tensor.byteCount), root: root)
    }

    /// Sums `values` over the group in place.
    public func allreduceSum(_ values: inout [Double]) throws {
        try values.withUnsafeMutableBufferPointer { try allreduceSum($0) }
    }

    /// Collective: every process reports its own failure (nil when it succeeded) and learns
    /// whether any failed; when one did, every process gets the lowest failing rank's error
    /// (message and kind), so rank 0 can report it once and every process can stop at the same
    /// point instead of leaving the others waiting. Returns nil when none failed.
    public func agree(_ failure: OnnxTrainError?) throws -> DataParallelFailure? {
        // Max of -rank over the failing ranks is minus the lowest one; -size when none failed.
        var lowest = [failure == nil ? -Double(size) : -Double(rank)]
        try lowest.withUnsafeMutableBufferPointer { try allreduceMax($0) }
        let root = Int(-lowest[0])
        guard root < size else { return nil }
        var header: [Int64] = [Int64(DataParallelFailure.kinds.firstIndex(of: failure?.kind ?? .training) ?? 0), 0]
        var text = Array((failure?.message ?? "").utf8)
        header[1] = Int64(text.count)
        try header.withUnsafeMutableBytes { try broadcast($0, root: root) }
        if rank != root { text = [UInt8](repeating: 0, count: Int(header[1])) }
        try text.withUnsafeMutableBytes { try broadcast($0, root: root) }
        let kinds = DataParallelFailure.kinds
        let kind = kinds.indices.contains(Int(header[0])) ? kinds[Int(header[0])] : .training
        let agreed = DataParallelFailure(rank: root, error: OnnxTrainError(kind, String(decoding: text, as: UTF8.self)))
        failureAgreed(agreed)
        return agreed
    }

    /// Runs `body` on every process, then `agree`s: throws the lowest failing rank's error (its
    /// message prefixed with the rank when the group has several) on every process when any failed.
    public func together<T>(_ body: () throws -> T) throws -> T {
        var result: T?
        var failure: OnnxTrainError?
        do {
            result = try body()
        } catch let error as OnnxTrainError {
            failure = error
        } catch let error as KernelError {
            failure = OnnxTrainError(.kernel, error.message)
        } catch let error as DataParallelFailure {
            failure = error.error
        } catch {
            failure = OnnxTrainError(.training, "\(error)")
        }
        if let agreed = try agree(failure) { throw agreed.error.prefixed("rank \(agreed.rank) of \(size)") }
        return result!
    }

    /// Broadcasts every parameter's values (trainable and frozen) from rank 0.
    func broadcastParameters(_ parameters: [Parameter]) throws {
        for p in parameters { try broadcast(p.data) }
    }

    /// Averages the parameters' gradients over the group, in place: one flat float buffer, one
    /// allreduce (sum), then the division by the group size, so every process holds the mean.
    /// Returns the bytes each process contributed.
    @discardableResult
    func averageGradients(of parameters: [Parameter], into flat: inout [Float]) throws -> Int {
        var total = 0
        for p in parameters {
            guard let g = p.grad else { continue }
            guard g.dtype == .float32 else {
                throw OnnxTrainError.unsupported("data-parallel training averages float gradients; the gradient of '\(p.name)' is tensor(\(g.dtype))")
            }
            total += g.count
        }
        if flat.count != total { flat = [Float](repeating: 0, count: total) }
        try flat.withUnsafeMutableBufferPointer { buffer in
            var offset = 0
            for p in parameters {
                guard let g = p.grad else { continue }
                try g.withUnsafeBufferPointer(as: Float.self) { src in
                    for i in 0..<src.count { buffer[offset + i] = src[i] }
                }
                offset += g.count
            }
            try allreduceSum(buffer)
            let scale = 1 / Float(size)
            offset = 0
            for p in parameters {
                guard let g = p.grad else { continue }
                try g.withSharedMutableBufferPointer(as: Float.self) { dst in
                    for i in 0..<dst.count { dst[i] = buffer[offset + i] * scale }
                }
                offset += g.count
            }
        }
        return total * MemoryLayout<Float>.size
    }
}

extension DataParallelFailure {
    /// The kinds in a fixed order: the index crosses process boundaries.
    static let kinds: [OnnxTrainError.Kind] = [.io, .invalidModel, .invalidGraph, .unsupported, .invalidInput, .kernel, .training]
}

extension Batches {
    /// The examples (positions within batch `index`) that process `part` of `parts` takes: an even
    /// split of the batch, the first `n % parts` processes taking one more example when the
    /// batch does not divide (the last, smaller batch of an epoch); empty when the batch has
    /// fewer examples than processes.
    public func shard(ofBatch index: Int, part: Int, of parts: Int) -> Range<Int> {
        let n = examples(inBatch: index)
        let base = n / parts, extra = n % parts
        let start = part * base + min(part, extra)
        return start..<(start + base + (part < extra ? 1 : 0))
    }

    /// The rows of `positions` (a range within batch `index`) of every array, the batch's
    /// examples taken from `order` (a permutation of the examples, as `batch(_:order:)`), or in
    /// file order when nil. Needs `examplesSeparable`.
    public func batch(_ index: Int, positions: Range<Int>, order: [Int]?) -> [String: Tensor] {
        let start = index * batchSize + positions.lowerBound
        guard let order else {
            var out: [String: Tensor] = [:]
            for name in names {
                let t = arrays[name]!
                let perExample = t.shape[0] / totalExamples
                out[name] = Batches.rows(of: t, from: start * perExample, count: positions.count * perExample)
            }
            return out
        }
        return gather(examples: order[start..<(start + positions.count)])
    }
}
