import COnnxProto
import CProtobufC
#if canImport(Glibc)
import Glibc
#endif

// The only file that touches protobuf-c's ONNX structs: it parses with protobuf-c, converts the
// tree into Swift values and frees the C tree before returning.

extension Model {
    /// The newest ONNX IR version a model may declare: the newest in ONNX 1.22's node test
    /// suite, which the conformance run covers. Above it, fields this loader does not know may
    /// change the meaning of the model, so it is refused (as onnxruntime refuses IR versions and
    /// opsets newer than its own).
    public static let newestIRVersion = 13
    /// The newest ai.onnx opset a model may import: ONNX 1.22's opset 27.
    public static let newestOpset = 27

    /// Loads an ONNX model file. External tensor data is memory-mapped relative to the file.
    public init(contentsOf path: String) throws {
        let file = try MappedFile(path: path)
        do {
            // The parsed protobuf holds copies of every byte it needs: the file's pages go before
            // the tensors are made (a 45 MB model was otherwise in memory three times at once).
            self = try Model(bytes: file.bytes, directory: Model.directory(of: path), parsed: { file.unmap() })
        } catch let error as OnnxTrainError {
            throw error.prefixed(path)
        }
        self.path = path
    }

    /// Parses a serialized ModelProto. `directory` anchors external data paths.
    public init(bytes: UnsafeRawBufferPointer, directory: String? = nil) throws {
        try self.init(bytes: bytes, directory: directory, parsed: {})
    }

    /// Parses a serialized ModelProto; `parsed` runs once the protobuf is unpacked, when `bytes`
    /// are no longer read.
    init(bytes: UnsafeRawBufferPointer, directory: String?, parsed: () -> Void) throws {
        guard bytes.count > 0 else { throw OnnxTrainError.invalidModel("empty file, not an ONNX model") }
        try ProtobufNesting.check(bytes, as: .model, what: "the model")
        guard let raw = onnx__model_proto__unpack(nil, bytes.count, bytes.baseAddress!.assumingMemoryBound(to: UInt8.self)) else {
            throw OnnxTrainError.invalidModel("not a valid ONNX model (protobuf parse failed: truncated or corrupt)")
        }
        defer { onnx__model_proto__free_unpacked(raw, nil) }
        parsed()
        let proto = raw.pointee
        var converter = ProtoConverter(directory: directory)
        self = try converter.model(proto)
    }

    static func directory(of path: String) -> String {
        guard let slash = path.lastIndex(of: "/") else { return "." }
        return String(path[..<slash].isEmpty ? "/" : path[..<slash])
    }
}

extension Tensor {
    /// Parses one serialized TensorProto (the `input_0.pb` files of the ONNX test suite).
    public init(protobuf bytes: UnsafeRawBufferPointer, directory: String? = nil) throws {
        guard let raw = onnx__tensor_proto__unpack(nil, bytes.count, bytes.baseAddress?.assumingMemoryBound(to: UInt8.self)) else {
            throw OnnxTrainError.invalidModel("not a valid TensorProto")
        }
        defer { onnx__tensor_proto__free_unpacked(raw, nil) }
        var converter = ProtoConverter(directory: directory)
        self = try converter.tensor(raw.pointee)
    }
}

extension Tensor {
    /// Parses one serialized TensorProto and returns its `name` field too ("" when unset).
    public static func named(protobuf bytes: UnsafeRawBufferPointer, directory: String? = nil) throws -> (name: String, tensor: Tensor) {
        guard let raw = onnx__tensor_proto__unpack(nil, bytes.count, bytes.baseAddress?.assumingMemoryBound(to: UInt8.self)) else {
            throw OnnxTrainError.invalidModel("not a valid TensorProto")
        }
        defer { onnx__tensor_proto__free_unpacked(raw, nil) }
        var converter = ProtoConverter(directory: directory)
        return (str(raw.pointee.name), try converter.tensor(raw.pointee))
    }
}

