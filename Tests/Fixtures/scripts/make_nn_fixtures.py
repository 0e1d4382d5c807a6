"""Single-node fixtures for the neural-network ops (Conv/Pool/RNN/Einsum/Gemm/...), in the ONNX
backend-test layout under Tests/Fixtures/nn/<case>/, with outputs from onnxruntime 1.19.2 CPU
(or the onnx reference evaluator where onnxruntime lacks the feature, marked in cases.txt).

Each case exercises a combination the ONNX conformance suite leaves out (groups with dilations
and asymmetric pads, 3-D windows, storage_order indices, bidirectional recurrences with
sequence_lens, einsum ellipsis/diagonals, ...).

Run: /work/venv/bin/python Tests/Fixtures/scripts/make_nn_fixtures.py
"""

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from common import FIXTURES, fresh_dir

OUT = FIXTURES / "nn"
rng = np.random.default_rng(1234)


def f32(*shape):
    return rng.standard_normal(shape).astype(np.float32)


def make_case(name, op, inputs, n_outputs, opset, reference="onnxruntime", out_types=None, **attrs):
    """inputs: list of (name, array or None); writes model.onnx and test_data_set_0."""
    in_names = [n if a is not None else "" for n, a in inputs]
    out_names = [f"y{i}" for i in range(n_outputs)]
    node = helper.make_node(op, in_names, out_names, **attrs)
    feeds = {n: a for n, a in inputs if a is not None}
    graph_inputs = [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(a.dtype), a.shape)
                    for n, a in inputs if a is not None]
    out_types = out_types or [TensorProto.FLOAT] * n_outputs
    graph_outputs = [helper.make_tensor_value_info(n, t, None) for n, t in zip(out_names, out_types)]
    graph = helper.make_graph([node], name, graph_inputs, graph_outputs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    if reference == "onnxruntime, layout 0 transposed":
        # onnxruntime's CPU recurrences take layout 0 only: run the same node in layout 0 on
        # [seq, batch] inputs and transpose the results back to layout 1.
        attrs0 = dict(attrs, layout=0)
        node0 = helper.make_node(op, in_names, out_names, **attrs0)
        feeds0 = {n: (np.swapaxes(a, 0, 1).copy() if n in ("X", "initial_h", "initial_c") else a) for n, a in feeds.items()}
        inputs0 = [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(a.dtype), a.shape) for n, a in feeds0.items()]
        model0 = helper.make_model(helper.make_graph([node0], name, inputs0, graph_outputs), opset_imports=[helper.make_opsetid("", opset)])
        model0.ir_version = 8
        sess = ort.InferenceSession(model0.SerializeToString(), providers=["CPUExecutionProvider"])
        r0 = sess.run(out_names, feeds0)
        results = [np.transpose(r0[0], (2, 0, 1, 3)).copy()] + [np.swapaxes(r, 0, 1).copy() for r in r0[1:]]
    elif reference == "onnxruntime":
        sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        results = sess.run(out_names, feeds)
    else:
        results = ReferenceEvaluator(model).run(out_names, feeds)
    d = fresh_dir(OUT / name)
    onnx.save(model, d / "model.onnx")
    ds = d / "test_data_set_0"
    ds.mkdir()
    for i, (n, a) in enumerate((n, a) for n, a in inputs if a is not None):
        (ds / f"input_{i}.pb").write_bytes(numpy_helper.from_array(a, n).SerializeToString())
    for i, (n, r) in enumerate(zip(out_names, results)):
        (ds / f"output_{i}.pb").write_bytes(numpy_helper.from_array(np.asarray(r), n).SerializeToString())
    return f"{name}  {op} ({reference})"


fresh_dir(OUT)
cases = []
add = cases.append

# Convolution
add(make_case("conv2d_group_dilation_asymmetric_pads", "Conv",
              [("X", f32(2, 4, 7, 6)), ("W", f32(6, 2, 3, 2)), ("B", f32(6))], 1, 17,
              group=2, dilations=[2, 1], strides=[2, 1], pads=[1, 0, 2, 1]))
