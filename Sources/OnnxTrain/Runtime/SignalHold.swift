import CDNNL
#if canImport(Glibc)
import Glibc
#endif

/// Keeps signal handlers off threads that are running oneDNN. oneDNN 2's generated gemm kernels
/// point rsp into the heap while they run (oneDNN issue #4845, fixed in 3.11; Debian ships 2.6),
/// so a handler run on that thread meanwhile (a terminal resize's SIGWINCH, Ctrl-C, a profiler's
/// timer) writes its frame into the heap: glibc then aborts, or worse. So every oneDNN call runs
/// with its thread's signals held (all but the synchronous faults):
/// - pool workers hold them for life (process-directed signals go to other threads);
/// - `GraphExecutor.run` holds them on its thread for the run, so a signal sent during a step is
///   handled when the run returns (one mask change per run, not two per oneDNN call: those cost
///   ~0.35 µs, 70% of a 32×32×32 product);
/// - every oneDNN call site is wrapped in `around`, which holds them for that call on any other
///   thread (a kernel called outside a graph run, a weight packed while a session is built).
enum SignalHold {
    private static let held = ThreadFlag()

    /// Whether the calling thread's signals are held by this type.
    static var isHeld: Bool { held.wrappedValue }

    /// Runs `body` with the calling thread's signals held; a no-op wrapper when they already are.
    @inline(__always)
    static func around<T>(_ body: () throws -> T) rethrows -> T {
        if held.wrappedValue { return try body() }
        var saved = sigset_t()
        ot_signals_hold(&saved)
        held.wrappedValue = true
        defer {
            held.wrappedValue = false
            ot_signals_restore(&saved)
        }
        return try body()
    }

    /// Holds the calling thread's signals until it exits (pool workers).
    static func holdForLife() {
        var saved = sigset_t()
        ot_signals_hold(&saved)
        held.wrappedValue = true
    }
}
