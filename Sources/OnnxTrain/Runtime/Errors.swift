/// Every error onnx-train throws: one line that names the file, node or value involved.
public struct OnnxTrainError: Error, CustomStringConvertible, Equatable {
    public enum Kind: Sendable, Equatable {
        /// The file could not be read or written.
        case io
        /// The bytes are not a valid ONNX model (or checkpoint, or data file).
        case invalidModel
        /// The graph is malformed: undefined values, cycles, missing kernels.
        case invalidGraph
        /// An operator or type onnx-train does not implement.
        case unsupported
        /// A caller-provided value (feed, data array, parameter) does not fit.
        case invalidInput
        /// A kernel rejected its inputs at run time.
        case kernel
        /// Training stopped (a loss that is not finite, a checkpoint mismatch).
        case training
    }

    public var kind: Kind
    public var message: String

    public init(_ kind: Kind, _ message: String) {
        self.kind = kind
        self.message = message
    }

    public var description: String { message }

    public static func io(_ message: String) -> OnnxTrainError { .init(.io, message) }
    public static func invalidModel(_ message: String) -> OnnxTrainError { .init(.invalidModel, message) }
    public static func invalidGraph(_ message: String) -> OnnxTrainError { .init(.invalidGraph, message) }
    public static func unsupported(_ message: String) -> OnnxTrainError { .init(.unsupported, message) }
    public static func invalidInput(_ message: String) -> OnnxTrainError { .init(.invalidInput, message) }
    public static func training(_ message: String) -> OnnxTrainError { .init(.training, message) }

    /// The same error with `context` in front ("model.onnx: ...").
    public func prefixed(_ context: String) -> OnnxTrainError {
        OnnxTrainError(kind, "\(context): \(message)")
    }
}

/// What a kernel throws when its inputs do not fit; the interpreter adds the node's name.
public struct KernelError: Error, CustomStringConvertible {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}
