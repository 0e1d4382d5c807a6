import Foundation
import OnnxTrain

/// The base of every layer and model (PyTorch's `nn.Module`).
///
/// Subclass it, keep layers and parameters in stored properties, and write `forward`:
///
///     final class Net: Module {
///         let convs = Sequential(Conv2d(3, 16, kernelSize: 5, padding: 2), MaxPool2d(2), ReLU())
///         let mlp = Linear(16 * 2 * 2, 10)
///         func forward(_ x: NNTensor) -> NNTensor { mlp(convs(x).view(x.size(0), -1)) }
///     }
///
/// Submodules, parameters and buffers are found by reflection over the stored properties, in
/// declaration order (base class first), under PyTorch's names: a property `selfAttn` is
/// `self_attn` (camelCase becomes snake_case), an array of modules `convs` gives `convs.0`,
/// `convs.1`, ... and a `Sequential` numbers its layers. Override `namedChildren()` or
/// `namedLocalTensors()` for any other naming.
open class Module {
    /// Training mode (the default) or evaluation mode; Dropout and BatchNorm read it.
    public private(set) var training = true

    /// An empty module; subclasses create their layers and parameters in their properties.
    public init() {}

    /// The direct submodules with their names.
    open func namedChildren() -> [(String, Module)] {
        reflectedProperties().flatMap { name, value -> [(String, Module)] in
            if let m = value as? Module { return [(name, m)] }
            if let list = value as? [Module] { return list.enumerated().map { ("\(name).\($0.offset)", $0.element) } }
            return []
        }
    }

    /// The parameters and buffers this module holds itself (not through submodules), by name.
    open func namedLocalTensors() -> [(String, NNTensor)] {
        reflectedProperties().flatMap { name, value -> [(String, NNTensor)] in
            if let t = value as? NNTensor { return t.role == .parameter || t.role == .buffer ? [(name, t)] : [] }
            if let list = value as? [NNTensor] {
                return list.enumerated().filter { $0.element.role == .parameter || $0.element.role == .buffer }
                    .map { ("\(name).\($0.offset)", $0.element) }
            }
            return []
        }
    }

    /// Stored properties of the whole class chain, base first, with PyTorch-style names; nil optionals are left out.
    private func reflectedProperties() -> [(String, Any)] {
        var mirrors: [Mirror] = []
        var mirror: Mirror? = Mirror(reflecting: self)
        while let m = mirror {
            mirrors.append(m)
            mirror = m.superclassMirror
        }
        var result: [(String, Any)] = []
        for m in mirrors.reversed() {
            for child in m.children {
                guard let label = child.label, !label.hasPrefix("_"), let value = unwrap(child.value) else { continue }
                result.append((Module.pytorchName(label), value))
            }
        }
        return result
    }

    private func unwrap(_ value: Any) -> Any? {
        let m = Mirror(reflecting: value)
        guard m.displayStyle == .optional else { return value }
        return m.children.first.map { unwrap($0.value) } ?? nil
    }

    /// `selfAttn` → `self_attn`, `runningMean` → `running_mean`; digits and underscores stay.
    public static func pytorchName(_ swiftName: String) -> String {
        var out = ""
        for c in swiftName {
            if c.isUppercase {
                if !out.isEmpty { out.append("_") }
                out.append(contentsOf: c.lowercased())
            } else {
                out.append(c)
            }
        }
        return out
    }

    /// Every module in the tree with its dotted name ("" for this one), depth first.
    public func namedModules(prefix: String = "") -> [(String, Module)] {
        var result = [(prefix, self)]
        for (name, child) in namedChildren() {
            result += child.namedModules(prefix: prefix.isEmpty ? name : prefix + "." + name)
        }
        return result
    }

    /// Parameters and buffers of the whole tree with dotted names, each tensor once unless
    /// `removeDuplicates` is false (a tensor shared by two modules, as tied weights are, then
    /// appears under both names, as in PyTorch's `state_dict()`).
    public func namedTensors(removeDuplicates: Bool = true) -> [(String, NNTensor)] {
        var seen = Set<ObjectIdentifier>()
        var result: [(String, NNTensor)] = []
        for (prefix, module) in namedModules() {
            for (name, t) in module.namedLocalTensors() where seen.insert(ObjectIdentifier(t)).inserted || !removeDuplicates {
                result.append((prefix.isEmpty ? name : prefix + "." + name, t))
            }
        }
        return result
    }

    /// The parameters with PyTorch's dotted names (`convs.0.weight`), in registration order.
    public func namedParameters() -> [(String, NNTensor)] { namedTensors().filter { $0.1.role == .parameter } }

    /// The parameters, for an optimizer.
    public func parameters() -> [NNTensor] { namedParameters().map(\.1) }

    /// The buffers (running statistics) with their dotted names.
    public func namedBuffers() -> [(String, NNTensor)] { namedTensors().filter { $0.1.role == .buffer } }

    /// Parameters and buffers by dotted name, as PyTorch's `state_dict()` (values are shared, not
    /// copied; tied weights appear under each of their names).
    public func stateDict() -> [String: Tensor] {
        Dictionary(namedTensors(removeDuplicates: false).map { ($0.0, $0.1.value) }, uniquingKeysWith: { a, _ in a })
    }

    /// What `loadStateDict` left alone.
    public struct LoadResult: Equatable {
        /// Names the model has that the source did not provide.
        public var missingKeys: [String]
        /// Names the source has that the model does not.
        public var unexpectedKeys: [String]
    }

