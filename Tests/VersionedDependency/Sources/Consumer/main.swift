import OnnxTrain

// y = x + x on a [2] float tensor, through the public API only.
var graph = Graph()
graph.nodes = [Node(opType: "Add", inputs: ["x", "x"], outputs: ["y"])]
graph.inputs = [ValueInfo(name: "x", type: .tensor(.float32, shape: [.value(2)]))]
graph.outputs = [ValueInfo(name: "y", type: nil)]
var model = Model(graph: graph)
model.opsetImports = ["": 17]
let session = try InferenceSession(model: model)
let y = try session.run(["x": .tensor(Tensor(shape: [2], scalars: [Float(1.5), -2]))])["y"]?.tensor
guard let y, y.scalars(as: Float.self) == [3, -4] else { fatalError("unexpected result \(String(describing: y))") }
print("consumer: OnnxTrain as a versioned dependency works: \(y.scalars(as: Float.self))")
