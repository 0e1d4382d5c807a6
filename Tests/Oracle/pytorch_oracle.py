"""PyTorch as the oracle for `onnx-train artifacts` on models exported by both torch exporters (issue 10).

For every model below (random weights from a fixed seed, never downloaded) and both exporters,
`torch.onnx.export(..., dynamo=True, opset 18, optimize=False)` and the TorchScript exporter
(`dynamo=False`, training mode, no constant folding):
  1. `onnx-train artifacts MODEL --loss cross-entropy --gradient-graph` (SGD and AdamW);
  2. `onnx-train infer gradient_graph.onnx` with the model's own initial parameters: the first
     step's loss and every parameter gradient against PyTorch autograd (1e-4 relative to each
     tensor's largest magnitude);
  3. `onnx-train run ARTIFACTS --no-shuffle` for 20 steps over the exact batches the PyTorch loop
     takes, SGD and AdamW: the losses against PyTorch's loop to 1e-4. AdamW is written by hand as
     onnxruntime's adam_mode 1 computes it (eps added to sqrt(v), then the bias correction folded
     into the step size, as Hugging Face's AdamW); torch.optim.AdamW places eps differently.
BatchNorm nets (CNN, ResNet-18, MobileNetV3-Small): float rounding alone makes their trajectories
drift (BatchNorm over few values per channel amplifies it: PyTorch with 1 and 2 threads already
differs, and PyTorch in float32 differs from PyTorch in float64 by percents for ResNet-18), so the
first step's loss and gradients must match to 1e-4 in float32, and their later float32 steps are
reported beside those two PyTorch-vs-PyTorch differences (and our losses against PyTorch's float64
trajectory), not asserted. The trajectory is asserted in float64 instead: the same nets exported in
float64 train 20 SGD steps with PyTorch's float64 losses to 1e-6 (measured: 8e-8, the 8 digits the
metrics file keeps), where nothing amplifies rounding.
It also checks that `artifacts` warns about a dynamo export with the default optimisation, which
folds BatchNorm into the convolutions and merges the LSTM's weights under generated names.

Prints one line per model/exporter and 'N passed, N failed'; exits 1 on any failure.
    make oracle            (builds the venv from Tests/Oracle/requirements.txt and the test binary)
    .venv-oracle/bin/python Tests/Oracle/pytorch_oracle.py --binary .build-test/release/onnx-train [names]
"""

import argparse
import copy
import csv
import math
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import onnx
import torch
import torch.nn as nn
import torch.nn.functional as F
from onnx import numpy_helper

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "Tests" / "Fixtures" / "scripts"))
from models import GPT, MLP, SeqClassifier, SmallCNN, randomize_norm_params  # noqa: E402

# The PyPI torchvision wheel is built against CUDA torch: its C++ ops (_C.so) cannot load beside
# torch+cpu, and importing torchvision then fails registering fake kernels for two detection ops.
# The model definitions are plain Python; declaring those two schemas lets the import go through.
_TORCHVISION_SHIM = torch.library.Library("torchvision", "DEF")
for _op in ("nms", "qnms"):
    _TORCHVISION_SHIM.define(_op + "(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")

BOUND = 1e-4
STEPS = 20
BATCHES = 5
SEED = 0
BETAS, EPS = (0.9, 0.999), 1e-6  # onnxruntime's AdamWOptimizer defaults in our artifacts


# ---------------------------------------------------------------- models (random weights, tiny inputs)

class Flat(nn.Module):
    """[B, T, V] logits as [B*T, V], so cross-entropy's class axis is 1 as ONNX's loss takes it."""

    def __init__(self, inner, vocab, hf=False):
        super().__init__()
        self.inner, self.vocab, self.hf = inner, vocab, hf

    def forward(self, ids):
        # An explicit all-ones attention mask: without one, transformers looks for packed sequences
        # with torch.diff, which the TorchScript exporter cannot export.
        out = self.inner(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=False).logits if self.hf else self.inner(ids)
        return out.reshape(-1, self.vocab)


