/// Concat: the inputs' blocks laid end to end along one axis.

import Synchronization

/// Concat, since opset 1.
func concatKernel(_ ctx: NodeContext) throws -> Kernel {
    let axis = try ctx.int("axis") ?? (ctx.opset < 4 ? 1 : nil)
    guard let axis else { throw KernelError("attribute 'axis' is required") }
    return ConcatKernel(axis: axis)
}

/// Concat's kernel; the executor knows it by its type (`ConcatPlacement` plans where its inputs
/// are computed).
struct ConcatKernel: Kernel {
    let axis: Int

    func run(_ inputs: [Value?], _ context: ExecutionContext) throws -> [Value?] {
        let parts = try (0..<inputs.count).map { try inputs.tensor($0) }
        guard let first = parts.first else { throw KernelError("Concat needs at least one input") }
        let a = try normalizeAxis(axis, rank: first.rank)
        if first.dtype != .string, first.shape[..<a].allSatisfy({ $0 == 1 }),
           let placed = try ConcatKernel.intoTarget(parts, axis: a) {
            return [.tensor(placed)]
        }
        return [.tensor(try concatenate(parts, axis: a, dtype: first.dtype))]
    }

    /// The concatenation written into the storage the executor offers (`BufferDonation.takeConcatTarget`),
    /// skipping the inputs whose bytes already lie where they belong (a kernel computed them
    /// into their slice); nil when nothing is offered for this size. Every dim before `axis` is
    /// 1, so each input is one contiguous block of the output.
    static func intoTarget(_ parts: [Tensor], axis: Int) throws -> Tensor? {
        let first = parts[0]
        let outShape = try concatenatedShape(parts, axis: axis)
        let bytes = parts.reduce(0) { $0 + $1.byteCount }
        guard let target = BufferDonation.takeConcatTarget(bytes, first.dtype) else { return nil }
        var copies: [BlockCopies.Copy] = []
        var offset = 0
        for p in parts {
            let dst = target.bytes + offset
            if p.byteCount > 0 && p.storage.bytes != dst {
                copies.append((dst, UnsafeRawPointer(p.storage.bytes), p.byteCount))
            }
            offset += p.byteCount
        }
        ConcatKernel.copiedInputs.add(copies.count, ordering: .relaxed)
        ConcatKernel.placedInputs.add(parts.count - copies.count, ordering: .relaxed)
        BlockCopies.run(copies)
        return Tensor(dtype: first.dtype, shape: outShape, storage: target)
    }

    /// Inputs found in place, and inputs copied, by Concats writing into an offered storage
    /// since the process started (tests read them).
    static let placedInputs = Atomic<Int>(0)
    static let copiedInputs = Atomic<Int>(0)
}

/// The gradient rule of Concat.
func concatGradient(_ g: GradientContext) throws -> [String?] {
    let dY = try g.requiredDY()
    let n = g.node.inputs.count
    let rawAxis = g.node.int("axis") ?? 0
    guard let r = g.rank(g.output(0)) ?? g.rank(g.input(0)) ?? (rawAxis >= 0 ? rawAxis + 1 : nil) else {
        throw GradientError("Concat with a negative axis needs the rank of its inputs")
    }
    let axis = TypeInference.normalize(rawAxis, r, clamp: false)
    let sizes = g.node.inputs.map { name -> Int? in
        guard let s = g.shapeInfo(name), axis < s.count, case .value(let v) = s[axis] else { return nil }
        return v
    }
    let split: String
    if sizes.allSatisfy({ $0 != nil }) {
        split = g.ints(sizes.map { $0! }, name: "split")
    } else {
        // Each input's length along the axis, at run time.
        let lengths = g.node.inputs.map { name in
            g.op("Gather", [g.shape(of: name), g.ints([axis], name: "axis")], attributes: ["axis": .int(0)])
        }
        split = g.op("Concat", lengths, attributes: ["axis": .int(0)])
    }
    let parts = g.ms("SplitTraining", [dY, split], outputs: n, attributes: ["axis": .int(axis)])
    return (0..<n).map { g.needs($0) ? parts[$0] : nil }
}
