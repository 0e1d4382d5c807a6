#if canImport(Glibc)
import Glibc
#endif
import Synchronization

/// A graph compiled for execution: every node resolved to a kernel, values numbered into slots,
/// a topological order planned once, and for each set of fetches the nodes it needs and where
/// each intermediate value dies.
final class GraphExecutor {
    /// One node compiled: a class, so the run loop reads a step without copying its node,
    /// kernel and slot lists (a struct copy retained and released each of them per node, about
    /// 3% of a run of small tensors).
    final class Step {
        let node: Node
        let kernel: Kernel
        /// Slot per node input; -1 for an omitted optional input.
        let inputs: [Int]
        /// Slot per node output; -1 for an unnamed output.
        let outputs: [Int]
        /// Slots read by the node's subgraphs from this scope (kept alive until the node runs).
        let captured: [Int]
        let hasSubgraphs: Bool
        /// Whether the op writes into an input (declared at its registration): it runs for that
        /// effect even when no fetch needs its outputs.
        let hasSideEffects: Bool
        /// Inputs whose block the output may take over when they die here (declared at registration).
        let inPlace: [Int]

        init(node: Node, kernel: Kernel, inputs: [Int], outputs: [Int], captured: [Int], hasSubgraphs: Bool,
             hasSideEffects: Bool, inPlace: [Int]) {
            self.node = node
            self.kernel = kernel
            self.inputs = inputs
            self.outputs = outputs
            self.captured = captured
            self.hasSubgraphs = hasSubgraphs
            self.hasSideEffects = hasSideEffects
            self.inPlace = inPlace
        }
    }

    /// The nodes one set of fetches needs, in order, and the slots freed after each: the memory
    /// plan of one fetch list, made once from the node order.
    ///
    /// A value lives from its node to its last reader (a node's subgraphs count as readers of
    /// what they capture); fetched values, graph inputs, initializers and values of enclosing
    /// scopes are never freed or overwritten here. A freed block goes back to `BufferCache`,
    /// where the next value of its size class reuses it, so values whose lifetimes do not
    /// overlap share buffers; a training graph's forward values live on to the gradient nodes
    /// that read them. `donors` adds in-place updates: at an op that declares an input in place,
    /// an input that dies there (read by no later node or subgraph, not fetched, not read twice
    /// by the node) is offered to the op's output (`BufferDonation`). Sizes are not planned:
    /// shapes may be symbolic, so the offer is taken only by an output of exactly the input's
    /// byte size, and only when no other tensor shares the block (a Reshape's view of it), both
    /// checked on every run, which keeps one plan right for every input shape.
    struct Plan {
        let steps: [Int]
        let freeAfter: [[Int]]
        /// Per position: (input index, slot) of the inputs offered to the node's output.
        let donors: [[(input: Int, slot: Int)]]
        /// `freeAfter` as one list: position p's slots from `freeStart[p]` to `freeStart[p + 1]`.
        let freeStart: [Int], freeSlots: [Int]
        /// The positions with donors.
        let hasDonors: [Bool]

        init(steps: [Int], freeAfter: [[Int]], donors: [[(input: Int, slot: Int)]]) {
            self.steps = steps
            self.freeAfter = freeAfter
            self.donors = donors
            var start = [0], slots: [Int] = []
            for list in freeAfter {
                slots += list
                start.append(slots.count)
            }
            freeStart = start
            freeSlots = slots
            hasDonors = donors.map { !$0.isEmpty }
        }
    }

    /// The compiled graph; a constant whose kernel took its `ConstantRelease` is there as the
    /// handle's placeholder (the handle holds the original until it is released).
    private(set) var graph: Graph
    let opsets: [String: Int]
    let registry: OpRegistry
    private(set) var steps: [Step] = []
    private(set) var slotOf: [String: Int] = [:]
    private(set) var slotCount = 0
    /// Initializer values by slot, loaded into every frame.
    private var constants: [(slot: Int, value: Value)] = []
    /// Constants their kernels may consume (`ConstantRelease`), loaded into every frame as the
    /// original until released, the placeholder after.
    private var releasables: [ConstantRelease] = []
    /// Per step, the slots of its releasable constants: dropped from the frame once the step has
    /// run (it is their only reader), so a released original dies with the step, not the run.
    private var releaseAfter: [[Int]] = []
    /// The names of the constants in `releasables`: a fetch of one runs on the unoptimised graph.
    private(set) var consumableNames: Set<String> = []
    /// The names of the constants released so far (tests read it).
    var releasedNames: Set<String> { Set(releasables.filter(\.isReleased).map(\.name)) }
    /// Names read from the enclosing scope, with their slots here.
    private(set) var outerNames: [(name: String, slot: Int)] = []
    /// Whether plans offer dying inputs to in-place ops (`SessionOptions.memoryPlan`).
    let inPlaceUpdates: Bool
    /// Slots this graph does not own: graph inputs (the caller's feeds), initializers and
    /// values of enclosing scopes; never offered to an in-place op.
    private var borrowed: [Bool] = []
    /// Every step's input slots, then every step's output slots, one list each: the step's
    /// `inputs` from `inputStart[k]` to `inputStart[k + 1]` (likewise outputs). The run loop reads
    /// these instead of each step's own arrays: one sequential list rather than two heap blocks per
    /// step, which the kernels between two steps have pushed out of the cache.
    private var inputStart: [Int] = [0], inputSlots: [Int] = []
    private var outputStart: [Int] = [0], outputSlots: [Int] = []
    /// Plans by fetch list, shared by the threads that run one session.
    private let planCache = Mutex<[[Int]: Plan]>([:])
    /// Whether Concats' inputs are computed into their slices of the Concat's output
    /// (`ConcatPlacement`): set by `placeConcatInputs` unless an op writes into its inputs.
    private(set) var placesConcatInputs = false
    /// Placements by fetch list, made from the first run of each (shared by the threads).
    private let placements = Mutex<[[Int]: ConcatPlacement]>([:])

