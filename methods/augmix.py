"""AugMix: augment-and-mix views with a Jensen-Shannon consistency loss (Hendrycks et al., ICLR 2020)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageEnhance, ImageOps
from torch import Tensor, nn

from robustbench_lite.bench.config import setting
from robustbench_lite.bench.method import METHODS, Batch, Losses, Method, StepContext


# The reference's operations (augmentations.py of google-research/augmix): a strength `level` is
# drawn uniformly in [0.1, severity) for every operation and mapped to its parameter; four more
# operations (color, contrast, brightness, sharpness) overlap the -C corruptions and are off by
# default.
OPERATIONS = ("autocontrast", "equalize", "posterize", "rotate", "solarize", "shear_x", "shear_y",
              "translate_x", "translate_y")
OVERLAPPING = ("color", "contrast", "brightness", "sharpness")


def operation_parameter(name: str, severity: float, size: int, rng: np.random.Generator) -> float:
    """The parameter of one operation drawn as the reference draws it: level ~ U(0.1, severity),
    then an int or float fraction level/10 of the operation's range, with a random sign for the
    geometric ones (rotation in whole degrees, as the reference's `int_parameter`)."""
    if name in ("autocontrast", "equalize"):
        return 0.0
    level = rng.uniform(0.1, severity)
    if name == "posterize":
        return float(4 - int(level * 4 / 10))  # bits kept
    if name == "solarize":
        return float(256 - int(level * 256 / 10))  # threshold
    if name in OVERLAPPING:
        return level * 1.8 / 10 + 0.1  # enhancement factor
    magnitude = {"rotate": float(int(level * 30 / 10)),
                 "shear_x": level * 0.3 / 10, "shear_y": level * 0.3 / 10,
                 "translate_x": float(int(level * (size / 3) / 10)),
                 "translate_y": float(int(level * (size / 3) / 10))}[name]
    return -magnitude if rng.uniform() > 0.5 else magnitude


def apply_operation(image: Image.Image, name: str, value: float) -> Image.Image:
    """One operation on a PIL image, with the reference's PIL calls."""
    size = image.size
    if name == "autocontrast":
        return ImageOps.autocontrast(image)
    if name == "equalize":
        return ImageOps.equalize(image)
    if name == "posterize":
        return ImageOps.posterize(image, int(value))
    if name == "solarize":
        return ImageOps.solarize(image, int(value))
    if name == "rotate":
        return image.rotate(value, resample=Image.BILINEAR)
    if name in OVERLAPPING:
        enhancer = {"color": ImageEnhance.Color, "contrast": ImageEnhance.Contrast,
                    "brightness": ImageEnhance.Brightness, "sharpness": ImageEnhance.Sharpness}
        return enhancer[name](image).enhance(value)
    matrix = {"shear_x": (1, value, 0, 0, 1, 0), "shear_y": (1, 0, 0, value, 1, 0),
              "translate_x": (1, 0, value, 0, 1, 0), "translate_y": (1, 0, 0, 0, 1, value)}[name]
    return image.transform(size, Image.AFFINE, matrix, resample=Image.BILINEAR)


def augment_and_mix(image: np.ndarray, config, rng: np.random.Generator) -> np.ndarray:
    """One AugMix view of an (H, W, 3) uint8 image as float32 in [0, 1]: `mixture_width` chains of
    1..3 (or `chain_depth`) operations on the uint8 image, mixed in float with Dirichlet weights
    and skip-connected to the original with a Beta weight; nothing is truncated after the chains
    (reference `aug` in cifar.py)."""
    operations = OPERATIONS + (OVERLAPPING if config.all_ops else ())
    weights = np.float32(rng.dirichlet([config.alpha] * config.mixture_width))
    skip = np.float32(rng.beta(config.alpha, config.alpha))
    original = Image.fromarray(image)
    mix = np.zeros(image.shape, np.float32)
    for weight in weights:
        chain = original
        depth = config.chain_depth if config.chain_depth > 0 else int(rng.integers(1, 4))
        for _ in range(depth):
            name = operations[int(rng.integers(len(operations)))]
            chain = apply_operation(chain, name, operation_parameter(
                name, config.severity, image.shape[0], rng))
        mix += weight * np.asarray(chain, np.float32) / 255
    return (1 - skip) * image.astype(np.float32) / 255 + skip * mix


def augmix_views(x: Tensor, config, views: int, seed: int) -> tuple[Tensor, ...]:
    """`views` AugMix copies of the [0, 1] batch `x`, each image with chains of its own, drawn
    from a generator seeded with `seed` (so the views are a function of (x, seed))."""
    images = x.detach().mul(255).round_().to("cpu", torch.uint8).permute(0, 2, 3, 1).numpy()
    rng = np.random.default_rng(seed)
    mixed = [np.stack([augment_and_mix(image, config, rng) for image in images])
             for _ in range(views)]
    return tuple(torch.from_numpy(m).permute(0, 3, 1, 2).contiguous().to(x.device)
                 for m in mixed)


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

    Hendrycks et al. (ICLR 2020), CIFAR setting of the reference code (cifar.py, augmentations.py):
    mixture width 3, chain depth uniform in 1..3, severity 3, Dirichlet(1) chain weights and
    Beta(1, 1) skip weight, the operations that do not overlap the -C corruptions (autocontrast,
    equalize, posterize, rotate, solarize, shear, translate), each strength drawn continuously as
    the reference draws it, JSD weight 12 over (clean, view 1, view 2) forwarded as one
    concatenated batch. Views are made from the cropped, flipped batch, with the reference's PIL
    operations image by image (about a millisecond of CPU per image and view at 32 px).

    Deviation from the reference code: translations span a third of the image's own size (the
    reference's constant IMAGE_SIZE is 32 for CIFAR and 224 for ImageNet, the same rule).
    """

    revision = 1  # 1: the reference's continuous strengths and float mix (was torchvision's AugMix)
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
        # also brightness, color, contrast, sharpness (they overlap the -C set)
        all_ops: bool = False
        # weight of the Jensen-Shannon consistency term
        jsd_weight: float = setting(12.0, low=0)

        def __post_init__(self) -> None:
            if self.chain_depth == 0:
                raise ValueError("chain_depth must be -1 (1..3 at random) or >= 1, not 0")

    def train_transform(self, batch: Batch, ctx: StepContext) -> Batch:
        seed = int(torch.randint(2**62, (1,), generator=ctx.rng))
        return Batch(batch.x, batch.y, augmix_views(batch.x, self.config, 2, seed))

    def training_step(self, model: nn.Module, batch: Batch, ctx: StepContext) -> Losses:
        logits = model(torch.cat([batch.x, *batch.views])).split(len(batch.x))
        return {"ce": F.cross_entropy(logits[0], batch.y),
                "jsd": self.config.jsd_weight * jensen_shannon(*logits)}
