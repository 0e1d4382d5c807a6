import XCTest
@testable import OnnxTrain

/// Conv/ConvTranspose/pooling attributes near Int.max or asking for terabytes: one KernelError
/// naming the attribute or the requested shape, never an overflow trap or an out-of-memory abort.
final class HostileWindowAttributeTests: XCTestCase {
    func run(_ op: String, _ attributes: [String: Attribute], x: [Int] = [1, 1, 4, 4], w: [Int]? = [1, 1, 2, 2]) throws -> Tensor {
        var g = Graph()
        g.inputs = [ValueInfo(name: "x", type: .tensor(.float32, shape: x.map { .value($0) }))]
        var feeds = ["x": Tensor(zeros: .float32, shape: x)]
        if let w {
            g.inputs.append(ValueInfo(name: "w", type: .tensor(.float32, shape: w.map { .value($0) })))
            feeds["w"] = Tensor(shape: w, scalars: (0..<Tensor.elementCount(w)).map { Float($0 + 1) })
        }
        g.outputs = [ValueInfo(name: "y", type: nil)]
        g.nodes = [Node(opType: op, inputs: w == nil ? ["x"] : ["x", "w"], outputs: ["y"], attributes: attributes)]
        var m = Model(graph: g)
        m.opsetImports = ["": 17]
        return try InferenceSession(model: m).run(tensors: feeds)["y"]!
    }

    func testOverflowingGeometryNamesTheAttribute() {
        assertOnnxTrainError(.kernel, containing: ["Conv", "pads"]) { try run("Conv", ["pads": .ints([0, Int.max, 0, 0])]) }
        assertOnnxTrainError(.kernel, containing: ["Conv", "dilations"]) { try run("Conv", ["dilations": .ints([Int.max, 1])]) }
        assertOnnxTrainError(.kernel, containing: ["MaxPool", "kernel_shape"]) { try run("MaxPool", ["kernel_shape": .ints([Int.max, 2])], w: nil) }
        assertOnnxTrainError(.kernel, containing: ["AveragePool", "pads"]) {
            try run("AveragePool", ["kernel_shape": .ints([2, 2]), "pads": .ints([0, 0, Int.max, 1]), "ceil_mode": .int(1)], w: nil)
        }
        assertOnnxTrainError(.kernel, containing: ["ConvTranspose", "overflow"]) { try run("ConvTranspose", ["strides": .ints([Int.max, 1])]) }
    }

    func testTerabyteOutputsThrowNamingTheShape() {
        // 2097155² floats: 16 TiB.
        assertOnnxTrainError(.kernel, containing: ["Conv", "output spatial shape [2097155, 2097155]", "too large"]) {
            try run("Conv", ["pads": .ints([1 << 20, 1 << 20, 1 << 20, 1 << 20])])
        }
        assertOnnxTrainError(.kernel, containing: ["MaxPool", "output spatial shape [2097156, 2097156]"]) {
            try run("MaxPool", ["kernel_shape": .ints([1, 1]), "pads": .ints([1 << 20, 1 << 20, 1 << 20, 1 << 20])], w: nil)
        }
    }

    func testAStrideNearIntMaxStillComputesOneWindow() throws {
        // One output position per axis (the window at the origin).
        let y = try run("Conv", ["strides": .ints([Int.max, Int.max])])
        XCTAssertEqual(y.shape, [1, 1, 1, 1])
        XCTAssertEqual(y.scalars(as: Float.self), [0])
        let p = try run("MaxPool", ["kernel_shape": .ints([2, 2]), "strides": .ints([Int.max, Int.max]), "pads": .ints([1, 1, 0, 0])], w: nil)
        XCTAssertEqual(p.shape, [1, 1, 1, 1])
        // Depthwise (group == C): its 2-D kernel's plane layout (rows of stride × phase columns)
        // would overflow or ask for a huge buffer; the general loops compute the one window.
        for stride in [Int.max, 1 << 40] {
            let d = try run("Conv", ["strides": .ints([stride, stride]), "group": .int(2)], x: [1, 2, 4, 4], w: [2, 1, 2, 2])
            XCTAssertEqual(d.shape, [1, 2, 1, 1])
            XCTAssertEqual(d.scalars(as: Float.self), [0, 0])
        }
        // Past the element cap but not overflowing: the whole output shape is named.
        assertOnnxTrainError(.kernel, containing: ["Conv output shape [3, 1, 65539, 65539]", "too large"]) {
            try run("Conv", ["pads": .ints([1 << 15, 1 << 15, 1 << 15, 1 << 15])], x: [3, 1, 4, 4])
        }
    }
}
