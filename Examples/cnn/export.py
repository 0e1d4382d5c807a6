"""Export the CNN example: the Conv/MaxPool/ReLU/Linear network of the torch.js proposal, with
BatchNormalization, on synthetic 12x12 images of four shapes, in onnxruntime's training-artifact form,
then train it once with onnxruntime-training as the reference the README quotes.

Writes, next to this script:
    training_model.onnx, eval_model.onnx, optimizer_model.onnx, checkpoint   (generate_artifacts:
                   CrossEntropyLoss, AdamW; BatchNorm running stats frozen; logits `output` kept)
    train.npz      input float32 [1024, 1, 12, 12], labels int64 [1024]
    test.npz       input float32 [256, 1, 12, 12], labels int64 [256]
    reference.json onnxruntime's run with the README's settings

Run: /work/venv/bin/python Examples/cnn/export.py
"""

import sys
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
import example_export as ex  # noqa: E402

SEED = 144
BATCH, EPOCHS, LR = 32, 6, 0.005
N_TRAIN, N_TEST = 1024, 256
SIZE = 12
CLASSES = ["horizontal bar", "vertical bar", "cross", "square"]


def Net(classes=4):
    """The torch.js proposal's Net with one input channel, a BatchNorm after the first conv, 4 classes
    (models.ProposalNet): [N, 1, 12, 12] -> [N, 32, 3, 3] -> flatten -> Linear(32 * 3 * 3, 4) logits."""
    return ex.models.ProposalNet(channels=1, classes=classes, features=32 * 3 * 3, batchnorm=True)


def draw(rng, label):
    """One 12x12 image of the given class: a shape at a random place and size, line width 1 or 2,
    brightness 0.6-1.0, on Gaussian noise (sigma 0.15), clipped to [0, 1]."""
    img = np.zeros((SIZE, SIZE), dtype=np.float64)
    width = rng.randint(1, 3)
    value = rng.uniform(0.6, 1.0)
    if label in (0, 1):  # a bar: length 5-10 along one axis
        length = rng.randint(5, 11)
        a, b = rng.randint(0, SIZE - length + 1), rng.randint(0, SIZE - width + 1)
        if label == 0:
            img[b:b + width, a:a + length] = value
        else:
            img[a:a + length, b:b + width] = value
    elif label == 2:  # a plus sign: arms 5-9 long, crossing in the middle
        length = rng.randint(5, 10)
        r, c = rng.randint(0, SIZE - length + 1), rng.randint(0, SIZE - length + 1)
        mid = (length - width) // 2
        img[r + mid:r + mid + width, c:c + length] = value
        img[r:r + length, c + mid:c + mid + width] = value
    else:  # a square outline: side 5-10
        side = rng.randint(5, 11)
        r, c = rng.randint(0, SIZE - side + 1), rng.randint(0, SIZE - side + 1)
        img[r:r + side, c:c + side] = value
        img[r + width:r + side - width, c + width:c + side - width] = 0.0
    img += rng.normal(0.0, 0.15, size=img.shape)
    return np.clip(img, 0.0, 1.0)


def shapes(rng, n):
    labels = rng.randint(0, len(CLASSES), size=n).astype(np.int64)
    x = np.stack([draw(rng, int(y)) for y in labels])[:, None].astype(np.float32)
    return {"input": x, "labels": labels}


def main():
    ex.quiet()
    ex.seed_all(SEED)
    ex.clean_outputs(HERE, ex.ARTIFACT_FILES + ("train.npz", "test.npz", "reference.json"))
    rng = np.random.RandomState(SEED)
    train, test = shapes(rng, N_TRAIN), shapes(rng, N_TEST)
    model = Net()
    proto = ex.export_for_training(model, [torch.from_numpy(train["input"][:BATCH])], ["input"])
    trainable, frozen, fixed = ex.generate_training_artifacts(model, proto, HERE)
    ex.save_npz(HERE / "train.npz", train)
    ex.save_npz(HERE / "test.npz", test)

    print(f"cnn: {N_TRAIN} train / {N_TEST} test; onnxruntime-training, batch {BATCH}, lr {LR}, {EPOCHS} epochs")
    history = ex.train_with_onnxruntime(HERE, train, test, batch_size=BATCH, epochs=EPOCHS, lr=LR, seed=SEED)
    assert history["epochs"][-1]["eval_accuracy"] >= 0.9, history["epochs"][-1]
    ex.write_json(HERE / "reference.json", {
        "runtime": "onnxruntime-training 1.19.2 (Module/Optimizer, CPU, 1 thread)",
        "settings": {"batch_size": BATCH, "epochs": EPOCHS, "lr": LR, "shuffle": f"RandomState({SEED} + epoch)",
                     "drop_last": False},
        "classes": CLASSES,
        "trainable": trainable, "frozen": frozen,
        "eval_batchnorm_nodes_fixed": fixed,
        "training_model": ex.graph_io(HERE / "training_model.onnx"),
        "eval_model": ex.graph_io(HERE / "eval_model.onnx"),
        **history,
    })


if __name__ == "__main__":
    main()
