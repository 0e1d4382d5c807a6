"""The real architectures of issue 16 in `make bench`: training, inference and scale tables.

bench.py calls `run(args)`; the children are this file run with --child (each timing in a fresh process,
so its peak RSS, getrusage ru_maxrss, is that runtime's alone):

Training (export_real.py variants; AdamW, cross-entropy, lr 1e-3, 2 threads), one process per runtime:
    onnx-train           `onnx-train artifacts model.onnx --loss cross-entropy --optimizer adamw` (artifacts
                         made by the binary under test, every run), then `onnx-train bench FOLDER`
    onnxruntime          onnxruntime-training 1.19.2's Module/Optimizer on its own generate_artifacts output
    PyTorch              eager: cross_entropy(model(x), y); zero_grad(); backward(); AdamW step
    torch.compile        the same with torch.compile(model) (inductor); the first steps' compile time is
                         reported, a failure is reported with its error line (never hidden)
Inference (eval-mode exports with a symbolic batch, and onnx's model-zoo "light" models shipped in the
onnx wheel under onnx/backend/test/data/light, weights made by ConstantOfShape), per batch size:
    onnx-train           `onnx-train bench MODEL.onnx --infer --json --batch-size N` (synthetic feeds)
    onnxruntime 1.19.2   InferenceSession in .venv-bench
    onnxruntime current  InferenceSession in .venv-bench-ort (Benchmarks/requirements-ort-current.txt)
    PyTorch              the model under torch.no_grad() (the torchvision/transformers models only)
Correctness: the first-step loss of onnx-train against onnxruntime's (training), and the largest
absolute difference of onnx-train's output (`onnx-train infer`) from onnxruntime 1.19.2's on the same
random feeds (inference).
Scale (issue 16 item 4): ResNet-18's step time and peak memory in onnx-train and onnxruntime as the batch
doubles (32x32) and as the image grows 32 -> 224 (batch 8), beside the growth of the step's FLOPs.

Timed steps per row come from the row's FLOPs (a few for the big models, more for small ones): the
report gives median and p10/p90. Each runtime of a row is timed in `--real-rounds` rounds (default 2,
smoke too), a fresh process each, the runtimes' order rotating from round to round, so every runtime
runs in both halves of the row's time; the report keeps each runtime's round with the lowest median
(its p10/p90 with it) and the highest peak RSS of its rounds. A row where some runtime's round medians
differ by more than 20% gets up to `--real-extra-rounds` more rounds (default 1, none with --smoke). The machine is a shared VM whose speed
shifts by up to 2x for minutes at a time: with one round, a slow phase during one runtime's turn moved
a row's ratio by 30-60% (one run had bert_tiny b1 at 1.85 ms, 0.89 ms in an A/B right after). A
failure in any round is the row's result for that runtime (never hidden).

Run on its own: .venv-bench/bin/python Benchmarks/bench.py --real-only [--smoke]
"""

import json
import math
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench_reference import isolated

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DEFAULT_CACHE = ROOT / ".build" / "bench-models"
DEFAULT_ORT_CURRENT = ROOT / ".venv-bench-ort" / "bin" / "python"
TRAIN_GOAL, INFER_GOAL = 0.7, 0.8  # issue 16: onnx-train <= 0.7x the faster peer (training), 0.8x the fastest (inference)
CHILD_TIMEOUT = 900  # seconds; a child past it is reported as timed out

# Full run: training rows (every runtime), scale-only rows (onnx-train and onnxruntime), inference models.
TRAIN = ["resnet18_32_b8", "resnet18_32_b32", "resnet18_224_b8", "resnet18_224_b32",
         "mobilenet_v3_32_b8", "mobilenet_v3_32_b32", "mobilenet_v3_224_b8", "mobilenet_v3_224_b32",
         "bert_tiny_b8", "bert_mini_b8", "gpt2_tiny_b8", "gpt2_small_b4", "vit_tiny_b8"]
# torch.compile on one variant per architecture: compiling takes about a minute per model on 2 cores
# (several under load), and the inductor cache does not carry across shapes.
COMPILE = ["resnet18_32_b8", "mobilenet_v3_32_b8", "bert_tiny_b8", "gpt2_tiny_b8", "vit_tiny_b8"]
SCALE_BATCH = ["resnet18_32_b8", "resnet18_32_b16", "resnet18_32_b32", "resnet18_32_b64"]
SCALE_IMAGE = ["resnet18_32_b8", "resnet18_64_b8", "resnet18_128_b8", "resnet18_224_b8"]
INFER = ["resnet18_224_b8", "mobilenet_v3_224_b8", "bert_tiny_b8", "bert_mini_b8", "gpt2_tiny_b8", "gpt2_small_b4", "vit_tiny_b8"]
LIGHT = ["bvlc_alexnet", "densenet121", "inception_v1", "inception_v2", "resnet50", "shufflenet", "squeezenet", "vgg19", "zfnet512"]
INFER_BATCHES = (1, 32)
# Batch 1 only, for the run's time budget: at batch 32 a run of these is 130-1260 GFLOP (VGG-19 1256,
# ResNet-50 262, DenseNet-121 181, Inception v2 129), more than a minute of the run each.
LIGHT_BATCH_1 = {"vgg19", "resnet50", "densenet121", "inception_v2"}
# Smoke (make test's bench-check): the tiny configs, 2 timed steps, no torch.compile (its compile takes
# most of a minute per model on 2 cores), one light model; every code path but compile runs.
SMOKE_TRAIN = ["resnet18_32_b8", "mobilenet_v3_32_b8", "bert_tiny_b8", "gpt2_tiny_b8", "vit_micro_b8"]
SMOKE_SCALE_BATCH = ["resnet18_32_b8", "resnet18_32_b16"]
SMOKE_SCALE_IMAGE = []
SMOKE_INFER = ["gpt2_tiny_b8"]
SMOKE_LIGHT = ["squeezenet"]
SMOKE_INFER_BATCHES = (1, 2)

