/// Throwing, size-capped allocation for kernels whose output or scratch size comes from input
/// data or attributes (Conv pads of 1 << 20, pooling kernel_shape near Int.max, Reshape-like
/// shapes): an overflowing or absurd request becomes one KernelError naming the shape instead of
/// an Int overflow trap or an out-of-memory fatalError. One check per allocation, none per element.
extension Tensor {
    /// The most elements one kernel allocation may hold (2^33: 32 GiB of float32). Generous on
    /// purpose: it only stops requests no real model makes.
    static let maxKernelElements = 1 << 33

    /// The element count of `shape`, or a KernelError naming `what` and the shape when a dimension
    /// is negative, the product overflows Int, or it exceeds `maxKernelElements`.
    static func checkedElementCount(_ shape: [Int], _ what: @autoclosure () -> String = "output") throws -> Int {
        var n = 1
        for d in shape {
            let (p, overflow) = n.multipliedReportingOverflow(by: d)
            guard d >= 0, !overflow, p <= maxKernelElements else {
                throw KernelError("\(what()) shape \(shape) is too large to allocate (more than \(maxKernelElements) elements)")
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
