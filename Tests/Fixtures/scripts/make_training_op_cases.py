#!/usr/bin/env python3
"""Writes one-node test cases for onnxruntime's training ops, as onnxruntime computes them.

Pinned reference: onnxruntime-training==1.19.2, onnx==1.16.2, numpy<2 (run with /work/venv/bin/python).
Layout per case (ONNX backend-test style) under Tests/Fixtures/training_ops/<case>/:
  model.onnx, test_data_set_0/input_N.pb (graph input order), output_N.pb (graph output order),
  and mutated_N.pb for inputs that onnxruntime updates in place (the input buffer after the run).

In-place tensor inputs are observed directly: onnxruntime's CPU provider runs on the numpy buffer
we feed, so the array after `run` is the post-run buffer. Sequence inputs are copied by the Python
binding, so for them the post-run value is read from the op's aliasing output (which is the same
TensorSeq), and those cases request that output.

Usage: make_training_op_cases.py [OUTPUT_DIR] [--only SUBSTRING]
"""
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
OUT = os.path.normpath(os.path.join(HERE, "..", "training_ops"))
MS = "com.microsoft"
rng = np.random.default_rng(20241121)
written = []
ONLY = None


def f32(*shape, lo=-2.0, hi=2.0):
    return rng.uniform(lo, hi, size=shape).astype(np.float32)


def i64(values):
    return np.array(values, dtype=np.int64)


class Seq(list):
    """A list of numpy arrays fed as seq(tensor(float))."""


def case(name, op, inputs, outputs, attrs=None, domain=MS, opset=17, mutated=None, output_types=None,
         run_attrs=None, extra_nodes=None, reference=None):
    """Builds a one-node model, runs it in onnxruntime and writes the case.

    inputs: list of (name, value) in node order; value None means an omitted optional input ("").
    outputs: node output names; "" marks an omitted optional output. All named outputs are graph outputs.
    mutated: {input name: None (observe the fed tensor) | output name (sequence alias)}.
    output_types: {output name: ValueInfoProto} for outputs onnxruntime cannot type by itself.
    run_attrs: attributes for the model onnxruntime runs, when they differ from the saved model
      (used where onnxruntime is knowingly wrong, e.g. ConvGrad's ignored auto_pad).
    reference: a function of the feeds returning the expected outputs, for the few cases where
      onnxruntime 1.19.2 is wrong and PyTorch gives the reference instead (3-D AveragePoolGrad).
    """
    if ONLY and ONLY not in name:
        return
    attrs = attrs or {}
    mutated = mutated or {}
    output_types = output_types or {}
    graph_inputs, feeds, node_inputs = [], {}, []
    for n, v in inputs:
        if v is None:
            node_inputs.append("")
            continue
        node_inputs.append(n)
        if isinstance(v, Seq):
            graph_inputs.append(h.make_tensor_sequence_value_info(n, TP.FLOAT, None))
            feeds[n] = [a.copy() for a in v]
        else:
            graph_inputs.append(h.make_tensor_value_info(n, h.np_dtype_to_tensor_dtype(v.dtype), v.shape))
            feeds[n] = v.copy()
    named_outputs = [o for o in outputs if o]
    graph_outputs = [output_types.get(o) or h.make_empty_tensor_value_info(o) for o in named_outputs]
    opsets = [h.make_opsetid("", opset), h.make_opsetid(MS, 1)]

    def build(a):
        node = h.make_node(op, node_inputs, outputs, domain=domain, **a)
        g = h.make_graph([node] + (extra_nodes or []), name, graph_inputs, graph_outputs)
        m = h.make_model(g, opset_imports=opsets, producer_name="make_training_op_cases.py")
        m.ir_version = 8
        return m

    model = build(attrs)
    run_model = build(run_attrs) if run_attrs is not None else model
    if reference is not None:
        results = reference(feeds)
    else:
        sess = ort.InferenceSession(run_model.SerializeToString(), providers=["CPUExecutionProvider"])
        results = sess.run(named_outputs, feeds)

    d = os.path.join(OUT, name)
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(os.path.join(d, "test_data_set_0"))
    onnx.save(model, os.path.join(d, "model.onnx"))
    ds = os.path.join(d, "test_data_set_0")
    present = [(n, v) for n, v in inputs if v is not None]
    for i, (n, v) in enumerate(present):
        write_value(os.path.join(ds, f"input_{i}.pb"), n, v)
    for i, (n, v) in enumerate(zip(named_outputs, results)):
        write_value(os.path.join(ds, f"output_{i}.pb"), n, v)
    for i, (n, v) in enumerate(present):
        if n not in mutated:
            continue
        source = mutated[n]
        after = feeds[n] if source is None else results[named_outputs.index(source)]
        write_value(os.path.join(ds, f"mutated_{i}.pb"), n, Seq(after) if isinstance(v, Seq) else after)
    written.append(name)


def write_value(path, name, v):
    if isinstance(v, list):
        proto = numpy_helper.from_list([np.asarray(a) for a in v], name)
    else:
        proto = numpy_helper.from_array(np.asarray(v), name)
    with open(path, "wb") as f:
        f.write(proto.SerializeToString())


def typed(name, elem, shape):
    return h.make_tensor_value_info(name, elem, shape)


def seq_out(name):
    return h.make_tensor_sequence_value_info(name, TP.FLOAT, None)


# ---------------------------------------------------------------- activations and their gradients
def activations():
    x = f32(3, 4)
    x[0, 0] = 0.0  # ReluGrad at exactly 0 gives 0
    dy = f32(3, 4)
    case("ReluGrad", "ReluGrad", [("dY", dy), ("X", x)], ["dX"])
    y = (1 / (1 + np.exp(-x))).astype(np.float32)
    case("SigmoidGrad", "SigmoidGrad", [("dY", dy), ("Y", y)], ["dX"])
    case("TanhGrad", "TanhGrad", [("dY", dy), ("Y", np.tanh(x).astype(np.float32))], ["dX"])
    case("GeluGrad", "GeluGrad", [("dY", dy), ("X", x)], ["dX"])
    case("FastGeluGrad", "FastGeluGrad", [("dY", dy), ("X", x)], ["dX"])
    case("QuickGeluGrad", "QuickGeluGrad", [("dY", dy), ("X", x)], ["dX"])
    case("QuickGeluGrad_alpha", "QuickGeluGrad", [("dY", dy), ("X", x)], ["dX"], {"alpha": 1.3})
    case("LeakyReluGrad", "LeakyReluGrad", [("dY", dy), ("X", x)], ["dX"])
    case("LeakyReluGrad_alpha", "LeakyReluGrad", [("dY", dy), ("X", x)], ["dX"], {"alpha": 0.2})
    b = f32(4)
    x3 = f32(2, 3, 4)
    dy3 = f32(2, 3, 4)
    case("BiasGelu", "BiasGelu", [("A", x3), ("B", b)], ["C"])
    case("BiasGeluGrad_dX", "BiasGeluGrad_dX", [("dY", dy3), ("X", x3), ("B", b)], ["dX"])
    case("BiasFastGeluGrad_dX", "BiasFastGeluGrad_dX", [("dY", dy3), ("X", x3), ("B", b)], ["dX"])
    case("FastGelu", "FastGelu", [("X", x3)], ["Y"])
    case("FastGelu_bias", "FastGelu", [("X", x3), ("bias", b)], ["Y"])
    case("QuickGelu", "QuickGelu", [("X", x3)], ["Y"])
    case("QuickGelu_alpha", "QuickGelu", [("X", x3)], ["Y"], {"alpha": 1.1})
    case("Gelu", "Gelu", [("X", x3)], ["Y"])


