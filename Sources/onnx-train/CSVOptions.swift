import ArgumentParser
import OnnxTrain

/// How `run` and `eval` read a CSV table: `--features`, `--label` and `--label-type`.
struct CSVOptions: ParsableArguments {
    @Option(help: "CSV data: the feature columns, comma-separated (default: every column but the label).")
    var features: String?

    @Option(help: "CSV data: the label column (default: the last column that is not a feature).")
    var label: String?

    @Option(name: .customLong("label-type"),
            help: "CSV data: read the label column as int64 (class indices) or float32 (regression targets); by default int64 only when every label is written as a whole number without a decimal point.")
    var labelType: LabelType?

    enum LabelType: String, ExpressibleByArgument, CaseIterable {
        case int64, float32
        var dtype: DType { self == .int64 ? .int64 : .float32 }
    }

    var columns: DataSource.CSVColumns {
        DataSource.CSVColumns(features: features.map { $0.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) } },
                              label: label, labelType: labelType?.dtype)
    }
}
