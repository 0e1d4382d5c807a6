import OnnxTrain
import OnnxTrainTestSupport
import XCTest

/// ai.onnx.ml ops and TfIdfVectorizer on cases beyond the ONNX suite's; expected values come from
/// onnx's reference evaluator (onnx 1.16.2, onnx.reference.ReferenceEvaluator).
final class MLOpsTests: XCTestCase {
    /// Runs one node of `domain` with inputs x0, x1, ... and returns its output.
    private func run(_ opType: String, domain: String = "ai.onnx.ml", opset: Int, _ inputs: [Tensor],
                     _ attributes: [String: Attribute]) throws -> Tensor {
        let names = inputs.indices.map { "x\($0)" }
        var graph = Graph()
        var node = Node(opType: opType, inputs: names, outputs: ["y"], attributes: attributes)
        node.domain = domain
        graph.nodes = [node]
        graph.inputs = names.map { ValueInfo(name: $0, type: nil) }
        graph.outputs = [ValueInfo(name: "y", type: nil)]
        var model = Model(graph: graph)
        model.opsetImports = ["": 17, "ai.onnx.ml": domain == "" ? 5 : opset]
        var feeds: [String: Value] = [:]
        for (name, t) in zip(names, inputs) { feeds[name] = .tensor(t) }
        guard let y = try InferenceSession(model: model).run(feeds)["y"]?.tensor else { throw KernelError("no output") }
        return y
    }

    func testTfIdfStringsWithWeightsAndSkips() throws {
        let attributes: [String: Attribute] = [
            "mode": .string("TFIDF"), "min_gram_length": .int(1), "max_gram_length": .int(2), "max_skip_count": .int(1),
            "ngram_counts": .ints([0, 3]), "ngram_indexes": .ints([2, 0, 1, 3, 4]),
            "pool_strings": .strings(["a", "b", "c", "a", "b", "b", "c"]), "weights": .floats([0.5, 2, 3, 4, 10]),
        ]
        let x = Tensor(shape: [2, 6], strings: ["a", "b", "c", "a", "c", "b", "b", "b", "x", "c", "a", "a"])
        let y = try run("TfIdfVectorizer", domain: "", opset: 9, [x], attributes)
        assertClose(y, [Float(1), 4, 6, 8, 10, 1, 2, 6, 0, 10], shape: [2, 5])
    }

    func testTfIdfIDFSkipsUnigramsBelowMinLength() throws {
        let attributes: [String: Attribute] = [
            "mode": .string("IDF"), "min_gram_length": .int(2), "max_gram_length": .int(2), "max_skip_count": .int(2),
            "ngram_counts": .ints([0, 2]), "ngram_indexes": .ints([3, 3, 0, 1]),
            "pool_int64s": .ints([7, 9, 7, 9, 9, 7]), "weights": .floats([0.5, 2, 3, 4]),
        ]
        let y = try run("TfIdfVectorizer", domain: "", opset: 9, [Tensor(shape: [6], scalars: [Int32(7), 1, 9, 9, 3, 7])], attributes)
        assertClose(y, [Float(0.5), 2, 0, 0], shape: [4])
        // Too few ngram_indexes for the pool's n-grams is an error, not an out-of-range read.
        var short = attributes
        short["ngram_indexes"] = .ints([0, 1, 2])
        XCTAssertThrowsError(try run("TfIdfVectorizer", domain: "", opset: 9, [Tensor(shape: [1], scalars: [Int64(7)])], short))
    }

    private func twoTrees(aggregate: Int) -> [String: Attribute] {
        [
            "n_targets": .int(2), "aggregate_function": .int(aggregate),
            "nodes_splits": .tensor(Tensor(shape: [3], scalars: [Float(0.5), 2, -1])),
            "nodes_featureids": .ints([0, 1, 1]), "nodes_modes": .tensor(Tensor(shape: [3], scalars: [UInt8(3), 5, 1])),
            "nodes_truenodeids": .ints([1, 0, 2]), "nodes_trueleafs": .ints([0, 1, 1]),
            "nodes_falsenodeids": .ints([1, 1, 3]), "nodes_falseleafs": .ints([1, 1, 1]),
            "nodes_missing_value_tracks_true": .ints([0, 1, 0]),
            "leaf_targetids": .ints([0, 1, 0, 1]), "leaf_weights": .tensor(Tensor(shape: [4], scalars: [Float(1.5), -2, 4, 8])),
            "tree_roots": .ints([0, 2]),
        ]
    }

    func testTreeEnsembleAverageMaxAndMissingValues() throws {
        let x = Tensor(shape: [4, 2], scalars: [Float(1), 2, 0, 3, .nan, .nan, 1, -5])
        assertClose(try run("TreeEnsemble", opset: 5, [x], twoTrees(aggregate: 0)), [Float(0), 3, 0, 3, 0, 3, 2.75, 0], shape: [4, 2])
        let lowest = -Float.greatestFiniteMagnitude  // MAX starts from the type's lowest, as the reference does
        assertClose(try run("TreeEnsemble", opset: 5, [x], twoTrees(aggregate: 3)),
                    [lowest, 8, lowest, 8, lowest, 8, 4, lowest], shape: [4, 2])
        // A feature index past X's width and a child index past the leaves are errors.
        XCTAssertThrowsError(try run("TreeEnsemble", opset: 5, [Tensor(shape: [1, 1], scalars: [Float(0)])], twoTrees(aggregate: 1)))
        var bad = twoTrees(aggregate: 1)
        bad["nodes_truenodeids"] = .ints([1, 9, 2])
        XCTAssertThrowsError(try run("TreeEnsemble", opset: 5, [x], bad))
        // A node whose true branch is itself loops forever unless the walk is bounded.
        var cycle = twoTrees(aggregate: 1)
        cycle["nodes_truenodeids"] = .ints([0, 0, 2])
        XCTAssertThrowsError(try run("TreeEnsemble", opset: 5, [x], cycle))
    }

    func testLabelEncoderArrayFeatureExtractorBinarizer() throws {
        let le = try run("LabelEncoder", opset: 2, [Tensor(shape: [2, 2], scalars: [Float(3), 1.5, 7, -2])],
                         ["keys_floats": .floats([1.5, -2, 3]), "values_strings": .strings(["x", "y", "z"]), "default_string": .string("?")])
        XCTAssertEqual(le.shape, [2, 2])
        XCTAssertEqual(le.strings, ["z", "x", "?", "y"])
        let picked = try run("ArrayFeatureExtractor", opset: 1,
                             [Tensor(shape: [3], strings: ["p", "q", "r"]), Tensor(shape: [1, 3], scalars: [Int64(2), 0, 2])], [:])
        XCTAssertEqual(picked.shape, [1, 3])
        XCTAssertEqual(picked.strings, ["r", "p", "r"])
        XCTAssertThrowsError(try run("ArrayFeatureExtractor", opset: 1,
                                     [Tensor(shape: [3], scalars: [Float(1), 2, 3]), Tensor(shape: [1], scalars: [Int64(3)])], [:]))
        let b = try run("Binarizer", opset: 1, [Tensor(shape: [4], scalars: [-2.0, -1.0, 0.5, .nan])], ["threshold": .float(-1)])
        assertClose(b, [0.0, 0, 1, 0], shape: [4])
    }
}
