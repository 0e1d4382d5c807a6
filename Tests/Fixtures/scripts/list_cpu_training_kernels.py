#!/usr/bin/env python3
"""The ops onnxruntime-training 1.19.2 registers for the CPU in its training build, each confirmed on the
installed 1.19.2 binary. Writes Tests/Fixtures/onnxruntime_cpu_training_kernels.tsv, from which
Tests/OnnxTrainTests/TrainingOps/TrainingKernelListTests.swift generates docs/TRAINING_KERNELS.md
with onnx-train's registry (the test fails when the committed doc is stale).

The op list is orttraining/training_ops/cpu/cpu_training_kernels.cc (RegisterCpuTrainingKernels,
ENABLE_TRAINING and ENABLE_TRAINING_TORCH_INTEROP on, USE_MPI off as in the pip build), then a few
ops other training builds register only for CUDA/ROCm, to record that 1.19.2's CPU provider lacks them.
Each op is probed: a session is created (not run) for a one-node model; a committed single-node case
under training_ops/ serves as the model when there is one, else a minimal typed signature below.
"registered" = the session builds; "no CPU kernel" = onnxruntime reports NOT_IMPLEMENTED.

Run: /work/venv/bin/python Tests/Fixtures/scripts/list_cpu_training_kernels.py
"""
import os

import onnx
import onnxruntime as ort
from onnx import TensorProto as TP
from onnx import helper as h

assert ort.__version__ == "1.19.2", ort.__version__
HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.normpath(os.path.join(HERE, ".."))
CASES = os.path.join(FIXTURES, "training_ops")
MS = "com.microsoft"
F, I64, B, S = TP.FLOAT, TP.INT64, TP.BOOL, TP.STRING

# (op, domain, since, probe signature when no case covers it: (input types, output count, attributes)),
# in cpu_training_kernels.cc's order.
REGISTERED = [
    ("SGDOptimizer", MS, 1, None), ("SGDOptimizerV2", MS, 1, None), ("AdamOptimizer", MS, 1, None),
    ("AdamWOptimizer", MS, 1, None), ("InPlaceAccumulator", MS, 1, None), ("InPlaceAccumulatorV2", MS, 1, None),
    ("ZeroGradient", MS, 1, None), ("Group", MS, 1, None), ("PassThrough", MS, 1, None),
    ("BroadcastGradientArgs", MS, 1, None), ("ReduceSumTraining", MS, 1, None), ("SplitTraining", MS, 1, None),
    ("ConcatTraining", MS, 1, None), ("BatchNormInternal", MS, 1, None),
    ("SoftmaxCrossEntropy", MS, 1, None), ("SoftmaxCrossEntropyGrad", MS, 1, None),
    ("SparseSoftmaxCrossEntropy", "", 9, None), ("SparseSoftmaxCrossEntropyGrad", "", 9, None),
    ("SoftmaxCrossEntropyLoss", "", 12, ([F, I64], 2, {})), ("SoftmaxCrossEntropyLossGrad", MS, 1, None),
    ("SoftmaxCrossEntropyLossInternal", MS, 1, None), ("SoftmaxCrossEntropyLossInternalGrad", MS, 1, None),
    ("ConvGrad", MS, 1, None), ("ReluGrad", MS, 1, None), ("SoftmaxGrad", MS, 1, None), ("LogSoftmaxGrad", MS, 1, None),
    ("SoftmaxGrad_13", MS, 1, None), ("LogSoftmaxGrad_13", MS, 1, None), ("AveragePoolGrad", "", 9, None),
    ("MaxPoolGrad", "", 9, None), ("GatherGrad", MS, 1, None), ("GatherElementsGrad", MS, 1, None), ("GeluGrad", MS, 1, None),
    ("SigmoidGrad", MS, 1, None), ("TanhGrad", MS, 1, None), ("QuickGeluGrad", MS, 1, None), ("LeakyReluGrad", MS, 1, None),
    ("DropoutGrad", MS, 1, None), ("LayerNormalizationGrad", MS, 1, None), ("SimplifiedLayerNormalizationGrad", MS, 1, None),
    ("InvertibleLayerNormalizationGrad", MS, 1, None), ("SliceGrad", MS, 1, None), ("FastGeluGrad", MS, 1, None),
    ("BiasGeluGrad_dX", MS, 1, None), ("BiasFastGeluGrad_dX", MS, 1, None), ("GatherNDGrad", MS, 1, None),
    ("BatchNormalizationGrad", MS, 1, None), ("Scale", MS, 1, None), ("ReduceAllL2", MS, 1, None),
    ("InplaceClipGradNorm", MS, 1, None), ("FakeQuant", MS, 1, None), ("FakeQuantGrad", MS, 1, None),
    ("LSTMTraining", MS, 1, None), ("LSTMGrad", MS, 1, None), ("GRUTraining", MS, 1, None), ("GRUGrad", MS, 1, None),
    ("ShrunkenGather", MS, 1, None),
    ("RecordEvent", MS, 1, None), ("WaitEvent", MS, 1, None), ("YieldOp", MS, 1, ([F], 1, {"full_shape_outputs": [0]})),
    ("SummaryScalar", MS, 1, ([F], 1, {"tags": ["a"]})), ("SummaryHistogram", MS, 1, ([F], 1, {"tag": "a"})),
    ("SummaryMerge", MS, 1, ([S], 1, {})), ("SummaryText", MS, 1, ([S], 1, {"tag": "a"})),
    ("GistBinarizeEncoder", MS, 1, ([F], 1, {})), ("GistBinarizeDecoder", MS, 1, ([B], 1, {"to": F})),
    ("PythonOp", MS, 1, ([F], 2, {"func_name": "f", "input_convention": "d", "input_tensor_types": [F], "input_tensor_ranks": [1],
                                  "output_tensor_types": [F], "output_tensor_ranks": [1]})),
    ("PythonOpGrad", MS, 1, ([I64, F], 1, {"func_name": "f", "output_convention": "d", "output_tensor_types": [F],
                                         "output_tensor_ranks": [1], "output_tensor_requires_grads": [1],
                                         "input_tensor_types": [F], "input_tensor_ranks": [1]})),
]
# Training ops other builds run (CUDA/ROCm), confirmed absent from 1.19.2's CPU provider.
NOT_ON_CPU = [
    ("ConvTransposeGrad", MS, 1, ([F, F, F], 3, {})), ("ResizeGrad", MS, 1, ([F, F], 1, {})),
    ("PadAndUnflatten", MS, 1, ([F, I64, I64], 1, {})), ("FlattenAndUnpad", MS, 1, ([F, I64], 2, {})),
    ("BitmaskDropout", MS, 1, ([F], 2, {})), ("BitmaskDropoutGrad", MS, 1, ([F, TP.UINT32], 1, {})),
    ("ScaledSum", MS, 1, ([F, F], 1, {"scale_0": 1.0, "scale_1": 1.0})), ("BatchScale", MS, 1, ([F], 2, {"scale_0": 1.0, "scale_1": 1.0})),
    ("MegatronF", MS, 1, ([F], 1, {})), ("MegatronG", MS, 1, ([F], 1, {})), ("TorchEmbedding", MS, 1, ([F, I64], 1, {})),
]