# Steps per row: as many as fit TARGET seconds at ASSUMED_FLOPS, within [MIN, MAX].
# (40 GFLOP/s over-counted the small convolutional steps: ResNet-18 at 32x32 ran ~10 GFLOP/s on 2 cores.)
# At least 5: a median of 3 steps moved a row by 15% with one slow step (ViT training: onnxruntime's
# median 633 ms beside its p10 560 ms); the cheap rows take up to 60/200 steps (GPT-2 tiny's 20 steps
# of ~15 ms spanned 16-28 ms), which costs each runtime well under a second.
ASSUMED_FLOPS = 15e9
TRAIN_TARGET, TRAIN_MIN, TRAIN_MAX = 5.0, 5, 60
INFER_TARGET, INFER_MIN, INFER_MAX = 2.0, 5, 200


def rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def steps_for(flops, target, low, high):
    if not flops:
        return low
    return int(max(low, min(high, round(target / (flops / ASSUMED_FLOPS)))))


def error_line(text):
    """The most telling line of a failed child's output: the last line that names an error."""
    lines = [l.strip() for l in text.strip().splitlines() if l.strip()]
    for l in reversed(lines):
        if "rror" in l or "failed" in l or "Exception" in l:
            return l[:300]
    return (lines[-1] if lines else "no output")[:300]


# ------------------------------------------------------------------ children

def child_train_ort(folder, steps, warmup, threads):
    from bench_reference import train_onnxruntime

    return train_onnxruntime(folder, steps, warmup, threads, spin=False)[0]


def child_train_torch(folder, steps, warmup, threads, compile_model):
    import export_real
    from bench_reference import train_pytorch

    return train_pytorch(folder, lambda meta: export_real.build(meta["name"]), steps, warmup, threads, compile_model)


def child_infer_ort(model, feeds, steps, warmup, threads, output):
    """Times InferenceSession.run on the feeds (.npz) and saves the first output to `output` (.npy)."""
    import numpy as np
    import onnxruntime as ort

    ort.set_default_logger_severity(3)
    baseline = rss_mb()
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
    data = dict(np.load(feeds))
    x = {i.name: data[i.name] for i in session.get_inputs() if i.name in data}
    times, start, step = [], time.perf_counter(), 0
    while len(times) < steps:
        t0 = time.perf_counter()
        result = session.run(None, x)
        elapsed = time.perf_counter() - t0
        if step >= warmup and t0 - start >= 0.3:
            times.append(elapsed)
        step += 1
    np.save(output, result[0])
    return {"times": times, "peak_rss_mb": rss_mb(), "baseline_rss_mb": baseline, "version": ort.__version__}


def child_infer_torch(folder, feeds, steps, warmup, threads):
    import numpy as np
    import torch
    import export_real

    torch.set_num_threads(threads)
    torch.set_num_interop_threads(1)
    baseline = rss_mb()
    meta = json.loads((folder / "meta.json").read_text())
    model = export_real.build(meta["name"])
    model.load_state_dict(torch.load(folder / "torch_init.pt"))
    model.eval()
    x = torch.from_numpy(np.load(feeds)["input"])
    times, start, step = [], time.perf_counter(), 0
    with torch.no_grad():
        while len(times) < steps:
            t0 = time.perf_counter()
            model(x)
            elapsed = time.perf_counter() - t0
            if step >= warmup and t0 - start >= 0.3:
                times.append(elapsed)
            step += 1
    return {"times": times, "peak_rss_mb": rss_mb(), "baseline_rss_mb": baseline, "version": torch.__version__}


def child_main(argv):
    import argparse

    p = argparse.ArgumentParser()
    p.add_argument("--child", required=True)
    p.add_argument("--folder", type=Path)
    p.add_argument("--model", type=Path)
    p.add_argument("--feeds", type=Path)
    p.add_argument("--output", type=Path)
    p.add_argument("--steps", type=int)
    p.add_argument("--warmup", type=int)
    p.add_argument("--threads", type=int)
    a = p.parse_args(argv)
    sys.path.insert(0, str(HERE))
    if a.child == "train-ort":
        out = child_train_ort(a.folder, a.steps, a.warmup, a.threads)
    elif a.child in ("train-torch", "train-compile"):
        out = child_train_torch(a.folder, a.steps, a.warmup, a.threads, a.child == "train-compile")
    elif a.child == "infer-ort":
        out = child_infer_ort(a.model, a.feeds, a.steps, a.warmup, a.threads, a.output)
    else:
        out = child_infer_torch(a.folder, a.feeds, a.steps, a.warmup, a.threads)
    print(json.dumps(out))


# ------------------------------------------------------------------ parent

