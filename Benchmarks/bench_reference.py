"""Time the reference runtimes on the benchmark models of issue 6: onnxruntime-training (Module/Optimizer)
and PyTorch (AdamW), each with 2 threads, on the same exported models, initial weights and data.

For every model and runtime a fresh child process (this script with --child) loads the model,
trains WARMUP + STEPS steps and reports the step times and its peak resident memory
(getrusage ru_maxrss). Separate processes keep one runtime's libraries and allocations out of the
other's peak memory. The children alternate between runtimes (onnxruntime first in odd rounds,
PyTorch first in even rounds), so drifting machine load hits both. A step is:
    onnxruntime: module(input, labels); optimizer.step(); module.lazy_reset_grad()   (OrtValue feeds)
    PyTorch:     loss = F.cross_entropy(model(input), labels); optimizer.zero_grad(); loss.backward();
                 optimizer.step()                                                    (AdamW, eps 1e-6, wd 0)
Step k uses batch k mod 8 of data.npz. The onnxruntime child also times inference of `inference.onnx`
on the first batch (InferenceSession, same threads), after the training measurement.

Prints one JSON line per model:
    {"model", "batch_size", "steps", "threads", "rounds",
     "onnxruntime": {"median_ms", "p10_ms", "p90_ms", "peak_rss_mb", "baseline_rss_mb", "model_rss_mb",
                     "first_loss", "last_loss", "infer_median_ms", "gflops" (MLP only)},
     "pytorch": {... the same, without infer_median_ms},
     "first_loss_difference", "faster": "onnxruntime"|"pytorch", "ratio_slower_to_faster"}
median/p10/p90 are over every timed step of every round; peak_rss_mb is the largest over rounds,
baseline_rss_mb is the process after its imports, before it loads the model, and model_rss_mb the
largest peak - baseline. Note: the onnxruntime-training wheel imports torch on `import onnxruntime`
(onnxruntime/__init__.py probes ORTModule), so its baseline already holds PyTorch's libraries, about
285 MiB; model_rss_mb is the fairer figure to set against a native binary's peak.
gflops (MLP) = the step's GEMM FLOPs (export_models.mlp_train_flops) / median step time. The first-step losses
of the two runtimes should agree to ~1e-5 (same weights, same batch): a check that they train the
same thing.

Run: /work/venv/bin/python Benchmarks/bench_reference.py [--models mlp,cnn,gpt] [--steps 50]
     [--warmup 5] [--rounds 2] [--threads 2] [--no-spin] [--smoke] [--out Benchmarks/models] [--export]

Both runtimes keep idle worker threads spinning by default (onnxruntime's intra-op pool, PyTorch's
OpenMP). On a machine busy with other work that spinning steals the cores the other thread needs and
step times grow many-fold (PyTorch's MLP step went from ~6 ms to ~480 ms at load 12 on 2 cores);
--no-spin makes idle threads sleep in both, which is the fairer setting on a shared machine. The
JSON line records which was used ("spinning").
The models are exported first (export_models.py, into the git-ignored Benchmarks/models/) when
missing or with --export.
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "models"
RUNTIMES = ("onnxruntime", "pytorch")


def rss_mb():
    """Peak resident set size of this process so far, in MiB (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def load_batches(folder: Path):
    import numpy as np

    meta = json.loads((folder / "meta.json").read_text())
    data = np.load(folder / "data.npz")
    rows = meta["rows_per_step"]
    batches = []
    for k in range(meta["batches"]):
        batches.append({n: np.ascontiguousarray(data[n][k * rows[n]:(k + 1) * rows[n]]) for n in ("input", "labels")})
    return meta, batches


WARMUP_SECONDS = 0.5


class Warmup:
    """Untimed warm-up, the same rule as `onnx-train bench`: at least `steps` steps and WARMUP_SECONDS
    (threads and cores settle in the first ~0.1 s; a fixed 5 steps of a 2 ms MLP step did not cover it)."""

    def __init__(self, steps):
        self.steps, self.start, self.warmed = steps, time.perf_counter(), False

    def done(self, step):
        """True from the first timed step on; call once after every step."""
        if self.warmed:
            return True
        if step + 1 >= self.steps and time.perf_counter() - self.start >= WARMUP_SECONDS:
            self.warmed = True
        return False


def train_onnxruntime(folder: Path, steps, warmup, threads, spin=True):
    """WARMUP + STEPS steps of onnxruntime-training's Module/Optimizer on an artifact folder: the step times
    after the warm-up, every loss, the peak RSS and the RSS after the imports; also the session options and
    the first batch, for an inference measurement after it."""
    import onnxruntime as ort
    from onnxruntime.training.api import CheckpointState, Module, Optimizer

    ort.set_default_logger_severity(3)
    baseline = rss_mb()
    meta, batches = load_batches(folder)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    if not spin:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    state = CheckpointState.load_checkpoint(str(folder / "checkpoint"))
    module = Module(str(folder / "training_model.onnx"), state, device="cpu", session_options=options)
    optimizer = Optimizer(str(folder / "optimizer_model.onnx"), module)
    optimizer.set_learning_rate(meta["lr"])
    module.train()
    names = module.input_names()
    feeds = [[ort.OrtValue.ortvalue_from_numpy(b[n]) for n in names] for b in batches]
    times, losses = [], []
    warm = Warmup(warmup)
    step = 0
    while len(times) < steps:
        batch = feeds[step % len(feeds)]
        t0 = time.perf_counter()
        loss = module(*batch)
        optimizer.step()
        module.lazy_reset_grad()
        elapsed = time.perf_counter() - t0
        losses.append(float(loss.numpy()))
        if warm.done(step):
            times.append(elapsed)
        step += 1
    result = {"times": times, "losses": losses, "peak_rss_mb": rss_mb(), "baseline_rss_mb": baseline, "version": ort.__version__}
    return result, options, batches[0]


def child_onnxruntime(folder: Path, steps, warmup, threads, spin=True):
    import onnxruntime as ort

    result, options, first = train_onnxruntime(folder, steps, warmup, threads, spin)
    session = ort.InferenceSession(str(folder / "inference.onnx"), options, providers=["CPUExecutionProvider"])
    x = {"input": first["input"]}
    infer = []
    for step in range(warmup + steps):
        t0 = time.perf_counter()
        session.run(None, x)
        if step >= warmup:
            infer.append(time.perf_counter() - t0)
    return {**result, "infer_median_ms": 1000 * statistics.median(infer)}


def train_pytorch(folder: Path, build, steps, warmup, threads, compile_model=False):
    """WARMUP + STEPS AdamW steps of the PyTorch model build(meta) with torch_init.pt's weights; with
    compile_model, of torch.compile(model), and "compile_s" is the first (compiling) step's time."""
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(threads)
    torch.set_num_interop_threads(1)
    baseline = rss_mb()
    meta, batches = load_batches(folder)
    model = build(meta)
    model.load_state_dict(torch.load(folder / "torch_init.pt"))
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=meta["lr"], betas=(0.9, 0.999), eps=1e-6, weight_decay=0.0)
    run = torch.compile(model) if compile_model else model
    feeds = [(torch.from_numpy(b["input"]), torch.from_numpy(b["labels"])) for b in batches]
    times, losses, first = [], [], None
    warm = Warmup(warmup)
    step = 0
    while len(times) < steps:
        x, y = feeds[step % len(feeds)]
        t0 = time.perf_counter()
        loss = F.cross_entropy(run(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        elapsed = time.perf_counter() - t0
        first = elapsed if first is None else first
        losses.append(float(loss.detach()))
        if warm.done(step):
            times.append(elapsed)
        step += 1
    out = {"times": times, "losses": losses, "peak_rss_mb": rss_mb(), "baseline_rss_mb": baseline, "version": torch.__version__}
    if compile_model:
        out["compile_s"] = first
    return out


def child_pytorch(folder: Path, steps, warmup, threads, spin=True):
    # Spinning is set through OMP_WAIT_POLICY by the parent (run_child): libgomp reads it at load time.
    sys.path.insert(0, str(HERE))
    import export_models

    return train_pytorch(folder, lambda meta: export_models.MODELS[meta["name"]](), steps, warmup, threads)


def isolated(cmd):
    """`cmd` run by a child of `sh`, so that its peak RSS is its own. Linux carries the memory high-water
    mark of the process that calls exec into the new program's ru_maxrss (and Python's subprocess execs
    from a vfork of this process, sharing its memory), so a child spawned directly from a benchmark
    that had grown to 500 MiB reported at least 500 MiB; through sh (which forks before it execs) the
    floor is sh's ~2 MiB."""
    return ["sh", "-c", '"$@"; exit $?', "sh"] + [str(c) for c in cmd]


def run_child(runtime, folder, args):
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", runtime, "--folder", str(folder),
           "--steps", str(args.steps), "--warmup", str(args.warmup), "--threads", str(args.threads)]
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    if args.no_spin:
        cmd.append("--no-spin")
        env["OMP_WAIT_POLICY"] = "PASSIVE"
    done = subprocess.run(isolated(cmd), capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise SystemExit(f"bench_reference: the {runtime} child failed on {folder.name}:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def summarize(results):
    times = [t for r in results for t in r["times"]]
    q = statistics.quantiles(times, n=10, method="inclusive") if len(times) >= 2 else [times[0]] * 9
    out = {
        "median_ms": round(1000 * statistics.median(times), 3),
        "p10_ms": round(1000 * q[0], 3),
        "p90_ms": round(1000 * q[-1], 3),
        "peak_rss_mb": round(max(r["peak_rss_mb"] for r in results), 1),
        "baseline_rss_mb": round(max(r["baseline_rss_mb"] for r in results), 1),
        "model_rss_mb": round(max(r["peak_rss_mb"] - r["baseline_rss_mb"] for r in results), 1),
        "first_loss": results[0]["losses"][0],
        "last_loss": results[0]["losses"][-1],
        "version": results[0]["version"],
    }
    if "infer_median_ms" in results[0]:
        out["infer_median_ms"] = round(statistics.median(r["infer_median_ms"] for r in results), 3)
    return out


def main():
    parser = argparse.ArgumentParser(description="Time onnxruntime-training and PyTorch on the issue-6 benchmark models.")
    parser.add_argument("--models", default="mlp,cnn,gpt")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--smoke", action="store_true", help="3 steps, 1 warm-up, 1 round: checks that it works")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where the exported models live")
    parser.add_argument("--export", action="store_true", help="re-export the models first")
    parser.add_argument("--no-spin", action="store_true",
                        help="idle worker threads sleep instead of spinning (onnxruntime allow_spinning=0, "
                             "OMP_WAIT_POLICY=PASSIVE for PyTorch): fairer on a machine shared with other work")
    parser.add_argument("--child", choices=RUNTIMES, help=argparse.SUPPRESS)
    parser.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        child = child_onnxruntime if args.child == "onnxruntime" else child_pytorch
        print(json.dumps(child(args.folder, args.steps, args.warmup, args.threads, spin=not args.no_spin)))
        return
    if args.smoke:
        args.steps, args.warmup, args.rounds = 3, 1, 1

    models = args.models.split(",")
    missing = [m for m in models if not (args.out / m / "meta.json").exists()]
    if args.export or missing:
        export = [sys.executable, str(HERE / "export_models.py"), "--out", str(args.out),
                  "--models", ",".join(models if args.export else missing)]
        done = subprocess.run(export, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"bench_reference: export failed:\n{done.stderr[-2000:]}")

    for name in models:
        folder = args.out / name
        meta = json.loads((folder / "meta.json").read_text())
        per_runtime = {r: [] for r in RUNTIMES}
        for round_index in range(args.rounds):
            order = RUNTIMES if round_index % 2 == 0 else RUNTIMES[::-1]
            for runtime in order:
                per_runtime[runtime].append(run_child(runtime, folder, args))
        summary = {r: summarize(per_runtime[r]) for r in RUNTIMES}
        ort_ms, torch_ms = summary["onnxruntime"]["median_ms"], summary["pytorch"]["median_ms"]
        line = {
            "model": name,
            "batch_size": meta["batch_size"],
            "steps": args.steps,
            "warmup": args.warmup,
            "threads": args.threads,
            "rounds": args.rounds,
            "spinning": not args.no_spin,
            **summary,
            "first_loss_difference": abs(summary["onnxruntime"]["first_loss"] - summary["pytorch"]["first_loss"]),
            "faster": "onnxruntime" if ort_ms <= torch_ms else "pytorch",
            "ratio_slower_to_faster": round(max(ort_ms, torch_ms) / min(ort_ms, torch_ms), 3),
        }
        if "train_step_gemm_flops" in meta:
            line["onnxruntime"]["gflops"] = round(meta["train_step_gemm_flops"] / (ort_ms * 1e6), 2)
            line["pytorch"]["gflops"] = round(meta["train_step_gemm_flops"] / (torch_ms * 1e6), 2)
        print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
