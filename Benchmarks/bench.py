"""`make bench`: onnx-train against onnxruntime-training and PyTorch on the issue-6 models, in one run.

For every model (mlp, cnn, gpt) and round, three child processes train the same exported model from the
same weights on the same data, in an order that rotates from round to round so drifting machine load hits
every runtime alike:
    onnx-train   `onnx-train bench FOLDER --infer` (Sources/onnx-train/BenchCommand.swift)
    onnxruntime  bench_reference.py --child onnxruntime (Module + AdamW Optimizer, OrtValue feeds)
    pytorch      bench_reference.py --child pytorch (torch.optim.AdamW)
Each child times WARMUP + STEPS steps and reports its own peak RSS (getrusage ru_maxrss). onnx-train and
onnxruntime also time inference of inference.onnx on the first batch. Then:
    * the GEMM peak: the best N x N x N sgemm in `onnx-train bench --gemm-peak N`, the better of
      onnx-train's split product and OpenBLAS's own threading at the same thread count, against which the MLP's step GFLOP/s (its GEMM FLOPs / median step) is set;
    * the MLP in 20 consecutive onnx-train processes (issue 16: at least 70% of that peak in every one; the
      step used to be bimodal, about one process in six running at twice the step time for its whole life);
    * batch scaling: the MLP at batch 8..256 (mlp_b<N> exports) in onnx-train and onnxruntime;
    * data parallelism (issue 12): onnx-train on every model with 1 process x 1 thread, 2 processes x 1
      thread under `mpirun -np 2` (each its own batch, the gradients averaged by MPI_Allreduce) and 1
      process x 2 threads: steps/s, examples/s, the allreduce time and bytes per step; and a model of
      the step time on 4..64 machines on a 10 Gbit/s network from the ring-allreduce cost.
    * real architectures (issue 16, bench_real.py): torchvision ResNet-18 and MobileNetV3-Small, BERT, GPT-2 and a
      ViT from export_real.py, trained in onnx-train, onnxruntime-training, PyTorch eager and torch.compile;
      inference of them and of onnx's zoo "light" models in onnx-train, onnxruntime 1.19.2, the current
      onnxruntime and PyTorch at batch 1 and 32; ResNet-18's step time and memory as batch and image grow.
Prints a table and writes it, with the machine and how to reproduce, to docs/PERFORMANCE.md (smoke runs
write build/bench-smoke.md instead unless --doc is given).

Idle worker threads sleep by default (onnxruntime allow_spinning=0, OMP_WAIT_POLICY=PASSIVE): on a shared
2-core machine a spinning idle thread steals the core its partner needs (see README.md); --spin restores
the runtimes' defaults.

Run: python Benchmarks/bench.py [--binary .build/release/onnx-train] [--steps 50] [--warmup 5] [--rounds 2]
     [--threads 2] [--models mlp,cnn,gpt] [--scale 8,16,32,64,128,256] [--smoke] [--spin] [--doc PATH]
     [--data-parallel-only] [--no-data-parallel] [--no-real] [--real-only] [--real-models A,B] [--no-compile]
     [--ort-current .venv-bench-ort/bin/python]
"""

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
import bench_reference  # noqa: E402  (the reference children and the summary statistics)
import bench_real  # noqa: E402  (issue 16: the real architectures, the zoo models, the scale table)

RUNTIMES = ("onnx-train", "onnxruntime", "pytorch")
NETWORK_GBIT = 10  # the modelled network of the data-parallel table
MODEL_MACHINES = (4, 8, 16, 32, 64)
GOAL_RATIO = 0.8  # issue 6: onnx-train's median step <= 0.8 x the faster peer's
CORE_PROBE_MS = 200  # how long `onnx-train bench --core-probe` runs before and after each MLP process
UNEVEN_CORES = 0.9  # a slowest-to-fastest core ratio below this (wall or CPU time) is an uneven pair
SLOW_HANDOFF_NS = 300  # the cache-line round trip above which the machine is in its slow state (README)
MLP_PEAK_GOAL = 0.7  # issue 16: the MLP's step at >= 70% of the GEMM peak in every one of 20 processes