def spawn(cmd, threads, python_child=True):
    """Runs a child; its JSON line, or {"error": the error line}."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS=str(threads), OMP_WAIT_POLICY="PASSIVE")
    child = subprocess.Popen(isolated(cmd), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, start_new_session=True)
    try:
        stdout, stderr = child.communicate(timeout=CHILD_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(child.pid, 9)  # sh and the child it started (their own session)
        child.communicate()
        return {"error": f"timed out after {CHILD_TIMEOUT} s"}
    if child.returncode != 0:
        return {"error": error_line(stderr or stdout)}
    try:
        return json.loads(stdout.strip().splitlines()[-1])
    except (json.JSONDecodeError, IndexError):
        return {"error": "no JSON line: " + error_line(stdout + stderr)}


def python_child(python, kind, threads, **kw):
    cmd = [str(python), str(Path(__file__).resolve()), "--child", kind, "--threads", str(threads)]
    for k, v in kw.items():
        cmd += [f"--{k}", str(v)]
    return spawn(cmd, threads)


def rounds_for(args):
    return max(1, getattr(args, "real_rounds", 1))


def rounds_phrase(args):
    """`2 interleaved round(s), 1 more where ...`: how the report's rows were timed."""
    extra = max(0, getattr(args, "real_extra_rounds", 0))
    more = f" (up to {extra} more where a runtime's round medians differed by over {UNSETTLED_SPREAD - 1:.0%})" if extra else ""
    return f"{rounds_for(args)} interleaved round(s){more}"


def steps_per_round(steps, args, low):
    """The row's timed steps shared out over the rounds, at least `low` a round (a median of fewer moves
    with one slow step)."""
    return max(low, math.ceil(steps / rounds_for(args)))


# A row whose runtime's round medians spread by more than this (slowest / fastest) ran partly in one of
# the VM's slow phases: it gets `--real-extra-rounds` more rounds of every runtime, one at a time, while
# the spread lasts.
UNSETTLED_SPREAD = 1.2


def unsettled(results):
    """True when no round failed and some runtime's round medians spread beyond UNSETTLED_SPREAD."""
    if any("error" in r for rs in results.values() for r in rs):
        return False
    return any(max(m) > UNSETTLED_SPREAD * min(m)
               for m in ([r["median_ms"] for r in rs] for rs in results.values()) if len(m) > 1)


def interleaved(args, jobs):
    """Runs each (runtime, job) of a row in rounds, the order rotating every round, plus up to
    `--real-extra-rounds` rounds while the row is unsettled; each runtime's best round (lowest
    median), or the first error line of its rounds."""
    results = {key: [] for key, _ in jobs}
    rounds, extra = rounds_for(args), max(0, getattr(args, "real_extra_rounds", 0))
    k = 0
    while k < rounds or (k < rounds + extra and unsettled(results)):
        shift = k % len(jobs)
        for key, job in jobs[shift:] + jobs[:shift]:
            results[key].append(job())
        k += 1
    return {key: best_round(rs) for key, rs in results.items()}


def best_round(results):
    """The round with the lowest median, with the highest peak RSS of all rounds and every round's
    median (`round_medians_ms`); a round that failed makes the whole result that error."""
    for r in results:
        if "error" in r:
            return r
    best = dict(min(results, key=lambda r: r["median_ms"]))
    for key in ("peak_rss_mb", "model_rss_mb"):
        if all(key in r for r in results):
            best[key] = max(r[key] for r in results)
    best["round_medians_ms"] = [r["median_ms"] for r in results]
    return best


def summarize(result):
    """median/p10/p90 (ms) and peak RSS of one child's result; the error passes through."""
    if "error" in result:
        return result
    times = result["times"]
    q = statistics.quantiles(times, n=10, method="inclusive") if len(times) >= 2 else [times[0]] * 9
    out = {"median_ms": 1000 * statistics.median(times), "p10_ms": 1000 * q[0], "p90_ms": 1000 * q[-1], "steps": len(times),
           "peak_rss_mb": result["peak_rss_mb"], "model_rss_mb": result["peak_rss_mb"] - result.get("baseline_rss_mb", 0)}
    for k in ("compile_s", "version"):
        if k in result:
            out[k] = result[k]
    if result.get("losses"):
        out["losses"] = [result["losses"][0], result["losses"][-1]]
    return out


def export(variants, cache, smoke):
    missing = [v for v in dict.fromkeys(variants) if not (cache / v / "meta.json").exists()]
    if not missing:
        return
    print(f"exporting {', '.join(missing)} (once, into {cache}) ...", flush=True)
    t0 = time.time()
    cmd = [sys.executable, str(HERE / "export_real.py"), "--out", str(cache), "--models", ",".join(missing)]
    done = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="2"))
    if done.returncode != 0:
        raise SystemExit(f"bench: export_real.py failed:\n{done.stderr[-3000:]}")
    print(f"exported in {time.time() - t0:.0f} s", flush=True)


def onnx_train_artifacts(binary, folder):
    """The artifacts made by the binary under test (every run: they follow its gradient rules)."""
    out = folder / "ot"
    if out.exists():
        shutil.rmtree(out)
    done = subprocess.run([str(binary), "artifacts", str(folder / "model.onnx"), "--loss", "cross-entropy", "--optimizer", "adamw",
                           "--out", str(out)], capture_output=True, text=True)
    if done.returncode != 0:
        return "onnx-train artifacts: " + error_line(done.stderr or done.stdout)
    shutil.copy(folder / "data.npz", out / "data.npz")
    shutil.copy(folder / "meta.json", out / "meta.json")
    return None


