import COnnxProto
import CProtobufC
import Foundation
#if canImport(Glibc)
import Glibc
#endif

// The writing half of the protobuf-c boundary: Swift values -> protobuf-c structs -> bytes.
// Every C allocation goes through one `ProtoArena`, freed when packing is done, so no C memory
// outlives a call and no C type leaks into the public API.

extension Model {
    /// Serialises the model as an ONNX ModelProto: graph, nodes, attributes of every kind,
    /// initializers as raw_data (external data is inlined; sparse initializers, densified by the
    /// loader, are written dense), value infos, opsets, metadata and functions.
    public func serialized() throws -> Data {
        let arena = ProtoArena()
        let proto = try arena.model(self)
        let message = UnsafeRawPointer(proto).assumingMemoryBound(to: ProtobufCMessage.self)
        // Protobuf readers (onnx, onnxruntime) refuse messages over 2 GiB.
        let size = protobuf_c_message_get_packed_size(message)
        guard size < Int(Int32.max) else {
            throw OnnxTrainError.unsupported("the model would take \(size) bytes, over protobuf's 2 GiB limit (writing external data is not implemented)")
        }
        return arena.pack(message)
    }

    /// Writes the model to an `.onnx` file.
    public func write(to path: String) throws {
        try DataFile.write(try serialized(), to: path)
    }
}

extension Tensor {
    /// Serialises the tensor as an ONNX TensorProto (raw_data, or string_data for strings).
    public func protobufData(name: String = "") throws -> Data {
        let arena = ProtoArena()
        let proto = try arena.tensor(self, name: name)
        return arena.pack(UnsafeRawPointer(proto).assumingMemoryBound(to: ProtobufCMessage.self))
    }
}

/// Owns the C memory of one protobuf-c message tree while it is built and packed.
private final class ProtoArena {
    private var allocations: [UnsafeMutableRawPointer] = []
    /// Storages whose bytes raw_data points at, kept alive until packing is done.
    private var borrowed: [TensorStorage] = []

    deinit { for p in allocations { free(p) } }

    func pack(_ message: UnsafePointer<ProtobufCMessage>) -> Data {
        let size = protobuf_c_message_get_packed_size(message)
        var data = Data(count: size)
        data.withUnsafeMutableBytes { raw in
            if let base = raw.baseAddress { _ = protobuf_c_message_pack(message, base.assumingMemoryBound(to: UInt8.self)) }
        }
        return data
    }

    /// A zeroed C block for `count` values of `T`.
    private func alloc<T>(_ type: T.Type, count: Int = 1) -> UnsafeMutablePointer<T> {
        let raw = calloc(max(count, 1), MemoryLayout<T>.stride)!
        allocations.append(raw)
        return raw.assumingMemoryBound(to: T.self)
    }

    private func cString(_ s: String) -> UnsafeMutablePointer<CChar> {
        let bytes = Array(s.utf8CString)
        let p = alloc(CChar.self, count: bytes.count)
        for (i, b) in bytes.enumerated() { p[i] = b }
        return p
    }

    /// nil for the empty string (protobuf-c then omits the field).
    private func optionalString(_ s: String) -> UnsafeMutablePointer<CChar>? { s.isEmpty ? nil : cString(s) }

    private func binary(_ s: String) -> ProtobufCBinaryData {
        let bytes = Array(s.utf8)
        let p = alloc(UInt8.self, count: bytes.count)
        for (i, b) in bytes.enumerated() { p[i] = b }
        return ProtobufCBinaryData(len: bytes.count, data: p)
    }

    private func array<T>(_ values: [T]) -> (Int, UnsafeMutablePointer<T>?) {
        guard !values.isEmpty else { return (0, nil) }
        let p = alloc(T.self, count: values.count)
        for (i, v) in values.enumerated() { p[i] = v }
        return (values.count, p)
    }

    private func strings(_ values: [String]) -> (Int, UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) {
        array(values.map { Optional(cString($0)) })
    }

    private func entries(_ map: [String: String]) -> (Int, UnsafeMutablePointer<UnsafeMutablePointer<Onnx__StringStringEntryProto>?>?) {
        array(map.sorted { $0.key < $1.key }.map { key, value -> UnsafeMutablePointer<Onnx__StringStringEntryProto>? in
            let e = alloc(Onnx__StringStringEntryProto.self)
            onnx__string_string_entry_proto__init(e)
            e.pointee.key = cString(key)
            e.pointee.value = cString(value)
            return e
        })
    }

