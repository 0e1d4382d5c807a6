"""Export the benchmark's real architectures (issue 16) with random weights: torchvision ResNet-18 and
MobileNetV3-Small, Hugging Face BERT and GPT-2 (a tiny and a small-but-real config each) and a ViT
(DeiT-Tiny's config). Nothing is downloaded: every model is built from its config with seeded random
weights, and the data is random.

Variants (`<arch>_<image>_b<batch>` for the image models, `<arch>_b<batch>` for the others):
    resnet18_<32|64|128|224>_b<N>     torchvision resnet18(num_classes=10), input float32 [N, 3, S, S]
    mobilenet_v3_<32|224>_b<N>        torchvision mobilenet_v3_small(num_classes=10, dropout 0), Hardswish and
                                      Hardsigmoid written out as clamps (onnxruntime-training has no gradient for them)
    bert_tiny_b<N>     BertForSequenceClassification, Google's BERT-Tiny config (2 layers, hidden 128,
                       2 heads, vocab 30522), 2 labels, sequence 128
    bert_mini_b<N>     the same with Google's BERT-Mini config (4 layers, hidden 256, 4 heads)
    gpt2_tiny_b<N>     GPT2LMHeadModel, 2 layers, d 64, 2 heads, vocab 1024, sequence 128
    gpt2_small_b<N>    GPT2LMHeadModel with GPT-2's vocabulary (50257), 4 layers, d 256, 4 heads, sequence 128
    vit_tiny_b<N>      ViTForImageClassification with DeiT-Tiny's config (224x224, patch 16, 12 layers,
                       d 192, 3 heads), 10 labels
    vit_micro_b<N>     a 2-layer ViT on 32x32 images (patch 8, d 64): the smoke run's ViT
Language models' logits are flattened to [N*128, vocab] (the loss's class axis is 1).

Each variant goes to <out>/<variant>/ (default .build/bench-models/, not committed; bench.py makes the
missing ones once per run):
    model.onnx       TorchScript export (dynamo=False) in training mode, opset 17, no constant folding:
                     `onnx-train artifacts` and onnxruntime's `generate_artifacts` both start from it
    inference.onnx   the eval-mode export with a symbolic batch dimension `batch` (input `input`, output `output`)
    ort/             onnxruntime-training 1.19.2's artifacts (CrossEntropyLoss, AdamW) from model.onnx
    torch_init.pt    the state_dict both exports were made from (PyTorch trains from the same weights)
    data.npz         `input` and `labels` for BATCHES steps (cycled)
    meta.json        batch size, rows per step, lr, parameters, the FLOPs of a training step and of the
                     forward pass per example (torch.utils.flop_counter: matrix products and convolutions)

Run: .venv-bench/bin/python Benchmarks/export_real.py [--out DIR] --models resnet18_32_b8,bert_tiny_b8
Pinned stack: Benchmarks/requirements.txt (torch 2.13.0+cpu, torchvision 0.28.0, transformers 5.25.0,
onnxruntime-training 1.19.2, onnx 1.16.2).
"""

import argparse
import copy
import json
import re
import shutil
import sys
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DEFAULT_OUT = ROOT / ".build" / "bench-models"
OPSET = 17
BATCHES = 2  # distinct batches per variant (a 224x224 batch of 32 is 19 MB)
LR = 1e-3
SEED = 16
SEQ = 128

# The PyPI torchvision wheel is built against CUDA torch: its C++ ops (_C.so) cannot load beside
# torch+cpu, and importing torchvision then fails registering fake kernels for two detection ops.
# The model definitions are plain Python; declaring those two schemas lets the import go through
# (as Tests/Oracle/pytorch_oracle.py does).
_TORCHVISION_SHIM = torch.library.Library("torchvision", "DEF")
for _op in ("nms", "qnms"):
    _TORCHVISION_SHIM.define(_op + "(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")


class Flat(nn.Module):
    """A causal LM's [B, T, V] logits as [B*T, V]; an explicit all-ones attention mask (without one,
    transformers looks for packed sequences with torch.diff, which the TorchScript exporter cannot export)."""

    def __init__(self, inner, vocab):
        super().__init__()
        self.inner, self.vocab = inner, vocab

    def forward(self, ids):
        return self.inner(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=False).logits.reshape(-1, self.vocab)


class Logits(nn.Module):
    """A Hugging Face classifier's logits as the single output."""

    def __init__(self, inner, key="input_ids"):
        super().__init__()
        self.inner, self.key = inner, key

    def forward(self, x):
        return self.inner(**{self.key: x}).logits


def resnet18():
    import torchvision
    return torchvision.models.resnet18(num_classes=10)


class HardSwish(nn.Module):
    """x * clamp(x + 3, 0, 6) / 6, exported as Add/Clip/Mul/Div: onnxruntime-training 1.19.2 has no
    gradient for the HardSwish op (generate_artifacts fails), nor for HardSigmoid."""

    def forward(self, x):
        return x * torch.clamp(x + 3, 0, 6) / 6


class HardSigmoid(nn.Module):
    def forward(self, x):
        return torch.clamp(x + 3, 0, 6) / 6


