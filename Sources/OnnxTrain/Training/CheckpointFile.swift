#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// onnxruntime's training checkpoint file (`ort_training_checkpoint.fbs`, version 2): a
/// FlatBuffer with identifier "ODTC" whose root `Checkpoint` table holds
///
///     Checkpoint      0 version:int32, 1 module_state, 2 optimizer_groups:[OptimizerGroup], 3 property_bag
///     ModuleState     0 requires_grad_params:[Tensor], 1 frozen_params:[Tensor], 2 is_nominal_state:bool,
///                     3 has_external_data:bool
///     OptimizerGroup  0 group_name, 1 step:int64, 2 initial_learning_rate:float,
///                     3 optimizer_states:[ParameterOptimizerState{0 param_name, 1 momentums:[Tensor]}]
///     PropertyBag     0 ints:[{name, value:int64}], 1 floats:[{name, value:float}], 2 strings:[{name, value}]
///     Tensor          0 name, 1 doc_string, 2 dims:[int64], 3 data_type:int32, 4 raw_data:[uint8],
///                     5 string_data:[string], 6 external_data_offset:int64 = -1
///
/// With external data every tensor's bytes live in `<path>.data` at `external_data_offset`.
enum CheckpointFile {
    static let identifier = "ODTC"
    static let version: Int32 = 2
    /// Total tensor bytes above which onnxruntime moves the data to the `.data` sidecar
    /// (1800 MiB, its threshold; a FlatBuffer cannot exceed 2 GiB). Tests lower it.
    nonisolated(unsafe) static var externalDataThreshold = 1800 << 20

    // MARK: Reading

    static func load(path: String) throws -> CheckpointState {
        let bytes = try readFile(path)
        do {
            return try decode(bytes, externalData: { try readFile(path + ".data") })
        } catch let error as FlatBufferError {
            throw OnnxTrainError.invalidModel("\(path): not a valid onnxruntime checkpoint (truncated or corrupt?): \(error.message)")
        } catch let error as OnnxTrainError {
            throw error.prefixed(path)
        }
    }

    static func decode(_ bytes: [UInt8], externalData: () throws -> [UInt8]) throws -> CheckpointState {
        let reader = FlatBufferReader(bytes)
        let root = try reader.root(identifier: identifier)
        let version = try root.scalar(0, default: Int32(0))
        guard version >= 1 && version <= CheckpointFile.version else {
            throw OnnxTrainError.invalidModel("checkpoint version \(version) is not supported (this reader knows 1 and 2)")
        }
        var parameters: [Parameter] = []
        var isNominal = false
        if let module = try root.table(1, "module_state") {
            isNominal = try module.bool(2)
            let external = try module.bool(3) ? try externalData() : nil
            for (list, trainable) in [(0, true), (1, false)] {
                for t in try module.tables(list, trainable ? "requires_grad_params" : "frozen_params") ?? [] {
                    let (name, tensor) = try decodeTensor(t, external: external, nominal: isNominal)
                    parameters.append(Parameter(name: name, data: tensor, requiresGrad: trainable))
                }
            }
        }
        var groups: [String: OptimizerGroupState] = [:]
        for g in try root.tables(2, "optimizer_groups") ?? [] {
            let name = try g.string(0, "group_name") ?? ""
            var group = OptimizerGroupState(step: try g.scalar(1, default: Int64(0)),
                                            initialLearningRate: try g.float(2, default: 0))
            for s in try g.tables(3, "optimizer_states") ?? [] {
                guard let param = try s.string(0, "param_name") else {
                    throw FlatBufferError("an optimizer state of group '\(name)' has no parameter name")
                }
                var states: [String: Tensor] = [:]
                for m in try s.tables(1, "momentums") ?? [] {
                    let (key, tensor) = try decodeTensor(m, external: nil, nominal: false)
                    states[key] = tensor
                }
                group.parameterStates[param] = states
            }
            groups[name] = group
        }
        var properties: [String: CheckpointProperty] = [:]
        if let bag = try root.table(3, "property_bag") {
            for p in try bag.tables(0, "ints") ?? [] {
                properties[try p.string(0, "name") ?? ""] = .int(try p.scalar(1, default: Int64(0)))
            }
            for p in try bag.tables(1, "floats") ?? [] {
                properties[try p.string(0, "name") ?? ""] = .float(try p.float(1, default: 0))
            }
            for p in try bag.tables(2, "strings") ?? [] {
                properties[try p.string(0, "name") ?? ""] = .string(try p.string(1, "value") ?? "")
            }
        }
        return try CheckpointState(parameters: parameters, optimizerGroups: groups, properties: properties, isNominal: isNominal)
    }

