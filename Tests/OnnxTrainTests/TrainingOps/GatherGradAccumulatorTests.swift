import Foundation
import XCTest
@testable import OnnxTrain

/// `ProductIntoAccumulator` on an embedding's gradient: com.microsoft GatherGrad read only by
/// InPlaceAccumulatorV2 becomes one GatherGradAccumulator that scatters dY into the buffer. The
/// graph runs optimised and plain (GatherGrad into new zeros, then the accumulator), each on its
/// own copy of the buffer, and the buffers are checked against each other and against the
/// definition evaluated in float64 (dX[.., indices[j], ..] += dY[.., j, ..], duplicates summed).
final class GatherGradAccumulatorTests: XCTestCase {
    /// buffer, indices, dy, flag -> GatherGrad(shape, indices, dy; axis) -> InPlaceAccumulatorV2.
    func model(shape: [Int], axis: Int, flag: Bool = true, gradientIsOutput: Bool = false) -> Model {
        var g = Graph()
        g.inputs = ["buffer", "indices", "dy"].map { ValueInfo(name: $0, type: nil) }
        if flag { g.inputs.append(ValueInfo(name: "flag", type: nil)) }
        g.setInitializer("shape", Tensor(shape: [shape.count], scalars: shape.map(Int64.init)))
        g.nodes = [
            Node(opType: "GatherGrad", domain: "com.microsoft", inputs: ["shape", "indices", "dy"], outputs: ["dw"], attributes: ["axis": .int(axis)]),
            Node(opType: "InPlaceAccumulatorV2", domain: "com.microsoft", inputs: ["buffer", "dw"] + (flag ? ["flag"] : []),
                 outputs: ["updated", "buffer_out"]),
        ]
        g.outputs = [ValueInfo(name: "updated", type: nil)]
        if gradientIsOutput { g.outputs.append(ValueInfo(name: "dw", type: nil)) }
        var m = Model(graph: g)
        m.opsetImports = ["": 17, "com.microsoft": 1]
        return m
    }

    /// (overwrite ? 0 : buffer) + the scatter-add of dY, in float64.
    func reference(buffer: Tensor, shape: [Int], axis: Int, indices: [Int], dy: Tensor, overwrite: Bool) throws -> [Double] {
        var out = overwrite ? [Double](repeating: 0, count: buffer.count) : try buffer.doubles()
        let d = try dy.doubles()
        let outer = shape[..<axis].reduce(1, *), size = shape[axis], inner = shape[(axis + 1)...].reduce(1, *)
        for o in 0..<outer {
            for (j, raw) in indices.enumerated() {
                let row = raw < 0 ? raw + size : raw
                for k in 0..<inner { out[(o * size + row) * inner + k] += d[(o * indices.count + j) * inner + k] }
            }
        }
        return out
    }

    /// A word embedding's form (axis 0, [vocab, d], token ids with repeats and a negative one) and
    /// axis 1, float32 and float64: overwriting, bit for bit the plain graph's buffer; adding
    /// (flag false or absent) too, through GatherGrad and the accumulator; within float rounding
    /// of the float64 scatter-add (a row gets at most 4 additions).
    func testEmbeddingGradientIntoTheBufferMatchesGatherGradThenAccumulator() throws {
        for (shape, axis, indexShape) in [([50, 8], 0, [3, 7]), ([4, 30, 5], 1, [12])] {
            XCTAssertEqual(try fusedOpTypes(model(shape: shape, axis: axis)), ["GatherGradAccumulator"])
            let size = shape[axis]
            let count = indexShape.reduce(1, *)
            // Every index below `size`, repeats included, and one negative (wrapped) index.
            let ids = (0..<count).map { j in j == 1 ? -2 : (j * 7) % 5 }
            let indices = Tensor(shape: indexShape, scalars: ids.map(Int64.init))
            let dyShape = Array(shape[..<axis]) + indexShape + Array(shape[(axis + 1)...])
            for double in [false, true] {
                for overwrite in [true, false, nil] as [Bool?] {
                    let m = model(shape: shape, axis: axis, flag: overwrite != nil)
                    let dy = double ? ProductAccumulatorTests.random(dyShape, seed: 11, Double.self) : ProductAccumulatorTests.random(dyShape, seed: 11, Float.self)
                    let buffer = double ? ProductAccumulatorTests.random(shape, seed: 12, Double.self) : ProductAccumulatorTests.random(shape, seed: 12, Float.self)
                    let (fused, plain) = try ProductAccumulatorTests.runBoth(m, buffer: buffer, feeds: ["indices": indices, "dy": dy], overwrite: overwrite)
                    let label = "\(shape) axis \(axis) float64 \(double) overwrite \(String(describing: overwrite))"
                    XCTAssertEqual(try fused.doubles(), try plain.doubles(), label)
                    let expected = try reference(buffer: buffer, shape: shape, axis: axis, indices: ids, dy: dy, overwrite: overwrite == true)
                    let error = ProductAccumulatorTests.largestDifference(try fused.doubles(), expected)
                    // At most 6 roundings (5 repeats of an index plus the buffer), each within half
                    // an ulp of a sum below 8 in magnitude.
                    XCTAssertLessThanOrEqual(error, double ? 6 * 0x1p-51 : 6 * 0x1p-22, label)
                }
            }
        }
    }

    /// A gradient another reader (here a graph output) needs stays GatherGrad; a bad index fails
    /// as GatherGrad fails.
    func testPassKeepsGradientsReadElsewhereAndIndexErrorsStay() throws {
        XCTAssertEqual(try fusedOpTypes(model(shape: [10, 4], axis: 0, gradientIsOutput: true)), ["GatherGrad", "InPlaceAccumulatorV2"])
        let m = model(shape: [10, 4], axis: 0)
        let feeds: [String: Tensor] = ["buffer": Tensor(zeros: .float32, shape: [10, 4]), "indices": Tensor(shape: [2], scalars: [Int64(1), 10]),
                                       "dy": ProductAccumulatorTests.random([2, 4], seed: 3, Float.self), "flag": Tensor(shape: [1], scalars: [true])]
        XCTAssertThrowsError(try InferenceSession(model: m).run(tensors: feeds)) { error in
            XCTAssertTrue("\(error)".contains("out of range"), "\(error)")
        }
    }

    func fusedOpTypes(_ model: Model) throws -> [String] {
        var m = model
        try PassPipeline.optimizing().run(&m)
        return m.graph.nodes.map(\.opType)
    }
}
