"""Catch-up Mix: feature mixup that hands over the channels where a sample's filters lag.

Kang, Kang & Kim, "Catch-Up Mix: Catch-Up Class for Struggling Filters in CNN" (AAAI 2024,
arXiv 2401.13193). The paper's abstract: networks come to rely on a few fast-learning filters;
mixing the activation maps with relatively lower norms gives the lagging filters a chance to learn.

Mechanism, per batch (with probability `prob`, else plain cross-entropy): draw a partner
permutation π, a tap k uniformly from `taps` and λ ~ Beta(α, α). At k, for every sample i and
channel c, the relative filter influence RFI[i, c] = ‖h[i, c]‖₂ / Σ_c' ‖h[i, c']‖₂ is compared
with the partner's: d = RFI[i] − RFI[π(i)]. Sample i keeps its own maps in the ⌊λC⌋ channels with
the smallest d (where it is the relatively weaker one of the pair) and takes the partner's maps in
the others. The mask is binary, per sample and per channel, constant over H × W, and computed
without gradient. Loss: w·CE(y) + (1 − w)·CE(y[π]) with w = ⌊λC⌋ / C.

Deviations / interpretation choices (no reference code exists; each is a Config field):
- `taps`: the candidate layers, drawn uniformly. Default: the input, the stem's output and every
  stage's output (six on PreActResNet-18). The paper "selects a random layer" without naming the
  set; the only public re-implementation (AllTheMiXLA `methods/catchupmix.py`) draws its layer
  uniformly from 0..5 on PreActResNet-18, where 0 is the input (CutMix) and 1..5 are its feature
  hooks after the stem conv and after each of the four stages. The stem is kept as a candidate for
  that reason: its output maps are filters like any stage's (`--set taps=all` leaves it out).
- `alpha` = 1.0 for λ (unverified; the natural default and the port's value).
- `prob` = 1.0, the mixing probability (default `mix_prob` of the authors' earlier mixup code).
- `normalize_rfi`: RFI as norms normalised to sum 1 over channels per sample (default), or the
  raw ℓ2 norms.
- `label_weight`: "channels" gives w = ⌊λC⌋ / C, the fraction of channels kept (default);
  "lambda" gives w = λ.
- `input_mix`: what happens when the input tap is drawn, where channels are colours rather than
  filters: "cutmix" (default, as the port does) or plain "mixup", with λ ~ Beta(`input_alpha`,
  `input_alpha`); the label weight is then the kept area fraction or λ.
- Ties in d are broken by channel index (a stable sort keeps the lower index from sample i).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robustbench_lite.bench.backbones import Backbone
from robustbench_lite.bench.errors import UserError
from robustbench_lite.bench.method import METHODS, Batch, Losses, Method, StepContext
from robustbench_lite.bench.mixing import (check_alpha, check_probability, choose, cutmix, happens,
                                           mixed_cross_entropy, partner_permutation, resolve_taps,
                                           sample_lambda)

NAME = "catchup"


def relative_filter_influence(h: Tensor, normalize: bool = True) -> Tensor:
    """(B, C) ℓ2 norm of each activation map, optionally normalised to sum 1 per sample."""
    norms = h.detach().float().flatten(2).norm(dim=2)
    if not normalize:
        return norms
    return norms / norms.sum(dim=1, keepdim=True).clamp_min(torch.finfo(norms.dtype).tiny)


def catch_up_mask(h: Tensor, perm: Tensor, keep: int, normalize: bool = True) -> Tensor:
    """(B, C) boolean mask, True where sample i keeps its own map: the `keep` channels with the
    smallest RFI[i] − RFI[π(i)] (ties to the lower channel index). Carries no gradient."""
    with torch.no_grad():
        rfi = relative_filter_influence(h, normalize)
        order = torch.argsort(rfi - rfi[perm], dim=1, stable=True)
        mask = torch.zeros_like(rfi, dtype=torch.bool)
        mask.scatter_(1, order[:, :keep], True)
    return mask


def catch_up_mix(h: Tensor, perm: Tensor, lam: float, normalize: bool = True
                 ) -> tuple[Tensor, float]:
    """Mix the (B, C, H, W) activations h with h[π]; returns them and ⌊λC⌋ / C."""
    channels = h.shape[1]
    keep = math.floor(lam * channels)
    mask = catch_up_mask(h, perm, keep, normalize)[:, :, None, None]
    return torch.where(mask, h, h[perm]), keep / channels


@METHODS.register(NAME)
class CatchUpMix(Method):
    """Catch-up Mix: feature mixup keeping, per channel, the pair's relatively weaker map."""

    @dataclass(frozen=True)
    class Config:
        # candidate taps, drawn uniformly; "all" = input + every stage output
        taps: tuple[str, ...] = ("all", "stem")
        alpha: float = 1.0  # λ ~ Beta(α, α) at feature taps
        prob: float = 1.0  # probability that a batch is mixed (else plain cross-entropy)
        normalize_rfi: bool = True  # RFI = per-sample ℓ2 norms normalised to sum 1; False: raw norms
        label_weight: Literal["channels", "lambda"] = "channels"  # w = ⌊λC⌋/C, or w = λ
        input_mix: Literal["cutmix", "mixup"] = "cutmix"  # the mix used when the input tap is drawn
        input_alpha: float = 1.0  # α of the input-level mix

        def __post_init__(self) -> None:
            check_alpha(self.alpha)
            check_alpha(self.input_alpha, "input_alpha")
            check_probability(self.prob, "prob")
            if self.label_weight not in ("channels", "lambda"):
                raise UserError(f"label_weight={self.label_weight!r}: use 'channels' or 'lambda'")
            if self.input_mix not in ("cutmix", "mixup"):
                raise UserError(f"input_mix={self.input_mix!r}: use 'cutmix' or 'mixup'")

    citation = ("Kang, Kang, Kim, Catch-Up Mix: Catch-Up Class for Struggling Filters in CNN "
                "(AAAI 2024) <https://arxiv.org/abs/2401.13193>")

    def build_model(self, backbone: Backbone) -> nn.Module:
        resolve_taps(self.config.taps, backbone, NAME)  # a tap the backbone lacks fails here
        return backbone

    def training_step(self, model: nn.Module, batch: Batch, ctx: StepContext) -> Losses:
        cfg = self.config
        if not happens(cfg.prob, ctx.rng):
            return {"ce": F.cross_entropy(model(batch.x), batch.y)}
        perm = partner_permutation(len(batch.x), ctx.rng, batch.x.device)
        tap = choose(resolve_taps(cfg.taps, model, NAME), ctx.rng)
        if tap == "input":
            logits, weight = self._mix_inputs(model, batch.x, perm, ctx.rng)
        else:
            logits, weight = self._mix_features(model, batch.x, perm, tap, ctx.rng)
        return {"ce": mixed_cross_entropy(logits, batch.y, batch.y[perm], weight)}

    def _mix_inputs(self, model: nn.Module, x: Tensor, perm: Tensor, rng: torch.Generator
                    ) -> tuple[Tensor, float]:
        lam = sample_lambda(self.config.input_alpha, rng)
        if self.config.input_mix == "cutmix":
            mixed, weight = cutmix(x, perm, lam, rng)
            return model(mixed), weight
        return model(lam * x + (1 - lam) * x[perm]), lam

    def _mix_features(self, model: nn.Module, x: Tensor, perm: Tensor, tap: str,
                      rng: torch.Generator) -> tuple[Tensor, float]:
        lam = sample_lambda(self.config.alpha, rng)
        kept = {}

        def mix(h: Tensor) -> Tensor:
            mixed, kept["fraction"] = catch_up_mix(h, perm, lam, self.config.normalize_rfi)
            return mixed

        logits = model(x, edits={tap: mix})
        return logits, kept["fraction"] if self.config.label_weight == "channels" else lam