class Logits(nn.Module):
    """A Hugging Face classifier's logits as the single output."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, ids):
        return self.inner(input_ids=ids).logits


def images(batch, shape, classes):
    return lambda g: (torch.randn(batch, *shape, generator=g), torch.randint(0, classes, (batch,), generator=g))


def tokens(batch, seq, vocab, classes=None, low=0):
    def make(g):
        ids = torch.randint(low, vocab, (batch, seq), generator=g)
        labels = torch.randint(0, classes, (batch,), generator=g) if classes else torch.randint(0, vocab, (batch * seq,), generator=g)
        return ids, labels
    return make


def resnet18():
    import torchvision
    m = torchvision.models.resnet18(num_classes=10)
    randomize_norm_params(m)
    return m, images(8, (3, 32, 32), 10)


def mobilenet_v3_small():
    import torchvision
    m = torchvision.models.mobilenet_v3_small(num_classes=10, dropout=0.0)
    randomize_norm_params(m)
    return m, images(8, (3, 32, 32), 10)


def bert():
    from transformers import BertConfig, BertForSequenceClassification
    cfg = BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                     max_position_embeddings=32, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, num_labels=3)
    cfg._attn_implementation = "eager"
    # No padding token (id 0) in the data: PyTorch's Embedding(padding_idx=0) keeps that row's
    # gradient at zero, which an ONNX Gather cannot express (the row would train in any ONNX runtime).
    return Logits(BertForSequenceClassification(cfg)), tokens(4, 16, 64, classes=3, low=1)


def gpt2():
    from transformers import GPT2Config, GPT2LMHeadModel
    cfg = GPT2Config(vocab_size=64, n_positions=32, n_embd=32, n_layer=2, n_head=2, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    cfg._attn_implementation = "eager"
    return Flat(GPT2LMHeadModel(cfg), 64, hf=True), tokens(4, 16, 64)


def small_cnn():
    m = SmallCNN(conv_bias=False)
    randomize_norm_params(m)
    return m, images(8, (1, 8, 8), 4)


def small_gpt():
    return Flat(GPT(vocab=32, d=32, heads=4, block=16, layers=2), 32), tokens(4, 16, 32)


def lstm():
    return SeqClassifier("lstm", 8, 16, 3, states=True), lambda g: (torch.randn(4, 16, 8, generator=g), torch.randint(0, 3, (4,), generator=g))


# name -> (builder, SGD lr, AdamW lr, BatchNorm drift)
MODELS = {
    "mlp": (lambda: (MLP(), images(8, (16,), 4)), 0.1, 1e-2, False),
    "cnn": (small_cnn, 0.1, 1e-3, True),
    "lstm": (lstm, 0.1, 1e-2, False),
    "gpt": (small_gpt, 0.1, 1e-3, False),
    "resnet18": (resnet18, 1e-3, 1e-4, True),
    "mobilenet_v3_small": (mobilenet_v3_small, 1e-2, 1e-4, True),
    "bert": (bert, 0.05, 1e-3, False),
    "gpt2": (gpt2, 0.05, 1e-3, False),
}


# ---------------------------------------------------------------- PyTorch side

def torch_gradients(model, batch):
    model = copy.deepcopy(model).train()
    model.zero_grad()
    loss = F.cross_entropy(model(batch[0]), batch[1])
    loss.backward()
    return float(loss.detach()), {n: p.grad.detach().numpy().copy() for n, p in model.named_parameters() if p.grad is not None}


def torch_losses(model, batches, optimizer, lr, threads, final=None):
    """The 20-step loop: plain SGD, or AdamW as onnxruntime's adam_mode 1 (Hugging Face) computes it.
    `final` (a dict) receives the trained model's buffers (BatchNorm running statistics)."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        model = copy.deepcopy(model).train()
        params = [p for p in model.parameters() if p.requires_grad]
        m = [torch.zeros_like(p) for p in params]
        v = [torch.zeros_like(p) for p in params]
        losses = []
        for step in range(STEPS):
            x, y = batches[step % len(batches)]
            model.zero_grad()
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            losses.append(float(loss.detach()))
            with torch.no_grad():
                t = step + 1
                for p, mi, vi in zip(params, m, v):
                    if p.grad is None:
                        continue
                    if optimizer == "sgd":
                        # The learning rate as the optimizer graph takes it (a float32 input); a
                        # float32 tensor times a Python float rounds it so anyway, a float64 one not.
                        p -= float(np.float32(lr)) * p.grad
                        continue
                    mi.mul_(BETAS[0]).add_((1 - BETAS[0]) * p.grad)
                    vi.mul_(BETAS[1]).add_((1 - BETAS[1]) * p.grad * p.grad)
                    # float32 bias corrections, as the kernel computes pow(beta, t) in float
                    bc1 = 1 - np.float32(BETAS[0]) ** np.float32(t)
                    bc2 = 1 - np.float32(BETAS[1]) ** np.float32(t)
                    lr_c = float(np.float32(lr) * np.sqrt(bc2) / bc1)
                    p -= lr_c * mi / (vi.sqrt() + EPS)
        if final is not None:
            final.update({n: b.detach().numpy().copy() for n, b in model.named_buffers()})
        return np.array(losses)
    finally:
        torch.set_num_threads(before)


