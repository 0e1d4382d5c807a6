"""Check what an `onnx-train run` left, with onnxruntime as the judge (issue 5's "done when").

    python Examples/check_run.py Examples/digits runs/digits [--min-accuracy 0.95] [--onnx-train PATH]

(packages: pip install -r Examples/requirements.txt)

For the example folder EXAMPLE and the run folder RUN:
  * RUN/checkpoint must load in onnxruntime-training. Its parameters then go through the example's
    eval graph on EXAMPLE/test.npz, and the script prints the test loss and accuracy (and fails
    below --min-accuracy). Artifact folders use Module(training_model, state, eval_model).eval();
    a gradient graph runs in an InferenceSession with the checkpoint's parameters as feeds.
  * RUN/params.safetensors, if present, must hold the same tensors as the checkpoint.
  * RUN/model.onnx, if present, runs in onnxruntime on the test inputs, and its predictions must
    agree with the eval graph's. With --onnx-train BINARY, `onnx-train infer` runs the same model on
    the same inputs, and its outputs must match onnxruntime's (atol 1e-4, same argmax). BINARY
    defaults to the release build, .build/release/onnx-train (`make release`), when it exists;
    --onnx-train none skips that check.
Exit status 0 when every check passed, 1 otherwise; one line per check.
"""

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def accuracy(logits, labels):
    return float((np.asarray(logits).argmax(axis=-1) == labels).mean())


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("example", type=Path)
    parser.add_argument("run", type=Path)
    parser.add_argument("--min-accuracy", type=float, default=0.0)
    release = HERE.parent / ".build" / "release" / "onnx-train"
    parser.add_argument("--onnx-train", default=str(release) if release.exists() else None,
                        help="an onnx-train binary: also compare `onnx-train infer` on model.onnx (default: .build/release/onnx-train)")
    args = parser.parse_args()
    if args.onnx_train == "none":
        args.onnx_train = None

    import example_export as ex
    import onnxruntime as ort
    from onnxruntime.training.api import CheckpointState, Module

    ex.quiet()
    failures = []

    def check(ok, message):
        print(("ok    " if ok else "FAIL  ") + message)
        if not ok:
            failures.append(message)

    test_path = args.example / "test.npz"
    test = dict(np.load(test_path))
    state = CheckpointState.load_checkpoint(str(args.run / "checkpoint"))
    params = {name: np.asarray(p.data) for name, p in state.parameters}
    check(True, f"{args.run / 'checkpoint'} loads in onnxruntime-training ({len(params)} parameters)")

    gradient_graph = args.example / "gradient_graph.onnx"
    if gradient_graph.exists():
        session = ort.InferenceSession(str(gradient_graph), providers=["CPUExecutionProvider"])
        logits, loss = session.run(["output", "loss"], {**test, **params})
        loss, acc = float(loss), accuracy(logits, test["labels"])
        eval_logits = logits
    else:
        module = Module(str(args.example / "training_model.onnx"), state, str(args.example / "eval_model.onnx"))
        names = module.input_names()
        unit = test["labels"].shape[0] // test["input"].shape[0]
        loss, acc = ex.evaluate(module, test, {"input": 1, "labels": unit}, names, 256)
        module.eval()
        eval_logits = np.asarray(module(test["input"], test["labels"])[1])
    check(acc >= args.min_accuracy, f"test loss {loss:.4f}, test accuracy {acc:.4f} (minimum {args.min_accuracy})")

    safetensors_path = args.run / "params.safetensors"
    if safetensors_path.exists():
        from safetensors.numpy import load_file

        saved = load_file(str(safetensors_path))
        same = sorted(saved) == sorted(params) and all(np.array_equal(saved[n], params[n]) for n in params)
        check(same, f"{safetensors_path} holds the checkpoint's {len(params)} tensors")

    model_path = args.run / "model.onnx"
    if model_path.exists():
        session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
        feeds = {i.name: test[i.name] for i in session.get_inputs()}
        outputs = session.run(None, feeds)
        logits = next(o for o in outputs if o.shape == eval_logits.shape)
        agree = float((logits.argmax(-1) == eval_logits.argmax(-1)).mean())
        check(agree == 1.0 and np.allclose(logits, eval_logits, atol=1e-4),
              f"{model_path} in onnxruntime agrees with the eval graph (argmax agreement {agree:.4f}, "
              f"max |diff| {float(np.abs(logits - eval_logits).max()):.2e})")
        if args.onnx_train:
            with tempfile.TemporaryDirectory() as tmp:
                np.savez(Path(tmp) / "feeds.npz", **feeds)
                done = subprocess.run([args.onnx_train, "infer", str(model_path), "--inputs", str(Path(tmp) / "feeds.npz"),
                                       "--output", str(Path(tmp) / "out.npz")], capture_output=True, text=True)
                if done.returncode != 0:
                    check(False, f"onnx-train infer failed: {done.stderr.strip()[-500:]}")
                else:
                    ours = dict(np.load(Path(tmp) / "out.npz"))
                    for info, ref in zip(session.get_outputs(), outputs):
                        got = ours.get(info.name)
                        ok = got is not None and got.shape == ref.shape and np.allclose(got, ref, atol=1e-4)
                        same_argmax = ok and bool((got.argmax(-1) == ref.argmax(-1)).all())
                        diff = float(np.abs(got - ref).max()) if ok else float("nan")
                        check(ok and same_argmax, f"onnx-train infer output '{info.name}' matches onnxruntime "
                                                  f"(max |diff| {diff:.2e}, same argmax: {same_argmax})")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
