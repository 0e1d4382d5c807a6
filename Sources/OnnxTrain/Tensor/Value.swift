/// A runtime value flowing along a graph edge: a tensor, a sequence, or an optional.
///
/// Only `optional` is boxed: a tensor value is stored inline, so the executor makes no heap box
/// per node output (an `indirect enum` allocated one for every value).
public enum Value {
    case tensor(Tensor)
    /// A sequence of values (tensors in practice); `elementType` remembers the type of an empty one.
    case sequence([Value], elementType: ValueType?)
    /// An optional holding a value, or none; `type` remembers the type of a none.
    indirect case optional(Value?, type: ValueType?)

    public var tensor: Tensor? {
        if case .tensor(let t) = self { return t }
        return nil
    }

    public var sequence: [Value]? {
        if case .sequence(let s, _) = self { return s }
        return nil
    }

    /// A short description for error messages: `tensor(float) [2, 3]`, `sequence(3)`, `optional(none)`.
    public var summary: String {
        switch self {
        case .tensor(let t): return t.description
        case .sequence(let s, _): return "sequence of \(s.count)"
        case .optional(let v, _): return v.map { "optional(\($0.summary))" } ?? "optional(none)"
        }
    }
}
