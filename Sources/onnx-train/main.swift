import OnnxTrain
print("onnx-train")
