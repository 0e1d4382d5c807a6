import Foundation
import Synchronization

/// Options for building a session.
public struct SessionOptions {
    /// Seed for random ops (Dropout in training mode, RandomNormal, ...).
    public var seed: UInt64 = 0
    public var registry: OpRegistry = .standard
    /// Whether the session optimises the graph before compiling it (`PassPipeline.optimizing`:
    /// constant folding, Conv/BatchNormalization fusion, MatMul+Add as Gemm, Transposes as GEMM
    /// flags). Single passes are switched off with `ONNX_TRAIN_DISABLE_PASSES=name,name` (or `all`).
    public var optimize = true
    /// Whether ops that declare an input in place write their output over that input when it
    /// dies at them (the executor's memory plan, `GraphExecutor.Plan`); off also with
    /// `ONNX_TRAIN_DISABLE_PASSES=memory-plan` (or `all`), for debugging. The same switch turns
    /// off the memory pattern: runs after the first with the same feed shapes and fetches place
    /// their large blocks in one arena laid out from the first run (`MemoryPattern`), and the
    /// computing of Concats' inputs into the Concat's output (`ConcatPlacement`; alone with
    /// `ONNX_TRAIN_DISABLE_PASSES=concat-in-place`).
    public var memoryPlan = true
    /// Where a session reports what it accepts but a reader may not expect (a symbolic dimension
    /// bound to two sizes); standard error by default.
    public var warn: @Sendable (String) -> Void = { message in
        FileHandle.standardError.write(Data(("warning: " + message + "\n").utf8))
    }
    public init() {}
}

/// Runs a model: built once (kernels resolved, graph checked, order planned), then run with
/// named feeds and fetches as often as needed.
///
/// One session may run on several threads at once (`Sendable`): after `init` its model, kernels
/// and plan are only read; the plan cache, the random generator (`RunState`) and the warned
/// symbols each sit behind a lock. The conformance is unchecked because `Model` and the kernels
/// hold tensors, whose storage is a class the compiler cannot prove immutable.
public final class InferenceSession: @unchecked Sendable {
    /// The model as given, except that for a model read from a file the initializers the
    /// optimised graph replaced (a Conv's weights folded with a BatchNormalization, a weight
    /// folded through a Transpose) are dropped: the compiled graph holds what it computes with,
    /// and the originals are read from the file again if a fetch ever needs the unoptimised graph.
    public let model: Model
    /// Initializers dropped from `model` (see there).
    private let droppedInitializers: Set<String>
    let executor: GraphExecutor
    /// The graph compiled without optimisations, built on the first run that fetches a value the
    /// optimised graph no longer computes (an intermediate value a fusion removed).
    private var plainExecutor: GraphExecutor?
    private let plainLock = NSLock()
    private let registry: OpRegistry
    private let inPlaceUpdates: Bool
    private let state: RunState
    /// The memory pattern of the latest feed shapes and fetches (nil with the memory plan off).
    let memoryPatterns: MemoryPatternCache?
    private let warn: @Sendable (String) -> Void
    /// Symbolic dimensions already reported as bound to two sizes (each is reported once); runs
    /// on several threads share it.
    private let warnedSymbols = Mutex<Set<String>>([])