extension Value {
    /// Parses a serialized TensorProto, SequenceProto or OptionalProto, as `kind` says.
    public init(protobuf bytes: UnsafeRawBufferPointer, kind: SerializedValueKind) throws {
        switch kind {
        case .tensor:
            self = .tensor(try Tensor(protobuf: bytes))
        case .sequence:
            try ProtobufNesting.check(bytes, as: .sequence, what: "the SequenceProto")
            guard let raw = onnx__sequence_proto__unpack(nil, bytes.count, bytes.baseAddress?.assumingMemoryBound(to: UInt8.self)) else {
                throw OnnxTrainError.invalidModel("not a valid SequenceProto")
            }
            defer { onnx__sequence_proto__free_unpacked(raw, nil) }
            var converter = ProtoConverter(directory: nil)
            self = try converter.sequence(raw.pointee)
        case .optional:
            try ProtobufNesting.check(bytes, as: .optional, what: "the OptionalProto")
            guard let raw = onnx__optional_proto__unpack(nil, bytes.count, bytes.baseAddress?.assumingMemoryBound(to: UInt8.self)) else {
                throw OnnxTrainError.invalidModel("not a valid OptionalProto")
            }
            defer { onnx__optional_proto__free_unpacked(raw, nil) }
            var converter = ProtoConverter(directory: nil)
            self = try converter.optional(raw.pointee)
        }
    }
}

/// Which protobuf message a serialized value file holds.
public enum SerializedValueKind { case tensor, sequence, optional }

@inline(__always)
private func str(_ p: UnsafeMutablePointer<CChar>?) -> String {
    guard let p else { return "" }
    return String(cString: p)
}

private func bytesString(_ b: ProtobufCBinaryData) -> String {
    guard b.len > 0, let data = b.data else { return "" }
    return String(decoding: UnsafeBufferPointer(start: data, count: b.len), as: UTF8.self)
}

@inline(__always)
private func buffer<T>(_ p: UnsafeMutablePointer<T>?, _ n: Int) -> UnsafeBufferPointer<T> {
    UnsafeBufferPointer(start: n > 0 ? p : nil, count: p == nil ? 0 : n)
}


private struct ProtoConverter {
    let directory: String?
    var mappedFiles: [String: MappedFile] = [:]

    init(directory: String?) { self.directory = directory }

    mutating func model(_ m: Onnx__ModelProto) throws -> Model {
        guard let g = m.graph else { throw OnnxTrainError.invalidModel("model has no graph") }
        var model = Model(graph: try graph(g.pointee))
        model.irVersion = m.has_ir_version != 0 ? Int(m.ir_version) : 0
        model.producerName = str(m.producer_name)
        model.producerVersion = str(m.producer_version)
        model.domain = str(m.domain)
        model.modelVersion = m.has_model_version != 0 ? Int(m.model_version) : 0
        model.docString = str(m.doc_string)
        guard model.irVersion <= Model.newestIRVersion else {
            throw OnnxTrainError.unsupported("model IR version \(model.irVersion) is newer than any this loader knows (up to \(Model.newestIRVersion)); onnxruntime refuses it too")
        }
        model.opsetImports = try opsets(buffer(m.opset_import, m.n_opset_import))
        if model.opsetImports.isEmpty && model.irVersion < 3 { model.opsetImports[""] = 1 }
        for entry in buffer(m.metadata_props, m.n_metadata_props) {
            guard let e = entry?.pointee else { continue }
            model.metadata[str(e.key)] = str(e.value)
        }
        for f in buffer(m.functions, m.n_functions) {
            guard let f = f?.pointee else { continue }
            model.functions.append(try function(f))
        }
        return model
    }

    func opsets(_ list: UnsafeBufferPointer<UnsafeMutablePointer<Onnx__OperatorSetIdProto>?>) throws -> [String: Int] {
        var result: [String: Int] = [:]
        for o in list {
            guard let o = o?.pointee else { continue }
            let version = o.has_version != 0 ? Int(o.version) : 1
            guard version >= 1 && version < 100_000 else {
                throw OnnxTrainError.invalidModel("opset import '\(str(o.domain))' has invalid version \(version)")
            }
            let domain = canonicalDomain(str(o.domain))
            if domain.isEmpty && version > Model.newestOpset {
                throw OnnxTrainError.unsupported("model imports ai.onnx opset \(version), newer than any this runtime knows (up to \(Model.newestOpset)); onnxruntime refuses it too")
            }
            result[domain] = version
        }
        return result
    }