# ---------------------------------------------------------------- softmax family
def softmax_family():
    x = f32(2, 3, 4)
    dy = f32(2, 3, 4)

    def softmax(a, axes):
        e = np.exp(a - a.max(axis=axes, keepdims=True))
        return (e / e.sum(axis=axes, keepdims=True)).astype(np.float32)

    def log_softmax(a, axes):
        return np.log(softmax(a, axes)).astype(np.float32)

    case("SoftmaxGrad", "SoftmaxGrad", [("dY", dy), ("Y", softmax(x, (1, 2)))], ["dX"])
    case("SoftmaxGrad_axis2", "SoftmaxGrad", [("dY", dy), ("Y", softmax(x, (2,)))], ["dX"], {"axis": 2})
    case("SoftmaxGrad_axis0", "SoftmaxGrad", [("dY", dy), ("Y", softmax(x, (0, 1, 2)))], ["dX"], {"axis": 0})
    case("SoftmaxGrad_13", "SoftmaxGrad_13", [("dY", dy), ("Y", softmax(x, (2,)))], ["dX"])
    case("SoftmaxGrad_13_axis1", "SoftmaxGrad_13", [("dY", dy), ("Y", softmax(x, (1,)))], ["dX"], {"axis": 1})
    case("LogSoftmaxGrad", "LogSoftmaxGrad", [("dY", dy), ("X", log_softmax(x, (1, 2)))], ["dX"])
    case("LogSoftmaxGrad_axisneg1", "LogSoftmaxGrad", [("dY", dy), ("X", log_softmax(x, (2,)))], ["dX"], {"axis": -1})
    case("LogSoftmaxGrad_13", "LogSoftmaxGrad_13", [("dY", dy), ("X", log_softmax(x, (2,)))], ["dX"])
    case("LogSoftmaxGrad_13_axis0", "LogSoftmaxGrad_13", [("dY", dy), ("X", log_softmax(x, (0,)))], ["dX"], {"axis": 0})


# ---------------------------------------------------------------- gather family
def gather_family():
    idx = i64([[0, 2], [2, -1], [1, 0]])  # duplicates and a negative index accumulate
    case("GatherGrad_axis0", "GatherGrad", [("shape", i64([3, 4])), ("indices", idx), ("dY", f32(3, 2, 4))], ["dX"])
    case("GatherGrad_axis1_int32", "GatherGrad",
         [("shape", i64([2, 3, 2])), ("indices", np.array([2, 0, 2, -3], np.int32)), ("dY", f32(2, 4, 2))], ["dX"],
         {"axis": 1})
    case("GatherGrad_scalar_index", "GatherGrad",
         [("shape", i64([4, 3])), ("indices", np.array(2, np.int64)), ("dY", f32(3))], ["dX"])
    ge_idx = i64([[1, 0, 2], [0, -1, 1]])
    case("GatherElementsGrad_axis0", "GatherElementsGrad",
         [("dY", f32(2, 3)), ("shape", i64([3, 3])), ("indices", ge_idx)], ["dX"])
    case("GatherElementsGrad_axisneg1", "GatherElementsGrad",
         [("dY", f32(2, 3)), ("shape", i64([2, 4])), ("indices", np.array([[3, 3, 0], [1, -4, 2]], np.int32))], ["dX"],
         {"axis": -1})
    case("GatherNDGrad", "GatherNDGrad",
         [("shape", i64([3, 2, 2])), ("indices", i64([[0, 1], [2, 0], [0, 1]])), ("update", f32(3, 2))], ["dX"])
    case("GatherNDGrad_batch1", "GatherNDGrad",
         [("shape", i64([2, 3, 2])), ("indices", i64([[[1], [1]], [[0], [2]]])), ("update", f32(2, 2, 2))], ["dX"],
         {"batch_dims": 1})


# ---------------------------------------------------------------- losses
def log_softmax_axis(a, axis):
    m = a.max(axis=axis, keepdims=True)
    return (a - m - np.log(np.exp(a - m).sum(axis=axis, keepdims=True))).astype(np.float32)


def losses():
    n, c = 4, 5
    logits = f32(n, c)
    lp = log_softmax_axis(logits, 1)
    label = i64([1, 0, 4, 1])
    w = f32(c, lo=0.2, hi=1.5)
    scalar = np.array(0.7, np.float32)
    G = "SoftmaxCrossEntropyLossGrad"
    case(G + "_mean", G, [("dY", scalar), ("log_prob", lp), ("label", label)], ["d_logits"])
    case(G + "_sum", G, [("dY", scalar), ("log_prob", lp), ("label", label)], ["d_logits"], {"reduction": "sum"})
    case(G + "_none", G, [("dY", f32(n)), ("log_prob", lp), ("label", label)], ["d_logits"], {"reduction": "none"})
    case(G + "_mean_weight", G, [("dY", scalar), ("log_prob", lp), ("label", label), ("weight", w)], ["d_logits"])
    case(G + "_mean_ignore", G, [("dY", scalar), ("log_prob", lp), ("label", label), ("weight", w)], ["d_logits"],
         {"ignore_index": 1})
    case(G + "_label_minus1_no_attr", G, [("dY", scalar), ("log_prob", lp), ("label", i64([1, -1, 4, 1]))],
         ["d_logits"])
    lp3 = log_softmax_axis(f32(2, c, 3), 1)
    label3 = i64([[0, 4, 2], [2, 2, 1]])
    case(G + "_spatial_mean_ignore", G, [("dY", scalar), ("log_prob", lp3), ("label", label3)], ["d_logits"],
         {"ignore_index": 2})
    case(G + "_spatial_none", G, [("dY", f32(2, 3)), ("log_prob", lp3), ("label", label3), ("weight", w)],
         ["d_logits"], {"reduction": "none"})
    case(G + "_int32_labels", G, [("dY", scalar), ("log_prob", lp), ("label", label.astype(np.int32))], ["d_logits"])

    I = "SoftmaxCrossEntropyLossInternal"
    case(I + "_mean", I, [("scores", logits), ("labels", label)], ["output", "log_prob"])
    case(I + "_sum_weight_ignore", I,
         [("scores", logits), ("labels", label), ("weights", w), ("ignore_index", np.array(4, np.int64))],
         ["output", "log_prob"], {"reduction": "sum"})
    case(I + "_none_spatial", I, [("scores", f32(2, c, 3)), ("labels", label3)], ["output", "log_prob"],
         {"reduction": "none"})
    case(I + "_mean_label_minus1", I, [("scores", logits), ("labels", i64([1, -1, 4, 1]))], ["output", "log_prob"])
    IG = "SoftmaxCrossEntropyLossInternalGrad"
    case(IG + "_mean", IG, [("dY", scalar), ("log_prob", lp), ("label", label)], ["d_logits"])
    case(IG + "_mean_weight_ignore", IG,
         [("dY", scalar), ("log_prob", lp), ("label", label), ("weight", w), ("ignore_index", np.array(1, np.int64))],
         ["d_logits"])
    case(IG + "_label_minus1_no_ignore_input", IG, [("dY", scalar), ("log_prob", lp), ("label", i64([1, -1, 4, 1]))],
         ["d_logits"], {"reduction": "sum"})
    case(IG + "_none_bias", IG,
         [("dY", f32(n)), ("log_prob", lp), ("label", label), ("weight", None), ("ignore_index", None),
          ("bias", f32(n, c))], ["d_logits"], {"reduction": "none"})

    prob = rng.dirichlet(np.ones(c), size=(2, 3)).astype(np.float32)
    logits3 = f32(2, 3, c)
    case("SoftmaxCrossEntropy_mean", "SoftmaxCrossEntropy", [("logits", logits3), ("label", prob)], ["Y", "log_prob"])
    case("SoftmaxCrossEntropy_sum", "SoftmaxCrossEntropy", [("logits", logits3), ("label", prob)], ["Y", "log_prob"],
         {"reduction": "sum"})
    lp3b = log_softmax_axis(logits3, 2)
    case("SoftmaxCrossEntropyGrad_mean", "SoftmaxCrossEntropyGrad",
         [("dY", scalar), ("log_prob", lp3b), ("label", prob)], ["d_logits"])
    case("SoftmaxCrossEntropyGrad_sum", "SoftmaxCrossEntropyGrad",
         [("dY", scalar), ("log_prob", lp3b), ("label", prob)], ["d_logits"], {"reduction": "sum"})

    slabel = i64([[1, 4, 0], [3, 3, 2]])
    sw = f32(2, 3, lo=0.1, hi=1.0)
    S = "SparseSoftmaxCrossEntropy"
    case(S + "_mean", S, [("logits", logits3), ("label", slabel)], ["Y", "log_prob"], domain="", opset=12)
    case(S + "_mean_weight", S, [("logits", logits3), ("label", slabel), ("weight", sw)], ["Y", "log_prob"],
         domain="", opset=12)
    case(S + "_sum", S, [("logits", logits3), ("label", slabel)], ["Y", "log_prob"], {"reduction": "sum"},
         domain="", opset=12)
    case(S + "Grad_mean", S + "Grad", [("dY", scalar), ("log_prob", lp3b), ("label", slabel)], ["d_logits"],
         domain="", opset=12)
    case(S + "Grad_mean_weight", S + "Grad", [("dY", scalar), ("log_prob", lp3b), ("label", slabel), ("weight", sw)],
         ["d_logits"], domain="", opset=12)
    case(S + "Grad_sum", S + "Grad", [("dY", scalar), ("log_prob", lp3b), ("label", slabel)], ["d_logits"],
         {"reduction": "sum"}, domain="", opset=12)


