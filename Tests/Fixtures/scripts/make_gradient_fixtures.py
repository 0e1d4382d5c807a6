"""Gradient-graph fixtures (what onnxruntime.training.experimental.export_gradient_graph produces).

export_gradient_graph cannot be imported with torch 2.13 (its symbolic registry imports the removed
torch.onnx._internal.jit_utils), so this script does what it does by hand: a TorchScript export of
model + loss with the parameters as graph inputs, then onnxruntime's GradientGraphBuilder.

For every case writes Tests/Fixtures/gradient/<name>/:
    gradient_graph.onnx   inputs: input, labels, <params...>; outputs: output, loss, <param>_grad...
    params.npz            initial parameters, keyed by graph input name
    data.npz              input, labels (batch-first; batch k = rows [k*B, (k+1)*B), cycling)
    expected.npz          losses float32[STEPS]; param:<name> after STEPS steps of plain SGD;
                          grad0:<name> = the gradients of the first step
    meta.json             names, batch size, lr, steps, opset, the graph's inputs/outputs
The trajectory runs the gradient graph in onnxruntime's CPU InferenceSession and updates the
parameters in numpy (float32): p <- p - lr * p_grad.

Run: /work/venv/bin/python Tests/Fixtures/scripts/make_gradient_fixtures.py
"""

import io

import numpy as np
import onnx
import onnxruntime as ort
import torch
import torch.nn.functional as F
from onnxruntime.capi._pybind_state import GradientGraphBuilder
from torch.onnx import TrainingMode

from common import FIXTURES, fresh_dir, quiet_torch_export_warnings, save_npz, seed_all, write_json
from models import MLP, EmbeddingBag, SeedModel

OUT = FIXTURES / "gradient"
STEPS = 20


def expose_cross_entropy_log_prob(proto):
    """Give SoftmaxCrossEntropyLoss its optional log_prob output.

    torch exports the op with the loss output only; onnxruntime's gradient builder
    (SoftmaxCrossEntropyLossGrad reads log_prob) fails with "i < node_->OutputDefs().size()" without it.
    """
    for node in proto.graph.node:
        if node.op_type == "SoftmaxCrossEntropyLoss" and len(node.output) == 1:
            node.output.append(node.output[0] + "_log_prob")


def build_gradient_graph(model, example_input, example_labels, path, opset, loss_fn=F.cross_entropy):
    """Export model + loss_fn (F.cross_entropy by default) with parameters as inputs, then build the gradient graph."""

    class WithLoss(torch.nn.Module):
        def forward(self, model_input, labels, *params):
            for param, value in zip(model.parameters(), params):
                param.data = value.data
            output = model(model_input)
            return output, loss_fn(output, labels)

    param_names = [n for n, _ in model.named_parameters()]
    f = io.BytesIO()
    torch.onnx.export(
        WithLoss(),
        (example_input, example_labels, *model.parameters()),
        f,
        dynamo=False,
        export_params=True,
        opset_version=opset,
        do_constant_folding=False,
        training=TrainingMode.TRAINING,
        input_names=["input", "labels", *param_names],
        output_names=["output", "loss"],
        dynamic_axes={"input": {0: "batch_size"}, "labels": {0: "batch_size"}, "output": {0: "batch_size"}},
    )
    proto = onnx.load_from_string(f.getvalue())
    expose_cross_entropy_log_prob(proto)
    builder = GradientGraphBuilder(proto.SerializeToString(), {"loss"}, set(param_names), "loss")
    builder.build()
    builder.save(str(path))
    # The builder orders the <p>_grad outputs by iterating the Python set it was given, so the order
    # changes with PYTHONHASHSEED. Rewrite it as: output, loss, then gradients in parameter order.
    graph_proto = onnx.load(path)
    by_name = {o.name: o for o in graph_proto.graph.output}
    order = ["output", "loss"] + [n + "_grad" for n in param_names]
    assert sorted(order) == sorted(by_name), list(by_name)
    outputs = [onnx.ValueInfoProto.FromString(by_name[n].SerializeToString()) for n in order]
    del graph_proto.graph.output[:]
    graph_proto.graph.output.extend(outputs)
    onnx.checker.check_model(graph_proto)
    onnx.save(graph_proto, path)
    return param_names


def torch_grads(model, x, y, loss_fn=F.cross_entropy):
    """Reference gradients from PyTorch autograd for the same parameters and batch."""
    model.zero_grad()
    loss = loss_fn(model(torch.from_numpy(x)), torch.from_numpy(y))
    loss.backward()
    return float(loss), {n: p.grad.numpy().copy() for n, p in model.named_parameters()}


def describe(v):
    t = v.type.tensor_type
    return {
        "name": v.name,
        "type": onnx.TensorProto.DataType.Name(t.elem_type),
        "shape": [d.dim_param if d.dim_param else d.dim_value for d in t.shape.dim],
    }


