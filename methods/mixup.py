"""mixup: train on convex combinations of image pairs and of their labels.

Zhang, Cisse, Dauphin & Lopez-Paz, "mixup: Beyond Empirical Risk Minimization" (ICLR 2018).
Each batch is mixed with a random permutation of itself, x~ = λ·x + (1 − λ)·x[π], with one
λ ~ Beta(α, α) per batch, and the loss is λ·CE(y) + (1 − λ)·CE(y[π]), as in the authors'
CIFAR-10 code (facebookresearch/mixup-cifar10). No deviations.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from robustbench_lite.bench.method import METHODS, Batch, Losses, Method, StepContext
from robustbench_lite.bench.mixing import (check_alpha, mixed_cross_entropy, partner_permutation,
                                           sample_lambda)


@METHODS.register("mixup")
class Mixup(Method):
    """mixup: cross-entropy on convex combinations of image pairs and their labels."""

    @dataclass(frozen=True)
    class Config:
        alpha: float = 1.0  # λ ~ Beta(α, α); 1.0 is the CIFAR value of the paper and its code

        def __post_init__(self) -> None:
            check_alpha(self.alpha)

    citation = ("Zhang, Cisse, Dauphin, Lopez-Paz, mixup: Beyond Empirical Risk Minimization "
                "(ICLR 2018) <https://arxiv.org/abs/1710.09412>")

    def training_step(self, model: nn.Module, batch: Batch, ctx: StepContext) -> Losses:
        perm = partner_permutation(len(batch.x), ctx.rng, batch.x.device)
        lam = sample_lambda(self.config.alpha, ctx.rng)
        logits = model(lam * batch.x + (1 - lam) * batch.x[perm])
        return {"ce": mixed_cross_entropy(logits, batch.y, batch.y[perm], lam)}
