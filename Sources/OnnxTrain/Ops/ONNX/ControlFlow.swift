/// Control flow: If, Loop, Scan (opset 8 batch semantics and opset 9+). Bodies are compiled once
/// in the factory and read outer-scope values through the execution context.
func registerControlFlowOps(_ registry: OpRegistry) {
    registry.register("If", since: 1, ifKernel)
    registry.register("Loop", since: 1, loopKernel)
    registry.register("Scan", since: [8, 9], scanKernel)
}

/// If, since opset 1.
func ifKernel(_ ctx: NodeContext) throws -> Kernel {
    let thenBranch = try ctx.subgraph("then_branch"), elseBranch = try ctx.subgraph("else_branch")
    return AnyKernel { inputs, context in
        let cond = try inputs.tensor(0)
        guard cond.count == 1, let c = try cond.doubles().first else { throw KernelError("cond must hold one element") }
        return try (c != 0 ? thenBranch : elseBranch).run([], context).map { $0 }
    }
}

/// Loop, since opset 1.
func loopKernel(_ ctx: NodeContext) throws -> Kernel {
    let body = try ctx.subgraph("body")
    return AnyKernel { inputs, context in
        let maxTrips = try inputs.optionalTensor(0).map { t -> Int in
            guard let v = t.intValues()?.first else { throw KernelError("M must be an integer scalar") }
            return v
        }
        var cond = try inputs.optionalTensor(1).map { try $0.doubles().first ?? 0 } ?? 1
        var carried: [Value?] = Array(inputs.dropFirst(2))
        let n = carried.count
        let scanCount = body.outputs.count - 1 - n
        guard scanCount >= 0 else { throw KernelError("body has \(body.outputs.count) outputs for \(n) loop-carried values") }
        var scans = [[Value]](repeating: [], count: scanCount)
        var i = 0
        while cond != 0 && (maxTrips.map { i < $0 } ?? true) {
            let result = try body.run([.tensor(Tensor(scalar: Int64(i))), .tensor(Tensor(scalar: cond != 0))] + carried, context)
            guard case .tensor(let c) = result[0], let cv = try c.doubles().first else { throw KernelError("body cond output must be a bool tensor") }
            cond = cv
            carried = Array(result[1..<(1 + n)]).map { $0 }
            for k in 0..<scanCount { scans[k].append(result[1 + n + k]) }
            i += 1
        }
        var outputs = carried
        for (k, values) in scans.enumerated() {
            let tensors = values.compactMap(\.tensor)
            if tensors.count != values.count {
                outputs.append(.sequence(values, elementType: nil))
            } else if tensors.isEmpty {
                let declared = declaredTensorType(body.outputs[1 + n + k].type)
                outputs.append(.tensor(Tensor(zeros: declared.dtype, shape: [0] + declared.shape)))
            } else {
                outputs.append(.tensor(try stack(tensors, axis: 0)))
            }
        }
        return outputs
    }
}

/// Scan, since opset 8, 9.
func scanKernel(_ ctx: NodeContext) throws -> Kernel {
    let since = ctx.sinceVersion
    let body = try ctx.subgraph("body")
    guard let m = try ctx.int("num_scan_inputs") else { throw KernelError("attribute 'num_scan_inputs' is required") }
    let inputAxes = try ctx.ints("scan_input_axes")
    let inputDirections = try ctx.ints(since == 8 ? "directions" : "scan_input_directions")
    let outputAxes = try ctx.ints("scan_output_axes")
    let outputDirections = try ctx.ints("scan_output_directions")
    let config = ScanConfig(body: body, scanInputs: m, inputAxes: inputAxes, inputDirections: inputDirections,
                            outputAxes: outputAxes, outputDirections: outputDirections)
    if since == 9 {
        return AnyKernel { inputs, context in try config.run(inputs.map { $0 }, context).map { $0 } }
    }
    // Opset 8: an optional sequence_lens input, then every input has a leading batch axis.
    return AnyKernel { inputs, context in
        let values = try (1..<inputs.count).map { try inputs.tensor($0) }
        guard let batch = values.first?.shape.first else { throw KernelError("Scan-8 inputs need a batch axis") }
        let lens = try inputs.optionalTensor(0)?.ints("sequence_lens")
        var perBatch: [[Value]] = []
        for b in 0..<batch {
            var slices = try values.map { Value.tensor(try indexAlong($0, axis: 0, b)) }
            if let lens, b < lens.count {
                // Shorter sequences: scan only their first lens[b] steps.
                for k in (values.count - m)..<values.count {
                    if let t = slices[k].tensor { slices[k] = .tensor(try slice(t, starts: [0], ends: [lens[b]], axes: [0], steps: nil)) }
                }
            }
            perBatch.append(try config.run(slices, context))
        }
        guard let first = perBatch.first else { return [] }
        return try (0..<first.count).map { k in .tensor(try stack(perBatch.map { try $0[k].tensor.orThrow("Scan outputs must be tensors") }, axis: 0)) }
    }
}

