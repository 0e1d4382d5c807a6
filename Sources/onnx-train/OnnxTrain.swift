import ArgumentParser
import OnnxTrain

/// The `onnx-train` command: one subcommand per file in this folder.
@main
struct OnnxTrainCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "onnx-train",
        abstract: "Run and train ONNX models on the CPU.",
        discussion: CLIFailure.exitCodeHelp,
        subcommands: [InspectCommand.self, InferCommand.self, ConformanceCommand.self, RunCommand.self, EvalCommand.self, ExportCommand.self,
                      BenchCommand.self]
    )
}