    /// `model` is consumed: for a model read from a file that no one else holds (`init(path:)`),
    /// the optimisation passes are the only holders of its weights, so each original weight a
    /// fold replaces is freed as soon as it is replaced, not when the session is built.
    public init(model: consuming Model, options: SessionOptions = SessionOptions()) throws {
        BufferCache.configureMalloc()
        BLAS.prepare()
        let disabled = PassPipeline.disabledNames
        let inPlaceUpdates = options.memoryPlan && !disabled.contains("memory-plan") && !disabled.contains("all")
        self.inPlaceUpdates = inPlaceUpdates
        memoryPatterns = inPlaceUpdates ? MemoryPatternCache() : nil
        // ai.onnx.preview.training's Gradient differentiates the graph's own nodes as written.
        let differentiatesItself = model.graph.nodes.contains { $0.opType == "Gradient" && $0.domain == "ai.onnx.preview.training" }
        let optimize = options.optimize && !differentiatesItself
        let path = model.path
        // The model as given without the initializers that are only constants (for a model read
        // from a file): what the passes keep comes back after them, the rest is read again from
        // the file if a fetch needs the unoptimised graph.
        // Initializers of a model older than IR 4 are constants though listed as inputs (the
        // `ir3-initializers` pass): like onnxruntime, the session does not take them as feeds, and
        // the originals of the ones the passes fold are dropped like any other constant's.
        let constantInputs: Set<String> = (1..<4).contains(model.irVersion)
            ? Set(model.graph.inputs.map(\.name).filter { model.graph.initializers[$0] != nil }) : []
        var kept = copy model
        kept.graph.inputs.removeAll { constantInputs.contains($0.name) }
        if path != nil {
            let inputs = Set(kept.graph.inputs.map(\.name))
            kept.graph.initializers = model.graph.initializers.filter { inputs.contains($0.key) }
        }
        var compiled = consume model
        let compiledExecutor: GraphExecutor
        do {
            try (optimize ? PassPipeline.optimizing(registry: options.registry) : PassPipeline.beforeCompile).run(&compiled)
            compiledExecutor = try GraphExecutor(graph: compiled.graph, opsets: compiled.opsetImports, registry: options.registry,
                                         inPlaceUpdates: inPlaceUpdates,
                                         memoizeShapeFunctions: !disabled.contains("shape-memo") && !disabled.contains("all"),
                                         constantInitializers: !disabled.contains("weight-cache") && !disabled.contains("all"),
                                         placeConcatInputs: inPlaceUpdates && !disabled.contains("concat-in-place"))
        } catch let error as OnnxTrainError {
            throw path.map { error.prefixed($0) } ?? error
        }
        executor = compiledExecutor
        var dropped = Set<String>()
        if path != nil {
            // The passes never store a new tensor under an existing initializer's name (new values
            // get fresh names), so an original name the compiled graph still holds is the original.
            // A constant its kernel may consume (`ConstantRelease`) is not kept here either: the
            // executor alone holds it, so that its memory goes once it is released.
            for name in kept.graph.initializerNames where kept.graph.initializers[name] == nil {
                if let t = compiled.graph.initializers[name], !compiledExecutor.consumableNames.contains(name) {
                    kept.graph.initializers[name] = t
                } else {
                    dropped.insert(name)
                }
            }
            kept.graph.initializerNames.removeAll { dropped.contains($0) }
        }
        self.model = kept
        droppedInitializers = dropped
        registry = options.registry
        state = RunState(seed: options.seed)
        warn = options.warn
        declaredOutputs = Dictionary(kept.graph.outputs.map { ($0.name, $0.type) }, uniquingKeysWith: { a, _ in a })
        declaredInputs = Dictionary(kept.graph.inputs.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
        constantInitializerInputs = constantInputs
    }

    /// The declared type of every graph output, checked against what a run computes.
    private let declaredOutputs: [String: ValueType?]
    /// The graph inputs by name (made once, not on every run).
    private let declaredInputs: [String: ValueInfo]
    /// The initializers an IR 3 model lists among its inputs: constants, refused as feeds.
    private let constantInitializerInputs: Set<String>

    public convenience init(path: String, options: SessionOptions = SessionOptions()) throws {
        try self.init(model: try Model(contentsOf: path), options: options)
    }

    /// The state of the session's random generator (Dropout masks, RandomNormal...): saved with a
    /// training checkpoint and set back on resume so the same masks follow.
    public var randomState: UInt64 {
        get { state.random.state }
        set { state.random.state = newValue }
    }

    /// The inputs a caller feeds (graph inputs that are not initializers).
    public var inputs: [ValueInfo] { model.graph.feedInputs }
    public var outputs: [ValueInfo] { model.graph.outputs }

    /// Runs the model. `fetches` defaults to every graph output; any value name may be fetched.
    /// Feeds are checked against the declared inputs: every required input present, no unknown
    /// name, element type and rank as declared, and fixed dimensions equal. A symbolic dimension
    /// name is a hint, not a contract: as in onnxruntime, two inputs may bind one name to
    /// different sizes (a gradient graph's labels [1] beside an input [32, 10], both dimension
    /// 'batch_size'); the session says so once through `SessionOptions.warn` and runs.
    public func run(_ feeds: [String: Value], fetches: [String]? = nil) throws -> [String: Value] {
        try run(feeds, fetches: fetches, profile: nil)
    }

    /// `run(_:fetches:)`, timing every node's kernel call into `profile` when given (`profile(_:runs:)`).
    func run(_ feeds: [String: Value], fetches: [String]?, profile: NodeTimes?) throws -> [String: Value] {
        let where_ = model.path.map { "\($0): " } ?? ""
        let graph = model.graph
        let names = fetches ?? graph.outputs.map(\.name)
        let consumable = self.executor.consumableNames
        let executor = try names.allSatisfy({ self.executor.slotOf[$0] != nil && !consumable.contains($0) })
            ? self.executor : unoptimizedExecutor(for: names)
        var feedSlots: [(slot: Int, value: Value)] = []
        var symbols: [String: (Int, String)] = [:]
        let declared = declaredInputs
        for name in feeds.keys.sorted() where declared[name] == nil {
            if constantInitializerInputs.contains(name) {
                throw OnnxTrainError.invalidInput("\(where_)'\(name)' is an initializer of an IR version \(model.irVersion) model, a constant "
                    + "rather than an input, and cannot be fed (onnxruntime refuses it too)")
            }
            let expected = inputs.map(\.name).joined(separator: ", ")
            throw OnnxTrainError.invalidInput("\(where_)unknown input '\(name)' (the model takes: \(expected))")
        }
        for info in graph.inputs {
            guard let value = feeds[info.name] else {
                if graph.initializers[info.name] == nil {
                    throw OnnxTrainError.invalidInput("\(where_)missing input '\(info.name)'\(info.type.map { " of type \($0)" } ?? "")")
                }
                continue
            }
            if let clash = try InferenceSession.check(value, against: info, symbols: &symbols, prefix: where_),
               warnedSymbols.withLock({ $0.insert(clash.symbol).inserted }) {
                warn(clash.message + "; running anyway, as onnxruntime does (a symbolic dimension name is not checked)")
            }
            guard let slot = executor.slotOf[info.name] else {
                throw OnnxTrainError.invalidInput("\(where_)input '\(info.name)' is not in the compiled graph (an optimisation removed it)")
            }
            feedSlots.append((slot, value))
        }
        var fetchSlots: [Int] = []
        for name in names {
            guard let s = executor.slotOf[name] else {
                throw OnnxTrainError.invalidInput("\(where_)cannot fetch '\(name)': no such value in the graph")
            }
            fetchSlots.append(s)
        }
        let context = ExecutionContext(state: state, lookup: { _ in nil })
        let results: [Value?]
        do {
            if let memoryPatterns, executor === self.executor {
                // The pattern's key: what is fetched and each feed's slot, element type and shape;
                // and whether Concats' inputs are placed yet (`ConcatPlacement`, from the second run
                // on, where the graph has such Concats): the runs that place allocate other blocks
                // than the first, and record anew rather than leave the first run's pattern (for
                // the size cache, a higher peak).
                let placed = executor.placesConcatInputs && executor.concatPlacement(for: fetchSlots)?.groupBytes.isEmpty == false
                var key = fetchSlots + [placed ? -3 : -1]
                for (slot, value) in feedSlots {
                    key.append(slot)
                    if case .tensor(let t) = value { key += [Int(t.dtype.rawValue), t.rank] + t.shape } else { key.append(-2) }
                }
                results = try memoryPatterns.run(key: key) {
                    try executor.run(feeds: feedSlots, fetchSlots: fetchSlots, context: context, profile: profile)
                }
            } else {
                // A profile's steps are the optimised graph's (`profile(_:runs:)` fetches only graph outputs).
                results = try executor.run(feeds: feedSlots, fetchSlots: fetchSlots, context: context,
                                           profile: executor === self.executor ? profile : nil)
            }
        } catch let error as OnnxTrainError {
            throw model.path.map { error.prefixed($0) } ?? error
        }
        var out: [String: Value] = [:]
        for (name, value) in zip(names, results) {
            guard let value else { throw OnnxTrainError(.kernel, "\(where_)no value was computed for '\(name)'") }
            // A graph output computed with another element type than declared is a broken model
            // (onnxruntime refuses it when it builds the session).
            if case .tensor(let dtype?, _)? = declaredOutputs[name], let t = value.tensor, t.dtype != dtype {
                throw OnnxTrainError.invalidModel("\(where_)output '\(name)' is declared tensor(\(dtype)), but the graph computes tensor(\(t.dtype))")
            }
            out[name] = value
        }
        return out
    }

    /// The graph compiled as the model states it, for fetches of values the optimised graph
    /// fused away; the session's own executor when none of `names` is such a value.
    private func unoptimizedExecutor(for names: [String]) throws -> GraphExecutor {
        var known = Set(model.graph.inputs.map(\.name)).union(model.graph.initializerNames).union(droppedInitializers)
        for node in model.graph.nodes { known.formUnion(node.outputs) }
        // A constant the optimised graph's kernel may have consumed (`ConstantRelease`) is read there.
        guard names.contains(where: { (executor.slotOf[$0] == nil || executor.consumableNames.contains($0)) && known.contains($0) })
        else { return executor }
        plainLock.lock()
        defer { plainLock.unlock() }
        if let plainExecutor { return plainExecutor }
        var plain = model
        do {
            if !droppedInitializers.isEmpty, let path = model.path { plain = try Model(contentsOf: path) }
            try PassPipeline.beforeCompile.run(&plain)
            let compiled = try GraphExecutor(graph: plain.graph, opsets: plain.opsetImports, registry: registry, inPlaceUpdates: inPlaceUpdates)
            plainExecutor = compiled
            return compiled
        } catch let error as OnnxTrainError {
            throw model.path.map { error.prefixed($0) } ?? error
        }
    }

    /// Tensor-only convenience over `run(_:fetches:)`.
    public func run(tensors feeds: [String: Tensor], fetches: [String]? = nil) throws -> [String: Tensor] {
        let results = try run(feeds.mapValues { Value.tensor($0) }, fetches: fetches)
        var out: [String: Tensor] = [:]
        for (name, value) in results {
            guard let t = value.tensor else { throw OnnxTrainError.invalidInput("output '\(name)' is \(value.summary), not a tensor") }
            out[name] = t
        }
        return out
    }

    /// Checks a feed against its declared input; returns the first symbolic dimension bound to a
    /// size other than the one an earlier input gave it (not an error).
    @discardableResult
    static func check(_ value: Value, against info: ValueInfo, symbols: inout [String: (Int, String)],
                      prefix: String) throws -> (symbol: String, message: String)? {
        guard let type = info.type else { return nil }
        var clash: (symbol: String, message: String)?
        let label = "\(prefix)input '\(info.name)'"
        switch (type, value) {
        case (.tensor(let dtype, let shape), .tensor(let t)):
            if let dtype, dtype != t.dtype {
                throw OnnxTrainError.invalidInput("\(label) must be tensor(\(dtype)), got tensor(\(t.dtype))")
            }
            guard let shape else { return nil }
            guard shape.count == t.rank else {
                throw OnnxTrainError.invalidInput("\(label) must have rank \(shape.count) \(shape), got shape \(t.shape)")
            }
            for (axis, (dim, actual)) in zip(shape, t.shape).enumerated() {
                switch dim {
                case .value(let v) where v != actual:
                    throw OnnxTrainError.invalidInput("\(label) dimension \(axis) must be \(v), got shape \(t.shape)")
                case .symbol(let s):
                    if let (seen, other) = symbols[s] {
                        if seen != actual, clash == nil {
                            clash = (s, "\(label) dimension \(axis) ('\(s)') is \(actual), but '\(s)' is \(seen) in \(other)")
                        }
                    } else {
                        symbols[s] = (actual, "input '\(info.name)'")
                    }
                default: break
                }
            }
        case (.tensor, _):
            throw OnnxTrainError.invalidInput("\(label) must be a tensor, got \(value.summary)")
        case (.sequence, .sequence), (.optional, .optional), (.optional, _), (.map, _), (.sparseTensor, _):
            return nil
        case (.sequence, _):
            throw OnnxTrainError.invalidInput("\(label) must be a sequence, got \(value.summary)")
        }
        return clash
    }
}
