#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Synchronization

/// The bytes behind one or more tensors: a 64-byte aligned heap block, a memory-mapped file
/// region, or (for string tensors) an array of Swift strings.
///
/// Storage is a reference; `Tensor` copies it on write unless the write is an in-place update
/// that the training runtime asks for on purpose (accumulators, optimizer state).
public final class TensorStorage {
    public let bytes: UnsafeMutableRawPointer
    public let byteCount: Int
    /// The elements of a string tensor; empty for every other type.
    public var strings: [String]
    /// Frees memory owned elsewhere; nil for blocks from `BufferCache`, which go back to it.
    private let release: (() -> Void)?
    /// Set when an in-place kernel's output took these bytes over (`BufferDonation`): that
    /// output's storage frees them, this one no longer does.
    fileprivate(set) var donated = false
    /// Set when the executor drops a constant its kernel consumed (`ConstantRelease`): the block
    /// goes back to malloc (a large one to the system) when this storage dies, not to
    /// `BufferCache`'s idle blocks, where it would keep its pages resident for a size class that
    /// no value may ever ask for again.
    var discardsBlock = false

    /// Whether the bytes are a heap block this storage frees (not a mapped file, not strings):
    /// only such a block can be handed to an in-place kernel's output.
    var isDonatable: Bool { release == nil && byteCount > 0 && !donated }

    /// Allocates `byteCount` zeroed bytes, aligned for SIMD loads (never a donated block: the
    /// zeros would overwrite an input the kernel has not read yet).
    public convenience init(zeroedByteCount byteCount: Int) {
        self.init(freshByteCount: byteCount)
        memset(bytes, 0, max(byteCount, 1))
    }

    /// Allocates `byteCount` bytes from the cache or malloc, never a donated block.
    private convenience init(freshByteCount byteCount: Int) {
        guard let raw = BufferCache.allocate(byteCount) else {
            fatalError("out of memory allocating \(byteCount) bytes")
        }
        self.init(heapBlock: raw, byteCount: byteCount)
    }

    /// Owns `bytes`, a block from `BufferCache` (or one donated by a dying input).
    private init(heapBlock bytes: UnsafeMutableRawPointer, byteCount: Int) {
        self.bytes = bytes
        self.byteCount = byteCount
        strings = []
        release = nil
    }

    /// Allocates `byteCount` zeroed bytes, or returns nil when the memory is not there: for sizes
    /// that come from a file (a corrupt dimension must be an error, not an abort).
    public convenience init?(failableZeroedByteCount byteCount: Int) {
        guard byteCount >= 0, let raw = BufferCache.allocate(byteCount) else { return nil }
        memset(raw, 0, max(byteCount, 1))
        self.init(heapBlock: raw, byteCount: byteCount)
    }

    /// Allocates `byteCount` bytes without clearing them; callers overwrite every byte.
    public convenience init(uninitializedByteCount byteCount: Int) {
        self.init(freshByteCount: byteCount)
    }

    /// Allocates `byteCount` bytes for elements of `elementType` without clearing them
    /// (`Tensor(uninitialized:)`). While an in-place kernel runs (`BufferDonation`), a request
    /// of exactly the size and element type of a dying input's block gets that block: the
    /// kernel's output is written over its input.
    /// While the executor offers a slice of a Concat's output (`ConcatPlacement`), a request of
    /// exactly the slice's size and element type gets a view of those bytes instead: the kernel
    /// writes its output where the Concat would have copied it.
    convenience init(uninitializedByteCount byteCount: Int, elementType: DType) {
        switch BufferDonation.take(byteCount, elementType) {
        case .slice(let bytes, let owner)?:
            self.init(borrowing: bytes, byteCount: byteCount, release: { withExtendedLifetime(owner) {} })
        case .block(let donated)?:
            self.init(heapBlock: donated, byteCount: byteCount)
        case nil:
            self.init(freshByteCount: byteCount)
        }
    }

    /// Wraps memory owned elsewhere (a mapped file); `release` runs when the storage dies.
    public init(borrowing bytes: UnsafeMutableRawPointer, byteCount: Int, release: (() -> Void)?) {
        self.bytes = bytes
        self.byteCount = byteCount
        strings = []
        self.release = release
    }

    public init(strings: [String]) {
        self.strings = strings
        bytes = UnsafeMutableRawPointer.allocate(byteCount: 1, alignment: 8)
        byteCount = 0
        let pointer = bytes
        release = { pointer.deallocate() }
    }

