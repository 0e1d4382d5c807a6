#!/usr/bin/env python3
"""Checkpoint interop between onnxruntime-training 1.19.2 and onnx-train's Swift reader/writer.

Two commands (run with /work/venv/bin/python; pinned: onnxruntime-training==1.19.2, onnx==1.16.2,
numpy<2):

  generate OUT_DIR
      Writes ORT-made checkpoints that the Swift tests read (`make test` needs no Python):
        OUT_DIR/artifacts/          generate_artifacts output for a tiny MLP (AdamW, one frozen param)
        OUT_DIR/ort_artifact.ckpt   the artifact checkpoint (module state only)
        OUT_DIR/ort_full.ckpt       after 3 AdamW steps: params + optimizer state + properties
        OUT_DIR/ort_no_optim.ckpt   the same state saved without optimizer state
        OUT_DIR/ort_nominal.ckpt    nominal checkpoint (names and types only)
        OUT_DIR/expected.npz        param:<name>, momentum0:<name>, momentum1:<name>
        OUT_DIR/expected.json       step, initial_lr, properties, trainable/frozen names, losses

  check CKPT EXPECTED_NPZ EXPECTED_JSON ARTIFACT_DIR
      Loads a Swift-written checkpoint in ORT: compares parameters, properties and (when saved)
      the optimizer momenta exactly, then builds Module + Optimizer on it and takes one step.
      With optimizer state, that step must reproduce the pure-ORT continuation stored in
      EXPECTED_NPZ as next:<name> (so step and momenta were restored).
      Exits non-zero on any mismatch.
"""
import json
import os
import sys

import numpy as np


