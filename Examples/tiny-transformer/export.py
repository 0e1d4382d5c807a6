"""Export the tiny-transformer example: a character-level causal transformer on the opening of
"Alice's Adventures in Wonderland" (alice.txt), in onnxruntime's training-artifact form, then train it
once with onnxruntime-training as the reference the README quotes.

Tokens are the text's characters (vocab.json lists them; a token id is its index). The text is cut
into windows of T + 1 = 33 characters every STRIDE characters; a window's first 32 characters are the
input and its last 32 the next-character targets. The first 90% of the text gives the training
windows, the rest the test windows.

Writes, next to this script:
    training_model.onnx, eval_model.onnx, optimizer_model.onnx, checkpoint   (generate_artifacts:
                   CrossEntropyLoss over logits [B*T, V], AdamW; the logits `output` stay an output)
    train.npz      input int64 [N, 32], labels int64 [N*32] (row-major: labels[i*32 + t] is the
                   character after input[i, t]); batching cuts both arrays into the same number of
                   equal parts, so a batch of B windows has B*32 labels
    test.npz       the same for the held-out windows
    vocab.json     the characters, in token order
    reference.json onnxruntime's run with the README's settings

Run: /work/venv/bin/python Examples/tiny-transformer/export.py
"""

import json
import math
import sys
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
import example_export as ex  # noqa: E402

SEED = 1865
T, D, HEADS, LAYERS = 32, 32, 2, 2
STRIDE = 4
BATCH, EPOCHS, LR = 16, 5, 0.005
TRAIN_FRACTION = 0.9


def TinyGPT(vocab):
    """Token + position Embedding, LAYERS pre-norm blocks (causal attention with a tril mask, exact
    GELU MLP), final LayerNorm, linear head (models.GPT). input int64 [B, T] -> logits [B*T, vocab],
    flattened inside the model because onnxruntime's CrossEntropyLoss block takes the classes from the
    last dim while the ONNX op takes them from axis 1; the two agree only for 2-D logits."""
    return ex.models.GPT(vocab=vocab, d=D, heads=HEADS, block=T, layers=LAYERS, flat_logits=True)


def windows(ids):
    """Windows of T + 1 tokens every STRIDE tokens -> input [N, T], labels [N*T] (next tokens).
    N is rounded down to a multiple of the batch size (the last few windows are left out), so no
    batch is partial."""
    starts = np.arange(0, len(ids) - T, STRIDE)
    starts = starts[:len(starts) // BATCH * BATCH]
    w = np.stack([ids[s:s + T + 1] for s in starts])
    return {"input": w[:, :T].astype(np.int64), "labels": w[:, 1:].reshape(-1).astype(np.int64)}


def main():
    ex.quiet()
    ex.seed_all(SEED)
    ex.clean_outputs(HERE, ex.ARTIFACT_FILES + ("train.npz", "test.npz", "vocab.json", "reference.json"))
    text = (HERE / "alice.txt").read_text(encoding="utf-8")
    vocab = sorted(set(text))
    ids = np.array([vocab.index(c) for c in text], dtype=np.int64)
    cut = int(len(ids) * TRAIN_FRACTION)
    train, test = windows(ids[:cut]), windows(ids[cut:])
    unit_rows = {"input": 1, "labels": T}

    model = TinyGPT(len(vocab))
    proto = ex.export_for_training(model, [torch.from_numpy(train["input"][:BATCH])], ["input"],
                                   output_dim="batch_x_32")
    trainable, frozen, _ = ex.generate_training_artifacts(model, proto, HERE)
    ex.save_npz(HERE / "train.npz", train)
    ex.save_npz(HERE / "test.npz", test)
    with open(HERE / "vocab.json", "w") as f:
        json.dump(vocab, f)
        f.write("\n")

    n_params = sum(p.numel() for p in model.parameters())
    print(f"tiny-transformer: {len(text)} characters, vocab {len(vocab)}, {n_params} parameters, "
          f"{len(train['input'])} train / {len(test['input'])} test windows; batch {BATCH}, lr {LR}, {EPOCHS} epochs")
    history = ex.train_with_onnxruntime(HERE, train, test, batch_size=BATCH, epochs=EPOCHS, lr=LR, seed=SEED,
                                        unit_rows=unit_rows)
    assert history["epochs"][-1]["train_loss"] < 0.6 * math.log(len(vocab)), history["epochs"][-1]
    ex.write_json(HERE / "reference.json", {
        "runtime": "onnxruntime-training 1.19.2 (Module/Optimizer, CPU, 1 thread)",
        "settings": {"batch_size": BATCH, "epochs": EPOCHS, "lr": LR, "shuffle": f"RandomState({SEED} + epoch)",
                     "drop_last": False, "rows_per_sample": unit_rows},
        "text": {"characters": len(text), "vocab": len(vocab), "train_windows": len(train["input"]),
                 "test_windows": len(test["input"]), "window": T + 1, "stride": STRIDE},
        "parameters": n_params,
        "trainable": trainable, "frozen": frozen,
        "training_model": ex.graph_io(HERE / "training_model.onnx"),
        "eval_model": ex.graph_io(HERE / "eval_model.onnx"),
        **history,
    })


if __name__ == "__main__":
    main()