    deinit {
        if donated { return }
        if let release {
            release()
        } else if discardsBlock {
            BufferCache.discard(bytes, byteCount)
        } else {
            BufferCache.recycle(bytes, byteCount)
        }
    }

    /// A fresh copy of these bytes (or strings).
    public func copy() -> TensorStorage {
        if byteCount == 0 && !strings.isEmpty { return TensorStorage(strings: strings) }
        let copy = TensorStorage(freshByteCount: byteCount)
        if byteCount > 0 { copy.bytes.copyMemory(from: bytes, byteCount: byteCount) }
        copy.strings = strings
        return copy
    }
}

/// Blocks of dying inputs offered to the output of the kernel that reads them last: the
/// executor's memory plan (`GraphExecutor.Plan.donors`) offers them around one kernel call on
/// its thread, and the first `Tensor(uninitialized:)` of exactly a block's size and element
/// type takes it, so an elementwise op writes its output over its input instead of into a new block.
///
/// Only ops that declare the input in place at registration (`OpRegistry.register(inPlace:)`)
/// are offered blocks, and only blocks no other tensor shares: their kernels allocate the
/// output first with `Tensor(uninitialized:)` and read each input element before they write
/// the output element at the same index. Zeroed allocations, copies and raw byte allocations
/// never take a block, nor do tensors of another element type (a half input widened to float
/// before the output is made may have the block's size).
/// Offers are per thread (a session may run on several threads; kernels' worker threads
/// allocate scratch, never outputs, and see no offers).
///
/// The executor may also offer one slice of a Concat's output buffer (`ConcatPlacement`) to the
/// kernel that computes one of the Concat's inputs, ahead of any dying input's block, and the
/// output buffer itself to the Concat (`takeConcatTarget`). A slice is a view (its storage
/// borrows the bytes and keeps the buffer's storage alive), so it is never donated in turn.
enum BufferDonation {
    final class Offers {
        var donors: [(storage: TensorStorage, elementType: DType)] = []
        /// A slice of a Concat's output buffer: its first byte, size, element type and owner.
        var slice: (bytes: UnsafeMutableRawPointer, byteCount: Int, elementType: DType, owner: TensorStorage)?
        var sliceTaken = false
        /// A Concat's output storage (the buffer, or a slice of an enclosing Concat's buffer).
        var target: (storage: TensorStorage, elementType: DType)?
        /// Whether any offer is open (one load on the allocation path).
        var open = false
    }

    /// What an allocation takes: a dying input's block, or a slice of a Concat's buffer.
    enum Taken {
        case block(UnsafeMutableRawPointer)
        case slice(UnsafeMutableRawPointer, owner: TensorStorage)
    }

    private static let key: pthread_key_t = {
        var key = pthread_key_t()
        let status = pthread_key_create(&key) { raw in
            #if canImport(Darwin)
            Unmanaged<Offers>.fromOpaque(raw).release()
            #else
            if let raw { Unmanaged<Offers>.fromOpaque(raw).release() }
            #endif
        }
        precondition(status == 0, "pthread_key_create failed (\(status))")
        return key
    }()

    /// Blocks taken by outputs since the process started (tests read it).
    static let takenCount = Atomic<Int>(0)

    /// This thread's offers, made on first use.
    private static var offers: Offers {
        if let raw = pthread_getspecific(key) { return Unmanaged<Offers>.fromOpaque(raw).takeUnretainedValue() }
        let offers = Offers()
        pthread_setspecific(key, Unmanaged.passRetained(offers).toOpaque())
        return offers
    }

    /// Offers `donors` to the allocations `body` makes on this thread; what is left is withdrawn after.
    static func offering<R>(_ donors: [(storage: TensorStorage, elementType: DType)], _ body: () throws -> R) rethrows -> R {
        let offers = self.offers
        offers.donors = donors
        offers.open = true
        defer { offers.donors.removeAll(keepingCapacity: true); offers.open = false }
        return try body()
    }

    /// Offers `donors`, a `slice` of a Concat's buffer and a Concat's `target` storage to what
    /// `body` does on this thread (all withdrawn after); also returns whether the slice was taken.
    static func offering<R>(_ donors: [(storage: TensorStorage, elementType: DType)],
                            slice: (bytes: UnsafeMutableRawPointer, byteCount: Int, elementType: DType, owner: TensorStorage)?,
                            target: (storage: TensorStorage, elementType: DType)?,
                            _ body: () throws -> R) rethrows -> (result: R, sliceTaken: Bool) {
        let offers = self.offers
        offers.donors = donors
        offers.slice = slice
        offers.sliceTaken = false
        offers.target = target
        offers.open = true
        defer {
            offers.donors.removeAll(keepingCapacity: true)
            offers.slice = nil
            offers.target = nil
            offers.open = false
        }
        let result = try body()
        return (result, offers.sliceTaken)
    }

