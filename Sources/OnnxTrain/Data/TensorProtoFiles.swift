import Foundation

/// Folders of serialized ONNX TensorProto files (`input_0.pb`, `output_0.pb`, ... as the ONNX
/// test suite and onnxruntime's tools write them).
public enum TensorProtoFiles {
    /// One tensor read from a `.pb` file: the file, the TensorProto's own name ("" if unset), the tensor.
    public struct Entry {
        public var file: String
        public var name: String
        public var tensor: Tensor
    }

    /// Reads one `.pb` file.
    public static func read(contentsOf path: String) throws -> Entry {
        let data = try DataFile.read(path)
        do {
            let (name, tensor) = try data.withUnsafeBytes { try Tensor.named(protobuf: $0) }
            return Entry(file: path, name: name, tensor: tensor)
        } catch let error as OnnxTrainError {
            throw error.prefixed(path)
        }
    }

    /// Reads every `.pb` file of `folder`, ordered by the number in the name (input_2 before input_10).
    /// In an ONNX test-data folder (`input_N.pb` beside `output_N.pb`) only the inputs are read:
    /// the outputs are what the model is expected to produce. With `feeds`, `output_N.pb` files
    /// are never read (the test-data folder of a model without inputs holds nothing else).
    public static func readFolder(_ folder: String, feeds: Bool = false) throws -> [Entry] {
        let names: [String]
        do {
            names = try FileManager.default.contentsOfDirectory(atPath: folder)
        } catch {
            throw OnnxTrainError.io("\(folder): cannot list the folder")
        }
        var files = names.filter { $0.hasSuffix(".pb") }
        if feeds || files.contains(where: { $0.hasPrefix("input_") }) && files.contains(where: { $0.hasPrefix("output_") }) {
            files = files.filter { !$0.hasPrefix("output_") }
        }
        return try files.sorted(by: naturalOrder).map { try read(contentsOf: folder + "/" + $0) }
    }

    /// Writes `tensor` as a TensorProto named `name` to `path`.
    public static func write(_ tensor: Tensor, name: String, to path: String) throws {
        try DataFile.write(try tensor.protobufData(name: name), to: path)
    }

    /// Writes `tensors` as `<prefix>_0.pb`, `<prefix>_1.pb`, ... into `folder` (created if needed).
    public static func writeFolder(_ tensors: [(name: String, tensor: Tensor)], to folder: String, prefix: String = "output") throws {
        do {
            try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        } catch {
            throw OnnxTrainError.io("\(folder): cannot create the folder")
        }
        for (i, (name, tensor)) in tensors.enumerated() {
            try write(tensor, name: name, to: "\(folder)/\(prefix)_\(i).pb")
        }
    }

    /// `a` before `b` comparing runs of digits as numbers.
    static func naturalOrder(_ a: String, _ b: String) -> Bool {
        func key(_ s: String) -> [(String, Int)] {
            var parts: [(String, Int)] = []
            var text = "", digits = ""
            for c in s {
                if c.isASCII && c.isNumber { digits.append(c) } else {
                    if !digits.isEmpty { parts.append((text, Int(digits) ?? Int.max)); text = ""; digits = "" }
                    text.append(c)
                }
            }
            parts.append((text, digits.isEmpty ? -1 : Int(digits) ?? Int.max))
            return parts
        }
        let ka = key(a), kb = key(b)
        for (x, y) in zip(ka, kb) where x != y { return x < y }
        return ka.count < kb.count
    }
}
