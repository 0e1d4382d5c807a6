import OnnxTrain
import XCTest

/// Runs one ONNX node on `inputs` (named x0, x1, ...; nil omits an optional input) at `opset`
/// and returns its `outputs` results.
public func runNode(_ opType: String, opset: Int, _ inputs: [Tensor?], attributes: [String: Attribute] = [:],
             outputs: Int = 1) throws -> [Tensor] {
    var graph = Graph()
    let inputNames = inputs.enumerated().map { $0.element == nil ? "" : "x\($0.offset)" }
    let outputNames = (0..<outputs).map { "y\($0)" }
    graph.nodes = [Node(opType: opType, inputs: inputNames, outputs: outputNames, attributes: attributes)]
    graph.inputs = inputNames.filter { !$0.isEmpty }.map { ValueInfo(name: $0, type: nil) }
    graph.outputs = outputNames.map { ValueInfo(name: $0, type: nil) }
    var model = Model(graph: graph)
    model.opsetImports = ["": opset]
    var feeds: [String: Value] = [:]
    for (name, t) in zip(inputNames, inputs) { if let t { feeds[name] = .tensor(t) } }
    let result = try InferenceSession(model: model).run(feeds)
    return try outputNames.map { name in
        guard let t = result[name]?.tensor else { throw KernelError("no tensor output \(name)") }
        return t
    }
}

/// Asserts equal shapes and elementwise closeness (NaN matches NaN), naming the largest difference.
public func assertClose<T: BinaryFloatingPoint & TensorElement>(_ actual: Tensor, _ expected: [T], shape: [Int]? = nil, tolerance: T = 1e-6,
                                         file: StaticString = #filePath, line: UInt = #line) {
    if let shape { XCTAssertEqual(actual.shape, shape, "shape", file: file, line: line) }
    let values = actual.scalars(as: T.self)
    XCTAssertEqual(values.count, expected.count, "element count", file: file, line: line)
    for (i, (a, e)) in zip(values, expected).enumerated() {
        if a.isNaN && e.isNaN { continue }
        if a == e { continue }
        if !((a - e).magnitude <= tolerance * Swift.max(1, e.magnitude)) {
            XCTFail("element \(i): got \(a), expected \(e)", file: file, line: line)
            return
        }
    }
}
