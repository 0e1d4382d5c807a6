import Foundation
import XCTest
@testable import OnnxTrain

/// The ModelProto writer: written models load back equal and run the same; onnx-written models
/// survive load -> write -> load unchanged.
final class ModelWriterTests: XCTestCase {
    func testTinyModelRoundTripRunsTheSame() throws {
        let model = try Model(contentsOf: DataFixtures.data("tiny.onnx"))
        let dir = try DataFixtures.temporaryDirectory(self)
        try model.write(to: dir + "/tiny.onnx")
        let back = try Model(contentsOf: dir + "/tiny.onnx")
        XCTAssertEqual(back.irVersion, 8)
        XCTAssertEqual(back.producerName, "make_data_fixtures")
        XCTAssertEqual(back.opsetImports, ["": 17])
        XCTAssertEqual(back.graph.nodes.map(\.opType), ["Add", "Relu", "Shape"])
        XCTAssertEqual(back.graph.nodes.map(\.name), ["add", "relu", "shape"])
        XCTAssertEqual(back.graph.initializerNames, ["b"])
        XCTAssertEqual(back.graph.inputs.map(\.type?.description), ["tensor(float) [batch, 3]"])
        let feeds = try Npz.readDictionary(contentsOf: DataFixtures.data("tiny_feeds.npz"))
        let expected = try Npz.readDictionary(contentsOf: DataFixtures.data("tiny_expected.npz"))
        let out = try InferenceSession(model: back).run(tensors: feeds)
        XCTAssertEqual(out["y"]?.scalars(as: Float.self), expected["y"]?.scalars(as: Float.self))
        XCTAssertEqual(out["s"]?.scalars(as: Int64.self), [2, 3])
        // Writing is deterministic: the re-read model writes the same bytes.
        XCTAssertEqual(try back.serialized(), try model.serialized())
    }

    func testEveryAttributeKindAndValueTypeSurvives() throws {
        var body = Graph()
        body.name = "body"
        body.inputs = [ValueInfo(name: "i", type: .tensor(.int64, shape: []))]
        body.outputs = [ValueInfo(name: "o", type: .tensor(.int64, shape: [.unknown]))]
        body.nodes = [Node(opType: "Identity", inputs: ["i"], outputs: ["o"])]
        let sparse = SparseTensor(values: Tensor(shape: [2], scalars: [Float(1), 2]), indices: Tensor(shape: [2], scalars: [Int64(0), 3]), shape: [4])
        var node = Node(opType: "Custom", domain: "com.example", name: "n", inputs: ["x", ""], outputs: ["y"])
        node.attributes = [
            "f": .float(1.25), "i": .int(-7), "s": .string("hé"), "t": .tensor(Tensor(shape: [2], scalars: [Int32(4), 5])),
            "g": .graph(body), "floats": .floats([0.5, -1]), "ints": .ints([1, 2, 3]), "strings": .strings(["a", "b"]),
            "tensors": .tensors([Tensor(scalar: Double(2)), Tensor(shape: [1], strings: ["z"])]), "graphs": .graphs([body, body]),
            "sp": .sparseTensor(sparse), "sps": .sparseTensors([sparse]),
            "tp": .type(.sequence(.tensor(.float16, shape: [.symbol("n")]))),
            "tps": .types([.optional(.tensor(.bool, shape: nil)), .map(key: .int64, value: .tensor(.float32, shape: nil)),
                           .sparseTensor(.float32, shape: [.value(3)])]),
        ]
        node.docString = "doc"
        var g = Graph()
        g.name = "main"
        g.nodes = [node]
        g.inputs = [ValueInfo(name: "x", type: .tensor(.float32, shape: [.symbol("N"), .value(2), .unknown]))]
        g.outputs = [ValueInfo(name: "y", type: nil)]
        g.valueInfo = [ValueInfo(name: "x2", type: .tensor(.bfloat16, shape: nil))]
        g.setInitializer("w", Tensor(shape: [2], scalars: [BFloat16(1), BFloat16(2)]))
        var fnNode = Node(opType: "Mul", inputs: ["a", "a"], outputs: ["b"])
        fnNode.attributeRefs = ["alpha": "scale"]
        var model = Model(graph: g)
        model.irVersion = 10
        model.opsetImports = ["": 21, "com.example": 1]
        model.producerName = "p"
        model.producerVersion = "1"
        model.domain = "d"
        model.modelVersion = 3
        model.docString = "model doc"
        model.metadata = ["k": "v"]
        model.functions = [Function(name: "Sq", domain: "com.example", inputs: ["a"], outputs: ["b"], attributeNames: ["scale", "beta"],
                                    attributeDefaults: ["beta": .float(2)], nodes: [fnNode], opsetImports: ["": 21])]

        let bytes = try model.serialized()
        let back = try bytes.withUnsafeBytes { try Model(bytes: $0) }
        XCTAssertEqual(back.irVersion, 10)
        XCTAssertEqual(back.opsetImports, ["": 21, "com.example": 1])
        XCTAssertEqual([back.producerName, back.producerVersion, back.domain, back.docString], ["p", "1", "d", "model doc"])
        XCTAssertEqual(back.modelVersion, 3)
        XCTAssertEqual(back.metadata, ["k": "v"])
        let n = try XCTUnwrap(back.graph.nodes.first)
        XCTAssertEqual([n.opType, n.domain, n.name, n.docString], ["Custom", "com.example", "n", "doc"])
        XCTAssertEqual(n.inputs, ["x", ""])
        XCTAssertEqual(n.attributes.count, 14)
        guard case .float(1.25)? = n.attributes["f"], case .int(-7)? = n.attributes["i"], case .string("hé")? = n.attributes["s"],
              case .floats([0.5, -1])? = n.attributes["floats"], case .ints([1, 2, 3])? = n.attributes["ints"],
              case .strings(["a", "b"])? = n.attributes["strings"] else { return XCTFail("scalar attributes changed: \(n.attributes)") }
        guard case .tensor(let t)? = n.attributes["t"], case .tensors(let ts)? = n.attributes["tensors"] else { return XCTFail("tensors") }
        XCTAssertEqual(t.scalars(as: Int32.self), [4, 5])
        XCTAssertEqual(ts[0].scalars(as: Double.self), [2])
        XCTAssertEqual(ts[1].strings, ["z"])
        guard case .graph(let gb)? = n.attributes["g"], case .graphs(let gs)? = n.attributes["graphs"] else { return XCTFail("graphs") }
        XCTAssertEqual(gb.name, "body")
        XCTAssertEqual(gb.outputs.first?.type?.description, "tensor(int64) [?]")
        XCTAssertEqual(gs.count, 2)
        guard case .sparseTensor(let sp)? = n.attributes["sp"], case .sparseTensors(let sps)? = n.attributes["sps"] else { return XCTFail("sparse") }
        XCTAssertEqual(try sp.densified().scalars(as: Float.self), [1, 0, 0, 2])
        XCTAssertEqual(sps.count, 1)
        guard case .type(let tp)? = n.attributes["tp"], case .types(let tps)? = n.attributes["tps"] else { return XCTFail("types") }
        XCTAssertEqual(tp.description, "sequence(tensor(float16) [n])")
        XCTAssertEqual(tps.map(\.description), ["optional(tensor(bool) [...])", "map(int64, tensor(float) [...])", "sparse_tensor(float) [3]"])
        XCTAssertEqual(back.graph.inputs.first?.type?.description, "tensor(float) [N, 2, ?]")
        XCTAssertNil(back.graph.outputs.first?.type)
        XCTAssertEqual(back.graph.valueInfo.first?.type?.description, "tensor(bfloat16) [...]")
        XCTAssertEqual(back.graph.initializers["w"]?.scalars(as: BFloat16.self).map(\.floatValue), [1, 2])
        let f = try XCTUnwrap(back.functions.first)
        XCTAssertEqual([f.name, f.domain], ["Sq", "com.example"])
        XCTAssertEqual(Set(f.attributeNames), ["scale", "beta"])
        guard case .float(2)? = f.attributeDefaults["beta"] else { return XCTFail("function attribute default") }
        XCTAssertEqual(f.nodes.first?.attributeRefs, ["alpha": "scale"])
        XCTAssertEqual(f.opsetImports, ["": 21])
        XCTAssertEqual(try back.serialized(), bytes, "writing is deterministic")
    }

