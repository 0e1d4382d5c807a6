import OnnxTrain
import OnnxTrainTestSupport
import XCTest
@testable import OnnxTrain

/// Neural-network ops: the onnxruntime fixtures in Tests/Fixtures/nn (combinations the ONNX suite
/// leaves out), plus hand-checked geometry, small-float and error cases.
final class NeuralNetTests: XCTestCase {
    func testFixturesMatchOnnxruntime() throws {
        var runner = ConformanceRunner()
        runner.tolerance = Tolerance(rtol: 1e-4, atol: 1e-5)
        let cases = try Fixtures.cases(in: "nn")
        XCTAssertGreaterThan(cases.count, 20)
        for name in cases {
            let result = runner.run(directory: Fixtures.path("nn/" + name))
            XCTAssertTrue(result.passed, "\(name): \(result.reason ?? "")")
        }
    }

    // MARK: Geometry

    func testSameUpperAndLowerPutTheOddPadAtOppositeEnds() throws {
        // in 5, kernel 4, stride 2 -> out 3, total pad (3-1)*2 + 4 - 5 = 3
        let upper = try ConvGeometry(input: [5], kernel: [4], strides: [2], autoPad: .sameUpper)
        XCTAssertEqual(upper.output, [3]); XCTAssertEqual(upper.padsBegin, [1]); XCTAssertEqual(upper.padsEnd, [2])
        let lower = try ConvGeometry(input: [5], kernel: [4], strides: [2], autoPad: .sameLower)
        XCTAssertEqual(lower.padsBegin, [2]); XCTAssertEqual(lower.padsEnd, [1])
    }

    func testCeilModeDropsAWindowStartingInTheEndPadding() throws {
        // in 4, kernel 2, stride 2, pads 1/1: ceil gives 3 windows at -1, 1, 3 -> all start inside.
        XCTAssertEqual(try ConvGeometry(input: [4], kernel: [2], strides: [2], pads: [1, 1], ceilMode: true).output, [3])
        // in 3, kernel 2, stride 2, pads 0/1: the third window would start at 4 >= 3 + 0 -> dropped.
        XCTAssertEqual(try ConvGeometry(input: [3], kernel: [2], strides: [2], pads: [0, 1], ceilMode: true).output, [2])
    }

    func testIm2colThenCol2imCountsWindowOverlaps() throws {
        // col2im(im2col(ones)) = how many windows cover each pixel.
        let g = try ConvGeometry(input: [3, 3], kernel: [2, 2], pads: [0, 0, 0, 0])
        let x = [Float](repeating: 1, count: 9)
        var col = [Float](repeating: -1, count: 4 * g.outputSize)
        x.withUnsafeBufferPointer { px in col.withUnsafeMutableBufferPointer { im2col(px.baseAddress!, channels: 1, g, $0.baseAddress!) } }
        XCTAssertEqual(col, [Float](repeating: 1, count: 16))
        var back = [Float](repeating: 0, count: 9)
        col.withUnsafeBufferPointer { pc in back.withUnsafeMutableBufferPointer { col2im(pc.baseAddress!, channels: 1, g, $0.baseAddress!) } }
        XCTAssertEqual(back, [1, 2, 1, 2, 4, 2, 1, 2, 1])
    }

    // MARK: Errors, not traps

    func testOutOfRangeTargetThrows() {
        let x = Tensor(shape: [1, 2], scalars: [Float(0.1), 0.2])
        let target = Tensor(shape: [1], scalars: [Int64(5)])
        XCTAssertThrowsError(try runNode("NegativeLogLikelihoodLoss", opset: 13, [x, target]))
    }

    func testMismatchedConvWeightThrows() {
        let x = Tensor(zeros: .float32, shape: [1, 3, 4, 4]), w = Tensor(zeros: .float32, shape: [2, 2, 3, 3])
        XCTAssertThrowsError(try runNode("Conv", opset: 17, [x, w]))
    }

    func testMaxUnpoolIndexOutOfRangeThrows() {
        let x = Tensor(shape: [1, 1, 1, 1], scalars: [Float(3)]), i = Tensor(shape: [1, 1, 1, 1], scalars: [Int64(99)])
        XCTAssertThrowsError(try runNode("MaxUnpool", opset: 11, [x, i], attributes: ["kernel_shape": .ints([2, 2]), "strides": .ints([2, 2])]))
    }