    /// A `Tensor` table as (name, tensor); nominal tensors get shape [0] until a module sizes them.
    static func decodeTensor(_ t: FlatBufferTable, external: [UInt8]?, nominal: Bool) throws -> (String, Tensor) {
        let name = try t.string(0, "name") ?? ""
        let code = try t.scalar(3, default: Int32(0))
        guard let dtype = DType(rawValue: code) else {
            throw OnnxTrainError.invalidModel("tensor '\(name)' has unknown data type \(code)")
        }
        guard dtype != .string, !dtype.isPacked4Bit else {
            throw OnnxTrainError.unsupported("tensor '\(name)' is tensor(\(dtype)); checkpoint tensors of this type are not supported")
        }
        if nominal { return (name, Tensor(zeros: dtype, shape: [0])) }
        let dims = try t.int64s(2, "dims") ?? []
        var shape: [Int] = []
        var count = 1
        for d in dims {
            guard d >= 0, d < Int64(Int32.max) else { throw OnnxTrainError.invalidModel("tensor '\(name)' has dimension \(d)") }
            let (product, overflow) = count.multipliedReportingOverflow(by: Int(d))
            guard !overflow else { throw OnnxTrainError.invalidModel("tensor '\(name)' shape \(dims) is too large") }
            shape.append(Int(d))
            count = product
        }
        let (byteCount, overflow) = count.multipliedReportingOverflow(by: dtype.byteSize)
        guard !overflow else { throw OnnxTrainError.invalidModel("tensor '\(name)' shape \(dims) is too large") }
        let source: ArraySlice<UInt8>
        let offset = try t.scalar(6, default: Int64(-1))
        if offset >= 0 {
            guard let external else {
                throw OnnxTrainError.invalidModel("tensor '\(name)' refers to external data, but the module state has none")
            }
            guard offset <= Int64(external.count), byteCount <= external.count - Int(offset) else {
                throw OnnxTrainError.invalidModel("tensor '\(name)' needs \(byteCount) bytes at offset \(offset) of the \(external.count)-byte .data file")
            }
            source = external[Int(offset)..<(Int(offset) + byteCount)]
        } else {
            let range = try t.bytes(4, "raw_data") ?? 0..<0
            guard range.count == byteCount else {
                throw OnnxTrainError.invalidModel("tensor '\(name)' of shape \(shape) (\(dtype)) needs \(byteCount) bytes of data, the file holds \(range.count)")
            }
            source = t.reader.bytes[range]
        }
        let tensor = Tensor(zeros: dtype, shape: shape)
        if byteCount > 0 {
            source.withUnsafeBytes { tensor.storage.bytes.copyMemory(from: $0.baseAddress!, byteCount: byteCount) }
        }
        if dtype == .bool {
            // Only 0 and 1 are valid Bool bytes in Swift.
            try tensor.withSharedMutableBufferPointer(as: UInt8.self) { p in for i in p.indices where p[i] > 1 { p[i] = 1 } }
        }
        return (name, tensor)
    }

    // MARK: Writing

    static func save(_ state: CheckpointState, path: String, includeOptimizerState: Bool) throws {
        let totalBytes = state.parameters.reduce(0) { $0 + $1.data.byteCount }
        let external = totalBytes > externalDataThreshold
        let (buffer, sidecar) = encode(state, includeOptimizerState: includeOptimizerState, externalData: external)
        if let sidecar { try writeAtomically(sidecar, to: path + ".data") }
        try writeAtomically(buffer, to: path)
        if sidecar == nil { unlink(path + ".data") }  // a stale sidecar would describe another checkpoint
    }

