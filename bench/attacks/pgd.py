"""White-box attacks on [0, 1] images: FGSM and PGD (L∞ and L2), for evaluation and adversarial training.

- FGSM: Goodfellow et al., Explaining and Harnessing Adversarial Examples (ICLR 2015).
- PGD: Madry et al., Towards Deep Learning Models Resistant to Adversarial Attacks (ICLR 2018).

Every attack runs the model in eval mode (its previous mode is restored), differentiates the *sum*
of per-sample losses (so a sample's step does not depend on the batch it shares) and returns
detached images in [0, 1]. The update and clamp order follow torchattacks (step, clip the
perturbation to the ε-ball, clip the image to [0, 1]), so both give identical L∞ examples.
Conventions that differ from torchattacks:
- the gradient is taken of the summed loss, not the batch mean (same sign; L2 steps are normalised);
- PGD-L2 starts uniformly in the L2 ball (radius ε·U^(1/d)); torchattacks draws the radius as ε·U;
- random starts come from an explicit CPU generator, not the global one.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..evaluate import eval_mode, full_precision, inference_mode

LossFn = Callable[[nn.Module, Tensor, Tensor], Tensor]
"""(model, x, y) -> per-sample loss of shape (B,), which an untargeted attack maximises."""

NORMS = ("linf", "l2")


def ce_loss(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    """Per-sample cross-entropy of the model's logits."""
    return F.cross_entropy(model(x), y, reduction="none")


def margin_loss(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    """Carlini-Wagner margin max_{j≠y} z_j − z_y (positive once the sample is misclassified)."""
    logits = model(x)
    true = logits.gather(1, y[:, None]).squeeze(1)
    others = logits.masked_fill(F.one_hot(y, logits.shape[1]).bool(), float("-inf"))
    return others.amax(1) - true


def input_gradient(model: nn.Module, x: Tensor, y: Tensor, loss_fn: LossFn = ce_loss) -> Tensor:
    """Gradient of the summed per-sample loss with respect to the input (parameters untouched)."""
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        loss = loss_fn(model, x, y)
        (grad,) = torch.autograd.grad(loss.sum(), x)
    return grad


def fgsm(model: nn.Module, x: Tensor, y: Tensor, eps: float, loss_fn: LossFn = ce_loss) -> Tensor:
    """Fast gradient sign method: one L∞ step of size ε, clipped to [0, 1] (in float32)."""
    with eval_mode(model), full_precision(x.device):
        grad = input_gradient(model, x.float(), y, loss_fn)
    return (x + eps * grad.sign()).clamp(0, 1).detach()


def pgd(model: nn.Module, x: Tensor, y: Tensor, eps: float, steps: int, step_size: float,
        norm: str = "linf", random_start: bool = True, restarts: int = 1,
        loss_fn: LossFn = ce_loss, rng: torch.Generator | None = None) -> Tensor:
    """Projected gradient ascent on `loss_fn` within the ε-ball of `norm` ("linf" or "l2").

    With several restarts, each sample keeps the first example that fools the model, else the one
    of highest loss. Random starts are drawn from `rng` (a CPU generator; the global one if None).
    Runs in float32 also inside an autocast region (adversarial training under mixed precision).
    """
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
    if restarts < 1:
        raise ValueError(f"restarts must be at least 1, got {restarts}")
    x = x.detach().float()
    with eval_mode(model), full_precision(x.device):
        best = _pgd_run(model, x, y, eps, steps, step_size, norm, random_start, loss_fn, rng)
        if restarts == 1:
            return best
        best_fooled, best_loss = _fooled_and_loss(model, best, y, loss_fn)
        for _ in range(restarts - 1):
            adv = _pgd_run(model, x, y, eps, steps, step_size, norm, random_start, loss_fn, rng)
            fooled, loss = _fooled_and_loss(model, adv, y, loss_fn)
            better = ~best_fooled & (fooled | (loss > best_loss))
            best = torch.where(better[:, None, None, None], adv, best)
            best_fooled, best_loss = best_fooled | fooled, torch.where(better, loss, best_loss)
    return best


def _pgd_run(model: nn.Module, x: Tensor, y: Tensor, eps: float, steps: int, step_size: float,
             norm: str, random_start: bool, loss_fn: LossFn, rng: torch.Generator | None) -> Tensor:
    adv = x.clone()
    if random_start:
        adv = (x + _random_start(x, eps, norm, rng)).clamp(0, 1)
    for _ in range(steps):
        grad = input_gradient(model, adv, y, loss_fn)
        if norm == "linf":
            adv = adv + step_size * grad.sign()
            delta = (adv - x).clamp(-eps, eps)
        else:
            adv = adv + step_size * grad / _l2(grad).clamp_min(1e-12)
            delta = adv - x
            delta = delta * (eps / _l2(delta).clamp_min(1e-12)).clamp(max=1.0)
        adv = (x + delta).clamp(0, 1)
    return adv.detach()


def _random_start(x: Tensor, eps: float, norm: str, rng: torch.Generator | None) -> Tensor:
    """A perturbation drawn uniformly from the ε-ball of `norm`, on x's device."""
    if norm == "linf":
        delta = (torch.rand(x.shape, generator=rng) * 2 - 1) * eps
    else:
        direction = torch.randn(x.shape, generator=rng)
        direction = direction / _l2(direction).clamp_min(1e-12)
        radius = torch.rand(len(x), generator=rng) ** (1.0 / x[0].numel())
        delta = direction * (eps * radius)[:, None, None, None]
    return delta.to(device=x.device, dtype=x.dtype)


def _l2(t: Tensor) -> Tensor:
    """Per-sample L2 norm, shaped to broadcast against a batch of images."""
    return t.flatten(1).norm(dim=1)[:, None, None, None]


def _fooled_and_loss(model: nn.Module, x: Tensor, y: Tensor, loss_fn: LossFn
                     ) -> tuple[Tensor, Tensor]:
    with inference_mode(model):
        fooled = model(x).argmax(1) != y
        loss = loss_fn(model, x, y).detach()
    return fooled, loss


def autograd_always(model: nn.Module) -> nn.Module:
    """`model`, wrapped to keep autograd on inside its forward if it differentiates there
    (`needs_autograd_at_eval`): for attack libraries that call the model under `no_grad`."""
    return _GradEnabled(model) if getattr(model, "needs_autograd_at_eval", False) else model


class _GradEnabled(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        with torch.enable_grad():
            return self.model(x)
