/// The version `onnx-train --version` prints.
public enum OnnxTrainVersion {
    public static let current = "0.11.0"
    /// The onnxruntime-training release whose training semantics (artifacts, checkpoints, ops) this follows.
    public static let onnxRuntimeTraining = "1.19.2"
}
