/// Optional, OptionalHasElement and OptionalGetElement (registered in Sequences.swift's list).

/// Optional, since opset 15.
func optionalKernel(_ ctx: NodeContext) throws -> Kernel {
    let type = ctx.attributes["type"].flatMap { a -> ValueType? in if case .type(let t) = a { return t } else { return nil } }
    return AnyKernel { inputs, _ in
        if let v = inputs.value(0) { return [.optional(v, type: type)] }
        return [.optional(nil, type: type)]
    }
}

/// OptionalHasElement, since opset 15.
func optionalHasElementKernel(_ ctx: NodeContext) throws -> Kernel {
    AnyKernel { inputs, _ in
        switch inputs.value(0) {
        case nil, .optional(nil, _)?: return [.tensor(Tensor(scalar: false))]
        default: return [.tensor(Tensor(scalar: true))]
        }
    }
}

/// OptionalGetElement, since opset 15.
func optionalGetElementKernel(_ ctx: NodeContext) throws -> Kernel {
    AnyKernel { inputs, _ in
        switch inputs.value(0) {
        case .optional(let v?, _)?: return [v]
        case .optional(nil, _)?, nil: throw KernelError("the optional input is empty")
        case let v?: return [v]
        }
    }
}