# ---------------------------------------------------------------- dropout
def dropout():
    dy = f32(3, 4)
    mask = rng.uniform(size=(3, 4)) > 0.4
    case("DropoutGrad", "DropoutGrad", [("dy", dy), ("mask", mask), ("ratio", np.array(0.3, np.float32))], ["dx"])
    case("DropoutGrad_default_ratio", "DropoutGrad", [("dy", dy), ("mask", mask)], ["dx"])
    case("DropoutGrad_ratio0", "DropoutGrad",
         [("dy", dy), ("mask", mask), ("ratio", np.array(0.0, np.float32)), ("training_mode", np.array(True))], ["dx"])
    case("DropoutGrad_training_false", "DropoutGrad",
         [("dy", dy), ("mask", mask), ("ratio", np.array(0.25, np.float32)), ("training_mode", np.array(False))],
         ["dx"])


# ---------------------------------------------------------------- convolution and pooling
def conv_pool():
    x = f32(2, 4, 6, 5)
    w = f32(6, 2, 3, 3)
    a = {"strides": [2, 1], "pads": [1, 0, 1, 2], "dilations": [2, 1], "group": 2, "kernel_shape": [3, 3]}
    # output: H = (6+2-5)//2+1 = 2, W = (5+2-3)//1+1 = 5
    case("ConvGrad_2d_group_stride_dilation", "ConvGrad", [("dY", f32(2, 6, 2, 5)), ("X", x), ("W", w)],
         ["dX", "dW", "dB"], a)
    case("ConvGrad_2d_defaults", "ConvGrad", [("dY", f32(1, 3, 4, 3)), ("X", f32(1, 2, 6, 5)), ("W", f32(3, 2, 3, 3))],
         ["dX", "dW", "dB"])
    case("ConvGrad_1d_dW_only", "ConvGrad", [("dY", f32(2, 3, 4)), ("X", f32(2, 2, 7)), ("W", f32(3, 2, 2))],
         ["", "dW", ""], {"strides": [2], "pads": [1, 0]})
    case("ConvGrad_3d", "ConvGrad", [("dY", f32(1, 2, 2, 2, 2)), ("X", f32(1, 1, 3, 3, 3)), ("W", f32(2, 1, 2, 2, 2))],
         ["dX", "dW", "dB"])
    # onnxruntime ignores auto_pad; the expected values come from the same node with the pads
    # SAME_UPPER resolves to (total pad 2 on a 5-long axis with k=3, s=1: begin 1, end 1;
    # on 6 with k=3 s=2: out 3, total 1: begin 0, end 1).
    case("ConvGrad_auto_pad_same_upper", "ConvGrad",
         [("dY", f32(1, 2, 3, 5)), ("X", f32(1, 2, 6, 5)), ("W", f32(2, 2, 3, 3))], ["dX", "dW", "dB"],
         {"auto_pad": "SAME_UPPER", "strides": [2, 1]}, run_attrs={"pads": [0, 1, 1, 1], "strides": [2, 1]})

    # MaxPoolGrad: indices from onnxruntime's own MaxPool.
    def maxpool_indices(x, attrs):
        node = h.make_node("MaxPool", ["x"], ["y", "i"], **attrs)
        g = h.make_graph([node], "mp", [typed("x", TP.FLOAT, x.shape)],
                         [h.make_empty_tensor_value_info("y"), h.make_empty_tensor_value_info("i")])
        m = h.make_model(g, opset_imports=[h.make_opsetid("", 17)])
        m.ir_version = 8
        s = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
        return s.run(None, {"x": x})

    xp = f32(2, 2, 5, 5)
    attrs = {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}
    y, ind = maxpool_indices(xp, attrs)
    case("MaxPoolGrad_2d", "MaxPoolGrad", [("dY", f32(*y.shape)), ("Indices", ind)], ["dX"], attrs, domain="",
         output_types={"dX": typed("dX", TP.FLOAT, xp.shape)})
    xo = f32(1, 2, 7)
    attrs1 = {"kernel_shape": [2], "strides": [1], "dilations": [2], "ceil_mode": 0, "storage_order": 0}
    y, ind = maxpool_indices(xo, attrs1)
    case("MaxPoolGrad_1d_dilation", "MaxPoolGrad", [("dY", f32(*y.shape)), ("Indices", ind)], ["dX"], attrs1,
         domain="", output_types={"dX": typed("dX", TP.FLOAT, xo.shape)})
    # overlapping windows send several gradients to one maximum
    xq = np.array([[[[1, 2, 1], [2, 9, 2], [1, 2, 1]]]], np.float32)
    attrs2 = {"kernel_shape": [2, 2], "strides": [1, 1]}
    y, ind = maxpool_indices(xq, attrs2)
    case("MaxPoolGrad_shared_max", "MaxPoolGrad", [("dY", f32(*y.shape)), ("Indices", ind)], ["dX"], attrs2,
         domain="", output_types={"dX": typed("dX", TP.FLOAT, xq.shape)})

    A = "AveragePoolGrad"
    case(A + "_2d", A, [("dY", f32(2, 2, 3, 3))], ["dX"], {"kernel_shape": [3, 3], "strides": [2, 2],
                                                         "pads": [1, 1, 1, 1]},
         domain="", output_types={"dX": typed("dX", TP.FLOAT, [2, 2, 5, 5])})
    case(A + "_2d_count_include_pad", A, [("dY", f32(2, 2, 3, 3))], ["dX"],
         {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1], "count_include_pad": 1},
         domain="", output_types={"dX": typed("dX", TP.FLOAT, [2, 2, 5, 5])})
    case(A + "_1d", A, [("dY", f32(1, 3, 3))], ["dX"], {"kernel_shape": [3], "strides": [2]},
         domain="", output_types={"dX": typed("dX", TP.FLOAT, [1, 3, 7])})
    # onnxruntime 1.19.2's 3-D AveragePoolGrad disagrees with PyTorch even without padding
    # (largest difference 0.25 on a 3x3x3 input), so the 3-D expectations come from torch autograd.
    import torch

    def torch_avg3d(xshape, k, s, p, include):
        def ref(feeds):
            x = torch.zeros(xshape, requires_grad=True)
            y = torch.nn.functional.avg_pool3d(x, k, s, padding=p, count_include_pad=include)
            y.backward(torch.tensor(feeds["dY"]))
            return [x.grad.numpy()]
        return ref

    for tag, include in [("", False), ("_count_include_pad", True)]:
        case(A + "_3d" + tag, A, [("dY", f32(1, 2, 4, 4, 3))], ["dX"],
             {"kernel_shape": [2, 3, 2], "strides": [1, 1, 2], "pads": [1, 1, 1, 1, 1, 1], "count_include_pad": int(include)},
             domain="", output_types={"dX": typed("dX", TP.FLOAT, [1, 2, 3, 4, 5])},
             reference=torch_avg3d((1, 2, 3, 4, 5), [2, 3, 2], [1, 1, 2], [1, 1, 1], include))