add(make_case("conv1d_same_lower_stride3", "Conv", [("X", f32(1, 3, 10)), ("W", f32(4, 3, 4))], 1, 17,
              strides=[3], auto_pad="SAME_LOWER"))
add(make_case("conv3d_pads_strides", "Conv", [("X", f32(1, 2, 5, 4, 4)), ("W", f32(3, 2, 2, 3, 2))], 1, 17,
              pads=[1, 0, 1, 0, 1, 1], strides=[1, 2, 1]))
add(make_case("conv2d_1x1_direct", "Conv", [("X", f32(2, 3, 4, 5)), ("W", f32(5, 3, 1, 1)), ("B", f32(5))], 1, 17))
add(make_case("convtranspose_group_output_padding_dilation", "ConvTranspose",
              [("X", f32(1, 4, 3, 4)), ("W", f32(4, 3, 3, 3)), ("B", f32(6))], 1, 17,
              group=2, strides=[2, 3], output_padding=[1, 2], dilations=[1, 2], pads=[1, 0, 0, 1]))
add(make_case("convtranspose_output_shape_1d", "ConvTranspose", [("X", f32(1, 2, 4)), ("W", f32(2, 3, 3))], 1, 17,
              strides=[2], output_shape=[10]))
add(make_case("convtranspose_same_upper_2d", "ConvTranspose", [("X", f32(1, 1, 3, 3)), ("W", f32(1, 2, 3, 3))], 1, 17,
              strides=[2, 2], auto_pad="SAME_UPPER"))

# Pooling
add(make_case("maxpool_indices_storage_order_ceil", "MaxPool", [("X", f32(1, 2, 5, 6))], 2, 17, out_types=[TensorProto.FLOAT, TensorProto.INT64],
              kernel_shape=[3, 2], strides=[2, 2], ceil_mode=1, pads=[1, 0, 0, 0], storage_order=1))
add(make_case("maxpool_3d_dilations_indices", "MaxPool", [("X", f32(1, 1, 5, 5, 5))], 2, 17, out_types=[TensorProto.FLOAT, TensorProto.INT64],
              kernel_shape=[2, 2, 2], dilations=[2, 1, 2]))
# (No ceil_mode here: onnxruntime divides a ceil-mode edge window by the whole kernel, while the
# ONNX reference and PyTorch divide by the part inside the padded image; we follow the latter.)
add(make_case("averagepool_count_include_pad", "AveragePool", [("X", f32(1, 2, 6, 5))], 1, 19,
              kernel_shape=[3, 3], strides=[2, 1], pads=[1, 2, 1, 0], count_include_pad=1))
add(make_case("lppool_p3_pads", "LpPool", [("X", f32(1, 2, 5, 5))], 1, 18,
              kernel_shape=[2, 3], p=3, pads=[1, 1, 0, 1], strides=[1, 2]))

# Recurrent
H = 3
add(make_case("lstm_bidirectional_peepholes_seqlens", "LSTM",
              [("X", f32(5, 3, 4)), ("W", f32(2, 4 * H, 4)), ("R", f32(2, 4 * H, H)), ("B", f32(2, 8 * H)),
               ("sequence_lens", np.array([5, 3, 1], dtype=np.int32)), ("initial_h", f32(2, 3, H)),
               ("initial_c", f32(2, 3, H)), ("P", f32(2, 3 * H))], 3, 14,
              hidden_size=H, direction="bidirectional"))
add(make_case("lstm_layout1_clip", "LSTM",
              [("X", f32(2, 4, 3)), ("W", f32(1, 4 * H, 3)), ("R", f32(1, 4 * H, H)), ("B", f32(1, 8 * H)),
               ("sequence_lens", None), ("initial_h", f32(2, 1, H)), ("initial_c", f32(2, 1, H))], 3, 14,
              reference="onnxruntime, layout 0 transposed", hidden_size=H, layout=1, clip=0.7))
