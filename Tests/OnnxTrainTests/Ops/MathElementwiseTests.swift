import OnnxTrain
import OnnxTrainTestSupport
import XCTest

/// Elementwise semantics that are easy to get wrong; expected values from numpy 1.26.
final class MathElementwiseTests: XCTestCase {
    func testAddBroadcastsRowAndColumn() throws {
        let a = Tensor(shape: [2, 3], scalars: [Float(1), 2, 3, 4, 5, 6])
        let row = Tensor(shape: [3], scalars: [Float(10), 20, 30])
        let column = Tensor(shape: [2, 1], scalars: [Float(2), 3])
        assertClose(try runNode("Add", opset: 14, [a, row])[0], [Float(11), 22, 33, 14, 25, 36], shape: [2, 3])
        assertClose(try runNode("Mul", opset: 14, [a, column])[0], [Float(2), 4, 6, 12, 15, 18], shape: [2, 3])
        // [2,1,3] + [2,1] -> [2,2,3]: both operands broadcast.
        let b = Tensor(shape: [2, 1, 3], scalars: [Float(0), 1, 2, 3, 4, 5])
        let y = try runNode("Sub", opset: 14, [b, column])[0]
        assertClose(y, [Float(-2), -1, 0, -3, -2, -1, 1, 2, 3, 0, 1, 2], shape: [2, 2, 3])
    }

    func testIntegerDivisionTruncatesTowardZero() throws {
        // C semantics (numpy's // would floor to -4).
        let a = Tensor(shape: [4], scalars: [Int32(-7), 7, -7, 7])
        let b = Tensor(shape: [4], scalars: [Int32(2), -2, -2, 2])
        XCTAssertEqual(try runNode("Div", opset: 14, [a, b])[0].scalars(as: Int32.self), [-3, -3, 3, 3])
        // Division by zero and Int.min / -1 must not trap.
        let c = Tensor(shape: [2], scalars: [Int64.min, 5])
        let d = Tensor(shape: [2], scalars: [Int64(-1), 0])
        XCTAssertEqual(try runNode("Div", opset: 14, [c, d])[0].scalars(as: Int64.self), [Int64.min, 0])
    }

    func testIntegerArithmeticWraps() throws {
        let a = Tensor(shape: [2], scalars: [UInt8(250), 3])
        let b = Tensor(shape: [2], scalars: [UInt8(10), 5])
        XCTAssertEqual(try runNode("Add", opset: 14, [a, b])[0].scalars(as: UInt8.self), [4, 8])
        XCTAssertEqual(try runNode("Sub", opset: 14, [b, a])[0].scalars(as: UInt8.self), [16, 2])
    }

    func testModBothFlavours() throws {
        let a = Tensor(shape: [6], scalars: [Int32(-4), 7, 5, 4, -7, 8])
        let b = Tensor(shape: [6], scalars: [Int32(2), -3, 8, -2, 3, 5])
        // fmod = 0: the sign of the divisor, like numpy.mod.
        XCTAssertEqual(try runNode("Mod", opset: 13, [a, b])[0].scalars(as: Int32.self), [0, -2, 5, 0, 2, 3])
        let x = Tensor(shape: [5], scalars: [Float(-4.5), 7.25, 5, 4.5, -7.25])
        let y = Tensor(shape: [5], scalars: [Float(2), -3, 8, -2, 3])
        assertClose(try runNode("Mod", opset: 13, [x, y], attributes: ["fmod": .int(1)])[0], [Float(-0.5), 1.25, 5, 0.5, -1.25])
        assertClose(try runNode("Mod", opset: 13, [x, y], attributes: ["fmod": .int(0)])[0], [Float(1.5), -1.75, 5, -1.5, 1.75])
    }

    func testRoundHalvesToEven() throws {
        let x = Tensor(shape: [6], scalars: [Float(0.5), 1.5, 2.5, -0.5, -1.5, 2.3])
        assertClose(try runNode("Round", opset: 22, [x])[0], [Float(0), 2, 2, -0.0, -2, 2])
    }

    func testPowWithIntegerBaseAndFloatExponent() throws {
        let x = Tensor(shape: [3], scalars: [Int32(1), 2, 3])
        let y = Tensor(shape: [3], scalars: [Float(4), 5, 6])
        let z = try runNode("Pow", opset: 15, [x, y])[0]
        XCTAssertEqual(z.dtype, .int32)
        XCTAssertEqual(z.scalars(as: Int32.self), [1, 32, 729])
    }