    private func opsets(_ map: [String: Int]) -> (Int, UnsafeMutablePointer<UnsafeMutablePointer<Onnx__OperatorSetIdProto>?>?) {
        array(map.sorted { $0.key < $1.key }.map { domain, version -> UnsafeMutablePointer<Onnx__OperatorSetIdProto>? in
            let o = alloc(Onnx__OperatorSetIdProto.self)
            onnx__operator_set_id_proto__init(o)
            o.pointee.domain = optionalString(domain)  // the default domain is written unset, as exporters do
            o.pointee.has_version = 1
            o.pointee.version = Int64(version)
            return o
        })
    }

    func model(_ m: Model) throws -> UnsafeMutablePointer<Onnx__ModelProto> {
        let p = alloc(Onnx__ModelProto.self)
        onnx__model_proto__init(p)
        p.pointee.has_ir_version = 1
        p.pointee.ir_version = Int64(m.irVersion)
        (p.pointee.n_opset_import, p.pointee.opset_import) = opsets(m.opsetImports)
        p.pointee.producer_name = optionalString(m.producerName)
        p.pointee.producer_version = optionalString(m.producerVersion)
        p.pointee.domain = optionalString(m.domain)
        if m.modelVersion != 0 {
            p.pointee.has_model_version = 1
            p.pointee.model_version = Int64(m.modelVersion)
        }
        p.pointee.doc_string = optionalString(m.docString)
        p.pointee.graph = try graph(m.graph)
        (p.pointee.n_metadata_props, p.pointee.metadata_props) = entries(m.metadata)
        (p.pointee.n_functions, p.pointee.functions) = array(try m.functions.map { Optional(try function($0)) })
        return p
    }

    func function(_ f: Function) throws -> UnsafeMutablePointer<Onnx__FunctionProto> {
        let p = alloc(Onnx__FunctionProto.self)
        onnx__function_proto__init(p)
        p.pointee.name = cString(f.name)
        p.pointee.domain = cString(f.domain)
        p.pointee.overload = optionalString(f.overload)
        (p.pointee.n_input, p.pointee.input) = strings(f.inputs)
        (p.pointee.n_output, p.pointee.output) = strings(f.outputs)
        // The loader lists attributes with defaults in `attributeNames` too; they go in attribute_proto.
        var plain: [String] = []
        for name in f.attributeNames where f.attributeDefaults[name] == nil && !plain.contains(name) { plain.append(name) }
        (p.pointee.n_attribute, p.pointee.attribute) = strings(plain)
        (p.pointee.n_attribute_proto, p.pointee.attribute_proto) = array(try f.attributeDefaults.sorted { $0.key < $1.key }.map {
            Optional(try attribute($0.key, $0.value))
        })
        (p.pointee.n_node, p.pointee.node) = array(try f.nodes.map { Optional(try node($0)) })
        (p.pointee.n_opset_import, p.pointee.opset_import) = opsets(f.opsetImports)
        (p.pointee.n_value_info, p.pointee.value_info) = array(f.valueInfo.map { Optional(valueInfo($0)) })
        return p
    }

    func graph(_ g: Graph) throws -> UnsafeMutablePointer<Onnx__GraphProto> {
        let p = alloc(Onnx__GraphProto.self)
        onnx__graph_proto__init(p)
        p.pointee.name = optionalString(g.name)
        p.pointee.doc_string = optionalString(g.docString)
        (p.pointee.n_node, p.pointee.node) = array(try g.nodes.map { Optional(try node($0)) })
        var initializers: [UnsafeMutablePointer<Onnx__TensorProto>?] = []
        for name in g.initializerNames {
            guard let t = g.initializers[name] else { continue }
            do {
                initializers.append(try tensor(t, name: name))
            } catch let error as OnnxTrainError {
                throw error.prefixed("initializer '\(name)'")
            }
        }
        (p.pointee.n_initializer, p.pointee.initializer) = array(initializers)
        (p.pointee.n_input, p.pointee.input) = array(g.inputs.map { Optional(valueInfo($0)) })
        (p.pointee.n_output, p.pointee.output) = array(g.outputs.map { Optional(valueInfo($0)) })
        (p.pointee.n_value_info, p.pointee.value_info) = array(g.valueInfo.map { Optional(valueInfo($0)) })
        return p
    }

