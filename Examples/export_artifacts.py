"""Turn a PyTorch module into onnxruntime training artifacts that `onnx-train run` trains.

The README's "Producing models" section; run with onnxruntime-training==1.19.2, onnx==1.16.2,
torch==2.13.0+cpu and numpy<2 (Examples/requirements.txt). Writes my-model/ and train.npz in the current folder.
"""
import os
import numpy as np
import onnx
import torch
from onnxruntime.training import artifacts

model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4))
torch.onnx.export(model, torch.randn(8, 16), "model.onnx", input_names=["input"], output_names=["output"],
                  dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}},
                  training=torch.onnx.TrainingMode.TRAINING, do_constant_folding=False, dynamo=False)
os.makedirs("my-model", exist_ok=True)
artifacts.generate_artifacts(
    onnx.load("model.onnx"),
    requires_grad=[name for name, _ in model.named_parameters()],
    loss=artifacts.LossType.CrossEntropyLoss, optimizer=artifacts.OptimType.AdamW,
    artifact_directory="my-model", additional_output_names=["output"])
x = np.random.randn(256, 16).astype(np.float32)
np.savez("train.npz", input=x, labels=(x[:, :4].argmax(1)).astype(np.int64))