    mutating func function(_ f: Onnx__FunctionProto) throws -> Function {
        var nodes: [Node] = []
        for n in buffer(f.node, f.n_node) {
            guard let n = n?.pointee else { continue }
            nodes.append(try node(n))
        }
        var defaults: [String: Attribute] = [:]
        for a in buffer(f.attribute_proto, f.n_attribute_proto) {
            guard let a = a?.pointee, let value = try attribute(a) else { continue }
            defaults[str(a.name)] = value
        }
        var fn = Function(name: str(f.name), domain: canonicalDomain(str(f.domain)), inputs: buffer(f.input, f.n_input).map { str($0) },
                          outputs: buffer(f.output, f.n_output).map { str($0) },
                          attributeNames: buffer(f.attribute, f.n_attribute).map { str($0) } + defaults.keys,
                          attributeDefaults: defaults, nodes: nodes,
                          opsetImports: try opsets(buffer(f.opset_import, f.n_opset_import)))
        fn.overload = str(f.overload)
        fn.valueInfo = try buffer(f.value_info, f.n_value_info).compactMap { try $0.map { try valueInfo($0.pointee) } }
        return fn
    }

    mutating func graph(_ g: Onnx__GraphProto) throws -> Graph {
        var graph = Graph()
        graph.name = str(g.name)
        graph.docString = str(g.doc_string)
        for pointer in buffer(g.initializer, g.n_initializer) {
            guard let pointer else { continue }
            let t = pointer.pointee
            let name = str(t.name)
            do {
                graph.setInitializer(name, try tensor(t))
            } catch let error as OnnxTrainError {
                throw error.prefixed("initializer '\(name)'")
            }
            // The tensor holds its own copy: the protobuf's goes now, not with the whole message
            // (free_unpacked skips a nil buffer; protobuf-c allocated it with malloc).
            if t.has_raw_data != 0, let data = t.raw_data.data {
                free(data)
                pointer.pointee.raw_data.data = nil
                pointer.pointee.raw_data.len = 0
            }
        }
        for s in buffer(g.sparse_initializer, g.n_sparse_initializer) {
            guard let s = s?.pointee else { continue }
            let sparse = try sparseTensor(s)
            let name = s.values.map { str($0.pointee.name) } ?? ""
            do {
                graph.setInitializer(name, try sparse.densified())
            } catch let error as OnnxTrainError {
                throw error.prefixed("sparse initializer '\(name)'")
            }
        }
        graph.inputs = try buffer(g.input, g.n_input).compactMap { try $0.map { try valueInfo($0.pointee) } }
        graph.outputs = try buffer(g.output, g.n_output).compactMap { try $0.map { try valueInfo($0.pointee) } }
        graph.valueInfo = try buffer(g.value_info, g.n_value_info).compactMap { try $0.map { try valueInfo($0.pointee) } }
        graph.nodes.reserveCapacity(g.n_node)
        for n in buffer(g.node, g.n_node) {
            guard let n = n?.pointee else { continue }
            graph.nodes.append(try node(n))
        }
        return graph
    }

    mutating func node(_ n: Onnx__NodeProto) throws -> Node {
        var node = Node(opType: str(n.op_type), domain: str(n.domain), name: str(n.name),
                        inputs: buffer(n.input, n.n_input).map { str($0) },
                        outputs: buffer(n.output, n.n_output).map { str($0) })
        node.docString = str(n.doc_string)
        for a in buffer(n.attribute, n.n_attribute) {
            guard let a = a?.pointee else { continue }
            let name = str(a.name)
            let ref = str(a.ref_attr_name)
            if !ref.isEmpty { node.attributeRefs[name] = ref; continue }
            do {
                if let value = try attribute(a) { node.attributes[name] = value }
            } catch let error as OnnxTrainError {
                throw error.prefixed("\(node.label), attribute '\(name)'")
            }
        }
        return node
    }