    /// Per step, whether its outputs are kept from one run to the next (`memoizeShapeFunctions`):
    /// 0 no; 1 a Shape or Size, whose output is the one kept while its value is the same, so
    /// that the steps reading it see the same tensor; 2 a step whose every input is an
    /// initializer or the output of a step marked 1 or 2 (a function of shapes and constants: a
    /// causal mask built from Shape, Range and LessOrEqual, the Gather/Unsqueeze/Concat of a
    /// Reshape's target shape), whose kept outputs are used while every input is the very tensor
    /// (same storage, element type and shape) it read when it computed them. Kept tensors are
    /// never written in place: the memo holds a reference, so no block of theirs is unshared
    /// and offered to an in-place op, and a graph with ops that write into inputs keeps nothing.
    private(set) var memoKind: [UInt8] = []
    /// Per step marked 2, for each input the step that computes it (a step marked 1 or 2), or -1
    /// for an initializer: a step keeps its outputs only while every input it read is one that
    /// step's memo holds (`memoize`).
    private var memoProducers: [[Int]] = []
    /// A kept step: the inputs it read (none for a Shape or Size) and the outputs it computed;
    /// for a Shape or Size, the shape of the tensor it read (its output is a function of it alone).
    final class MemoEntry: @unchecked Sendable {
        let inputs: [Value?], outputs: [Value?]
        let sourceShape: [Int]?
        init(inputs: [Value?], outputs: [Value?], sourceShape: [Int]? = nil) {
            self.inputs = inputs
            self.outputs = outputs
            self.sourceShape = sourceShape
        }
    }
    /// The kept steps by step index, shared by the threads that run one session.
    private let memo = Mutex<[MemoEntry?]>([])
    /// Outputs over this many bytes in all are not kept (they are computed on every run).
    static let memoBytes = 8 << 20
    /// What the kernels may keep of forms derived from constant inputs (`constantInitializers`):
    /// twice the constant initializers' bytes, but at least `cacheBudgetFloor` and at most
    /// `cacheBudgetCap`. The peak memory goal is onnxruntime's (which keeps pre-packed copies of
    /// its weights): its peak stood 40 to 320 MiB above ours, about 2x the weights for ResNets
    /// and 0.6x for VGG-19's 548 MB (docs/PERFORMANCE.md).
    static let cacheBudgetFloor = 64 << 20
    static let cacheBudgetCap = 256 << 20
    /// The shared budget of the kernels' kept forms (nil without `constantInitializers`).
    private(set) var cacheBudget: KernelCacheBudget?