# ---------------------------------------------------------------- normalization
def normalization():
    x = f32(3, 2, 4)
    scale = f32(2, lo=0.5, hi=1.5)
    bias = f32(2)
    mean = f32(2, lo=-0.2, hi=0.2)
    var = f32(2, lo=0.5, hi=1.5)
    B = "BatchNormInternal"
    # A plain InferenceSession does not alias the running-stat outputs to the fed inputs (a
    # training Module does: the checkpoint's frozen running stats change after a train step), so
    # no mutated_N.pb here; the Swift tests check the in-place write separately.
    case(B, B, [("X", x), ("scale", scale), ("B", bias), ("input_mean", mean), ("input_var", var)],
         ["Y", "running_mean", "running_var", "saved_mean", "saved_inv_std"])
    case(B + "_momentum_eps_4d", B,
         [("X", f32(2, 3, 2, 2)), ("scale", f32(3)), ("B", f32(3)), ("input_mean", f32(3)),
          ("input_var", f32(3, lo=0.5, hi=1.0))],
         ["Y", "running_mean", "running_var", "saved_mean", "saved_inv_std"], {"momentum": 0.7, "epsilon": 1e-3})
    mu = x.mean(axis=(0, 2))
    inv = (1 / np.sqrt(x.var(axis=(0, 2)) + 1e-5)).astype(np.float32)
    case("BatchNormalizationGrad", "BatchNormalizationGrad",
         [("dY", f32(3, 2, 4)), ("X", x), ("scale", scale), ("mean", mu.astype(np.float32)), ("variance", inv)],
         ["X_grad", "scale_grad", "bias_grad"], {"epsilon": 1e-5})

    xl = f32(2, 3, 4)

    def ln_stats(a, axis):
        red = tuple(range(axis, a.ndim))
        m = a.mean(axis=red, keepdims=True)
        r = 1 / np.sqrt(a.var(axis=red, keepdims=True) + 1e-5)
        return m.astype(np.float32), r.astype(np.float32)

    m, r = ln_stats(xl, 2)
    L = "LayerNormalizationGrad"
    case(L, L, [("Y_grad", f32(2, 3, 4)), ("X", xl), ("scale", f32(4)), ("mean", m), ("inv_std_dev", r)],
         ["X_grad", "scale_grad", "bias_grad"])
    m1, r1 = ln_stats(xl, 1)
    case(L + "_axis1", L, [("Y_grad", f32(2, 3, 4)), ("X", xl), ("scale", f32(3, 4)), ("mean", m1),
                           ("inv_std_dev", r1)], ["X_grad", "scale_grad", "bias_grad"], {"axis": 1})
    # contrib LayerNormalization (onnx domain v1), as training graphs below opset 17 carry it
    case("LayerNormalization_contrib_v1", "LayerNormalization", [("X", xl), ("Scale", f32(4)), ("B", f32(4))],
         ["Y", "Mean", "InvStdDev"], {"epsilon": 1e-4, "stash_type": 1}, domain="", opset=15)
    case("LayerNormalization_contrib_v1_axis1_nobias", "LayerNormalization", [("X", xl), ("Scale", f32(3, 4))],
         ["Y", "Mean", "InvStdDev"], {"axis": 1}, domain="", opset=15)
    S = "SimplifiedLayerNormalization"
    case(S, S, [("X", xl), ("scale", f32(4))], ["Y", "inv_std_var"], domain="", opset=17)
    case(S + "_axis1_eps", S, [("X", xl), ("scale", f32(3, 4))], ["Y", "inv_std_var"], {"axis": 1, "epsilon": 1e-3},
         domain="", opset=17)
    rs = (1 / np.sqrt((xl * xl).mean(axis=2, keepdims=True) + 1e-5)).astype(np.float32)
    case(S + "Grad", S + "Grad", [("Y_grad", f32(2, 3, 4)), ("X", xl), ("scale", f32(4)), ("inv_std_var", rs)],
         ["X_grad", "scale_grad"])
    sc = f32(4, lo=0.5, hi=1.5)
    bi = f32(4)
    yl = ((xl - m) * r * sc + bi).astype(np.float32)
    case("InvertibleLayerNormalizationGrad", "InvertibleLayerNormalizationGrad",
         [("Y_grad", f32(2, 3, 4)), ("Y", yl), ("scale", sc), ("bias", bi), ("inv_std_var", r)],
         ["X_grad", "scale_grad", "bias_grad"],
         output_types={"X_grad": typed("X_grad", TP.FLOAT, [2, 3, 4])})