    /// An offered block or slice of exactly `byteCount` bytes of `elementType`, now the caller's
    /// (a slice first: it saves the Concat a copy, a block only an allocation).
    @inline(__always)
    static func take(_ byteCount: Int, _ elementType: DType) -> Taken? {
        guard let raw = pthread_getspecific(key) else { return nil }
        let offers = Unmanaged<Offers>.fromOpaque(raw).takeUnretainedValue()
        guard offers.open else { return nil }
        return takeSlow(offers, byteCount, elementType)
    }

    @inline(never)
    private static func takeSlow(_ offers: Offers, _ byteCount: Int, _ elementType: DType) -> Taken? {
        if let slice = offers.slice, slice.byteCount == byteCount, slice.elementType == elementType {
            offers.slice = nil
            offers.sliceTaken = true
            return .slice(slice.bytes, owner: slice.owner)
        }
        guard let i = offers.donors.firstIndex(where: { $0.storage.byteCount == byteCount && $0.elementType == elementType }) else { return nil }
        let donor = offers.donors.remove(at: i).storage
        donor.donated = true
        takenCount.add(1, ordering: .relaxed)
        return .block(donor.bytes)
    }

    /// The storage the executor offers a Concat's output when it is exactly `byteCount` bytes of
    /// `elementType` (`ConcatPlacement`); the Concat writes there the inputs not already in place.
    static func takeConcatTarget(_ byteCount: Int, _ elementType: DType) -> TensorStorage? {
        guard let raw = pthread_getspecific(key) else { return nil }
        let offers = Unmanaged<Offers>.fromOpaque(raw).takeUnretainedValue()
        guard let target = offers.target, target.storage.byteCount == byteCount, target.elementType == elementType else { return nil }
        offers.target = nil
        return target.storage
    }
}

/// Recycles the heap blocks of large tensors. A training step frees and allocates the same sizes
/// every time; handing a freed block straight to the next request of its size class skips malloc's
/// trips to the kernel (munmap, then page faults that zero every page again), which cost a fifth of
/// a CNN step. Blocks of at least `minimumBytes` are kept, by size rounded up to a page.
///
/// How much is kept: idle blocks plus blocks in use stay within the most the process has had in use
/// at once (its high-water mark) plus `capacity`. A step's working set therefore stays cached
/// whatever its size (a fixed 512 MiB of idle blocks left ResNet-18 at batch 32 on 224x224 images
/// zeroing fresh pages for a fifth of its step), blocks a run needs later survive its busiest moment
/// (without the `capacity` slack, Inception v1's batch-32 inference evicted them there: 905K page
/// faults in 6 runs against 163K, 1225 against 756 ms in the benchmark), and the footprint stays within what the old fixed limit
/// allowed at that moment (in use + 512 MiB): a new block that would pass the limit first frees
/// idle blocks of other sizes.
public enum BufferCache {
    /// Blocks smaller than this are plain malloc blocks.
    static let minimumBytes = 32 << 10
    /// Idle blocks are kept while idle plus in-use bytes stay within the high-water mark plus this.
    public static let capacity = 512 << 20

    /// Idle blocks by size class, kept as addresses (a pointer is not Sendable, so the lock's
    /// state holds plain integers), and the bytes of blocks handed out and not yet recycled.
    private struct State {
        var free: [Int: [Int]] = [:]
        var idleBytes = 0
        var liveBytes = 0
        var highWater = 0
        var limit: Int { highWater + capacity }
        /// Live blocks a memory pattern records or placed, by address (`MemoryPattern`).
        var tracked: [Int: Tracked] = [:]
    }
    private enum Tracked {
        /// A block a recording run mapped, and its index in the recording.
        case recorded(AllocationRecording, Int)
        /// A mapped block that outlived its recorded run (an output).
        case mapped
        case arena(MemoryPattern, Int)
    }
    private static let state = Mutex(State())

    @inline(__always)
    static func sizeClass(_ byteCount: Int) -> Int {
        byteCount < minimumBytes ? max(byteCount, 64) : (byteCount + 4095) & ~4095
    }

