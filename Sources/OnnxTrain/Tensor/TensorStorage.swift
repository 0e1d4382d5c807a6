#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

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
    private let release: (() -> Void)?

    /// Allocates `byteCount` zeroed bytes, aligned for SIMD loads.
    public init(zeroedByteCount byteCount: Int) {
        let size = max(byteCount, 64)
        var raw: UnsafeMutableRawPointer?
        if posix_memalign(&raw, 64, size) != 0 || raw == nil {
            fatalError("out of memory allocating \(size) bytes")
        }
        memset(raw!, 0, size)
        bytes = raw!
        self.byteCount = byteCount
        strings = []
        release = { free(raw) }
    }

    /// Allocates `byteCount` zeroed bytes, or returns nil when the memory is not there: for sizes
    /// that come from a file (a corrupt dimension must be an error, not an abort).
    public init?(failableZeroedByteCount byteCount: Int) {
        guard byteCount >= 0 else { return nil }
        let size = max(byteCount, 64)
        var raw: UnsafeMutableRawPointer?
        guard posix_memalign(&raw, 64, size) == 0, let raw else { return nil }
        memset(raw, 0, size)
        bytes = raw
        self.byteCount = byteCount
        strings = []
        release = { free(raw) }
    }

    /// Allocates `byteCount` bytes without clearing them; callers overwrite every byte.
    public init(uninitializedByteCount byteCount: Int) {
        let size = max(byteCount, 64)
        var raw: UnsafeMutableRawPointer?
        if posix_memalign(&raw, 64, size) != 0 || raw == nil {
            fatalError("out of memory allocating \(size) bytes")
        }
        bytes = raw!
        self.byteCount = byteCount
        strings = []
        release = { free(raw) }
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

    deinit { release?() }

    /// A fresh copy of these bytes (or strings).
    public func copy() -> TensorStorage {
        if byteCount == 0 && !strings.isEmpty { return TensorStorage(strings: strings) }
        let copy = TensorStorage(uninitializedByteCount: byteCount)
        if byteCount > 0 { copy.bytes.copyMemory(from: bytes, byteCount: byteCount) }
        copy.strings = strings
        return copy
    }
}