def case_models():
    """op type -> the first committed case (sorted) whose model holds it."""
    found = {}
    for name in sorted(os.listdir(CASES)):
        if "pytorch" in name:  # PyTorch-reference cases use what onnxruntime refuses (layout, directions)
            continue
        model = onnx.load(os.path.join(CASES, name, "model.onnx"))
        for node in model.graph.node:
            found.setdefault((node.domain if node.domain != "ai.onnx" else "", node.op_type), name)
    return found


def probe_model(op, domain, since, signature):
    types, n_out, attrs = signature
    names = [f"x{i}" for i in range(len(types))]
    outs = [f"y{i}" for i in range(n_out)]
    g = h.make_graph([h.make_node(op, names, outs, domain=domain, **attrs)], op,
                     [h.make_tensor_value_info(n, t, None) for n, t in zip(names, types)],
                     [h.make_empty_tensor_value_info(o) for o in outs])
    opset = max(17, since) if domain == "" else 17
    m = h.make_model(g, opset_imports=[h.make_opsetid("", opset), h.make_opsetid(MS, 1)])
    m.ir_version = 8
    return m.SerializeToString()


def status(model_bytes):
    try:
        ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
        return "registered"
    except Exception as e:  # noqa: BLE001 - the message is the evidence
        text = str(e)
        if "NOT_IMPLEMENTED" in text or "Could not find an implementation" in text:
            return "no CPU kernel"
        raise RuntimeError(f"probe failed: {text.splitlines()[0]}") from None


def main():
    ort.set_default_logger_severity(4)
    cases = case_models()
    rows = []
    for group, ops in [("registered", REGISTERED), ("not on CPU", NOT_ON_CPU)]:
        for op, domain, since, signature in ops:
            case = cases.get((domain, op))
            if case is not None:
                with open(os.path.join(CASES, case, "model.onnx"), "rb") as f:
                    result, how = status(f.read()), f"case {case}"
            else:
                result, how = status(probe_model(op, domain, since, signature)), "probe"
            assert result == group or (group == "not on CPU" and result == "no CPU kernel"), (op, result)
            rows.append((op, domain or "ai.onnx", str(since), result, how))
    path = os.path.join(FIXTURES, "onnxruntime_cpu_training_kernels.tsv")
    with open(path, "w") as f:
        f.write("# op\tdomain\tsince\tonnxruntime 1.19.2 CPU\tevidence (written by list_cpu_training_kernels.py)\n")
        for r in rows:
            f.write("\t".join(r) + "\n")
    print(f"wrote {len(rows)} ops to {path}")


if __name__ == "__main__":
    main()