/// Parsed Scan attributes and the body, run over one (unbatched) set of inputs.
private struct ScanConfig {
    let body: Subgraph
    let scanInputs: Int
    let inputAxes: [Int]?, inputDirections: [Int]?, outputAxes: [Int]?, outputDirections: [Int]?

    func run(_ inputs: [Value?], _ context: ExecutionContext) throws -> [Value] {
        let n = inputs.count - scanInputs
        guard n >= 0 else { throw KernelError("Scan has \(inputs.count) inputs for \(scanInputs) scan inputs") }
        var states: [Value?] = Array(inputs[..<n])
        let scanned = try (n..<inputs.count).map { try inputs.tensor($0) }
        let axes = try scanned.enumerated().map { k, t in try normalizeAxis(inputAxes?[k] ?? 0, rank: t.rank) }
        guard let steps = scanned.first.map({ $0.shape[axes[0]] }) else { throw KernelError("Scan needs a scan input") }
        for (k, t) in scanned.enumerated() where t.shape[axes[k]] != steps {
            throw KernelError("scan inputs have different lengths (\(steps) and \(t.shape[axes[k]]))")
        }
        let scanOutputs = body.outputs.count - n
        guard scanOutputs >= 0 else { throw KernelError("body has \(body.outputs.count) outputs for \(n) states") }
        var collected = [[Tensor]](repeating: [], count: scanOutputs)
        for step in 0..<steps {
            var feeds = states
            for (k, t) in scanned.enumerated() {
                let reverse = (inputDirections?[k] ?? 0) != 0
                feeds.append(.tensor(try indexAlong(t, axis: axes[k], reverse ? steps - 1 - step : step)))
            }
            let result = try body.run(feeds, context)
            states = Array(result[..<n]).map { $0 }
            for k in 0..<scanOutputs {
                guard let t = result[n + k].tensor else { throw KernelError("scan output \(k) must be a tensor") }
                collected[k].append(t)
            }
        }
        var outputs = states.map { $0 ?? .optional(nil, type: nil) }
        for k in 0..<scanOutputs {
            var parts = collected[k]
            if (outputDirections?[k] ?? 0) != 0 { parts.reverse() }
            if parts.isEmpty {
                let declared = declaredTensorType(body.outputs[n + k].type)
                outputs.append(.tensor(Tensor(zeros: declared.dtype, shape: [0] + declared.shape)))
                continue
            }
            let axis = try normalizeAxis(outputAxes?[k] ?? 0, rank: parts[0].rank + 1)
            outputs.append(.tensor(try stack(parts, axis: axis)))
        }
        return outputs
    }
}

/// The dtype and static shape a declared tensor type gives (unknown dims become 0), for empty outputs.
func declaredTensorType(_ type: ValueType?) -> (dtype: DType, shape: [Int]) {
    guard case .tensor(let d, let s)? = type else { return (.float32, []) }
    return (d ?? .float32, (s ?? []).map { if case .value(let v) = $0 { return v } else { return 0 } })
}

/// Tensors of equal shape stacked along a new `axis`.
func stack(_ parts: [Tensor], axis: Int) throws -> Tensor {
    guard let first = parts.first else { throw KernelError("nothing to stack") }
    var shape = first.shape
    shape.insert(1, at: axis)
    for p in parts where p.shape != first.shape { throw KernelError("cannot stack shapes \(first.shape) and \(p.shape)") }
    return try concatenate(parts.map { $0.reshaped(shape) }, axis: axis, dtype: first.dtype)
}

/// The sub-tensor at position `i` of `axis`, with that axis removed.
func indexAlong(_ x: Tensor, axis: Int, _ i: Int) throws -> Tensor {
    var shape = x.shape
    shape.remove(at: axis)
    return try slice(x, starts: [i], ends: [i + 1], axes: [axis], steps: nil).reshaped(shape)
}

extension Optional {
    func orThrow(_ message: String) throws -> Wrapped {
        guard let v = self else { throw KernelError(message) }
        return v
    }
}
