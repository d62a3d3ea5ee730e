"""Building blocks shared by the mixing methods (mixup, CutMix, Manifold Mixup, Catch-up Mix).

Every draw comes from the method's generator (`ctx.rng`), so a run is identical for a seed.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .errors import UserError


def check_alpha(alpha: float, name: str = "alpha") -> None:
    """Beta(alpha, alpha) needs alpha > 0."""
    if not alpha > 0:
        raise UserError(f"{name}={alpha} must be > 0 (it parameterises Beta({name}, {name}))")


def check_probability(p: float, name: str) -> None:
    if not 0 <= p <= 1:
        raise UserError(f"{name}={p} must be a probability in [0, 1]")


def sample_lambda(alpha: float, rng: torch.Generator) -> float:
    """A mixing ratio λ ~ Beta(alpha, alpha), drawn with NumPy from a seed taken off `rng`."""
    seed = int(torch.randint(2**31, (1,), generator=rng))
    return float(np.random.default_rng(seed).beta(alpha, alpha))


def happens(probability: float, rng: torch.Generator) -> bool:
    """True with the given probability."""
    return float(torch.rand((), generator=rng)) < probability


def partner_permutation(n: int, rng: torch.Generator, device: torch.device) -> Tensor:
    """π: sample i of the batch is mixed with sample π(i)."""
    return torch.randperm(n, generator=rng).to(device)


def choose(options: Sequence[str], rng: torch.Generator) -> str:
    """One of `options`, uniformly."""
    return options[int(torch.randint(len(options), (1,), generator=rng))]


def mixed_cross_entropy(logits: Tensor, y_a: Tensor, y_b: Tensor, weight_a: float) -> Tensor:
    """weight_a · CE(logits, y_a) + (1 − weight_a) · CE(logits, y_b)."""
    return weight_a * F.cross_entropy(logits, y_a) + (1 - weight_a) * F.cross_entropy(logits, y_b)


def resolve_taps(requested: Sequence[str], model: nn.Module, method: str) -> tuple[str, ...]:
    """The taps to mix at, in the model's depth order; "all" stands for input + every stage output.

    A tap the backbone lacks (or a model without taps) is a UserError naming the valid ones.
    """
    taps = getattr(model, "taps", None)
    stages = getattr(model, "stages", None)
    if taps is None or stages is None:
        raise UserError(f"{method} mixes at named taps, but {type(model).__name__} has none; "
                        f"use a Backbone from bench/backbones.py")
    wanted = set(requested)
    if "all" in wanted:
        wanted = (wanted - {"all"}) | {"input", *stages.keys()}
    unknown = sorted(wanted - set(taps))
    if unknown or not wanted:
        problem = f"taps {unknown} are not in this backbone" if unknown else "no taps given"
        raise UserError(f"{method}: {problem}; choose among {', '.join(taps)} or 'all' "
                        f"(e.g. --set taps=input,stage1)")
    return tuple(t for t in taps if t in wanted)


def cutmix_box(height: int, width: int, lam: float, rng: torch.Generator
               ) -> tuple[int, int, int, int]:
    """A box (top, bottom, left, right) of about (1 − λ) of the image, clipped to the image.

    Side lengths are ⌊side · sqrt(1 − λ)⌋ and the centre is a uniform pixel (Yun et al. 2019).
    """
    ratio = (1.0 - lam) ** 0.5
    cut_h, cut_w = int(height * ratio), int(width * ratio)
    cy = int(torch.randint(height, (1,), generator=rng))
    cx = int(torch.randint(width, (1,), generator=rng))
    top, bottom = max(cy - cut_h // 2, 0), min(cy + cut_h // 2, height)
    left, right = max(cx - cut_w // 2, 0), min(cx + cut_w // 2, width)
    return top, bottom, left, right


def cutmix(x: Tensor, perm: Tensor, lam: float, rng: torch.Generator) -> tuple[Tensor, float]:
    """Paste a box of each partner x[π(i)] into x[i]; returns the images and the weight of y
    (the exact fraction of pixels kept from x[i] after clipping the box)."""
    height, width = x.shape[-2:]
    top, bottom, left, right = cutmix_box(height, width, lam, rng)
    mixed = x.clone()
    mixed[..., top:bottom, left:right] = x[perm, ..., top:bottom, left:right]
    pasted = (bottom - top) * (right - left)
    return mixed, 1.0 - pasted / (height * width)
