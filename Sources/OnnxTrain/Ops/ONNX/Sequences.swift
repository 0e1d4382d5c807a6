/// Sequence ops: SequenceEmpty/Construct/Insert/At/Erase/Length, SplitToSequence,
/// ConcatFromSequence, SequenceMap; the list also registers Optional, OptionalHasElement and
/// OptionalGetElement (Optional.swift).
func registerSequenceOps(_ registry: OpRegistry) {
    registry.register("SequenceEmpty", since: 11, sequenceEmptyKernel)
    registry.register("SequenceConstruct", since: 11, sequenceConstructKernel)
    registry.register("SequenceInsert", since: 11, sequenceInsertKernel)
    registry.register("SequenceAt", since: 11, sequenceAtKernel)
    registry.register("SequenceErase", since: 11, sequenceEraseKernel)
    registry.register("SequenceLength", since: 11, sequenceLengthKernel)
    registry.register("SplitToSequence", since: 11, splitToSequenceKernel)
    registry.register("ConcatFromSequence", since: 11, concatFromSequenceKernel)
    registry.register("SequenceMap", since: 17, sequenceMapKernel)
    registry.register("Optional", since: 15, optionalKernel)
    registry.register("OptionalHasElement", since: 15, optionalHasElementKernel)
    registry.register("OptionalGetElement", since: 15, optionalGetElementKernel)
}

/// SequenceEmpty, since opset 11.
func sequenceEmptyKernel(_ ctx: NodeContext) throws -> Kernel {
    let dtype = try dtypeFromCode(try ctx.int("dtype", default: Int(DType.float32.rawValue)))
    return AnyKernel { _, _ in [.sequence([], elementType: .tensor(dtype, shape: nil))] }
}

/// SequenceConstruct, since opset 11.
func sequenceConstructKernel(_ ctx: NodeContext) throws -> Kernel {
    AnyKernel { inputs, _ in
        let items = try (0..<inputs.count).map { Value.tensor(try inputs.tensor($0)) }
        return [.sequence(items, elementType: nil)]
    }
}

/// SequenceInsert, since opset 11.
func sequenceInsertKernel(_ ctx: NodeContext) throws -> Kernel {
    AnyKernel { inputs, _ in
        let (items, type) = try sequenceInput(inputs, 0)
        let t = try inputs.tensor(1)
        var result = items
        let position = try inputs.optionalTensor(2).map { try sequencePosition($0, count: items.count, allowEnd: true) } ?? items.count
        result.insert(.tensor(t), at: position)
        return [.sequence(result, elementType: type)]
    }
}

/// SequenceAt, since opset 11.
func sequenceAtKernel(_ ctx: NodeContext) throws -> Kernel {
    AnyKernel { inputs, _ in
        let (items, _) = try sequenceInput(inputs, 0)
        return [items[try sequencePosition(try inputs.tensor(1), count: items.count, allowEnd: false)]]
    }
}

/// SequenceErase, since opset 11.
func sequenceEraseKernel(_ ctx: NodeContext) throws -> Kernel {
    AnyKernel { inputs, _ in
        var (items, type) = try sequenceInput(inputs, 0)
        guard !items.isEmpty else { throw KernelError("cannot erase from an empty sequence") }
        let position = try inputs.optionalTensor(1).map { try sequencePosition($0, count: items.count, allowEnd: false) } ?? items.count - 1
        items.remove(at: position)
        return [.sequence(items, elementType: type)]
    }
}