    /// Copies `state` into the parameters and buffers of the same names.
    ///
    /// - Parameters:
    ///   - strict: when true (PyTorch's default), any missing or unexpected name is an error.
    /// - Returns: the missing and unexpected names (both empty when strict).
    /// - Throws: `.invalidInput` naming the tensor whose shape or type differs, or, when strict,
    ///   listing the missing and unexpected names; nothing is changed when it throws.
    @discardableResult
    public func loadStateDict(_ state: [String: Tensor], strict: Bool = true) throws -> LoadResult {
        let own = namedTensors(removeDuplicates: false)
        let ownNames = Set(own.map(\.0))
        let missing = own.map(\.0).filter { state[$0] == nil }
        let unexpected = state.keys.filter { !ownNames.contains($0) }.sorted()
        if strict, !missing.isEmpty || !unexpected.isEmpty {
            var parts: [String] = []
            if !missing.isEmpty { parts.append("missing \(missing.joined(separator: ", "))") }
            if !unexpected.isEmpty { parts.append("unexpected \(unexpected.joined(separator: ", "))") }
            throw OnnxTrainError.invalidInput("loadStateDict: \(parts.joined(separator: "; "))")
        }
        var updates: [(NNTensor, Tensor)] = []
        for (name, t) in own {
            guard let source = state[name] else { continue }
            guard source.shape == t.shape else {
                throw OnnxTrainError.invalidInput("loadStateDict: '\(name)' has shape \(source.shape) in the source, \(t.shape) in the model")
            }
            updates.append((t, try converted(source, to: t.dtype, name: name)))
        }
        for (t, value) in updates { t.setValue(value.copied()) }
        return LoadResult(missingKeys: missing, unexpectedKeys: unexpected)
    }

    /// Loads weights from a file: `.safetensors` (PyTorch's `save_file(model.state_dict())`),
    /// `.onnx` (the initializers of an export whose names match, never strict about the others),
    /// `.npz`, or an onnxruntime checkpoint (any other name).
    @discardableResult
    public func loadStateDict(contentsOf path: String, strict: Bool = true) throws -> LoadResult {
        let lower = path.lowercased()
        do {
            if lower.hasSuffix(".safetensors") {
                return try loadStateDict(try SafeTensors.read(contentsOf: path).dictionary, strict: strict)
            }
            if lower.hasSuffix(".onnx") {
                let initializers = try Model(contentsOf: path).graph.initializers
                let wanted = Set(namedTensors(removeDuplicates: false).map(\.0))
                return try loadStateDict(initializers.filter { wanted.contains($0.key) }, strict: strict)
            }
            if lower.hasSuffix(".npz") {
                return try loadStateDict(try Npz.readDictionary(contentsOf: path), strict: strict)
            }
            let checkpoint = try CheckpointState.load(from: path)
            return try loadStateDict(Dictionary(checkpoint.parameters.map { ($0.name, $0.data) }, uniquingKeysWith: { a, _ in a }), strict: strict)
        } catch let error as OnnxTrainError where !error.message.hasPrefix(path) {
            throw error.prefixed(path)
        }
    }

    /// Writes `stateDict()` as `.safetensors` (names sorted, as PyTorch's `save_file` writes
    /// them), atomically; PyTorch reads it back with `load_state_dict(load_file(path))`.
    public func saveStateDict(to path: String) throws {
        let tensors = namedTensors(removeDuplicates: false).map { (name: $0.0, tensor: $0.1.value) }.sorted { $0.name < $1.name }
        try SafeTensors.write(SafeTensorsFile(tensors: tensors), to: path)
    }

    /// Training mode for this module and every submodule (PyTorch's `train()`).
    @discardableResult
    public func train(_ on: Bool = true) -> Self {
        for (_, m) in namedModules() { m.training = on }
        return self
    }

    /// Evaluation mode (PyTorch's `eval()`).
    @discardableResult
    public func eval() -> Self { train(false) }

    /// Sets `requiresGrad` on every parameter (freezing or unfreezing the whole module).
    public func requiresGrad(_ on: Bool) {
        for p in parameters() { p.requiresGrad = on }
    }

    /// Clears every parameter's gradient (PyTorch's `zero_grad(set_to_none=True)`).
    public func zeroGrad() {
        for p in parameters() { p.grad = nil }
    }

    /// The number of parameter elements.
    public var parameterCount: Int { parameters().reduce(0) { $0 + $1.value.count } }
}

/// A module that maps one tensor to one tensor, so it can sit in a `Sequential`.
public protocol UnaryModule: Module {
    /// The module's computation (PyTorch's `forward`).
    func forward(_ x: NNTensor) -> NNTensor
}

extension UnaryModule {
    /// Calls `forward`, as PyTorch's `module(x)`.
    public func callAsFunction(_ x: NNTensor) -> NNTensor { forward(x) }
}

/// Converts a loaded tensor to the parameter's element type (float64 weights into a float32
/// model, as `load_state_dict` copies across dtypes).
func converted(_ t: Tensor, to dtype: DType, name: String) throws -> Tensor {
    if t.dtype == dtype { return t }
    switch (t.dtype, dtype) {
    case (.float64, .float32), (.float16, .float32), (.bfloat16, .float32):
        return Tensor(shape: t.shape, scalars: (0..<t.count).map { Float(t.scalarDouble(at: $0) ?? 0) })
    case (.float32, .float64):
        return Tensor(shape: t.shape, scalars: (0..<t.count).map { t.scalarDouble(at: $0) ?? 0 })
    case (.int32, .int64):
        return Tensor(shape: t.shape, scalars: (t.intValues() ?? []).map { Int64($0) })
    default:
        throw OnnxTrainError.invalidInput("loadStateDict: '\(name)' is tensor(\(t.dtype)) in the source, tensor(\(dtype)) in the model")
    }
}