    mutating func attribute(_ a: Onnx__AttributeProto) throws -> Attribute? {
        var type = a.has_type != 0 ? a.type.rawValue : 0
        if type == 0 {
            // Old models leave `type` unset; infer it from the field that holds a value.
            if a.has_f != 0 { type = 1 } else if a.has_i != 0 { type = 2 } else if a.has_s != 0 { type = 3 }
            else if a.t != nil { type = 4 } else if a.g != nil { type = 5 } else if a.n_floats > 0 { type = 6 }
            else if a.n_ints > 0 { type = 7 } else if a.n_strings > 0 { type = 8 } else if a.n_tensors > 0 { type = 9 }
            else if a.n_graphs > 0 { type = 10 } else { return nil }
        }
        switch type {
        case 1: return .float(a.f)
        case 2: return .int(Int(a.i))
        case 3: return .string(bytesString(a.s))
        case 4:
            guard let t = a.t else { throw OnnxTrainError.invalidModel("TENSOR attribute without a tensor") }
            return .tensor(try tensor(t.pointee))
        case 5:
            guard let g = a.g else { throw OnnxTrainError.invalidModel("GRAPH attribute without a graph") }
            return .graph(try graph(g.pointee))
        case 11:
            guard let s = a.sparse_tensor else { throw OnnxTrainError.invalidModel("SPARSE_TENSOR attribute without a value") }
            return .sparseTensor(try sparseTensor(s.pointee))
        case 13:
            guard let tp = a.tp else { throw OnnxTrainError.invalidModel("TYPE_PROTO attribute without a type") }
            return .type(try valueType(tp.pointee))
        case 6: return .floats(Array(buffer(a.floats, a.n_floats)))
        case 7: return .ints(buffer(a.ints, a.n_ints).map { Int($0) })
        case 8: return .strings(buffer(a.strings, a.n_strings).map { bytesString($0) })
        case 9: return .tensors(try buffer(a.tensors, a.n_tensors).compactMap { try $0.map { try tensor($0.pointee) } })
        case 10: return .graphs(try buffer(a.graphs, a.n_graphs).compactMap { try $0.map { try graph($0.pointee) } })
        case 12: return .sparseTensors(try buffer(a.sparse_tensors, a.n_sparse_tensors).compactMap { try $0.map { try sparseTensor($0.pointee) } })
        case 14: return .types(try buffer(a.type_protos, a.n_type_protos).compactMap { try $0.map { try valueType($0.pointee) } })
        default: throw OnnxTrainError.invalidModel("unknown attribute type \(type)")
        }
    }

    func valueInfo(_ v: Onnx__ValueInfoProto) throws -> ValueInfo {
        var info = ValueInfo(name: str(v.name), type: try v.type.map { try valueType($0.pointee) })
        info.docString = str(v.doc_string)
        return info
    }

    func shape(_ s: UnsafeMutablePointer<Onnx__TensorShapeProto>?) -> [Dim]? {
        guard let s = s?.pointee else { return nil }
        return buffer(s.dim, s.n_dim).map { d -> Dim in
            guard let d = d?.pointee else { return .unknown }
            switch d.value_case {
            case ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE: return .value(Int(d.dim_value))
            case ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_PARAM: return .symbol(str(d.dim_param))
            default: return .unknown
            }
        }
    }

    func elemType(_ code: Int32, _ has: protobuf_c_boolean) -> DType? {
        has != 0 ? DType(rawValue: code) : nil
    }

    func valueType(_ t: Onnx__TypeProto) throws -> ValueType {
        switch t.value_case {
        case ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE:
            guard let tt = t.tensor_type?.pointee else { return .tensor(nil, shape: nil) }
            return .tensor(elemType(tt.elem_type, tt.has_elem_type), shape: shape(tt.shape))
        case ONNX__TYPE_PROTO__VALUE_SPARSE_TENSOR_TYPE:
            guard let tt = t.sparse_tensor_type?.pointee else { return .sparseTensor(nil, shape: nil) }
            return .sparseTensor(elemType(tt.elem_type, tt.has_elem_type), shape: shape(tt.shape))
        case ONNX__TYPE_PROTO__VALUE_SEQUENCE_TYPE:
            return .sequence(try t.sequence_type?.pointee.elem_type.map { try valueType($0.pointee) })
        case ONNX__TYPE_PROTO__VALUE_OPTIONAL_TYPE:
            return .optional(try t.optional_type?.pointee.elem_type.map { try valueType($0.pointee) })
        case ONNX__TYPE_PROTO__VALUE_MAP_TYPE:
            guard let m = t.map_type?.pointee else { return .map(key: nil, value: nil) }
            return .map(key: elemType(m.key_type, m.has_key_type), value: try m.value_type.map { try valueType($0.pointee) })
        default:
            return .tensor(nil, shape: nil)
        }
    }

    mutating func sparseTensor(_ s: Onnx__SparseTensorProto) throws -> SparseTensor {
        guard let values = s.values, let indices = s.indices else {
            throw OnnxTrainError.invalidModel("sparse tensor without values or indices")
        }
        let dims = buffer(s.dims, s.n_dims).map { Int($0) }
        guard dims.allSatisfy({ $0 >= 0 }) else { throw OnnxTrainError.invalidModel("sparse tensor has a negative dimension") }
        return SparseTensor(values: try tensor(values.pointee), indices: try tensor(indices.pointee), shape: dims)
    }