/// SplitToSequence, since opset 11.
func splitToSequenceKernel(_ ctx: NodeContext) throws -> Kernel {
    let axis = try ctx.int("axis", default: 0)
    let keepDims = try ctx.int("keepdims", default: 1) != 0
    return AnyKernel { inputs, _ in
        let x = try inputs.tensor(0)
        let a = try normalizeAxis(axis, rank: x.rank)
        let dim = x.shape[a]
        var parts: [Tensor]
        if let split = try inputs.optionalTensor(1) {
            let s = try split.ints("split")
            if split.rank == 0 {
                guard let size = s.first, size > 0 else { throw KernelError("split must be positive") }
                parts = try splitTensor(x, axis: a, sizes: stride(from: 0, to: dim, by: size).map { min(size, dim - $0) })
            } else {
                parts = try splitTensor(x, axis: a, sizes: s)
            }
        } else {
            parts = try splitTensor(x, axis: a, sizes: [Int](repeating: 1, count: dim))
            if !keepDims {
                var shape = x.shape
                shape.remove(at: a)
                parts = parts.map { $0.reshaped(shape) }
            }
        }
        return [.sequence(parts.map { .tensor($0) }, elementType: .tensor(x.dtype, shape: nil))]
    }
}

/// ConcatFromSequence, since opset 11.
func concatFromSequenceKernel(_ ctx: NodeContext) throws -> Kernel {
    guard let axis = try ctx.int("axis") else { throw KernelError("attribute 'axis' is required") }
    let newAxis = try ctx.int("new_axis", default: 0) != 0
    return AnyKernel { inputs, _ in
        let items = try sequenceInput(inputs, 0).0.map { try $0.tensor.orThrow("sequence elements must be tensors") }
        guard let first = items.first else { throw KernelError("cannot concatenate an empty sequence") }
        if newAxis { return [.tensor(try stack(items, axis: try normalizeAxis(axis, rank: first.rank + 1)))] }
        return [.tensor(try concatenate(items, axis: try normalizeAxis(axis, rank: first.rank), dtype: first.dtype))]
    }
}

/// SequenceMap, since opset 17.
func sequenceMapKernel(_ ctx: NodeContext) throws -> Kernel {
    let body = try ctx.subgraph("body")
    return AnyKernel { inputs, context in
        let (items, _) = try sequenceInput(inputs, 0)
        var outputs = [[Value]](repeating: [], count: body.outputs.count)
        for i in 0..<items.count {
            var feeds: [Value?] = [items[i]]
            for k in 1..<max(inputs.count, 1) {
                if case .sequence(let s, _)? = inputs[k] {
                    guard i < s.count else { throw KernelError("additional sequence \(k) is shorter than the input sequence") }
                    feeds.append(s[i])
                } else {
                    feeds.append(inputs[k])
                }
            }
            for (k, v) in try body.run(feeds, context).enumerated() { outputs[k].append(v) }
        }
        return outputs.enumerated().map { k, values in .sequence(values, elementType: sequenceElementType(body.outputs[k].type)) }
    }
}

/// The elements and element type of the sequence at input `index`.
private func sequenceInput(_ inputs: [Value?], _ index: Int) throws -> ([Value], ValueType?) {
    switch inputs.value(index) {
    case .sequence(let items, let type)?: return (items, type)
    case .optional(.sequence(let items, let type)?, _)?: return (items, type)
    case let v?: throw KernelError("input \(index) must be a sequence, got \(v.summary)")
    case nil: throw KernelError("input \(index) is required")
    }
}

/// A sequence position from a scalar tensor; negative counts from the end.
private func sequencePosition(_ t: Tensor, count: Int, allowEnd: Bool) throws -> Int {
    guard let p = try t.ints("position").first else { throw KernelError("position must be a scalar") }
    let q = p < 0 ? p + count : p
    guard q >= 0 && (q < count || (allowEnd && q == count)) else { throw KernelError("position \(p) is out of range for a sequence of \(count)") }
    return q
}

private func sequenceElementType(_ type: ValueType?) -> ValueType? {
    if case .sequence(let e)? = type { return e }
    return nil
}

/// SequenceLength, since opset 11: the sequence's length as an int64 scalar.
func sequenceLengthKernel(_ ctx: NodeContext) throws -> Kernel {
    AnyKernel { inputs, _ in [.tensor(Tensor(scalar: Int64(try sequenceInput(inputs, 0).0.count)))] }
}
