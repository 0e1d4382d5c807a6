import OnnxTrain
import OnnxTrainTestSupport
import XCTest

/// Reductions, softmax and TopK semantics; expected values from numpy 1.26.
final class MathReduceTests: XCTestCase {
    func testReduceAxesAttributeAndInputForms() throws {
        let x = Tensor(shape: [2, 3], scalars: [Float(1), 2, 3, 4, 5, 6])
        // Opset 13: axes attribute; opset 18: axes input.
        assertClose(try runNode("ReduceMean", opset: 13, [x], attributes: ["axes": .ints([1]), "keepdims": .int(0)])[0], [Float(2), 5], shape: [2])
        assertClose(try runNode("ReduceMean", opset: 18, [x, Tensor(shape: [1], scalars: [Int64(-2)])])[0], [Float(2.5), 3.5, 4.5], shape: [1, 3])
        // No axes: every axis; empty axes with noop_with_empty_axes: the input unchanged.
        assertClose(try runNode("ReduceSum", opset: 13, [x])[0], [Float(21)], shape: [1, 1])
        let empty = Tensor(shape: [0], scalars: [Int64]())
        assertClose(try runNode("ReduceSum", opset: 13, [x, empty], attributes: ["noop_with_empty_axes": .int(1)])[0],
                    [Float(1), 2, 3, 4, 5, 6], shape: [2, 3])
    }

    func testReduceNonContiguousAxes() throws {
        // x = arange(24).reshape(2,3,4); x.max(axis=(0,2)) = [15, 19, 23]; x.prod(axis=1)[0] = [0, 45, 120, 231]
        let x = Tensor(shape: [2, 3, 4], scalars: (0..<24).map { Int32($0) })
        XCTAssertEqual(try runNode("ReduceMax", opset: 18, [x, Tensor(shape: [2], scalars: [Int64(0), 2])], attributes: ["keepdims": .int(0)])[0]
            .scalars(as: Int32.self), [15, 19, 23])
        let prod = try runNode("ReduceProd", opset: 18, [x, Tensor(shape: [1], scalars: [Int64(1)])], attributes: ["keepdims": .int(0)])[0]
        XCTAssertEqual(Array(prod.scalars(as: Int32.self).prefix(4)), [0, 45, 120, 231])
    }

    func testReduceOverLeadingAxes() throws {
        // x = arange(24).reshape(2,3,4): x.sum(axis=(0,1)) = [60, 66, 72, 78]; x.sum(axis=0)[0] = [12, 14, 16, 18];
        // x.mean(axis=0)[2] = [14, 15, 16, 17] (the bias-gradient path: rows added in order).
        let x = Tensor(shape: [2, 3, 4], scalars: (0..<24).map { Float($0) })
        let noKeep: [String: Attribute] = ["keepdims": .int(0)]
        assertClose(try runNode("ReduceSum", opset: 13, [x, Tensor(shape: [2], scalars: [Int64(1), 0])], attributes: noKeep)[0],
                    [Float(60), 66, 72, 78], shape: [4])
        let sum0 = try runNode("ReduceSum", opset: 13, [x, Tensor(shape: [1], scalars: [Int64(0)])])[0]
        XCTAssertEqual(sum0.shape, [1, 3, 4])
        XCTAssertEqual(Array(sum0.scalars(as: Float.self).prefix(4)), [12, 14, 16, 18])
        let mean0 = try runNode("ReduceMean", opset: 13, [x], attributes: ["axes": .ints([0]), "keepdims": .int(0)])[0]
        XCTAssertEqual(Array(mean0.scalars(as: Float.self).suffix(4)), [14, 15, 16, 17])
        let ints = Tensor(shape: [2, 3, 4], scalars: (0..<24).map { Int32($0) })
        XCTAssertEqual(try runNode("ReduceSum", opset: 13, [ints, Tensor(shape: [2], scalars: [Int64(0), 1])], attributes: noKeep)[0]
            .scalars(as: Int32.self), [60, 66, 72, 78])
    }

    func testEmptySetReductionsGiveIdentities() throws {
        let x = Tensor(shape: [2, 0, 4], scalars: [Float]())
        let axes = Tensor(shape: [1], scalars: [Int64(1)])
        assertClose(try runNode("ReduceSum", opset: 18, [x, axes])[0], [Float](repeating: 0, count: 8), shape: [2, 1, 4])
        assertClose(try runNode("ReduceProd", opset: 18, [x, axes])[0], [Float](repeating: 1, count: 8))
        assertClose(try runNode("ReduceMax", opset: 18, [x, axes])[0], [Float](repeating: -.infinity, count: 8))
        assertClose(try runNode("ReduceMin", opset: 18, [x, axes])[0], [Float](repeating: .infinity, count: 8))
        assertClose(try runNode("ReduceLogSumExp", opset: 18, [x, axes])[0], [Float](repeating: -.infinity, count: 8))
    }