    /// Compiles `graph`. `visible` holds the names an enclosing graph defines (for subgraphs).
    /// Model-local functions must already be inlined (`InlineFunctions`, run by `InferenceSession`).
    /// `inPlaceUpdates` lets ops that declare it write their output over a dying input.
    /// `memoizeShapeFunctions` keeps the outputs of steps that compute from shapes and
    /// initializers only from one run to the next (`memoKind`): for graphs whose initializers no
    /// one changes between runs (an inference session's). `constantInitializers` tells each
    /// kernel which of its inputs are such initializers (not graph inputs), so it may keep forms
    /// derived from them (`NodeContext.isConstantInput`); never for a graph whose weights change.
    /// `placeConcatInputs` lets the producers of Concats' inputs write into the Concat's output
    /// (`ConcatPlacement`).
    init(graph: Graph, opsets: [String: Int], registry: OpRegistry, visible: Set<String> = [], inPlaceUpdates: Bool = true,
         memoizeShapeFunctions: Bool = false, constantInitializers: Bool = false, placeConcatInputs: Bool = false) throws {
        self.graph = graph
        self.registry = registry
        self.opsets = opsets
        self.inPlaceUpdates = inPlaceUpdates

        var problems: [String] = []
        func slot(_ name: String) -> Int {
            if let s = slotOf[name] { return s }
            slotOf[name] = slotCount
            slotCount += 1
            return slotCount - 1
        }
        var defined = Set<String>()
        for input in graph.inputs { _ = slot(input.name); defined.insert(input.name) }
        for name in graph.initializerNames {
            constants.append((slot(name), .tensor(graph.initializers[name]!)))
            defined.insert(name)
        }
        // Initializers that are not graph inputs, and that no node writes (as its output or into an
        // input it updates in place): constants for the executor's life.
        var constantSlots = Set<Int>()
        if constantInitializers {
            var written = Set(graph.inputs.map(\.name))
            for node in graph.nodes {
                written.formUnion(node.outputs)
                if !registry.mutatedInputs(domain: canonicalDomain(node.domain), opType: node.opType).isEmpty { written.formUnion(node.inputs) }
            }
            var bytes = 0
            for name in graph.initializerNames where !written.contains(name) {
                constantSlots.insert(slotOf[name]!)
                if let t = graph.initializers[name], t.dtype != .string { bytes += t.byteCount }
            }
            if !constantSlots.isEmpty {
                cacheBudget = KernelCacheBudget(limit: min(max(2 * bytes, GraphExecutor.cacheBudgetFloor), GraphExecutor.cacheBudgetCap))
            }
        }
        let index = GraphIndex(graph)
        // Constants one node alone reads, once among its inputs (not captured by its subgraphs,
        // not a graph output): their kernels may consume them (`NodeContext.releasableConstant`).
        final class Handles { var byName: [String: ConstantRelease] = [:] }
        let handles = Handles()
        var releasableReader: [String: Int] = [:]
        if !constantSlots.isEmpty {
            let outputNames = Set(graph.outputs.map(\.name))
            for (name, readers) in index.consumers where readers.count == 1 && !outputNames.contains(name) {
                guard let s = slotOf[name], constantSlots.contains(s) else { continue }
                let node = graph.nodes[readers[0]]
                guard node.inputs.filter({ $0 == name }).count == 1, !GraphExecutor.subgraphReferences(node).contains(name) else { continue }
                releasableReader[name] = readers[0]
            }
        }
        for d in index.duplicates {
            problems.append("value '\(d.value)' is produced by both \(graph.nodes[d.first].label) and \(graph.nodes[d.second].label)")
        }
        let producer = index.producer.mapValues(\.node)
        for node in graph.nodes {
            for output in node.outputs where !output.isEmpty {
                if defined.contains(output) && graph.initializers[output] == nil {
                    problems.append("\(node.label) writes '\(output)', which is a graph input")
                }
                _ = slot(output)
            }
        }
        for (i, node) in graph.nodes.enumerated() {
            for name in index.reads[i] {
                if producer[name] == i {
                    problems.append("\(node.label) reads its own output '\(name)'")
                } else if producer[name] == nil && !defined.contains(name) && !visible.contains(name) && node.inputs.contains(name) {
                    problems.append("\(node.label) reads '\(name)', which no node, graph input or initializer produces")
                }
            }
        }
        let order = index.order
        if index.hasCycle {
            let placed = Set(order)
            let stuck = graph.nodes.indices.filter { !placed.contains($0) }.prefix(5).map { graph.nodes[$0].label }
            problems.append("the graph has a cycle through \(stuck.joined(separator: ", "))")
        }
        for output in graph.outputs where !defined.contains(output.name) && producer[output.name] == nil && !visible.contains(output.name) {
            problems.append("graph output '\(output.name)' is not produced by any node")
        }

        // Declared types of values (graph outputs and value_info), for kernels whose output shape
        // onnxruntime takes from static inference (MaxPoolGrad, AveragePoolGrad).
        var declaredTypes: [String: ValueType] = [:]
        for info in graph.valueInfo + graph.outputs { if let t = info.type { declaredTypes[info.name] = t } }
        // Resolve every node to a kernel; collect every failure before reporting.
        let scopeNames = defined.union(producer.keys).union(visible)
        var missing: [String: [String]] = [:]
        var missingOrder: [String] = []
        for i in order {
            let node = graph.nodes[i]
            let domain = canonicalDomain(node.domain)
            let opset = opsets[domain] ?? (domain.isEmpty ? nil : 1)
            guard let opset else {
                problems.append("\(node.label): the model imports no opset for domain '\(domain)'")
                continue
            }
            guard let (since, factory) = registry.resolve(domain: domain, opType: node.opType, opset: opset) else {
                let key = "\(node.opType) (domain \(domain.isEmpty ? "ai.onnx" : domain), opset \(opset))"
                if missing[key] == nil { missingOrder.append(key) }
                missing[key, default: []].append(node.name.isEmpty ? node.outputs.first ?? "?" : node.name)
                continue
            }
            var subgraphs: [Subgraph] = []
            var context = NodeContext(node: node, opset: opset, sinceVersion: since) { body in
                let sub = try Subgraph(graph: body, opsets: opsets, registry: registry, visible: scopeNames, inPlaceUpdates: inPlaceUpdates)
                subgraphs.append(sub)
                return sub
            }
            context.declaredOutputTypes = node.outputs.map { $0.isEmpty ? nil : declaredTypes[$0] }
            context.enclosingNodes = graph.nodes
            if !constantSlots.isEmpty {
                context.constantInputs = node.inputs.map { !$0.isEmpty && slotOf[$0].map(constantSlots.contains) == true }
                if context.constantInputs.contains(true) { context.cacheBudget = cacheBudget }
            }
            if !releasableReader.isEmpty {
                let slots = slotOf, initializers = graph.initializers, reader = i, readers = releasableReader
                context.takeRelease = { input in
                    guard input >= 0, input < node.inputs.count else { return nil }
                    let name = node.inputs[input]
                    guard readers[name] == reader, let s = slots[name], let t = initializers[name] else { return nil }
                    if let taken = handles.byName[name] { return taken }
                    let made = ConstantRelease(slot: s, name: name, tensor: t)
                    handles.byName[name] = made
                    return made
                }
            }
            do {
                let kernel = try factory(context)
                var captured: [Int] = []
                for sub in subgraphs {
                    for (name, _) in sub.executor.outerNames { captured.append(slot(name)) }
                }
                steps.append(Step(node: node, kernel: kernel,
                                  inputs: node.inputs.map { $0.isEmpty ? -1 : slot($0) },
                                  outputs: node.outputs.map { $0.isEmpty ? -1 : slot($0) },
                                  captured: captured, hasSubgraphs: !subgraphs.isEmpty,
                                  hasSideEffects: !registry.mutatedInputs(domain: domain, opType: node.opType).isEmpty,
                                  inPlace: registry.inPlaceInputs(domain: domain, opType: node.opType)))
            } catch let error as KernelError {
                problems.append("\(node.label): \(error.message)")
            } catch let error as OnnxTrainError {
                problems.append("\(node.label): \(error.message)")
            }
        }
        if !missingOrder.isEmpty {
            // One entry per missing op, not per node: a transformer repeats the same few ops.
            let list = missingOrder.map { key -> String in
                let nodes = missing[key]!
                return "\(key) at node '\(nodes[0])'" + (nodes.count > 1 ? " and \(nodes.count - 1) more" : "")
            }
            problems.insert("no kernel for " + list.joined(separator: ", "), at: 0)
        }
        if !problems.isEmpty {
            let shown = problems.prefix(12).joined(separator: "; ")
            let more = problems.count > 12 ? "; and \(problems.count - 12) more problems" : ""
            throw OnnxTrainError(missingOrder.isEmpty ? .invalidGraph : .unsupported,
                                 (problems.count == 1 ? "" : "\(problems.count) problems: ") + shown + more)
        }
        // Names read here but defined in an enclosing graph.
        for (name, s) in slotOf.sorted(by: { $0.value < $1.value })
        where !defined.contains(name) && producer[name] == nil && visible.contains(name) {
            outerNames.append((name, s))
        }
        // The taken handles hold their constants from now on: the graph keeps placeholders.
        for name in handles.byName.keys.sorted() {
            guard let handle = handles.byName[name] else { continue }
            self.graph.initializers[name] = handle.placeholder
            constants.removeAll { $0.slot == handle.slot }
            releasables.append(handle)
            consumableNames.insert(name)
        }
        if !releasables.isEmpty {
            let slots = Set(releasables.map(\.slot))
            releaseAfter = steps.map { $0.inputs.filter(slots.contains) }
        }
        for step in steps {
            inputSlots += step.inputs
            inputStart.append(inputSlots.count)
            outputSlots += step.outputs
            outputStart.append(outputSlots.count)
        }
        borrowed = [Bool](repeating: false, count: slotCount)
        for input in graph.inputs { borrowed[slotOf[input.name]!] = true }
        for (s, _) in constants { borrowed[s] = true }
        for r in releasables { borrowed[r.slot] = true }
        for (_, s) in outerNames { borrowed[s] = true }
        if memoizeShapeFunctions { (memoKind, memoProducers) = markShapeFunctions() }
        placesConcatInputs = placeConcatInputs && !steps.contains { $0.hasSideEffects } && steps.contains { $0.kernel is ConcatKernel }
    }

