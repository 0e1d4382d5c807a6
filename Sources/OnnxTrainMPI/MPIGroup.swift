import CMPI
import Foundation
import OnnxTrain

/// The processes of an MPI job (MPI_COMM_WORLD) as a `DataParallel` group: collectives are
/// MPI_Bcast and MPI_Allreduce. Started by `mpirun -np N`; one per process.
///
///     let group = try MPIGroup.joinIfLaunched()            // nil when not started by mpirun
///     let trainer = try Trainer(..., dataParallel: group)
///     ...
///     group?.finish()
///
/// MPI errors come back as thrown `OnnxTrainError`s (MPI_ERRORS_RETURN) instead of Open MPI's
/// abort, so the caller reports one line; `abort(code:)` then ends every process of the job.
public final class MPIGroup: DataParallel {
    public let rank: Int
    public let size: Int
    /// The failure the whole group agreed on (`agree`), if any: every process knows it, so the
    /// job can end with an ordinary exit on every process instead of an abort.
    public private(set) var agreedFailure: DataParallelFailure?
    private var finished = false

    /// Whether an MPI launcher (Open MPI's mpirun, or a PMI/PMIx one such as srun) started this
    /// process: its environment names the job's size.
    public static var isLaunched: Bool {
        let env = ProcessInfo.processInfo.environment
        return ["OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_RANK", "PMI_SIZE"].contains { env[$0] != nil }
    }

    /// Joins the MPI job when an MPI launcher started this process; nil otherwise (MPI is not
    /// initialised then: a process started alone trains alone).
    public static func joinIfLaunched() throws -> MPIGroup? {
        isLaunched ? try MPIGroup() : nil
    }

    /// Initialises MPI (once per process) and joins MPI_COMM_WORLD.
    public init() throws {
        var initialised: Int32 = 0
        MPI_Initialized(&initialised)
        if initialised == 0 {
            var provided: Int32 = 0
            let rc = MPI_Init_thread(nil, nil, cmpi_thread_funneled(), &provided)
            guard rc == cmpi_success() else { throw OnnxTrainError.io("MPI_Init failed: \(MPIGroup.errorString(rc))") }
        }
        MPI_Comm_set_errhandler(cmpi_comm_world(), cmpi_errors_return())
        var r: Int32 = 0, s: Int32 = 0
        MPI_Comm_rank(cmpi_comm_world(), &r)
        MPI_Comm_size(cmpi_comm_world(), &s)
        rank = Int(r)
        size = Int(s)
    }

    /// This machine's name as MPI reports it.
    public var processorName: String {
        var name = [CChar](repeating: 0, count: 256)
        var length: Int32 = 0
        MPI_Get_processor_name(&name, &length)
        return String(cString: name)
    }

    public func broadcast(_ bytes: UnsafeMutableRawBufferPointer, root: Int) throws {
        try chunks(bytes.count) { offset, count in
            try check(MPI_Bcast(bytes.baseAddress! + offset, count, cmpi_byte(), Int32(root), cmpi_comm_world()), "MPI_Bcast")
        }
    }

    public func allreduceSum(_ values: UnsafeMutableBufferPointer<Float>) throws {
        try chunks(values.count) { offset, count in
            try check(MPI_Allreduce(cmpi_in_place(), values.baseAddress! + offset, count, cmpi_float(), cmpi_sum(), cmpi_comm_world()), "MPI_Allreduce")
        }
    }

    public func allreduceSum(_ values: UnsafeMutableBufferPointer<Double>) throws {
        try chunks(values.count) { offset, count in
            try check(MPI_Allreduce(cmpi_in_place(), values.baseAddress! + offset, count, cmpi_double(), cmpi_sum(), cmpi_comm_world()), "MPI_Allreduce")
        }
    }

    public func allreduceMax(_ values: UnsafeMutableBufferPointer<Double>) throws {
        try chunks(values.count) { offset, count in
            try check(MPI_Allreduce(cmpi_in_place(), values.baseAddress! + offset, count, cmpi_double(), cmpi_max(), cmpi_comm_world()), "MPI_Allreduce")
        }
    }

    public func failureAgreed(_ failure: DataParallelFailure) {
        agreedFailure = failure
    }

    /// Waits until every process of the job has called it.
    public func barrier() throws {
        try check(MPI_Barrier(cmpi_comm_world()), "MPI_Barrier")
    }

    /// Leaves the job (MPI_Finalize); every process calls it before it exits normally.
    public func finish() {
        guard !finished else { return }
        finished = true
        MPI_Finalize()
    }

    /// Ends every process of the job (MPI_Abort) with `code`: for a failure the other processes
    /// do not know about, which would otherwise leave them waiting in a collective.
    public func abort(code: Int32) -> Never {
        MPI_Abort(cmpi_comm_world(), code)
        exit(code)  // MPI_Abort does not return; if it did, this process still ends
    }

    /// MPI counts are 32-bit: larger buffers go in pieces of 2^30 elements.
    private func chunks(_ total: Int, _ body: (Int, Int32) throws -> Void) throws {
        guard total > 0 else { return }
        let piece = 1 << 30
        var offset = 0
        while offset < total {
            let count = min(piece, total - offset)
            try body(offset, Int32(count))
            offset += count
        }
    }

    private func check(_ rc: Int32, _ call: String) throws {
        guard rc != cmpi_success() else { return }
        throw OnnxTrainError.io("rank \(rank) of \(size): \(call) failed: \(MPIGroup.errorString(rc)) (another process of the job has probably died)")
    }

    private static func errorString(_ rc: Int32) -> String {
        var text = [CChar](repeating: 0, count: Int(cmpi_max_error_string()) + 1)
        var length: Int32 = 0
        MPI_Error_string(rc, &text, &length)
        return String(cString: text)
    }
}
