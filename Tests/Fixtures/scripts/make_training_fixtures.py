"""On-device training fixtures: onnxruntime-training artifacts plus onnxruntime's own training trajectory.

For every case writes Tests/Fixtures/training/<name>/:
    training_model.onnx, eval_model.onnx, optimizer_model.onnx, checkpoint   (generate_artifacts)
    data.npz              one array per user input of training_model.onnx, by input name, batch-first
    expected.npz          losses float32[STEPS], param:<name> after training (trainable and frozen)
    expected_checkpoint   CheckpointState.save_checkpoint(..., include_optimizer_state=True) after training
    meta.json             batch size, rows per step of each input, lr, optimizer, loss, names
and Tests/Fixtures/training/checkpoint_roundtrip/ (see make_checkpoint_roundtrip in this file).

Training loop (the Swift tests replay exactly this):
    state = CheckpointState.load_checkpoint(checkpoint); module = Module(training_model, state)
    optimizer = Optimizer(optimizer_model, module); optimizer.set_learning_rate(lr); module.train()
    for step k in 0..<STEPS: batch k = for each user input n, rows [k*r_n, (k+1)*r_n) of data[n] with
        k taken modulo (rows_n / r_n) (r_n = meta.batch_rows[n]);
        loss = module(*batch); optimizer.step(); module.lazy_reset_grad()

Run: /work/venv/bin/python Tests/Fixtures/scripts/make_training_fixtures.py
"""

import io

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnxruntime.training import artifacts
from onnxruntime.training.api import CheckpointState, Module, Optimizer
from torch.onnx import TrainingMode

import checkpoint_reader
from common import FIXTURES, fresh_dir, quiet_torch_export_warnings, save_npz, seed_all, write_json
from models import GPT, MLP, SeqClassifier, SmallCNN, TinyResNet, UpsamplingCNN, randomize_norm_params

OUT = FIXTURES / "training"
OPSET = 17
STEPS = 30
LR = {"adamw": 1e-2, "sgd": 5e-2}
LOSSES = {
    "ce": artifacts.LossType.CrossEntropyLoss,
    "mse": artifacts.LossType.MSELoss,
    "bce": artifacts.LossType.BCEWithLogitsLoss,
    "l1": artifacts.LossType.L1Loss,
}
OPTIMIZERS = {"adamw": artifacts.OptimType.AdamW, "sgd": artifacts.OptimType.SGD}


def export_training(model, example, dynamic_batch):
    """TorchScript export in training mode with every parameter kept as a named initializer."""
    f = io.BytesIO()
    torch.onnx.export(
        model,
        (example,),
        f,
        dynamo=False,
        opset_version=OPSET,
        training=TrainingMode.TRAINING,
        do_constant_folding=False,
        export_params=True,
        input_names=["input"],
        output_names=["output"],
        dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}} if dynamic_batch else None,
    )
    proto = onnx.load_from_string(f.getvalue())
    expose_layer_norm_stats(proto)
    return proto


def expose_layer_norm_stats(proto):
    """Give every LayerNormalization its optional Mean and InvStdDev outputs.

    torch exports LayerNormalization with one output; onnxruntime's gradient builder reads the saved
    statistics from outputs 1 and 2 and fails ("i < node_->OutputDefs().size()") without them.
    """
    for node in proto.graph.node:
        if node.op_type == "LayerNormalization" and len(node.output) == 1:
            node.output.extend([node.output[0] + "_mean", node.output[0] + "_inv_std_dev"])


def graph_io(path):
    m = onnx.load(path)

    def describe(v):
        t = v.type.tensor_type
        dims = [d.dim_param if d.dim_param else d.dim_value for d in t.shape.dim] if t.HasField("shape") else None
        if v.type.HasField("sequence_type"):
            return {"name": v.name, "type": "seq(" + onnx.TensorProto.DataType.Name(v.type.sequence_type.elem_type.tensor_type.elem_type) + ")"}
        return {"name": v.name, "type": onnx.TensorProto.DataType.Name(t.elem_type), "shape": dims}

    return [describe(v) for v in m.graph.input], [describe(v) for v in m.graph.output]