def train_row(args, folder, runtimes):
    meta = json.loads((folder / "meta.json").read_text())
    total = 2 if args.smoke else steps_for(meta["train_step_flops"], TRAIN_TARGET, TRAIN_MIN, TRAIN_MAX)
    warmup = 1 if args.smoke else 2 if total <= TRAIN_MIN else 3
    steps = total if args.smoke else steps_per_round(total, args, TRAIN_MIN)
    row = {"variant": meta["name"], "arch": meta["arch"], "image": meta["image"], "batch": meta["batch_size"],
           "flops": meta["train_step_flops"], "parameters": meta["parameters"], "steps": steps, "rounds": rounds_for(args)}
    jobs = []
    for runtime in runtimes:
        if runtime == "onnx-train":
            failure = onnx_train_artifacts(args.binary, folder)
            if failure:
                row[runtime] = {"error": failure}
                continue
            cmd = [str(args.binary), "bench", str(folder / "ot"), "--steps", str(steps), "--warmup", str(warmup)]
            jobs.append((runtime, lambda cmd=cmd: summarize(spawn(cmd, args.threads))))
        elif runtime == "onnxruntime":
            jobs.append((runtime, lambda: summarize(python_child(sys.executable, "train-ort", args.threads, folder=folder / "ort",
                                                                 steps=steps, warmup=warmup))))
        elif runtime == "pytorch":
            jobs.append((runtime, lambda: summarize(python_child(sys.executable, "train-torch", args.threads, folder=folder,
                                                                 steps=steps, warmup=warmup))))
        else:  # torch.compile: warm-up 2 steps at least (the first compiles forward and backward)
            jobs.append((runtime, lambda: summarize(python_child(sys.executable, "train-compile", args.threads, folder=folder,
                                                                 steps=steps, warmup=max(warmup, 2)))))
    row.update(interleaved(args, jobs))
    t, o = row.get("onnx-train", {}), row.get("onnxruntime", {})
    if "losses" in t and "losses" in o:
        row["first_loss_difference"] = abs(t["losses"][0] - o["losses"][0])
    return row


def light_dir():
    import onnx
    return Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"


def light_at_batch(name, batch, cache):
    """A zoo light model at another batch size (cached): the data input's first dimension set to `batch`,
    every Reshape whose constant target starts with 1 and reshapes an activation given 0 there (copy the
    batch dimension) and the stored intermediate shapes dropped. The zoo files are fixed at batch 1."""
    import onnx
    from onnx import numpy_helper

    source = light_dir() / f"light_{name}.onnx"
    if batch == 1:
        return source
    path = cache / "light" / f"light_{name}_b{batch}.onnx"
    if path.exists():
        return path
    m = onnx.load(str(source))
    inits = {i.name: i for i in m.graph.initializer}
    weights = set()  # values computed from initializers alone (the ConstantOfShape weights and their reshapes)
    for n in m.graph.node:
        if all(i in inits or i in weights or not i for i in n.input):
            weights.update(n.output)
    for n in m.graph.node:
        if n.op_type == "Reshape" and n.input[0] not in weights and n.input[1] in inits:
            target = numpy_helper.to_array(inits[n.input[1]]).copy()
            if target[0] == 1:
                target[0] = 0
                replacement = numpy_helper.from_array(target, n.input[1] + f"_batch{batch}")
                m.graph.initializer.append(replacement)
                n.input[1] = replacement.name
    for v in m.graph.input:
        if v.name not in inits:
            v.type.tensor_type.shape.dim[0].dim_value = batch
    for v in m.graph.output:
        v.type.tensor_type.shape.dim[0].dim_param = "batch"
    del m.graph.value_info[:]
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(m, str(path))
    return path


