#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Synchronization

/// The large blocks of one run, in the order the run allocated them, with when each was freed
/// (`AllocationRecording`), laid out once in one arena (`MemoryPattern`) for the runs that follow
/// with the same feeds' shapes: onnxruntime's memory pattern.
///
/// The size-class cache (`BufferCache`) keeps a freed block for the next request of its size, so a
/// run holds, for every size class, the most blocks of that class alive at once: the sum of those
/// maxima, not the most bytes alive at once. A batch-32 CNN allocates each activation size a few
/// times at different moments (Inception v1: 706 MiB peak RSS against onnxruntime's 482 MiB). The
/// pattern places every block that dies within the run at an offset of one arena, blocks alive at
/// the same time never overlapping (largest first, each at the lowest offset free over its
/// lifetime), so a run's activations take about the most bytes alive at once, and a run after the
/// first touches no fresh page.
///
/// A replayed run takes its blocks in order: a request that is not the recorded size, or whose
/// place still holds a live block, leaves the pattern for the rest of the run (the cache serves it)
/// and the next run records again; blocks the recorded run did not free (its outputs, a cache a
/// kernel keeps) are never placed in the arena.
///
/// The classes here are `@unchecked Sendable`: a run's `MemoryPatternRun` is read by its own
/// thread only, and what frees on other threads touch (a recording's `freedAt`, a pattern's
/// live blocks) changes under `BufferCache`'s lock.
final class AllocationRecording: @unchecked Sendable {
    /// The size class of every large block allocated, in order.
    var sizes: [Int] = []
    /// How many blocks had been allocated when each block was freed; `Int.max` while it lives.
    var freedAt: [Int] = []
    /// Set when the run is over: later frees (its outputs) do not count as dying in the run.
    var closed = false
}

/// A recorded run's blocks placed in one arena (see `AllocationRecording`).
final class MemoryPattern: @unchecked Sendable {
    /// The size class of every large block, in the recorded order.
    let sizes: [Int]
    /// Each block's offset in the arena; nil for a block the recorded run did not free.
    let offsets: [Int?]
    /// For each block, the earlier blocks whose bytes overlap its own: each died before it in the
    /// recorded run, and must have died in a replayed one too.
    let overlaps: [[Int]]
    let arenaBytes: Int
    let arena: UnsafeMutableRawPointer
    // Guarded by BufferCache's lock:
    var live: [Bool]
    var liveCount = 0
    /// A run replays the pattern (one run at a time).
    var inUse = false
    /// A replayed run left the pattern: it is not used again.
    var failed = false
    /// Blocks handed out from arenas since the process started (tests read it).
    static let arenaBlocks = Atomic<Int>(0)

    /// The pattern of `recording`, or nil when no block died within the run or the arena cannot be allocated.
    init?(_ recording: AllocationRecording) {
        let (offsets, total) = MemoryPattern.place(sizes: recording.sizes, freedAt: recording.freedAt)
        guard total > 0 else { return nil }
        var raw: UnsafeMutableRawPointer?
        guard posix_memalign(&raw, 4096, total) == 0, let raw else { return nil }
        sizes = recording.sizes
        self.offsets = offsets
        arenaBytes = total
        arena = raw
        live = [Bool](repeating: false, count: sizes.count)
        // Blocks placed at overlapping bytes, by a sweep over the offsets: blocks in order of
        // their first byte, each overlapping the earlier-starting ones whose bytes have not ended.
        var overlaps = [[Int]](repeating: [], count: sizes.count)
        let placed = offsets.indices.filter { offsets[$0] != nil }.sorted { offsets[$0]! < offsets[$1]! }
        var open: [(end: Int, block: Int)] = []
        for k in placed {
            let start = offsets[k]!
            open.removeAll { $0.end <= start }
            for (_, j) in open { overlaps[max(j, k)].append(min(j, k)) }
            open.append((start + recording.sizes[k], k))
        }
        for k in overlaps.indices where overlaps[k].count > 1 { overlaps[k].sort() }
        self.overlaps = overlaps
    }

    deinit { free(arena) }

    /// Offsets for blocks that died within the run (block k lives over allocations
    /// k..<freedAt[k]): largest first, each at the lowest offset where it overlaps no placed block
    /// alive at the same time; returns them and the arena's size.
    static func place(sizes: [Int], freedAt: [Int]) -> (offsets: [Int?], total: Int) {
        var offsets = [Int?](repeating: nil, count: sizes.count)
        let order = sizes.indices.filter { freedAt[$0] != Int.max }.sorted { sizes[$0] != sizes[$1] ? sizes[$0] > sizes[$1] : $0 < $1 }
        var placed: [Int] = []
        var total = 0
        var busy: [(start: Int, end: Int)] = []
        for k in order {
            busy.removeAll(keepingCapacity: true)
            for j in placed where j < freedAt[k] && k < freedAt[j] {
                busy.append((offsets[j]!, offsets[j]! + sizes[j]))
            }
            busy.sort { $0.start < $1.start }
            var offset = 0
            for b in busy {
                if offset + sizes[k] <= b.start { break }
                offset = max(offset, b.end)
            }
            offsets[k] = offset
            total = max(total, offset + sizes[k])
            placed.append(k)
        }
        return (offsets, total)
    }
}

/// What one run on this thread does with its large blocks: records them, or replays a pattern.
final class MemoryPatternRun: @unchecked Sendable {
    let recording: AllocationRecording?
    let pattern: MemoryPattern?
    /// The next block's index in the pattern.
    var cursor = 0
    /// The run left the pattern (see `MemoryPattern`).
    var diverged = false

    init(recording: AllocationRecording) { self.recording = recording; pattern = nil }
    init(pattern: MemoryPattern) { recording = nil; self.pattern = pattern }

