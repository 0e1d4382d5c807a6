import ArgumentParser
import Foundation
#if canImport(Glibc)
import Glibc
#endif
import OnnxTrain

/// The `onnx-train` command: one subcommand per file in this folder.
@main
struct OnnxTrainCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "onnx-train",
        abstract: "Run and train ONNX models on the CPU.",
        discussion: CLIFailure.exitCodeHelp,
        version: "onnx-train \(OnnxTrainVersion.current) (onnxruntime-training \(OnnxTrainVersion.onnxRuntimeTraining) semantics)",
        subcommands: [InspectCommand.self, ArtifactsCommand.self, InferCommand.self, ConformanceCommand.self, RunCommand.self, EvalCommand.self, ExportCommand.self,
                      BenchCommand.self]
    )

    /// Checks that the CPU runs the library's vector code before anything else runs, then runs
    /// the subcommand. Argument errors are one `onnx-train: error:` line (exit 64), like every
    /// other failure, instead of the parser's message, help hint and usage.
    static func main() {
        if let message = CPUCheck.unsupportedReason() {
            CLIFailure.report(message)
            Glibc.exit(6)
        }
        // The command runs in a function of its own, so everything it allocated is released
        // before the process exits (valgrind's leak check runs the CLI).
        let code = runCommand()
        if code != 0 { Glibc.exit(code) }
    }

    /// Parses and runs the subcommand; returns the exit code.
    @inline(never)
    static func runCommand() -> Int32 {
        let arguments = joiningNegativeValues(Array(CommandLine.arguments.dropFirst()))
        do {
            var command = try parseAsRoot(arguments)
            try command.run()
            return 0
        } catch {
            return report(error)
        }
    }

    /// Help, version and `ExitCode` go out as the parser writes them; anything else it reports
    /// as one line. (Errors from running a command were already printed by `CLIFailure.run`.)
    static func report(_ error: Error) -> Int32 {
        let code = exitCode(for: error)
        if code == .success || error is ExitCode || error is CleanExit {
            let text = fullMessage(for: error)
            if !text.isEmpty {
                if code == .success { print(text) } else { FileHandle.standardError.write(Data((text + "\n").utf8)) }
            }
            return code.rawValue
        }
        let message = message(for: error).split(whereSeparator: \.isNewline).first.map(String.init) ?? "\(error)"
        CLIFailure.report("\(message.hasPrefix("Error: ") ? String(message.dropFirst(7)) : message) (see --help)")
        return code.rawValue
    }

    /// `--lr -0.5` as `--lr=-0.5`: the parser would take a negative number for an option name.
    static func joiningNegativeValues(_ arguments: [String]) -> [String] {
        var result: [String] = []
        var i = 0
        while i < arguments.count {
            let a = arguments[i]
            if a.hasPrefix("--"), a.count > 2, !a.contains("="), i + 1 < arguments.count, isNegativeNumber(arguments[i + 1]) {
                result.append(a + "=" + arguments[i + 1])
                i += 2
            } else {
                result.append(a)
                i += 1
            }
        }
        return result
    }

    static func isNegativeNumber(_ text: String) -> Bool {
        text.count > 1 && text.hasPrefix("-") && Double(text) != nil
    }
}

/// The Makefile builds the command for x86-64-v3 (AVX2, FMA; SWIFT_CPU_FLAGS defines
/// ONNX_TRAIN_X86_64_V3); on an older CPU such a build would die on an illegal instruction, so it
/// says so first. A build for the default target runs anywhere and checks nothing.
enum CPUCheck {
    static func unsupportedReason() -> String? {
        #if ONNX_TRAIN_X86_64_V3 && arch(x86_64) && os(Linux)
        guard let file = fopen("/proc/cpuinfo", "r") else { return nil }
        defer { fclose(file) }
        var line: UnsafeMutablePointer<CChar>?
        var capacity = 0
        while getline(&line, &capacity, file) > 0 {
            guard let line else { break }
            let text = String(cString: line)
            guard text.hasPrefix("flags") else { continue }
            let flags = Set(text.split(whereSeparator: { $0 == " " || $0 == "\t" || $0 == "\n" }).map(String.init))
            let missing = ["avx", "avx2", "fma", "f16c", "bmi2"].filter { !flags.contains($0) }
            free(line)
            return missing.isEmpty ? nil : "this build of onnx-train needs an x86-64-v3 CPU (AVX2, FMA); this one lacks \(missing.joined(separator: ", "))"
        }
        free(line)
        #endif
        return nil
    }
}