    // MARK: Quantization

    func testFloat8RoundsHalfToEvenAndSaturates() throws {
        // e4m3fn: 1.0625 lies halfway between 1.0 (mantissa 000) and 1.125 (001) -> 1.0;
        // 1000 saturates to 448 (0x7E); 2^-9 is the smallest subnormal.
        let x = Tensor(shape: [4], scalars: [Float(1.0625), 1000, -1, 0.001953125])
        let y = try runNode("QuantizeLinear", opset: 19, [x, Tensor(scalar: Float(1)), Tensor(dtype: .float8e4m3fn, shape: [], storage: Tensor(scalar: UInt8(0)).storage)])[0]
        XCTAssertEqual(y.dtype, .float8e4m3fn)
        XCTAssertEqual(Array(y.rawBytes), [0x38, 0x7E, 0xB8, 0x01])
    }

    func testPerAxisQuantizeRoundsTiesToEven() throws {
        let x = Tensor(shape: [2, 2], scalars: [Float(2.5), 3.5, -2.5, 300])
        let scale = Tensor(shape: [2], scalars: [Float(1), 1]), zp = Tensor(shape: [2], scalars: [Int8(0), Int8(1)])
        let y = try runNode("QuantizeLinear", opset: 13, [x, scale, zp], attributes: ["axis": .int(1)])[0]
        XCTAssertEqual(y.scalars(as: Int8.self), [2, 5, -2, 127])
    }

    // MARK: Dropout

    func testTrainingDropoutKeepsAboutOneMinusRatioAndRescales() throws {
        let x = Tensor(shape: [2000], scalars: [Float](repeating: 1, count: 2000))
        let attributes: [String: Attribute] = ["seed": .int(7)]
        let run = { try runNode("Dropout", opset: 13, [x, Tensor(scalar: Float(0.25)), Tensor(scalar: true)], attributes: attributes, outputs: 2) }
        let first = try run(), second = try run()
        let y = first[0].scalars(as: Float.self), mask = first[1].scalars(as: Bool.self)
        for (v, m) in zip(y, mask) { XCTAssertEqual(v, m ? Float(4.0 / 3.0) : 0, accuracy: 1e-6) }
        let kept = Double(mask.filter { $0 }.count) / Double(mask.count)
        XCTAssertEqual(kept, 0.75, accuracy: 0.04)
        XCTAssertEqual(second[1].scalars(as: Bool.self), mask, "the seed attribute makes the mask reproducible")
    }

    func testInferenceDropoutIsIdentityWithAllTrueMask() throws {
        let x = Tensor(shape: [3], scalars: [Float(1), -2, 3])
        let out = try runNode("Dropout", opset: 13, [x, Tensor(scalar: Float(0.5))], outputs: 2)
        XCTAssertEqual(out[0].scalars(as: Float.self), [1, -2, 3])
        XCTAssertEqual(out[1].scalars(as: Bool.self), [true, true, true])
    }

    // MARK: Pooling indices

    func testMaxPoolIndicesIncludeBatchAndChannelOffsets() throws {
        // x [2, 1, 2, 2]; a 2×2 window per image: the argmax of image 1 is offset by 4.
        let x = Tensor(shape: [2, 1, 2, 2], scalars: [Float(1), 5, 2, 3, 9, 0, 1, 2])
        let out = try runNode("MaxPool", opset: 12, [x], attributes: ["kernel_shape": .ints([2, 2])], outputs: 2)
        XCTAssertEqual(out[0].scalars(as: Float.self), [5, 9])
        XCTAssertEqual(out[1].scalars(as: Int64.self), [1, 4])
    }

    func testMatMulIntegerRejectsAZeroPointOfTheWrongLength() {
        let a = Tensor(shape: [2, 2], scalars: [UInt8(1), 2, 3, 4]), b = Tensor(shape: [2, 2], scalars: [UInt8(1), 0, 0, 1])
        let zp = Tensor(shape: [3], scalars: [UInt8(0), 0, 0])
        XCTAssertThrowsError(try runNode("MatMulInteger", opset: 10, [a, b, zp]))
        XCTAssertEqual(try runNode("MatMulInteger", opset: 10, [a, b, Tensor(shape: [2], scalars: [UInt8(1), 2])])[0].scalars(as: Int32.self), [0, 1, 1, 2])
    }