# ---------------------------------------------------------------- shape helpers
def shape_helpers():
    case("SliceGrad", "SliceGrad",
         [("dY", f32(2, 2)), ("shape", i64([3, 4])), ("starts", i64([1, 0])), ("ends", i64([3, 4])),
          ("axes", i64([0, 1])), ("steps", i64([1, 2]))], ["dX"])
    case("SliceGrad_negative_clamped_int32", "SliceGrad",
         [("dY", f32(2, 3, 2)), ("shape", i64([2, 5, 3])), ("starts", np.array([-3, 1], np.int32)),
          ("ends", np.array([100, 3], np.int32)), ("axes", np.array([1, -1], np.int32))], ["dX"])
    case("SliceGrad_no_axes", "SliceGrad",
         [("dY", f32(1, 4)), ("shape", i64([3, 4])), ("starts", i64([2])), ("ends", i64([3]))], ["dX"])

    x = f32(2, 6)
    case("SplitTraining", "SplitTraining", [("input", x), ("split", i64([1, 3, 2]))], ["o0", "o1", "o2"], {"axis": 1})
    case("SplitTraining_equal", "SplitTraining", [("input", x), ("split", np.zeros([0], np.int64))], ["o0", "o1", "o2"],
         {"axis": -1})
    case("SplitTraining_axis0", "SplitTraining", [("input", f32(4, 3)), ("split", i64([3, 1]))], ["o0", "o1"])
    case("ConcatTraining", "ConcatTraining", [("a", f32(2, 1, 3)), ("b", f32(2, 2, 3)), ("c", f32(2, 3, 3))],
         ["concat_result", "per_input_length"], {"axis": 1})
    case("ConcatTraining_negative_axis_one_output", "ConcatTraining", [("a", f32(2, 2)), ("b", f32(2, 1))],
         ["concat_result"], {"axis": -1})
    d = f32(2, 3, 4)
    R = "ReduceSumTraining"
    case(R + "_keepdims", R, [("data", d), ("axes", i64([1]))], ["reduced"])
    case(R + "_negative_axes_nokeep", R, [("data", d), ("axes", i64([-1, 0]))], ["reduced"], {"keepdims": 0})
    case(R + "_empty_axes", R, [("data", d), ("axes", np.zeros([0], np.int64))], ["reduced"])
    case(R + "_empty_axes_noop", R, [("data", d), ("axes", np.zeros([0], np.int64))], ["reduced"],
         {"noop_with_empty_axes": 1})
    BG = "BroadcastGradientArgs"
    for tag, a, b in [("vector", [2, 3, 4], [4]), ("both", [2, 1, 4], [1, 3, 1]), ("longer_b", [3, 4], [2, 3, 4]),
                      ("same", [2, 3], [2, 3])]:
        case(BG + "_" + tag, BG, [("a_shape", i64(a)), ("b_shape", i64(b))], ["a_axes", "b_axes"])
    # Like BatchNormInternal, ZeroGradient and InPlaceAccumulator (v1) declare their output an alias
    # of input 0, which a plain InferenceSession does not honor for fed inputs (V2 and the
    # optimizers write into the input themselves); their in-place writes are checked in Swift.
    case("ZeroGradient", "ZeroGradient", [("old_gradient", f32(2, 3)), ("reset_signal", f32(1))], ["zero_gradient"])
    case("Scale", "Scale", [("input", f32(2, 3)), ("scale", np.array(2.5, np.float32))], ["output"])
    case("Scale_down_int64", "Scale", [("input", f32(2, 3)), ("scale", np.array([4], np.int64))], ["output"],
         {"scale_down": 1})
    case("Scale_double", "Scale", [("input", f32(3)), ("scale", np.array(0.5, np.float64))], ["output"])


# ---------------------------------------------------------------- matmul
def matmul():
    F = "FusedMatMul"
    case(F + "_2d", F, [("A", f32(3, 4)), ("B", f32(4, 2))], ["Y"])
    case(F + "_transA_transB_alpha", F, [("A", f32(4, 3)), ("B", f32(2, 4))], ["Y"],
         {"transA": 1, "transB": 1, "alpha": 0.5})
    case(F + "_batched_broadcast", F, [("A", f32(2, 1, 3, 4)), ("B", f32(3, 2, 4))], ["Y"], {"transB": 1})
    case(F + "_nd_by_2d", F, [("A", f32(2, 3, 4)), ("B", f32(4, 5))], ["Y"])
    case(F + "_transA_3d_2d", F, [("A", f32(2, 4, 3)), ("B", f32(4, 2))], ["Y"], {"transA": 1})
    case(F + "_1d_by_2d", F, [("A", f32(4)), ("B", f32(4, 3))], ["Y"], {"transA": 1})
    case(F + "_2d_by_1d", F, [("A", f32(3, 4)), ("B", f32(4))], ["Y"])
    case(F + "_transBatchA", F, [("A", f32(3, 2, 4)), ("B", f32(2, 4, 5))], ["Y"], {"transBatchA": 1})
    case(F + "_transBatchA_transA", F, [("A", f32(4, 2, 3)), ("B", f32(2, 4, 5))], ["Y"],
         {"transBatchA": 1, "transA": 1})
    case(F + "_transBatchB_transB", F, [("A", f32(2, 3, 4)), ("B", f32(5, 2, 4))], ["Y"],
         {"transBatchB": 1, "transB": 1})
    case(F + "_transBatchB_4d", F, [("A", f32(2, 2, 3, 4)), ("B", f32(4, 2, 2, 5))], ["Y"], {"transBatchB": 1})
    case("TransposeMatMul", "TransposeMatMul", [("A", f32(4, 3)), ("B", f32(4, 2))], ["Y"], {"transA": 1})
    a = f32(2, 3)
    b = f32(3, lo=0.5, hi=2.0)
    case("DivGrad", "DivGrad", [("dY", f32(2, 3)), ("A", a), ("B", b)], ["dA", "dB"])
    case("DivGrad_dA_only_broadcast_a", "DivGrad", [("dY", f32(2, 3)), ("A", f32(1, 3)), ("B", f32(2, 1, lo=0.5))],
         ["dA", "dB"])


# ---------------------------------------------------------------- accumulators and optimizers
def optimizers():
    case("InPlaceAccumulator", "InPlaceAccumulator", [("old_sum", f32(2, 3)), ("value", f32(3))], ["new_sum"])
    case("InPlaceAccumulator_update_false", "InPlaceAccumulator",
         [("old_sum", f32(2, 3)), ("value", f32(2, 3)), ("update_signal", np.array([False]))], ["new_sum"])
    case("InPlaceAccumulator_update_true", "InPlaceAccumulator",
         [("old_sum", f32(2, 3)), ("value", f32(2, 3)), ("update_signal", np.array([True]))], ["new_sum"])
    V2 = "InPlaceAccumulatorV2"
    case(V2, V2, [("buffer", f32(2, 3)), ("value", f32(2, 3))], ["updated_flag", "buffer_out"],
         mutated={"buffer": None})
    case(V2 + "_flag_only", V2, [("buffer", f32(2, 3)), ("value", f32(1, 3))], ["updated_flag"],
         mutated={"buffer": None})
    case(V2 + "_overwrite", V2, [("buffer", f32(2, 3)), ("value", f32(2, 3)), ("overwrite", np.array([True]))],
         ["updated_flag", "buffer_out"], mutated={"buffer": None})
    case(V2 + "_overwrite_false", V2, [("buffer", f32(2, 3)), ("value", f32(3)), ("overwrite", np.array([False]))],
         ["updated_flag"], mutated={"buffer": None})

    def params():
        w = Seq([f32(2, 3), f32(4)])
        g = Seq([f32(2, 3), f32(4)])
        m1 = Seq([f32(2, 3, lo=-0.1, hi=0.1), f32(4, lo=-0.1, hi=0.1)])
        m2 = Seq([f32(2, 3, lo=0.0, hi=0.1), f32(4, lo=0.0, hi=0.1)])
        return w, g, m1, m2

    A = "AdamWOptimizer"
    outs = ["updated_flag", "updated_weights", "updated_momentums_1", "updated_momentums_2"]
    types = {n: seq_out(n) for n in outs[1:]}
    alias = {"weights": "updated_weights", "momentums_1": "updated_momentums_1", "momentums_2": "updated_momentums_2"}
    w, g, m1, m2 = params()
    base = [("lr", np.array([0.01], np.float32)), ("step", i64([3])), ("weights", w), ("gradients", g),
            ("momentums_1", m1), ("momentums_2", m2)]
    case(A + "_mode0_default_weight_decay", A, base, outs, output_types=types, mutated=alias)
    case(A + "_mode1_artifact_attrs", A, base, outs,
         {"alpha": 0.9, "beta": 0.999, "epsilon": 1e-6, "weight_decay": 0.0, "correct_bias": 1, "adam_mode": 1},
         output_types=types, mutated=alias)
    case(A + "_mode1_weight_decay_no_bias_correction", A, base, outs,
         {"weight_decay": 0.1, "correct_bias": 0, "adam_mode": 1, "alpha": 0.8, "beta": 0.99},
         output_types=types, mutated=alias)
    case(A + "_mode0_step1", A, [("lr", np.array(0.05, np.float32)), ("step", i64([1]))] + base[2:], outs,
         {"weight_decay": 0.02}, output_types=types, mutated=alias)
    case(A + "_update_signal_false", A, base + [("update_signal", np.array([False]))], outs,
         output_types=types, mutated=alias)
    S = "SGDOptimizerV2"
    case(S, S, [("lr", np.array([0.1], np.float32)), ("weights", w), ("gradients", g)],
         ["update_completed", "updated_weights"], output_types={"updated_weights": seq_out("updated_weights")},
         mutated={"weights": "updated_weights"})
    case(S + "_update_signal_false", S,
         [("lr", np.array([0.1], np.float32)), ("weights", w), ("gradients", g), ("update_signal", np.array([False]))],
         ["update_completed", "updated_weights"], output_types={"updated_weights": seq_out("updated_weights")},
         mutated={"weights": "updated_weights"})
    C = "InplaceClipGradNorm"
    case(C, C, [("gradients", g)], ["clipped_gradients"], output_types={"clipped_gradients": seq_out("clipped_gradients")},
         mutated={"gradients": "clipped_gradients"})
    case(C + "_no_clip", C, [("gradients", g)], ["clipped_gradients"], {"max_norm": 100.0},
         output_types={"clipped_gradients": seq_out("clipped_gradients")},
         mutated={"gradients": "clipped_gradients"})
    case("SGDOptimizer", "SGDOptimizer", [("ETA", np.array(0.1, np.float32)), ("W", f32(2, 3)), ("G", f32(2, 3))],
         ["NW", "NG"])
    case("SGDOptimizer_NW_only", "SGDOptimizer", [("ETA", np.array([0.3], np.float32)), ("W", f32(4)), ("G", f32(4))],
         ["NW"])
    AO = "AdamOptimizer"
    adam_in = [("R", np.array(0.01, np.float32)), ("T", i64(2)), ("weights", f32(2, 3)), ("gradients", f32(2, 3)),
               ("moment_1", f32(2, 3, lo=-0.1, hi=0.1)), ("moment_2", f32(2, 3, lo=0.0, hi=0.1))]
    case(AO, AO, adam_in, ["new_T", "new_moment_1", "new_moment_2", "new_weights", "new_gradients"])
    case(AO + "_lambda_no_bias_correction", AO, adam_in, ["new_T", "new_moment_1", "new_moment_2", "new_weights"],
         {"lambda": 0.01, "do_bias_correction": 0, "alpha": 0.8})
    case(AO + "_weight_decay_mode1", AO, adam_in, ["new_T", "new_moment_1", "new_moment_2", "new_weights"],
         {"lambda": 0.02, "weight_decay_mode": 1})