    /// `memoKind` for every step (see there) and `memoProducers`; empty when the graph has an op
    /// that writes into its inputs, or nothing to keep.
    private func markShapeFunctions() -> ([UInt8], [[Int]]) {
        guard !steps.contains(where: { $0.hasSideEffects }) else { return ([], []) }
        var kept = [Bool](repeating: false, count: slotCount)
        var producer = [Int](repeating: -1, count: slotCount)
        let inputSlots = Set(graph.inputs.compactMap { slotOf[$0.name] })
        for (s, _) in constants where !inputSlots.contains(s) { kept[s] = true }
        for r in releasables where !inputSlots.contains(r.slot) { kept[r.slot] = true }
        let fetchable = Set(graph.outputs.compactMap { slotOf[$0.name] })
        var kinds = [UInt8](repeating: 0, count: steps.count)
        var producers = [[Int]](repeating: [], count: steps.count)
        for (k, step) in steps.enumerated() {
            let node = step.node, domain = canonicalDomain(node.domain)
            guard !step.hasSubgraphs, domain.isEmpty || domain == internalDomain,
                  !ConstantFolding.nondeterministic.contains(node.opType),
                  !step.outputs.contains(where: { $0 >= 0 && fetchable.contains($0) }) else { continue }
            if domain.isEmpty && (node.opType == "Shape" || node.opType == "Size") {
                kinds[k] = 1
            } else if step.inputs.allSatisfy({ $0 < 0 || kept[$0] }) {
                kinds[k] = 2
                producers[k] = step.inputs.map { $0 < 0 ? -1 : producer[$0] }
            } else {
                continue
            }
            for s in step.outputs where s >= 0 { kept[s] = true; producer[s] = k }
        }
        return kinds.contains(2) ? (kinds, producers) : ([], [])
    }

