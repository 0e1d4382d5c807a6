"""Export the three benchmark models of issue 6 as onnxruntime training artifacts (CrossEntropyLoss,
AdamW) plus inference exports, with fixed data, so that onnx-train, onnxruntime-training and PyTorch
train the same models on the same data.

Models (batch sizes are the benchmark's):
    mlp   MLP 784-512-512-10 (ReLU), input float32 [64, 784]; mlp_b<N> is the same MLP at batch N
    cnn   Conv(3->16, 5x5, pad 2) -> BatchNorm -> MaxPool(2) -> ReLU -> Conv(16->32, 5x5, pad 2) ->
          MaxPool(2) -> ReLU -> global average pool -> Linear(32, 10); input float32 [64, 3, 32, 32]
    gpt   GPT-style causal transformer: token + position Embedding, 2 pre-norm blocks (LayerNorm,
          4-head causal attention with a tril mask, GELU MLP 128->512->128), final LayerNorm, head;
          d 128, T 64, vocab 256; input int64 [8, 64], logits flattened to [8*64, 256]

For each model, writes <out>/<name>/ (default out: Benchmarks/models/, which git ignores):
    training_model.onnx, eval_model.onnx, optimizer_model.onnx, checkpoint   (generate_artifacts, opset 17,
                     fixed batch; BatchNorm running stats frozen; the eval model's BatchNorm made valid)
    inference.onnx   the model alone in eval mode (opset 17, no constant folding), input `input`, output `output`
    data.npz         `input` and `labels` for BATCHES steps (step k uses rows [k*r, (k+1)*r) of each array,
                     r = meta.rows_per_step[name]), cycled by the benchmark
    torch_init.pt    the PyTorch state_dict the artifacts were made from (same initial weights)
    meta.json        batch size, rows per step, lr, parameter count, FLOPs per training step (MLP, GEMMs only)

Run: /work/venv/bin/python Benchmarks/export_models.py [--out DIR] [--models mlp,cnn,gpt]
Pinned stack: Benchmarks/requirements.txt (onnxruntime-training 1.19.2, onnx 1.16.2, numpy 1.26.4,
torch 2.13.0+cpu).
"""

import argparse
import io
import json
import shutil
import sys
import warnings
from pathlib import Path

import numpy as np
import torch
from torch.onnx import TrainingMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "Tests" / "Fixtures" / "scripts"))
import models  # noqa: E402
from models import ProposalNet  # noqa: E402

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "models"
OPSET = 17
BATCHES = 8  # distinct batches of data per model, cycled during the benchmark
LR = 1e-3
SEED = 6


def MLP():
    """784 -> 512 -> ReLU -> 512 -> ReLU -> 10."""
    return models.MLP(784, 512, 512, 10)


def CNN():
    """The torch.js proposal's Net with a BatchNorm and global average pooling (models.ProposalNet)."""
    return ProposalNet(channels=3, classes=10, features=32, batchnorm=True, global_pool=True)


def GPT():
    """d 128, 4 heads, T 64, vocab 256, 2 blocks; logits flattened to [B*T, vocab]."""
    return models.GPT(vocab=256, d=128, heads=4, block=64, layers=2, flat_logits=True)


def split_name(name):
    """`mlp_b<N>` is the MLP at batch N (the benchmark's batch-scaling runs); other names are MODELS keys."""
    if name.startswith("mlp_b") and name[5:].isdigit() and int(name[5:]) > 0:
        return "mlp", int(name[5:])
    if name not in MODELS:
        raise SystemExit(f"export_models: unknown model {name!r} (mlp, cnn, gpt or mlp_b<N>)")
    return name, None


def make_data(name, rng, batch=None):
    """Fixed random data for BATCHES steps: inputs and labels, batch-first."""
    if name == "mlp":
        b = batch or 64
        x = rng.rand(BATCHES * b, 784).astype(np.float32)
        y = rng.randint(0, 10, size=BATCHES * b).astype(np.int64)
        return {"input": x, "labels": y}, {"input": b, "labels": b}
    if name == "cnn":
        b = 64
        x = rng.randn(BATCHES * b, 3, 32, 32).astype(np.float32)
        y = rng.randint(0, 10, size=BATCHES * b).astype(np.int64)
        return {"input": x, "labels": y}, {"input": b, "labels": b}
    b, t = 8, 64
    tokens = rng.randint(0, 256, size=(BATCHES * b, t + 1)).astype(np.int64)
    return {"input": tokens[:, :t].copy(), "labels": tokens[:, 1:].reshape(-1).copy()}, {"input": b, "labels": b * t}