# ---------------------------------------------------------------- other element types
def other_types():
    """The non-float types onnxruntime's CPU kernels register for the data movers and reductions."""
    d = f32(2, 3).astype(np.float64)
    for tag, a in [("double", d), ("int64", (d * 10).astype(np.int64)), ("int32", (d * 10).astype(np.int32))]:
        case("ReduceSumTraining_" + tag, "ReduceSumTraining", [("data", a), ("axes", i64([1]))], ["reduced"], {"keepdims": 0})
        case("ConcatTraining_" + tag, "ConcatTraining", [("a", a), ("b", a[:1].copy())], ["concat_result", "per_input_length"],
             {"axis": 0})
    for tag, a in [("int64", (d * 10).astype(np.int64)), ("int32", (d * 10).astype(np.int32))]:
        case("SplitTraining_" + tag, "SplitTraining", [("input", a), ("split", i64([2, 1]))], ["o0", "o1"], {"axis": 1})
    case("SliceGrad_double", "SliceGrad", [("dY", d[:, 1:].copy()), ("shape", i64([2, 3])), ("starts", i64([1])),
                                          ("ends", i64([3])), ("axes", i64([1]))], ["dX"])
    case("GatherGrad_double", "GatherGrad", [("shape", i64([3, 3])), ("indices", i64([2, 0])), ("dY", d.reshape(2, 3))], ["dX"])
    case("Scale_double_input", "Scale", [("input", d), ("scale", np.array(3.0, np.float32))], ["output"], {"scale_down": 1})


# ---------------------------------------------------------------- recurrent (appended last: earlier cases keep their random draws)
def ort_node(op, inputs, outputs, attrs):
    """Runs one com.microsoft node in onnxruntime and returns its outputs (for chaining a forward into its Grad)."""
    ins = [(n, v) for n, v in inputs if v is not None]
    g = h.make_graph([h.make_node(op, [n if v is not None else "" for n, v in inputs], outputs, domain=MS, **attrs)], op,
                     [h.make_tensor_value_info(n, h.np_dtype_to_tensor_dtype(v.dtype), v.shape) for n, v in ins],
                     [h.make_empty_tensor_value_info(o) for o in outputs if o])
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 17), h.make_opsetid(MS, 1)])
    m.ir_version = 8
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run([o for o in outputs if o], {n: v for n, v in ins})


def recurrent():
    """LSTMTraining/LSTMGrad and GRUTraining/GRUGrad, forward direction (all onnxruntime runs), with the
    gradient fed from onnxruntime's own forward outputs, as in a training graph."""
    S, B, I, H = 5, 3, 4, 3
    x = f32(S, B, I, lo=-1, hi=1)
    w, r = f32(1, 4 * H, I, lo=-0.6, hi=0.6), f32(1, 4 * H, H, lo=-0.6, hi=0.6)
    b, h0, c0 = f32(1, 8 * H, lo=-0.5, hi=0.5), f32(1, B, H, lo=-1, hi=1), f32(1, B, H, lo=-1, hi=1)
    p = f32(1, 3 * H, lo=-0.5, hi=0.5)
    dy, dyh, dyc = f32(S, 1, B, H), f32(1, B, H), f32(1, B, H)
    a = {"hidden_size": H}
    fw = ["Y", "Y_h", "Y_c", "all_cell_states", "iofc"]
    full = [("X", x), ("W", w), ("R", r), ("B", b), ("sequence_lens", None), ("initial_h", h0), ("initial_c", c0)]
    case("LSTMTraining", "LSTMTraining", full, fw, a)
    case("LSTMTraining_peephole", "LSTMTraining", full + [("P", p)], fw, a)
    case("LSTMTraining_no_bias_no_state", "LSTMTraining", [("X", x), ("W", w), ("R", r)], fw, dict(a, direction="forward"))
    grad_out = ["dX", "dW", "dR", "dB", "dH0", "dC0", "dP"]

    def lstm_grad(name, forward_inputs, with_state, grads, outputs):
        y, _, _, cells, iofc = ort_node("LSTMTraining", forward_inputs, fw, a)
        state = [("initial_h", h0), ("initial_c", c0)] if with_state else [("initial_h", None), ("initial_c", None)]
        case(name, "LSTMGrad", [("X", x), ("W", w), ("R", r), ("sequence_lens", None)] + state +
             [("HAll", y), ("all_cell_states", cells), ("iofc", iofc)] + grads, outputs, a)

    lstm_grad("LSTMGrad", full, True, [("dY", dy), ("dY_h", dyh), ("dY_c", dyc)], grad_out)
    # What a training graph wires: only dY, no dX.
    lstm_grad("LSTMGrad_artifact_wiring", full, True, [("dY", dy), ("dY_h", None), ("dY_c", None)], ["", "dW", "dR", "dB", "", ""])
    lstm_grad("LSTMGrad_final_states_only", [("X", x), ("W", w), ("R", r)], False,
              [("dY", None), ("dY_h", dyh), ("dY_c", dyc)], grad_out[:6])
    # onnxruntime's LSTMGrad has no peephole input: the peephole terms stay out of the cell gradient.
    lstm_grad("LSTMGrad_peephole_forward", full + [("P", p)], True, [("dY", dy), ("dY_h", dyh), ("dY_c", dyc)], grad_out)

    wg, rg = f32(1, 3 * H, I, lo=-0.6, hi=0.6), f32(1, 3 * H, H, lo=-0.6, hi=0.6)
    bg = f32(1, 6 * H, lo=-0.5, hi=0.5)
    gfw = ["Y", "Y_h", "zrh"]
    for lbr in [1, 0]:
        ga = {"hidden_size": H, "linear_before_reset": lbr}
        tag = "" if lbr else "_linear_before_reset0"
        gfull = [("X", x), ("W", wg), ("R", rg), ("B", bg), ("sequence_lens", None), ("initial_h", h0)]
        case("GRUTraining" + tag, "GRUTraining", gfull, gfw, ga)
        y, _, zrh = ort_node("GRUTraining", gfull, gfw, ga)
        case("GRUGrad" + tag, "GRUGrad", gfull + [("HAll", y), ("zrh", zrh), ("dY", dy), ("dY_h", dyh)],
             ["dX", "dW", "dR", "dB", "dH0"], ga)
    ga = {"hidden_size": H, "linear_before_reset": 1}
    gmin = [("X", x), ("W", wg), ("R", rg)]
    case("GRUTraining_no_bias_no_state", "GRUTraining", gmin, gfw, ga)
    y, _, zrh = ort_node("GRUTraining", gmin, gfw, ga)
    case("GRUGrad_artifact_wiring_no_bias", "GRUGrad",
         gmin + [("B", None), ("sequence_lens", None), ("initial_h", None), ("HAll", y), ("zrh", zrh), ("dY", dy), ("dY_h", None)],
         ["", "dW", "dR", "dB", ""], ga)