    /// The steps whose outputs are kept now (tests read it).
    var keptSteps: [Int] { memo.withLock { memo in memo.indices.filter { memo[$0] != nil } } }

    /// The kept outputs of step `k` when `inputs` are the tensors they were computed from.
    /// `kept` is the memo as the run found it at its start (a run reads it without locking; an
    /// entry replaced since then is found out by its inputs, or its input shape, not matching).
    private func memoized(_ k: Int, _ inputs: [Value?], _ kept: [MemoEntry?]) -> [Value?]? {
        guard !kept.isEmpty, let entry = kept[k], entry.inputs.count == inputs.count else { return nil }
        for (a, b) in zip(entry.inputs, inputs) where !GraphExecutor.identical(a, b) { return nil }
        return entry.outputs
    }

    /// The kept output of Shape or Size step `k` when its input has the shape it was computed
    /// from: the step is not run (no kernel call, no tensor made and compared).
    private func memoizedSource(_ k: Int, _ inputs: [Value?], _ kept: [MemoEntry?]) -> [Value?]? {
        guard inputs.count == 1, case .tensor(let t)? = inputs[0], !kept.isEmpty,
              let entry = kept[k], let shape = entry.sourceShape, shape == t.shape else { return nil }
        return entry.outputs
    }

    /// Keeps what step `k` computed (a Shape or Size: the kept output instead when its value is
    /// the same) and returns the outputs to use.
    private func memoize(_ k: Int, source: Bool, _ inputs: [Value?], _ outputs: [Value?]) -> [Value?] {
        var bytes = 0
        for value in outputs {
            guard case .tensor(let t)? = value, t.dtype != .string else { return outputs }
            bytes += t.byteCount
        }
        guard bytes <= GraphExecutor.memoBytes else {
            memo.withLock { if !$0.isEmpty { $0[k] = nil } }
            return outputs
        }
        var sourceShape: [Int]?
        if source, inputs.count == 1, case .tensor(let t)? = inputs[0] { sourceShape = t.shape }
        if source, let entry = memo.withLock({ $0.isEmpty ? nil : $0[k] }), entry.outputs.count == outputs.count,
           zip(entry.outputs, outputs).allSatisfy({ GraphExecutor.equalBytes($0, $1) }) {
            // The same value from another input shape (Shape with start/end): keep the tensor the
            // readers saw, now known for this shape too.
            if entry.sourceShape != sourceShape {
                let updated = MemoEntry(inputs: [], outputs: entry.outputs, sourceShape: sourceShape)
                memo.withLock { if !$0.isEmpty { $0[k] = updated } }
            }
            return entry.outputs
        }
        let entry = MemoEntry(inputs: source ? [] : inputs, outputs: outputs, sourceShape: sourceShape)
        memo.withLock { memo in
            if memo.isEmpty { memo = [MemoEntry?](repeating: nil, count: steps.count) }
            // Only from inputs that are themselves kept: an input computed anew on every run (the
            // output of a step past `memoBytes`) would be held from one run to the next.
            if !source {
                for (j, p) in memoProducers[k].enumerated() where p >= 0 {
                    guard let kept = memo[p], kept.outputs.contains(where: { GraphExecutor.identical($0, inputs[j]) }) else {
                        memo[k] = nil
                        return
                    }
                }
            }
            memo[k] = entry
        }
        return outputs
    }

    /// Whether two values are the same tensor: one storage, viewed with one element type and shape.
    static func identical(_ a: Value?, _ b: Value?) -> Bool {
        switch (a, b) {
        case (nil, nil): return true
        case (.tensor(let x)?, .tensor(let y)?): return x.storage === y.storage && x.dtype == y.dtype && x.shape == y.shape
        default: return false
        }
    }

    /// Whether two tensors (not strings) hold the same elements of one type and shape, bit for bit.
    static func equalBytes(_ a: Value?, _ b: Value?) -> Bool {
        guard case .tensor(let x)? = a, case .tensor(let y)? = b, x.dtype == y.dtype, x.shape == y.shape, x.dtype != .string else { return false }
        return x.byteCount == 0 || memcmp(x.rawBytes.baseAddress!, y.rawBytes.baseAddress!, x.byteCount) == 0
    }

