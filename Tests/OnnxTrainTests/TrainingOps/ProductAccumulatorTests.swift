import Foundation
import XCTest
@testable import OnnxTrain

/// `ProductIntoAccumulator`: a weight gradient's product (Gemm, MatMul, FusedMatMul) read only by
/// InPlaceAccumulatorV2 becomes one ProductAccumulator node whose GEMM writes into the
/// accumulation buffer. Every case runs the graph optimised and with the optimisations off (the
/// product into a new tensor, then InPlaceAccumulatorV2 as onnxruntime defines it: overwrite copies,
/// otherwise buffer += value broadcast), each on its own copy of the buffer, and checks the buffer
/// written where it lives against float64 evaluation of the definition.
final class ProductAccumulatorTests: XCTestCase {
    enum Product { case gemm(transA: Bool, transB: Bool, alpha: Float), matMul, fusedMatMul(transA: Bool, transB: Bool, alpha: Float) }

    /// buffer, a, b, flag -> product -> InPlaceAccumulatorV2(buffer, product, flag) -> updated.
    func model(_ product: Product, flag: Bool = true, productIsOutput: Bool = false, bufferReadAgain: Bool = false) -> Model {
        var g = Graph()
        g.inputs = ["buffer", "a", "b"].map { ValueInfo(name: $0, type: nil) }
        if flag { g.inputs.append(ValueInfo(name: "flag", type: nil)) }
        switch product {
        case .gemm(let tA, let tB, let alpha):
            g.nodes.append(Node(opType: "Gemm", inputs: ["a", "b"], outputs: ["dw"],
                                attributes: ["transA": .int(tA ? 1 : 0), "transB": .int(tB ? 1 : 0), "alpha": .float(alpha), "beta": .float(0)]))
        case .matMul:
            g.nodes.append(Node(opType: "MatMul", inputs: ["a", "b"], outputs: ["dw"]))
        case .fusedMatMul(let tA, let tB, let alpha):
            g.nodes.append(Node(opType: "FusedMatMul", domain: "com.microsoft", inputs: ["a", "b"], outputs: ["dw"],
                                attributes: ["transA": .int(tA ? 1 : 0), "transB": .int(tB ? 1 : 0), "alpha": .float(alpha)]))
        }
        g.nodes.append(Node(opType: "InPlaceAccumulatorV2", domain: "com.microsoft", inputs: ["buffer", "dw"] + (flag ? ["flag"] : []),
                            outputs: ["updated", "buffer_out"]))
        g.outputs = [ValueInfo(name: "updated", type: nil)]
        if productIsOutput { g.outputs.append(ValueInfo(name: "dw", type: nil)) }
        if bufferReadAgain {
            g.nodes.insert(Node(opType: "Neg", inputs: ["buffer"], outputs: ["negated"]), at: 0)
            g.outputs.append(ValueInfo(name: "negated", type: nil))
        }
        var m = Model(graph: g)
        m.opsetImports = ["": 17, "com.microsoft": 1]
        return m
    }

    func fusedOpTypes(_ model: Model) throws -> [String] {
        var m = model
        try PassPipeline.optimizing().run(&m)
        return m.graph.nodes.map(\.opType)
    }

    static func random<T: FloatElement & TensorElement>(_ shape: [Int], seed: UInt64, _ type: T.Type) -> Tensor {
        var g = RandomGenerator(seed: seed)
        return Tensor(shape: shape, scalars: (0..<Tensor.elementCount(shape)).map { _ in T(fromDouble: g.nextDouble() * 2 - 1) })
    }

    /// A copy in a storage of its own.
    static func copy(_ t: Tensor) throws -> Tensor { try Tensor(dtype: t.dtype, shape: t.shape, doubles: t.doubles()) }

    /// Runs the graph optimised and plain on copies of `buffer`; returns both buffers after the run.
    func runBoth(_ model: Model, buffer: Tensor, a: Tensor, b: Tensor, overwrite: Bool?) throws -> (fused: Tensor, plain: Tensor) {
        try Self.runBoth(model, buffer: buffer, feeds: ["a": a, "b": b], overwrite: overwrite)
    }