    func testHalfPrecisionComputesThroughFloat() throws {
        let a = Tensor(shape: [3], scalars: [Float16(1.5), 2, -3])
        let b = Tensor(shape: [3], scalars: [Float16(0.25), 0.5, 4])
        let y = try runNode("Div", opset: 14, [a, b])[0]
        XCTAssertEqual(y.dtype, .float16)
        XCTAssertEqual(y.scalars(as: Float16.self), [6, 4, -0.75])
    }

    func testClipAttributeAndInputForms() throws {
        let x = Tensor(shape: [4], scalars: [Float(-3), -0.5, 0.5, 3])
        assertClose(try runNode("Clip", opset: 6, [x], attributes: ["min": .float(-1), "max": .float(1)])[0], [Float(-1), -0.5, 0.5, 1])
        // Only max given (min omitted), opset 13.
        assertClose(try runNode("Clip", opset: 13, [x, nil, Tensor(scalar: Float(0))])[0], [Float(-3), -0.5, 0, 0])
        // Integer clip.
        let i = Tensor(shape: [3], scalars: [Int64(-5), 0, 9])
        XCTAssertEqual(try runNode("Clip", opset: 13, [i, Tensor(scalar: Int64(-2)), Tensor(scalar: Int64(4))])[0].scalars(as: Int64.self), [-2, 0, 4])
    }

    func testWhereBroadcastsAllThreeInputs() throws {
        let cond = Tensor(shape: [2, 1], scalars: [true, false])
        let x = Tensor(shape: [3], scalars: [Int64(1), 2, 3])
        let y = Tensor(scalar: Int64(-1))
        XCTAssertEqual(try runNode("Where", opset: 16, [cond, x, y])[0].scalars(as: Int64.self), [1, 2, 3, -1, -1, -1])
    }

    func testMaxPropagatesNaNAndBroadcastsVariadic() throws {
        let a = Tensor(shape: [3], scalars: [Float(1), .nan, 3])
        let b = Tensor(shape: [1], scalars: [Float(2)])
        let c = Tensor(shape: [2, 1], scalars: [Float(0), 5])
        let y = try runNode("Max", opset: 13, [a, b, c])[0]
        assertClose(y, [Float(2), .nan, 3, 5, .nan, 5], shape: [2, 3])
    }

    func testBitShiftAndComparisons() throws {
        let a = Tensor(shape: [3], scalars: [UInt32(16), 4, 1])
        let s = Tensor(shape: [3], scalars: [UInt32(1), 2, 40])
        XCTAssertEqual(try runNode("BitShift", opset: 11, [a, s], attributes: ["direction": .string("RIGHT")])[0].scalars(as: UInt32.self), [8, 1, 0])
        let x = Tensor(shape: [3], scalars: [Float(1), 2, .nan])
        let y = Tensor(scalar: Float(2))
        XCTAssertEqual(try runNode("GreaterOrEqual", opset: 16, [x, y])[0].scalars(as: Bool.self), [false, true, false])
        XCTAssertEqual(try runNode("Equal", opset: 19, [Tensor(shape: [2], strings: ["a", "b"]), Tensor(shape: [1], strings: ["b"])])[0]
            .scalars(as: Bool.self), [false, true])
    }

    func testActivations() throws {
        let x = Tensor(shape: [4], scalars: [Float(-2), -0.5, 0.5, 100])
        // scipy.special.expit and erf-based gelu; softplus(100) must not overflow.
        assertClose(try runNode("Sigmoid", opset: 13, [x])[0], [Float(0.11920292), 0.37754067, 0.62245933, 1], tolerance: 1e-6)
        assertClose(try runNode("Gelu", opset: 20, [x])[0], [Float(-0.04550026), -0.15426877, 0.34573123, 100], tolerance: 1e-6)
        assertClose(try runNode("Softplus", opset: 22, [x])[0], [Float(0.12692801), 0.47407698, 0.97407698, 100], tolerance: 1e-6)
        assertClose(try runNode("LeakyRelu", opset: 16, [x], attributes: ["alpha": .float(0.1)])[0], [Float(-0.2), -0.05, 0.5, 100])
    }

    func testLegacyBroadcastAlignsAtAxis() throws {
        // Opset 6: B of shape [3] aligned with axis 1 of A [2, 3, 2] (numpy: b[None, :, None]).
        let a = Tensor(shape: [2, 3, 2], scalars: (0..<12).map { Float($0) })
        let b = Tensor(shape: [3], scalars: [Float(100), 200, 300])
        let y = try runNode("Add", opset: 6, [a, b], attributes: ["broadcast": .int(1), "axis": .int(1)])[0]
        assertClose(y, [Float(100), 101, 202, 203, 304, 305, 106, 107, 208, 209, 310, 311], shape: [2, 3, 2])
        // Without broadcast = 1 the shapes must match.
        XCTAssertThrowsError(try runNode("Add", opset: 6, [a, b]))
    }
}