    func testGemmBroadcastsEveryBiasShape() throws {
        // A·B = [[1, 2, 3], [4, 5, 6]]·[[1, 0], [0, 1], [1, 1]] = [[4, 5], [10, 11]]; Y = A·B + 0.5·C.
        let a = Tensor(shape: [2, 3], scalars: [Float(1), 2, 3, 4, 5, 6]), b = Tensor(shape: [3, 2], scalars: [Float(1), 0, 0, 1, 1, 1])
        let cases: [(Tensor?, [Float])] = [
            (Tensor(shape: [2, 1], scalars: [Float(10), 20]), [9, 10, 20, 21]),      // per row
            (Tensor(shape: [2], scalars: [Float(10), 20]), [9, 15, 15, 21]),         // per column
            (Tensor(shape: [1, 2], scalars: [Float(10), 20]), [9, 15, 15, 21]),
            (Tensor(scalar: Float(10)), [9, 10, 15, 16]),
            (Tensor(shape: [1, 1], scalars: [Float(10)]), [9, 10, 15, 16]),
            (Tensor(shape: [2, 2], scalars: [Float(1), 2, 3, 4]), [4.5, 6, 11.5, 13]),
            (nil, [4, 5, 10, 11]),
        ]
        for (c, expected) in cases {
            let inputs = c.map { [a, b, $0] } ?? [a, b]
            assertClose(try runNode("Gemm", opset: 13, inputs, attributes: ["beta": .float(0.5)])[0], expected, shape: [2, 2])
            // The same in float64, and with B transposed (a flag, no copy).
            let wide = try runNode("Gemm", opset: 13, try inputs.map { try $0.converted(toFloat: .float64) }, attributes: ["beta": .float(0.5)])[0]
            XCTAssertEqual(wide.scalars(as: Double.self), expected.map { Double($0) })
            let bt = Tensor(shape: [2, 3], scalars: [Float(1), 0, 1, 0, 1, 1])
            assertClose(try runNode("Gemm", opset: 13, [a, bt] + (c.map { [$0] } ?? []), attributes: ["beta": .float(0.5), "transB": .int(1)])[0],
                        expected, shape: [2, 2])
        }
    }

