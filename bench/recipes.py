"""Training recipes (presets): the same recipe for every method on a dataset.

`smoke` runs in seconds on CPU (tests, CI), `default` trains the embedded dataset in under a minute
on 2 cores, `paper` follows the recipes of the seed papers (methods.md) at full scale.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

from .errors import UserError


@dataclass(frozen=True)
class Recipe:
    """Everything the trainer needs besides the method and the data."""

    backbone: str = "tiny"
    epochs: int = 15
    batch_size: int = 64
    lr: float = 0.05  # peak learning rate
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    schedule: Literal["cosine", "multistep", "constant"] = "cosine"
    milestones: tuple[int, ...] = ()  # epochs at which a multistep schedule multiplies by gamma
    gamma: float = 0.1
    crop_padding: int = 4  # random crop after zero padding; 0 disables
    flip: bool = True  # random horizontal flip
    train_limit: int = 0  # train on the first N (seeded-shuffled) images; 0 = all
    eval_batch_size: int = 500
    amp: bool = True  # bfloat16 autocast on CUDA; ignored on CPU


_DIGITS = Recipe(backbone="tiny", epochs=15, batch_size=64, lr=0.05, flip=False, crop_padding=2)
_CIFAR_PAPER = Recipe(backbone="preact_resnet18", epochs=200, batch_size=128, lr=0.1,
                      weight_decay=5e-4)

PRESETS: dict[str, dict[str, Recipe]] = {
    "smoke": {"*": replace(_DIGITS, epochs=2, train_limit=512)},
    "default": {"*": replace(_CIFAR_PAPER, backbone="resnet18", epochs=30), "digits": _DIGITS},
    "paper": {"*": _CIFAR_PAPER, "digits": replace(_DIGITS, epochs=30)},
}

PRESET_DESCRIPTIONS = {
    "smoke": "2 epochs on 512 images with the tiny backbone: seconds on CPU, for tests and CI",
    "default": "embedded dataset: tiny ResNet, 15 epochs (< 1 min on 2 cores); CIFAR: ResNet-18, 30 epochs",
    "paper": "CIFAR: PreActResNet-18, 200 epochs, SGD 0.1 Nesterov, wd 5e-4, cosine (methods.md)",
}


def recipe_for(preset: str, dataset: str) -> Recipe:
    if preset not in PRESETS:
        raise UserError(f"unknown preset {preset!r}; known presets: {', '.join(PRESETS)}")
    table = PRESETS[preset]
    return table.get(dataset, table["*"])