TORCH_LOSSES = {
    "ce": torch.nn.functional.cross_entropy,
    "mse": torch.nn.functional.mse_loss,
    "bce": torch.nn.functional.binary_cross_entropy_with_logits,
    "l1": torch.nn.functional.l1_loss,
}


def check_against_torch(name, model, loss, batch, ort_loss, ort_grads):
    """The first step's loss and gradients must match PyTorch autograd (train mode) on the same batch."""
    model.train()
    model.zero_grad()
    x, y = (torch.from_numpy(np.ascontiguousarray(a)) for a in batch)
    value = TORCH_LOSSES[loss](model(x), y)
    value.backward()
    assert abs(float(value) - ort_loss) < 1e-5 * max(1.0, abs(ort_loss)), (name, float(value), ort_loss)
    for n, p in model.named_parameters():
        assert np.allclose(p.grad.numpy(), ort_grads[n], rtol=1e-4, atol=1e-5), (name, n, np.abs(p.grad.numpy() - ort_grads[n]).max())


def ops_of(path):
    return sorted({(n.domain or "ai.onnx") + ":" + n.op_type for n in onnx.load(path).graph.node})


def make_case(name, model, example, data, batch_rows, loss, optim, dynamic_batch=False, nominal=False):
    case = fresh_dir(OUT / name)
    proto = export_training(model, example, dynamic_batch)
    init_names = [i.name for i in proto.graph.initializer]
    trainable = [n for n, _ in model.named_parameters() if n in init_names]
    assert len(trainable) == len(list(model.parameters())), "every parameter must be an initializer"
    # BatchNorm running statistics become frozen parameters (updated in place by the training graph).
    frozen = [n for n, _ in model.named_buffers() if n.endswith(("running_mean", "running_var")) and n in init_names]
    artifacts.generate_artifacts(
        proto,
        requires_grad=trainable,
        frozen_params=frozen,
        loss=LOSSES[loss],
        optimizer=OPTIMIZERS[optim],
        artifact_directory=str(case),
        nominal_checkpoint=nominal,
    )
    train_inputs, train_outputs = graph_io(case / "training_model.onnx")
    eval_inputs, eval_outputs = graph_io(case / "eval_model.onnx")
    optim_inputs, optim_outputs = graph_io(case / "optimizer_model.onnx")

    state = CheckpointState.load_checkpoint(str(case / "checkpoint"))
    eval_ok = True
    try:
        Module(str(case / "training_model.onnx"), state, str(case / "eval_model.onnx"), device="cpu")
    except Exception as e:  # noqa: BLE001 - recorded as a known onnxruntime quirk
        eval_ok = False
        eval_error = str(e).strip().split("FAIL : ")[-1]
    state = CheckpointState.load_checkpoint(str(case / "checkpoint"))
    module = Module(str(case / "training_model.onnx"), state, device="cpu")
    optimizer = Optimizer(str(case / "optimizer_model.onnx"), module)
    optimizer.set_learning_rate(LR[optim])
    module.train()

    user_inputs = [n for n in module.input_names()]
    assert sorted(user_inputs) == sorted(data), (user_inputs, list(data))
    param_names = [i["name"] for i in train_inputs if i["name"] in trainable + frozen]
    batches = {n: data[n].shape[0] // batch_rows[n] for n in user_inputs}
    assert len(set(batches.values())) == 1, batches
    n_batches = batches[user_inputs[0]]

    losses = []
    for step in range(STEPS):
        k = step % n_batches
        feeds = [data[n][k * batch_rows[n]:(k + 1) * batch_rows[n]] for n in user_inputs]
        value = module(*feeds)
        losses.append(float(np.asarray(value)))
        if step == 0:
            # Gradients of the first batch at the initial parameters (before any optimizer step).
            first_grads = {n: np.asarray(state.parameters[n].grad).copy() for n in trainable}
        optimizer.step()
        module.lazy_reset_grad()

    check_against_torch(name, model, loss, [data[n][:batch_rows[n]] for n in user_inputs], losses[0], first_grads)
    expected = {"losses": np.asarray(losses, dtype=np.float32)}
    for n in param_names:
        expected["param:" + n] = np.asarray(state.parameters[n].data)
    for n in param_names:
        if n in first_grads:
            expected["grad0:" + n] = first_grads[n]
    # Cross-check: the contiguous buffer is the concatenation in training-model parameter order.
    flat = module.get_contiguous_parameters(trainable_only=False).numpy()
    assert np.array_equal(flat, np.concatenate([expected["param:" + n].ravel() for n in param_names])), name
    save_npz(case / "expected.npz", expected)
    CheckpointState.save_checkpoint(state, str(case / "expected_checkpoint"), include_optimizer_state=True)
    save_npz(case / "data.npz", data)

    meta = {
        "batch_size": int(batch_rows[user_inputs[0]]),
        "batch_rows": {n: int(batch_rows[n]) for n in user_inputs},
        "batches": int(n_batches),
        "steps": STEPS,
        "lr": LR[optim],
        "optimizer": optim,
        "loss": LOSSES[loss].name,
        "opset": OPSET,
        "user_inputs": user_inputs,
        "parameters": param_names,
        "trainable": [n for n in param_names if n in trainable],
        "frozen": [n for n in param_names if n in frozen],
        "loss_output": module.output_names()[0],
        "optimizer_step_after_training": STEPS,
        "eval_model_loads_in_onnxruntime": eval_ok,
        "training_model": {"inputs": train_inputs, "outputs": train_outputs, "ops": ops_of(case / "training_model.onnx")},
        "eval_model": {"inputs": eval_inputs, "outputs": eval_outputs, "ops": ops_of(case / "eval_model.onnx")},
        "optimizer_model": {"inputs": optim_inputs, "outputs": optim_outputs, "ops": ops_of(case / "optimizer_model.onnx")},
    }
    if not eval_ok:
        meta["eval_model_error"] = eval_error
    write_json(case / "meta.json", meta)
    print(f"{name}: losses {losses[0]:.4f} -> {losses[-1]:.4f}; user inputs {user_inputs}; "
          f"loss output {meta['loss_output']}; eval loads: {eval_ok}")
    return state


PROPERTIES = {
    "epoch": 7,  # IntProperty (int64)
    "neg_int": -123456789012,  # needs all 64 bits
    "best_loss": 0.25,  # FloatProperty, exact in float32
    "lr_note": 0.1,  # FloatProperty, rounded to float32 on save
    "run_name": "onnx-train fixture",  # StringProperty
    "empty": "",
}


def make_checkpoint_roundtrip(data):
    """Checkpoints with optimizer state and a property bag, plus their contents read independently.

    Starts from mlp_ce_adamw's generated checkpoint, takes 3 AdamW steps (so momentums and step are
    non-trivial), adds PROPERTIES, and saves it with and without the optimizer state.
    """
    src = OUT / "mlp_ce_adamw"
    case = fresh_dir(OUT / "checkpoint_roundtrip")
    state = CheckpointState.load_checkpoint(str(src / "checkpoint"))
    module = Module(str(src / "training_model.onnx"), state, device="cpu")
    optimizer = Optimizer(str(src / "optimizer_model.onnx"), module)
    optimizer.set_learning_rate(LR["adamw"])
    module.train()
    B = 8
    for k in range(3):
        module(data["input"][k * B:(k + 1) * B], data["labels"][k * B:(k + 1) * B])
        optimizer.step()
        module.lazy_reset_grad()
    for key, value in PROPERTIES.items():
        state.properties[key] = value
    with_opt = case / "checkpoint_with_optimizer"
    without_opt = case / "checkpoint_without_optimizer"
    CheckpointState.save_checkpoint(state, str(with_opt), include_optimizer_state=True)
    CheckpointState.save_checkpoint(state, str(without_opt), include_optimizer_state=False)

    contents = checkpoint_reader.read_checkpoint(with_opt)
    bare = checkpoint_reader.read_checkpoint(without_opt)
    # Cross-check the independent reader against onnxruntime's loader.
    reloaded = CheckpointState.load_checkpoint(str(with_opt))
    arrays = {}
    for n, t in contents["module_state"]["requires_grad_params"] + contents["module_state"]["frozen_params"]:
        assert np.array_equal(t["array"], reloaded.parameters[n].data), n
        assert np.array_equal(t["array"], state.parameters[n].data), n
        arrays["param:" + n] = t["array"]
    for key in PROPERTIES:
        assert reloaded.properties[key] == state.properties[key], key
    (group,) = contents["optimizer_groups"]
    for pname, momentums in group["optimizer_states"]:
        for mname, t in momentums:
            assert np.any(t["array"] != 0), (pname, mname)
            arrays[f"{mname}:{pname}"] = t["array"]
    save_npz(case / "contents.npz", arrays)
    # Saving the reloaded state again must give the same bytes (names are sorted on save).
    CheckpointState.save_checkpoint(reloaded, str(case / "resaved.tmp"), include_optimizer_state=True)
    resave_identical = (case / "resaved.tmp").read_bytes() == with_opt.read_bytes()
    (case / "resaved.tmp").unlink()
    assert resave_identical

    props = contents["properties"]
    write_json(case / "contents.json", {
        "source": "mlp_ce_adamw/checkpoint after 3 AdamW steps (lr 1e-2, batch 8, data of mlp_ce_adamw)",
        "version": contents["version"],
        "requires_grad_params": [n for n, _ in contents["module_state"]["requires_grad_params"]],
        "frozen_params": [n for n, _ in contents["module_state"]["frozen_params"]],
        "shapes": {n: t["dims"] for n, t in contents["module_state"]["requires_grad_params"]},
        "is_nominal_state": contents["module_state"]["is_nominal_state"],
        "has_external_data": contents["module_state"]["has_external_data"],
        "optimizer_group": {
            "group_name": group["group_name"],
            "step": group["step"],
            "initial_learning_rate": group["initial_learning_rate"],
            "param_order": [p for p, _ in group["optimizer_states"]],
            "momentum_names": sorted({m for _, ms in group["optimizer_states"] for m, _ in ms}),
        },
        "properties": {
            "ints": dict(props["ints"]),
            "floats": dict(props["floats"]),
            "strings": dict(props["strings"]),
            "order": {k: [n for n, _ in v] for k, v in props.items()},
        },
        "onnxruntime_properties_after_reload": {k: reloaded.properties[k] for k in PROPERTIES},
        "without_optimizer": {
            "optimizer_groups_present": bare["optimizer_groups_present"],
            "optimizer_group_count": len(bare["optimizer_groups"]),
            "property_bag_present": bare["property_bag_present"],
        },
        "resave_is_byte_identical": resave_identical,
    })
    print(f"checkpoint_roundtrip: step {group['step']}, properties {props}")


def mlp_data(loss, rng, rows):
    """Inputs [rows, 16] and a target the MLP can learn (a fixed random teacher)."""
    x = rng.randn(rows, 16).astype(np.float32)
    teacher = rng.randn(16, 4).astype(np.float32)
    z = x @ teacher
    if loss == "ce":
        return {"input": x, "labels": z.argmax(axis=1).astype(np.int64)}
    if loss == "bce":
        return {"input": x, "target": (z > 0).astype(np.float32)}
    return {"input": x, "target": (0.5 * z).astype(np.float32)}


def cnn_case(name, B, conv_bias):
    """The SmallCNN case on fixed data (4 batches of B [1, 8, 8] images, 4 classes from quadrant means).

    cnn_ce_adamw keeps the Conv bias in front of the BatchNorm: its exact gradient is zero and
    onnxruntime's is float noise (~1e-8) that AdamW amplifies into lr-sized steps no other summation
    order reproduces. cnn_nobias_ce_adamw is the same CNN and data with bias=False on that Conv
    (standard practice), so every trained parameter has a meaningful gradient.
    """
    seed_all(2025)
    rng = np.random.RandomState(8)
    x = rng.randn(4 * B, 1, 8, 8).astype(np.float32)
    labels = (x[:, 0, :4, :4].mean(axis=(1, 2)) > 0).astype(np.int64) * 2 + (x[:, 0, 4:, 4:].mean(axis=(1, 2)) > 0)
    cnn = SmallCNN(p=0.0, conv_bias=conv_bias)
    randomize_norm_params(cnn)
    make_case(name, cnn, torch.from_numpy(x[:B]), {"input": x, "labels": labels.astype(np.int64)},
              {"input": B, "labels": B}, "ce", "adamw")


def adamw_like_onnxruntime(params, grads, state, lr, step, b1=0.9, b2=0.999, eps=1e-6):
    """onnxruntime's AdamWOptimizer as generate_artifacts configures it (adam_mode 1, correct_bias 1,
    weight_decay 0): m, v as usual; p -= lr * sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + eps)."""
    with torch.no_grad():
        for p, g in zip(params, grads):
            m, v = state.setdefault(id(p), (torch.zeros_like(p), torch.zeros_like(p)))
            m.mul_(b1).add_(g, alpha=1 - b1)
            v.mul_(b2).addcmul_(g, g, value=1 - b2)
            p.sub_(lr * np.sqrt(1 - b2 ** step) / (1 - b1 ** step) * m / (v.sqrt() + eps))


def make_pytorch_case(name, model, example, data, batch_rows):
    """Artifacts onnxruntime generates but cannot run (bidirectional RNNs: "only supports the forward
    direction"; ConvTranspose: no CPU ConvTransposeGrad): the expected trajectory is PyTorch's, trained with onnxruntime's AdamW update on
    the same batches; grad0 is autograd's. Same files as make_case except expected_checkpoint."""
    case = fresh_dir(OUT / name)
    proto = export_training(model, example, False)
    trainable = [n for n, _ in model.named_parameters()]
    artifacts.generate_artifacts(proto, requires_grad=trainable, frozen_params=[], loss=LOSSES["ce"],
                                 optimizer=OPTIMIZERS["adamw"], artifact_directory=str(case))
    state = CheckpointState.load_checkpoint(str(case / "checkpoint"))
    try:
        Module(str(case / "training_model.onnx"), state, device="cpu")
        raise AssertionError(f"{name}: onnxruntime runs it; use make_case")
    except Exception as e:  # noqa: BLE001 - the message is recorded
        ort_error = str(e).strip().split("[ONNXRuntimeError] : ")[-1].split("Exception during initialization: ")[-1].splitlines()[0]
    train_inputs, train_outputs = graph_io(case / "training_model.onnx")
    user_inputs = [i["name"] for i in train_inputs if i["name"] in data]
    param_names = [i["name"] for i in train_inputs if i["name"] in trainable]
    for n in param_names:  # the checkpoint holds the model's initial values
        assert np.array_equal(state.parameters[n].data, dict(model.named_parameters())[n].detach().numpy()), n
    params = [dict(model.named_parameters())[n] for n in param_names]
    n_batches = data[user_inputs[0]].shape[0] // batch_rows[user_inputs[0]]
    model.train()
    losses, adam = [], {}
    for step in range(STEPS):
        k = step % n_batches
        x, y = (torch.from_numpy(data[n][k * batch_rows[n]:(k + 1) * batch_rows[n]]) for n in user_inputs)
        model.zero_grad()
        value = torch.nn.functional.cross_entropy(model(x), y)
        value.backward()
        losses.append(float(value))
        if step == 0:
            first_grads = {n: p.grad.numpy().copy() for n, p in zip(param_names, params)}
        adamw_like_onnxruntime(params, [p.grad for p in params], adam, LR["adamw"], step + 1)
    expected = {"losses": np.asarray(losses, dtype=np.float32)}
    for n, p in zip(param_names, params):
        expected["param:" + n] = p.detach().numpy().copy()
    for n in param_names:
        expected["grad0:" + n] = first_grads[n]
    save_npz(case / "expected.npz", expected)
    save_npz(case / "data.npz", data)
    write_json(case / "meta.json", {
        "batch_size": int(batch_rows[user_inputs[0]]),
        "batch_rows": {n: int(batch_rows[n]) for n in user_inputs},
        "batches": int(n_batches),
        "steps": STEPS,
        "lr": LR["adamw"],
        "optimizer": "adamw",
        "loss": LOSSES["ce"].name,
        "opset": OPSET,
        "user_inputs": user_inputs,
        "parameters": param_names,
        "trainable": param_names,
        "frozen": [],
        "loss_output": train_outputs[0]["name"],
        "reference": "pytorch (autograd, onnxruntime's AdamW update); onnxruntime cannot run these artifacts",
        "onnxruntime_error": ort_error,
        "training_model": {"inputs": train_inputs, "outputs": train_outputs, "ops": ops_of(case / "training_model.onnx")},
    })
    print(f"{name}: losses {losses[0]:.4f} -> {losses[-1]:.4f} (PyTorch); onnxruntime: {ort_error}")


def sequence_data(rng, rows, steps=7, features=4):
    """Sequences [rows, steps, features] labelled by which third of the range the mean of feature 0 falls in."""
    x = rng.randn(rows, steps, features).astype(np.float32)
    m = x[:, :, 0].mean(axis=1)
    labels = np.digitize(m, np.quantile(m, [1 / 3, 2 / 3])).astype(np.int64)
    return {"input": x, "labels": labels}


def recurrent_cases(B):
    """LSTM and GRU sequence classifiers: forward (onnxruntime trains them), then bidirectional
    two-layer ones using Y, Y_h (and Y_c), which onnxruntime cannot train (PyTorch reference)."""
    for kind in ["lstm", "gru"]:
        seed_all(2027)
        data = sequence_data(np.random.RandomState(10), 4 * B)
        model = SeqClassifier(kind, 4, 6, 3)
        make_case(f"{kind}_ce_adamw", model, torch.from_numpy(data["input"][:B]), data, {n: B for n in data}, "ce", "adamw")
    for kind in ["lstm", "gru"]:
        seed_all(2028)
        data = sequence_data(np.random.RandomState(11), 4 * B)
        model = SeqClassifier(kind, 4, 5, 3, layers=2, bidirectional=True, states=True)
        make_pytorch_case(f"bi{kind}2_ce_adamw", model, torch.from_numpy(data["input"][:B]), data, {n: B for n in data})


def resnet_case(B):
    """A ResNet-style CNN with BatchNorm (TinyResNet). onnxruntime trains it, but cannot load its eval
    model (BatchNormalization with training_mode 0 keeps the running-stat outputs). The eval reference:
    the trained state (onnxruntime's, running statistics included) put into the PyTorch model in eval
    mode, exported as a plain inference model and run by onnxruntime; PyTorch must agree. Writes
    expected_eval.npz: input, labels, logits [rows, classes], loss (mean cross entropy)."""
    seed_all(2029)
    rng = np.random.RandomState(12)
    x = rng.randn(4 * B, 1, 8, 8).astype(np.float32)
    labels = ((x[:, 0, :4].mean(axis=(1, 2)) > 0).astype(np.int64) * 2 + (x[:, 0, :, :4].mean(axis=(1, 2)) > 0)).astype(np.int64)
    model = TinyResNet()
    randomize_norm_params(model)
    state = make_case("resnet_ce_adamw", model, torch.from_numpy(x[:B]), {"input": x, "labels": labels},
                      {"input": B, "labels": B}, "ce", "adamw")
    names = [n for n in model.state_dict() if not n.endswith("num_batches_tracked")]
    trained = {n: torch.from_numpy(np.asarray(state.parameters[n].data).copy()) for n in names}
    missing = model.load_state_dict(trained, strict=False)
    assert not missing.unexpected_keys and all(k.endswith("num_batches_tracked") for k in missing.missing_keys), missing
    model.eval()
    test = rng.randn(2 * B, 1, 8, 8).astype(np.float32)
    test_labels = ((test[:, 0, :4].mean(axis=(1, 2)) > 0).astype(np.int64) * 2 + (test[:, 0, :, :4].mean(axis=(1, 2)) > 0)).astype(np.int64)
    with torch.no_grad():
        torch_logits = model(torch.from_numpy(test)).numpy()
    f = io.BytesIO()
    torch.onnx.export(model, (torch.from_numpy(test[:B]),), f, dynamo=False, opset_version=OPSET, input_names=["input"],
                      output_names=["output"], dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}})
    ort_logits = ort.InferenceSession(f.getvalue(), providers=["CPUExecutionProvider"]).run(None, {"input": test})[0]
    assert np.allclose(ort_logits, torch_logits, rtol=1e-4, atol=1e-5), np.abs(ort_logits - torch_logits).max()
    loss = float(torch.nn.functional.cross_entropy(torch.from_numpy(ort_logits), torch.from_numpy(test_labels)))
    save_npz(OUT / "resnet_ce_adamw" / "expected_eval.npz",
             {"input": test, "labels": test_labels, "logits": ort_logits, "loss": np.asarray(loss, np.float32)})
    print(f"resnet_ce_adamw eval: loss {loss:.4f}, onnxruntime vs PyTorch {np.abs(ort_logits - torch_logits).max():.2e}")


