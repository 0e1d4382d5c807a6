#!/usr/bin/env python3
"""onnxruntime as the judge of onnx-train's export of a BatchNorm model (issue 15 item 2).

  .build-test/release/onnx-train export Tests/Fixtures/training/resnet_ce_adamw \
      --params Tests/Fixtures/training/resnet_ce_adamw/expected_checkpoint --outputs output --output /tmp/resnet.onnx
  /work/venv/bin/python Tests/Fixtures/scripts/check_resnet_export.py /tmp/resnet.onnx

onnxruntime 1.19.2 cannot load the artifact's eval_model.onnx (BatchNormalization with training_mode 0
keeps its running-stat outputs); it must load the exported model and give expected_eval.npz's logits
(onnxruntime on the PyTorch eval-mode export of the same trained state). Exits non-zero on a mismatch.
"""
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort

FIXTURE = Path(__file__).resolve().parent.parent / "training" / "resnet_ce_adamw"

model = sys.argv[1]
reference = np.load(FIXTURE / "expected_eval.npz")
session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
batch = session.get_inputs()[0].shape[0]
rows = reference["input"].shape[0]
logits = np.concatenate([session.run(["output"], {"input": reference["input"][k:k + batch]})[0] for k in range(0, rows, batch)])
diff = float(np.abs(logits - reference["logits"]).max())
same = bool((logits.argmax(1) == reference["logits"].argmax(1)).all())
print(f"onnxruntime on the exported model: max |logit difference| {diff:.2e}, same predictions: {same}")
sys.exit(0 if diff < 1e-5 and same else 1)