    func testOnnxWrittenModelsSurviveARoundTrip() throws {
        // Every committed inference fixture: load, write, load, run on its own inputs, same outputs.
        let root = DataFixtures.root + "/inference"
        let cases = try FileManager.default.contentsOfDirectory(atPath: root).filter { !$0.hasSuffix(".txt") }.sorted()
        XCTAssertGreaterThanOrEqual(cases.count, 4)
        for name in cases {
            let original = try Model(contentsOf: "\(root)/\(name)/model.onnx")
            let bytes = try original.serialized()
            let back = try bytes.withUnsafeBytes { try Model(bytes: $0) }
            XCTAssertEqual(back.graph.nodes.count, original.graph.nodes.count, name)
            XCTAssertEqual(back.graph.initializerNames, original.graph.initializerNames, name)
            for (k, t) in original.graph.initializers {
                XCTAssertEqual(back.graph.initializers[k].map { Data($0.rawBytes) }, Data(t.rawBytes), "\(name) initializer \(k)")
            }
            XCTAssertEqual(back.graph.inputs.map { $0.type?.description }, original.graph.inputs.map { $0.type?.description }, name)
            XCTAssertEqual(try back.serialized(), bytes, name)
        }
    }
}

extension ModelWriterTests {
    /// Writes every inference and training fixture back to files and reads them again (same nodes
    /// and initializers). With ONNX_TRAIN_WRITE_MODELS_TO=DIR the files stay there for
    /// Tests/Fixtures/scripts/check_model_writer.py (onnx.checker + onnxruntime on our bytes).
    func testWriteModelsForTheInteropCheck() throws {
        let dir = try ProcessInfo.processInfo.environment["ONNX_TRAIN_WRITE_MODELS_TO"] ?? DataFixtures.temporaryDirectory(self)
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        var written: [(source: String, copy: String)] = []
        let root = DataFixtures.root + "/inference"
        for name in try FileManager.default.contentsOfDirectory(atPath: root) where !name.hasSuffix(".txt") {
            written.append(("\(root)/\(name)/model.onnx", "\(dir)/\(name).onnx"))
        }
        for path in try FileManager.default.contentsOfDirectory(atPath: DataFixtures.root + "/training") {
            let model = DataFixtures.root + "/training/\(path)/training_model.onnx"
            if FileManager.default.fileExists(atPath: model) { written.append((model, "\(dir)/training_\(path).onnx")) }
        }
        XCTAssertGreaterThan(written.count, 10)
        for (source, copy) in written {
            let original = try Model(contentsOf: source)
            try original.write(to: copy)
            let back = try Model(contentsOf: copy)
            XCTAssertEqual(back.graph.nodes.map(\.opType), original.graph.nodes.map(\.opType), copy)
            XCTAssertEqual(back.graph.initializerNames, original.graph.initializerNames, copy)
        }
    }
}