    /// Runs an accumulating graph optimised and plain, each on its own copy of `buffer` (fed as
    /// "buffer", with `feeds` and the overwrite "flag" when given); returns both buffers after the run.
    static func runBoth(_ model: Model, buffer: Tensor, feeds: [String: Tensor], overwrite: Bool?,
                        file: StaticString = #filePath, line: UInt = #line) throws -> (fused: Tensor, plain: Tensor) {
        var plainOptions = SessionOptions()
        plainOptions.optimize = false
        var results: [Tensor] = []
        for options in [SessionOptions(), plainOptions] {
            let target = try copy(buffer)
            var all = feeds
            all["buffer"] = target
            if let overwrite { all["flag"] = Tensor(shape: [1], scalars: [overwrite]) }
            let out = try InferenceSession(model: model, options: options).run(tensors: all)
            XCTAssertEqual(out["updated"]?.scalars(as: Bool.self), [true], file: file, line: line)
            results.append(target)
        }
        return (results[0], results[1])
    }

    /// buffer (unless overwritten) + alpha·op(A)·op(B) in float64, from the same inputs.
    func reference(buffer: Tensor, a: Tensor, b: Tensor, transA: Bool, transB: Bool, alpha: Double, overwrite: Bool) throws -> [Double] {
        let av = try a.doubles(), bv = try b.doubles(), cv = try buffer.doubles()
        let m = transA ? a.shape[1] : a.shape[0], k = transA ? a.shape[0] : a.shape[1]
        let n = transB ? b.shape[0] : b.shape[1]
        return (0..<(m * n)).map { idx in
            let (i, j) = (idx / n, idx % n)
            var s = 0.0
            for p in 0..<k { s += (transA ? av[p * m + i] : av[i * k + p]) * (transB ? bv[j * k + p] : bv[p * n + j]) }
            return (overwrite ? 0 : cv[idx]) + alpha * s
        }
    }

    static func largestDifference(_ x: [Double], _ y: [Double]) -> Double {
        zip(x, y).reduce(0) { max($0, abs($1.0 - $1.1) / max(1, abs($1.1))) }
    }