    /// Gemm with beta 1 and a bias row (C of shape [n], [1, n]; a fully connected layer's) hands
    /// the bias to the GEMM, each thread writing it into its own block of Y: bit for bit the
    /// result of the same Gemm given C broadcast to [m, n] in full where both run the same product
    /// (B transposed, as PyTorch's Linear exports it, or one thread; with B plain the full-C
    /// Gemm splits K, and the two agree to float32 rounding), and within float32 rounding of
    /// a K-term sum of float64 evaluation; the small case and a product large enough to run on
    /// every thread (64x512x784, the MLP benchmark's first layer), B plain and transposed, alpha
    /// 1 and 0.5, and a Gemm with K 0 (every row the bias).
    func testGemmBiasRowMatchesFullBias() throws {
        for (m, n, k) in [(2, 3, 2), (64, 512, 784), (3, 5, 0)] {
            for transB in [false, true] {
                for alpha in [Float(1), 0.5] {
                    let label = "m \(m) n \(n) k \(k) transB \(transB) alpha \(alpha)"
                    let a = randomDoubles([m, k], seed: UInt64(m + n + k)), b = randomDoubles(transB ? [n, k] : [k, n], seed: UInt64(m * n + 1))
                    let bias = randomDoubles([n], seed: 7)
                    let (av, bv, cv) = (try a.doubles(), try b.doubles(), try bias.doubles())
                    var expected = [Double](repeating: 0, count: m * n)
                    for i in 0..<m {
                        for j in 0..<n {
                            var sum = 0.0
                            for p in 0..<k { sum += av[i * k + p] * (transB ? bv[j * k + p] : bv[p * n + j]) }
                            expected[i * n + j] = Double(alpha) * sum + cv[j]
                        }
                    }
                    let (a32, b32) = (try a.converted(toFloat: .float32), try b.converted(toFloat: .float32))
                    let full = Tensor(shape: [m, n], scalars: (0..<(m * n)).map { Float(cv[$0 % n]) })
                    let attributes: [String: Attribute] = ["alpha": .float(alpha), "transB": .int(transB ? 1 : 0)]
                    let reference = try runNode("Gemm", opset: 13, [a32, b32, full], attributes: attributes)[0].scalars(as: Float.self)
                    for c in [try bias.converted(toFloat: .float32), try bias.converted(toFloat: .float32).reshaped([1, n])] {
                        let y = try runNode("Gemm", opset: 13, [a32, b32, c], attributes: attributes)[0]
                        XCTAssertEqual(y.shape, [m, n], label)
                        let got = y.scalars(as: Float.self)
                        // Values below 2 in magnitude: k products below 4 each, rounded k times.
                        let bound = Double(max(k, 1)) * 4 * 0x1p-23
                        if transB || m * n * k < BLAS.singleThreadWork {
                            XCTAssertEqual(got.map(\.bitPattern), reference.map(\.bitPattern), "\(label) C \(c.shape)")
                        } else {
                            // With B plain the full-C Gemm splits K over the threads (BLAS.gemm's innerSplit).
                            let worst = zip(got, reference).map { abs(Double($0) - Double($1)) }.max() ?? 0
                            XCTAssertLessThanOrEqual(worst, bound, "\(label) C \(c.shape)")
                        }
                        for (g, e) in zip(got, expected) where abs(Double(g) - e) > bound {
                            XCTFail("\(label) C \(c.shape): \(g) vs \(e)")
                            break
                        }
                    }
                }
            }
        }
    }

    /// A Gemm whose inner dimension is 0 gives beta·C (ONNX's Y = alpha·A·B + beta·C with an empty
    /// sum): C broadcast from [m, n], [n] at beta 1 (the bias row path), and zeros without C; in
    /// float32 and float64.
    func testGemmWithEmptyInnerDimensionIsBetaC() throws {
        let a = Tensor(shape: [2, 0], scalars: [Float]()), b = Tensor(shape: [0, 3], scalars: [Float]())
        let cases: [(c: Tensor?, beta: Float, expected: [Float])] = [
            (Tensor(shape: [2, 3], scalars: [Float(1), 2, 3, 4, 5, 6]), 0.5, [0.5, 1, 1.5, 2, 2.5, 3]),
            (Tensor(shape: [3], scalars: [Float(1), 2, 3]), 1, [1, 2, 3, 1, 2, 3]),
            (nil, 1, [0, 0, 0, 0, 0, 0]),
        ]
        for (c, beta, expected) in cases {
            let inputs = [a, b] + (c.map { [$0] } ?? [])
            let y = try runNode("Gemm", opset: 13, inputs, attributes: ["beta": .float(beta)])[0]
            XCTAssertEqual(y.shape, [2, 3])
            XCTAssertEqual(y.scalars(as: Float.self), expected, "C \(c?.shape ?? []) beta \(beta)")
            let wide = try runNode("Gemm", opset: 13, try inputs.map { try $0.converted(toFloat: .float64) }, attributes: ["beta": .float(beta)])[0]
            XCTAssertEqual(wide.scalars(as: Double.self), expected.map { Double($0) }, "float64 C \(c?.shape ?? []) beta \(beta)")
        }
    }

    func testIntegerGemm() throws {
        // [[1, 2], [3, 4]] · [[5, 6], [7, 8]] · 2 + 10 = [[48, 54], [96, 110]]
        let a = Tensor(shape: [2, 2], scalars: [Int32(1), 2, 3, 4]), b = Tensor(shape: [2, 2], scalars: [Int32(5), 6, 7, 8])
        let y = try runNode("Gemm", opset: 13, [a, b, Tensor(scalar: Int32(10))], attributes: ["alpha": .float(2)])[0]
        XCTAssertEqual(y.scalars(as: Int32.self), [48, 54, 96, 110])
    }
}