    mutating func sequence(_ s: Onnx__SequenceProto) throws -> Value {
        var items: [Value] = []
        for t in buffer(s.tensor_values, s.n_tensor_values) { if let t { items.append(.tensor(try tensor(t.pointee))) } }
        for q in buffer(s.sequence_values, s.n_sequence_values) { if let q { items.append(try sequence(q.pointee)) } }
        for o in buffer(s.optional_values, s.n_optional_values) { if let o { items.append(try optional(o.pointee)) } }
        let type: ValueType? = items.isEmpty ? nil : nil
        return .sequence(items, elementType: type)
    }

    mutating func optional(_ o: Onnx__OptionalProto) throws -> Value {
        if let t = o.tensor_value { return .optional(.tensor(try tensor(t.pointee)), type: nil) }
        if let s = o.sequence_value { return .optional(try sequence(s.pointee), type: nil) }
        if let p = o.optional_value { return .optional(try optional(p.pointee), type: nil) }
        return .optional(nil, type: nil)
    }

    /// Converts a TensorProto from any of its encodings into a `Tensor`.
    mutating func tensor(_ t: Onnx__TensorProto) throws -> Tensor {
        let name = str(t.name)
        let label = name.isEmpty ? "tensor" : "tensor '\(name)'"
        guard t.has_data_type != 0, t.data_type != 0 else { throw OnnxTrainError.invalidModel("\(label) has no data type") }
        guard let dtype = DType(rawValue: t.data_type) else {
            throw OnnxTrainError.unsupported("\(label) has unknown data type \(t.data_type)")
        }
        var shape: [Int] = []
        var count = 1
        for d in buffer(t.dims, t.n_dims) {
            guard d >= 0 else { throw OnnxTrainError.invalidModel("\(label) has negative dimension \(d)") }
            let (product, overflow) = count.multipliedReportingOverflow(by: Int(d))
            guard !overflow, product <= SizePolicy.maxDeclaredElements else { throw OnnxTrainError.invalidModel("\(label) has too many elements (dims \(buffer(t.dims, t.n_dims).map { $0 }))") }
            count = product
            shape.append(Int(d))
        }
        if t.segment != nil { throw OnnxTrainError.unsupported("\(label) is segmented (TensorProto.segment), which onnx-train does not load") }

        if t.has_data_location != 0 && t.data_location == ONNX__TENSOR_PROTO__DATA_LOCATION__EXTERNAL {
            return try externalTensor(t, dtype: dtype, shape: shape, label: label)
        }
        if dtype == .string {
            let strings = buffer(t.string_data, t.n_string_data).map { bytesString($0) }
            guard strings.count == count else { throw OnnxTrainError.invalidModel("\(label) has \(strings.count) strings for shape \(shape)") }
            return Tensor(shape: shape, strings: strings)
        }
        if t.has_raw_data != 0 {
            let raw = UnsafeRawBufferPointer(start: t.raw_data.data, count: t.raw_data.data == nil ? 0 : t.raw_data.len)
            return try tensorFromRaw(raw, dtype: dtype, shape: shape, label: label)
        }
        // Allocated only once the typed field is known to hold every element: dims are untrusted.
        var tensor = Tensor(zeros: dtype, shape: count == 0 ? shape : [0])
        func fill<S, D>(_ source: UnsafeBufferPointer<S>, _ field: String, as: D.Type, perElement: Int = 1, _ convert: (S) -> D) throws {
            guard source.count == count * perElement else {
                if count == 0 { return }
                throw OnnxTrainError.invalidModel("\(label) has \(source.count) values in \(field) for shape \(shape)")
            }
            tensor = try Tensor(checkedZeros: dtype, shape: shape, label: label)
            tensor.withUnsafeMutableRawBytes { raw in
                let dst = raw.baseAddress!.assumingMemoryBound(to: D.self)
                for i in 0..<source.count { dst[i] = convert(source[i]) }
            }
        }
        let i32 = buffer(t.int32_data, t.n_int32_data)
        switch dtype {
        case .float32: try fill(buffer(t.float_data, t.n_float_data), "float_data", as: Float.self) { $0 }
        case .complex64: try fill(buffer(t.float_data, t.n_float_data), "float_data", as: Float.self, perElement: 2) { $0 }
        case .float64: try fill(buffer(t.double_data, t.n_double_data), "double_data", as: Double.self) { $0 }
        case .complex128: try fill(buffer(t.double_data, t.n_double_data), "double_data", as: Double.self, perElement: 2) { $0 }
        case .int64: try fill(buffer(t.int64_data, t.n_int64_data), "int64_data", as: Int64.self) { $0 }
        case .uint64: try fill(buffer(t.uint64_data, t.n_uint64_data), "uint64_data", as: UInt64.self) { $0 }
        case .uint32: try fill(buffer(t.uint64_data, t.n_uint64_data), "uint64_data", as: UInt32.self) { UInt32(truncatingIfNeeded: $0) }
        case .int32: try fill(i32, "int32_data", as: Int32.self) { $0 }
        case .int16: try fill(i32, "int32_data", as: Int16.self) { Int16(truncatingIfNeeded: $0) }
        case .uint16, .float16, .bfloat16: try fill(i32, "int32_data", as: UInt16.self) { UInt16(truncatingIfNeeded: $0) }
        case .int8: try fill(i32, "int32_data", as: Int8.self) { Int8(truncatingIfNeeded: $0) }
        case .uint8, .float8e4m3fn, .float8e4m3fnuz, .float8e5m2, .float8e5m2fnuz, .float8e8m0:
            try fill(i32, "int32_data", as: UInt8.self) { UInt8(truncatingIfNeeded: $0) }
        case .bool: try fill(i32, "int32_data", as: UInt8.self) { $0 != 0 ? 1 : 0 }
        case .int4, .uint4, .float4e2m1, .int2, .uint2:
            // Packed elements, one packed byte per int32 entry.
            let packed = i32.map { UInt8(truncatingIfNeeded: $0) }
            return try packed.withUnsafeBytes { try tensorFromRaw($0, dtype: dtype, shape: shape, label: label) }
        case .string: break
        }
        return tensor
    }

