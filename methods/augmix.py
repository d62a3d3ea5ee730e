"""AugMix: augment-and-mix views with a Jensen-Shannon consistency loss (Hendrycks et al., ICLR 2020)."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.transforms import v2

from robustbench_lite.bench.config import setting
from robustbench_lite.bench.errors import UserError
from robustbench_lite.bench.method import METHODS, Batch, Losses, Method, StepContext


def augmix_views(x: Tensor, transform: nn.Module, views: int, seed: int) -> tuple[Tensor, ...]:
    """`views` AugMix copies of the [0, 1] batch `x`, each image augmented on its own.

    torchvision's AugMix shares one chain of operations across a batched input, so it is applied
    image by image; it draws from the global torch generator, which is forked and seeded with
    `seed` so the views are a function of (x, seed). The per-image operations are too small for
    intra-op parallelism: they run on one thread (several times less CPU time than on two).
    """
    images = x.detach().mul(255).round_().to("cpu", torch.uint8)
    with torch.random.fork_rng(devices=[]), _one_thread():
        torch.manual_seed(seed)
        mixed = [torch.stack([transform(image) for image in images]) for _ in range(views)]
    return tuple(m.to(x.device).float().div_(255) for m in mixed)


@contextlib.contextmanager
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def jensen_shannon(*logits: Tensor) -> Tensor:
    """Generalised JS divergence of the softmax distributions, averaged over the batch:
    mean_i KL(p_i || M) with M the mixture, clamped at 1e-7 before the log as in AugMix."""
    probs = [F.softmax(z, dim=1) for z in logits]
    log_mixture = (sum(probs) / len(probs)).clamp(1e-7, 1).log()
    kl = [F.kl_div(log_mixture, p, reduction="batchmean") for p in probs]
    return sum(kl) / len(kl)


@METHODS.register("augmix")
class AugMix(Method):
    """AugMix: cross-entropy on the clean batch plus Jensen-Shannon consistency with two AugMix views.

    Hendrycks et al. (ICLR 2020), CIFAR setting of the reference code: mixture width 3, chain depth
    uniform in 1..3, severity 3, Dirichlet(1) chain weights and Beta(1, 1) skip weight, the
    operations that do not overlap the -C corruptions (autocontrast, equalize, posterize, rotate,
    solarize, shear, translate; torchvision's `all_ops=False`), JSD weight 12 over (clean, view 1,
    view 2) forwarded as one concatenated batch. Views are made from the cropped, flipped batch.

    Deviations from the reference code (torchvision's `transforms.v2.AugMix` is used):
    - Images are uint8 tensors: each chain works on uint8 and the mix is truncated back to uint8;
      the reference mixes float images.
    - Operation strength is one of the first `severity` of 10 evenly spaced levels (0, 1/9 or 2/9
      of each operation's range at severity 3); the reference draws a continuous level in
      [0.1, severity] and scales it by 1/10 (up to 3/10 of the range).
    Cost: about 2 ms of CPU per image and view (torchvision's per-image transform, one thread).
    """

    citation = ("Hendrycks, Mu, Cubuk, Zoph, Gilmer, Lakshminarayanan, AugMix: A Simple Data "
                "Processing Method to Improve Robustness and Uncertainty (ICLR 2020) "
                "<https://arxiv.org/abs/1912.02781>")

    @dataclass(frozen=True)
    class Config:
        severity: int = setting(3, low=1, high=10)  # strength of the base operations (1..10)
        mixture_width: int = setting(3, low=1)  # augmentation chains mixed per view
        chain_depth: int = setting(-1, low=-1)  # operations per chain; -1 draws 1..3 per chain
        # Dirichlet / Beta concentration of the mixing weights
        alpha: float = setting(1.0, low=0, low_open=True)
        all_ops: bool = False  # also brightness, color, contrast, sharpness (overlap the -C set)
        # weight of the Jensen-Shannon consistency term
        jsd_weight: float = setting(12.0, low=0)

        def __post_init__(self) -> None:
            if self.chain_depth == 0:
                raise ValueError("chain_depth must be -1 (1..3 at random) or >= 1, not 0")

    def __init__(self, config=None) -> None:
        super().__init__(config)
        c = self.config
        if not 1 <= c.severity <= 10 or c.mixture_width < 1:
            raise UserError(f"augmix needs 1 <= severity <= 10 and mixture_width >= 1, got "
                            f"severity={c.severity}, mixture_width={c.mixture_width}; fix --set")
        self.transform = v2.AugMix(severity=c.severity, mixture_width=c.mixture_width,
                                   chain_depth=c.chain_depth, alpha=c.alpha, all_ops=c.all_ops)

    def train_transform(self, batch: Batch, ctx: StepContext) -> Batch:
        seed = int(torch.randint(2**62, (1,), generator=ctx.rng))
        return Batch(batch.x, batch.y, augmix_views(batch.x, self.transform, 2, seed))

    def training_step(self, model: nn.Module, batch: Batch, ctx: StepContext) -> Losses:
        logits = model(torch.cat([batch.x, *batch.views])).split(len(batch.x))
        return {"ce": F.cross_entropy(logits[0], batch.y),
                "jsd": self.config.jsd_weight * jensen_shannon(*logits)}
