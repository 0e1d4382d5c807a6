import Foundation

/// Training data from a file, as named arrays: `.npz`, `.safetensors`, a folder of TensorProto
/// `.pb` files (each named by its TensorProto name, else by the file name), or a CSV table.
public enum DataSource {
    /// How to read a CSV table: feature columns (nil = every column but the label) and the label column.
    public struct CSVColumns {
        public var features: [String]?
        public var label: String?
        /// The label column's element type: int64 (class indices) or float32 (regression
        /// targets); nil decides from the text (int64 only when every cell is written as an integer).
        public var labelType: DType?
        public init(features: [String]? = nil, label: String? = nil, labelType: DType? = nil) {
            self.features = features
            self.label = label
            self.labelType = labelType
        }
    }

    /// Loads `path` and names its arrays after the graph inputs `names`.
    /// - Parameters:
    ///   - map: graph input -> array name in the file (`--map input=x,labels=y`).
    ///   - csv: for `.csv` files; the features become `names[0]`, the label `names[1]`.
    public static func load(_ path: String, names: [String], map: [String: String] = [:], csv: CSVColumns = CSVColumns()) throws -> [String: Tensor] {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
            throw OnnxTrainError.io("\(path): no such file or folder")
        }
        var arrays: [String: Tensor]
        let lower = path.lowercased()
        if isDirectory.boolValue {
            let entries = try TensorProtoFiles.readFolder(path)
            guard !entries.isEmpty else { throw OnnxTrainError.invalidInput("\(path): the folder holds no .pb files") }
            arrays = [:]
            for e in entries {
                let stem = URL(fileURLWithPath: e.file).deletingPathExtension().lastPathComponent
                arrays[e.name.isEmpty ? stem : e.name] = e.tensor
            }
        } else if lower.hasSuffix(".csv") {
            let table = try CSVData.read(path, columns: csv)
            guard names.count >= 1 else { throw OnnxTrainError.invalidInput("\(path): the graph takes no inputs") }
            arrays = [names[0]: table.features]
            if let labels = table.labels {
                guard names.count >= 2 else { throw OnnxTrainError.invalidInput("\(path): the graph takes one input (\(names[0])); there is no input for the label column") }
                arrays[names[1]] = labels
            }
            return arrays
        } else if lower.hasSuffix(".safetensors") {
            arrays = try SafeTensors.read(contentsOf: path).dictionary
        } else {
            arrays = try Npz.readDictionary(contentsOf: path)
        }
        for (input, source) in map {
            guard let t = arrays[source] else {
                throw OnnxTrainError.invalidInput("\(path): --map \(input)=\(source): the data has no array '\(source)' (it has: \(arrays.keys.sorted().joined(separator: ", ")))")
            }
            arrays[input] = t
        }
        return arrays
    }

    /// Parses `input=x,labels=y`.
    public static func parseMap(_ text: String) throws -> [String: String] {
        var map: [String: String] = [:]
        for pair in text.split(separator: ",") {
            let parts = pair.split(separator: "=", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespaces) }
            guard parts.count == 2, !parts[0].isEmpty, !parts[1].isEmpty else {
                throw OnnxTrainError.invalidInput("--map takes graph_input=array pairs separated by commas (like input=x,labels=y), got '\(pair)'")
            }
            map[parts[0]] = parts[1]
        }
        return map
    }

    /// Examples in `arrays` (rows of `names[0]`), checking every array has a whole number of rows per example.
    static func exampleCount(_ arrays: [String: Tensor], names: [String]) throws -> Int {
        guard let first = names.first, let t = arrays[first], t.rank >= 1 else { return 0 }
        return t.shape[0]
    }

    /// Rows [from, to) of examples from every named array (arrays with k rows per example keep k rows each).
    static func slice(_ arrays: [String: Tensor], names: [String], from: Int, to: Int, total: Int) throws -> [String: Tensor] {
        var out = arrays
        for name in names {
            guard let t = arrays[name], t.rank >= 1 else { continue }
            guard total > 0, t.shape[0] % total == 0 else {
                throw OnnxTrainError.invalidInput("array '\(name)' has \(t.shape[0]) rows, not a whole number per example of '\(names[0])' (\(total) rows)")
            }
            let per = t.shape[0] / total
            out[name] = Batches.rows(of: t, from: from * per, count: (to - from) * per)
        }
        return out
    }

    /// Splits off the last `fraction` of the examples as an eval set.
    public static func split(_ arrays: [String: Tensor], names: [String], evalFraction fraction: Double, label: String) throws -> (train: [String: Tensor], eval: [String: Tensor]) {
        guard fraction > 0, fraction < 1 else { throw OnnxTrainError.invalidInput("--eval-split must be between 0 and 1 (exclusive), got \(fraction)") }
        for name in names where arrays[name] == nil {
            throw OnnxTrainError.invalidInput("\(label): the data has no array '\(name)' (the graph expects: \(names.joined(separator: ", ")); the data has: \(arrays.keys.sorted().joined(separator: ", ")))")
        }
        let n = try exampleCount(arrays, names: names)
        let evalCount = Int((Double(n) * fraction).rounded())
        guard evalCount >= 1 else {
            throw OnnxTrainError.invalidInput("\(label): --eval-split \(fraction) of \(n) examples leaves no eval examples; use a larger fraction")
        }
        guard evalCount < n else {
            throw OnnxTrainError.invalidInput("\(label): --eval-split \(fraction) of \(n) examples leaves no training examples; use a smaller fraction")
        }
        return (try slice(arrays, names: names, from: 0, to: n - evalCount, total: n),
                try slice(arrays, names: names, from: n - evalCount, to: n, total: n))
    }

    /// Drops the examples past the last whole batch (`--drop-last`).
    public static func dropLast(_ arrays: [String: Tensor], names: [String], batchSize: Int, label: String) throws -> [String: Tensor] {
        let n = try exampleCount(arrays, names: names)
        let kept = n / max(batchSize, 1) * batchSize
        guard kept > 0 else {
            throw OnnxTrainError.invalidInput("\(label): \(n) examples do not fill one batch of \(batchSize)")
        }
        return kept == n ? arrays : try slice(arrays, names: names, from: 0, to: kept, total: n)
    }

    /// The largest batch size <= `preferred` that divides `n` (eval batches must be equal so
    /// the mean of their mean losses is the mean over all examples).
    public static func evalBatchSize(examples n: Int, preferred: Int) -> Int {
        guard n > 0 else { return max(preferred, 1) }
        var b = min(max(preferred, 1), n)
        while n % b != 0 { b -= 1 }
        return b
    }
}