    private static let key: pthread_key_t = {
        var key = pthread_key_t()
        let status = pthread_key_create(&key, nil)
        precondition(status == 0, "pthread_key_create failed (\(status))")
        return key
    }()

    /// This thread's run, if `body` of `with` is running on it.
    @inline(__always)
    static var current: MemoryPatternRun? {
        guard let raw = pthread_getspecific(key) else { return nil }
        return Unmanaged<MemoryPatternRun>.fromOpaque(raw).takeUnretainedValue()
    }

    /// Runs `body` outside this thread's run, if any: its large blocks come from the cache, neither
    /// recorded nor taken from a pattern. The executor computes the values it keeps from one run
    /// to the next so (`GraphExecutor.memoKind`), so that a run that reuses them allocates the
    /// blocks the recorded run allocated, in the same order.
    static func outside<R>(_ body: () throws -> R) rethrows -> R {
        let previous = pthread_getspecific(key)
        guard previous != nil else { return try body() }
        pthread_setspecific(key, nil)
        defer { pthread_setspecific(key, previous) }
        return try body()
    }

    /// Runs `body` with this run as the thread's (kernels' worker threads are not part of it).
    func with<R>(_ body: () throws -> R) rethrows -> R {
        let previous = pthread_getspecific(MemoryPatternRun.key)
        pthread_setspecific(MemoryPatternRun.key, Unmanaged.passUnretained(self).toOpaque())
        defer { pthread_setspecific(MemoryPatternRun.key, previous) }
        return try withExtendedLifetime(self) { try body() }
    }
}

/// A session's memory patterns: for each key (fetches and feed shapes) the recording or pattern
/// of that key. The first run of a key records; the second builds the pattern and replays it, as
/// do the runs after; a key seen once costs only the recording (its blocks go back to malloc
/// instead of the cache). Up to `maxKeys` keys are kept, so a session run alternately with a few
/// fetch sets or shapes (a training step and an evaluation) replays each; a new key past that
/// drops the least recently run one. A key whose pattern keeps failing is recorded at most
/// `maxRecordings` times, and a session that records `maxUnreplayedKeys` new keys in a row
/// without replaying one (shapes that change on every run) stops recording: the cache serves it.
final class MemoryPatternCache: @unchecked Sendable {
    private struct Entry {
        var recording: AllocationRecording?
        var pattern: MemoryPattern?
        /// Recordings made for this key (a pattern that keeps failing stops being recorded).
        var recordings = 0
        /// When the key last ran (`State.clock`), for dropping the least recently run.
        var lastRun = 0
    }
    private struct State {
        var entries: [[Int]: Entry] = [:]
        var clock = 0
        /// The key run last (`arenaBytes`).
        var lastKey: [Int]?
        /// New keys recorded in a row without a replay: a session whose shapes change on every
        /// run stops recording (a recorded run gives its blocks back to malloc, not to the cache).
        var unreplayedKeys = 0
        var gaveUp = false
    }
    private let state = Mutex(State())
    static let maxRecordings = 3
    static let maxUnreplayedKeys = 4
    static let maxKeys = 4

    /// The arena bytes of the pattern of the key run last (tests read it); 0 without one.
    var arenaBytes: Int { state.withLock { s in s.lastKey.flatMap { s.entries[$0]?.pattern?.arenaBytes } ?? 0 } }
    /// The keys kept (tests read it).
    var keyCount: Int { state.withLock { $0.entries.count } }

    /// Runs `body` recording or replaying the pattern of `key`.
    func run<R>(key: [Int], _ body: () throws -> R) rethrows -> R {
        let run = state.withLock { s -> MemoryPatternRun? in
            guard !s.gaveUp else { return nil }
            s.clock += 1
            s.lastKey = key
            if s.entries[key] == nil {
                s.unreplayedKeys += 1
                if s.unreplayedKeys >= MemoryPatternCache.maxUnreplayedKeys {
                    s.gaveUp = true
                    s.entries = [:]
                    return nil
                }
                if s.entries.count >= MemoryPatternCache.maxKeys,
                   let oldest = s.entries.min(by: { $0.value.lastRun < $1.value.lastRun })?.key {
                    // A run replaying its pattern keeps the pattern alive until it ends.
                    s.entries[oldest] = nil
                }
                s.entries[key] = Entry()
            }
            return MemoryPatternCache.begin(&s.entries[key]!, clock: s.clock, unreplayedKeys: &s.unreplayedKeys)
        }
        guard let run else { return try body() }
        defer { BufferCache.end(run) }
        return try run.with(body)
    }

    /// The run of one key: replays its pattern (building it from a closed recording first), or
    /// records, or neither (another run holds the pattern, or the key has been recorded enough).
    private static func begin(_ e: inout Entry, clock: Int, unreplayedKeys: inout Int) -> MemoryPatternRun? {
        e.lastRun = clock
        if let recording = e.recording, recording.closed {
            e.recording = nil
            e.pattern = MemoryPattern(recording)
            // The recorded run's blocks idle in the cache now sit in the arena.
            if e.pattern != nil { BufferCache.trim(releasingHeap: true) }
        }
        if let pattern = e.pattern {
            if BufferCache.beginReplay(pattern) {
                unreplayedKeys = 0
                return MemoryPatternRun(pattern: pattern)
            }
            if !pattern.failed { return nil }  // another run holds it
            e.pattern = nil
        }
        guard e.recording == nil, e.recordings < MemoryPatternCache.maxRecordings else { return nil }
        e.recordings += 1
        let recording = AllocationRecording()
        e.recording = recording
        return MemoryPatternRun(recording: recording)
    }
}
