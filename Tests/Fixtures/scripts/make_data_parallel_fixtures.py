"""Fixtures for the data-parallel (MPI) tests, Tests/mpi-test.sh: two small CNNs in onnxruntime's
training-artifact form, exported as the examples are (Examples/example_export.py), and their data.

Writes ../data_parallel/:
    cnn/      Conv(1,8,3)-ReLU-MaxPool-Conv(8,16,3)-ReLU-MaxPool-Linear(144,4), no BatchNorm;
              CrossEntropyLoss, AdamW. Data-parallel runs must equal one process with the global batch.
    cnn_bn/   the same net with BatchNorm2d(8) after the first conv; CrossEntropyLoss, SGD (so the
              test can relate the DDP behaviour's per-process batch statistics to gradient
              accumulation: an average of N gradients with lr equals their sum with lr / N).
    train.npz      input float32 [202, 1, 12, 12], labels int64 [202] (202: 6 x 32 + 10 and
                   4 x 48 + 10, so 2 and 3 processes meet a last, smaller batch, split 4/3/3 by 3)
    test.npz       input float32 [64, 1, 12, 12], labels int64 [64]
    rank0_of_2_b16.npz  the examples process 0 of 2 takes with --batch-size 16 --no-shuffle
                   (rows 32k .. 32k+15 of train.npz, and 5 of the last 10): the BatchNorm test trains
                   one process on them with lr 0 to get rank 0's running statistics
    nan_at_40.npz  train.npz with a NaN in example 40's image, nan_at_56.npz in example 56's: with
                   --batch-size 16 --no-shuffle and 2 processes the second step's batch is examples
                   32..63, process 0 taking 32..47 and process 1 48..63, so the failure is rank 0's
                   or rank 1's alone.

The images are Gaussian noise with a class-dependent bright bar, so the nets learn something.

Run from this folder: /work/venv/bin/python make_data_parallel_fixtures.py
"""

import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
from onnxruntime.training import artifacts

from common import FIXTURES, fresh_dir, save_npz, seed_all

sys.path.insert(0, str(FIXTURES.parent.parent / "Examples"))
import example_export as ex  # noqa: E402

OUT = FIXTURES / "data_parallel"
SEED = 1212
N_TRAIN, N_TEST, SIZE, CLASSES = 202, 64, 12, 4


class CNN(nn.Module):
    """[N, 1, 12, 12] -> conv 3x3 (8) [-> BatchNorm] -> ReLU -> pool -> conv 3x3 (16) -> ReLU -> pool
    -> [N, 16, 3, 3] -> flatten -> Linear(144, 4) logits."""

    def __init__(self, batch_norm: bool):
        super().__init__()
        layers = [nn.Conv2d(1, 8, 3, padding=1)]
        if batch_norm:
            layers.append(nn.BatchNorm2d(8))
        layers += [nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
        self.convs = nn.Sequential(*layers)
        self.fc = nn.Linear(16 * 3 * 3, CLASSES)

    def forward(self, x):
        x = self.convs(x)
        return self.fc(x.view(x.size(0), -1))


def images(rng, n):
    labels = rng.randint(0, CLASSES, size=n).astype(np.int64)
    x = rng.normal(0.0, 0.3, size=(n, 1, SIZE, SIZE))
    for i, y in enumerate(labels):
        x[i, 0, 2 + 2 * y:4 + 2 * y, 2:10] += 1.0  # a bar at a row that tells the class
    return {"input": x.astype(np.float32), "labels": labels}


def export(folder: Path, batch_norm: bool, optimizer, example):
    seed_all(SEED)
    model = CNN(batch_norm)
    proto = ex.export_for_training(model, [torch.from_numpy(example)], ["input"])
    fresh_dir(folder)
    ex.generate_training_artifacts(model, proto, folder, optimizer=optimizer)


def main():
    ex.quiet()
    seed_all(SEED)
    fresh_dir(OUT)
    rng = np.random.RandomState(SEED)
    train, test = images(rng, N_TRAIN), images(rng, N_TEST)
    export(OUT / "cnn", False, artifacts.OptimType.AdamW, train["input"][:16])
    export(OUT / "cnn_bn", True, artifacts.OptimType.SGD, train["input"][:16])
    save_npz(OUT / "train.npz", train)
    save_npz(OUT / "test.npz", test)
    # Process 0 of 2 with 16 examples each, in file order: the first half of every batch of 32,
    # and of the last batch (10 examples) its first 5.
    rows = [r for start in range(0, N_TRAIN, 32) for r in range(start, min(start + 16, start + (min(32, N_TRAIN - start) + 1) // 2))]
    save_npz(OUT / "rank0_of_2_b16.npz", {k: v[rows] for k, v in train.items()})
    for example in (40, 56):
        bad = {k: v.copy() for k, v in train.items()}
        bad["input"][example, 0, 0, 0] = np.nan
        save_npz(OUT / f"nan_at_{example}.npz", bad)
    print(f"wrote {OUT}: cnn, cnn_bn, train.npz ({N_TRAIN}), test.npz ({N_TEST}), rank0_of_2_b16.npz ({len(rows)} rows), nan_at_40/56.npz")


if __name__ == "__main__":
    main()