def run_onnx_train(binary, folder, args, infer=True, threads=None, processes=1):
    cmd = [str(binary), "bench", str(folder), "--steps", str(args.steps), "--warmup", str(args.warmup)]
    if infer:
        cmd.append("--infer")
    env = dict(os.environ, OPENBLAS_NUM_THREADS=str(threads or args.threads))
    if processes > 1:
        cmd = ["mpirun", "--allow-run-as-root", "--oversubscribe", "-np", str(processes), "-x", "OPENBLAS_NUM_THREADS"] + cmd
    done = subprocess.run(bench_reference.isolated(cmd), capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise SystemExit(f"bench: onnx-train failed on {folder.name}:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def run_child(runtime, binary, folder, args, infer=True):
    if runtime == "onnx-train":
        return run_onnx_train(binary, folder, args, infer)
    return bench_reference.run_child(runtime, folder, args)


def gemm_peak(binary, args):
    cmd = [str(binary), "bench", "--gemm-peak", str(args.gemm_n), "--steps", str(args.gemm_runs)]
    done = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, OPENBLAS_NUM_THREADS=str(args.threads)))
    if done.returncode != 0:
        raise SystemExit(f"bench: the GEMM peak run failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def handoff_rounds(args):
    return 1_000 if args.smoke else 100_000


def handoff_probe(binary, rounds):
    """The median round trip (ns) of one cache line between two threads (`onnx-train bench --handoff-probe`)."""
    done = subprocess.run([str(binary), "bench", "--handoff-probe", str(rounds)], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"bench: the hand-off probe failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])["round_trip_ns"]


def core_probe(binary, milliseconds):
    """Each core's sgemm speed right now (`onnx-train bench --core-probe`): the slowest thread's GFLOP/s
    over the fastest's, per wall second and per second of its own CPU time, and the per-CPU-second rates."""
    done = subprocess.run([str(binary), "bench", "--core-probe", str(milliseconds)], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"bench: the core probe failed:\n{done.stderr[-2000:]}")
    r = json.loads(done.stdout.strip().splitlines()[-1])
    return {"wall_ratio": r["slowest_to_fastest_wall"], "cpu_ratio": r["slowest_to_fastest_cpu"], "gflops_cpu": r["gflops_cpu"]}


def export(models, out):
    missing = [m for m in models if not (out / m / "meta.json").exists()]
    if missing:
        print(f"exporting {', '.join(missing)} ...", flush=True)
        cmd = [sys.executable, str(HERE / "export_models.py"), "--out", str(out), "--models", ",".join(missing)]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"bench: export failed:\n{done.stderr[-3000:]}")


def machine():
    info = {"platform": platform.platform(), "cores": os.cpu_count()}
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
        info["cpu"] = next(l.split(":", 1)[1].strip() for l in cpuinfo.splitlines() if l.startswith("model name"))
        flags = next(l for l in cpuinfo.splitlines() if l.startswith("flags")).split()
        info["simd"] = " ".join(f for f in ("avx2", "fma", "avx512f", "avx512_bf16", "amx_tile") if f in flags)
    except (OSError, StopIteration):
        pass
    try:
        info["memory_gib"] = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError):
        pass
    try:
        info["swift"] = subprocess.run(["swift", "--version"], capture_output=True, text=True).stdout.splitlines()[0]
    except (OSError, IndexError):
        pass
    try:
        out = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", "libopenblas0-pthread"], capture_output=True, text=True)
        if out.returncode == 0:
            info["openblas"] = out.stdout.strip()
    except OSError:
        pass
    return info


def fmt_ms(x):
    return f"{x:.2f} ms" if x < 100 else f"{x:.1f} ms"