    func testLogSumExpDoesNotOverflow() throws {
        let x = Tensor(shape: [3], scalars: [Float(1000), 1001, 1002])
        assertClose(try runNode("ReduceLogSumExp", opset: 18, [x])[0], [Float(1002.4076)], tolerance: 1e-6)
    }

    func testArgMaxSelectLastIndex() throws {
        let x = Tensor(shape: [2, 3], scalars: [Float(2), 5, 5, 7, 1, 7])
        XCTAssertEqual(try runNode("ArgMax", opset: 13, [x], attributes: ["axis": .int(1)])[0].scalars(as: Int64.self), [1, 0])
        XCTAssertEqual(try runNode("ArgMax", opset: 13, [x], attributes: ["axis": .int(1), "select_last_index": .int(1)])[0]
            .scalars(as: Int64.self), [2, 2])
    }

    func testSoftmaxBeforeAndAfterOpset13() throws {
        let x = Tensor(shape: [2, 2, 3], scalars: [Float(1), 2, 3, 4, 5, 6, 7, 8, 9, 1, 1, 1])
        // Opset 11, axis 1: each [2, 3] block is one row of six.
        assertClose(try runNode("Softmax", opset: 11, [x])[0],
                    [Float(0.00426978), 0.01160646, 0.03154963, 0.08576079, 0.23312199, 0.63369131,
                     0.08997034, 0.24456473, 0.66479588, 0.00022301, 0.00022301, 0.00022301], tolerance: 1e-5)
        // Opset 13 default axis -1: rows of three.
        let y = try runNode("Softmax", opset: 13, [x])[0].scalars(as: Float.self)
        XCTAssertEqual(y[9], 1.0 / 3, accuracy: 1e-6)
        XCTAssertEqual(y[0], 0.09003057, accuracy: 1e-6)
    }

    func testTopKTiesKeepLowerIndex() throws {
        let x = Tensor(shape: [6], scalars: [Float(3), 1, 3, 2, 3, 1])
        let largest = try runNode("TopK", opset: 11, [x, Tensor(shape: [1], scalars: [Int64(4)])], outputs: 2)
        XCTAssertEqual(largest[0].scalars(as: Float.self), [3, 3, 3, 2])
        XCTAssertEqual(largest[1].scalars(as: Int64.self), [0, 2, 4, 3])
        let smallest = try runNode("TopK", opset: 11, [x, Tensor(shape: [1], scalars: [Int64(2)])], attributes: ["largest": .int(0)], outputs: 2)
        XCTAssertEqual(smallest[1].scalars(as: Int64.self), [1, 5])
    }

    func testCumSumExclusiveReverse() throws {
        let x = Tensor(shape: [4], scalars: [Int32(1), 2, 3, 4])
        let axis = Tensor(scalar: Int64(0))
        XCTAssertEqual(try runNode("CumSum", opset: 14, [x, axis], attributes: ["exclusive": .int(1), "reverse": .int(1)])[0]
            .scalars(as: Int32.self), [9, 7, 4, 0])
    }

    func testBadInputsThrowInsteadOfTrapping() throws {
        let x = Tensor(shape: [2, 3], scalars: [Float(1), 2, 3, 4, 5, 6])
        let ints = Tensor(shape: [2], scalars: [Int64(1), 2])
        XCTAssertThrowsError(try runNode("ReduceSum", opset: 18, [x, Tensor(shape: [1], scalars: [Int64(5)])]))
        XCTAssertThrowsError(try runNode("ArgMax", opset: 13, [x], attributes: ["axis": .int(-3)]))
        XCTAssertThrowsError(try runNode("ArgMax", opset: 13, [Tensor(shape: [2, 0], scalars: [Float]())], attributes: ["axis": .int(1)]))
        XCTAssertThrowsError(try runNode("TopK", opset: 11, [x, Tensor(shape: [1], scalars: [Int64(4)])], outputs: 2))
        XCTAssertThrowsError(try runNode("TopK", opset: 11, [x, Tensor(shape: [1], scalars: [Int64(-1)])], outputs: 2))
        XCTAssertThrowsError(try runNode("CumSum", opset: 14, [x, ints]))
        XCTAssertThrowsError(try runNode("Where", opset: 16, [x, x, x]))
        XCTAssertThrowsError(try runNode("Add", opset: 14, [x, ints]))
        XCTAssertThrowsError(try runNode("Add", opset: 14, [x, Tensor(shape: [3], scalars: [Int64(1), 2, 3])]))
        XCTAssertThrowsError(try runNode("Clip", opset: 13, [x, Tensor(shape: [2], scalars: [Float(0), 1])]))
        XCTAssertThrowsError(try runNode("Cast", opset: 21, [x], attributes: ["to": .int(99)]))
        XCTAssertThrowsError(try runNode("BitShift", opset: 11, [ints, ints], attributes: ["direction": .string("UP")]))
        XCTAssertThrowsError(try runNode("BitwiseAnd", opset: 18, [x, x]))
    }
}