def random_weights(path, out):
    """A copy of a zoo light model whose ConstantOfShape weights are seeded random initializers instead
    (rank 1, the biases and normalisation parameters: uniform in [0.5, 1.5), positive as a variance must
    be; higher ranks N(0, 2 / fan-in)): a constant-weight model's outputs are all alike (a uniform softmax),
    which would not show a wrong kernel. Only the output check uses it; the timings run the shipped file."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    if out.exists():
        return out
    m = onnx.load(str(path))
    inits = {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}
    rng = np.random.default_rng(16)
    keep = []
    for n in m.graph.node:
        if n.op_type == "ConstantOfShape" and n.input[0] in inits:
            shape = [int(d) for d in inits[n.input[0]]]
            if len(shape) == 1:
                value = rng.uniform(0.5, 1.5, shape)
            else:
                value = rng.standard_normal(shape) * np.sqrt(2.0 / max(1, int(np.prod(shape[1:]))))
            m.graph.initializer.append(numpy_helper.from_array(value.astype(np.float32), n.output[0]))
        else:
            keep.append(n)
    del m.graph.node[:]
    m.graph.node.extend(keep)
    out.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(m, str(out))
    return out


def onnx_forward_flops(path, batch):
    """Multiply-adds x 2 of Conv, Gemm and MatMul, from ONNX shape inference (the light models)."""
    import onnx
    from onnx import numpy_helper, shape_inference

    m = shape_inference.infer_shapes(onnx.load(str(path)))
    shapes = {}
    for v in list(m.graph.input) + list(m.graph.value_info) + list(m.graph.output):
        dims = [d.dim_value if d.HasField("dim_value") else None for d in v.type.tensor_type.shape.dim]
        shapes[v.name] = dims
    for i in m.graph.initializer:
        shapes[i.name] = list(i.dims)
    consts = {}
    for n in m.graph.node:  # ConstantOfShape weights: shape from their constant shape input
        if n.op_type == "ConstantOfShape":
            src = next((i for i in m.graph.initializer if i.name == n.input[0]), None)
            if src is not None:
                consts[n.output[0]] = list(numpy_helper.to_array(src))
    shapes.update({k: v for k, v in consts.items() if k not in shapes or None in (shapes[k] or [None])})
    total = 0
    for n in m.graph.node:
        try:
            if n.op_type == "Conv":
                w, y = shapes[n.input[1]], shapes[n.output[0]]
                total += 2 * math.prod(y) * math.prod(w[1:])
            elif n.op_type in ("Gemm", "MatMul"):
                a, y = shapes[n.input[0]], shapes[n.output[0]]
                transposed = n.op_type == "Gemm" and any(at.name == "transA" and at.i for at in n.attribute)
                total += 2 * math.prod(y) * (a[0] if transposed else a[-1])
        except (KeyError, TypeError, IndexError):
            return None
    return total * batch  # the light models are batch 1


def infer_rows(args, cache, models, light, batches):
    import numpy as np

    rows = []
    jobs = [(v, cache / v, batches) for v in models] + [(f"light_{n}", None, batches if n not in LIGHT_BATCH_1 else batches[:1]) for n in light]
    for name, folder, sizes in jobs:
        if folder is not None:
            meta = json.loads((folder / "meta.json").read_text())
            per_example = meta["forward_flops_per_example"]
        else:
            per_example = onnx_forward_flops(light_dir() / f"{name}.onnx", 1)
        for batch in sizes:
            path = folder / "inference.onnx" if folder is not None else light_at_batch(name[len("light_"):], batch, cache)
            flops = per_example * batch if per_example else None
            steps = 3 if args.smoke else steps_per_round(steps_for(flops, INFER_TARGET, INFER_MIN, INFER_MAX), args, INFER_MIN)
            warmup = 1 if args.smoke or (flops or 0) > 0.2 * ASSUMED_FLOPS else 2
            work = cache / "infer" / f"{name}_b{batch}"
            work.mkdir(parents=True, exist_ok=True)
            # Random feeds for the correctness check (the timings use each runtime's own feeds).
            import onnx
            graph = onnx.load(str(path), load_external_data=False).graph
            inits = {i.name for i in graph.initializer}
            produced = {o for n in graph.node for o in n.output}
            feeds = {}
            rng = np.random.default_rng(16)
            for i in graph.input:
                if i.name in inits or i.name in produced:
                    continue
                dims = [d.dim_value if d.HasField("dim_value") else batch for d in i.type.tensor_type.shape.dim]
                if i.type.tensor_type.elem_type == onnx.TensorProto.INT64:
                    feeds[i.name] = rng.integers(1, 1000, dims).astype(np.int64)
                else:
                    feeds[i.name] = rng.standard_normal(dims, dtype=np.float32)
            np.savez(work / "feeds.npz", **feeds)
            row = {"model": name, "batch": batch, "flops": flops, "steps": steps, "rounds": rounds_for(args)}
            cmd = [str(args.binary), "bench", str(path), "--infer", "--json", "--batch-size", str(batch), "--steps", str(steps),
                   "--warmup", str(warmup), "--warmup-seconds", "0.3"]

            def ours(cmd=cmd):
                r = spawn(cmd, args.threads)
                return r if "error" in r else {"median_ms": r["median_ms"], "p90_ms": r["p90_ms"], "peak_rss_mb": r["peak_rss_mb"],
                                               "model_rss_mb": r["peak_rss_mb"] - r.get("baseline_rss_mb", 0)}
            jobs = [("onnx-train", ours)]
            for key, python in (("ort", sys.executable), ("ort-current", args.ort_current)):
                if not Path(python).exists():
                    row[key] = {"error": f"{python} is missing (make bench-venv makes it)"}
                    continue
                jobs.append((key, lambda key=key, python=python: summarize(python_child(
                    python, "infer-ort", args.threads, model=path, feeds=work / "feeds.npz", steps=steps, warmup=warmup,
                    output=work / f"{key}.npy"))))
            if folder is not None:
                jobs.append(("pytorch", lambda folder=folder: summarize(python_child(
                    sys.executable, "infer-torch", args.threads, folder=folder, feeds=work / "feeds.npz", steps=steps, warmup=warmup))))
            row.update(interleaved(args, jobs))
            # onnx-train's output on the same feeds, against onnxruntime 1.19.2's (the zoo models with random weights).
            check = path if folder is not None else random_weights(path, cache / "light" / f"{path.stem}_random.onnx")
            if check != path and "error" not in row["ort"]:
                python_child(sys.executable, "infer-ort", args.threads, model=check, feeds=work / "feeds.npz", steps=1, warmup=0,
                             output=work / "ort.npy")
            cmd = [str(args.binary), "infer", str(check), "--output", str(work / "onnx-train.npz")]
            for k in feeds:
                np.save(work / f"in_{len(cmd)}.npy", feeds[k])
                cmd += ["--input", f"{k}={work / f'in_{len(cmd)}.npy'}"]
            done = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, OPENBLAS_NUM_THREADS=str(args.threads)))
            if done.returncode != 0:
                row["difference"] = "onnx-train infer: " + error_line(done.stderr or done.stdout)
            elif (work / "ort.npy").exists() and "error" not in row["ort"]:
                ours = np.load(work / "onnx-train.npz")
                theirs = np.load(work / "ort.npy")
                first = graph.output[0].name
                mine = ours[first] if first in ours.files else ours[ours.files[0]]
                row["difference"] = float(np.abs(mine.astype(np.float64) - theirs).max()) if mine.shape == theirs.shape else \
                    f"shapes differ: {list(mine.shape)} vs {list(theirs.shape)}"
                row["output_scale"] = float(np.abs(theirs).max())
            for f in ("ort.npy", "ort-current.npy", "onnx-train.npz"):
                (work / f).unlink(missing_ok=True)
            rows.append(row)
            print(json.dumps({"inference": {k: v for k, v in row.items()}}), flush=True)
    return rows


def run(args):
    """Exports what is missing, times every row; returns the report's sections (markdown lines)."""
    cache = args.real_cache
    smoke = args.smoke
    train = SMOKE_TRAIN if smoke else TRAIN
    scale_b = SMOKE_SCALE_BATCH if smoke else SCALE_BATCH
    scale_i = SMOKE_SCALE_IMAGE if smoke else SCALE_IMAGE
    infer = SMOKE_INFER if smoke else INFER
    light = SMOKE_LIGHT if smoke else LIGHT
    batches = SMOKE_INFER_BATCHES if smoke else INFER_BATCHES
    if args.real_models:
        keep = set(args.real_models.split(","))
        train = [v for v in train if v in keep]
        scale_b = [v for v in scale_b if v in keep]
        scale_i = [v for v in scale_i if v in keep]
        infer = [v for v in infer if v in keep]
        light = [n for n in light if n in keep]
    t0 = time.time()
    export(train + scale_b + scale_i + infer, cache, smoke)
    full = ["onnx-train", "onnxruntime", "pytorch"] + ([] if smoke or args.no_compile else ["compile"])
    rows = {}
    for v in dict.fromkeys(train + scale_b + scale_i):
        runtimes = ["onnx-train", "onnxruntime"] + (["pytorch"] if v in train else []) + (["compile"] if v in train and v in COMPILE and full[-1] == "compile" else [])
        rows[v] = train_row(args, cache / v, runtimes)
        print(json.dumps({"training": {k: (v2 if k not in ("onnx-train", "onnxruntime", "pytorch", "compile") else
                                          {a: b for a, b in v2.items() if a != "losses"}) for k, v2 in rows[v].items()}}), flush=True)
    inference = infer_rows(args, cache, infer, light, batches)
    minutes = (time.time() - t0) / 60
    return report(args, [rows[v] for v in train], [rows[v] for v in scale_b], [rows[v] for v in scale_i], inference, minutes)


