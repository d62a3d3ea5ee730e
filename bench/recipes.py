"""Training recipes (presets): the same recipe for every method on a dataset.

`smoke` runs in seconds on CPU (tests, CI), `default` trains the embedded dataset in under a minute
on 2 cores, `paper` follows the recipes of the seed papers (methods.md) at full scale.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

from .config import setting, validate
from .errors import UserError


@dataclass(frozen=True)
class Recipe:
    """Everything the trainer needs besides the method and the data."""

    backbone: str = "tiny"
    epochs: int = setting(15, low=1)
    batch_size: int = setting(64, low=1)
    lr: float = setting(0.05, low=0, low_open=True)  # peak learning rate
    momentum: float = setting(0.9, low=0, high=1, high_open=True)
    nesterov: bool = True
    weight_decay: float = setting(5e-4, low=0)
    schedule: Literal["cosine", "multistep", "step", "constant"] = "cosine"
    # epochs at which a multistep schedule multiplies by gamma (increasing)
    milestones: tuple[int, ...] = setting((), low=1)
    step_every: int = setting(0, low=0)  # a "step" schedule multiplies by gamma every N epochs
    gamma: float = setting(0.1, low=0, low_open=True)
    crop_padding: int = setting(4, low=0)  # random crop after zero padding; 0 disables
    crop_size: int = setting(0, low=0)  # training crops of this size (224 of 256); 0 = image size
    flip: bool = True  # random horizontal flip
    train_limit: int = setting(0, low=0)  # train on the first N (seeded-shuffled) images; 0 = all
    eval_batch_size: int = setting(500, low=1)
    amp: bool = True  # bfloat16 autocast on CUDA; ignored on CPU

    def __post_init__(self) -> None:
        validate(self, "the recipe", "recipe.")
        if list(self.milestones) != sorted(set(self.milestones)):
            raise ValueError(f"milestones {self.milestones} must be increasing epochs")
        if self.schedule == "step" and self.step_every < 1:
            raise ValueError("the 'step' schedule needs a period: step_every >= 1")


_DIGITS = Recipe(backbone="tiny", epochs=15, batch_size=64, lr=0.05, flip=False, crop_padding=2)
_CIFAR_PAPER = Recipe(backbone="preact_resnet18", epochs=200, batch_size=128, lr=0.1,
                      weight_decay=5e-4)
# GLICO's low-data CUB recipe (methods.md 5.3): ImageNet ResNet-50 fine-tuned at 224 px (random crop
# of the stored 256 px, no flip), SGD Nesterov, StepLR x0.9 every 2 epochs (the low-data protocol
# scales epochs and step by its repetition factor).
_CUB_PAPER = Recipe(backbone="resnet50", epochs=200, batch_size=16, lr=0.001, momentum=0.9,
                    weight_decay=1e-5, schedule="step", step_every=2, gamma=0.9, crop_padding=0,
                    crop_size=224, flip=False, eval_batch_size=100)

PRESETS: dict[str, dict[str, Recipe]] = {
    "smoke": {"*": replace(_DIGITS, epochs=4, batch_size=32, train_limit=512)},
    "default": {"*": replace(_CIFAR_PAPER, backbone="resnet18", epochs=30), "digits": _DIGITS,
                "cub200": replace(_CUB_PAPER, epochs=30)},
    "paper": {"*": _CIFAR_PAPER, "digits": replace(_DIGITS, epochs=30), "cub200": _CUB_PAPER},
}

PRESET_DESCRIPTIONS = {
    "smoke": "4 epochs on 512 images (64 steps) with the tiny backbone: seconds on CPU, for tests and CI",
    "default": "embedded dataset: tiny ResNet, 15 epochs (< 1 min on 2 cores); CIFAR: ResNet-18, 30 epochs"
               "; CUB: the paper recipe with 30 epochs",
    "paper": "CIFAR: PreActResNet-18, 200 epochs, SGD 0.1 Nesterov, wd 5e-4, cosine (methods.md)"
             "; CUB: GLICO's ResNet-50 recipe, 200 epochs",
}


def recipe_for(preset: str, dataset: str) -> Recipe:
    if preset not in PRESETS:
        raise UserError(f"unknown preset {preset!r}; known presets: {', '.join(PRESETS)}")
    table = PRESETS[preset]
    return table.get(dataset, table["*"])
