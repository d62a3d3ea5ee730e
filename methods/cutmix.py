"""CutMix: paste a random box of another image and weight the labels by area.

Yun, Han, Oh, Chun, Choe & Yoo, "CutMix: Regularization Strategy to Train Strong Classifiers with
Localizable Features" (ICCV 2019). With probability `prob`, λ ~ Beta(α, α), a box with sides
side·sqrt(1 − λ) centred on a uniform pixel (clipped to the image) is copied from x[π(i)] into x[i]
for the whole batch, and the loss is w·CE(y) + (1 − w)·CE(y[π]) with w the exact fraction of
pixels left from x[i] after clipping; otherwise the step is plain cross-entropy.
Deviations from the reference code (clovaai/CutMix-PyTorch): none in the mechanism. Its README
trains CIFAR-100 with `cutmix_prob` 0.5 and ImageNet with 1.0; the default here is 1.0 (`prob`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import nn

from robustbench_lite.bench.method import METHODS, Batch, Losses, Method, StepContext
from robustbench_lite.bench.mixing import (check_alpha, check_probability, cutmix, happens,
                                           mixed_cross_entropy, partner_permutation, sample_lambda)


@METHODS.register("cutmix")
class CutMix(Method):
    """CutMix: paste a random box from a partner image; labels weighted by pasted area."""

    @dataclass(frozen=True)
    class Config:
        alpha: float = 1.0  # λ ~ Beta(α, α) sets the box area; 1.0 as in the paper
        prob: float = 1.0  # probability that a batch is cut-mixed (else plain cross-entropy)

        def __post_init__(self) -> None:
            check_alpha(self.alpha)
            check_probability(self.prob, "prob")

    citation = ("Yun, Han, Oh, Chun, Choe, Yoo, CutMix: Regularization Strategy to Train Strong "
                "Classifiers with Localizable Features (ICCV 2019) <https://arxiv.org/abs/1905.04899>")

    def training_step(self, model: nn.Module, batch: Batch, ctx: StepContext) -> Losses:
        if not happens(self.config.prob, ctx.rng):
            return {"ce": F.cross_entropy(model(batch.x), batch.y)}
        perm = partner_permutation(len(batch.x), ctx.rng, batch.x.device)
        lam = sample_lambda(self.config.alpha, ctx.rng)
        mixed, weight = cutmix(batch.x, perm, lam, ctx.rng)
        return {"ce": mixed_cross_entropy(model(mixed), batch.y, batch.y[perm], weight)}