    func node(_ n: Node) throws -> UnsafeMutablePointer<Onnx__NodeProto> {
        let p = alloc(Onnx__NodeProto.self)
        onnx__node_proto__init(p)
        (p.pointee.n_input, p.pointee.input) = strings(n.inputs)
        (p.pointee.n_output, p.pointee.output) = strings(n.outputs)
        p.pointee.name = optionalString(n.name)
        p.pointee.op_type = cString(n.opType)
        p.pointee.domain = optionalString(n.domain)
        p.pointee.doc_string = optionalString(n.docString)
        var attributes: [UnsafeMutablePointer<Onnx__AttributeProto>?] = []
        for (name, value) in n.attributes.sorted(by: { $0.key < $1.key }) {
            do {
                attributes.append(try attribute(name, value))
            } catch let error as OnnxTrainError {
                throw error.prefixed("\(n.label), attribute '\(name)'")
            }
        }
        for (name, ref) in n.attributeRefs.sorted(by: { $0.key < $1.key }) {
            let a = alloc(Onnx__AttributeProto.self)
            onnx__attribute_proto__init(a)
            a.pointee.name = cString(name)
            a.pointee.ref_attr_name = cString(ref)
            attributes.append(a)
        }
        (p.pointee.n_attribute, p.pointee.attribute) = array(attributes)
        return p
    }

    func attribute(_ name: String, _ value: Attribute) throws -> UnsafeMutablePointer<Onnx__AttributeProto> {
        let p = alloc(Onnx__AttributeProto.self)
        onnx__attribute_proto__init(p)
        p.pointee.name = cString(name)
        p.pointee.has_type = 1
        func type(_ code: UInt32) { p.pointee.type = Onnx__AttributeProto__AttributeType(rawValue: code) }
        switch value {
        case .float(let f):
            type(1); p.pointee.has_f = 1; p.pointee.f = f
        case .int(let i):
            type(2); p.pointee.has_i = 1; p.pointee.i = Int64(i)
        case .string(let s):
            type(3); p.pointee.has_s = 1; p.pointee.s = binary(s)
        case .tensor(let t):
            type(4); p.pointee.t = try tensor(t, name: "")
        case .graph(let g):
            type(5); p.pointee.g = try graph(g)
        case .floats(let v):
            type(6); (p.pointee.n_floats, p.pointee.floats) = array(v)
        case .ints(let v):
            type(7); (p.pointee.n_ints, p.pointee.ints) = array(v.map { Int64($0) })
        case .strings(let v):
            type(8); (p.pointee.n_strings, p.pointee.strings) = array(v.map { binary($0) })
        case .tensors(let v):
            type(9); (p.pointee.n_tensors, p.pointee.tensors) = array(try v.map { Optional(try tensor($0, name: "")) })
        case .graphs(let v):
            type(10); (p.pointee.n_graphs, p.pointee.graphs) = array(try v.map { Optional(try graph($0)) })
        case .sparseTensor(let s):
            type(11); p.pointee.sparse_tensor = try sparseTensor(s)
        case .sparseTensors(let v):
            type(12); (p.pointee.n_sparse_tensors, p.pointee.sparse_tensors) = array(try v.map { Optional(try sparseTensor($0)) })
        case .type(let t):
            type(13); p.pointee.tp = typeProto(t)
        case .types(let v):
            type(14); (p.pointee.n_type_protos, p.pointee.type_protos) = array(v.map { Optional(typeProto($0)) })
        }
        return p
    }

    func sparseTensor(_ s: SparseTensor) throws -> UnsafeMutablePointer<Onnx__SparseTensorProto> {
        let p = alloc(Onnx__SparseTensorProto.self)
        onnx__sparse_tensor_proto__init(p)
        p.pointee.values = try tensor(s.values, name: "")
        p.pointee.indices = try tensor(s.indices, name: "")
        (p.pointee.n_dims, p.pointee.dims) = array(s.shape.map { Int64($0) })
        return p
    }

