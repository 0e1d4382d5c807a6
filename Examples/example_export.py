"""Shared helpers for the example exporters: TorchScript export, onnxruntime training artifacts,
and onnxruntime-training's own training loop as the reference every example README quotes.

The exporters (Examples/<name>/export.py) import this file from their parent folder; their PyTorch
models come from the repository's one module of model definitions (`ex.models`,
Tests/Fixtures/scripts/models.py). Pinned stack:
Examples/requirements.txt. Everything is seeded, and onnxruntime runs single-threaded, so re-running
an exporter gives the same exported files and data (the timings in reference.json naturally vary).
"""

import io
import json
import os
import random
import shutil
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnxruntime.training import artifacts
from onnxruntime.training.api import CheckpointState, Module, Optimizer
from torch.onnx import TrainingMode

EXAMPLES = Path(__file__).resolve().parent
sys.path.insert(0, str(EXAMPLES.parent / "Tests" / "Fixtures" / "scripts"))
import models  # noqa: E402,F401  (the exporters use ex.models)
ARTIFACT_FILES = ("training_model.onnx", "eval_model.onnx", "optimizer_model.onnx", "checkpoint")


def seed_all(seed: int) -> None:
    """Seed every RNG an exporter touches so that re-running it gives the same bytes."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)


def quiet() -> None:
    """The TorchScript exporter (dynamo=False) is deprecated and says so; the examples use it on purpose
    because onnxruntime's artifact and gradient builders are made for its graphs."""
    for category in (DeprecationWarning, UserWarning, FutureWarning, torch.jit.TracerWarning):
        warnings.filterwarnings("ignore", category=category)
    ort.set_default_logger_severity(3)


def clean_outputs(folder: Path, names) -> None:
    """Delete the files an exporter is about to rewrite (never the script or README)."""
    for name in names:
        path = folder / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def save_npz(path: Path, arrays: dict) -> None:
    """Uncompressed .npz: float32 features, int64 labels/tokens, batch-first."""
    np.savez(path, **arrays)


def write_json(path: Path, obj) -> None:
    with open(path, "w") as f:
        json.dump(obj, f, indent=2)
        f.write("\n")


def expose_layer_norm_stats(proto) -> None:
    """Give every LayerNormalization its optional Mean and InvStdDev outputs.

    torch exports LayerNormalization with one output; onnxruntime's gradient builder reads the saved
    statistics from outputs 1 and 2 and fails ("i < node_->OutputDefs().size()") without them.
    """
    for node in proto.graph.node:
        if node.op_type == "LayerNormalization" and len(node.output) == 1:
            node.output.extend([node.output[0] + "_mean", node.output[0] + "_inv_std_dev"])


def export_for_training(model, example, input_names, output_name="output", opset=17, dynamic_batch=True,
                        output_dim="batch"):
    """TorchScript export in training mode, parameters kept as named initializers, batch dim symbolic.

    `output_dim` names the output's first dim (and so the CE labels' dim); give it its own name when it
    is not the batch size (a transformer's flattened [B*T, V] logits), since inputs that share a
    dim_param name must agree on its value.
    """
    f = io.BytesIO()
    dynamic = None
    if dynamic_batch:
        dynamic = {n: {0: "batch"} for n in input_names}
        dynamic[output_name] = {0: output_dim}
    torch.onnx.export(
        model,
        tuple(example),
        f,
        dynamo=False,
        opset_version=opset,
        training=TrainingMode.TRAINING,
        do_constant_folding=False,
        export_params=True,
        input_names=input_names,
        output_names=[output_name],
        dynamic_axes=dynamic,
    )
    proto = onnx.load_from_string(f.getvalue())
    expose_layer_norm_stats(proto)
    return proto


def make_eval_batchnorm_valid(path: Path) -> int:
    """Drop BatchNormalization's running-stat outputs from an eval model (training_mode 0).

    generate_artifacts sets training_mode=0 in the eval graph but keeps the node's extra outputs,
    which opset >= 14 forbids, so onnxruntime refuses `Module(train, state, eval)` with that file.
    The extra outputs are unused in the eval graph; removing them gives a valid graph with the same
    loss and logits. Returns how many nodes were changed.
    """
    proto = onnx.load(path)
    changed = 0
    for node in proto.graph.node:
        if node.op_type == "BatchNormalization" and len(node.output) > 1:
            mode = [a for a in node.attribute if a.name == "training_mode"]
            if not mode or mode[0].i == 0:
                del node.output[1:]
                changed += 1
    if changed:
        onnx.checker.check_model(proto)
        onnx.save(proto, path)
    return changed


def generate_training_artifacts(model, proto, folder: Path, output_name="output", optimizer=None):
    """CrossEntropyLoss + AdamW (or `optimizer`) artifacts; the logits stay an output of both models so
    that eval can report accuracy (additional_output_names). BatchNorm running statistics become frozen
    parameters."""
    init_names = {i.name for i in proto.graph.initializer}
    trainable = [n for n, _ in model.named_parameters()]
    missing = [n for n in trainable if n not in init_names]
    assert not missing, f"parameters that are not initializers: {missing}"
    frozen = [n for n, _ in model.named_buffers() if n.endswith(("running_mean", "running_var")) and n in init_names]
    artifacts.generate_artifacts(
        proto,
        requires_grad=trainable,
        frozen_params=frozen,
        loss=artifacts.LossType.CrossEntropyLoss,
        optimizer=optimizer or artifacts.OptimType.AdamW,
        artifact_directory=str(folder),
        additional_output_names=[output_name],
    )
    fixed = make_eval_batchnorm_valid(folder / "eval_model.onnx")
    return trainable, frozen, fixed


