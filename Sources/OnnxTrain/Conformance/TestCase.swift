import Foundation

/// One case of the ONNX backend test layout: `model.onnx` plus `test_data_set_*/input_N.pb`
/// and `output_N.pb` (TensorProto, SequenceProto or OptionalProto, by the declared type).
public struct BackendTestCase {
    public struct DataSet {
        public var name: String
        /// Inputs in the order of the graph's feed inputs.
        public var inputs: [Value]
        /// Expected outputs in the order of the graph's outputs.
        public var outputs: [Value]
    }

    public var name: String
    public var directory: String
    public var model: Model
    public var dataSets: [DataSet]

    /// Loads the case in `directory`.
    public init(directory: String) throws {
        self.directory = directory
        name = (directory as NSString).lastPathComponent
        let model = try Model(contentsOf: directory + "/model.onnx")
        self.model = model
        let fm = FileManager.default
        let sets = ((try? fm.contentsOfDirectory(atPath: directory)) ?? []).filter { $0.hasPrefix("test_data_set_") }.sorted()
        let feedInputs = model.graph.feedInputs
        dataSets = try sets.map { set in
            let dir = directory + "/" + set
            let files = (try? fm.contentsOfDirectory(atPath: dir)) ?? []
            func load(_ prefix: String, _ infos: [ValueInfo]) throws -> [Value] {
                let count = files.filter { $0.hasPrefix(prefix) && $0.hasSuffix(".pb") }.count
                return try (0..<count).map { i in
                    let path = "\(dir)/\(prefix)\(i).pb"
                    let kind = i < infos.count ? BackendTestCase.kind(of: infos[i].type) : .tensor
                    return try BackendTestCase.readValue(path, kind: kind)
                }
            }
            return DataSet(name: set, inputs: try load("input_", feedInputs), outputs: try load("output_", model.graph.outputs))
        }
    }

    static func kind(of type: ValueType?) -> SerializedValueKind {
        switch type {
        case .sequence?: return .sequence
        case .optional?: return .optional
        default: return .tensor
        }
    }

    /// Reads one serialized value file.
    public static func readValue(_ path: String, kind: SerializedValueKind) throws -> Value {
        guard let data = FileManager.default.contents(atPath: path) else { throw OnnxTrainError.io("\(path): cannot read") }
        do {
            return try data.withUnsafeBytes { try Value(protobuf: $0, kind: kind) }
        } catch let error as OnnxTrainError {
            throw error.prefixed(path)
        }
    }

    /// The case directories (`test_*` with a model.onnx) below `root`, sorted by name.
    public static func discover(in root: String) throws -> [String] {
        let fm = FileManager.default
        var isDir: ObjCBool = false
        guard fm.fileExists(atPath: root, isDirectory: &isDir), isDir.boolValue else {
            throw OnnxTrainError.io("\(root): no such directory")
        }
        let entries = try fm.contentsOfDirectory(atPath: root).sorted()
        return entries.filter { fm.fileExists(atPath: "\(root)/\($0)/model.onnx") }.map { "\(root)/\($0)" }
    }
}

/// Runs a model on named feeds and returns every graph output in graph order. The one execution
/// path shared by `onnx-train infer` and the conformance runner.
public func runModel(_ model: Model, feeds: [String: Value], options: SessionOptions = SessionOptions()) throws -> [(name: String, value: Value)] {
    let session = try InferenceSession(model: model, options: options)
    let names = model.graph.outputs.map(\.name)
    let results = try session.run(feeds, fetches: names)
    return names.map { ($0, results[$0]!) }
}
