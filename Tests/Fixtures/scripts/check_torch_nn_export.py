"""Runs the Swift model API's ONNX exports in onnxruntime and compares them with PyTorch's outputs.

The exports come from the Swift tests (Tests/OnnxTrainNNTests/ExportTests.swift), kept with NN_EXPORT_DIR:
    NN_EXPORT_DIR=/tmp/nn-exports swift test ... --filter ExportTests
    /work/venv/bin/python check_torch_nn_export.py /tmp/nn-exports
For each case of make_torch_nn_fixtures.py it feeds x[:batch] to <case>.onnx (onnx.checker first) and
prints the largest |difference| from reference.npz's output; it exits 1 when one exceeds 1e-5.
"""

import sys

import numpy as np
import onnx
import onnxruntime as ort

from common import FIXTURES


def main(folder):
    worst = 0.0
    for case in ["net", "encoder", "convzoo", "rnnzoo", "attention"]:
        model = onnx.load(f"{folder}/{case}.onnx")
        onnx.checker.check_model(model, full_check=True)
        data = np.load(FIXTURES / "torch-nn" / case / "data.npz")
        expected = np.load(FIXTURES / "torch-nn" / case / "reference.npz")["output"]
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        session = ort.InferenceSession(f"{folder}/{case}.onnx", options, providers=["CPUExecutionProvider"])
        batch = int(data["batch"])
        (output,) = session.run(["output"], {"input": data["x"][:batch]})
        diff = float(np.abs(output - expected).max())
        worst = max(worst, diff)
        print(f"{case}: onnxruntime {ort.__version__} vs PyTorch max |diff| {diff:.3g}")
    return 0 if worst <= 1e-5 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