def recurrent_pytorch():
    """What onnxruntime refuses (both directions, sequence_lens, layout 1): LSTMTraining -> LSTMGrad and
    GRUTraining -> GRUGrad chained in one model, outputs Y, Y_h(, Y_c) and every gradient, against
    PyTorch's nn.LSTM/nn.GRU on packed sequences (float64 autograd, rounded to float32)."""
    import torch
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    def one(name, kind, S, B, I, H, lens, layout):
        lstm = kind == "lstm"
        G, D = (4 if lstm else 3), 2
        x = f32(S, B, I, lo=-1, hi=1)
        w, r = f32(D, G * H, I, lo=-0.6, hi=0.6), f32(D, G * H, H, lo=-0.6, hi=0.6)
        b, h0, c0 = f32(D, 2 * G * H, lo=-0.5, hi=0.5), f32(D, B, H, lo=-1, hi=1), f32(D, B, H, lo=-1, hi=1)
        dy, dyh, dyc = f32(S, D, B, H), f32(D, B, H), f32(D, B, H)
        # ONNX gate blocks (LSTM i, o, f, c; GRU z, r, h) in PyTorch's order (i, f, g, o; r, z, n).
        order = [0, 2, 3, 1] if lstm else [1, 0, 2]

        def torch_blocks(a):
            return torch.cat([torch.tensor(a.astype(np.float64)).reshape(G, H, *a.shape[1:])[k] for k in order], 0)

        def onnx_blocks(t):
            parts = t.reshape(G, H, *t.shape[1:])
            out = np.zeros_like(parts)
            for k_torch, k_onnx in enumerate(order):
                out[k_onnx] = parts[k_torch]
            return out.reshape(t.shape)

        net = (torch.nn.LSTM if lstm else torch.nn.GRU)(I, H, bidirectional=True).double()
        with torch.no_grad():
            for d, sfx in enumerate(["", "_reverse"]):
                getattr(net, "weight_ih_l0" + sfx).copy_(torch_blocks(w[d]))
                getattr(net, "weight_hh_l0" + sfx).copy_(torch_blocks(r[d]))
                getattr(net, "bias_ih_l0" + sfx).copy_(torch_blocks(b[d, :G * H]))
                getattr(net, "bias_hh_l0" + sfx).copy_(torch_blocks(b[d, G * H:]))
        tx, th0, tc0 = (torch.tensor(a.astype(np.float64), requires_grad=True) for a in (x, h0, c0))
        packed = pack_padded_sequence(tx, torch.tensor(lens), enforce_sorted=False)
        out, state = net(packed, (th0, tc0) if lstm else th0)
        y = pad_packed_sequence(out, total_length=S)[0].reshape(S, B, D, H).permute(0, 2, 1, 3)
        hn = state[0] if lstm else state
        loss = (y * torch.tensor(dy.astype(np.float64))).sum() + (hn * torch.tensor(dyh.astype(np.float64))).sum()
        if lstm:
            loss = loss + (state[1] * torch.tensor(dyc.astype(np.float64))).sum()
        loss.backward()
        grad = {n: p.grad.numpy() for n, p in net.named_parameters()}
        dw = np.stack([onnx_blocks(grad["weight_ih_l0" + s_]) for s_ in ["", "_reverse"]])
        dr = np.stack([onnx_blocks(grad["weight_hh_l0" + s_]) for s_ in ["", "_reverse"]])
        db = np.stack([np.concatenate([onnx_blocks(grad["bias_ih_l0" + s_]), onnx_blocks(grad["bias_hh_l0" + s_])])
                       for s_ in ["", "_reverse"]])
        expected = {"Y": y.detach().numpy(), "Y_h": hn.detach().numpy(), "dX": tx.grad.numpy(), "dW": dw, "dR": dr, "dB": db,
                    "dH0": th0.grad.numpy()}
        if lstm:
            expected.update({"Y_c": state[1].detach().numpy(), "dC0": tc0.grad.numpy()})
        feeds = {"X": x, "W": w, "R": r, "B": b, "sequence_lens": np.array(lens, np.int32), "initial_h": h0, "dY": dy, "dY_h": dyh}
        if lstm:
            feeds.update({"initial_c": c0, "dY_c": dyc})
        if layout == 1:  # batch-major: X, dX [B, S, I]; Y, dY [B, S, D, H]; states [B, D, H]
            for n in ["X", "dX"]:
                (feeds if n in feeds else expected)[n] = (feeds if n in feeds else expected)[n].transpose(1, 0, 2)
            for n in ["Y", "dY"]:
                (feeds if n in feeds else expected)[n] = (feeds if n in feeds else expected)[n].transpose(2, 0, 1, 3)
            for n in ["initial_h", "initial_c", "dY_h", "dY_c", "Y_h", "Y_c", "dH0", "dC0"]:
                for table in (feeds, expected):
                    if n in table:
                        table[n] = table[n].transpose(1, 0, 2)
        a = {"hidden_size": H, "direction": "bidirectional", "layout": layout}
        if lstm:
            fw = h.make_node("LSTMTraining", ["X", "W", "R", "B", "sequence_lens", "initial_h", "initial_c"],
                             ["Y", "Y_h", "Y_c", "all_cell_states", "iofc"], domain=MS, **a)
            bw = h.make_node("LSTMGrad", ["X", "W", "R", "sequence_lens", "initial_h", "initial_c", "Y", "all_cell_states", "iofc",
                                          "dY", "dY_h", "dY_c"], ["dX", "dW", "dR", "dB", "dH0", "dC0"], domain=MS, **a)
            inputs = ["X", "W", "R", "B", "sequence_lens", "initial_h", "initial_c", "dY", "dY_h", "dY_c"]
            outputs = ["Y", "Y_h", "Y_c", "dX", "dW", "dR", "dB", "dH0", "dC0"]
        else:
            a["linear_before_reset"] = 1
            fw = h.make_node("GRUTraining", ["X", "W", "R", "B", "sequence_lens", "initial_h"], ["Y", "Y_h", "zrh"], domain=MS, **a)
            bw = h.make_node("GRUGrad", ["X", "W", "R", "B", "sequence_lens", "initial_h", "Y", "zrh", "dY", "dY_h"],
                             ["dX", "dW", "dR", "dB", "dH0"], domain=MS, **a)
            inputs = ["X", "W", "R", "B", "sequence_lens", "initial_h", "dY", "dY_h"]
            outputs = ["Y", "Y_h", "dX", "dW", "dR", "dB", "dH0"]
        if ONLY and ONLY not in name:
            return
        g = h.make_graph([fw, bw], name,
                         [h.make_tensor_value_info(n, h.np_dtype_to_tensor_dtype(feeds[n].dtype), feeds[n].shape) for n in inputs],
                         [h.make_empty_tensor_value_info(o) for o in outputs])
        m = h.make_model(g, opset_imports=[h.make_opsetid("", 17), h.make_opsetid(MS, 1)], producer_name="make_training_op_cases.py")
        m.ir_version = 8
        d_ = os.path.join(OUT, name)
        shutil.rmtree(d_, ignore_errors=True)
        os.makedirs(os.path.join(d_, "test_data_set_0"))
        onnx.save(m, os.path.join(d_, "model.onnx"))
        for i, n in enumerate(inputs):
            write_value(os.path.join(d_, "test_data_set_0", f"input_{i}.pb"), n, feeds[n])
        for i, n in enumerate(outputs):
            write_value(os.path.join(d_, "test_data_set_0", f"output_{i}.pb"), n, expected[n].astype(np.float32))
        written.append(name)

    one("LSTMGrad_pytorch_bidirectional_seq_lens", "lstm", 5, 3, 4, 3, [5, 2, 4], 0)
    one("LSTMGrad_pytorch_bidirectional_seq_lens_layout1", "lstm", 4, 2, 3, 2, [1, 4], 1)
    one("GRUGrad_pytorch_bidirectional_seq_lens", "gru", 5, 3, 4, 3, [3, 5, 1], 0)
    one("GRUGrad_pytorch_bidirectional_seq_lens_layout1", "gru", 4, 2, 3, 2, [4, 2], 1)