# ---------------------------------------------------------------- export

def export(model, example, path, exporter, optimize=False):
    model = copy.deepcopy(model)
    name = "input_ids" if isinstance(example, torch.Tensor) and example.dtype == torch.int64 else "input"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if exporter == "dynamo":
            model.eval()
            program = torch.onnx.export(model, (example,), None, dynamo=True, opset_version=18, optimize=optimize,
                                        input_names=[name], output_names=["output"], verbose=False)
            program.save(str(path))
        else:
            model.train()
            torch.onnx.export(model, (example,), str(path), dynamo=False, opset_version=17, training=torch.onnx.TrainingMode.TRAINING,
                              do_constant_folding=False, input_names=[name], output_names=["output"])
    return name


# ---------------------------------------------------------------- onnx-train side

def cli(binary, *args):
    r = subprocess.run([binary, *map(str, args)], capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"onnx-train {args[0]} failed ({r.returncode}): {(r.stderr or r.stdout).strip()[-600:]}")
    return r


def rel(a, b, floor=0.0):
    """max |a - b| over max |b| (the tensor's largest magnitude), never over less than `floor`."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        return math.inf
    return float(np.abs(a - b).max() / max(np.abs(b).max(), floor, 1e-30))


def match_parameters(onnx_params, torch_params):
    """onnx initializer name -> torch parameter name: the same name, else the identical value."""
    out = {}
    for name, value in onnx_params.items():
        if name in torch_params and torch_params[name].shape == value.shape and np.array_equal(torch_params[name], value):
            out[name] = name
            continue
        same = [t for t, tv in torch_params.items() if tv.shape == value.shape and np.array_equal(tv, value)]
        if len(same) == 1:
            out[name] = same[0]
    return out


def check(name, exporter, binary, work, cache):
    build, lr_sgd, lr_adamw, drift = MODELS[name]
    torch.manual_seed(SEED)
    model, make = build()
    g = torch.Generator().manual_seed(SEED + 1)
    batches = [make(g) for _ in range(BATCHES)]
    folder = work / f"{name}_{exporter}"
    folder.mkdir()
    input_name = export(model, batches[0][0], folder / "model.onnx", exporter)
    onnx_model = onnx.load(str(folder / "model.onnx"))
    initializers = {i.name: numpy_helper.to_array(i) for i in onnx_model.graph.initializer}
    torch_params = {n: p.detach().numpy() for n, p in model.named_parameters()}
    data = {input_name: torch.cat([b[0] for b in batches]).numpy(), "labels": torch.cat([b[1] for b in batches]).numpy()}
    np.savez(folder / "data.npz", **data)
    rows = batches[0][0].shape[0]

    notes, failures = [], []
    # 1. first-step gradients from the gradient graph
    cli(binary, "artifacts", folder / "model.onnx", "--loss", "cross-entropy", "--optimizer", "sgd", "--out", folder / "sgd", "--gradient-graph")
    graph = onnx.load(str(folder / "sgd" / "gradient_graph.onnx")).graph
    feeds = {input_name: batches[0][0].numpy(), "labels": batches[0][1].numpy()}
    for i in graph.input:
        if i.name not in feeds:
            feeds[i.name] = initializers[i.name]
    np.savez(folder / "feeds.npz", **feeds)
    cli(binary, "infer", folder / "sgd" / "gradient_graph.onnx", "--inputs", folder / "feeds.npz", "--output", folder / "grads.npz")
    ours = dict(np.load(folder / "grads.npz"))
    if (name, "grad") not in cache:
        cache[(name, "grad")] = torch_gradients(model, batches[0])
    torch_loss, torch_grads = cache[(name, "grad")]
    trained = [o.name[:-len("_grad")] for o in graph.output if o.name.endswith("_grad")]
    mapping = match_parameters({p: initializers[p] for p in trained}, torch_params)
    unmatched = [p for p in trained if p not in mapping]
    if unmatched:
        failures.append(f"trained initializers that are no PyTorch parameter: {', '.join(unmatched[:5])}")
    missing = sorted(set(torch_grads) - set(mapping.values()))
    if missing:
        failures.append(f"PyTorch parameters the artifacts do not train: {', '.join(missing[:5])}")
    # Gradients that are exactly zero in exact arithmetic (a bias followed by a 1x1 Conv and
    # BatchNorm: 1e-9 where the model's largest is 0.4) are float noise in both runtimes: they are
    # compared on 1e-3 of the model's largest gradient instead of their own largest magnitude.
    grad_scale = max(float(np.abs(g).max()) for g in torch_grads.values())
    grad_diffs = {p: rel(ours[p + "_grad"], torch_grads[t], floor=1e-3 * grad_scale) for p, t in mapping.items()}
    floored = sum(1 for t in mapping.values() if np.abs(torch_grads[t]).max() < 1e-3 * grad_scale)
    if floored:
        notes.append(f"{floored} near-zero gradients compared on 1e-3 of the largest")
    worst_grad = max(grad_diffs, key=grad_diffs.get)
    loss0 = rel(ours["loss"], torch_loss)
    if grad_diffs[worst_grad] > BOUND:
        failures.append(f"gradient {worst_grad} differs by {grad_diffs[worst_grad]:.3g}")
    if loss0 > BOUND:
        failures.append(f"first loss differs by {loss0:.3g}")

    # 2. 20 steps with each optimizer
    traj = {}
    for optimizer, lr in (("sgd", lr_sgd), ("adamw", lr_adamw)):
        if optimizer != "sgd":
            cli(binary, "artifacts", folder / "model.onnx", "--loss", "cross-entropy", "--optimizer", optimizer, "--out", folder / optimizer)
        cli(binary, "run", folder / optimizer, "--data", folder / "data.npz", "--batch-size", rows, "--steps", STEPS, "--no-shuffle",
            "--lr", lr, "--log", folder / f"{optimizer}.csv", "--out", folder / f"run-{optimizer}", "--quiet")
        with open(folder / f"{optimizer}.csv") as f:
            mine = np.array([float(r["loss"]) for r in csv.DictReader(f)])
        # PyTorch's side depends only on the model and data: computed once for both exporters.
        if (name, optimizer) not in cache:
            buffers = {}
            cache[(name, optimizer)] = (torch_losses(model, batches, optimizer, lr, threads=1, final=buffers), buffers)
        ref, buffers = cache[(name, optimizer)]
        stats = [n for n in buffers if n.endswith(("running_mean", "running_var"))]
        if optimizer == "sgd" and stats and exporter == "torchscript":
            # Its training-mode export runs the model once: the file's running statistics have
            # already taken one update from the example input, so they start elsewhere than PyTorch's.
            notes.append("running statistics not compared (the export updated them once)")
        elif optimizer == "sgd" and stats:
            # The running statistics after 20 steps, from the model the run leaves: the means as
            # PyTorch's; the variances differ (onnxruntime's biased update vs PyTorch's unbiased).
            trained = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(folder / "run-sgd" / "model.onnx")).graph.initializer}
            for kind in ("running_mean", "running_var"):
                names = [n for n in stats if n.endswith(kind) and n in trained]
                if names:
                    notes.append(f"{kind} after 20 SGD steps {max(rel(trained[n], buffers[n]) for n in names):.2g}")
        diff = np.abs(mine - ref) / np.abs(ref)
        if drift:
            # PyTorch's own float32 rounding: its trajectory with 2 threads instead of 1, and in
            # float64. Each step may differ from PyTorch's by as much as either did so far.
            key = (name, optimizer, "spread")
            if key not in cache:
                f64 = torch_losses(copy.deepcopy(model).double(), [(x.double() if x.is_floating_point() else x, y) for x, y in batches],
                                   optimizer, lr, threads=1)
                cache[key] = (np.abs(torch_losses(model, batches, optimizer, lr, threads=2) - ref) / np.abs(ref),
                              np.abs(f64 - ref) / np.abs(ref), f64)
            threads, precision, f64 = cache[key]
            # Only the first step is asserted in float32: after it, the trajectory is chaotic
            # (ResNet-18's SGD run: ours 6-7% from PyTorch at step 20, PyTorch's own 5.4% between
            # threads, 4.7% float32-vs-float64), so where each rounding difference lands decides the
            # gap, and any summation-order change in a kernel moves it; a bound on one sample of
            # PyTorch's spread failed as soon as a refactor changed one. Every later step is
            # asserted in float64 instead (check_float64), where nothing amplifies rounding.
            bad = np.nonzero(diff[:1] > BOUND)[0]
            traj[optimizer] = (f"{diff.max():.2g} (PyTorch 1-vs-2 threads {threads.max():.2g}, float32-vs-float64 {precision.max():.2g}; "
                               f"ours vs PyTorch float64 {(np.abs(mine - f64) / np.abs(f64)).max():.2g})")
        else:
            bad = np.nonzero(diff > BOUND)[0]
            traj[optimizer] = f"{diff.max():.2g}"
        if len(mine) != STEPS:
            failures.append(f"{optimizer}: {len(mine)} logged steps, not {STEPS}")
        elif len(bad):
            failures.append(f"{optimizer} loss at step {bad[0] + 1} differs by {diff[bad[0]]:.3g}")
    ok = not failures
    print(f"{name} [{exporter}]: {len(mapping)} parameters, first loss {loss0:.2g}, worst gradient {grad_diffs[worst_grad]:.2g} ({worst_grad}), "
          f"20-step losses sgd {traj.get('sgd', '-')}, adamw {traj.get('adamw', '-')}"
          + (f"; {', '.join(notes)}" if notes else "") + ("" if ok else "  FAIL: " + "; ".join(failures)), flush=True)
    return ok


def check_float64(name, binary, work, cache):
    """A BatchNorm net in float64 (TorchScript export of model.double()): 20 SGD steps from
    `onnx-train artifacts` against PyTorch's float64 loop. Without float32 rounding to amplify, the
    trajectories must agree to 1e-6: the float32 drift of `check` is rounding, not a wrong rule."""
    build, lr_sgd, _, _ = MODELS[name]
    torch.manual_seed(SEED)
    model, make = build()
    g = torch.Generator().manual_seed(SEED + 1)
    batches = [(x.double(), y) for x, y in (make(g) for _ in range(BATCHES))]
    model = model.double()
    folder = work / f"{name}_float64"
    folder.mkdir()
    input_name = export(model, batches[0][0], folder / "model.onnx", "torchscript")
    np.savez(folder / "data.npz", **{input_name: torch.cat([b[0] for b in batches]).numpy(), "labels": torch.cat([b[1] for b in batches]).numpy()})
    cli(binary, "artifacts", folder / "model.onnx", "--loss", "cross-entropy", "--optimizer", "sgd", "--out", folder / "sgd")
    cli(binary, "run", folder / "sgd", "--data", folder / "data.npz", "--batch-size", batches[0][0].shape[0], "--steps", STEPS, "--no-shuffle",
        "--lr", lr_sgd, "--log", folder / "sgd.csv", "--out", folder / "run", "--quiet")
    with open(folder / "sgd.csv") as f:
        mine = np.array([float(r["loss"]) for r in csv.DictReader(f)])
    # PyTorch's float64 trajectory: computed by `check` for the drift bounds, else here.
    spread = cache.get((name, "sgd", "spread"))
    ref = spread[2] if spread else torch_losses(model, batches, "sgd", lr_sgd, threads=1)
    diff = np.abs(mine - ref) / np.abs(ref) if len(mine) == STEPS else np.array([math.inf])
    ok = diff.max() <= 1e-6
    print(f"{name} [float64, torchscript]: 20-step sgd losses {diff.max():.2g} from PyTorch's float64 loop"
          + ("" if ok else f"  FAIL: step {int(np.argmax(diff)) + 1} differs by {diff.max():.3g}"), flush=True)
    return ok


def check_default_dynamo_warns(binary, work):
    """The dynamo exporter's default optimisation merges the LSTM's weights into constants with
    generated names: `artifacts` must say so. It also folds the CNN's BatchNorm into the Conv, whose
    initializers keep the names conv.weight/conv.bias: nothing in the file tells, so that case is
    only shown (the README names the export settings instead)."""
    ok = True
    for name in ("lstm", "cnn"):
        torch.manual_seed(SEED)
        model, make = MODELS[name][0]()
        x, _ = make(torch.Generator().manual_seed(SEED))
        path = work / f"{name}_dynamo_optimized.onnx"
        export(model, x, path, "dynamo", optimize=True)
        r = subprocess.run([binary, "artifacts", str(path), "--loss", "cross-entropy", "--optimizer", "sgd", "--out", str(work / f"{name}_opt")],
                           capture_output=True, text=True)
        said = (r.stderr + r.stdout).strip().splitlines()
        warning = next((line for line in said if "warning" in line.lower()), None)
        if name == "lstm":
            print(f"{name} [dynamo, default optimize=True]: " + (f"artifacts says: {warning}" if warning else "no warning  FAIL"), flush=True)
            ok = ok and warning is not None and r.returncode == 0
        else:
            ops = {n.op_type for n in onnx.load(str(path)).graph.node}
            print(f"{name} [dynamo, default optimize=True]: BatchNormalization {'kept' if 'BatchNormalization' in ops else 'folded into the Conv'}, "
                  f"artifacts {'warns' if warning else 'cannot tell (the folded initializers keep their names)'}", flush=True)
    return ok


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--binary", default=str(ROOT / ".build-test/release/onnx-train"))
    parser.add_argument("--keep", help="keep the work files in this folder")
    parser.add_argument("models", nargs="*", help=f"models (default: all of {', '.join(MODELS)})")
    args = parser.parse_args()
    torch.use_deterministic_algorithms(True)
    names = args.models or list(MODELS)
    unknown = [n for n in names if n not in MODELS]
    if unknown:
        sys.exit(f"pytorch_oracle.py: unknown model {unknown[0]} (known: {', '.join(MODELS)})")
    if not Path(args.binary).is_file():
        sys.exit(f"pytorch_oracle.py: no onnx-train binary at {args.binary}")
    start = time.time()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.keep) if args.keep else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        cache = {}
        for name in names:
            for exporter in ("dynamo", "torchscript"):
                try:
                    results.append(check(name, exporter, args.binary, work, cache))
                except Exception as e:  # one line per model, the run goes on
                    print(f"{name} [{exporter}]: FAIL: {str(e).splitlines()[0] if str(e) else type(e).__name__}", flush=True)
                    results.append(False)
            if MODELS[name][3]:
                try:
                    results.append(check_float64(name, args.binary, work, cache))
                except Exception as e:
                    print(f"{name} [float64]: FAIL: {str(e).splitlines()[0] if str(e) else type(e).__name__}", flush=True)
                    results.append(False)
        if not args.models:
            results.append(check_default_dynamo_warns(args.binary, work))
    print(f"{sum(results)} passed, {len(results) - sum(results)} failed ({time.time() - start:.0f} s)")
    sys.exit(0 if all(results) else 1)


if __name__ == "__main__":
    main()
