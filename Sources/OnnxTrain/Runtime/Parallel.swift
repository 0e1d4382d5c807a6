#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Synchronization

/// Kernel-level parallelism: one fixed pool of worker threads that every kernel shares, so
/// non-BLAS kernels use both cores without oversubscribing them.
///
/// `Parallel.forRange(n) { range in ... }` splits `0..<n` into at most `threadCount` contiguous
/// chunks; the calling thread runs the first, and each other chunk runs on whichever thread
/// claims it first (a worker, or the caller when its own chunk is done). Work too small to pay for
/// a handoff, nested calls and calls made while another thread holds the pool run inline, in order.
/// Workers spin briefly after a job (a training step is a quick succession of kernels; 100 µs, or
/// `ONNX_TRAIN_SPIN_US`) and then sleep on a condition variable, so an idle process uses no CPU.
public enum Parallel {
    /// How many threads kernels may use: the worker pool plus the calling thread. Defaults to the
    /// number of cores, capped at `OPENBLAS_NUM_THREADS` / `OMP_NUM_THREADS` when those are set.
    ///
    /// It may be set at any time from any thread outside a kernel: the setter waits until a job
    /// running on the old pool has finished before it stops that pool's workers. (Setting it
    /// inside a kernel body would wait for itself, and traps.)
    public static var threadCount: Int {
        get { maxThreads.load(ordering: .relaxed) }
        set {
            precondition(!isInsideRegion, "Parallel.threadCount cannot be set inside a parallel kernel")
            let wanted = max(1, newValue)
            pool.withLock { current in
                if current?.threadCount == wanted { return }
                if let old = current {
                    // Claim the old pool so no job is running on it (jobs that find it claimed
                    // run inline), then stop its workers; it is never released.
                    while old.tryAcquire() == nil { sched_yield() }
                    old.shutdown()
                }
                current = wanted > 1 ? WorkerPool(threadCount: wanted) : nil
                maxThreads.store(wanted, ordering: .relaxed)
            }
        }
    }

    /// Splits `0..<count` into at most `threadCount` contiguous chunks of at least `minimumChunk`
    /// items and runs `body` on each, concurrently; returns when all are done. `body` must only
    /// write memory that its own chunk owns.
    @inline(__always)
    public static func forRange(_ count: Int, minimumChunk: Int = 1, _ body: (Range<Int>) -> Void) {
        guard count > 0 else { return }
        let chunks = min(count / max(minimumChunk, 1), maxThreads.load(ordering: .relaxed))
        if chunks <= 1 || isInsideRegion {
            body(0..<count)
            return
        }
        run(count, chunks: chunks, body)
    }

    /// The chunk boundaries `forRange` uses: chunk `i` of `chunks` over `0..<count`.
    @inline(__always)
    static func chunk(_ i: Int, of chunks: Int, count: Int) -> Range<Int> {
        (count * i / chunks)..<(count * (i + 1) / chunks)
    }

    // MARK: Implementation

    private static let defaultThreadCount: Int = {
        let cores = max(1, Int(sysconf(Int32(_SC_NPROCESSORS_ONLN))))
        for name in ["OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"] {
            if let text = getenv(name), let n = Int(String(cString: text)), n > 0 { return min(n, cores) }
        }
        return cores
    }()

    private static let pool = Mutex<WorkerPool?>(defaultThreadCount > 1 ? WorkerPool(threadCount: defaultThreadCount) : nil)
    /// The pool's size, read without the lock on every forRange.
    private static let maxThreads = Atomic<Int>(defaultThreadCount)

    /// True on a pool worker and on a caller while its job runs: nested calls run inline, and
    /// BLAS calls stay on their thread.
    static var isInsideRegion: Bool {
        get { insideRegion.wrappedValue }
        set { insideRegion.wrappedValue = newValue }
    }
    private static let insideRegion = ThreadFlag()

    private static func run(_ count: Int, chunks: Int, _ body: (Range<Int>) -> Void) {
        // Only one job at a time: a second thread (another session) runs its work inline.
        guard let worker = pool.withLock({ $0 })?.tryAcquire() else {
            body(0..<count)
            return
        }
        defer { worker.release() }
        isInsideRegion = true
        defer { isInsideRegion = false }
        withoutActuallyEscaping(body) { body in
            worker.run(chunks: min(chunks, worker.threadCount)) { i, n in body(chunk(i, of: n, count: count)) }
        }
    }
}

