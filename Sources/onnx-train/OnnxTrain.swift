import ArgumentParser
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
        subcommands: [InspectCommand.self, ArtifactsCommand.self, InferCommand.self, ConformanceCommand.self, RunCommand.self, EvalCommand.self, ExportCommand.self,
                      BenchCommand.self]
    )

    /// Checks that the CPU runs the library's vector code before anything else runs.
    static func main() {
        if let message = CPUCheck.unsupportedReason() {
            fputs("onnx-train: error: \(message)\n", stderr)
            Glibc.exit(6)
        }
        main(nil)
    }
}

/// The library is compiled for x86-64-v3 (AVX2, FMA) on x86-64 (see Package.swift); an older CPU
/// would die on an illegal instruction, so the command says so first.
enum CPUCheck {
    static func unsupportedReason() -> String? {
        #if arch(x86_64) && os(Linux)
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