def make_case(name, model, data, batch, lr, opset, loss_fn=F.cross_entropy, example=None,
              loss_doc="torch.nn.functional.cross_entropy (mean) -> SoftmaxCrossEntropyLoss"):
    """example: (input, labels) to export with instead of the first batch (the walkthrough's own)."""
    case = fresh_dir(OUT / name)
    path = case / "gradient_graph.onnx"
    x0, y0 = example if example is not None else (data["input"][:batch], data["labels"][:batch])
    param_names = build_gradient_graph(model, torch.from_numpy(x0), torch.from_numpy(y0), path, opset, loss_fn)
    params = {n: p.detach().numpy().copy() for n, p in model.named_parameters()}

    graph = onnx.load(path).graph
    inputs = [describe(v) for v in graph.input]
    outputs = [describe(v) for v in graph.output]
    assert [i["name"] for i in inputs] == ["input", "labels", *param_names], inputs

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    fetches = ["loss"] + [n + "_grad" for n in param_names]
    n_batches = data["input"].shape[0] // batch
    current = {n: v.copy() for n, v in params.items()}
    losses = []
    for step in range(STEPS):
        k = step % n_batches
        feeds = {"input": data["input"][k * batch:(k + 1) * batch], "labels": data["labels"][k * batch:(k + 1) * batch]}
        feeds.update(current)
        loss, *grads = session.run(fetches, feeds)
        if step == 0:
            first_grads = dict(zip(param_names, grads))
            ref_loss, ref = torch_grads(model, feeds["input"], feeds["labels"], loss_fn)
            assert abs(ref_loss - float(loss)) < 1e-5 * max(1.0, abs(ref_loss)), (name, ref_loss, loss)
            for n in param_names:
                assert np.allclose(ref[n], first_grads[n], atol=1e-5), (name, n)
        losses.append(float(loss))
        for n, g in zip(param_names, grads):
            current[n] = (current[n] - np.float32(lr) * g).astype(np.float32)

    if example is not None:
        # onnxruntime on the example the graph was exported with, at the initial parameters.
        feeds = {"input": x0, "labels": y0, **params}
        names = [o.name for o in graph.output]
        save_npz(case / "example.npz", {"input": x0, "labels": y0})
        save_npz(case / "example_expected.npz", dict(zip(names, session.run(names, feeds))))
    save_npz(case / "params.npz", params)
    save_npz(case / "data.npz", data)
    expected = {"losses": np.asarray(losses, dtype=np.float32)}
    expected.update({"param:" + n: v for n, v in current.items()})
    expected.update({"grad0:" + n: v for n, v in first_grads.items()})
    save_npz(case / "expected.npz", expected)
    write_json(case / "meta.json", {
        "batch_size": batch,
        "batches": int(n_batches),
        "steps": STEPS,
        "lr": lr,
        "update": "p -= lr * <p>_grad (float32), after each step's forward with the pre-update params",
        "loss": loss_doc,
        "opset": opset,
        "user_inputs": ["input", "labels"],
        "parameters": param_names,
        "loss_output": "loss",
        "gradient_outputs": [n + "_grad" for n in param_names],
        "inputs": inputs,
        "outputs": outputs,
        "initializers": [i.name for i in graph.initializer],
        "ops": sorted({(n.domain or "ai.onnx") + ":" + n.op_type for n in graph.node}),
    })
    print(f"{name}: losses {losses[0]:.4f} -> {losses[-1]:.4f}; ops {sorted({n.op_type for n in graph.node})}")


def main():
    quiet_torch_export_warnings()
    OUT.mkdir(parents=True, exist_ok=True)

    seed_all(3001)
    rng = np.random.RandomState(31)
    B = 6
    x = rng.randn(4 * B, 8).astype(np.float32)
    y = (x[:, :3] @ rng.randn(3, 3).astype(np.float32)).argmax(axis=1).astype(np.int64)
    make_case("mlp", MLP(8, 16, 3), {"input": x, "labels": y}, B, lr=0.5, opset=17)

    seed_all(3002)
    rng = np.random.RandomState(32)
    B, L, V = 4, 5, 12
    idx = rng.randint(0, V, size=(4 * B, L)).astype(np.int64)
    y = (idx.sum(axis=1) % 3).astype(np.int64)
    make_case("embedding", EmbeddingBag(vocab=V, d=6, classes=3), {"input": idx, "labels": y}, B, lr=0.5, opset=17)

    # MyModel of onnxruntime's train-pytorch-in-js walkthrough, at export_gradient_graph's default opset 12.
    seed_all(3003)
    rng = np.random.RandomState(33)
    B = 4
    x = rng.randn(4 * B, 10).astype(np.float32)
    y = (x[:, 0] + x[:, 1] > 0).astype(np.int64)
    make_case("seed", SeedModel(), {"input": x, "labels": y}, B, lr=0.1, opset=12)

    # The walkthrough's gradient graph exactly as its README exports it: example input [32, 10],
    # labels torch.tensor([1]) (both dimension 0 named batch_size), and its loss, which takes log2 of
    # the raw logits. The parameters keep the logits positive (non-negative fc2 weights, bias >= 1)
    # so that loss is a number; the graph is the same whatever the values.
    seed_all(3004)
    rng = np.random.RandomState(34)
    model = SeedModel()
    with torch.no_grad():
        model.fc2.weight.abs_()
        model.fc2.bias.abs_().add_(1.0)
    B = 8
    x = rng.randn(4 * B, 10).astype(np.float32)
    y = (x[:, 0] + x[:, 1] > 0).astype(np.int64)
    example = (rng.randn(32, 10).astype(np.float32), np.array([1], dtype=np.int64))
    make_case("walkthrough", model, {"input": x, "labels": y}, B, lr=0.01, opset=12, loss_fn=walkthrough_loss, example=example,
              loss_doc="the walkthrough's binary_cross_entropy_loss: -sum(t*log2(out[:, 0]) + (1-t)*log2(out[:, 1]))")


def walkthrough_loss(inp, target):
    """train-pytorch-in-js README's binary_cross_entropy_loss, as written there."""
    return -torch.sum(target * torch.log2(inp[:, 0]) + (1 - target) * torch.log2(inp[:, 1]))


if __name__ == "__main__":
    main()
