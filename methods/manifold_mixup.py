"""Manifold Mixup: mixup of hidden representations at a randomly drawn layer.

Verma, Lamb, Beckham, Najafi, Mitliagkas, Lopez-Paz & Bengio, "Manifold Mixup: Better
Representations by Interpolating Hidden States" (ICML 2019). Each batch draws a tap k uniformly
from `taps`, λ ~ Beta(α, α) and a permutation π; the activation at k becomes
λ·h + (1 − λ)·h[π] (at "input" this is input mixup), the forward pass continues from there, and the
loss is λ·CE(y) + (1 − λ)·CE(y[π]). The default taps {input, stage1, stage2} are the paper's layer
set {0, 1, 2} for PreActResNet on CIFAR, and α = 2.0 its CIFAR value.

Deviations from the reference code (vikasverma1077/manifold_mixup):
- the loss is the mixed cross-entropy; the reference applies binary cross-entropy to the softmax
  outputs against the mixed one-hot target.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from robustbench_lite.bench.backbones import Backbone
from robustbench_lite.bench.method import METHODS, Batch, Losses, Method, StepContext
from robustbench_lite.bench.mixing import (check_alpha, choose, mixed_cross_entropy,
                                           partner_permutation, resolve_taps, sample_lambda)

NAME = "manifold_mixup"


@METHODS.register(NAME)
class ManifoldMixup(Method):
    """Manifold Mixup: mixup of inputs or hidden activations at a randomly drawn stage."""

    @dataclass(frozen=True)
    class Config:
        alpha: float = 2.0  # λ ~ Beta(α, α); the paper's CIFAR value
        taps: tuple[str, ...] = ("input", "stage1", "stage2")  # drawn uniformly; "all" = input + stages

        def __post_init__(self) -> None:
            check_alpha(self.alpha)

    citation = ("Verma, Lamb, Beckham, Najafi, Mitliagkas, Lopez-Paz, Bengio, Manifold Mixup: Better "
                "Representations by Interpolating Hidden States (ICML 2019) "
                "<https://arxiv.org/abs/1806.05236>")

    def build_model(self, backbone: Backbone) -> nn.Module:
        resolve_taps(self.config.taps, backbone, NAME)  # a tap the backbone lacks fails here
        return backbone

    def training_step(self, model: nn.Module, batch: Batch, ctx: StepContext) -> Losses:
        perm = partner_permutation(len(batch.x), ctx.rng, batch.x.device)
        tap = choose(resolve_taps(self.config.taps, model, NAME), ctx.rng)
        lam = sample_lambda(self.config.alpha, ctx.rng)

        def mix(h: Tensor) -> Tensor:
            return lam * h + (1 - lam) * h[perm]

        logits = model(batch.x, edits={tap: mix})
        return {"ce": mixed_cross_entropy(logits, batch.y, batch.y[perm], lam)}
