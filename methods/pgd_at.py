"""PGD adversarial training (Madry et al., ICLR 2018): the standard baseline for adversarial robustness.

Each batch is replaced by L∞ PGD examples crafted against the current weights (random start,
ε 8/255, cross-entropy), and the model is trained on them only. The attack is the paper's CIFAR-10
training adversary by default, 7 steps of 2/255 (Madry et al., appendix on CIFAR-10: "7 steps of
size 2" on the 0..255 scale; the public MadryLab/cifar10_challenge `config.json` sets 10 steps);
`variant=pgd10` names the 10-step one, which Rice et al. (ICML 2020) and the CIFS reference use.

Deviations from Madry et al.'s reference code, both configurable:
- The attack is crafted with the model in eval mode (batch-norm running statistics, no dropout), as
  the CIFS reference does; Madry's original crafts in train mode. With `attack_in_eval_mode=False`
  the model stays in train mode while crafting, so batch-norm running statistics also move during
  the attack steps.
- The paper's values are CIFAR's; on the embedded digits dataset the adversarial protocol measures
  other radii, so set the training radius to match with e.g. `--set eps=16/255`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch.nn.functional as F
from torch import Tensor, nn

from robustbench_lite.bench.config import setting
from robustbench_lite.bench.attacks.pgd import pgd
from robustbench_lite.bench.method import METHODS, Batch, Losses, Method, StepContext


VARIANT_STEPS = {"madry_cifar": 7, "pgd10": 10}


@METHODS.register("pgd_at")
class PgdAt(Method):
    """PGD adversarial training: cross-entropy on L∞ PGD examples of the current model (Madry et al.)."""

    @dataclass(frozen=True)
    class Config:
        # L∞ radius of the training attack on [0, 1] images
        eps: float = setting(8 / 255, low=0, high=1, low_open=True)
        # madry_cifar: 7 steps (Madry et al.); pgd10: 10 steps (Rice et al., the CIFS reference)
        variant: Literal["madry_cifar", "pgd10"] = "madry_cifar"
        steps: int = setting(0, low=0)  # PGD iterations per batch; 0: the variant's
        step_size: float = setting(2 / 255, low=0, low_open=True)  # L∞ step of each iteration
        random_start: bool = True  # start uniformly in the ε-ball
        attack_in_eval_mode: bool = True  # craft in eval mode (CIFS reference); False: train mode (Madry)

    citation = ("Madry, Makelov, Schmidt, Tsipras, Vladu, Towards Deep Learning Models Resistant to "
                "Adversarial Attacks (ICLR 2018) <https://arxiv.org/abs/1706.06083>")

    def training_step(self, model: nn.Module, batch: Batch, ctx: StepContext) -> Losses:
        x_adv = self.adversarial_batch(model, batch, ctx)
        return {"ce_adv": F.cross_entropy(model(x_adv), batch.y)}

    def adversarial_batch(self, model: nn.Module, batch: Batch, ctx: StepContext) -> Tensor:
        """PGD examples of the batch, random starts drawn from `ctx.rng`."""
        cfg = self.config
        target = model if cfg.attack_in_eval_mode else _ModeLocked(model)
        steps = cfg.steps or VARIANT_STEPS[cfg.variant]
        return pgd(target, batch.x, batch.y, cfg.eps, steps, cfg.step_size,
                   random_start=cfg.random_start, rng=ctx.rng)


class _ModeLocked(nn.Module):
    """Calls `model` in its current mode: `eval()`/`train()` on this wrapper do not reach it."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        object.__setattr__(self, "inner", model)  # not a registered child, so mode changes stop here
        self.needs_autograd_at_eval = getattr(model, "needs_autograd_at_eval", False)

    def forward(self, x: Tensor) -> Tensor:
        return self.inner(x)
