import ArgumentParser
import Foundation
import OnnxTrain
import OnnxTrainMPI

/// `mpirun -np N onnx-train run ...`: every process runs the command and they train data-parallel
/// (the library's `Trainer` with an `MPIGroup`). Rank 0 alone prints and writes. A failure every
/// process knows about (the Trainer agrees on failures at each step, and the setup is agreed on
/// here) is reported once by rank 0 and every process exits with its code; a failure one process
/// meets alone is reported by that process, which then aborts the job (MPI_Abort) rather than
/// leave the others waiting. mpirun ends the job when a process dies (a crash, kill -9); the
/// survivors' SIGTERM makes rank 0 say so in one line.
enum ParallelJob {
    /// The MPI job this process belongs to, when mpirun started it.
    static func join() throws -> MPIGroup? {
        guard MPIGroup.isLaunched else { return nil }
        // The processes of one machine share its cores: each runs cores / processes threads,
        // unless told otherwise (read once, by the first kernel that runs).
        let env = ProcessInfo.processInfo.environment
        if env["OMP_NUM_THREADS"] == nil && env["OPENBLAS_NUM_THREADS"] == nil,
           let local = env["OMPI_COMM_WORLD_LOCAL_SIZE"].flatMap(Int.init), local > 1 {
            setenv("OMP_NUM_THREADS", String(max(1, ProcessInfo.processInfo.activeProcessorCount / local)), 1)
        }
        do {
            let group = try MPIGroup()
            installSignalHandlers(isMain: group.isMainProcess)
            return group
        } catch {
            CLIFailure.report("cannot join the MPI job: \(error)")
            throw ExitCode(3)
        }
    }

    /// Runs `body` on every process and agrees on its failure (see `DataParallel.together`).
    static func together<T>(_ group: MPIGroup?, _ body: () throws -> T) throws -> T {
        guard let group else { return try body() }
        return try group.together(body)
    }

    /// Runs the command's body; reports a failure as described above.
    static func run(_ group: MPIGroup?, _ body: () throws -> Void) throws {
        guard let group else { return try CLIFailure.run(body) }
        do {
            try body()
        } catch let exit as ExitCode {
            leave(group)
            throw exit
        } catch {
            let (message, code) = describe(error)
            if group.agreedFailure != nil {
                if group.isMainProcess { CLIFailure.report(message) }
                leave(group)
                throw ExitCode(code)
            }
            CLIFailure.report("rank \(group.rank) of \(group.size): \(message); ending the job")
            group.abort(code: code)
        }
        leave(group)
    }

    /// Every process waits for the others (rank 0 may still be saving the checkpoint of a failed
    /// step: mpirun stops the job as soon as one process exits with an error), then leaves; a
    /// SIGTERM from then on (mpirun ending the job) needs no message.
    private static func leave(_ group: MPIGroup) {
        try? group.barrier()
        signalMessage = nil
        group.finish()
    }

    /// The message and exit code `CLIFailure` gives an error.
    static func describe(_ error: Error) -> (String, Int32) {
        switch error {
        case let e as OnnxTrainError: return (e.message, CLIFailure.code(for: e.kind))
        case let e as KernelError: return (e.message, 7)
        default: return ("\(error)", 1)
        }
    }

    /// mpirun sends SIGTERM to the processes left when one dies or the job is interrupted: they
    /// exit at once (a collective would never return), rank 0 with one line saying why.
    private static func installSignalHandlers(isMain: Bool) {
        let text = "onnx-train: error: the MPI job is ending (mpirun stops every process when one fails, dies or is interrupted; "
            + "its message names the process); --resume OUT continues from the last checkpoint\n"
        if isMain {
            let bytes = Array(text.utf8)
            signalMessage = UnsafeMutableBufferPointer<UInt8>.allocate(capacity: bytes.count)
            _ = signalMessage!.initialize(from: bytes)
        }
        for sig in [SIGTERM, SIGINT] {
            signal(sig) { sig in
                if let m = signalMessage { _ = write(STDERR_FILENO, m.baseAddress, m.count) }
                _exit(128 + sig)
            }
        }
    }
}

/// What rank 0's signal handler writes (prepared before any signal, as a handler may not allocate).
nonisolated(unsafe) private var signalMessage: UnsafeMutableBufferPointer<UInt8>?