# ------------------------------------------------------------------ report

def ms(x):
    return f"{x:.2f} ms" if x < 100 else f"{x:.0f} ms"


def cell(r, rss=False):
    if r is None:
        return "-"
    if "error" in r:
        return "failed"
    if rss:
        return f"{r['peak_rss_mb']:.0f} MiB"
    return ms(r["median_ms"])


def describe(row):
    if row["arch"] in ("resnet18", "mobilenet_v3"):
        return f"{'ResNet-18' if row['arch'] == 'resnet18' else 'MobileNetV3-Small'} {row['image']}x{row['image']}"
    return {"bert_tiny": "BERT-Tiny", "bert_mini": "BERT-Mini", "gpt2_tiny": "GPT-2 tiny", "gpt2_small": "GPT-2 small-vocab",
            "vit_tiny": "ViT (DeiT-Tiny)", "vit_micro": "ViT micro 32x32"}.get(row["arch"], row["arch"])


def against_fastest(ours, peers, goal):
    """("<ratio>x <fastest peer>", "met"/"not met") of onnx-train's median against the fastest peer's."""
    if "error" in ours or not peers:
        return "-", "not met"
    fastest = min(peers, key=lambda p: peers[p]["median_ms"])
    x = ours["median_ms"] / peers[fastest]["median_ms"]
    return f"{x:.2f}x {'torch.compile' if fastest == 'compile' else fastest}", "met" if x <= goal else "not met"


def goal_needs(ours, peers, goal, flops, peak):
    """The rate the time goal asks for: the row's counted work (Conv, Gemm and MatMul multiply-adds x 2) in
    goal x the fastest peer's time, as a share of the measured GEMM peak (None when a time or the count is
    missing). Over 1, the goal can be met only by doing fewer multiply-adds than the count (Winograd), not
    by faster products."""
    if not flops or not peers or "error" in ours or not peak:
        return None
    fastest = min(p["median_ms"] for p in peers.values())
    return flops / (goal * fastest * 1e6) / peak


def needs_cell(share, peak):
    return "-" if share is None else f"{share * peak:.0f} GFLOP/s ({share:.0%})"


def over_peak_line(rows, peak, what):
    """One paragraph naming the rows whose goal asks more than the GEMM peak."""
    if not peak:
        return []
    over = ", ".join(f"{name} ({share:.0%})" for name, share in rows if share is not None and share > 1)
    return ["", f"Goal needs: the {what}'s counted work (GFLOP column) done in the goal's time (goal x the fastest peer), "
            f"against this run's GEMM peak ({peak:.1f} GFLOP/s, `onnx-train bench --gemm-peak`). A row over 100% cannot meet its goal by "
            f"faster products alone, only by doing fewer multiply-adds than the count (Winograd for 3x3 convolutions): "
            f"{over or 'none'}."]