def write_out(module):
    """Hardswish and Hardsigmoid written out (in place), so every runtime trains the same graph."""
    for name, child in module.named_children():
        if isinstance(child, nn.Hardswish):
            setattr(module, name, HardSwish())
        elif isinstance(child, nn.Hardsigmoid):
            setattr(module, name, HardSigmoid())
        else:
            write_out(child)
    return module


def mobilenet_v3():
    import torchvision
    return write_out(torchvision.models.mobilenet_v3_small(num_classes=10, dropout=0.0))


def _bert(layers, hidden, heads):
    from transformers import BertConfig, BertForSequenceClassification
    cfg = BertConfig(vocab_size=30522, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                     intermediate_size=4 * hidden, max_position_embeddings=512, hidden_dropout_prob=0.0,
                     attention_probs_dropout_prob=0.0, num_labels=2)
    cfg._attn_implementation = "eager"
    return Logits(BertForSequenceClassification(cfg))


def _gpt2(vocab, layers, d, heads):
    from transformers import GPT2Config, GPT2LMHeadModel
    cfg = GPT2Config(vocab_size=vocab, n_positions=SEQ, n_embd=d, n_layer=layers, n_head=heads,
                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=vocab - 1, eos_token_id=vocab - 1)
    cfg._attn_implementation = "eager"
    return Flat(GPT2LMHeadModel(cfg), vocab)


def _vit(image, patch, layers, d, heads):
    from transformers import ViTConfig, ViTForImageClassification
    cfg = ViTConfig(image_size=image, patch_size=patch, hidden_size=d, num_hidden_layers=layers, num_attention_heads=heads,
                    intermediate_size=4 * d, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, num_labels=10)
    cfg._attn_implementation = "eager"
    return Logits(ViTForImageClassification(cfg), key="pixel_values")


# name -> (builder, kind, fixed image size or None, vocabulary or classes, description)
ARCHS = {
    "resnet18": (resnet18, "image", None, 10, "torchvision ResNet-18, 10 classes"),
    "mobilenet_v3": (mobilenet_v3, "image", None, 10, "torchvision MobileNetV3-Small, 10 classes, Hardswish/Hardsigmoid written out"),
    "bert_tiny": (lambda: _bert(2, 128, 2), "classify", None, 2, "BERT-Tiny config (2 layers, d 128, 2 heads, vocab 30522), sequence 128"),
    "bert_mini": (lambda: _bert(4, 256, 4), "classify", None, 2, "BERT-Mini config (4 layers, d 256, 4 heads, vocab 30522), sequence 128"),
    "gpt2_tiny": (lambda: _gpt2(1024, 2, 64, 2), "lm", None, 1024, "GPT-2, 2 layers, d 64, 2 heads, vocab 1024, sequence 128"),
    "gpt2_small": (lambda: _gpt2(50257, 4, 256, 4), "lm", None, 50257, "GPT-2 vocabulary (50257), 4 layers, d 256, 4 heads, sequence 128"),
    "vit_tiny": (lambda: _vit(224, 16, 12, 192, 3), "image", 224, 10, "ViT with DeiT-Tiny's config (224x224, patch 16, 12 layers, d 192, 3 heads)"),
    "vit_micro": (lambda: _vit(32, 8, 2, 64, 2), "image", 32, 10, "ViT, 32x32, patch 8, 2 layers, d 64, 2 heads"),
}


def parse(variant):
    """(arch, image size or None, batch) of a variant name; SystemExit for an unknown one."""
    m = re.fullmatch(r"(.+?)(?:_(\d+))?_b(\d+)", variant)
    if m and m.group(1) in ARCHS:
        arch, image, batch = m.group(1), m.group(2), int(m.group(3))
        kind, fixed = ARCHS[arch][1], ARCHS[arch][2]
        if kind == "image" and fixed is None and image:
            return arch, int(image), batch
        if image is None and batch > 0:
            return arch, fixed, batch
    raise SystemExit(f"export_real: unknown variant {variant!r} (e.g. resnet18_32_b8, bert_tiny_b8; architectures: {', '.join(ARCHS)})")


def build(variant):
    """The PyTorch model of a variant, with the seeded random weights (the benchmark's PyTorch children
    load torch_init.pt over it)."""
    arch, _, _ = parse(variant)
    torch.manual_seed(SEED)
    return ARCHS[arch][0]()


def make_inputs(variant, rng, batch):
    """Random inputs (and labels) for `batch` examples: images N(0, 1); token ids in [1, vocab) (no
    padding token 0: PyTorch's Embedding(padding_idx=0) keeps that row's gradient at zero, which an ONNX
    Gather cannot express)."""
    arch, image, _ = parse(variant)
    kind, classes = ARCHS[arch][1], ARCHS[arch][3]
    if kind == "image":
        return rng.standard_normal((batch, 3, image, image), dtype=np.float32), rng.integers(0, classes, batch).astype(np.int64)
    vocab = classes if kind == "lm" else 30522
    ids = rng.integers(1, vocab, (batch, SEQ + (1 if kind == "lm" else 0))).astype(np.int64)
    if kind == "lm":
        return ids[:, :SEQ].copy(), ids[:, 1:].reshape(-1).copy()
    return ids, rng.integers(0, classes, batch).astype(np.int64)


