"""Shared helpers for the fixture generators (deterministic seeding, paths, small writers)."""

import json
import os
import random
import shutil
import warnings
from pathlib import Path

import numpy as np
import torch

FIXTURES = Path(__file__).resolve().parent.parent


def seed_all(seed: int) -> None:
    """Seed every RNG a generator touches so that re-running gives the same bytes."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)


def fresh_dir(path: Path) -> Path:
    """Remove and recreate `path` so no stale file from an older run survives."""
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path


def write_json(path: Path, obj) -> None:
    with open(path, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=False)
        f.write("\n")


def save_npz(path: Path, arrays: dict) -> None:
    """Uncompressed .npz (the Swift reader only needs the stored zip method)."""
    np.savez(path, **arrays)


def quiet_torch_export_warnings() -> None:
    """The TorchScript exporter (dynamo=False) warns that it is deprecated; the fixtures use it on purpose."""
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=UserWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
    os.environ.setdefault("TORCH_LOGS", "")
