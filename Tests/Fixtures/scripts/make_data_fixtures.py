#!/usr/bin/env python3
"""Writes the small data-file fixtures of Tests/OnnxTrainTests/Data (committed, so tests need no Python).

Run with the team venv: /work/venv/bin/python Tests/Fixtures/scripts/make_data_fixtures.py
Pinned: numpy<2 (1.26), safetensors, onnx 1.16.2. Every array's values are a deterministic
function of its index (0, 1, 2, ... scaled), so the Swift tests can recompute them.
"""
import io
import json
import os
import struct
import zipfile

import numpy as np
import onnx
from onnx import helper, numpy_helper, TensorProto
from safetensors.numpy import save_file

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data")
os.makedirs(OUT, exist_ok=True)


def ramp(dtype, shape):
    """Values the Swift tests recompute: i * 0.5 - 3 for floats, i - 3 for signed, i for unsigned, i % 3 == 0 for bool."""
    n = int(np.prod(shape)) if len(shape) else 1
    i = np.arange(n)
    dt = np.dtype(dtype)
    if dt.kind == "f":
        v = i * 0.5 - 3
    elif dt.kind == "i":
        v = i - 3
    elif dt.kind == "u":
        v = i
    else:
        v = i % 3 == 0
    return v.astype(dt).reshape(shape)


def path(name):
    return os.path.join(OUT, name)


# One .npy per supported dtype, shape (2, 3).
for dt in ["float16", "float32", "float64", "int8", "int16", "int32", "int64",
           "uint8", "uint16", "uint32", "uint64", "bool"]:
    np.save(path(f"{dt}.npy"), ramp(dt, (2, 3)))

# Shapes: scalar, empty, rank 4.
np.save(path("scalar.npy"), np.array(2.5, dtype=np.float32))
np.save(path("empty.npy"), np.zeros((0, 3), dtype=np.float32))
np.save(path("rank4.npy"), ramp("float32", (2, 1, 3, 2)))

# Header versions 2.0 and 3.0 (numpy's writer, forced).
from numpy.lib import format as npformat
for version in [(2, 0), (3, 0)]:
    with open(path(f"version{version[0]}.npy"), "wb") as f:
        a = ramp("float32", (3, 2))
        npformat.write_array(f, a, version=version)

# Things we must refuse with a clear error.
np.save(path("fortran.npy"), np.asfortranarray(ramp("float32", (2, 3))))
np.save(path("bigendian.npy"), ramp(">f4", (2, 3)))
np.save(path("complex.npy"), np.arange(4, dtype=np.complex64))
with open(path("truncated.npy"), "wb") as f:
    buf = io.BytesIO()
    np.save(buf, ramp("float32", (4, 4)))
    f.write(buf.getvalue()[:-7])

# .npz: stored and deflated, several dtypes.
arrays = {"x": ramp("float32", (2, 3)), "ids": ramp("int64", (4,)), "mask": ramp("bool", (3,))}
np.savez(path("stored.npz"), **arrays)
np.savez_compressed(path("deflated.npz"), **arrays)
# An npz whose member is corrupt (header says 6 floats, data has 5).
with zipfile.ZipFile(path("bad_member.npz"), "w") as z:
    buf = io.BytesIO()
    np.save(buf, ramp("float32", (2, 3)))
    z.writestr("good.npy", buf.getvalue())
    z.writestr("broken.npy", buf.getvalue()[:-4])

# .safetensors with metadata and every dtype safetensors.numpy supports.
st = {
    "a_f32": ramp("float32", (2, 3)),
    "b_f64": ramp("float64", (3,)),
    "c_f16": ramp("float16", (2, 2)),
    "d_i8": ramp("int8", (4,)),
    "e_i16": ramp("int16", (4,)),
    "f_i32": ramp("int32", (4,)),
    "g_i64": ramp("int64", (2, 2)),
    "h_u8": ramp("uint8", (4,)),
    "i_u16": ramp("uint16", (4,)),
    "j_u32": ramp("uint32", (4,)),
    "k_u64": ramp("uint64", (4,)),
    "l_bool": ramp("bool", (5,)),
    "m_scalar": np.array(7.0, dtype=np.float32),
}
save_file(st, path("tensors.safetensors"), metadata={"format": "pt", "note": "onnx-train fixture"})