def conv_transpose_case(B):
    """UpsamplingCNN: its training graph holds ConvTransposeGrad, which onnxruntime 1.19.2 has for CUDA only."""
    seed_all(2030)
    rng = np.random.RandomState(13)
    x = rng.randn(4 * B, 1, 8, 8).astype(np.float32)
    labels = ((x[:, 0, :4].mean(axis=(1, 2)) > 0).astype(np.int64) * 2 + (x[:, 0, :, :4].mean(axis=(1, 2)) > 0)).astype(np.int64)
    make_pytorch_case("convtranspose_ce_adamw", UpsamplingCNN(), torch.from_numpy(x[:B]), {"input": x, "labels": labels},
                      {"input": B, "labels": B})


def main():
    quiet_torch_export_warnings()
    ort.set_default_logger_severity(3)
    OUT.mkdir(parents=True, exist_ok=True)
    B = 8
    for name, loss, optim in [
        ("mlp_ce_adamw", "ce", "adamw"),
        ("mlp_ce_sgd", "ce", "sgd"),
        ("mlp_mse_adamw", "mse", "adamw"),
        ("mlp_mse_sgd", "mse", "sgd"),
        ("mlp_bce_adamw", "bce", "adamw"),
        ("mlp_bce_sgd", "bce", "sgd"),
        ("mlp_l1_adamw", "l1", "adamw"),
        ("mlp_l1_sgd", "l1", "sgd"),
    ]:
        seed_all(2024)
        rng = np.random.RandomState(7)
        data = mlp_data(loss, rng, rows=4 * B)
        model = MLP(16, 32, 4)
        # The MLP is exported with a symbolic batch dim so the training graph carries dim_params.
        make_case(name, model, torch.from_numpy(data["input"][:B]), data,
                  {n: B for n in data}, loss, optim, dynamic_batch=True, nominal=(name == "mlp_ce_adamw"))
        if name == "mlp_ce_adamw":
            make_checkpoint_roundtrip(data)

    # CNN: Conv, BatchNormalization (training mode; running stats are frozen params), MaxPool, Dropout(0), ReLU, Linear.
    cnn_case("cnn_ce_adamw", B, conv_bias=True)

    # Causal transformer: logits flattened to [B*T, V] inside forward, so labels are [B*T] per step.
    seed_all(2026)
    rng = np.random.RandomState(9)
    Bt, T, V = 2, 8, 16
    seqs = np.stack([(rng.randint(0, V) + np.arange(T + 1) * rng.randint(1, 4)) % V for _ in range(4 * Bt)])
    idx = seqs[:, :T].astype(np.int64)
    tgt = seqs[:, 1:].reshape(-1).astype(np.int64)  # [4*Bt*T]
    gpt = GPT(vocab=V, d=16, heads=2, block=T, layers=1, flat_logits=True)
    randomize_norm_params(gpt)
    make_case("gpt_ce_adamw", gpt, torch.from_numpy(idx[:Bt]), {"input": idx, "labels": tgt},
              {"input": Bt, "labels": Bt * T}, "ce", "adamw")

    # Last, because torch's exporter numbers values with a process-wide counter: an export placed
    # earlier would rename the GPT's values (e.g. its loss output) and change its files.
    cnn_case("cnn_nobias_ce_adamw", B, conv_bias=False)
    # Appended after every earlier case for the same reason.
    recurrent_cases(B)
    resnet_case(B)
    conv_transpose_case(B)


if __name__ == "__main__":
    main()
