"""AutoAttack (Croce & Hein, ICML 2020) through PyPI `pyautoattack` (the reference code), always seeded.

Differences from calling the library directly:
- the targeted attacks aim at min(9, classes − 1) target classes, so datasets with fewer than ten
  classes work (the library assumes at least ten);
- the global torch generator is restored afterwards (the library reseeds it);
- a model that differentiates inside its forward (`needs_autograd_at_eval`) runs with autograd
  enabled even where the library switches it off.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .pgd import autograd_always
from ..errors import UserError
from ..evaluate import eval_mode

VERSIONS = ("standard", "plus", "rand", "custom")


def autoattack(model: nn.Module, x: Tensor, y: Tensor, eps: float, seed: int, num_classes: int,
               norm: str = "Linf", version: str = "standard", attacks: tuple[str, ...] = (),
               batch_size: int = 500) -> Tensor:
    """Adversarial examples of AutoAttack `version` (or the `attacks` of version 'custom')."""
    try:
        from pyautoattack import AutoAttack
    except ImportError:
        raise UserError("AutoAttack needs pyautoattack, a dependency of robustbench-lite: "
                        "pip install 'pyautoattack>=0.2'") from None
    if version not in VERSIONS:
        raise UserError(f"unknown AutoAttack version {version!r}; use one of {', '.join(VERSIONS)}")
    if (version == "custom") != bool(attacks):
        raise UserError("AutoAttack: list attacks (e.g. apgd-ce,apgd-t) with version 'custom' only")
    runner = AutoAttack(autograd_always(model), norm=norm, eps=eps, seed=seed, version=version,
                        device=x.device, attacks=list(attacks) if version == "custom" else None)
    runner.apgd_targeted.n_target_classes = runner.fab.n_target_classes = min(9, num_classes - 1)
    cuda = [x.device] if x.device.type == "cuda" else []
    with eval_mode(model), torch.random.fork_rng(devices=cuda):
        x_adv, _ = runner.run_standard_evaluation(x, y, batch_size=batch_size)
    return x_adv.detach()
