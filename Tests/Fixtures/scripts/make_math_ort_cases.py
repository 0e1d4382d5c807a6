#!/usr/bin/env python3
"""Writes one-node cases for the math ops (elementwise, activations, reductions, softmax family,
TopK, CumSum, Cast) with onnxruntime's outputs, to check onnx-train against onnxruntime beyond
the ONNX suite: every element type, broadcasting patterns, axes and attribute combinations.

Pinned reference: onnxruntime-training==1.19.2, onnx==1.16.2, numpy<2 (run with /work/venv/bin/python).
Layout per case (ONNX backend-test style) under Tests/Fixtures/math_ort/<case>/:
  model.onnx, test_data_set_0/input_N.pb, output_N.pb.
Combinations onnxruntime rejects (types it has no kernel for) are skipped and listed at the end.

Usage: make_math_ort_cases.py [OUTPUT_DIR]
"""
import itertools
import os
import shutil
import sys

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto as TP
from onnx import helper as h
from onnx import numpy_helper

assert ort.__version__ == "1.19.2", ort.__version__
assert onnx.__version__ == "1.16.2", onnx.__version__

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.normpath(sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "..", "math_ort"))
rng = np.random.default_rng(20261121)
written, skipped = [], []


def elem(dt):
    return h.np_dtype_to_tensor_dtype(np.dtype(dt))


def case(name, op, inputs, attrs=None, opset=19, outputs=1, output_types=None):
    """Runs one node in onnxruntime and writes the case, or records why it was skipped."""
    ins = [h.make_tensor_value_info(f"x{i}", elem(v.dtype), list(v.shape)) for i, v in enumerate(inputs)]
    types = output_types or [elem(inputs[0].dtype)] * outputs
    outs = [h.make_tensor_value_info(f"y{i}", t, None) for i, t in enumerate(types)]
    node = h.make_node(op, [f"x{i}" for i in range(len(inputs))], [f"y{i}" for i in range(outputs)], **(attrs or {}))
    model = h.make_model(h.make_graph([node], name, ins, outs), opset_imports=[h.make_opsetid("", opset)])
    model.ir_version = 9
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    try:
        session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        results = session.run(None, {f"x{i}": v for i, v in enumerate(inputs)})
    except Exception as e:  # onnxruntime has no kernel for this type combination
        skipped.append(f"{name}: {str(e).splitlines()[0][:100]}")
        return
    folder = os.path.join(OUT, name)
    os.makedirs(os.path.join(folder, "test_data_set_0"))
    onnx.save(model, os.path.join(folder, "model.onnx"))
    for kind, values in (("input", inputs), ("output", results)):
        for i, v in enumerate(values):
            tensor = numpy_helper.from_array(np.asarray(v), f"{'x' if kind == 'input' else 'y'}{i}")
            with open(os.path.join(folder, "test_data_set_0", f"{kind}_{i}.pb"), "wb") as f:
                f.write(tensor.SerializeToString())
    written.append(name)


def rand(shape, dt):
    if np.issubdtype(dt, np.floating):
        return (rng.standard_normal(shape) * 3).astype(dt)
    if np.issubdtype(dt, np.unsignedinteger):
        return rng.integers(0, 50, shape).astype(dt)
    return rng.integers(-50, 50, shape).astype(dt)