    /// Names a node's subgraphs read from enclosing scopes (they order the node after their producers).
    static func subgraphReferences(_ node: Node) -> [String] {
        var names: [String] = []
        func visit(_ g: Graph) {
            var local = Set(g.inputs.map(\.name)).union(g.initializerNames)
            for n in g.nodes { local.formUnion(n.outputs) }
            for n in g.nodes {
                for name in n.inputs where !name.isEmpty && !local.contains(name) { names.append(name) }
                for sub in attributeGraphs(n) {
                    let inner = GraphExecutor.subgraphReferences(Node(opType: "", inputs: [], outputs: [], attributes: ["g": .graph(sub)]))
                    names.append(contentsOf: inner.filter { !local.contains($0) })
                }
            }
            for o in g.outputs where !local.contains(o.name) { names.append(o.name) }
        }
        for g in attributeGraphs(node) { visit(g) }
        return names
    }

    static func attributeGraphs(_ node: Node) -> [Graph] {
        var result: [Graph] = []
        for (_, a) in node.attributes {
            if case .graph(let g) = a { result.append(g) }
            if case .graphs(let gs) = a { result.append(contentsOf: gs) }
        }
        return result
    }

    /// The plan for computing `fetchSlots`: only the nodes they depend on, with frees after last use.
    func plan(for fetchSlots: [Int]) -> Plan {
        if let cached = planCache.withLock({ $0[fetchSlots] }) { return cached }
        var needed = Set(fetchSlots)
        var include = [Bool](repeating: false, count: steps.count)
        for (k, step) in steps.enumerated().reversed() {
            if step.outputs.contains(where: { $0 >= 0 && needed.contains($0) }) || step.hasSideEffects {
                include[k] = true
                for s in step.inputs where s >= 0 { needed.insert(s) }
                for s in step.captured { needed.insert(s) }
            }
        }
        let chosen = (0..<steps.count).filter { include[$0] }
        var lastUse = [Int](repeating: -1, count: slotCount)
        for (position, k) in chosen.enumerated() {
            for s in steps[k].inputs where s >= 0 { lastUse[s] = position }
            for s in steps[k].captured { lastUse[s] = position }
            for s in steps[k].outputs where s >= 0 && lastUse[s] < position { lastUse[s] = position }
        }
        var freeAfter = [[Int]](repeating: [], count: chosen.count)
        let keep = Set(fetchSlots)
        for s in 0..<slotCount where lastUse[s] >= 0 && !keep.contains(s) { freeAfter[lastUse[s]].append(s) }
        var donors = [[(input: Int, slot: Int)]](repeating: [], count: chosen.count)
        if inPlaceUpdates {
            for (position, k) in chosen.enumerated() {
                let step = steps[k]
                for j in step.inPlace where j < step.inputs.count {
                    let s = step.inputs[j]
                    guard s >= 0, lastUse[s] == position, !keep.contains(s), !borrowed[s], !step.captured.contains(s),
                          step.inputs.lazy.filter({ $0 == s }).count == 1 else { continue }
                    donors[position].append((j, s))
                }
            }
        }
        let plan = Plan(steps: chosen, freeAfter: freeAfter, donors: donors)
        // Two threads may both compute a missing plan; they compute the same one.
        planCache.withLock { $0[fetchSlots] = plan }
        return plan
    }

    /// Runs the graph. `feeds` maps slots to values; values not fed come from initializers or
    /// from the enclosing scope through `context`. With `profile`, each node's kernel call is
    /// timed into it (`NodeTimes`, by step index); without, that costs one branch per node.
    /// The calling thread's signals are held for the run (`SignalHold`: oneDNN's kernels must
    /// not be interrupted by a handler); one sent meanwhile is handled when the run returns.
    func run(feeds: [(slot: Int, value: Value)], fetchSlots: [Int], context: ExecutionContext,
             profile: NodeTimes? = nil) throws -> [Value?] {
        try SignalHold.around { try runHeld(feeds: feeds, fetchSlots: fetchSlots, context: context, profile: profile) }
    }