def flops(model, x, y=None):
    """FLOPs of the forward pass (y None, no_grad) or of a training step's forward and backward
    (cross-entropy on y), counted by torch.utils.flop_counter (matrix products, convolutions, attention)."""
    from torch.utils.flop_counter import FlopCounterMode
    import torch.nn.functional as F

    counter = FlopCounterMode(display=False)
    with counter:
        if y is None:
            with torch.no_grad():
                model(x)
        else:
            F.cross_entropy(model(x), y).backward()
    model.zero_grad(set_to_none=True)
    return int(counter.get_total_flops())


def torch_export(model, example, path, training):
    from torch.onnx import TrainingMode

    model = copy.deepcopy(model)
    model.train(training)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (example,), str(path), dynamo=False, opset_version=OPSET,
                          training=TrainingMode.TRAINING if training else TrainingMode.EVAL,
                          do_constant_folding=False, input_names=["input"], output_names=["output"],
                          dynamic_axes=None if training else {"input": {0: "batch"}, "output": {0: "batch"}})


def ort_artifacts(folder, trainable, frozen):
    """onnxruntime-training's own artifacts from model.onnx, as export_models.py makes them."""
    import onnx
    from onnxruntime.training import artifacts
    sys.path.insert(0, str(HERE))
    from export_models import expose_layer_norm_stats, make_eval_batchnorm_valid

    proto = onnx.load(str(folder / "model.onnx"))
    expose_layer_norm_stats(proto)
    inits = {i.name for i in proto.graph.initializer}
    out = folder / "ort"
    out.mkdir()
    artifacts.generate_artifacts(proto, requires_grad=[n for n in trainable if n in inits], frozen_params=[n for n in frozen if n in inits],
                                 loss=artifacts.LossType.CrossEntropyLoss, optimizer=artifacts.OptimType.AdamW,
                                 artifact_directory=str(out))
    make_eval_batchnorm_valid(out / "eval_model.onnx")


def export_variant(variant, out: Path):
    arch, image, batch = parse(variant)
    folder = out / variant
    if folder.exists():
        shutil.rmtree(folder)
    partial = out / (variant + ".partial")
    if partial.exists():
        shutil.rmtree(partial)
    partial.mkdir(parents=True)
    model = build(variant)
    torch.save(model.state_dict(), partial / "torch_init.pt")
    rng = np.random.default_rng(SEED)
    xs, ys = zip(*(make_inputs(variant, rng, batch) for _ in range(BATCHES)))
    data = {"input": np.concatenate(xs), "labels": np.concatenate(ys)}
    np.savez(partial / "data.npz", **data)
    x0, y0 = torch.from_numpy(xs[0]), torch.from_numpy(ys[0])

    # The flop counts first, from the same weights (train mode: BatchNorm's batch statistics).
    model.train()
    step_flops = flops(model, x0, y0)
    model.eval()
    forward_flops = flops(model, x0[:1])
    model.load_state_dict(torch.load(partial / "torch_init.pt"))

    torch_export(model, x0, partial / "model.onnx", training=True)
    torch_export(model, x0, partial / "inference.onnx", training=False)
    trainable = [n for n, _ in model.named_parameters()]
    frozen = [n for n, _ in model.named_buffers() if n.endswith(("running_mean", "running_var"))]
    ort_artifacts(partial, trainable, frozen)
    meta = {
        "name": variant, "arch": arch, "description": ARCHS[arch][4], "kind": ARCHS[arch][1], "image": image,
        "batch_size": batch, "rows_per_step": {"input": batch, "labels": len(ys[0])}, "batches": BATCHES, "lr": LR,
        "optimizer": "AdamW (beta1 0.9, beta2 0.999, epsilon 1e-6, weight decay 0, bias correction)",
        "loss": "CrossEntropyLoss (mean)", "parameters": sum(p.numel() for p in model.parameters()),
        "train_step_flops": step_flops, "forward_flops_per_example": forward_flops, "opset": OPSET,
    }
    (partial / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    shutil.copy(partial / "data.npz", partial / "ort" / "data.npz")
    shutil.copy(partial / "meta.json", partial / "ort" / "meta.json")
    partial.rename(folder)  # a variant folder exists only complete
    print(f"{variant}: {meta['parameters']} parameters, {step_flops / 1e9:.2f} GFLOP per training step -> {folder}", flush=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--models", required=True, help="comma-separated variants, e.g. resnet18_32_b8,bert_tiny_b8")
    args = parser.parse_args(argv)
    for category in (DeprecationWarning, UserWarning, FutureWarning, torch.jit.TracerWarning):
        warnings.filterwarnings("ignore", category=category)
    import onnxruntime as ort

    ort.set_default_logger_severity(3)
    torch.set_num_threads(2)
    for variant in args.models.split(","):
        export_variant(variant, args.out)


if __name__ == "__main__":
    main()