def main():
    shutil.rmtree(OUT, ignore_errors=True)
    os.makedirs(OUT)
    is_float = lambda dt: np.issubdtype(dt, np.floating)

    # Binary ops: row, column, both-sided and scalar broadcasting, per element type.
    shapes = [((2, 3, 4), (4,)), ((2, 1, 4), (3, 1)), ((3, 4), ()), ((2, 3, 1, 5), (3, 4, 1))]
    types = [np.float32, np.float64, np.float16, np.int32, np.int64, np.int8, np.uint8]
    comparisons = ["Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual"]
    for op in ["Add", "Sub", "Mul", "Div", "Max", "Min", "Mod", "Pow", "PRelu"] + comparisons:
        for (sa, sb), dt in itertools.product(shapes, types):
            a, b = rand(sa, dt), rand(sb, dt)
            if op in ("Div", "Mod"):
                b = np.where(b == 0, 1, b).astype(dt)  # integer division by zero is undefined
            if op == "Pow":
                a, b = (np.abs(a), b) if is_float(dt) else (np.abs(a) % 5, np.abs(b) % 4)
            attrs = {"fmod": 1} if op == "Mod" and is_float(dt) else None  # onnxruntime: fmod=0 is integer-only
            out = [TP.BOOL] if op in comparisons else None
            case(f"{op}_{np.dtype(dt).name}_{len(sa)}x{len(sb)}", op, [a, b], attrs, 16 if op == "PRelu" else 19, output_types=out)

    # Unary ops and activations.
    opsets = {"Celu": 12, "Gelu": 20, "Mish": 18, "HardSwish": 14, "Shrink": 9}
    unary = ["Abs", "Neg", "Sign", "Relu", "Exp", "Log", "Sqrt", "Sigmoid", "Tanh", "Softplus", "Softsign", "Erf",
             "Floor", "Ceil", "Round", "Reciprocal", "Sin", "Cos", "Atan", "Elu", "Selu", "HardSigmoid",
             "HardSwish", "Mish", "Celu", "LeakyRelu", "ThresholdedRelu", "Shrink", "Gelu"]
    for op, dt in itertools.product(unary, [np.float32, np.float64, np.float16, np.int32, np.int8]):
        x = rand((3, 5), dt)
        if op in ("Log", "Sqrt") and is_float(dt):
            x = (np.abs(x) + 0.5).astype(dt)
        case(f"{op}_{np.dtype(dt).name}", op, [x], None, opsets.get(op, 19))

    # Reductions (axes input, opset 18) over several axis sets, with and without keepdims.
    reductions = ["ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2",
                  "ReduceLogSumExp", "ReduceSumSquare"]
    for op, dt in itertools.product(reductions, [np.float32, np.float16, np.int32, np.int64]):
        for axes, keep in [([0], 1), ([1, 3], 0), ([-1], 0), ([0, 2], 1), ([], 0)]:
            x = rand((2, 3, 4, 2), dt)
            if op == "ReduceProd":
                x = (x / 3).astype(dt) if is_float(dt) else (x % 3).astype(dt)
            label = "_".join(str(a) for a in axes) or "all"
            case(f"{op}_{np.dtype(dt).name}_{label}_{keep}", op, [x, np.array(axes, np.int64)], {"keepdims": keep}, 18)

    # ArgMax/ArgMin with ties (small value ranges) and select_last_index.
    for op, dt, axis, last in itertools.product(["ArgMax", "ArgMin"], [np.float32, np.int32, np.uint8], [0, -1], [0, 1]):
        x = (rand((3, 4, 5), dt) % 4).astype(dt)
        case(f"{op}_{np.dtype(dt).name}_{axis}_{last}", op, [x], {"axis": axis, "select_last_index": last, "keepdims": last},
             13, output_types=[TP.INT64])

    # Softmax family before (2-D coercion) and after opset 13.
    for op, dt, axis, opset in itertools.product(["Softmax", "LogSoftmax", "Hardmax"], [np.float32, np.float16], [0, 1, -1], [11, 13]):
        case(f"{op}_{np.dtype(dt).name}_{axis}_{opset}", op, [rand((2, 3, 4), dt)], {"axis": axis}, opset)

    for dt, axis, exclusive, reverse in itertools.product([np.float32, np.int64], [0, 1], [0, 1], [0, 1]):
        case(f"CumSum_{np.dtype(dt).name}_{axis}_{exclusive}{reverse}", "CumSum", [rand((3, 4), dt), np.array(axis, np.int64)],
             {"exclusive": exclusive, "reverse": reverse}, 14)
    for dt, axis, largest in itertools.product([np.float32, np.int64], [0, -1], [0, 1]):
        x = (np.round(rand((4, 6), dt)) % 5).astype(dt)  # ties, to check that lower indices come first
        case(f"TopK_{np.dtype(dt).name}_{axis}_{largest}", "TopK", [x, np.array([3], np.int64)], {"axis": axis, "largest": largest},
             11, outputs=2, output_types=[elem(dt), TP.INT64])

    # Cast between every pair of standard types, values spread past the narrow types' ranges.
    standard = [np.float32, np.float64, np.float16, np.int8, np.uint8, np.int16, np.int32, np.int64, np.uint32, np.uint64, np.bool_]
    for s, d in itertools.product(standard, standard):
        x = rand((12,), np.float32) * 20
        x = (x > 0) if s == np.bool_ else x.astype(s)
        case(f"Cast_{np.dtype(s).name}_{np.dtype(d).name}", "Cast", [x], {"to": elem(d)}, 19, output_types=[elem(d)])

    for dt in [np.float32, np.int32, np.float16]:
        name = np.dtype(dt).name
        case(f"Clip_{name}", "Clip", [rand((3, 4), dt), np.array(-2, dt), np.array(3, dt)], None, 13)
        case(f"Where_{name}", "Where", [rng.random((3, 1)) > 0.5, rand((1, 4), dt), rand((3, 4), dt)], None, 16)
        case(f"Sum3_{name}", "Sum", [rand((3, 4), dt), rand((4,), dt), rand((3, 1), dt)], None, 13)
        case(f"Mean3_{name}", "Mean", [rand((3, 4), dt), rand((4,), dt), rand((3, 1), dt)], None, 13)

    print(f"wrote {len(written)} cases to {OUT}; skipped {len(skipped)} that onnxruntime does not run:")
    for line in skipped:
        print("  " + line)


if __name__ == "__main__":
    main()
