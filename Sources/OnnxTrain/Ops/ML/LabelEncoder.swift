/// LabelEncoder (ai.onnx.ml 2, 4): maps each input element through a key -> value table.
///
/// Keys come from keys_floats / keys_int64s / keys_strings (or keys_tensor, opset 4), values
/// likewise; an element with no key gets the default (default_tensor, else default_float -0.0,
/// default_int64 -1 or default_string "_Unused", as the spec says). Y has X's shape and the
/// values' element type. Keys match by kind: integer inputs look up integer keys, float inputs
/// float keys, strings strings.
func registerLabelEncoder(_ registry: OpRegistry) {
    let factory: KernelFactory = { ctx in
        let keyCandidates: [[MLKey]?] = [
            try ctx.floats("keys_floats").map { $0.map { .real(Double($0)) } },
            try ctx.ints("keys_int64s").map { $0.map { .int(Int64($0)) } },
            try ctx.strings("keys_strings").map { $0.map { .string($0) } },
            try ctx.tensor("keys_tensor").map(mlKeys),
        ]
        let valueCandidates: [Tensor?] = [
            try ctx.floats("values_floats").map { Tensor(shape: [$0.count], scalars: $0) },
            try ctx.ints("values_int64s").map { Tensor(shape: [$0.count], scalars: $0.map(Int64.init)) },
            try ctx.strings("values_strings").map { Tensor(shape: [$0.count], strings: $0) },
            try ctx.tensor("values_tensor"),
        ]
        let givenKeys = keyCandidates.compactMap { $0 }, givenValues = valueCandidates.compactMap { $0 }
        guard givenKeys.count == 1 else { throw KernelError("exactly one keys_* attribute is required, got \(givenKeys.count)") }
        guard givenValues.count == 1 else { throw KernelError("exactly one values_* attribute is required, got \(givenValues.count)") }
        let keys = givenKeys[0], values = givenValues[0]
        guard keys.count == values.count else {
            throw KernelError("keys (\(keys.count)) and values (\(values.count)) differ in length")
        }
        let fallback: Tensor
        if let t = try ctx.tensor("default_tensor") {
            guard t.count == 1, t.dtype == values.dtype else {
                throw KernelError("default_tensor must hold one \(values.dtype) element, got \(t)")
            }
            fallback = t.reshaped([1])
        } else {
            switch values.dtype {
            case .string: fallback = Tensor(shape: [1], strings: [try ctx.string("default_string", default: "_Unused")])
            case .float32, .float64, .float16, .bfloat16:
                fallback = try Tensor(dtype: values.dtype, shape: [1], doubles: [Double(try ctx.float("default_float", default: -0.0))])
            default: fallback = try Tensor(dtype: values.dtype, shape: [1], doubles: [Double(try ctx.int("default_int64", default: -1))])
            }
        }
        // The table is the values followed by the default, so a miss is index `keys.count`.
        let table = try mlConcat(values.reshaped([values.count]), fallback)
        var position: [MLKey: Int] = [:]
        for (i, k) in keys.enumerated() { position[k] = i }  // a repeated key: the last wins, as in a Python dict
        let miss = keys.count
        return AnyKernel { inputs, _ in
            let x = try inputs.tensor(0)
            let indices = try mlKeys(x).map { position[$0] ?? miss }
            return [.tensor(try mlGather(table, indices, shape: x.shape))]
        }
    }
    registry.register("LabelEncoder", domain: mlDomain, since: 2, factory)
    registry.register("LabelEncoder", domain: mlDomain, since: 4, factory)
}
