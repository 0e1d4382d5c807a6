#!/usr/bin/env python3
"""Checks models that onnx-train's ModelWriter wrote against onnx and onnxruntime.

  ONNX_TRAIN_WRITE_MODELS_TO=/tmp/mw swift test --filter ModelWriterTests/testWriteModelsForTheInteropCheck
  /work/venv/bin/python Tests/Fixtures/scripts/check_model_writer.py /tmp/mw

For each re-serialised inference fixture: onnx.checker.check_model (full_check with shape
inference), then onnxruntime runs it on the fixture's test_data_set_0 and must give the stored
outputs; the result is also compared field by field with the original protobuf (after clearing
what the writer legitimately drops: nothing but sparse initializers, which it densifies).
Training graphs (com.microsoft ops) are checked structurally against the original.
Pinned: onnx==1.16.2, onnxruntime-training==1.19.2, numpy<2. Exits non-zero on any mismatch.
"""
import os
import sys

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.join(HERE, "..")


def canonical(model):
    """The model with map-like fields sorted, so order differences do not count."""
    m = onnx.ModelProto()
    m.CopyFrom(model)

    def fix_graph(g):
        # An empty string written explicitly and one left unset mean the same; compare as unset.
        for item in [g, *g.node, *g.input, *g.output, *g.value_info]:
            if not item.doc_string:
                item.ClearField("doc_string")
        for n in g.node:
            attrs = sorted(n.attribute, key=lambda a: a.name)
            del n.attribute[:]
            n.attribute.extend(attrs)
            for a in n.attribute:
                if a.HasField("g"):
                    fix_graph(a.g)
                for sub in a.graphs:
                    fix_graph(sub)
        for t in g.initializer:
            # The writer always uses raw_data; compare values, not encodings.
            arr = numpy_helper.to_array(t)
            t.CopyFrom(numpy_helper.from_array(arr, t.name))
    fix_graph(m.graph)
    return m


def main(folder):
    failures = 0
    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name)
        ours = onnx.load(path)
        training = name.startswith("training_")
        if training:
            original = onnx.load(os.path.join(FIXTURES, "training", name[len("training_"):-5], "training_model.onnx"))
        else:
            case = os.path.join(FIXTURES, "inference", name[:-5])
            original = onnx.load(os.path.join(case, "model.onnx"))
        try:
            onnx.checker.check_model(original, full_check=not training)
            original_passes = True
        except Exception:  # noqa: BLE001 - e.g. MaxPoolGrad, which onnxruntime adds to ai.onnx
            original_passes = False
        try:
            onnx.checker.check_model(ours, full_check=not training)
        except Exception as e:  # noqa: BLE001 - report every checker complaint
            if original_passes:
                print(f"FAIL {name}: onnx.checker: {e}")
                failures += 1
                continue
        if not training:
            sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
            data = os.path.join(case, "test_data_set_0")
            feeds = {}
            for i, inp in enumerate(sess.get_inputs()):
                t = onnx.TensorProto()
                t.ParseFromString(open(os.path.join(data, f"input_{i}.pb"), "rb").read())
                feeds[inp.name] = numpy_helper.to_array(t)
            outs = sess.run(None, feeds)
            for i, out in enumerate(outs):
                t = onnx.TensorProto()
                t.ParseFromString(open(os.path.join(data, f"output_{i}.pb"), "rb").read())
                expected = numpy_helper.to_array(t)
                if not np.allclose(out, expected, rtol=1e-5, atol=1e-6):
                    print(f"FAIL {name}: output {i} differs by {np.abs(out - expected).max()}")
                    failures += 1
        a, b = canonical(ours), canonical(original)
        opsets = [sorted((o.domain, o.version) for o in m.opset_import) for m in (ours, original)]
        if a.graph != b.graph or opsets[0] != opsets[1] or a.ir_version != b.ir_version:
            diffs = [f for f in ["node", "input", "output", "value_info", "initializer", "name"]
                     if getattr(a.graph, f) != getattr(b.graph, f)]
            print(f"FAIL {name}: differs from the original in {diffs or 'opsets/ir_version'}")
            failures += 1
        else:
            print(f"ok   {name}")
    print(f"{failures} failure(s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
