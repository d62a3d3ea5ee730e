"""The method adapter: a training method is one class whose defaults are plain ERM.

A method overrides only what it changes: `build_model` (architecture), `train_transform` (the
training batch), `training_step` (the losses; yield several dicts for several optimizer updates
per batch). The trainer owns the loop, the optimizer and the schedule.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .backbones import Backbone
from .config import NoConfig, validate
from .registry import Registry

Losses = dict[str, Tensor]


@dataclass
class Batch:
    """A training batch on the model's device: images in [0, 1] and integer labels."""

    x: Tensor
    y: Tensor
    views: tuple[Tensor, ...] = ()


@dataclass
class StepContext:
    """Where training stands, and the only random generator a method may draw from."""

    step: int
    epoch: int
    steps_per_epoch: int
    total_steps: int
    num_classes: int
    rng: torch.Generator
    device: torch.device
    log: dict[str, float] = field(default_factory=dict)


class Method:
    """Empirical risk minimisation: cross-entropy on the (cropped, flipped) training batch."""

    Config: ClassVar[type] = NoConfig
    citation: ClassVar[str] = "Vapnik, The Nature of Statistical Learning Theory (1995)"
    # raised when the training code changes what is trained with the same settings: part of the
    # trained-model cache key from 1 on, so models of the earlier code are not reused
    revision: ClassVar[int] = 0
    # why the method's model may mask gradients from standard attacks ("" = no known risk); a
    # method that names one is measured with AutoAttack by default under the adversarial protocol
    masking_risk: ClassVar[str] = ""

    def __init__(self, config: Any = None) -> None:
        self.config = config if config is not None else self.Config()
        validate(self.config, f"method {type(self).__name__}")

    def build_model(self, backbone: Backbone) -> nn.Module:
        """The network to train; `model(x)` must map [0, 1] images to logits."""
        return backbone

    def train_transform(self, batch: Batch, ctx: StepContext) -> Batch:
        """The training batch after method-specific augmentation (none by default)."""
        return batch

    def training_step(self, model: nn.Module, batch: Batch, ctx: StepContext
                      ) -> Losses | Iterator[Losses]:
        """Named losses for one optimizer update, or a generator yielding one dict per update."""
        return {"ce": F.cross_entropy(model(batch.x), batch.y)}

    def adaptive_attack_loss(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor | None:
        """Per-sample loss an adaptive attacker should maximise, when the method's model has one
        beyond the final logits (e.g. CIFS's joint loss over its probes); None otherwise."""
        return None

    def adaptive_attacks(self) -> dict[str, Callable[[nn.Module, Tensor, Tensor], Tensor]]:
        """Further adaptive PGD objectives by attack name (per-sample losses), each run beside
        `pgd_adaptive` and inside the worst case (e.g. CIFS's attack through its masks)."""
        return {}

    @classmethod
    def description(cls) -> str:
        return (cls.__doc__ or "").strip().splitlines()[0]


def as_updates(result: Losses | Iterator[Losses]) -> Iterator[Losses]:
    """One loss dict per optimizer update."""
    if isinstance(result, dict):
        yield result
    else:
        yield from result


def _check_method(obj: object) -> None:
    if not (isinstance(obj, type) and issubclass(obj, Method)):
        raise TypeError(f"{obj!r} is not a subclass of robustbench_lite.bench.method.Method")
    if not dataclasses.is_dataclass(obj.Config):
        raise TypeError(f"{obj.__name__}.Config must be a dataclass")
    if not (obj.__doc__ or "").strip():
        raise TypeError(f"{obj.__name__} needs a docstring (its first line is the description)")


METHODS: Registry[type[Method]] = Registry(
    "method", builtins="robustbench_lite.methods", group="robustbench_lite.methods",
    check=_check_method)