def main():
    parser = argparse.ArgumentParser(description="Benchmark onnx-train against onnxruntime-training and PyTorch (issue 6).")
    parser.add_argument("--binary", type=Path, default=ROOT / ".build/release/onnx-train")
    parser.add_argument("--models", default="mlp,cnn,gpt")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--scale", default="8,16,32,64,128,256", help="MLP batch sizes for the scaling table ('' skips it)")
    parser.add_argument("--gemm-n", type=int, default=2048)
    parser.add_argument("--gemm-runs", type=int, default=5)
    parser.add_argument("--mlp-processes", type=int, default=20, help="consecutive onnx-train processes timing the MLP (0 skips)")
    parser.add_argument("--spin", action="store_true", help="keep the runtimes' spinning idle threads (default: they sleep)")
    parser.add_argument("--smoke", action="store_true", help="3 steps, 1 warm-up, 1 round, a small GEMM, two batch sizes")
    parser.add_argument("--out", type=Path, default=HERE / "models", help="where the exported models live")
    parser.add_argument("--doc", type=Path, help="markdown report (default docs/PERFORMANCE.md; smoke: .build/bench-smoke.md)")
    parser.add_argument("--data-parallel-only", action="store_true", help="only the data-parallel table (printed, not written)")
    parser.add_argument("--no-data-parallel", action="store_true", help="leave out the data-parallel table")
    parser.add_argument("--no-real", action="store_true", help="leave out the real architectures (bench_real.py)")
    parser.add_argument("--real-only", action="store_true",
                        help="only the real architectures' tables (printed, and written to .build/bench-real.md)")
    parser.add_argument("--real-models", default="", help="keep only these real-architecture variants / light models (comma-separated)")
    parser.add_argument("--no-compile", action="store_true", help="leave out the torch.compile column")
    parser.add_argument("--real-rounds", type=int, default=2,
                        help="interleaved rounds per runtime of each real-architecture row (the best round is kept)")
    parser.add_argument("--real-extra-rounds", type=int, default=None,
                        help="more rounds for a real-architecture row whose runtime's round medians differ by over 20%% "
                             "(default 1; 0 with --smoke)")
    parser.add_argument("--real-cache", type=Path, default=bench_real.DEFAULT_CACHE, help="where export_real.py's exports live")
    parser.add_argument("--ort-current", type=Path, default=bench_real.DEFAULT_ORT_CURRENT,
                        help="python of the venv with the current onnxruntime (make bench-venv makes .venv-bench-ort)")
    args = parser.parse_args()
    if args.smoke:
        args.steps, args.warmup, args.rounds, args.gemm_n, args.gemm_runs = 3, 1, 1, 512, 2
        args.mlp_processes = min(args.mlp_processes, 2)
        args.scale = "8,256" if args.scale else ""
    if args.real_extra_rounds is None:
        args.real_extra_rounds = 0 if args.smoke else 1
    args.no_spin = not args.spin  # read by bench_reference.run_child
    doc = args.doc or (ROOT / (".build/bench-smoke.md" if args.smoke else "docs/PERFORMANCE.md"))
    if not args.binary.exists():
        raise SystemExit(f"bench: {args.binary} is missing (swift build -c release --product onnx-train)")

    models = [m for m in args.models.split(",") if m]
    scale = [int(b) for b in args.scale.split(",") if b]
    export(models + [f"mlp_b{b}" for b in scale if b != 64], args.out)

    started = time.time()
    load_start = os.getloadavg()
    if args.real_only:
        args.gemm_peak_gflops = gemm_peak(args.binary, args)["gflops"]
        text = "\n".join(bench_real.run(args))
        load_end = os.getloadavg()
        text += (f"\nLoad average (1/5/15 min) at the start {load_start[0]:.1f}/{load_start[1]:.1f}/{load_start[2]:.1f}, "
                 f"at the end {load_end[0]:.1f}/{load_end[1]:.1f}/{load_end[2]:.1f}; took {(time.time() - started) / 60:.1f} min.\n")
        print("\n" + text)
        path = ROOT / ".build/bench-real.md"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return
    if args.data_parallel_only:
        parallel = data_parallel(args, models)
        print("\n" + "\n".join(data_parallel_report(args, parallel, os.getloadavg())))
        return
    peak = gemm_peak(args.binary, args)
    print(f"GEMM peak: {peak['gflops']:.1f} GFLOP/s ({peak['n']}^3 sgemm, {peak['threads']} threads; split "
          f"{peak.get('split_gflops', 0):.1f}, OpenBLAS-threaded {peak.get('openblas_gflops', 0):.1f})", flush=True)

    rows = []
    for name in models:
        folder = args.out / name
        meta = json.loads((folder / "meta.json").read_text())
        results = {r: [] for r in RUNTIMES}
        for round_index in range(args.rounds):
            k = round_index % len(RUNTIMES)
            for runtime in RUNTIMES[k:] + RUNTIMES[:k]:
                results[runtime].append(run_child(runtime, args.binary, folder, args))
        summary = {r: bench_reference.summarize(results[r]) for r in RUNTIMES}
        faster = min(("onnxruntime", "pytorch"), key=lambda r: summary[r]["median_ms"])
        row = {"model": name, "batch_size": meta["batch_size"], "faster_peer": faster, **summary,
               "ratio": summary["onnx-train"]["median_ms"] / summary[faster]["median_ms"],
               "first_loss_difference": abs(summary["onnx-train"]["first_loss"] - summary["onnxruntime"]["first_loss"])}
        if "train_step_gemm_flops" in meta:
            for r in RUNTIMES:
                summary[r]["gflops"] = meta["train_step_gemm_flops"] / (summary[r]["median_ms"] * 1e6)
        rows.append(row)
        print(json.dumps(row), flush=True)

    scaling = []
    for b in scale:
        folder = args.out / ("mlp" if b == 64 else f"mlp_b{b}")
        meta = json.loads((folder / "meta.json").read_text())
        line = {"batch": b}
        for runtime in ("onnx-train", "onnxruntime"):
            s = bench_reference.summarize([run_child(runtime, args.binary, folder, args, infer=False)])
            line[runtime] = {"median_ms": s["median_ms"], "peak_rss_mb": s["peak_rss_mb"], "model_rss_mb": s["model_rss_mb"],
                             "gflops": meta["train_step_gemm_flops"] / (s["median_ms"] * 1e6)}
        scaling.append(line)
        print(json.dumps(line), flush=True)

    processes = mlp_processes(args, peak) if "mlp" in models else []
    parallel = [] if args.no_data_parallel else data_parallel(args, models)
    args.gemm_peak_gflops = peak["gflops"]  # bench_real's "goal needs" column
    real = [] if args.no_real else bench_real.run(args)
    load_end = os.getloadavg()
    minutes = (time.time() - started) / 60
    text = report(args, peak, rows, scaling, machine(), load_start, load_end, minutes, parallel, real, processes)
    print("\n" + text)
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text(text)
    print(f"wrote {doc.relative_to(ROOT) if doc.is_relative_to(ROOT) else doc} ({minutes:.1f} min)")