add(make_case("gru_bidirectional_seqlens", "GRU",
              [("X", f32(4, 2, 3)), ("W", f32(2, 3 * 5, 3)), ("R", f32(2, 3 * 5, 5)), ("B", f32(2, 6 * 5)),
               ("sequence_lens", np.array([4, 2], dtype=np.int32))], 2, 14,
              hidden_size=5, direction="bidirectional"))
add(make_case("gru_linear_before_reset_clip", "GRU",
              [("X", f32(3, 2, 3)), ("W", f32(1, 3 * 4, 3)), ("R", f32(1, 3 * 4, 4)), ("B", f32(1, 6 * 4)),
               ("sequence_lens", None), ("initial_h", f32(1, 2, 4))], 2, 14,
              hidden_size=4, linear_before_reset=1, clip=0.5))
add(make_case("rnn_reverse_relu", "RNN",
              [("X", f32(4, 2, 3)), ("W", f32(1, 4, 3)), ("R", f32(1, 4, 4)), ("B", f32(1, 8)),
               ("sequence_lens", np.array([2, 4], dtype=np.int32))], 2, 14,
              hidden_size=4, direction="reverse", activations=["Relu"]))

# Einsum
add(make_case("einsum_batch_matmul", "Einsum", [("a", f32(2, 3, 4)), ("b", f32(2, 4, 5))], 1, 12, equation="bij,bjk->bik"))
add(make_case("einsum_ellipsis_diagonal", "Einsum", [("a", f32(2, 3, 3))], 1, 12, equation="...ii->...i"))
add(make_case("einsum_three_operands", "Einsum", [("a", f32(2, 3)), ("b", f32(3, 4)), ("c", f32(4, 2))], 1, 12,
              equation="ij,jk,kl->il"))
add(make_case("einsum_ellipsis_broadcast", "Einsum", [("a", f32(2, 1, 3, 4)), ("b", f32(5, 4, 2))], 1, 12,
              equation="...ij,...jk->...ik", reference="onnx reference"))
add(make_case("einsum_implicit_bilinear", "Einsum", [("a", f32(2, 3)), ("b", f32(4, 3, 5)), ("c", f32(2, 5))], 1, 12,
              equation="bn,anm,bm->ba"))
add(make_case("einsum_implicit_sum", "Einsum", [("a", f32(3, 4)), ("b", f32(4))], 1, 12, equation="ij,j"))

# Matrix products
add(make_case("gemm_transposed_vector_bias", "Gemm", [("A", f32(4, 3)), ("B", f32(5, 4)), ("C", f32(5))], 1, 13,
              transA=1, transB=1, alpha=0.5, beta=2.0))
add(make_case("matmul_broadcast_batch", "MatMul", [("A", f32(2, 1, 3, 4)), ("B", f32(5, 4, 2))], 1, 13))
add(make_case("matmul_1d_3d", "MatMul", [("A", f32(4)), ("B", f32(2, 4, 3))], 1, 13))

# Normalization
add(make_case("layernorm_axis1_all_outputs", "LayerNormalization",
              [("X", f32(2, 3, 4)), ("scale", f32(3, 4)), ("B", f32(3, 4))], 3, 17, axis=1, epsilon=1e-3))
add(make_case("batchnorm_training_mode", "BatchNormalization",
              [("X", f32(3, 2, 4)), ("scale", f32(2)), ("B", f32(2)), ("mean", f32(2)),
               ("var", np.abs(f32(2)) + 0.5)], 3, 15, reference="onnx reference", training_mode=1, momentum=0.8))

(OUT / "cases.txt").write_text(
    "# <case dir>  <op> (<reference>)  -- generated by Tests/Fixtures/scripts/make_nn_fixtures.py\n"
    + "\n".join(cases) + "\n")
print(f"wrote {len(cases)} cases to {OUT}")
