#!/usr/bin/env python3
"""References for the optimizer graphs onnx-train builds in memory for gradient graphs, and for
onnxruntime's LinearLRScheduler. Writes Tests/Fixtures/optimizer_graphs/ (run from the repo root
with /work/venv/bin/python: onnxruntime-training 1.19.2, torch 2.x CPU, numpy<2).

* mlp_momentum.npz: gradient/mlp trained 10 steps (batch 6, batches in order) with
  torch.optim.SGD(lr=0.1, momentum=0.9); gradients from onnxruntime's InferenceSession on
  gradient_graph.onnx. `losses`, `param:<name>`.
* mlp_adamw.npz: the same with AdamW as onnxruntime's OptimType.AdamW artifact configures it
  (Hugging Face mode: eps 1e-6 added to sqrt(v), bias correction folded into the lr, no weight
  decay), lr 0.01, written out in numpy float32.
* linear_lr.json: learning rates onnxruntime's LinearLRScheduler sets (C++ semantics: warmup 3,
  total 10, initial lr 0.1), read after creation and after each optimizer step + scheduler step.
  The 1.19.2 Python binding swaps the two counts, so it is called with them swapped.
"""
import json
import os

import numpy as np

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
OUT = os.path.join(ROOT, "optimizer_graphs")


def gradient_run(update, steps=10):
    import onnxruntime as ort

    case = os.path.join(ROOT, "gradient", "mlp")
    meta = json.load(open(os.path.join(case, "meta.json")))
    params = {k: v.astype(np.float32) for k, v in np.load(os.path.join(case, "params.npz")).items()}
    data = np.load(os.path.join(case, "data.npz"))
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(os.path.join(case, "gradient_graph.onnx"), so, providers=["CPUExecutionProvider"])
    names = meta["parameters"]
    b = meta["batch_size"]
    batches = data["input"].shape[0] // b
    state = {}
    losses = []
    for step in range(steps):
        k = step % batches
        feeds = {"input": data["input"][k * b:(k + 1) * b], "labels": data["labels"][k * b:(k + 1) * b]}
        feeds.update(params)
        outs = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feeds)))
        losses.append(outs["loss"])
        grads = {n: outs[n + "_grad"] for n in names}
        update(params, grads, state, step + 1)
    return np.array(losses, dtype=np.float32), params


def momentum():
    import torch

    holder = {}

    def update(params, grads, state, t):
        if not holder:
            holder["p"] = {n: torch.tensor(v) for n, v in params.items()}
            holder["opt"] = torch.optim.SGD(list(holder["p"].values()), lr=0.1, momentum=0.9)
        for n, p in holder["p"].items():
            p.grad = torch.tensor(grads[n])
        holder["opt"].step()
        for n, p in holder["p"].items():
            params[n] = p.detach().numpy().copy()

    return gradient_run(update)


def adamw():
    lr, b1, b2, eps = np.float32(0.01), np.float32(0.9), np.float32(0.999), np.float32(1e-6)

    def update(params, grads, state, t):
        bc1 = np.float32(1) - b1 ** np.float32(t)
        bc2 = np.float32(1) - b2 ** np.float32(t)
        lr_c = lr * np.sqrt(bc2) / bc1
        for n, g in grads.items():
            m = state.setdefault("m:" + n, np.zeros_like(g))
            v = state.setdefault("v:" + n, np.zeros_like(g))
            m[...] = b1 * m + (np.float32(1) - b1) * g
            v[...] = b2 * v + (np.float32(1) - b2) * g * g
            params[n] = (params[n] - lr_c * m / (np.sqrt(v) + eps)).astype(np.float32)

    return gradient_run(update)


def linear_lr():
    from onnxruntime.training.api import CheckpointState, LinearLRScheduler, Module, Optimizer

    art = os.path.join(ROOT, "training", "mlp_ce_sgd")
    state = CheckpointState.load_checkpoint(os.path.join(art, "checkpoint"))
    module = Module(os.path.join(art, "training_model.onnx"), state)
    opt = Optimizer(os.path.join(art, "optimizer_model.onnx"), module)
    data = np.load(os.path.join(art, "data.npz"))
    # C++ warmup 3, total 10: the binding takes them swapped in 1.19.2.
    sched = LinearLRScheduler(opt, warmup_step_count=10, total_step_count=3, initial_lr=0.1)
    rates = [opt.get_learning_rate()]
    module.train()
    for _ in range(12):
        module(data["input"][:8], data["labels"][:8])
        opt.step()
        module.lazy_reset_grad()
        sched.step()
        rates.append(opt.get_learning_rate())
    return rates


if __name__ == "__main__":
    os.makedirs(OUT, exist_ok=True)
    for name, fn in [("mlp_momentum", momentum), ("mlp_adamw", adamw)]:
        losses, params = fn()
        np.savez(os.path.join(OUT, name + ".npz"), losses=losses, **{"param:" + k: v for k, v in params.items()})
    rates = linear_lr()
    with open(os.path.join(OUT, "linear_lr.json"), "w") as f:
        json.dump({"warmup": 3, "total": 10, "initial_lr": 0.1, "rates": rates}, f, indent=1)
    print("wrote", OUT, rates)