def mlp_processes(args, peak):
    """The MLP in `--mlp-processes` consecutive onnx-train processes (each 4x the steps of a round): a slow
    mode that lasts a whole process shows as one row, where the rounds' pooled median would hide it."""
    folder = args.out / "mlp"
    flops = json.loads((folder / "meta.json").read_text())["train_step_gemm_flops"]
    lines = []
    for i in range(args.mlp_processes):
        # How dear it is right now to pass a cache line from one core to the other, just before and just
        # after each process: in this virtual machine's slow state the round trip is several times its
        # usual 50-200 ns for seconds at a time, and the MLP (many small products whose outputs move
        # between the cores) slows with it while a large GEMM does not (Benchmarks/README.md).
        # And each core's speed (both at once, small single-threaded sgemms): a process slow beside an
        # uneven pair (one core slower per CPU second, or one that lost its core for a while) is the
        # host's doing; one slow beside an even pair is ours to explain.
        before, cores_before = handoff_probe(args.binary, handoff_rounds(args)), core_probe(args.binary, CORE_PROBE_MS)
        run_args = argparse.Namespace(**{**vars(args), "steps": args.steps * 4})
        result = run_onnx_train(args.binary, folder, run_args, infer=False)
        after, cores_after = handoff_probe(args.binary, handoff_rounds(args)), core_probe(args.binary, CORE_PROBE_MS)
        median = statistics.median(result["times"])
        lines.append({"process": i + 1, "median_ms": 1000 * median, "gflops": flops / (median * 1e9),
                      "fraction": flops / (median * 1e9) / peak["gflops"],
                      "handoff_before_ns": before, "handoff_after_ns": after,
                      "cores_before": cores_before, "cores_after": cores_after})
        print(json.dumps(lines[-1]), flush=True)
    return lines