def report(args, train, scale_b, scale_i, inference, minutes):
    peak = getattr(args, "gemm_peak_gflops", None)
    needs_train, needs_infer = [], []
    peers = ("onnxruntime", "pytorch", "compile")
    out = ["## Real architectures: training step (issue 16)", "",
           f"Random weights, exported once by `Benchmarks/export_real.py` (TorchScript, opset 17) into `{args.real_cache.relative_to(ROOT) if args.real_cache.is_relative_to(ROOT) else args.real_cache}`;",
           "onnx-train trains the artifacts `onnx-train artifacts --loss cross-entropy --optimizer adamw` makes from",
           "that export (every run), onnxruntime-training 1.19.2 its own `generate_artifacts` output from the same file,",
           "PyTorch the same weights (AdamW, lr 1e-3, eps 1e-6). Sequence 128 for the language models. "
           f"{args.threads} threads, idle threads sleeping;",
           f"this part took {minutes:.1f} min. Goal: onnx-train at most {TRAIN_GOAL}x the fastest peer, peak RSS at most onnxruntime's.", "",
           "| model | batch | GFLOP/step | onnx-train | onnxruntime 1.19.2 | PyTorch eager | torch.compile | onnx-train / fastest | time goal | goal needs | peak RSS onnx-train | onnxruntime (model) | PyTorch | memory goal | first-loss diff vs onnxruntime |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    failures = []
    for r in train:
        t = r.get("onnx-train", {})
        ok_peers = {p: r[p] for p in peers if p in r and "error" not in r[p]}
        for key in ("onnx-train",) + peers:
            if key in r and "error" in r[key]:
                failures.append(f"* {r['variant']}, {key}: {r[key]['error']}")
        comp = r.get("compile")
        comp_cell = "not run" if comp is None else ("failed" if "error" in comp else f"{ms(comp['median_ms'])} (compile {comp['compile_s']:.0f} s)")
        ratio, goal = against_fastest(t, ok_peers, TRAIN_GOAL)
        share = goal_needs(t, ok_peers, TRAIN_GOAL, r.get("flops"), peak)
        needs_train.append((r["variant"], share))
        o = r.get("onnxruntime", {})
        mem = "-" if "error" in t or "error" in o else ("met" if t["peak_rss_mb"] <= o["peak_rss_mb"] else "not met")
        o_rss = "failed" if "error" in o else f"{o['peak_rss_mb']:.0f} MiB ({o['model_rss_mb']:.0f})"
        diff = f"{r['first_loss_difference']:.1e}" if "first_loss_difference" in r else "-"
        out.append(f"| {describe(r)} | {r['batch']} | {r['flops'] / 1e9:.2f} | {cell(t)} | {cell(o)} | {cell(r.get('pytorch'))} | {comp_cell} "
                   f"| {ratio} | {goal} | {needs_cell(share, peak)} | {cell(t, True)} | {o_rss} | {cell(r.get('pytorch'), True)} | {mem} | {diff} |")
    out += ["", f"Medians of the timed steps (the count per round, chosen from the step's FLOPs, and p10 / p90 below) of each runtime's",
            f"best of {rounds_phrase(args)} (a fresh process each, the order rotating; every round's median below); peak RSS is the child",
            "process's getrusage ru_maxrss, in brackets onnxruntime's growth over its imports (the training wheel imports torch).",
            "torch.compile: inductor, default mode, on one variant per architecture (`not run` elsewhere: compiling takes about",
            "a minute per model on 2 cores); its median excludes the compiling steps, the compile time is the first step's.", ""]
    for r in train:
        out.append(f"* {r['variant']} ({r['steps']} steps a round): " + "; ".join(
            f"{k} {r[k]['p10_ms']:.1f} / {r[k]['p90_ms']:.1f} ms{rounds_note(r[k])}" for k in ("onnx-train",) + peers if k in r and "error" not in r[k]))
    out += over_peak_line(needs_train, peak, "step")
    if failures:
        out += ["", "Failures (the error line of each):", ""] + failures
    out += [""]

    # Scale
    if scale_b or scale_i:
        out += ["## Scale: ResNet-18 training as the batch and the image grow (issue 16 item 4)", "",
                "Step time and peak memory against the step's work (FLOPs, torch.utils.flop_counter), each as a multiple of the",
                "first row's. Memory growth is the peak RSS's growth over the process before it loaded the model. Growing no",
                "worse than the work: the time multiple at most the FLOP multiple.", ""]
        for title, rows in (("Batch doubling, 32x32 images", scale_b), ("Image 32 -> 224, batch 8", scale_i)):
            if not rows:
                continue
            out += [f"### {title}", "",
                    "| batch | image | GFLOP/step | x work | onnx-train step | x time | peak RSS (model) | x memory | onnxruntime step | x time | peak RSS (model) | x memory |",
                    "|---|---|---|---|---|---|---|---|---|---|---|---|"]
            base = rows[0]
            for r in rows:
                cells = []
                for k in ("onnx-train", "onnxruntime"):
                    a, b = r.get(k, {}), base.get(k, {})
                    if "error" in a or "error" in b:
                        cells += ["failed", "-", "-", "-"]
                        continue
                    cells += [ms(a["median_ms"]), f"{a['median_ms'] / b['median_ms']:.1f}x", f"{a['peak_rss_mb']:.0f} MiB ({a['model_rss_mb']:.0f})",
                              f"{a['model_rss_mb'] / max(b['model_rss_mb'], 1):.1f}x"]
                out.append(f"| {r['batch']} | {r['image']} | {r['flops'] / 1e9:.2f} | {r['flops'] / base['flops']:.1f}x | " + " | ".join(cells) + " |")
            out.append("")

    # Inference
    out += ["## Inference latency (issue 16)", "",
            "Steady-state latency of one run: `onnx-train bench MODEL.onnx --infer` against InferenceSession.run in onnxruntime",
            f"1.19.2 and the current onnxruntime ({_version(inference, 'ort-current')}), and PyTorch eager under no_grad (the torchvision",
            "and transformers models; the zoo models have no PyTorch definition). `light_*` are onnx's model-zoo \"light\" models from",
            "the onnx wheel (onnx/backend/test/data/light, weights made by ConstantOfShape, fixed batch 1). Each runtime in its own",
            f"process, the best of {rounds_phrase(args)} (lowest median; the rounds' medians below the table); goals: onnx-train at most {INFER_GOAL}x the fastest (time), its peak RSS at most both onnxruntimes' (memory). The difference column is the largest |onnx-train - onnxruntime",
            "1.19.2| over the first output on the same random feeds (`onnx-train infer`), beside that output's largest magnitude;",
            "for the zoo models on a copy with seeded random weights in place of the ConstantOfShape ones (constant weights give",
            "every class the same probability, which would hide a wrong kernel).", "",
            "| model | batch | GFLOP | onnx-train | onnxruntime 1.19.2 | onnxruntime current | PyTorch | onnx-train / fastest | time goal | goal needs | peak RSS onnx-train | ort 1.19.2 (model) | ort current | PyTorch | memory goal | max abs diff (scale) |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    ifail = []
    for r in inference:
        t = r["onnx-train"]
        ok = {k: r[k] for k in ("ort", "ort-current", "pytorch") if k in r and "error" not in r[k]}
        for k in ("onnx-train", "ort", "ort-current", "pytorch"):
            if k in r and "error" in r[k]:
                ifail.append(f"* {r['model']} batch {r['batch']}, {k}: {r[k]['error']}")
        ratio, goal = against_fastest(t, ok, INFER_GOAL)
        share = goal_needs(t, ok, INFER_GOAL, r.get("flops"), peak)
        needs_infer.append((f"{r['model']} b{r['batch']}", share))
        d = r.get("difference")
        dcell = "-" if d is None else (f"{d:.1e} ({r['output_scale']:.2g})" if isinstance(d, float) else "failed")
        if isinstance(d, str):
            ifail.append(f"* {r['model']} batch {r['batch']}, output check: {d}")
        o = r["ort"]
        o_rss = "failed" if "error" in o else f"{o['peak_rss_mb']:.0f} MiB ({o['model_rss_mb']:.0f})"
        # Met when onnx-train's peak RSS is at most every onnxruntime's in the row (1.19.2 and current).
        orts = [r[k] for k in ("ort", "ort-current")]
        mem = "-" if "error" in t or any("error" in x for x in orts) else \
            ("met" if all(t["peak_rss_mb"] <= x["peak_rss_mb"] for x in orts) else "not met")
        flops = f"{r['flops'] / 1e9:.2f}" if r.get("flops") else "-"
        out.append(f"| {r['model']} | {r['batch']} | {flops} | {cell(t)} | {cell(o)} | {cell(r['ort-current'])} | {cell(r.get('pytorch'))} "
                   f"| {ratio} | {goal} | {needs_cell(share, peak)} | {cell(t, True)} | {o_rss} | {cell(r['ort-current'], True)} | {cell(r.get('pytorch'), True)} | {mem} | {dcell} |")
    out += over_peak_line(needs_infer, peak, "run")
    if ifail:
        out += ["", "Failures (the error line of each):", ""] + ifail
    out += ["", "p90 latency (ms): " + "; ".join(
        f"{r['model']} b{r['batch']} " + "/".join(f"{r[k]['p90_ms']:.1f}" if k in r and "error" not in r[k] else "-"
                                                  for k in ("onnx-train", "ort", "ort-current", "pytorch"))
        for r in inference) + " (onnx-train / ort 1.19.2 / ort current / PyTorch).", ""]
    if rounds_for(args) > 1:
        out += ["Medians of the rounds (ms, in run order; onnx-train / ort 1.19.2 / ort current / PyTorch): " + "; ".join(
            f"{r['model']} b{r['batch']} " + " / ".join(
                ",".join(f"{m:.1f}" for m in r[k].get("round_medians_ms", [])) if k in r and "error" not in r[k] else "-"
                for k in ("onnx-train", "ort", "ort-current", "pytorch"))
            for r in inference) + ".", ""]
    return out


def rounds_note(result):
    """` (rounds 12.1, 11.9 ms)`: every round's median of a runtime, when there were several."""
    medians = result.get("round_medians_ms", [])
    return f" (rounds {', '.join(f'{m:.1f}' for m in medians)} ms)" if len(medians) > 1 else ""


def _version(rows, key):
    for r in rows:
        if "version" in r.get(key, {}):
            return r[key]["version"]
    return "?"


if __name__ == "__main__":
    child_main(sys.argv[1:])
