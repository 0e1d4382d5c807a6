#if canImport(Glibc)
import Glibc
#endif
import Synchronization

/// A constant input that its node's kernel may consume: once the kernel holds a form of it that
/// serves every later call (a weight packed for oneDNN), `release()` drops the executor's
/// references to the original, whose memory then goes back to the system (as onnxruntime frees
/// an initializer once it is prepacked). The executor hands one out (`NodeContext.releasableConstant`)
/// only for an initializer of an inference session that its node alone reads, once among its
/// inputs: not a graph input or output, not captured by a subgraph, not read by another node.
///
/// The contract with the kernel that takes it: after `release()`, every call of the kernel gets,
/// in place of the original, `placeholder`: a tensor of the same element type and shape whose
/// bytes are unreadable (an inaccessible mapping, no memory: a read faults rather than computes
/// with wrong values). The kernel must never read it, so it releases only when every path a later
/// call may take is served from its own form (decided before releasing, not after: another shape,
/// another row count, a refused allocation). `holds(_:)` tells whether a tensor a call received is
/// this constant (before release the original itself, not a converted copy of it).
///
/// The storage is never written, and a `Model` that shares it (a session built from the caller's
/// `Model`) keeps it alive and intact: then nothing is freed, only the executor's references go.
/// For a model the session read from a file, the session drops its own copy of such an
/// initializer when the kernel takes the handle (it is read from the file again if a fetch needs
/// the unoptimised graph), and a fetch of the initializer's name runs on that graph.
///
/// For convolution weights packed by oneDNN (`DnnlConv`), the same three calls: take the handle in
/// the kernel's factory (`ctx.releasableConstant(1)`), check `holds(w)` on the call that packs, and
/// `release()` once the packed weights serve every call (or keep the handle unused).
public final class ConstantRelease: @unchecked Sendable {
    /// The constant's slot in the executor's frame, and its name.
    let slot: Int
    let name: String
    /// Stands in for the constant after release: same element type and shape, unreadable bytes.
    public let placeholder: Tensor
    private let original: ObjectIdentifier
    /// The original while held (a value the lock hands between threads: only read, never written).
    private struct Held: @unchecked Sendable { var value: Value? }
    private let state: Mutex<Held>
    private let releasedFlag = Atomic<Bool>(false)

    /// nil where no placeholder can be mapped (or the tensor is a string tensor or empty).
    init?(slot: Int, name: String, tensor: Tensor) {
        guard tensor.dtype != .string, tensor.storage.byteCount > 0 else { return nil }
        let bytes = tensor.storage.byteCount
        let raw = mmap(nil, bytes, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0)
        guard let raw, raw != UnsafeMutableRawPointer(bitPattern: -1) else { return nil }
        let storage = TensorStorage(borrowing: raw, byteCount: bytes, release: { munmap(raw, bytes) })
        placeholder = Tensor(dtype: tensor.dtype, shape: tensor.shape, storage: storage)
        self.slot = slot
        self.name = name
        original = ObjectIdentifier(tensor.storage)
        state = Mutex(Held(value: .tensor(tensor)))
    }

    /// Whether `release()` has run.
    public var isReleased: Bool { releasedFlag.load(ordering: .acquiring) }

    /// Whether `tensor` is this constant as the executor passes it: the original (while it is
    /// held) or the placeholder.
    public func holds(_ tensor: Tensor) -> Bool {
        if tensor.storage === placeholder.storage { return true }
        return state.withLock { held in
            guard case .tensor(let t)? = held.value else { return false }
            return ObjectIdentifier(t.storage) == original && ObjectIdentifier(tensor.storage) == original
                && t.shape == tensor.shape && t.dtype == tensor.dtype
        }
    }

    /// Drops the executor's references to the original: runs that start from now on pass
    /// `placeholder`; a run in flight keeps the original until its node has run. Its block goes
    /// straight back to the system (or malloc) when the last reference goes, not to `BufferCache`.
    public func release() {
        let dropped = state.withLock { held -> Held in
            let old = held
            held.value = nil
            return old
        }.value
        guard let dropped else { return }
        if case .tensor(let t) = dropped { t.storage.discardsBlock = true }
        releasedFlag.store(true, ordering: .releasing)
    }

    /// What a run passes for the constant: the original, or the placeholder once released.
    var current: Value { state.withLock { $0 }.value ?? .tensor(placeholder) }
}