    func tensorFromRaw(_ raw: UnsafeRawBufferPointer, dtype: DType, shape: [Int], label: String) throws -> Tensor {
        let count = Tensor.elementCount(shape)
        if let bits = dtype.packedBits {
            let perByte = 8 / bits
            let expected = (count + perByte - 1) / perByte
            guard raw.count == expected else {
                throw OnnxTrainError.invalidModel("\(label) has \(raw.count) raw bytes, \(expected) expected for \(dtype) \(shape)")
            }
            let mask = UInt8((1 << bits) - 1)
            let signBit = UInt8(1 << (bits - 1))
            let signed = dtype == .int4 || dtype == .int2
            var tensor = Tensor(uninitialized: dtype, shape: shape)
            try tensor.withUnsafeMutableBufferPointer(as: UInt8.self) { dst in
                for i in 0..<count {
                    var v = (raw[i / perByte] >> UInt8((i % perByte) * bits)) & mask
                    if signed && v & signBit != 0 { v |= ~mask }  // sign-extend into the byte
                    dst[i] = v
                }
            }
            return tensor
        }
        guard raw.count == count * dtype.byteSize else {
            throw OnnxTrainError.invalidModel("\(label) has \(raw.count) raw bytes, \(count * dtype.byteSize) expected for \(dtype) \(shape)")
        }
        var tensor = Tensor(uninitialized: dtype, shape: shape)
        if raw.count > 0 {
            tensor.withUnsafeMutableRawBytes { $0.copyMemory(from: raw) }
        }
        if dtype == .bool {
            // Any non-zero byte is true; normalise so Swift's Bool is always 0 or 1.
            try tensor.withUnsafeMutableBufferPointer(as: UInt8.self) { b in for i in b.indices where b[i] > 1 { b[i] = 1 } }
        }
        return tensor
    }

