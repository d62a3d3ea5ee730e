"""Shared fixtures: the embedded dataset, a tiny synthetic dataset, and run contexts on temp folders."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from robustbench_lite.bench.datasets import ImageDataset, Split, load_dataset
from robustbench_lite.bench.method import METHODS
from robustbench_lite.bench.protocol import RunContext
from robustbench_lite.bench.recipes import Recipe


@pytest.fixture(scope="session")
def digits() -> ImageDataset:
    return load_dataset("digits", "data")


def make_tiny_dataset(n_train: int = 64, n_test: int = 32, classes: int = 4, size: int = 16,
                      seed: int = 0) -> ImageDataset:
    """Class-dependent blobs: learnable in a few steps, deterministic for a seed."""
    gen = torch.Generator().manual_seed(seed)

    def split(n: int) -> Split:
        y = torch.arange(n) % classes
        base = torch.rand(n, 3, size, size, generator=gen) * 0.3
        for i, label in enumerate(y.tolist()):
            rows = slice(0, size // 2) if label < 3 else slice(size // 2, size)
            base[i, label % 3, rows, :] += 0.6
        return Split((base.clamp(0, 1) * 255).to(torch.uint8), y)

    return ImageDataset("tiny", split(n_train), split(n_test), classes, (0.5,) * 3, (0.25,) * 3)


@pytest.fixture
def tiny_dataset() -> ImageDataset:
    return make_tiny_dataset()


SMOKE = Recipe(backbone="tiny", epochs=1, batch_size=16, lr=0.05, crop_padding=2, flip=False)


@pytest.fixture
def run_context(tmp_path: Path, tiny_dataset: ImageDataset):
    """A factory: run_context(method_name, dataset=None, recipe=None) -> RunContext on temp folders."""

    def make(method: str = "erm", dataset: ImageDataset | None = None,
             recipe: Recipe = SMOKE, seed: int = 0) -> RunContext:
        cls = METHODS.get(method)
        return RunContext(cls(), method, dataset or tiny_dataset, recipe, seed,
                          torch.device("cpu"), tmp_path / "cache", tmp_path / "data",
                          tmp_path / "results", progress=False)

    return make
