#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

// Throwing, size-capped allocation for kernels whose output or scratch size comes from input
// data or attributes (Conv pads of 1 << 20, pooling kernel_shape near Int.max, Reshape-like
// shapes): an overflowing or absurd request becomes one KernelError naming the shape instead of
// an Int overflow trap or an out-of-memory fatalError. One check per allocation, none per element.

/// The one size policy: how large a tensor, an index map or a cached block may be.
enum SizePolicy {
    /// Elements one tensor may hold: 2^33 (32 GiB of float32). Shapes computed from data and
    /// attributes (kernels) above it are errors naming the tensor. Generous on purpose: it only
    /// stops requests no real model makes.
    static let maxElements = 1 << 33
    /// Elements a tensor in a model or checkpoint file may claim in its dims: 2^40. Claims up to it
    /// are checked against the data the file holds (naming both); larger ones are corrupt dims.
    static let maxDeclaredElements = 1 << 40
    /// Entries of a per-element index map (movement kernels gather through one Int per output
    /// element, 8 bytes each) and of any one axis: 2^30, so a map stays within 8 GiB.
    static let maxIndexMapElements = 1 << 30
    /// Kernel outputs up to this many bytes come from the runtime's block cache (reused every
    /// step); larger ones are allocated directly, where a failed allocation is an error (1 GiB).
    static let maxCachedBytes = 1 << 30
}

extension Tensor {
    /// The element count of `shape`, or a KernelError naming `what` and the shape when a dimension
    /// is negative, the product overflows Int, or it exceeds `SizePolicy.maxElements`.
    static func checkedElementCount(_ shape: [Int], _ what: @autoclosure () -> String = "output") throws -> Int {
        var n = 1
        for d in shape {
            let (p, overflow) = n.multipliedReportingOverflow(by: d)
            guard d >= 0, !overflow, p <= SizePolicy.maxElements else {
                throw KernelError("\(what()) shape \(shape) is too large to allocate (more than \(SizePolicy.maxElements) elements)")
            }
            n = p
        }
        return n
    }

    /// A zero-filled tensor for a kernel output whose shape derives from data or attributes:
    /// throws a KernelError naming the shape instead of trapping when it cannot be allocated.
    init(kernelZeros dtype: DType, shape: [Int], _ what: @autoclosure () -> String = "output") throws {
        let count = try Tensor.checkedElementCount(shape, what())
        if dtype == .string { self.init(zeros: dtype, shape: shape); return }
        guard let storage = TensorStorage(failableZeroedByteCount: count * dtype.byteSize) else {
            throw KernelError("\(what()) shape \(shape) (\(count * dtype.byteSize) bytes of \(dtype)) cannot be allocated: out of memory")
        }
        self.init(dtype: dtype, shape: shape, storage: storage)
    }
}

extension Array where Element: Numeric {
    /// A zeroed scratch buffer of `shape.product` elements, checked like `Tensor(kernelZeros:)`.
    init(kernelScratch shape: [Int], _ what: @autoclosure () -> String = "scratch buffer") throws {
        let count = try Tensor.checkedElementCount(shape, what())
        self.init(repeating: 0, count: count)
    }
}

extension Tensor {
    /// An uninitialized tensor for a kernel output it overwrites completely, with the size checks
    /// of `Tensor(kernelZeros:)` (a shape from hostile attributes throws instead of trapping) and
    /// no memset.
    init(kernelUninitialized dtype: DType, shape: [Int], _ what: @autoclosure () -> String = "output") throws {
        let count = try Tensor.checkedElementCount(shape, what())
        precondition(dtype != .string, "string tensors are built from strings")
        if count * dtype.byteSize <= SizePolicy.maxCachedBytes { self.init(uninitialized: dtype, shape: shape); return }
        let bytes = max(count * dtype.byteSize, 64)
        var raw: UnsafeMutableRawPointer?
        guard posix_memalign(&raw, 64, bytes) == 0, let raw else {
            throw KernelError("\(what()) shape \(shape) (\(bytes) bytes of \(dtype)) cannot be allocated: out of memory")
        }
        self.init(dtype: dtype, shape: shape, storage: TensorStorage(borrowing: raw, byteCount: count * dtype.byteSize, release: { free(raw) }))
    }
}