    mutating func externalTensor(_ t: Onnx__TensorProto, dtype: DType, shape: [Int], label: String) throws -> Tensor {
        var location = ""
        var offset = 0
        var length: Int?
        for e in buffer(t.external_data, t.n_external_data) {
            guard let e = e?.pointee else { continue }
            let key = str(e.key), value = str(e.value)
            switch key {
            case "location": location = value
            case "offset":
                guard let v = Int(value), v >= 0 else { throw OnnxTrainError.invalidModel("\(label) has invalid external offset '\(value)'") }
                offset = v
            case "length":
                guard let v = Int(value), v >= 0 else { throw OnnxTrainError.invalidModel("\(label) has invalid external length '\(value)'") }
                length = v
            default: break
            }
        }
        guard !location.isEmpty else { throw OnnxTrainError.invalidModel("\(label) is external but names no location") }
        // Strings have no fixed-size raw form to read from a file (found by fuzzing: it trapped).
        guard dtype != .string else { throw OnnxTrainError.invalidModel("\(label) is a string tensor in external data, which ONNX does not allow") }
        guard !location.hasPrefix("/"), !location.split(separator: "/").contains("..") else {
            throw OnnxTrainError.invalidModel("\(label): external data location '\(location)' must stay inside the model's folder")
        }
        guard let directory else {
            throw OnnxTrainError.invalidModel("\(label) has external data, which needs the model loaded from a file")
        }
        let path = try resolvedInside(directory, location, label: label)
        let file: MappedFile
        if let cached = mappedFiles[path] { file = cached } else {
            do { file = try MappedFile(path: path) } catch let error as OnnxTrainError {
                throw error.prefixed("\(label) external data")
            }
            mappedFiles[path] = file
        }
        let expected = dtype.packedBits.map { (Tensor.elementCount(shape) * $0 + 7) / 8 } ?? Tensor.elementCount(shape) * dtype.byteSize
        let byteLength = length ?? expected
        guard byteLength == expected else {
            throw OnnxTrainError.invalidModel("\(label) external length \(byteLength) does not match \(expected) bytes for \(dtype) \(shape)")
        }
        guard offset <= file.bytes.count, byteLength <= file.bytes.count - offset else {
            throw OnnxTrainError.invalidModel("\(label) external data (\(byteLength) bytes at offset \(offset)) lies outside '\(location)' (\(file.bytes.count) bytes)")
        }
        let start = file.mutableBase + offset
        if dtype.packedBits == nil && dtype != .bool && Int(bitPattern: start) % max(1, dtype.byteSize) == 0 {
            // Zero-copy: the tensor borrows the mapping, which lives as long as any tensor using it.
            let storage = TensorStorage(borrowing: start, byteCount: byteLength, release: { withExtendedLifetime(file) {} })
            return Tensor(dtype: dtype, shape: shape, storage: storage)
        }
        return try tensorFromRaw(UnsafeRawBufferPointer(start: start, count: byteLength), dtype: dtype, shape: shape, label: label)
    }
}

/// The real path of `location` under `directory`, after every symbolic link; throws unless it
/// lies inside the real `directory` (a link to /etc/passwd beside the model must not be read).
private func resolvedInside(_ directory: String, _ location: String, label: String) throws -> String {
    func real(_ path: String) throws -> String {
        guard let resolved = realpath(path, nil) else {
            let code = errno
            throw OnnxTrainError.io("\(label) external data: \(path): \(code == ENOENT ? "no such file" : String(cString: strerror(code)))")
        }
        defer { free(resolved) }
        return String(cString: resolved)
    }
    let folder = try real(directory)
    let file = try real(directory + "/" + location)
    let prefix = folder.hasSuffix("/") ? folder : folder + "/"
    guard file.hasPrefix(prefix) else {
        throw OnnxTrainError.invalidModel("\(label): external data location '\(location)' must stay inside the model's folder (it resolves to \(file), through a symbolic link)")
    }
    return file
}

/// A whole file mapped copy-on-write into memory: reads are zero-copy and in-place writes
/// (training updates of mapped parameters) never reach the file.
final class MappedFile {
    let mutableBase: UnsafeMutableRawPointer
    let bytes: UnsafeRawBufferPointer
    private let mappedLength: Int

    init(path: String) throws {
        let file = try RegularFile.opened(path)
        let fd = file.descriptor
        defer { close(fd) }
        let size = file.size
        mappedLength = max(size, 1)
        guard let p = mmap(nil, mappedLength, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0), p != MAP_FAILED else {
            throw OnnxTrainError.io("\(path): cannot map (\(String(cString: strerror(errno))))")
        }
        mutableBase = p
        bytes = UnsafeRawBufferPointer(start: p, count: size)
    }

    private var mapped = true

    /// Unmaps the file now (`bytes` must not be read after); deinit then does nothing.
    func unmap() {
        guard mapped else { return }
        munmap(mutableBase, mappedLength)
        mapped = false
    }

    deinit { unmap() }
}
