import Foundation

/// A numeric CSV table with a header row: feature columns become one float32 [rows, features]
/// array; the label column becomes int64 [rows] when every value is written as an integer (class
/// indices: `3`, `-1`), else float32 [rows] (regression targets: `50.0`, `1e3`), unless
/// `CSVColumns.labelType` says which.
public enum CSVData {
    public struct Table {
        public var features: Tensor
        public var labels: Tensor?
        public var featureNames: [String]
    }

    public static func read(_ path: String, columns: DataSource.CSVColumns) throws -> Table {
        let text = String(decoding: try DataFile.read(path), as: UTF8.self)
        return try parse(text, columns: columns, label: path)
    }

    /// Parses CSV text (comma-separated, optional double quotes around a cell, no embedded commas
    /// or newlines inside quotes).
    public static func parse(_ text: String, columns: DataSource.CSVColumns, label: String) throws -> Table {
        var lines = text.split(omittingEmptySubsequences: true, whereSeparator: { $0 == "\n" || $0 == "\r\n" || $0 == "\r" })
        guard !lines.isEmpty else { throw OnnxTrainError.invalidInput("\(label): the CSV file is empty (expected a header row, then one row per example)") }
        func cells(_ line: Substring) -> [String] {
            line.split(separator: ",", omittingEmptySubsequences: false).map {
                $0.trimmingCharacters(in: .whitespaces).trimmingCharacters(in: CharacterSet(charactersIn: "\""))
            }
        }
        let header = cells(lines.removeFirst())
        func column(_ name: String, role: String) throws -> Int {
            guard let i = header.firstIndex(of: name) else {
                throw OnnxTrainError.invalidInput("\(label): no \(role) column '\(name)' (the header has: \(header.joined(separator: ", ")))")
            }
            return i
        }
        let chosen = try columns.features.map { try $0.map { try column($0, role: "feature") } }
        // Without --label, the label is the last column that is not a feature.
        let labelIndex = try columns.label.map { try column($0, role: "label") }
            ?? header.indices.last { !(chosen ?? []).contains($0) && header.count > 1 }
        let featureIndices: [Int]
        if let chosen {
            featureIndices = chosen
        } else {
            featureIndices = header.indices.filter { $0 != labelIndex }
        }
        guard !featureIndices.isEmpty else { throw OnnxTrainError.invalidInput("\(label): no feature columns (give --features col1,col2,...)") }
        guard !lines.isEmpty else { throw OnnxTrainError.invalidInput("\(label): the CSV file has a header but no rows") }
        if let type = columns.labelType, type != .int64 && type != .float32 {
            throw OnnxTrainError.invalidInput("\(label): the label column can be int64 or float32, not \(type)")
        }
        var features = [Float](), labels = [Double]()
        var labelsWrittenAsIntegers = true
        features.reserveCapacity(lines.count * featureIndices.count)
        for (r, line) in lines.enumerated() {
            let row = cells(line)
            guard row.count == header.count else {
                throw OnnxTrainError.invalidInput("\(label): row \(r + 2) has \(row.count) cells, the header \(header.count)")
            }
            for i in featureIndices {
                guard let v = Float(row[i]) else {
                    throw OnnxTrainError.invalidInput("\(label): row \(r + 2), column '\(header[i])': '\(row[i])' is not a number")
                }
                features.append(v)
            }
            if let l = labelIndex {
                guard let v = Double(row[l]) else {
                    throw OnnxTrainError.invalidInput("\(label): row \(r + 2), label column '\(header[l])': '\(row[l])' is not a number")
                }
                labels.append(v)
                if labelsWrittenAsIntegers && !row[l].allSatisfy({ $0.isASCII && ($0.isNumber || $0 == "-" || $0 == "+") }) {
                    labelsWrittenAsIntegers = false
                }
            }
        }
        let featureTensor = Tensor(shape: [lines.count, featureIndices.count], scalars: features)
        var labelTensor: Tensor?
        if labelIndex != nil {
            let asIntegers = columns.labelType.map { $0 == .int64 } ?? labelsWrittenAsIntegers
            if asIntegers {
                if let bad = labels.firstIndex(where: { $0 != $0.rounded() || abs($0) >= 1e15 }) {
                    throw OnnxTrainError.invalidInput("\(label): row \(bad + 2), label '\(labels[bad])' is not a class index (a whole number); read the labels as float32 for regression (--label-type float32)")
                }
                labelTensor = Tensor(shape: [labels.count], scalars: labels.map { Int64($0) })
            } else {
                labelTensor = Tensor(shape: [labels.count], scalars: labels.map { Float($0) })
            }
        }
        return Table(features: featureTensor, labels: labelTensor, featureNames: featureIndices.map { header[$0] })
    }
}