    private func runHeld(feeds: [(slot: Int, value: Value)], fetchSlots: [Int], context: ExecutionContext,
                         profile: NodeTimes?) throws -> [Value?] {
        let frame = Frame(count: slotCount)
        for (s, v) in constants { frame.values[s] = v }
        for r in releasables { frame.values[r.slot] = r.current }
        for (name, s) in outerNames { frame.values[s] = context.lookup(name) }
        for (s, v) in feeds { frame.values[s] = v }
        let plan = self.plan(for: fetchSlots)
        let memoAtStart = memoKind.isEmpty ? [] : memo.withLock { $0 }
        // Concats' inputs computed in place (`ConcatPlacement`): placed from the second run of
        // these fetches; the first observes the Concats' sizes.
        var placement = ConcatPlacement.none
        var observed: [Int: ConcatPlacement.Observation]?
        if placesConcatInputs {
            if let known = placements.withLock({ $0[fetchSlots] }) { placement = known } else { observed = [:] }
        }
        // Per group: its buffer (from its first member until its root Concat has run) and
        // whether its members have fit so far.
        var buffers = [TensorStorage?](repeating: nil, count: placement.groupBytes.count)
        var fitting = [Bool](repeating: true, count: placement.groupBytes.count)
        var inputs: [Value?] = []
        var blocks: [(storage: TensorStorage, elementType: DType)] = []
        var nested: ExecutionContext?
        for (position, k) in plan.steps.enumerated() {
            let step = steps[k]
            inputs.removeAll(keepingCapacity: true)
            for t in inputStart[k]..<inputStart[k + 1] {
                let s = inputSlots[t]
                inputs.append(s >= 0 ? frame.values[s] : nil)
            }
            var kernelContext = context
            if step.hasSubgraphs {
                if nested == nil {
                    let slots = slotOf
                    nested = ExecutionContext(state: context.state) { name in slots[name].flatMap { frame.values[$0] } ?? context.lookup(name) }
                }
                kernelContext = nested!
            }
            // In-place: the inputs that die here leave the frame, and a block no other tensor
            // shares is offered to the kernel's output.
            if !blocks.isEmpty { blocks.removeAll(keepingCapacity: true) }
            if plan.hasDonors[position] {
                for (j, s) in plan.donors[position] {
                    frame.values[s] = nil
                    if let block = GraphExecutor.soleStorage(&inputs[j]) { blocks.append(block) }
                }
            }
            // Placement: a slice of a group's buffer for the producer of a Concat's input, the
            // buffer (or the Concat's slice of an outer Concat's buffer) for the Concat.
            let role = placement.roles.isEmpty ? nil : placement.roles[position]
            var slice: (bytes: UnsafeMutableRawPointer, byteCount: Int, elementType: DType, owner: TensorStorage)?
            var target: (storage: TensorStorage, elementType: DType)?
            var sliceTaken = false
            switch role {
            case .slice(let g, _, let offset, let byteCount, let elementType)? where fitting[g]:
                if buffers[g] == nil { buffers[g] = TensorStorage(uninitializedByteCount: placement.groupBytes[g]) }
                let buffer = buffers[g]!
                slice = (buffer.bytes + offset, byteCount, elementType, buffer)
            case .concat(let g, let offset, let byteCount, let elementType, let inputBytes, let root)? where fitting[g]:
                guard ConcatPlacement.fits(inputs, inputBytes, elementType) else {
                    fitting[g] = false
                    break
                }
                if buffers[g] == nil { buffers[g] = TensorStorage(uninitializedByteCount: placement.groupBytes[g]) }
                let buffer = buffers[g]!
                target = (root ? buffer : TensorStorage(borrowing: buffer.bytes + offset, byteCount: byteCount,
                                                        release: { withExtendedLifetime(buffer) {} }), elementType)
            default:
                break
            }
            var outputs: [Value?]
            do {
                let start = profile == nil ? 0 : monotonicNanoseconds()
                let kind = memoKind.isEmpty ? 0 : memoKind[k]
                if kind == 2, let kept = memoized(k, inputs, memoAtStart) {
                    outputs = kept
                } else if kind == 1, let kept = memoizedSource(k, inputs, memoAtStart) {
                    outputs = kept
                } else {
                    if kind == 0 {
                        if slice == nil && target == nil {
                            outputs = try GraphExecutor.call(step, inputs, kernelContext, blocks)
                        } else {
                            (outputs, sliceTaken) = try GraphExecutor.call(step, inputs, kernelContext, blocks, slice: slice, target: target)
                        }
                    } else {
                        // Outside the memory pattern: a later run that reuses what this step keeps
                        // allocates nothing here, and must meet the recorded run's blocks in order.
                        outputs = try MemoryPatternRun.outside { try GraphExecutor.call(step, inputs, kernelContext, blocks) }
                        outputs = memoize(k, source: kind == 1, inputs, outputs)
                    }
                }
                if let profile { profile.add(step: k, nanoseconds: monotonicNanoseconds() &- start, outputs: outputs) }
            } catch let error as KernelError {
                throw OnnxTrainError(.kernel, "\(step.node.label): \(error.message)")
            } catch let error as OnnxTrainError {
                throw error
            } catch {
                throw OnnxTrainError(.kernel, "\(step.node.label): \(error)")
            }
            switch role {
            case .slice(let g, let output, _, _, _)? where sliceTaken:
                // A kernel that took the slice for anything but its output leaves the group:
                // the bytes are held by a tensor the Concat does not know.
                guard output < outputs.count, case .tensor(let t)? = outputs[output], t.storage.bytes == slice?.bytes else {
                    fitting[g] = false
                    break
                }
            case .concat(let g, _, _, _, _, let root)?:
                if let target {
                    var tookTarget = false
                    if case .tensor(let t)?? = outputs.first { tookTarget = t.storage === target.storage }
                    if !tookTarget { fitting[g] = false }
                }
                if root { buffers[g] = nil }
            default:
                break
            }
            if observed != nil, let concat = step.kernel as? ConcatKernel, memoKind.isEmpty || memoKind[k] == 0,
               let seen = ConcatPlacement.observe(inputs, outputs, axis: concat.axis) {
                observed?[position] = seen
            }
            let firstOutput = outputStart[k]
            for t in firstOutput..<outputStart[k + 1] {
                let s = outputSlots[t], i = t - firstOutput
                guard s >= 0 else { continue }
                guard i < outputs.count, let value = outputs[i] else {
                    throw OnnxTrainError(.kernel, "\(step.node.label) did not produce output '\(step.node.outputs[i])'")
                }
                frame.values[s] = value
            }
            for t in plan.freeStart[position]..<plan.freeStart[position + 1] { frame.values[plan.freeSlots[t]] = nil }
            if !releaseAfter.isEmpty {
                for s in releaseAfter[k] where !fetchSlots.contains(s) { frame.values[s] = nil }
            }
        }
        if let observed {
            let made = ConcatPlacement.make(positions: plan.steps, steps: steps, observed: observed, keep: Set(fetchSlots),
                                            borrowed: borrowed, memoKind: memoKind)
            placements.withLock { if $0[fetchSlots] == nil { $0[fetchSlots] = made } }
        }
        return fetchSlots.map { frame.values[$0] }
    }