def mlp_processes_report(args, lines, peak):
    fractions = [l["fraction"] for l in lines]
    met = sum(f >= MLP_PEAK_GOAL for f in fractions)
    out = ["", f"## MLP in {len(lines)} consecutive processes", "",
           f"onnx-train alone, one process after another, {args.steps * 4} timed steps each ({args.threads} threads): each",
           f"process's median step as GEMM GFLOP/s and as a share of the peak above. Issue 16's goal: at least",
           f"{MLP_PEAK_GOAL:.0%} in every process: {met} of {len(lines)} ({'met' if met == len(lines) else 'not met'}); lowest "
           f"{min(fractions):.0%}, median {statistics.median(fractions):.0%}, highest {max(fractions):.0%}.", "",
           f"Just before and just after each process, `onnx-train bench --handoff-probe {handoff_rounds(args)}` bounces one cache line",
           f"between two threads and gives the round trip (median of 5 runs). It is ~50-200 ns on this machine normally;",
           f"above {SLOW_HANDOFF_NS} ns the virtual machine is in its slow state, in which data crossing between the cores costs",
           f"several times more (Benchmarks/README.md): a slow process beside a slow probe is the machine's state.",
           f"`onnx-train bench --core-probe {CORE_PROBE_MS}` runs small single-threaded sgemms on both cores at once: the cores",
           f"columns give the slower thread's speed over the faster's per wall second and per second of its own CPU time",
           f"(below {UNEVEN_CORES} the pair is uneven: a core slower right now, or one the host took away for a while).", "",
           f"| process | median step | GFLOP/s | share of peak | round trip before | after | cores before (wall / CPU) | after |",
           "|---|---|---|---|---|---|---|---|"]
    out += [f"| {l['process']} | {fmt_ms(l['median_ms'])} | {l['gflops']:.1f} | {l['fraction']:.0%} | "
            f"{l['handoff_before_ns']:.0f} ns | {l['handoff_after_ns']:.0f} ns | {cores_cell(l['cores_before'])} | "
            f"{cores_cell(l['cores_after'])} |" for l in lines]
    slow = [l for l in lines if max(l["handoff_before_ns"], l["handoff_after_ns"]) > SLOW_HANDOFF_NS]
    shares = ", ".join(f"{l['fraction']:.0%}" for l in slow)
    out += ["", f"Processes beside a slow probe (> {SLOW_HANDOFF_NS} ns): {len(slow)}" + (f", at {shares} of the peak." if slow else ".")]
    uneven = [l for l in lines if uneven_cores(l["cores_before"]) or uneven_cores(l["cores_after"])]
    uneven_shares = ", ".join(f"{l['fraction']:.0%}" for l in uneven)
    out += [f"Processes beside an uneven core pair (< {UNEVEN_CORES}): {len(uneven)}"
            + (f", at {uneven_shares} of the peak." if uneven else ".")]
    return out


def cores_cell(c):
    return f"{c['wall_ratio']:.2f} / {c['cpu_ratio']:.2f}"


def uneven_cores(c):
    return min(c["wall_ratio"], c["cpu_ratio"]) < UNEVEN_CORES


def data_parallel(args, models):
    """Every model in onnx-train: 1 process x 1 thread, 2 processes x 1 thread (mpirun), 1 process x 2
    threads; each process trains the model's batch, so 2 processes train twice the examples per step."""
    import shutil
    if shutil.which("mpirun") is None:
        raise SystemExit("bench: mpirun is missing for the data-parallel table (make deps installs openmpi-bin)")
    lines = []
    for name in models:
        folder = args.out / name
        meta = json.loads((folder / "meta.json").read_text())
        runs = {}
        for key, threads, processes in (("1x1", 1, 1), ("2x1", 1, 2), ("1x2", 2, 1)):
            result = run_onnx_train(args.binary, folder, args, infer=False, threads=threads, processes=processes)
            runs[key] = {"median_ms": statistics.median(result["times"]) * 1000, "processes": processes,
                         "allreduce_ms": statistics.median(result["allreduce_times"]) * 1000 if result.get("allreduce_times") else None,
                         "gradient_bytes": result.get("gradient_bytes")}
        line = {"model": name, "batch_size": meta["batch_size"], **runs}
        lines.append(line)
        print(json.dumps({"data_parallel": line}), flush=True)
    return lines


