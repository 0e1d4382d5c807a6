import ArgumentParser
import Foundation
import OnnxTrain

/// How every subcommand reports a failure: one line on stderr and a stable exit code per kind.
enum CLIFailure {
    /// The exit codes, documented in every command's `--help`.
    static let exitCodeHelp = """
        Exit codes: 0 success, 1 other error, 3 file could not be read or written, 4 invalid model \
        or data file, 5 invalid input or feeds, 6 operator or type not supported (yet), 7 kernel \
        failure while running, 8 training stopped, 64 bad arguments, 130 interrupted (Ctrl-C), 143 \
        stopped by SIGTERM (a run saves a checkpoint to resume from first on either).
        """

    /// The exit code for an error kind.
    static func code(for kind: OnnxTrainError.Kind) -> Int32 {
        switch kind {
        case .io: return 3
        case .invalidModel, .invalidGraph: return 4
        case .invalidInput: return 5
        case .unsupported: return 6
        case .kernel: return 7
        case .training: return 8
        }
    }

    /// Runs `body`; any error becomes `onnx-train: error: <message>` on stderr and an `ExitCode`.
    static func run(_ body: () throws -> Void) throws {
        do {
            try body()
        } catch let error as ExitCode {
            throw error
        } catch let error as OnnxTrainError {
            report(error.message)
            throw ExitCode(code(for: error.kind))
        } catch let error as KernelError {
            report(error.message)
            throw ExitCode(7)
        } catch let error as ValidationError {
            throw error
        } catch {
            report("\(error)")
            throw ExitCode(1)
        }
    }

    /// Writes one warning line on stderr (the command goes on).
    static func warn(_ message: String) {
        let line = message.split(whereSeparator: \.isNewline).joined(separator: " ")
        FileHandle.standardError.write(Data("onnx-train: warning: \(line)\n".utf8))
    }

    /// Writes one error line (newlines folded so the message stays one line).
    static func report(_ message: String) {
        let line = message.split(whereSeparator: \.isNewline).joined(separator: " ")
        FileHandle.standardError.write(Data("onnx-train: error: \(line)\n".utf8))
    }
}