    /// A 64-byte aligned block of at least `byteCount` bytes (contents undefined), or nil.
    static func allocate(_ byteCount: Int) -> UnsafeMutableRawPointer? {
        // Past 256 TiB no machine has the memory (x86-64 user space is 128 TiB), and the byte counts
        // below stay far from overflow.
        guard byteCount >= 0 && byteCount <= 1 << 48 else { return nil }
        let size = sizeClass(byteCount)
        guard size >= minimumBytes else {
            var raw: UnsafeMutableRawPointer?
            return posix_memalign(&raw, 64, size) == 0 ? raw : nil
        }
        guard let run = MemoryPatternRun.current else { return allocateCached(size) }
        if run.pattern != nil, let block = replay(run, size) { return block }
        guard let recording = run.recording else { return allocateCached(size) }
        // A recorded run maps each block for itself and unmaps it when freed: its pages leave
        // the process at once, so the recorded run (the first) holds about the most bytes alive
        // at once. Through the cache it would hold its size classes' sum, and through malloc
        // the heap's fragments (a ViT's many block sizes: 227 MiB against the cache's 185 MiB).
        let raw = mmap(nil, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
        guard let raw, raw != UnsafeMutableRawPointer(bitPattern: -1) else { return nil }
        state.withLock { s in
            s.tracked[Int(bitPattern: raw)] = .recorded(recording, recording.sizes.count)
            recording.sizes.append(size)
            recording.freedAt.append(Int.max)
        }
        return raw
    }

    /// The arena block of the next allocation of the pattern `run` replays, or nil when the
    /// block is not in the arena (the recorded run kept it) or the run leaves the pattern here.
    private static func replay(_ run: MemoryPatternRun, _ size: Int) -> UnsafeMutableRawPointer? {
        guard !run.diverged, let pattern = run.pattern else { return nil }
        let k = run.cursor
        run.cursor += 1
        guard k < pattern.sizes.count, pattern.sizes[k] == size else {
            run.diverged = true
            return nil
        }
        guard let offset = pattern.offsets[k] else { return nil }
        let block = pattern.arena + offset
        let placed = state.withLock { s -> Bool in
            for j in pattern.overlaps[k] where pattern.live[j] { return false }
            pattern.live[k] = true
            pattern.liveCount += 1
            s.tracked[Int(bitPattern: block)] = .arena(pattern, k)
            return true
        }
        guard placed else {
            run.diverged = true
            return nil
        }
        MemoryPattern.arenaBlocks.add(1, ordering: .relaxed)
        return block
    }

    /// Whether a run may replay `pattern` now (no other run does, none of its blocks is still
    /// alive, no run left it); the run holds it until `end`.
    static func beginReplay(_ pattern: MemoryPattern) -> Bool {
        state.withLock { _ in
            guard !pattern.inUse, !pattern.failed, pattern.liveCount == 0 else { return false }
            pattern.inUse = true
            return true
        }
    }

    /// Ends a recorded or replayed run: a recording stops counting frees (blocks alive now
    /// outlive the run), a replayed pattern is released, or dropped if the run left it or kept
    /// one of its blocks.
    static func end(_ run: MemoryPatternRun) {
        state.withLock { s in
            if let recording = run.recording {
                recording.closed = true
                for (address, entry) in s.tracked {
                    if case .recorded(let r, _) = entry, r === recording { s.tracked[address] = .mapped }
                }
            }
            if let pattern = run.pattern {
                pattern.inUse = false
                if run.diverged || pattern.liveCount > 0 { pattern.failed = true }
            }
        }
    }

    /// A block of `size` bytes (a size class of at least `minimumBytes`) from the cache or malloc.
    private static func allocateCached(_ size: Int) -> UnsafeMutableRawPointer? {
        let (reused, evicted, previousMark) = state.withLock { s -> (Int?, [Int], Int) in
            let previousMark = s.highWater
            s.liveBytes += size
            s.highWater = max(s.highWater, s.liveBytes)
            if let block = s.free[size]?.popLast() {
                s.idleBytes -= size
                return (block, [], previousMark)
            }
            // A new block: idle blocks of other sizes go first if it would pass the mark.
            var evicted: [Int] = []
            while s.idleBytes + s.liveBytes > s.limit,
                  let largest = s.free.filter({ !$0.value.isEmpty }).keys.max(),
                  let block = s.free[largest]?.popLast() {
                s.idleBytes -= largest
                evicted.append(block)
            }
            return (nil, evicted, previousMark)
        }
        if let reused { return UnsafeMutableRawPointer(bitPattern: reused) }
        for block in evicted { free(UnsafeMutableRawPointer(bitPattern: block)) }
        var raw: UnsafeMutableRawPointer?
        guard posix_memalign(&raw, 64, size) == 0 else {
            // Not there (a corrupt size from a file): it was never in use, and no mark of it stays.
            state.withLock { s in
                s.liveBytes -= size
                s.highWater = max(previousMark, s.liveBytes)
            }
            return nil
        }
        return raw
    }

    /// Takes back a block from `allocate(byteCount)`.
    static func recycle(_ block: UnsafeMutableRawPointer, _ byteCount: Int) {
        let size = sizeClass(byteCount)
        let address = Int(bitPattern: block)
        var unmap = false
        if size >= minimumBytes && state.withLock({ s -> Bool in
            if !s.tracked.isEmpty, let tracked = s.tracked.removeValue(forKey: address) {
                switch tracked {
                case .arena(let pattern, let k):
                    // The block stays in its pattern's arena.
                    pattern.live[k] = false
                    pattern.liveCount -= 1
                    return true
                case .recorded(let recording, let k):
                    if !recording.closed { recording.freedAt[k] = recording.sizes.count }
                    unmap = true
                    return false
                case .mapped:
                    unmap = true
                    return false
                }
            }
            s.liveBytes -= size
            guard s.idleBytes + size + s.liveBytes <= s.limit else { return false }
            s.free[size, default: []].append(address)
            s.idleBytes += size
            return true
        }) {
            return
        }
        if unmap { munmap(block, size) } else { free(block) }
    }

    /// Takes back a block from `allocate(byteCount)` and frees it rather than keeping it idle (a
    /// constant's, `TensorStorage.discardsBlock`); a block a memory pattern tracks goes the usual way.
    static func discard(_ block: UnsafeMutableRawPointer, _ byteCount: Int) {
        let size = sizeClass(byteCount)
        guard size >= minimumBytes else {
            free(block)
            return
        }
        let untracked = state.withLock { s -> Bool in
            if !s.tracked.isEmpty && s.tracked[Int(bitPattern: block)] != nil { return false }
            s.liveBytes -= size
            return true
        }
        if untracked { free(block) } else { recycle(block, byteCount) }
    }

    /// Frees every idle block (for long-running processes between workloads); with
    /// `releasingHeap`, malloc also gives the free pages of its heap back to the system (blocks
    /// under malloc's mmap threshold stay resident in the heap when freed).
    public static func trim(releasingHeap: Bool = false) {
        let blocks = state.withLock { s -> [Int] in
            let all = s.free.values.flatMap { $0 }
            s.free = [:]
            s.idleBytes = 0
            return all
        }
        for block in blocks { free(UnsafeMutableRawPointer(bitPattern: block)) }
        #if canImport(Glibc)
        if releasingHeap, let symbol = dlsym(nil, "malloc_trim") {
            typealias MallocTrim = @convention(c) (Int) -> Int32
            _ = unsafeBitCast(symbol, to: MallocTrim.self)(0)
        }
        #endif
    }

    /// Keeps malloc from handing large blocks back to the kernel: kernels' scratch arrays (im2col
    /// columns, per-channel sums) are freed and allocated again every step, and with glibc's
    /// defaults each round trip is an munmap plus page faults that clear every page again. Blocks
    /// up to 32 MiB (glibc's largest mmap threshold) then stay in the heap for reuse. Once per process.
    public static func configureMalloc() { _ = mallocConfigured }

    private static let mallocConfigured: Void = {
        #if canImport(Glibc)
        // malloc.h is not part of the Glibc module: look mallopt up by name (absent on musl).
        typealias Mallopt = @convention(c) (Int32, Int32) -> Int32
        guard let symbol = dlsym(nil, "mallopt") else { return }
        let mallopt = unsafeBitCast(symbol, to: Mallopt.self)
        let trimThreshold: Int32 = -1, mmapThreshold: Int32 = -3  // M_TRIM_THRESHOLD, M_MMAP_THRESHOLD
        _ = mallopt(mmapThreshold, 32 << 20)
        _ = mallopt(trimThreshold, 256 << 20)
        #endif
    }()

    /// Bytes held idle for reuse.
    public static var idleBytes: Int { state.withLock { $0.idleBytes } }
    /// Bytes of cached-size blocks in use (handed out, not yet recycled), and the most there were at once.
    public static var liveBytes: Int { state.withLock { $0.liveBytes } }
    public static var highWaterBytes: Int { state.withLock { $0.highWater } }
}