    /// The placement made for `fetchSlots` (tests read it); nil before their first run.
    func concatPlacement(for fetchSlots: [Int]) -> ConcatPlacement? { placements.withLock { $0[fetchSlots] } }

    /// One node's kernel call, offering `blocks` (dying inputs) to its output.
    @inline(__always)
    private static func call(_ step: Step, _ inputs: [Value?], _ context: ExecutionContext,
                             _ blocks: [(storage: TensorStorage, elementType: DType)]) throws -> [Value?] {
        if blocks.isEmpty { return try step.kernel.run(inputs, context) }
        let outputs = try BufferDonation.offering(blocks) { try step.kernel.run(inputs, context) }
        for case .tensor(let t)? in outputs where t.storage.donated {
            throw OnnxTrainError(.kernel, "\(step.node.label) declares an input in place but returned that input")
        }
        return outputs
    }

    /// One node's kernel call with a slice of a Concat's buffer offered to its output, or a
    /// Concat's output storage (`ConcatPlacement`), beside `blocks`; also whether the slice was taken.
    private static func call(_ step: Step, _ inputs: [Value?], _ context: ExecutionContext,
                             _ blocks: [(storage: TensorStorage, elementType: DType)],
                             slice: (bytes: UnsafeMutableRawPointer, byteCount: Int, elementType: DType, owner: TensorStorage)?,
                             target: (storage: TensorStorage, elementType: DType)?) throws -> ([Value?], Bool) {
        let (outputs, taken) = try BufferDonation.offering(blocks, slice: slice, target: target) { try step.kernel.run(inputs, context) }
        for case .tensor(let t)? in outputs where t.storage.donated {
            throw OnnxTrainError(.kernel, "\(step.node.label) declares an input in place but returned that input")
        }
        return (outputs, taken)
    }

    /// The storage of the tensor in `value` when no other tensor or value holds it (the caller
    /// has taken it out of the frame) and its bytes are a heap block; nil otherwise.
    private static func soleStorage(_ value: inout Value?) -> (storage: TensorStorage, elementType: DType)? {
        guard case .tensor(var t)? = value else { return nil }
        value = nil
        defer { value = .tensor(t) }
        return t.hasUniqueStorage() && t.storage.isDonatable ? (t.storage, t.dtype) : nil
    }

    /// One run's values by slot. A buffer rather than an array: the run loop reads and writes
    /// it without the exclusivity checks and uniqueness tests of a class's array property.
    final class Frame {
        let values: UnsafeMutableBufferPointer<Value?>
        init(count: Int) {
            values = .allocate(capacity: count)
            values.initialize(repeating: nil)
        }
        deinit {
            values.deinitialize()
            values.deallocate()
        }
    }
}

/// A compiled graph attribute (If branch, Loop or Scan body) that kernels run with their own inputs.
public final class Subgraph {
    let executor: GraphExecutor
    private let inputSlots: [Int]
    private let outputSlots: [Int]

    init(graph: Graph, opsets: [String: Int], registry: OpRegistry, visible: Set<String>, inPlaceUpdates: Bool) throws {
        let compiled = try GraphExecutor(graph: graph, opsets: opsets, registry: registry, visible: visible, inPlaceUpdates: inPlaceUpdates)
        executor = compiled
        inputSlots = graph.inputs.map { compiled.slotOf[$0.name]! }
        outputSlots = graph.outputs.map { compiled.slotOf[$0.name] ?? -1 }
    }

    public var inputs: [ValueInfo] { executor.graph.inputs }
    public var outputs: [ValueInfo] { executor.graph.outputs }

    /// Runs the body: `inputs` bind the body's inputs in order; outer values come from `context`.
    public func run(_ inputs: [Value?], _ context: ExecutionContext) throws -> [Value] {
        var feeds: [(slot: Int, value: Value)] = []
        for (i, s) in inputSlots.enumerated() {
            if i < inputs.count, let v = inputs[i] { feeds.append((s, v)) }
        }
        let results = try executor.run(feeds: feeds, fetchSlots: outputSlots.map { max($0, 0) }, context: context)
        return try results.enumerated().map { i, v in
            guard let v else { throw OnnxTrainError(.kernel, "subgraph '\(executor.graph.name)' did not produce output '\(outputs[i].name)'") }
            return v
        }
    }
}
