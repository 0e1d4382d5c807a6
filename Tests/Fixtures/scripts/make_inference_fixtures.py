"""Inference fixtures: PyTorch models exported with the TorchScript exporter, expected outputs from onnxruntime.

Writes Tests/Fixtures/inference/<name>_opset<N>/ in the ONNX backend-test layout:
    model.onnx
    test_data_set_0/input_<i>.pb   (graph input order)
    test_data_set_0/output_<i>.pb  (graph output order, computed by onnxruntime's CPU InferenceSession)
plus Tests/Fixtures/inference/cases.txt listing every case directory.

Run: /work/venv/bin/python Tests/Fixtures/scripts/make_inference_fixtures.py
"""

import io

import numpy as np
import onnx
import onnxruntime as ort
import torch
import torch.nn as nn
import torch.nn.functional as F
from onnx import numpy_helper

from common import FIXTURES, fresh_dir, quiet_torch_export_warnings, seed_all
from models import GPT, randomize_norm_params

OPSETS = (14, 17)
OUT = FIXTURES / "inference"


class MLP(nn.Module):
    """Linear(20, 32) -> ReLU -> Linear(32, 10)."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(20, 32)
        self.fc2 = nn.Linear(32, 10)

    def forward(self, x):
        return self.fc2(F.relu(self.fc1(x)))


class CNN(nn.Module):
    """Conv -> BatchNorm (eval) -> ReLU -> MaxPool -> Conv -> ReLU -> flatten -> Linear; input [N, 3, 16, 16]."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, kernel_size=3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.pool = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(8, 8, kernel_size=3, stride=2, padding=1)
        self.fc = nn.Linear(8 * 4 * 4, 5)

    def forward(self, x):
        x = self.pool(F.relu(self.bn1(self.conv1(x))))  # [N, 8, 8, 8]
        x = F.relu(self.conv2(x))  # [N, 8, 4, 4]
        return self.fc(torch.flatten(x, 1))


def export(model, args, input_names, output_names, opset, dynamic_axes=None, fold=True):
    f = io.BytesIO()
    torch.onnx.export(
        model,
        args,
        f,
        dynamo=False,
        opset_version=opset,
        input_names=input_names,
        output_names=output_names,
        dynamic_axes=dynamic_axes,
        do_constant_folding=fold,
    )
    return onnx.load_from_string(f.getvalue())


def write_case(name, model_proto, feeds):
    """Save model + one test data set whose outputs come from onnxruntime."""
    case = fresh_dir(OUT / name)
    onnx.checker.check_model(model_proto)
    path = case / "model.onnx"
    onnx.save(model_proto, path)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    input_names = [i.name for i in model_proto.graph.input]
    output_names = [o.name for o in model_proto.graph.output]
    assert [i.name for i in session.get_inputs()] == input_names
    outputs = session.run(output_names, {n: feeds[n] for n in input_names})
    data = case / "test_data_set_0"
    data.mkdir()
    for i, n in enumerate(input_names):
        onnx.save_tensor(numpy_helper.from_array(feeds[n], n), data / f"input_{i}.pb")
    for i, (n, v) in enumerate(zip(output_names, outputs)):
        onnx.save_tensor(numpy_helper.from_array(v, n), data / f"output_{i}.pb")
    ops = sorted({node.op_type for node in model_proto.graph.node})
    print(f"{name}: inputs {input_names} outputs {output_names} ops {ops}")
    return name


def main():
    quiet_torch_export_warnings()
    OUT.mkdir(parents=True, exist_ok=True)
    cases = []
    for opset in OPSETS:
        seed_all(1000 + opset)
        rng = np.random.RandomState(opset)

        mlp = MLP().eval()
        x = rng.randn(4, 20).astype(np.float32)
        proto = export(mlp, (torch.from_numpy(x),), ["input"], ["output"], opset)
        cases.append(write_case(f"mlp_opset{opset}", proto, {"input": x}))

        # Same MLP with a symbolic batch dim; the data set uses a batch size (3) different from the trace (4).
        dyn = {"input": {0: "batch"}, "output": {0: "batch"}}
        proto = export(mlp, (torch.from_numpy(x),), ["input"], ["output"], opset, dynamic_axes=dyn)
        x3 = rng.randn(3, 20).astype(np.float32)
        cases.append(write_case(f"mlp_dynamic_opset{opset}", proto, {"input": x3}))

        cnn = CNN()
        randomize_norm_params(cnn)
        cnn.eval()
        x = rng.randn(2, 3, 16, 16).astype(np.float32)
        # Constant folding would fuse BatchNorm into the Conv; keep it as its own node.
        proto = export(cnn, (torch.from_numpy(x),), ["input"], ["output"], opset, fold=False)
        cases.append(write_case(f"cnn_opset{opset}", proto, {"input": x}))

        gpt = GPT()
        randomize_norm_params(gpt)
        gpt.eval()
        idx = rng.randint(0, 32, size=(2, 8)).astype(np.int64)
        proto = export(gpt, (torch.from_numpy(idx),), ["input"], ["logits"], opset)
        cases.append(write_case(f"gpt_opset{opset}", proto, {"input": idx}))

        # Cross-check onnxruntime against PyTorch so a bad export cannot hide in the fixtures.
        with torch.no_grad():
            ref = gpt(torch.from_numpy(idx)).numpy()
        got = onnx.numpy_helper.to_array(onnx.load_tensor(OUT / f"gpt_opset{opset}" / "test_data_set_0" / "output_0.pb"))
        assert np.allclose(ref, got, atol=1e-4), np.abs(ref - got).max()

        # Same GPT with symbolic batch and sequence dims: arange becomes Range and the mask slice
        # gets runtime ends. The data set uses batch 3 and T = 5 (< the traced 8).
        dyn = {"input": {0: "batch", 1: "seq"}, "logits": {0: "batch", 1: "seq"}}
        proto = export(gpt, (torch.from_numpy(idx),), ["input"], ["logits"], opset, dynamic_axes=dyn)
        idx_dyn = np.random.RandomState(100 + opset).randint(0, 32, size=(3, 5)).astype(np.int64)
        cases.append(write_case(f"gpt_dynamic_opset{opset}", proto, {"input": idx_dyn}))
        with torch.no_grad():
            ref = gpt(torch.from_numpy(idx_dyn)).numpy()
        got = onnx.numpy_helper.to_array(onnx.load_tensor(OUT / f"gpt_dynamic_opset{opset}" / "test_data_set_0" / "output_0.pb"))
        assert np.allclose(ref, got, atol=1e-4), np.abs(ref - got).max()

    with open(OUT / "cases.txt", "w") as f:
        f.write("# <case dir>  (ONNX backend-test layout; outputs from onnxruntime 1.19.2 CPU)\n")
        for c in cases:
            f.write(c + "\n")


if __name__ == "__main__":
    main()