    /// The training graph's form (dW = dYᵀ·X, Gemm transA) for float32 and float64, overwriting
    /// and adding, with K 16 and 64 (one OpenBLAS block), 700 (several), the matrix-vector
    /// shapes (m 1, n 1, which BLAS.gemm runs as gemv), a 512x300 product with K 64 (row
    /// blocks of OpenBLAS's small-matrix kernels where it has them) and the MLP benchmark's 512x784
    /// dW (each thread's rows as two column pieces of 32-row blocks): overwriting, and adding with a GEMM over
    /// one K block, bit-identical to the plain graph; adding over several K blocks or through gemv
    /// sums in another order (measured: float32 8.9e-7, float64 8.9e-16 relative; 2.2e-15 on OpenBLAS's Haswell kernels); against float64
    /// evaluation within float rounding (measured: float32 1.13e-5 at K 700, float64 2.5e-14).
    func testGemmIntoTheBufferMatchesProductThenAccumulator() throws {
        XCTAssertEqual(try fusedOpTypes(model(.gemm(transA: true, transB: false, alpha: 1))), ["ProductAccumulator"])
        var worstOrder32 = 0.0, worstOrder64 = 0.0, worstReference32 = 0.0, worstReference64 = 0.0
        let openBLASAVX512 = BLAS.openBLASRunsAVX512
        for (m, n, k) in [(37, 29, 64), (128, 96, 700), (1, 29, 64), (37, 1, 64), (64, 200, 16), (512, 300, 64), (512, 784, 64)] {
            for overwrite in [true, false] {
                for double in [false, true] {
                    let seed = UInt64(m * 1000 + n * 10 + k)
                    let a = double ? Self.random([k, m], seed: seed, Double.self) : Self.random([k, m], seed: seed, Float.self)
                    let b = double ? Self.random([k, n], seed: seed + 1, Double.self) : Self.random([k, n], seed: seed + 1, Float.self)
                    let buffer = double ? Self.random([m, n], seed: seed + 2, Double.self) : Self.random([m, n], seed: seed + 2, Float.self)
                    let (fused, plain) = try runBoth(model(.gemm(transA: true, transB: false, alpha: 1)), buffer: buffer, a: a, b: b, overwrite: overwrite)
                    let difference = Self.largestDifference(try fused.doubles(), try plain.doubles())
                    if overwrite || (k <= 64 && m > 1 && n > 1) {
                        // Bit for bit on OpenBLAS's AVX-512 kernels; its Haswell ones (OPENBLAS_CORETYPE=Haswell)
                        // round blocks of other shapes differently (measured 2.2e-6 relative, float32).
                        XCTAssertLessThanOrEqual(difference, openBLASAVX512 || double ? 0 : 1e-5,
                                                 "m \(m) n \(n) k \(k) overwrite \(overwrite) float64 \(double)")
                    } else if double {
                        worstOrder64 = max(worstOrder64, difference)
                    } else {
                        worstOrder32 = max(worstOrder32, difference)
                    }
                    let expected = try reference(buffer: buffer, a: a, b: b, transA: true, transB: false, alpha: 1, overwrite: overwrite)
                    let error = Self.largestDifference(try fused.doubles(), expected)
                    if double { worstReference64 = max(worstReference64, error) } else { worstReference32 = max(worstReference32, error) }
                }
            }
        }
        print("ProductAccumulator: adding in another order vs plain: float32 \(worstOrder32), float64 \(worstOrder64); vs float64 reference: float32 \(worstReference32), float64 \(worstReference64)")
        XCTAssertLessThan(worstOrder32, 2e-6)
        XCTAssertLessThan(worstOrder64, 4e-15)   // 8.9e-16 on OpenBLAS's AVX-512 kernels, 2.2e-15 on its Haswell ones
        XCTAssertLessThan(worstReference32, 2e-5)
        XCTAssertLessThan(worstReference64, 1e-13)
    }

    /// The blocks of a weight gradient's product: the fewest column pieces (multiples of 16) whose
    /// row blocks of 32 or more stay within OpenBLAS's small-matrix limit of 10^6 multiply-adds,
    /// on cores with those kernels; none past K 256 or where the kernels are missing.
    func testSmallProductTiles() {
        let expected: [(n: Int, k: Int, tile: (rows: Int, columns: Int)?)] = [
            (784, 64, (32, 400)),    // the MLP's dW1: 784 wide needs 16-row blocks, two 400-column pieces 32
            (512, 64, (56, 256)),    // dW2
            (300, 64, (48, 304)),    // one piece (wider than n: the block is n wide)
            (784, 300, nil),         // K past one of OpenBLAS's blocks
        ]
        for (n, k, tile) in expected {
            let got = SmallProducts.tile(n: n, k: k)
            if SmallProducts.available, let tile {
                XCTAssertEqual(got?.rows, tile.rows, "n \(n) k \(k)")
                XCTAssertEqual(got?.columns, tile.columns, "n \(n) k \(k)")
                XCTAssertLessThanOrEqual(tile.rows * min(tile.columns, n) * k, SmallProducts.limit)
            } else {
                XCTAssertNil(got, "n \(n) k \(k)")
            }
        }
    }