def misc_cpu_kernels():
    """The remaining CPU training kernels a graph can hold outside ORTModule (see docs/TRAINING_KERNELS.md)."""
    x, y = f32(2, 3), f32(4)
    # onnxruntime's PassThrough checks that each output shares its input's buffer, which a graph output
    # never does, so it cannot run as a one-node model: the expected outputs are the inputs (that check).
    case("PassThrough", "PassThrough", [("x", x), ("y", y)], ["x_out", "y_out"], reference=lambda f: [f["x"], f["y"]])
    case("Group", "Group", [("x", x), ("y", y)], ["done"])
    case("RecordEvent", "RecordEvent", [("event_id", i64(3)), ("x", x), ("y", y)], ["x_out", "y_out"])
    case("WaitEvent", "WaitEvent", [("event_id", i64(-1)), ("x", x)], ["x_out"])
    case("ReduceAllL2", "ReduceAllL2", [("a", x), ("b", y), ("c", f32(3, 1, 2))], ["norm"],
         output_types={"norm": typed("norm", TP.FLOAT, [])})
    case("ShrunkenGather", "ShrunkenGather", [("data", f32(5, 3)), ("indices", i64([4, 0, 2]))], ["gathered"])
    q = np.concatenate([f32(20, lo=-3, hi=3), np.array([0.25, 0.75, -0.25, 2.5], np.float32)]).reshape(4, 6)
    case("FakeQuant", "FakeQuant", [("input", q), ("scale", np.array(0.5, np.float32)), ("zero_point", np.array(2.0, np.float32))],
         ["fake_quantized", "mask"], {"quant_min": 0, "quant_max": 7})
    case("FakeQuant_default_range", "FakeQuant",
         [("input", q * 40), ("scale", np.array(0.25, np.float32)), ("zero_point", np.array(128.0, np.float32))], ["fake_quantized", "mask"])
    case("FakeQuantGrad", "FakeQuantGrad", [("dY", f32(3, 4)), ("gradient_mask", rng.uniform(size=(3, 4)) > 0.4)], ["dX"])


def conv_transpose_grad():
    """ConvTransposeGrad, which onnxruntime 1.19.2 registers for CUDA only: PyTorch autograd of
    conv_transpose{1,2}d is the reference (float64, rounded to float32)."""
    import torch

    def torch_reference(stride, pad, out_pad, dilation, group, nd):
        def ref(feeds):
            dy, x, w = (torch.tensor(feeds[n].astype(np.float64), requires_grad=n != "dY") for n in ("dY", "X", "W"))
            b = torch.zeros(w.shape[1] * group, dtype=torch.float64, requires_grad=True)
            f = torch.nn.functional.conv_transpose2d if nd == 2 else torch.nn.functional.conv_transpose1d
            y = f(x, w, b, stride=stride, padding=pad, output_padding=out_pad, groups=group, dilation=dilation)
            assert y.shape == dy.shape, (y.shape, dy.shape)
            (y * dy).sum().backward()
            return [x.grad.numpy().astype(np.float32), w.grad.numpy().astype(np.float32), b.grad.numpy().astype(np.float32)]
        return ref

    # 2-D: stride 2, pads 1, output_padding 1, dilation 2, group 2: X [2, 4, 3, 3], W [4, 3, 3, 3] -> Y [2, 6, 8, 8].
    x, w = f32(2, 4, 3, 3), f32(4, 3, 3, 3)
    dy = f32(2, 6, 8, 8)
    case("ConvTransposeGrad_2d_stride_pad_output_padding_group", "ConvTransposeGrad", [("dY", dy), ("X", x), ("W", w)], ["dX", "dW", "dB"],
         {"strides": [2, 2], "pads": [1, 1, 1, 1], "output_padding": [1, 1], "dilations": [2, 2], "group": 2},
         reference=torch_reference(2, 1, 1, 2, 2, 2))
    # 1-D defaults.
    x1, w1 = f32(3, 2, 5), f32(2, 3, 2)
    case("ConvTransposeGrad_1d", "ConvTransposeGrad", [("dY", f32(3, 3, 6)), ("X", x1), ("W", w1)], ["dX", "dW", "dB"],
         reference=torch_reference(1, 0, 0, 1, 1, 1))


def main():
    global OUT, ONLY
    args = sys.argv[1:]
    if "--only" in args:
        k = args.index("--only")
        ONLY = args[k + 1]
        del args[k:k + 2]
    if args:
        OUT = os.path.abspath(args[0])
    for family in [activations, softmax_family, gather_family, losses, dropout, conv_pool, normalization,
                   shape_helpers, matmul, optimizers, other_types, recurrent,
                   recurrent_pytorch, misc_cpu_kernels, conv_transpose_grad]:
        family()
    print(f"wrote {len(written)} cases to {OUT}")


if __name__ == "__main__":
    main()