MODELS = {"mlp": MLP, "cnn": CNN, "gpt": GPT}


def expose_layer_norm_stats(proto):
    """onnxruntime's gradient builder needs LayerNormalization's Mean and InvStdDev outputs."""
    for node in proto.graph.node:
        if node.op_type == "LayerNormalization" and len(node.output) == 1:
            node.output.extend([node.output[0] + "_mean", node.output[0] + "_inv_std_dev"])


def make_eval_batchnorm_valid(path):
    """generate_artifacts leaves BatchNormalization's running-stat outputs on the eval graph's
    training_mode=0 node, which opset >= 14 forbids; drop them (they are unused)."""
    import onnx

    proto = onnx.load(path)
    changed = False
    for node in proto.graph.node:
        if node.op_type == "BatchNormalization" and len(node.output) > 1:
            del node.output[1:]
            changed = True
    if changed:
        onnx.save(proto, path)


def torch_export(model, example, training):
    import onnx

    f = io.BytesIO()
    torch.onnx.export(
        model, (example,), f, dynamo=False, opset_version=OPSET,
        training=TrainingMode.TRAINING if training else TrainingMode.EVAL,
        do_constant_folding=False, export_params=True,
        input_names=["input"], output_names=["output"],
    )
    return onnx.load_from_string(f.getvalue())


def mlp_train_flops(batch):
    """GEMM FLOPs of one MLP training step: forward 2*B*sum(in*out); backward twice that (dX and dW),
    minus the first layer's dX, which is not needed."""
    layers = [(784, 512), (512, 512), (512, 10)]
    forward = sum(2 * batch * i * o for i, o in layers)
    return forward * 3 - 2 * batch * 784 * 512


def export_model(name, out: Path):
    # onnx and onnxruntime are imported here, not at the top: bench_reference.py imports this file for
    # the model classes in its PyTorch child, whose memory should hold PyTorch only.
    import onnx
    from onnxruntime.training import artifacts

    folder = out / name
    name, batch = split_name(name)
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    torch.manual_seed(SEED)
    rng = np.random.RandomState(SEED)
    model = MODELS[name]()
    data, rows = make_data(name, rng, batch)
    example = torch.from_numpy(data["input"][:rows["input"]])
    torch.save(model.state_dict(), folder / "torch_init.pt")

    model.train()
    proto = torch_export(model, example, training=True)
    expose_layer_norm_stats(proto)
    init_names = {i.name for i in proto.graph.initializer}
    trainable = [n for n, _ in model.named_parameters()]
    assert all(n in init_names for n in trainable), name
    frozen = [n for n, _ in model.named_buffers() if n.endswith(("running_mean", "running_var"))]
    artifacts.generate_artifacts(
        proto, requires_grad=trainable, frozen_params=frozen,
        loss=artifacts.LossType.CrossEntropyLoss, optimizer=artifacts.OptimType.AdamW,
        artifact_directory=str(folder),
    )
    make_eval_batchnorm_valid(folder / "eval_model.onnx")

    model.load_state_dict(torch.load(folder / "torch_init.pt"))
    model.eval()
    onnx.save(torch_export(model, example, training=False), folder / "inference.onnx")
    np.savez(folder / "data.npz", **data)
    params = sum(p.numel() for p in model.parameters())
    meta = {
        "name": name,
        "variant": folder.name,
        "batch_size": rows["input"],
        "rows_per_step": rows,
        "batches": BATCHES,
        "lr": LR,
        "optimizer": "AdamW (beta1 0.9, beta2 0.999, epsilon 1e-6, weight decay 0, bias correction)",
        "loss": "CrossEntropyLoss (mean)",
        "parameters": params,
        "trainable": trainable,
        "frozen": frozen,
        "opset": OPSET,
    }
    if name == "mlp":
        meta["train_step_gemm_flops"] = mlp_train_flops(rows["input"])
    with open(folder / "meta.json", "w") as f:
        json.dump(meta, f, indent=2)
        f.write("\n")
    print(f"{name}: {params} parameters -> {folder}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--models", default="mlp,cnn,gpt")
    args = parser.parse_args(argv)
    for category in (DeprecationWarning, UserWarning, FutureWarning, torch.jit.TracerWarning):
        warnings.filterwarnings("ignore", category=category)
    import onnxruntime as ort

    ort.set_default_logger_severity(3)
    for name in args.models.split(","):
        export_model(name, args.out)


if __name__ == "__main__":
    main()
