"""Export the seed gradient-graph example: MyModel of onnxruntime's "train PyTorch in JS" walkthrough
(Linear(10, 5) -> ReLU -> Linear(5, 2)) as a gradient graph, with a numerically sound loss.

The walkthrough used `onnxruntime.training.experimental.export_gradient_graph`, which cannot be
imported with torch 2.13 (its symbolic registry imports the removed torch.onnx._internal.jit_utils).
This script does what that function does: a TorchScript export (dynamo=False, training mode, no
constant folding, opset 12, dynamic `batch_size`) of
    (input, labels, *params) -> (output, loss)
with the parameters as graph inputs, then onnxruntime's GradientGraphBuilder(...).build()/.save().

The walkthrough's own loss took log2 of raw logits; here the loss is cross entropy written as
    loss = -mean(log_softmax(output, dim=1)[i, labels[i]])
LogSoftmax subtracts the row maximum before exponentiating, so it never overflows or takes log(0)
(a naive log(softmax(x)) does for large logits).

Writes, next to this script:
    gradient_graph.onnx  inputs input [batch_size, 10], labels int64 [batch_size], then the parameters
                         fc1.weight, fc1.bias, fc2.weight, fc2.bias; outputs output, loss, then
                         <param>_grad in parameter order
    params.npz           the initial parameters (PyTorch default init, seed 12), by graph input name
    data.npz             training set: input float32 [256, 10], labels int64 [256]
    test.npz             held-out set: input float32 [128, 10], labels int64 [128]
    reference.json       gradient check against autograd and onnxruntime's run with the README's settings

Run: /work/venv/bin/python Examples/seed-gradient-graph/export.py
"""

import sys
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
import torch.nn.functional as F

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
import example_export as ex  # noqa: E402
# The fixtures' gradient-graph export (model + loss, parameters as inputs, onnxruntime's GradientGraphBuilder).
from make_gradient_fixtures import build_gradient_graph  # noqa: E402

SEED = 12
OPSET = 12  # export_gradient_graph's default
BATCH, EPOCHS, LR = 16, 10, 0.1
N_TRAIN, N_TEST = 256, 128


# The walkthrough's MyModel: Linear(10, 5) -> ReLU -> Linear(5, 2) (models.SeedModel).
MyModel = ex.models.SeedModel


def cross_entropy(output, labels):
    """Mean negative log-likelihood through log_softmax (stable), as GatherElements of LogSoftmax."""
    return -F.log_softmax(output, dim=1).gather(1, labels.unsqueeze(1)).mean()


def blobs(rng, n):
    """Two overlapping Gaussian blobs in 10-D: class c has mean (2c - 1) * u for a fixed unit vector u
    and unit covariance. The Bayes-optimal accuracy is Phi(1), about 84%: the data is learnable, but
    no run reaches 100%."""
    u = np.random.RandomState(SEED).randn(10)
    u /= np.linalg.norm(u)
    labels = rng.randint(0, 2, size=n).astype(np.int64)
    x = rng.randn(n, 10) + np.outer(2 * labels - 1, 1.0 * u)
    return {"input": x.astype(np.float32), "labels": labels}


def accuracy_and_loss(session, params, data):
    output, loss = session.run(["output", "loss"], {**data, **params})
    return float(loss), float((output.argmax(axis=1) == data["labels"]).mean())


def main():
    ex.quiet()
    ex.seed_all(SEED)
    ex.clean_outputs(HERE, ("gradient_graph.onnx", "params.npz", "data.npz", "test.npz", "reference.json"))
    rng = np.random.RandomState(SEED + 1)
    train, test = blobs(rng, N_TRAIN), blobs(rng, N_TEST)
    model = MyModel()
    path = HERE / "gradient_graph.onnx"
    param_names = build_gradient_graph(model, torch.from_numpy(train["input"][:BATCH]),
                                       torch.from_numpy(train["labels"][:BATCH]), path, OPSET, loss_fn=cross_entropy)
    params = {n: p.detach().numpy().copy() for n, p in model.named_parameters()}
    ex.save_npz(HERE / "params.npz", params)
    ex.save_npz(HERE / "data.npz", train)
    ex.save_npz(HERE / "test.npz", test)

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    grad_names = [n + "_grad" for n in param_names]

    # The gradient graph must agree with PyTorch autograd on a batch.
    batch = {k: v[:BATCH] for k, v in train.items()}
    check_loss, *grads = session.run(["loss"] + grad_names, {**batch, **params})
    model.zero_grad()
    ref = cross_entropy(model(torch.from_numpy(batch["input"])), torch.from_numpy(batch["labels"]))
    ref.backward()
    grad_diff = max(float(np.abs(g - p.grad.numpy()).max()) for g, (_, p) in zip(grads, model.named_parameters()))
    assert abs(float(check_loss) - float(ref)) < 1e-5 and grad_diff < 1e-5, (float(check_loss), float(ref), grad_diff)

    # Plain SGD with onnxruntime computing the gradients: p <- p - lr * p_grad, shuffled per epoch.
    current = {n: v.copy() for n, v in params.items()}
    init_loss, init_acc = accuracy_and_loss(session, current, test)
    epochs, steps, seconds = [], 0, 0.0
    print(f"seed-gradient-graph: SGD lr {LR}, batch {BATCH}, {EPOCHS} epochs; initial test loss {init_loss:.4f}")
    for epoch in range(EPOCHS):
        order = np.random.RandomState(SEED + epoch).permutation(N_TRAIN)
        t0 = time.perf_counter()
        losses = []
        for start in range(0, N_TRAIN, BATCH):
            rows = order[start:start + BATCH]
            feeds = {"input": train["input"][rows], "labels": train["labels"][rows], **current}
            loss, *grads = session.run(["loss"] + grad_names, feeds)
            for n, g in zip(param_names, grads):
                current[n] = (current[n] - np.float32(LR) * g).astype(np.float32)
            losses.append(float(loss))
            steps += 1
        seconds += time.perf_counter() - t0
        eval_loss, eval_acc = accuracy_and_loss(session, current, test)
        epochs.append({"epoch": epoch + 1, "steps": steps, "train_loss": float(np.mean(losses)),
                       "eval_loss": eval_loss, "eval_accuracy": eval_acc})
        print(f"  epoch {epoch + 1}: train loss {np.mean(losses):.4f}  eval loss {eval_loss:.4f}  "
              f"eval accuracy {eval_acc:.4f}")
    assert epochs[-1]["eval_loss"] < init_loss - 0.1, epochs[-1]

    graph = onnx.load(path).graph
    ex.write_json(HERE / "reference.json", {
        "runtime": "onnxruntime 1.19.2 InferenceSession on gradient_graph.onnx (CPU, 1 thread), SGD in numpy float32",
        "settings": {"optimizer": "sgd", "batch_size": BATCH, "epochs": EPOCHS, "lr": LR,
                     "shuffle": f"RandomState({SEED} + epoch)", "drop_last": False},
        "autograd_check": {"loss_onnxruntime": float(check_loss), "loss_torch": float(ref), "max_grad_difference": grad_diff},
        "parameters": param_names,
        "gradient_graph": ex.graph_io(path),
        "ops": sorted({(n.domain or "ai.onnx") + ":" + n.op_type for n in graph.node}),
        "initial_eval_loss": init_loss, "initial_eval_accuracy": init_acc,
        "epochs": epochs, "steps": steps, "train_seconds": round(seconds, 3),
    })


if __name__ == "__main__":
    main()