# BF16 is not a numpy type: write the file by hand. Values 1.5, -2, 0.25, 3 (exact in bfloat16).
bf = np.array([1.5, -2.0, 0.25, 3.0], dtype=np.float32).view(np.uint32) >> 16
bf_bytes = bf.astype("<u2").tobytes()
header = json.dumps({"w": {"dtype": "BF16", "shape": [2, 2], "data_offsets": [0, len(bf_bytes)]}}).encode()
header += b" " * (-len(header) % 8)
with open(path("bf16.safetensors"), "wb") as f:
    f.write(struct.pack("<Q", len(header)) + header + bf_bytes)

# A safetensors file whose offsets overrun the data.
header = json.dumps({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}).encode()
with open(path("overrun.safetensors"), "wb") as f:
    f.write(struct.pack("<Q", len(header)) + header + b"\0" * 8)

# TensorProto .pb files (onnx's numpy_helper), named and unnamed.
os.makedirs(path("pb"), exist_ok=True)
for i, (name, a) in enumerate([("x", ramp("float32", (2, 3))), ("ids", ramp("int64", (4,)))]):
    with open(path(f"pb/input_{i}.pb"), "wb") as f:
        f.write(numpy_helper.from_array(a, name).SerializeToString())
with open(path("pb_unnamed.pb"), "wb") as f:
    f.write(numpy_helper.from_array(ramp("int32", (3,))).SerializeToString())

# A tiny model for the CLI and robustness tests: y = Relu(x + b), s = Shape(x), with a symbolic
# batch dimension (only ops every build of onnx-train has: Add, Relu, Shape).
b = np.array([0.5, -1.0, 2.0], dtype=np.float32)
graph = helper.make_graph(
    [helper.make_node("Add", ["x", "b"], ["z"], name="add"),
     helper.make_node("Relu", ["z"], ["y"], name="relu"),
     helper.make_node("Shape", ["x"], ["s"], name="shape")],
    "tiny",
    [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3])],
    [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3]),
     helper.make_tensor_value_info("s", TensorProto.INT64, [2])],
    [numpy_helper.from_array(b, "b")],
)
model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="make_data_fixtures")
model.ir_version = 8
onnx.checker.check_model(model)
onnx.save(model, path("tiny.onnx"))
x = ramp("float32", (2, 3))
np.savez(path("tiny_feeds.npz"), x=x)
np.save(path("tiny_x.npy"), x)
np.savez(path("tiny_expected.npz"), y=np.maximum(x + b, 0), s=np.array(x.shape, dtype=np.int64))

# A model whose op has no kernel (a made-up op in a made-up domain).
graph = helper.make_graph(
    [helper.make_node("FrobnicateNotReal", ["x"], ["y"], domain="com.example.nokernel", name="frob")],
    "nokernel",
    [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
    [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
)
model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example.nokernel", 3)])
model.ir_version = 8
onnx.save(model, path("nokernel.onnx"))

print("wrote", sorted(os.listdir(OUT)))

# Crafted models whose tensors claim far more elements than they hold: the loader must refuse them
# before allocating (a 2 TiB zero fill would abort the process).
os.makedirs(path("crafted"), exist_ok=True)


def crafted(name, initializers=(), sparse=()):
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])], name,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
        list(initializers), sparse_initializer=list(sparse))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    with open(path(f"crafted/{name}.onnx"), "wb") as f:
        f.write(model.SerializeToString())


def tensor_proto(name, dims, data_type=TensorProto.FLOAT, floats=(), raw=None):
    t = TensorProto()
    t.name = name
    t.data_type = data_type
    t.dims.extend(dims)
    t.float_data.extend(floats)
    if raw is not None:
        t.raw_data = raw
    return t


crafted("huge_float_data", [tensor_proto("w", [1 << 39], floats=[1.0])])
crafted("huge_no_data", [tensor_proto("w", [1 << 20, 1 << 19])])
crafted("huge_raw_data", [tensor_proto("w", [1 << 39], raw=b"\0" * 4)])
crafted("overflowing_dims", [tensor_proto("w", [1 << 62, 1 << 62], floats=[1.0])])
values = tensor_proto("s", [1], floats=[1.0])
indices = tensor_proto("", [1], data_type=TensorProto.INT64)
indices.int64_data.extend([0])
crafted("huge_sparse", sparse=[helper.make_sparse_tensor(values, indices, [1 << 20, 1 << 20])])
crafted("overflowing_sparse", sparse=[helper.make_sparse_tensor(values, indices, [1 << 62, 1 << 62])])
sparse_index_out = tensor_proto("", [1], data_type=TensorProto.INT64)
sparse_index_out.int64_data.extend([99])
crafted("sparse_index_out_of_range", sparse=[helper.make_sparse_tensor(values, sparse_index_out, [4])])
