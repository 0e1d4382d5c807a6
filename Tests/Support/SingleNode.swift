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

/// Asserts equal shapes and elementwise closeness, |a - e| <= tolerance * max(1, |e|) (NaN matches
/// NaN); a failure names the worst element and how many are off.
public func assertClose<T: BinaryFloatingPoint & TensorElement>(_ actual: Tensor, _ expected: [T], shape: [Int]? = nil, tolerance: T = 1e-6,
                                         file: StaticString = #filePath, line: UInt = #line) {
    if let shape { XCTAssertEqual(actual.shape, shape, "shape", file: file, line: line) }
    let values = actual.scalars(as: T.self)
    XCTAssertEqual(values.count, expected.count, "element count", file: file, line: line)
    var worst: (index: Int, excess: T)? = nil
    var off = 0
    for (i, (a, e)) in zip(values, expected).enumerated() {
        if (a.isNaN && e.isNaN) || a == e { continue }
        let bound = tolerance * Swift.max(1, e.magnitude)
        let difference = (a - e).magnitude
        guard !(difference <= bound) else { continue }
        off += 1
        let excess = difference.isNaN ? T.infinity : difference / bound
        if worst == nil || excess > worst!.excess { worst = (i, excess) }
    }
    if let worst {
        XCTFail("\(off) of \(expected.count) elements off; worst element \(worst.index): got \(values[worst.index]), expected \(expected[worst.index]) "
                + "(tolerance \(tolerance))", file: file, line: line)
    }
}