    /// A PyTorch Linear weight, stored [out, in] and transposed for the forward MatMul: its
    /// gradient is made [in, out] (Gemm transA of the rows X and dY), transposed back and passed
    /// through an Identity to its accumulator. The Transpose becomes swapped operands (dY as A,
    /// transA) and the product then writes into the buffer: one ProductAccumulator. The buffer,
    /// overwritten and added to, matches float64 evaluation of buffer + dYᵀ·X within float32
    /// rounding of a 300-term sum, and the plain graph's result to the same rounding.
    func testTransposedWeightGradientIntoTheBuffer() throws {
        let (rows, inputs, outputs) = (300, 24, 40)
        var g = Graph()
        g.inputs = [ValueInfo(name: "buffer", type: .tensor(.float32, shape: [.value(outputs), .value(inputs)])),
                    ValueInfo(name: "x", type: .tensor(.float32, shape: [.value(rows), .value(inputs)])),
                    ValueInfo(name: "dy", type: .tensor(.float32, shape: [.value(rows), .value(outputs)])),
                    ValueInfo(name: "flag", type: .tensor(.bool, shape: [.value(1)]))]
        g.nodes = [Node(opType: "Gemm", inputs: ["x", "dy"], outputs: ["dwt"], attributes: ["transA": .int(1), "alpha": .float(1), "beta": .float(0)]),
                   Node(opType: "Transpose", inputs: ["dwt"], outputs: ["dw"], attributes: ["perm": .ints([1, 0])]),
                   Node(opType: "Identity", inputs: ["dw"], outputs: ["dw_identity"]),
                   Node(opType: "InPlaceAccumulatorV2", domain: "com.microsoft", inputs: ["buffer", "dw_identity", "flag"],
                        outputs: ["updated", "buffer_out"])]
        g.outputs = [ValueInfo(name: "updated", type: nil)]
        var m = Model(graph: g)
        m.opsetImports = ["": 17, "com.microsoft": 1]
        XCTAssertEqual(try fusedOpTypes(m), ["ProductAccumulator"])
        let x = Self.random([rows, inputs], seed: 21, Float.self), dy = Self.random([rows, outputs], seed: 22, Float.self)
        for overwrite in [true, false] {
            let buffer = Self.random([outputs, inputs], seed: 23, Float.self)
            let (fused, plain) = try Self.runBoth(m, buffer: buffer, feeds: ["x": x, "dy": dy], overwrite: overwrite)
            let expected = try reference(buffer: buffer, a: dy, b: x, transA: true, transB: false, alpha: 1, overwrite: overwrite)
            // |x|, |dy| < 1: each product term is below 1, so a 300-term sum rounds within 300·2⁻²⁴·300.
            let bound = Double(rows) * 0x1p-24 * Double(rows)
            XCTAssertLessThan(Self.largestDifference(try fused.doubles(), expected), bound, "overwrite \(overwrite)")
            XCTAssertLessThan(Self.largestDifference(try fused.doubles(), try plain.doubles()), 2 * bound, "overwrite \(overwrite)")
        }
    }

    /// MatMul and FusedMatMul (transposes, alpha), with the overwrite flag absent (an add).
    func testMatMulAndFusedMatMulIntoTheBuffer() throws {
        let cases: [(Product, [Int], [Int], Bool, Bool, Double)] = [
            (.matMul, [23, 40], [40, 17], false, false, 1),
            (.fusedMatMul(transA: true, transB: true, alpha: 0.5), [40, 23], [17, 40], true, true, 0.5),
            (.fusedMatMul(transA: false, transB: true, alpha: 1), [23, 40], [17, 40], false, true, 1),
        ]
        for (product, aShape, bShape, tA, tB, alpha) in cases {
            let m = model(product, flag: false)
            XCTAssertEqual(try fusedOpTypes(m), ["ProductAccumulator"])
            let a = Self.random(aShape, seed: 5, Float.self), b = Self.random(bShape, seed: 6, Float.self)
            let buffer = Self.random([23, 17], seed: 7, Float.self)
            let (fused, plain) = try runBoth(m, buffer: buffer, a: a, b: b, overwrite: nil)
            XCTAssertEqual(try fused.doubles(), try plain.doubles(), "\(product)")
            let expected = try reference(buffer: buffer, a: a, b: b, transA: tA, transB: tB, alpha: alpha, overwrite: false)
            XCTAssertLessThan(Self.largestDifference(try fused.doubles(), expected), 1e-5, "\(product)")
        }
    }