def build_model(path):
    """A 4 -> 5 -> 3 MLP (Gemm, Relu, Gemm) built with onnx.helper, fixed seed."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array((rng.standard_normal((5, 4)) * 0.5).astype(np.float32), "fc1.weight"),
        numpy_helper.from_array((rng.standard_normal((5,)) * 0.1).astype(np.float32), "fc1.bias"),
        numpy_helper.from_array((rng.standard_normal((3, 5)) * 0.5).astype(np.float32), "fc2.weight"),
        numpy_helper.from_array((rng.standard_normal((3,)) * 0.1).astype(np.float32), "fc2.bias"),
    ]
    nodes = [
        helper.make_node("Gemm", ["input", "fc1.weight", "fc1.bias"], ["h"], transB=1),
        helper.make_node("Relu", ["h"], ["r"]),
        helper.make_node("Gemm", ["r", "fc2.weight", "fc2.bias"], ["logits"], transB=1),
    ]
    graph = helper.make_graph(nodes, "mlp",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 4])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 3])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)


def generate(out):
    import onnx
    from onnxruntime.training import artifacts
    from onnxruntime.training.api import CheckpointState, Module, Optimizer

    os.makedirs(out, exist_ok=True)
    art = os.path.join(out, "artifacts")
    os.makedirs(art, exist_ok=True)
    base = os.path.join(art, "base.onnx")
    build_model(base)
    model = onnx.load(base)
    names = [i.name for i in model.graph.initializer]
    frozen = [n for n in names if n == "fc1.bias"]
    trainable = [n for n in names if n not in frozen]
    artifacts.generate_artifacts(model, requires_grad=trainable, frozen_params=frozen,
                                 loss=artifacts.LossType.CrossEntropyLoss,
                                 optimizer=artifacts.OptimType.AdamW, artifact_directory=art,
                                 nominal_checkpoint=True)
    os.remove(base)
    os.replace(os.path.join(art, "checkpoint"), os.path.join(out, "ort_artifact.ckpt"))
    os.replace(os.path.join(art, "nominal_checkpoint"), os.path.join(out, "ort_nominal.ckpt"))

    rng = np.random.default_rng(7)
    x = rng.standard_normal((6, 4)).astype(np.float32)
    y = rng.integers(0, 3, size=(6,)).astype(np.int64)

    state = CheckpointState.load_checkpoint(os.path.join(out, "ort_artifact.ckpt"))
    module = Module(os.path.join(art, "training_model.onnx"), state, os.path.join(art, "eval_model.onnx"))
    opt = Optimizer(os.path.join(art, "optimizer_model.onnx"), module)
    opt.set_learning_rate(0.01)
    module.train()
    losses = []
    for _ in range(3):
        losses.append(float(module(x, y)))
        opt.step()
        module.lazy_reset_grad()
    state.properties["epoch"] = 3
    state.properties["best_loss"] = 0.125
    state.properties["tag"] = "swift-interop"
    CheckpointState.save_checkpoint(state, os.path.join(out, "ort_full.ckpt"), include_optimizer_state=True)
    CheckpointState.save_checkpoint(state, os.path.join(out, "ort_no_optim.ckpt"), include_optimizer_state=False)

    expected = {}
    for name, p in state.parameters:
        expected["param:" + name] = np.array(p.data)
    # Momenta are not exposed by the Python API; read them from the file with ORT's own
    # flatbuffers bindings, which doubles as a check of the layout we implement.
    expected.update(read_momenta(os.path.join(out, "ort_full.ckpt")))

    # One more ORT step from the saved checkpoint: what a correct restore must reproduce.
    state2 = CheckpointState.load_checkpoint(os.path.join(out, "ort_full.ckpt"))
    module2 = Module(os.path.join(art, "training_model.onnx"), state2, os.path.join(art, "eval_model.onnx"))
    opt2 = Optimizer(os.path.join(art, "optimizer_model.onnx"), module2)
    opt2.set_learning_rate(0.01)
    module2.train()
    next_loss = float(module2(x, y))
    opt2.step()
    for name, p in state2.parameters:
        expected["next:" + name] = np.array(p.data)
    np.savez(os.path.join(out, "expected.npz"), x=x, y=y, **expected)
    info = {
        "step": 3,
        "initial_lr": 0.001,
        "lr": 0.01,
        "properties": {"epoch": 3, "best_loss": 0.125, "tag": "swift-interop"},
        "trainable": sorted(trainable),
        "frozen": sorted(frozen),
        "losses": losses,
        "next_loss": next_loss,
        "onnxruntime": __import__("onnxruntime").__version__,
        # The same arrays as expected.npz, for readers without an npz parser (exact: float32
        # -> Python float -> float32 round-trips).
        "values": {k: {"shape": list(v.shape), "data": [float(a) for a in v.ravel()]}
                   for k, v in expected.items()},
    }
    with open(os.path.join(out, "expected.json"), "w") as f:
        json.dump(info, f, indent=1)
    print("wrote", out)


def read_momenta(path):
    from onnxruntime.tools.ort_format_model.ort_flatbuffers_py.fbs import Checkpoint

    buf = open(path, "rb").read()
    ck = Checkpoint.Checkpoint.GetRootAs(buf, 0)
    out = {}
    for g in range(ck.OptimizerGroupsLength()):
        group = ck.OptimizerGroups(g)
        for s in range(group.OptimizerStatesLength()):
            st = group.OptimizerStates(s)
            pname = st.ParamName().decode()
            for m in range(st.MomentumsLength()):
                t = st.Momentums(m)
                dims = [t.Dims(i) for i in range(t.DimsLength())]
                assert t.DataType() == 1
                data = np.frombuffer(t.RawDataAsNumpy().tobytes(), dtype=np.float32).reshape(dims)
                out[t.Name().decode() + ":" + pname] = data
    return out


def check(ckpt, expected_npz, expected_json, art):
    from onnxruntime.training.api import CheckpointState, Module, Optimizer

    exp = np.load(expected_npz)
    info = json.load(open(expected_json))
    state = CheckpointState.load_checkpoint(ckpt)
    failures = []
    names = sorted(n for n, _ in state.parameters)
    want = sorted(k[len("param:"):] for k in exp.files if k.startswith("param:"))
    if names != want:
        failures.append(f"parameter names {names} != {want}")
    for name, p in state.parameters:
        key = "param:" + name
        if key in exp.files and not np.array_equal(np.array(p.data), exp[key]):
            failures.append(f"parameter {name} differs")
        trainable = name in info["trainable"]
        if p.requires_grad != trainable:
            failures.append(f"parameter {name} requires_grad={p.requires_grad}, expected {trainable}")
    for k, v in info.get("properties", {}).items():
        if k not in state.properties:
            failures.append(f"property {k} missing")
            continue
        got = state.properties[k]
        if isinstance(v, float):
            ok = np.float32(got) == np.float32(v)
        else:
            ok = got == v
        if not ok:
            failures.append(f"property {k} = {got!r}, expected {v!r}")
    if len(state.properties) != len(info.get("properties", {})):
        failures.append(f"{len(state.properties)} properties, expected {len(info.get('properties', {}))}")
    momenta = read_momenta(ckpt)
    for k, v in momenta.items():
        if k not in exp.files or not np.array_equal(v, exp[k]):
            failures.append(f"optimizer state {k} differs")
    if momenta and len(momenta) != len([k for k in exp.files if k.startswith("momentum")]):
        failures.append(f"{len(momenta)} optimizer state tensors, expected more")
    module = Module(os.path.join(art, "training_model.onnx"), state, os.path.join(art, "eval_model.onnx"))
    opt = Optimizer(os.path.join(art, "optimizer_model.onnx"), module)
    if not momenta:
        # No optimizer state: ORT starts fresh; one step must still run.
        module.train()
        loss = float(module(exp["x"], exp["y"]))
        opt.step()
        if not np.isfinite(loss):
            failures.append(f"loss {loss}")
    elif any(k.startswith("next:") for k in exp.files):
        opt.set_learning_rate(info.get("lr", 0.001))
        module.train()
        loss = float(module(exp["x"], exp["y"]))
        opt.step()
        if abs(loss - info["next_loss"]) > 1e-6 * max(1.0, abs(info["next_loss"])):
            failures.append(f"next loss {loss} != {info['next_loss']}")
        for name, p in state.parameters:
            d = np.max(np.abs(np.array(p.data) - exp["next:" + name]))
            if d > 1e-6:
                failures.append(f"after one more step {name} differs by {d}")
    if failures:
        print("FAIL", ckpt, "; ".join(failures))
        sys.exit(1)
    print("OK", ckpt, f"{len(names)} parameters, {len(state.properties)} properties, Module+Optimizer built")


def check_trained(ckpt, case_dir):
    """A checkpoint that onnx-train wrote after replaying Tests/Fixtures/training/<case> (e.g.
    `onnx-train run CASE --data CASE/data.npz --batch-size B --steps 30 --lr LR --no-shuffle --out OUT`):
    ORT loads it; parameters match ORT's own trajectory (expected.npz) and the optimizer state
    matches ORT's expected_checkpoint within 1e-4 relative; Module + Optimizer take one more step."""
    from onnxruntime.training.api import CheckpointState, Module, Optimizer

    exp = np.load(os.path.join(case_dir, "expected.npz"))
    meta = json.load(open(os.path.join(case_dir, "meta.json")))
    state = CheckpointState.load_checkpoint(ckpt)
    worst = 0.0
    failures = []
    for name, p in state.parameters:
        want = exp["param:" + name]
        d = float(np.max(np.abs(np.array(p.data) - want)) / max(np.max(np.abs(want)), 1e-30))
        worst = max(worst, d)
        if d > 1e-4 and name not in ("conv.bias", "bn.running_mean"):
            failures.append(f"{name} differs by {d:.3g} relative")
    ours, theirs = read_momenta(ckpt), read_momenta(os.path.join(case_dir, "expected_checkpoint"))
    if sorted(ours) != sorted(theirs):
        failures.append(f"optimizer state keys {sorted(ours)} != {sorted(theirs)}")
    worst_m = 0.0
    for k in theirs:
        if k in ours and not k.endswith(":conv.bias"):
            d = float(np.max(np.abs(ours[k] - theirs[k])) / max(np.max(np.abs(theirs[k])), 1e-30))
            worst_m = max(worst_m, d)
            if d > 1e-3:
                failures.append(f"optimizer state {k} differs by {d:.3g} relative")
    module = Module(os.path.join(case_dir, "training_model.onnx"), state)
    opt = Optimizer(os.path.join(case_dir, "optimizer_model.onnx"), module)
    opt.set_learning_rate(meta["lr"])
    module.train()
    data = np.load(os.path.join(case_dir, "data.npz"))
    batch = [data[n][: meta["batch_rows"][n]] for n in meta["user_inputs"]]
    loss = float(module(*batch))
    opt.step()
    if not np.isfinite(loss):
        failures.append(f"next loss {loss}")
    if failures:
        print("FAIL", ckpt, "; ".join(failures))
        sys.exit(1)
    print(f"OK {ckpt}: {len(list(state.parameters))} parameters within {worst:.3g} relative of ORT's trajectory, "
          f"optimizer state within {worst_m:.3g}; ORT continued with loss {loss:.6f}")


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "check-trained":
        check_trained(sys.argv[2], sys.argv[3])
        sys.exit(0)
    if len(sys.argv) >= 3 and sys.argv[1] == "generate":
        generate(sys.argv[2])
    elif len(sys.argv) == 6 and sys.argv[1] == "check":
        check(*sys.argv[2:])
    else:
        print(__doc__)
        sys.exit(2)
