"""A minimal, dependency-free reader for onnxruntime-training checkpoint files (FlatBuffers, "ODTC").

Written from the schema (onnxruntime/core/flatbuffers/schema/ort_training_checkpoint.fbs and ort.fbs)
so that the round-trip fixture's expected contents do not come only from onnxruntime's own loader,
which exposes neither the optimizer momentums nor the group step to Python.
"""

import struct

import numpy as np
from onnx import helper

_u8, _u16, _i32, _u32, _i64, _f32 = (struct.Struct("<" + c) for c in "BHiIqf")


class _Table:
    def __init__(self, buf, pos):
        self.buf, self.pos = buf, pos
        vt = pos - _i32.unpack_from(buf, pos)[0]
        self.vt_size = _u16.unpack_from(buf, vt)[0]
        self.vt = vt

    def _field(self, fid):
        slot = 4 + 2 * fid
        if slot >= self.vt_size:
            return 0
        return _u16.unpack_from(self.buf, self.vt + slot)[0]

    def scalar(self, fid, fmt, default=0):
        off = self._field(fid)
        return fmt.unpack_from(self.buf, self.pos + off)[0] if off else default

    def _indirect(self, fid):
        off = self._field(fid)
        if not off:
            return None
        p = self.pos + off
        return p + _u32.unpack_from(self.buf, p)[0]

    def table(self, fid):
        p = self._indirect(fid)
        return None if p is None else _Table(self.buf, p)

    def string(self, fid):
        p = self._indirect(fid)
        if p is None:
            return None
        n = _u32.unpack_from(self.buf, p)[0]
        return self.buf[p + 4:p + 4 + n].decode()

    def vector(self, fid):
        """(start, count) of a vector field, or None when absent."""
        p = self._indirect(fid)
        return None if p is None else (p + 4, _u32.unpack_from(self.buf, p)[0])

    def tables(self, fid):
        v = self.vector(fid)
        if v is None:
            return None
        start, n = v
        return [_Table(self.buf, start + 4 * i + _u32.unpack_from(self.buf, start + 4 * i)[0]) for i in range(n)]


def _tensor(t):
    name = t.string(0)
    dims_v = t.vector(2)
    dims = [] if dims_v is None else [_i64.unpack_from(t.buf, dims_v[0] + 8 * i)[0] for i in range(dims_v[1])]
    dtype = t.scalar(3, _i32)
    raw_v = t.vector(4)
    raw = b"" if raw_v is None else bytes(t.buf[raw_v[0]:raw_v[0] + raw_v[1]])
    np_type = helper.tensor_dtype_to_np_dtype(dtype)
    external = t.scalar(6, _i64, default=-1)
    # Nominal checkpoints store name + data_type only (no dims, no bytes): no array then.
    nominal = not raw and (not dims or int(np.prod(dims)) != 0)
    array = None if nominal else np.frombuffer(raw, dtype=np_type).reshape(dims)
    return name, {"dims": dims, "data_type": dtype, "array": array, "external_data_offset": external}


def read_checkpoint(path):
    """Return a dict: version, module_state, optimizer_groups, properties (everything in the file)."""
    with open(path, "rb") as f:
        buf = f.read()
    assert buf[4:8] == b"ODTC", "not an onnxruntime training checkpoint"
    root = _Table(buf, _u32.unpack_from(buf, 0)[0])
    out = {"version": root.scalar(0, _i32)}
    ms = root.table(1)
    if ms is not None:
        out["module_state"] = {
            "requires_grad_params": [_tensor(t) for t in (ms.tables(0) or [])],
            "frozen_params": [_tensor(t) for t in (ms.tables(1) or [])],
            "frozen_params_present": ms.vector(1) is not None,
            "is_nominal_state": bool(ms.scalar(2, _u8)),
            "has_external_data": bool(ms.scalar(3, _u8)),
        }
    groups = root.tables(2)
    out["optimizer_groups_present"] = groups is not None
    out["optimizer_groups"] = []
    for g in groups or []:
        states = []
        for s in g.tables(3) or []:
            states.append((s.string(0), [_tensor(t) for t in (s.tables(1) or [])]))
        out["optimizer_groups"].append({
            "group_name": g.string(0),
            "step": g.scalar(1, _i64),
            "initial_learning_rate": g.scalar(2, _f32, default=0.0),
            "optimizer_states": states,
        })
    bag = root.table(3)
    props = {"ints": [], "floats": [], "strings": []}
    if bag is not None:
        for p in bag.tables(0) or []:
            props["ints"].append((p.string(0), p.scalar(1, _i64)))
        for p in bag.tables(1) or []:
            props["floats"].append((p.string(0), p.scalar(1, _f32, default=0.0)))
        for p in bag.tables(2) or []:
            props["strings"].append((p.string(0), p.string(1)))
    out["property_bag_present"] = bag is not None
    out["properties"] = props
    return out