def data_parallel_report(args, lines, load):
    if not lines:
        return []
    out = ["## Data-parallel training (MPI)", "",
           f"onnx-train only (no peer runtimes) on this machine ({os.cpu_count()} cores, load average {load[0]:.1f} at the end): one process with one",
           "thread, two processes with one thread each under `mpirun -np 2` (`onnx-train bench` with the Trainer's",
           "`dataParallel` group: each process trains the model's batch, the gradients are averaged by one MPI_Allreduce",
           "over a flat float buffer, so a step covers twice the examples), and one process with two threads. Medians",
           f"of {args.steps} timed steps, one run each. The allreduce time is rank 0's wall time in MPI_Allreduce, waiting",
           "for the other process to finish its backward pass included; two processes of one thread on a shared 2-core",
           "machine measure contention more than MPI.", "",
           "| model | batch per process | 1 process x 1 thread | 2 processes x 1 thread | 1 process x 2 threads | allreduce per step (2 processes) | gradient bytes per step |",
           "|---|---|---|---|---|---|---|"]
    for l in lines:
        def cell(key):
            r = l[key]
            steps = 1000 / r["median_ms"]
            return f"{steps:.1f} steps/s, {steps * l['batch_size'] * r['processes']:.0f} ex/s"
        two = l["2x1"]
        out.append(f"| {l['model']} | {l['batch_size']} | {cell('1x1')} | {cell('2x1')} | {cell('1x2')} "
                   f"| {fmt_ms(two['allreduce_ms']) if two['allreduce_ms'] is not None else '-'} "
                   f"| {two['gradient_bytes'] / 2**20:.2f} MiB |")
    bandwidth = NETWORK_GBIT * 1e9 / 8
    out += ["", f"### Modelled step time on p machines ({NETWORK_GBIT} Gbit/s)", "",
            "A model, not a measurement: each machine computes its batch in the time the faster single-process run took",
            "here (1 or 2 threads, the table above), then a ring allreduce moves 2(p-1)/p x the gradient bytes in and out of every",
            f"machine at {NETWORK_GBIT} Gbit/s ({bandwidth / 1e9:.2f} GB/s). Left out: latency (2(p-1) messages per allreduce, ~1 ms",
            "in all at 10 µs each and p = 64), the reduction arithmetic, and overlap of communication with the backward pass",
            "(onnx-train reduces after it; PyTorch's DDP overlaps them by buckets). Efficiency = compute / (compute + communication).", "",
            "| model | gradient MiB | compute | " + " | ".join(f"p = {p}" for p in MODEL_MACHINES) + " |",
            "|---|---|---|" + "---|" * len(MODEL_MACHINES)]
    for l in lines:
        compute = min(l["1x1"]["median_ms"], l["1x2"]["median_ms"])
        cells = []
        for p in MODEL_MACHINES:
            comm = 2 * (p - 1) / p * l["2x1"]["gradient_bytes"] / bandwidth * 1000
            total = compute + comm
            cells.append(f"{fmt_ms(total)} ({100 * compute / total:.0f}%, {p * l['batch_size'] * 1000 / total:.0f} ex/s)")
        out.append(f"| {l['model']} | {l['2x1']['gradient_bytes'] / 2**20:.2f} | {fmt_ms(compute)} | " + " | ".join(cells) + " |")
    out += ["", "Each cell: modelled step time (efficiency, examples per second over all machines).", ""]
    return out