/// A per-thread Bool without Foundation: pthread-specific storage.
@propertyWrapper
struct ThreadFlag {
    private let key: pthread_key_t = {
        var key = pthread_key_t()
        pthread_key_create(&key, nil)
        return key
    }()
    init() {}
    var wrappedValue: Bool {
        get { pthread_getspecific(key) != nil }
        nonmutating set { pthread_setspecific(key, newValue ? UnsafeRawPointer(bitPattern: 1) : nil) }
    }
}

/// `threadCount - 1` worker threads waiting for jobs. A job is a chunk count and a body; the caller
/// runs chunk 0, and the other chunks go to whichever thread claims them first: the workers as they
/// wake, and the caller once its own chunk is done. The caller waits only for chunks a worker has
/// claimed and not finished, never for a worker that has not started: on a loaded machine a worker
/// may sit descheduled for a scheduler time slice (milliseconds), and a job split in fixed parts
/// waited that long for it (BERT-Tiny at batch 1 beside a compile on the other core: median 9 ms
/// a run against 2 ms alone; onnxruntime's pool, whose caller also takes unclaimed blocks, 1.7 ms).
final class WorkerPool: @unchecked Sendable {
    let threadCount: Int
    /// threadCount - 1 when every worker started; jobs run inline otherwise.
    private let workers: Int
    private var threads: [pthread_t] = []
    private var mutex = pthread_mutex_t()
    private var wake = pthread_cond_t()
    private var done = pthread_cond_t()
    /// The posted job and its next unclaimed chunk, as one word that claims change with a
    /// compare-and-swap: job number (high 32 bits), chunk count (16 bits), next chunk (16 bits).
    /// Workers spin on the job number, then sleep; a claim of a chunk of a job that is over (or
    /// of one whose chunks are all claimed) fails, so a late worker never touches a job that ended.
    private let ticket = Atomic<UInt64>(0)
    /// Chunks of the posted job not yet finished.
    private let pending = Atomic<Int>(0)
    private let busy = Atomic<Bool>(false)
    /// Keeps workers from claiming chunks (tests: a worker that does not get the core).
    let workersHeld = Atomic<Bool>(false)
    private var stopping = false
    nonisolated(unsafe) private var job: ((Int, Int) -> Void)?
    /// How long a waiting thread polls before sleeping: long enough to bridge the single-threaded
    /// kernels between two parallel ones in a training step (a futex wake-up costs 10-50 µs),
    /// short enough that an idle process sleeps at once (libgomp's default spin is of this order).
    static let spinNanoseconds: UInt64 = {
        if let text = getenv("ONNX_TRAIN_SPIN_US"), let us = UInt64(String(cString: text)) { return us * 1000 }
        return 100_000
    }()

    @inline(__always)
    private static func jobNumber(_ t: UInt64) -> UInt64 { t >> 32 }

    /// Polls `done` until it is true or the spin time has passed; returns whether it became true.
    @inline(__always)
    private func spin(until done: () -> Bool) -> Bool {
        if done() { return true }
        let deadline = monotonicNanoseconds() &+ WorkerPool.spinNanoseconds
        var polls = 0
        while true {
            if done() { return true }
            polls &+= 1
            if polls & 63 == 0 {
                // Give the core away if anything else wants it: on a busy machine a spinning
                // thread must not take time from the thread doing the work.
                sched_yield()
                if monotonicNanoseconds() >= deadline { return false }
            }
        }
    }

    init(threadCount: Int) {
        self.threadCount = threadCount
        pthread_mutex_init(&mutex, nil)
        pthread_cond_init(&wake, nil)
        pthread_cond_init(&done, nil)
        workers = threadCount - 1
        for w in 1..<threadCount {
            let box = Unmanaged.passRetained(WorkerStart(pool: self, index: w)).toOpaque()
            var thread = pthread_t()
            let started = pthread_create(&thread, nil, { raw in
                let start = Unmanaged<WorkerStart>.fromOpaque(raw!).takeRetainedValue()
                start.pool.workerLoop(start.index)
                return nil
            }, box)
            if started == 0 { threads.append(thread) } else { Unmanaged<WorkerStart>.fromOpaque(box).release() }
        }
        startedAll = threads.count == workers
    }

    /// False when a worker thread could not be created: every job then runs on the caller.
    private var startedAll = false

    /// Claims the pool for one job; nil when another thread is using it.
    func tryAcquire() -> WorkerPool? {
        busy.compareExchange(expected: false, desired: true, ordering: .acquiring).exchanged ? self : nil
    }

    func release() { busy.store(false, ordering: .releasing) }

