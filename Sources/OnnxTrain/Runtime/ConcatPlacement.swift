/// Where the inputs of Concats are computed so that the Concats copy nothing: each input's
/// producer writes its output straight into its slice of the Concat's output buffer.
///
/// A Concat whose every dim before the axis is 1 (a batch-1 NCHW channel concat) lays each input
/// out as one contiguous block of its output. For such a Concat the executor allocates the output
/// buffer before the first of its inputs is computed and offers each input's producer a view of
/// its block (`BufferDonation`'s slice offer, taken by a `Tensor(uninitialized:)` of exactly that
/// size and element type); the Concat is offered the buffer itself and copies only the inputs that
/// are not already there (`ConcatKernel.intoTarget`). A Concat that is itself the input of another
/// (DenseNet's Concat_k = Concat(Concat_{k-1}, new_k)) is given its block of the outer buffer, so
/// a dense block ends with one buffer, each Concat a prefix of the next.
///
/// Sizes come from the first run of a fetch list (`Observation`): shapes may change between runs,
/// so every run checks that each Concat's inputs have the observed byte counts, and a producer
/// whose request has another size just does not take its slice (the Concat copies it). A group
/// (one outer buffer) stops offering for the rest of the run as soon as a member does not fit:
/// a Concat whose inputs are not the observed sizes, a Concat that did not write into its offer,
/// or a kernel that took a slice but returned another tensor. Before that point every byte of the
/// buffer is either an input that lies where it belongs or a block no one holds, so a Concat's
/// copies never overwrite a live value; after it, the group's Concats allocate and copy as before.
///
/// A value gets a slice only when exactly one Concat reads it, once; it is not fetched, not a
/// graph input, initializer or outer value; its producer has one output, no subgraph, and is not
/// a kept shape function (`GraphExecutor.memoKind`). A slice's storage borrows the buffer's bytes
/// and holds the buffer's storage, so the buffer lives while any slice does, a slice is never
/// donated to an in-place kernel (it is not a heap block), and the buffer is offered in place only
/// when no slice of it is alive. Graphs with ops that write into their inputs place nothing.
struct ConcatPlacement {
    /// What the executor does at one position of a plan.
    enum Role {
        /// The step's output `output` is computed into bytes offset..<offset+byteCount of the
        /// group's buffer.
        case slice(group: Int, output: Int, offset: Int, byteCount: Int, elementType: DType)
        /// A Concat whose output is bytes offset..<offset+byteCount of the group's buffer (all of
        /// it for the group's root), when its inputs have `inputBytes` bytes.
        case concat(group: Int, offset: Int, byteCount: Int, elementType: DType, inputBytes: [Int], root: Bool)
    }

    /// What the first run saw of a Concat: its inputs' byte counts, their element type, and
    /// whether every dim before the axis is 1.
    struct Observation {
        let inputBytes: [Int]
        let elementType: DType
        let contiguous: Bool
    }

    /// Per plan position; empty when nothing is placed.
    let roles: [Role?]
    /// The byte count of each group's buffer.
    let groupBytes: [Int]

    static let none = ConcatPlacement(roles: [], groupBytes: [])

    /// The placement for a plan's `steps` (step indices by position) from what its first run observed.
    /// `keep`: fetched slots; `borrowed`: slots the graph does not own.
    static func make(positions: [Int], steps: [GraphExecutor.Step], observed: [Int: Observation],
                     keep: Set<Int>, borrowed: [Bool], memoKind: [UInt8]) -> ConcatPlacement {
        guard !observed.isEmpty else { return .none }
        var producer: [Int: (position: Int, output: Int)] = [:]
        for (position, k) in positions.enumerated() {
            for (i, s) in steps[k].outputs.enumerated() where s >= 0 { producer[s] = (position, i) }
        }
        var concatReads: [Int: Int] = [:]
        for position in observed.keys {
            for s in steps[positions[position]].inputs where s >= 0 { concatReads[s, default: 0] += 1 }
        }
        var roles = [Role?](repeating: nil, count: positions.count)
        var groupBytes: [Int] = []
        func eligible(_ s: Int) -> (position: Int, output: Int)? {
            guard s >= 0, concatReads[s] == 1, !keep.contains(s), s >= borrowed.count || !borrowed[s],
                  let p = producer[s], roles[p.position] == nil else { return nil }
            let step = steps[positions[p.position]]
            guard !step.hasSubgraphs, !step.hasSideEffects, memoKind.isEmpty || memoKind[positions[p.position]] == 0,
                  step.outputs.lazy.filter({ $0 >= 0 }).count == 1 else { return nil }
            return p
        }
        for position in observed.keys.sorted(by: >) {
            let k = positions[position]
            guard let seen = observed[position], seen.contiguous,
                  memoKind.isEmpty || memoKind[k] == 0 else { continue }
            let step = steps[k]
            let group: Int, base: Int
            if case .concat(let g, let offset, _, _, _, _)? = roles[position] {
                (group, base) = (g, offset)
            } else {
                guard roles[position] == nil,
                      zip(step.inputs, seen.inputBytes).contains(where: { $1 > 0 && eligible($0) != nil }) else { continue }
                group = groupBytes.count
                base = 0
                groupBytes.append(seen.inputBytes.reduce(0, +))
                roles[position] = .concat(group: group, offset: 0, byteCount: groupBytes[group], elementType: seen.elementType,
                                          inputBytes: seen.inputBytes, root: true)
            }
            var offset = base
            for (s, bytes) in zip(step.inputs, seen.inputBytes) {
                defer { offset += bytes }
                guard bytes > 0, let p = eligible(s) else { continue }
                if let inner = observed[p.position], inner.contiguous, memoKind.isEmpty || memoKind[positions[p.position]] == 0 {
                    roles[p.position] = .concat(group: group, offset: offset, byteCount: bytes, elementType: seen.elementType,
                                                inputBytes: inner.inputBytes, root: false)
                } else {
                    roles[p.position] = .slice(group: group, output: p.output, offset: offset, byteCount: bytes,
                                               elementType: seen.elementType)
                }
            }
        }
        return groupBytes.isEmpty ? .none : ConcatPlacement(roles: roles, groupBytes: groupBytes)
    }

    /// What a run observes of a Concat step, or nil when it cannot be placed (strings, non-tensors).
    static func observe(_ inputs: [Value?], _ outputs: [Value?], axis: Int) -> Observation? {
        guard let output = outputs.first, case .tensor(let out)? = output, out.dtype != .string,
              let a = try? normalizeAxis(axis, rank: out.rank) else { return nil }
        var bytes: [Int] = []
        for value in inputs {
            guard case .tensor(let t)? = value, t.dtype == out.dtype else { return nil }
            bytes.append(t.byteCount)
        }
        return Observation(inputBytes: bytes, elementType: out.dtype, contiguous: out.shape[..<a].allSatisfy { $0 == 1 })
    }

    /// Whether a Concat's `inputs` have the byte counts and element type it was placed with.
    static func fits(_ inputs: [Value?], _ inputBytes: [Int], _ elementType: DType) -> Bool {
        guard inputs.count == inputBytes.count else { return false }
        for (value, bytes) in zip(inputs, inputBytes) {
            guard case .tensor(let t)? = value, t.dtype == elementType, t.byteCount == bytes else { return false }
        }
        return true
    }
}