    /// The checkpoint bytes, plus the `.data` sidecar bytes when `externalData`.
    static func encode(_ state: CheckpointState, includeOptimizerState: Bool, externalData: Bool) -> ([UInt8], [UInt8]?) {
        typealias B = FlatBufferBuilder
        var sidecar: [UInt8]? = externalData ? [] : nil

        func tensorNode(_ name: String, _ tensor: Tensor, toSidecar: Bool) -> B.Node {
            var fields: [B.Field?] = [.ref(.string(name)), nil, nil, .int32(tensor.dtype.rawValue), nil, nil, nil]
            if state.isNominal { return .table(fields) }
            fields[2] = .ref(.int64s(tensor.shape.map { Int64($0) }))
            let data = Array(tensor.rawBytes)
            if toSidecar, var file = sidecar {
                // Offsets aligned to 8 for 8-byte types, else 4, as onnxruntime writes them.
                let alignment = tensor.dtype.byteSize >= 8 ? 8 : 4
                while file.count % alignment != 0 { file.append(0) }
                fields[6] = .int64(Int64(file.count))
                file.append(contentsOf: data)
                sidecar = file
            } else {
                fields[4] = .ref(.bytes(data, alignment: 16))
            }
            return .table(fields)
        }

        let sorted = state.parameters.sorted { $0.name < $1.name }
        let trainable = sorted.filter(\.requiresGrad).map { tensorNode($0.name, $0.data, toSidecar: true) }
        let frozen = sorted.filter { !$0.requiresGrad }.map { tensorNode($0.name, $0.data, toSidecar: true) }
        let module: B.Node = .table([.ref(.tables(trainable)), .ref(.tables(frozen)),
                                     state.isNominal ? .bool(true) : nil, externalData ? .bool(true) : nil])

        var groups: [B.Node] = []
        if includeOptimizerState {
            for (name, group) in state.optimizerGroups.sorted(by: { $0.key < $1.key }) {
                let states: [B.Node] = group.parameterStates.sorted { $0.key < $1.key }.map { param, moments in
                    let tensors = moments.sorted { $0.key < $1.key }.map { tensorNode($0.key, $0.value, toSidecar: false) }
                    return .table([.ref(.string(param)), .ref(.tables(tensors))])
                }
                groups.append(.table([.ref(.string(name)), group.step != 0 ? .int64(group.step) : nil,
                                      group.initialLearningRate != 0 ? .float(group.initialLearningRate) : nil,
                                      .ref(.tables(states))]))
            }
        }

        var ints: [B.Node] = [], floats: [B.Node] = [], strings: [B.Node] = []
        for (name, value) in state.properties.sorted(by: { $0.key < $1.key }) {
            switch value {
            case .int(let v): ints.append(.table([.ref(.string(name)), v != 0 ? .int64(v) : nil]))
            case .float(let v): floats.append(.table([.ref(.string(name)), v != 0 ? .float(v) : nil]))
            case .string(let v): strings.append(.table([.ref(.string(name)), .ref(.string(v))]))
            }
        }
        let bag: B.Node = .table([.ref(.tables(ints)), .ref(.tables(floats)), .ref(.tables(strings))])
        let root: B.Node = .table([.int32(version), .ref(module), .ref(.tables(groups)), .ref(bag)])
        return (B.build(root: root, identifier: identifier), sidecar)
    }

    // MARK: Files


    static func readFile(_ path: String) throws -> [UInt8] {
        try RegularFile.readBytes(path)
    }

    /// Writes `<path>.tmp-<pid>`, flushes it to disk, renames it over `path`, and flushes the
    /// directory, so a crash leaves either the old file or the new one, never a mix.
    static func writeAtomically(_ bytes: [UInt8], to path: String) throws {
        let temporary = "\(path).tmp-\(getpid())"
        let fd = open(temporary, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        guard fd >= 0 else { throw OnnxTrainError.io("cannot create \(temporary): \(String(cString: strerror(errno)))") }
        var done = 0
        var failure: String?
        while done < bytes.count {
            let n = bytes.withUnsafeBytes { write(fd, $0.baseAddress! + done, bytes.count - done) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { failure = String(cString: strerror(errno)); break }
            done += n
        }
        if failure == nil && fsync(fd) != 0 { failure = String(cString: strerror(errno)) }
        close(fd)
        if failure == nil && rename(temporary, path) != 0 { failure = String(cString: strerror(errno)) }
        if let failure {
            unlink(temporary)
            throw OnnxTrainError.io("cannot write \(path): \(failure)")
        }
        let slash = path.lastIndex(of: "/")
        let directory = slash.map { $0 == path.startIndex ? "/" : String(path[..<$0]) } ?? "."
        let dfd = open(directory, O_RDONLY)
        if dfd >= 0 { _ = fsync(dfd); close(dfd) }
    }
}
