"""A training fixture with Dropout in training mode, for the resume tests of the Trainer.

Writes Tests/Fixtures/training/mlp_dropout/: onnxruntime-training artifacts (generate_artifacts,
AdamW, cross-entropy) of Linear(16, 32) -> ReLU -> Dropout(0.3) -> Linear(32, 4) with a dynamic
batch axis, and data.npz (input float32 [60, 16], labels int64 [60]; 60 is not a multiple of the
batch sizes the tests use, so the last partial batch is exercised too).

The tests compare onnx-train with itself (a run killed and resumed against one straight run), so
no onnxruntime trajectory is stored: Dropout masks come from each runtime's own generator.

Run: cd Tests/Fixtures/scripts && /work/venv/bin/python make_dropout_fixture.py
"""

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from onnxruntime.training import artifacts

from common import FIXTURES, fresh_dir, quiet_torch_export_warnings, save_npz, seed_all
from make_training_fixtures import export_training


class DropoutMLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(16, 32)
        self.drop = nn.Dropout(0.3)
        self.fc2 = nn.Linear(32, 4)

    def forward(self, x):
        return self.fc2(self.drop(F.relu(self.fc1(x))))


def main():
    quiet_torch_export_warnings()
    seed_all(11)
    case = fresh_dir(FIXTURES / "training" / "mlp_dropout")
    model = DropoutMLP()
    proto = export_training(model, torch.randn(4, 16), dynamic_batch=True)
    assert any(n.op_type == "Dropout" for n in proto.graph.node)
    artifacts.generate_artifacts(
        proto,
        requires_grad=[n for n, _ in model.named_parameters()],
        loss=artifacts.LossType.CrossEntropyLoss,
        optimizer=artifacts.OptimType.AdamW,
        artifact_directory=str(case),
    )
    rng = np.random.default_rng(11)
    x = rng.standard_normal((60, 16)).astype(np.float32)
    w = rng.standard_normal((16, 4)).astype(np.float32)
    y = np.argmax(x @ w, axis=1).astype(np.int64)
    save_npz(case / "data.npz", {"input": x, "labels": y})
    print("wrote", case)


if __name__ == "__main__":
    main()