def report(args, peak, rows, scaling, info, load_start, load_end, minutes, parallel=(), real=(), processes=()):
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    spin = "spinning (runtime defaults)" if args.spin else "sleeping (onnxruntime allow_spinning=0, OMP_WAIT_POLICY=PASSIVE)"
    out = ["# Performance", "",
           "Written by `make bench` (Benchmarks/bench.py); do not edit by hand. Issue 6's goal: onnx-train's median",
           f"training step at most {GOAL_RATIO}x the faster of onnxruntime-training and PyTorch on every model, peak RSS at",
           "most onnxruntime's, and the MLP step at least half the machine's single-precision GEMM peak.", "",
           f"Run of {now}: {args.steps} timed steps after a warm-up of at least {args.warmup} steps and 0.5 s, {args.rounds} round(s) per runtime",
           f"(the order rotates every round), {args.threads} threads, idle threads {spin}; took {minutes:.1f} min.",
           f"Load average (1/5/15 min) at the start {load_start[0]:.1f}/{load_start[1]:.1f}/{load_start[2]:.1f}, "
           f"at the end {load_end[0]:.1f}/{load_end[1]:.1f}/{load_end[2]:.1f} on {info.get('cores')} cores: "
           "absolute times on a shared machine drift, only the ratios of one run mean much.", "",
           "## Training step (AdamW)", "",
           "| model | batch | onnx-train | onnxruntime | PyTorch | onnx-train / faster peer | goal | peak RSS onnx-train | onnxruntime | PyTorch |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        t, o, p = r["onnx-train"], r["onnxruntime"], r["pytorch"]
        ok = "met" if r["ratio"] <= GOAL_RATIO and t["peak_rss_mb"] <= o["peak_rss_mb"] else "not met"
        out.append(f"| {r['model']} | {r['batch_size']} | {fmt_ms(t['median_ms'])} | {fmt_ms(o['median_ms'])} | {fmt_ms(p['median_ms'])} "
                   f"| {r['ratio']:.2f}x {r['faster_peer']} | {ok} | {t['peak_rss_mb']:.0f} MiB | {o['peak_rss_mb']:.0f} MiB "
                   f"({o['model_rss_mb']:.0f}) | {p['peak_rss_mb']:.0f} MiB ({p['model_rss_mb']:.0f}) |")
    out += ["",
            "Median over all timed steps of all rounds. Peak RSS is the child process's getrusage ru_maxrss after training;",
            "in brackets the growth over the process after its imports (the onnxruntime-training wheel imports torch, ~285",
            "MiB, before any model is loaded). The first-step loss of onnx-train and onnxruntime differ by "
            + ", ".join(f"{r['first_loss_difference']:.1e} ({r['model']})" for r in rows) + ".", "",
            "p10 / p90 step times (ms):", ""]
    for r in rows:
        out.append(f"* {r['model']}: " + "; ".join(f"{rt} {r[rt]['p10_ms']:.2f} / {r[rt]['p90_ms']:.2f}" for rt in RUNTIMES))
    out += ["", "## Inference latency (inference.onnx, first batch)", "",
            "| model | onnx-train | onnxruntime | ratio |", "|---|---|---|---|"]
    for r in rows:
        a, b = r["onnx-train"].get("infer_median_ms"), r["onnxruntime"].get("infer_median_ms")
        if a is not None and b is not None:
            out.append(f"| {r['model']} | {fmt_ms(a)} | {fmt_ms(b)} | {a / b:.2f}x |")
    out += ["", "## MLP against the GEMM peak", "",
            f"GEMM peak: {peak['gflops']:.1f} GFLOP/s, the best of {args.gemm_runs} {peak['n']}x{peak['n']}x{peak['n']} "
            f"sgemm calls with {peak['threads']} threads, measured in this run: the better of onnx-train's split product "
            f"({peak.get('split_gflops', 0):.1f} GFLOP/s) and OpenBLAS's own threading "
            f"({peak.get('openblas_gflops', 0):.1f} GFLOP/s).", ""]
    for r in rows:
        if "gflops" in r["onnx-train"]:
            g = r["onnx-train"]["gflops"]
            out.append(f"* MLP step (GEMM FLOPs / median step): onnx-train {g:.1f} GFLOP/s = {100 * g / peak['gflops']:.0f}% of "
                       f"the peak (issue 6's goal 50%: {'met' if g >= peak['gflops'] / 2 else 'not met'}; issue 16's 70%: "
                       f"{'met' if g >= MLP_PEAK_GOAL * peak['gflops'] else 'not met'}); onnxruntime "
                       f"{r['onnxruntime']['gflops']:.1f}, PyTorch {r['pytorch']['gflops']:.1f}.")
    if processes:
        out += mlp_processes_report(args, processes, peak)
    if scaling:
        out += ["", "## MLP batch scaling (one run each)", "",
                "| batch | onnx-train step | per example | GFLOP/s | peak RSS | onnxruntime step | GFLOP/s | peak RSS (model) |",
                "|---|---|---|---|---|---|---|---|"]
        for s in scaling:
            t, o = s["onnx-train"], s["onnxruntime"]
            out.append(f"| {s['batch']} | {fmt_ms(t['median_ms'])} | {1000 * t['median_ms'] / s['batch']:.1f} µs | {t['gflops']:.1f} "
                       f"| {t['peak_rss_mb']:.0f} MiB | {fmt_ms(o['median_ms'])} | {o['gflops']:.1f} | {o['peak_rss_mb']:.0f} MiB ({o['model_rss_mb']:.0f}) |")
    if real:
        out += [""] + list(real)
    if parallel:
        out += [""] + data_parallel_report(args, parallel, load_end)
    out += ["", "## Machine", ""]
    out += [f"* {k}: {v}" for k, v in info.items()]
    out += [f"* onnxruntime-training {rows[0]['onnxruntime']['version'] if rows else '?'}, "
            f"PyTorch {rows[0]['pytorch']['version'] if rows else '?'}" ]
    out += ["", "## Reproduce", "", "```sh",
            "make bench          # venvs .venv-bench (Benchmarks/requirements.txt) and .venv-bench-ort (requirements-ort-current.txt),",
            "                    # exports (Benchmarks/models, .build/bench-models), release build, this file",
            "make bench-smoke    # 3 steps (real architectures: the tiny configs, 2 steps), checks that it works (.build/bench-smoke.md)",
            ".venv-bench/bin/python Benchmarks/bench.py --real-only [--real-models resnet18_224_b8,squeezenet]   # only issue 16's tables",
            ".build/release/onnx-train bench MODEL.onnx --infer [--batch-size 32] [--json]   # any model's inference latency and peak RSS",
            f"python Benchmarks/bench.py --steps {args.steps} --rounds {args.rounds} --real-rounds {args.real_rounds} --real-extra-rounds {args.real_extra_rounds}   # with the venv's python, after a release build",
            "```", "",
            "A step is `module(input, labels); optimizer.step(); lazy_reset_grad()` in onnx-train (`onnx-train bench`) and",
            "onnxruntime, `cross_entropy(model(x), y); zero_grad(); backward(); step()` in PyTorch; see Benchmarks/README.md.", ""]
    out += KERNEL_NOTES
    return "\n".join(out)


# What the kernels' design choices measured when they were made (the code comments keep the why;
# the numbers live here, so they are not mistaken for claims about the current build).
KERNEL_NOTES = [
    "## Kernel choices and what they measured when made", "",
    "* BLAS runs single-threaded inside the `Parallel` pool (Runtime/BLAS.swift): OpenBLAS's own spinning threads",
    "  competing with the pool made an MLP step 2-5x slower on a loaded 2-core machine.",
    "* float32 exp and erf are branch-free (FloatMath.swift): glibc's expf/erff, one call per element, were the top",
    "  non-GEMM cost of a transformer step.",
    "* Losses' log-softmax rows run across threads (the one `softmax` kernel): a GPT's [512, 256] logits spent ~0.6 ms",
    "  in exp on one thread.",
    "* Softmax rows keep four running maxima: rows ~20% faster than one compare chain.",
    "* Element loops are functions of their own outside `Parallel.forRange` closures (activations, softmax, layer norm):",
    "  the Gelu loop inside the closure stayed scalar and was 2x slower.",
    "* AdamW takes square roots with sqrtps/sqrtpd: `SIMD.squareRoot()` calls sqrtf lane by lane on Linux, which made",
    "  AdamW 5x slower.",
    "* Npy appends a tensor's bytes with one copy: `Data.append(contentsOf:)` on a raw buffer was 20x slower in debug builds.",
    "",
]


if __name__ == "__main__":
    main()