    func tensor(_ t: Tensor, name: String) throws -> UnsafeMutablePointer<Onnx__TensorProto> {
        let p = alloc(Onnx__TensorProto.self)
        onnx__tensor_proto__init(p)
        p.pointee.name = optionalString(name)
        (p.pointee.n_dims, p.pointee.dims) = array(t.shape.map { Int64($0) })
        p.pointee.has_data_type = 1
        p.pointee.data_type = t.dtype.rawValue
        if t.dtype == .string {
            (p.pointee.n_string_data, p.pointee.string_data) = array(t.strings.map { binary($0) })
            return p
        }
        p.pointee.has_raw_data = 1
        if let bits = t.dtype.packedBits {
            // 8/bits elements per byte, the first in the lowest bits (ONNX's int4 and int2 layouts).
            let count = t.count, perByte = 8 / bits, mask = UInt8((1 << bits) - 1)
            let byteCount = (count + perByte - 1) / perByte
            let packed = alloc(UInt8.self, count: byteCount)
            try t.withUnsafeBufferPointer(as: UInt8.self) { src in
                for i in 0..<count { packed[i / perByte] |= (src[i] & mask) << UInt8((i % perByte) * bits) }
            }
            p.pointee.raw_data = ProtobufCBinaryData(len: byteCount, data: packed)
        } else {
            borrowed.append(t.storage)
            let bytes = t.rawBytes
            p.pointee.raw_data = ProtobufCBinaryData(len: bytes.count, data: bytes.count > 0 ? UnsafeMutableRawPointer(mutating: bytes.baseAddress!).assumingMemoryBound(to: UInt8.self) : nil)
        }
        return p
    }

    func valueInfo(_ v: ValueInfo) -> UnsafeMutablePointer<Onnx__ValueInfoProto> {
        let p = alloc(Onnx__ValueInfoProto.self)
        onnx__value_info_proto__init(p)
        p.pointee.name = cString(v.name)
        p.pointee.doc_string = optionalString(v.docString)
        p.pointee.type = v.type.map { typeProto($0) }
        return p
    }

    private func shape(_ dims: [Dim]?) -> UnsafeMutablePointer<Onnx__TensorShapeProto>? {
        guard let dims else { return nil }
        let p = alloc(Onnx__TensorShapeProto.self)
        onnx__tensor_shape_proto__init(p)
        (p.pointee.n_dim, p.pointee.dim) = array(dims.map { dim -> UnsafeMutablePointer<Onnx__TensorShapeProto__Dimension>? in
            let d = alloc(Onnx__TensorShapeProto__Dimension.self)
            onnx__tensor_shape_proto__dimension__init(d)
            switch dim {
            case .value(let v):
                d.pointee.value_case = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE
                d.pointee.dim_value = Int64(v)
            case .symbol(let s):
                d.pointee.value_case = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_PARAM
                d.pointee.dim_param = cString(s)
            case .unknown: break
            }
            return d
        })
        return p
    }

    func typeProto(_ t: ValueType) -> UnsafeMutablePointer<Onnx__TypeProto> {
        let p = alloc(Onnx__TypeProto.self)
        onnx__type_proto__init(p)
        switch t {
        case .tensor(let dtype, let dims):
            let tt = alloc(Onnx__TypeProto__Tensor.self)
            onnx__type_proto__tensor__init(tt)
            if let dtype { tt.pointee.has_elem_type = 1; tt.pointee.elem_type = dtype.rawValue }
            tt.pointee.shape = shape(dims)
            p.pointee.value_case = ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE
            p.pointee.tensor_type = tt
        case .sparseTensor(let dtype, let dims):
            let tt = alloc(Onnx__TypeProto__SparseTensor.self)
            onnx__type_proto__sparse_tensor__init(tt)
            if let dtype { tt.pointee.has_elem_type = 1; tt.pointee.elem_type = dtype.rawValue }
            tt.pointee.shape = shape(dims)
            p.pointee.value_case = ONNX__TYPE_PROTO__VALUE_SPARSE_TENSOR_TYPE
            p.pointee.sparse_tensor_type = tt
        case .sequence(let element):
            let s = alloc(Onnx__TypeProto__Sequence.self)
            onnx__type_proto__sequence__init(s)
            s.pointee.elem_type = element.map { typeProto($0) }
            p.pointee.value_case = ONNX__TYPE_PROTO__VALUE_SEQUENCE_TYPE
            p.pointee.sequence_type = s
        case .optional(let element):
            let o = alloc(Onnx__TypeProto__Optional.self)
            onnx__type_proto__optional__init(o)
            o.pointee.elem_type = element.map { typeProto($0) }
            p.pointee.value_case = ONNX__TYPE_PROTO__VALUE_OPTIONAL_TYPE
            p.pointee.optional_type = o
        case .map(let key, let value):
            let m = alloc(Onnx__TypeProto__Map.self)
            onnx__type_proto__map__init(m)
            if let key { m.pointee.has_key_type = 1; m.pointee.key_type = key.rawValue }
            m.pointee.value_type = value.map { typeProto($0) }
            p.pointee.value_case = ONNX__TYPE_PROTO__VALUE_MAP_TYPE
            p.pointee.map_type = m
        }
        return p
    }
}