    /// Inputs the direct GEMM does not take go through the product and InPlaceAccumulatorV2 as
    /// before: a product broadcast into a larger buffer, an overwrite of a buffer of another shape
    /// but the same size (taken directly), a float64 buffer with float32 operands, batched MatMul
    /// operands; and a size mismatch fails as the plain graph does.
    func testInputsOutsideTheDirectPathMatchThePlainGraph() throws {
        let gemm = model(.gemm(transA: false, transB: false, alpha: 1))
        let a1 = Self.random([1, 8], seed: 11, Float.self), b = Self.random([8, 6], seed: 12, Float.self)
        // [1, 6] added to every row of a [4, 6] buffer.
        var (fused, plain) = try runBoth(gemm, buffer: Self.random([4, 6], seed: 13, Float.self), a: a1, b: b, overwrite: false)
        XCTAssertEqual(try fused.doubles(), try plain.doubles())
        // A [3, 6] product overwriting an [18] buffer, and a float64 buffer.
        let a3 = Self.random([3, 8], seed: 14, Float.self)
        (fused, plain) = try runBoth(gemm, buffer: Self.random([18], seed: 15, Float.self), a: a3, b: b, overwrite: true)
        XCTAssertEqual(try fused.doubles(), try plain.doubles())
        (fused, plain) = try runBoth(gemm, buffer: Self.random([3, 6], seed: 16, Double.self), a: a3, b: b, overwrite: false)
        XCTAssertEqual(try fused.doubles(), try plain.doubles())
        XCTAssertEqual(fused.dtype, .float64)
        // Batched MatMul: [2, 3, 8] x [8, 6] into [2, 3, 6].
        (fused, plain) = try runBoth(model(.matMul), buffer: Self.random([2, 3, 6], seed: 17, Float.self),
                                     a: Self.random([2, 3, 8], seed: 18, Float.self), b: b, overwrite: false)
        XCTAssertEqual(try fused.doubles(), try plain.doubles())
        // Overwriting a buffer of another size fails in both.
        XCTAssertThrowsError(try runBoth(gemm, buffer: Self.random([5, 6], seed: 19, Float.self), a: a3, b: b, overwrite: true)) { error in
            XCTAssertTrue("\(error)".contains("must have the buffer's size"), "\(error)")
        }
    }

    /// The pass leaves the pair alone when the product is a graph output or the buffer has another
    /// reader (the write would move before it).
    func testPassKeepsProductsReadElsewhere() throws {
        let product = Product.gemm(transA: true, transB: false, alpha: 1)
        XCTAssertEqual(try fusedOpTypes(model(product, productIsOutput: true)), ["Gemm", "InPlaceAccumulatorV2"])
        XCTAssertEqual(try fusedOpTypes(model(product, bufferReadAgain: true)), ["Neg", "Gemm", "InPlaceAccumulatorV2"])
    }

    /// A flag made between the product and the accumulator keeps the pair (the fused node would run
    /// before its flag exists); the graph still runs and updates the buffer as defined.
    func testPassKeepsPairsWhoseFlagIsMadeAfterTheProduct() throws {
        var m = model(.matMul)
        m.graph.inputs[3] = ValueInfo(name: "keep", type: nil)
        m.graph.nodes.insert(Node(opType: "Not", inputs: ["keep"], outputs: ["flag"]), at: 1)
        XCTAssertEqual(try fusedOpTypes(m), ["MatMul", "Not", "InPlaceAccumulatorV2"])
        let buffer = Self.random([3, 5], seed: 7, Float.self), a = Self.random([3, 4], seed: 8, Float.self)
        let b = Self.random([4, 5], seed: 9, Float.self)
        let target = try Self.copy(buffer)
        _ = try InferenceSession(model: m).run(tensors: ["buffer": target, "a": a, "b": b, "keep": Tensor(shape: [1], scalars: [true])])
        let expected = try reference(buffer: buffer, a: a, b: b, transA: false, transB: false, alpha: 1, overwrite: false)
        for (x, y) in zip(try target.doubles(), expected) { XCTAssertEqual(x, y, accuracy: 1e-6) }
    }
}