    /// Claims the next chunk of job `number`: (chunk, chunks), or nil when that job is over or
    /// every chunk of it is claimed.
    @inline(__always)
    private func claim(_ number: UInt64) -> (Int, Int)? {
        var t = ticket.load(ordering: .acquiring)
        while true {
            let chunks = Int((t >> 16) & 0xFFFF), next = Int(t & 0xFFFF)
            guard WorkerPool.jobNumber(t) == number, next < chunks else { return nil }
            let (exchanged, original) = ticket.compareExchange(expected: t, desired: t &+ 1, ordering: .acquiringAndReleasing)
            if exchanged { return (next, chunks) }
            t = original
        }
    }

    /// Runs `body(chunk, chunks)` for chunk in 0..<chunks across the caller and the workers.
    func run(chunks: Int, _ body: @escaping (Int, Int) -> Void) {
        guard startedAll, workers > 0, chunks > 1, chunks <= 0xFFFF else {
            for i in 0..<chunks { body(i, chunks) }
            return
        }
        job = body
        pending.store(chunks, ordering: .relaxed)
        // Chunk 0 is the caller's (the part of the data it wrote last, as in the fixed split);
        // the others are claimed from 1.
        pthread_mutex_lock(&mutex)
        let number = WorkerPool.jobNumber(ticket.load(ordering: .relaxed)) &+ 1
        ticket.store((number << 32) | (UInt64(chunks) << 16) | 1, ordering: .releasing)
        pthread_cond_broadcast(&wake)
        pthread_mutex_unlock(&mutex)

        body(0, chunks)
        var finished = 1
        while let (i, n) = claim(number) {
            body(i, n)
            finished += 1
        }
        // Wait for the chunks workers claimed: spin first (they are usually done), then sleep.
        if pending.subtract(finished, ordering: .acquiringAndReleasing).newValue != 0,
           !spin(until: { pending.load(ordering: .acquiring) == 0 }) {
            pthread_mutex_lock(&mutex)
            while pending.load(ordering: .acquiring) > 0 { pthread_cond_wait(&done, &mutex) }
            pthread_mutex_unlock(&mutex)
        }
        job = nil
    }

    private func workerLoop(_ index: Int) {
        Parallel.isInsideRegion = true
        // Workers run oneDNN's kernels, which a signal handler must not interrupt (`SignalHold`).
        SignalHold.holdForLife()
        var seen: UInt64 = 0
        while true {
            // Spin for the next job, then sleep until one is posted.
            if !spin(until: { WorkerPool.jobNumber(ticket.load(ordering: .acquiring)) != seen }) {
                pthread_mutex_lock(&mutex)
                while WorkerPool.jobNumber(ticket.load(ordering: .acquiring)) == seen && !stopping { pthread_cond_wait(&wake, &mutex) }
                pthread_mutex_unlock(&mutex)
            }
            pthread_mutex_lock(&mutex)
            let stop = stopping
            pthread_mutex_unlock(&mutex)
            if stop { return }
            seen = WorkerPool.jobNumber(ticket.load(ordering: .acquiring))
            if workersHeld.load(ordering: .acquiring) { continue }
            // The job and its body stay valid while a claimed chunk of it is unfinished.
            var finished = 0
            while let (i, n) = claim(seen) {
                // Set before the job was posted, cleared only after its last chunk: present.
                job!(i, n)
                finished += 1
            }
            if finished > 0 && pending.subtract(finished, ordering: .acquiringAndReleasing).newValue == 0 {
                pthread_mutex_lock(&mutex)
                pthread_cond_signal(&done)
                pthread_mutex_unlock(&mutex)
            }
        }
    }

    func shutdown() {
        pthread_mutex_lock(&mutex)
        stopping = true
        let number = WorkerPool.jobNumber(ticket.load(ordering: .relaxed)) &+ 1
        ticket.store(number << 32, ordering: .releasing)
        pthread_cond_broadcast(&wake)
        pthread_mutex_unlock(&mutex)
        for t in threads { pthread_join(t, nil) }
        threads = []
    }

    private final class WorkerStart {
        let pool: WorkerPool
        let index: Int
        init(pool: WorkerPool, index: Int) { self.pool = pool; self.index = index }
    }
}

/// The monotonic clock in nanoseconds (the pool's spin deadline, the per-node profiler).
@inline(__always)
func monotonicNanoseconds() -> UInt64 {
    var t = timespec()
    clock_gettime(CLOCK_MONOTONIC, &t)
    return UInt64(t.tv_sec) &* 1_000_000_000 &+ UInt64(t.tv_nsec)
}