def graph_io(path: Path):
    """Names, element types and shapes of a model's inputs and outputs (for the README and meta)."""
    graph = onnx.load(path).graph

    def describe(v):
        if v.type.HasField("sequence_type"):
            elem = v.type.sequence_type.elem_type.tensor_type.elem_type
            return {"name": v.name, "type": "seq(" + onnx.TensorProto.DataType.Name(elem) + ")"}
        t = v.type.tensor_type
        dims = [d.dim_param if d.dim_param else d.dim_value for d in t.shape.dim]
        return {"name": v.name, "type": onnx.TensorProto.DataType.Name(t.elem_type), "shape": dims}

    return {"inputs": [describe(v) for v in graph.input], "outputs": [describe(v) for v in graph.output]}


def batch_units(data: dict, unit_rows: dict):
    """How many units the data holds. A unit is `unit_rows[n]` rows of array n (1 for plain per-sample
    arrays, T for flattened per-token labels); batching cuts every array into the same number of parts."""
    counts = {n: a.shape[0] // unit_rows[n] for n, a in data.items()}
    assert all(a.shape[0] % unit_rows[n] == 0 for n, a in data.items()), counts
    assert len(set(counts.values())) == 1, counts
    return next(iter(counts.values()))


def take(data: dict, unit_rows: dict, names, units: np.ndarray):
    """The rows of every array that belong to the given units, in that order."""
    out = []
    for n in names:
        r = unit_rows[n]
        rows = (units[:, None] * r + np.arange(r)[None, :]).reshape(-1)
        out.append(np.ascontiguousarray(data[n][rows]))
    return out


def evaluate(module, data, unit_rows, names, batch_size, labels="labels"):
    """Mean loss over the whole set (weighted by rows) and top-1 accuracy of the logits."""
    module.eval()
    n_units = batch_units(data, unit_rows)
    total_loss, total_rows, correct = 0.0, 0, 0
    for start in range(0, n_units, batch_size):
        units = np.arange(start, min(start + batch_size, n_units))
        feeds = take(data, unit_rows, names, units)
        loss, logits = module(*feeds)
        y = feeds[names.index(labels)]
        total_loss += float(loss) * len(y)
        total_rows += len(y)
        correct += int((np.asarray(logits).argmax(axis=-1) == y).sum())
    module.train()
    return total_loss / total_rows, correct / total_rows


def train_with_onnxruntime(folder: Path, train: dict, test: dict, *, batch_size, epochs, lr, seed,
                           unit_rows=None, threads=1):
    """Train the artifacts exactly as the README's `onnx-train run` command would, with onnxruntime.

    Per epoch the units are shuffled with numpy's RandomState(seed + epoch); the last partial batch
    is kept. Loop per batch: module(*batch); optimizer.step(); module.lazy_reset_grad(). After each
    epoch the eval model runs over the test set. The artifacts on disk are not modified (the state
    is loaded into memory). Returns a history dict for reference.json.
    """
    state = CheckpointState.load_checkpoint(str(folder / "checkpoint"))
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    module = Module(str(folder / "training_model.onnx"), state, str(folder / "eval_model.onnx"),
                    device="cpu", session_options=options)
    optimizer = Optimizer(str(folder / "optimizer_model.onnx"), module)
    optimizer.set_learning_rate(lr)
    module.train()
    names = module.input_names()
    assert sorted(names) == sorted(train), (names, list(train))
    unit_rows = unit_rows or {n: 1 for n in names}
    n_units = batch_units(train, unit_rows)

    init_loss, init_acc = evaluate(module, test, unit_rows, names, 256)
    history = {"epochs": [], "initial_eval_loss": init_loss, "initial_eval_accuracy": init_acc}
    steps, train_seconds = 0, 0.0
    step_losses = []
    for epoch in range(epochs):
        order = np.random.RandomState(seed + epoch).permutation(n_units)
        t0 = time.perf_counter()
        losses = []
        for start in range(0, n_units, batch_size):
            feeds = take(train, unit_rows, names, order[start:start + batch_size])
            loss, _ = module(*feeds)
            optimizer.step()
            module.lazy_reset_grad()
            losses.append(float(loss))
            steps += 1
        train_seconds += time.perf_counter() - t0
        step_losses.extend(losses)
        eval_loss, eval_acc = evaluate(module, test, unit_rows, names, 256)
        history["epochs"].append({
            "epoch": epoch + 1, "steps": steps, "train_loss": float(np.mean(losses)),
            "eval_loss": eval_loss, "eval_accuracy": eval_acc,
        })
        print(f"  epoch {epoch + 1}: train loss {np.mean(losses):.4f}  eval loss {eval_loss:.4f}  "
              f"eval accuracy {eval_acc:.4f}  ({steps} steps, {train_seconds:.2f}s)")
    history.update({
        "steps": steps, "train_seconds": round(train_seconds, 3), "threads": threads,
        "first_step_loss": step_losses[0], "last_step_loss": step_losses[-1],
    })
    return history
