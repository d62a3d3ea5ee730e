"""The common corruptions: names, families, severity parameter tables, and the backends that apply them.

The single source of truth for every corruption implementation (the per-image reference backend in
`reference.py`, and any faster backend such as `engine.py`): the parameter tables are plain data, one tuple of
five per-severity parameters per corruption, documented in `PARAMETERS`.

Three tables exist, because the constants of Hendrycks & Dietterich (ICLR 2019) depend on the image
size:

- `CIFAR` (32x32): hendrycks/robustness `ImageNet-C/create_c/make_cifar_c.py`, the generator of
  CIFAR-10-C / CIFAR-100-C.
- `TINYIMAGENET` (64x64): hendrycks/robustness `ImageNet-C/create_c/make_tinyimagenet_c.py`, the
  generator of Tiny-ImageNet-C.
- `IMAGENET` (224x224): hendrycks/robustness `ImageNet-C/create_c/make_imagenet_c.py` (the same values
  as `ImageNet-C/imagenet_c/imagenet_c/corruptions.py` and `imagecorruptions`).

Other sizes use the nearest table in log scale (`table_for`): up to 45 px the CIFAR table, up to
119 px the Tiny-ImageNet table, above it the ImageNet table. Pixel-valued parameters (elastic
displacement, blur radii) are not rescaled.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import ModuleType

import numpy as np

from ..errors import UserError
from ..seeding import derive_seed

BENCHMARK = ("gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur",
             "motion_blur", "zoom_blur", "snow", "frost", "fog", "brightness", "contrast",
             "elastic_transform", "pixelate", "jpeg_compression")
"""The 15 corruptions of the benchmark, in the canonical order (headline numbers)."""

EXTRA = ("speckle_noise", "gaussian_blur", "spatter", "saturate")
"""The 4 held-out (validation) corruptions, reported apart."""

ALL = BENCHMARK + EXTRA
SEVERITIES = (1, 2, 3, 4, 5)

FAMILIES: Mapping[str, str] = {
    "gaussian_noise": "noise", "shot_noise": "noise", "impulse_noise": "noise",
    "defocus_blur": "blur", "glass_blur": "blur", "motion_blur": "blur", "zoom_blur": "blur",
    "snow": "weather", "frost": "weather", "fog": "weather", "brightness": "weather",
    "contrast": "digital", "elastic_transform": "digital", "pixelate": "digital",
    "jpeg_compression": "digital",
    "speckle_noise": "extra", "gaussian_blur": "extra", "spatter": "extra", "saturate": "extra",
}
"""Family of each corruption: the category folders of the ImageNet-C archives."""

PARAMETERS: Mapping[str, tuple[str, ...]] = {
    "gaussian_noise": ("sigma",),  # additive N(0, sigma) on [0, 1] pixels
    "shot_noise": ("photons",),  # Poisson(x * photons) / photons
    "impulse_noise": ("amount",),  # fraction of values set to 0 or 1 (salt and pepper)
    "defocus_blur": ("radius", "alias_blur"),  # disk kernel radius, Gaussian antialias sigma
    "glass_blur": ("sigma", "max_delta", "iterations"),  # blur, local pixel moves, blur
    "motion_blur": ("radius", "sigma"),  # ImageMagick-style line kernel, random angle in [-45, 45)
    "zoom_blur": ("zooms",),  # the zoom factors (a tuple) averaged with the image
    "snow": ("loc", "scale", "zoom", "threshold", "blur_radius", "blur_sigma", "blend"),
    "frost": ("image_weight", "frost_weight"),
    "fog": ("strength", "wibble_decay"),  # plasma fractal added to the image
    "brightness": ("delta",),  # added to the HSV value channel
    "contrast": ("factor",),  # scales deviations from the per-channel mean
    "elastic_transform": ("alpha", "sigma", "affine"),  # displacement scale, smoothness, affine jitter (px)
    "pixelate": ("factor",),  # box downsampling factor, then box upsampling
    "jpeg_compression": ("quality",),
    "speckle_noise": ("sigma",),  # multiplicative x * (1 + N(0, sigma))
    "gaussian_blur": ("sigma",),
    "spatter": ("loc", "scale", "sigma", "threshold", "intensity", "mud"),  # mud 0: water, 1: mud
    "saturate": ("scale", "shift"),  # HSV saturation * scale + shift
}


def _zooms(stop: float, step: float) -> tuple[float, ...]:
    """The factors of `np.arange(1, stop, step)` exactly as the generators use them, float rounding
    included: arange(1, 1.06, 0.01) has 7 values, 1.00 to 1.06, and the last factor of
    arange(1, 1.26, 0.01) is 1.2500000000000002, with which scipy's zoom (output side
    round(side * factor)) takes 26 pixels to 33, where 1.25 would give 32."""
    return tuple(float(z) for z in np.arange(1, stop, step))


@dataclass(frozen=True, eq=False)
class CorruptionTable:
    """Per-severity parameters of every corruption for one image size."""

    name: str
    image_size: int  # the side the constants were chosen for
    source: str  # the generator the constants come from
    severities: Mapping[str, tuple]  # corruption -> 5 parameter values (severity 1..5)
    frost_scale: float  # resize factor of the frost pictures before the random crop
    frost_pictures: int = 5  # the generators draw among the first five pictures only

    def params(self, corruption: str, severity: int):
        """The parameter value (a number or a tuple, see `PARAMETERS`) of one cell."""
        return self.severities[corruption][severity - 1]


CIFAR = CorruptionTable(
    name="cifar", image_size=32, source="hendrycks/robustness ImageNet-C/create_c/make_cifar_c.py",
    frost_scale=0.2,
    severities={
        "gaussian_noise": (0.04, 0.06, 0.08, 0.09, 0.10),
        "shot_noise": (500, 250, 100, 75, 50),
        "impulse_noise": (0.01, 0.02, 0.03, 0.05, 0.07),
        "defocus_blur": ((0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1)),
        "glass_blur": ((0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1), (0.25, 1, 2), (0.4, 1, 2)),
        "motion_blur": ((6, 1), (6, 1.5), (6, 2), (8, 2), (9, 2.5)),
        "zoom_blur": tuple(_zooms(stop, 0.01) for stop in (1.06, 1.11, 1.16, 1.21, 1.26)),
        "snow": ((0.1, 0.2, 1, 0.6, 8, 3, 0.95),
                 (0.1, 0.2, 1, 0.5, 10, 4, 0.9),
                 (0.15, 0.3, 1.75, 0.55, 10, 4, 0.9),
                 (0.25, 0.3, 2.25, 0.6, 12, 6, 0.85),
                 (0.3, 0.3, 1.25, 0.65, 14, 12, 0.8)),
        "frost": ((1, 0.2), (1, 0.3), (0.9, 0.4), (0.85, 0.4), (0.75, 0.45)),
        "fog": ((0.2, 3), (0.5, 3), (0.75, 2.5), (1, 2), (1.5, 1.75)),
        "brightness": (0.05, 0.1, 0.15, 0.2, 0.3),
        "contrast": (0.75, 0.5, 0.4, 0.3, 0.15),
        # 32 * (0, 0, 0.08), 32 * (0.05, 0.2, 0.07), 32 * (0.08, 0.06, 0.06), 32 * (0.1, 0.04, 0.05),
        # 32 * (0.1, 0.03, 0.03)
        "elastic_transform": ((0.0, 0.0, 2.56), (1.6, 6.4, 2.24), (2.56, 1.92, 1.92),
                              (3.2, 1.28, 1.6), (3.2, 0.96, 0.96)),
        "pixelate": (0.95, 0.9, 0.85, 0.75, 0.65),
        "jpeg_compression": (80, 65, 58, 50, 40),
        "speckle_noise": (0.06, 0.1, 0.12, 0.16, 0.2),
        "gaussian_blur": (0.4, 0.6, 0.7, 0.8, 1),
        "spatter": ((0.62, 0.1, 0.7, 0.7, 0.5, 0),
                    (0.65, 0.1, 0.8, 0.7, 0.5, 0),
                    (0.65, 0.3, 1, 0.69, 0.5, 0),
                    (0.65, 0.1, 0.7, 0.69, 0.6, 1),
                    (0.65, 0.1, 0.5, 0.68, 0.6, 1)),
        "saturate": ((0.3, 0), (0.1, 0), (1.5, 0), (2, 0.1), (2.5, 0.2)),
    })

TINYIMAGENET = CorruptionTable(
    name="tinyimagenet", image_size=64,
    source="hendrycks/robustness ImageNet-C/create_c/make_tinyimagenet_c.py",
    frost_scale=0.3,  # cv2.resize(frost, (0, 0), fx=0.3, fy=0.3), then a random 64x64 crop
    # the rest of its structure is the image size's, as in the other generators: fog's
    # plasma_fractal(mapsize=64)[:64, :64], glass blur's range(64 - delta, delta, -1), pixelate's
    # int(64 * c), clipped_zoom and the elastic anchors of the 64-px image
    severities={
        "gaussian_noise": (0.04, 0.08, 0.12, 0.15, 0.18),
        "shot_noise": (250, 100, 50, 30, 15),
        "impulse_noise": (0.01, 0.02, 0.05, 0.08, 0.14),
        "defocus_blur": ((0.5, 0.6), (1, 0.1), (1.5, 0.1), (2.5, 0.01), (3, 0.1)),
        "glass_blur": ((0.1, 1, 1), (0.5, 1, 1), (0.6, 1, 2), (0.7, 2, 1), (0.9, 2, 2)),
        "motion_blur": ((10, 1), (10, 1.5), (10, 2), (10, 2.5), (12, 3)),
        "zoom_blur": tuple(_zooms(stop, 0.01) for stop in (1.06, 1.11, 1.16, 1.21, 1.26)),
        "snow": ((0.1, 0.2, 1, 0.6, 8, 3, 0.8),
                 (0.1, 0.2, 1, 0.5, 10, 4, 0.8),
                 (0.15, 0.3, 1.75, 0.55, 10, 4, 0.7),
                 (0.25, 0.3, 2.25, 0.6, 12, 6, 0.65),
                 (0.3, 0.3, 1.25, 0.65, 14, 12, 0.6)),
        "frost": ((1, 0.3), (0.9, 0.4), (0.8, 0.45), (0.75, 0.5), (0.7, 0.55)),
        "fog": ((0.4, 3), (0.7, 3), (1, 2.5), (1.5, 2), (2, 1.75)),
        "brightness": (0.1, 0.2, 0.3, 0.4, 0.5),
        "contrast": (0.4, 0.3, 0.2, 0.1, 0.05),
        # IMSIZE = 64: 64 * (0, 0, 0.08), 64 * (0.05, 0.3, 0.06), 64 * (0.1, 0.08, 0.06),
        # 64 * (0.1, 0.03, 0.03), 64 * (0.16, 0.03, 0.02) (products by 64 are exact in float)
        "elastic_transform": ((0.0, 0.0, 5.12), (3.2, 19.2, 3.84), (6.4, 5.12, 3.84),
                              (6.4, 1.92, 1.92), (10.24, 1.92, 1.28)),
        "pixelate": (0.9, 0.8, 0.7, 0.6, 0.5),  # int(64 * c): 57, 51, 44, 38, 32 pixels
        "jpeg_compression": (65, 58, 50, 40, 25),
        "speckle_noise": (0.15, 0.2, 0.25, 0.3, 0.35),
        "gaussian_blur": (0.5, 0.75, 1, 1.25, 1.5),
        "spatter": ((0.62, 0.1, 0.7, 0.7, 0.6, 0),
                    (0.65, 0.1, 0.8, 0.7, 0.6, 0),
                    (0.65, 0.3, 1, 0.69, 0.6, 0),
                    (0.65, 0.1, 0.7, 0.68, 0.6, 1),
                    (0.65, 0.1, 0.5, 0.67, 0.6, 1)),
        "saturate": ((0.3, 0), (0.1, 0), (2, 0), (5, 0.1), (30, 0.2)),
    })

IMAGENET = CorruptionTable(
    name="imagenet", image_size=224,
    source="hendrycks/robustness ImageNet-C/create_c/make_imagenet_c.py", frost_scale=1.0,
    severities={
        "gaussian_noise": (0.08, 0.12, 0.18, 0.26, 0.38),
        "shot_noise": (60, 25, 12, 5, 3),
        "impulse_noise": (0.03, 0.06, 0.09, 0.17, 0.27),
        "defocus_blur": ((3, 0.1), (4, 0.5), (6, 0.5), (8, 0.5), (10, 0.5)),
        "glass_blur": ((0.7, 1, 2), (0.9, 2, 1), (1, 2, 3), (1.1, 3, 2), (1.5, 4, 2)),
        "motion_blur": ((10, 3), (15, 5), (15, 8), (15, 12), (20, 15)),
        "zoom_blur": (_zooms(1.11, 0.01), _zooms(1.16, 0.01), _zooms(1.21, 0.02), _zooms(1.26, 0.02),
                      _zooms(1.31, 0.03)),
        "snow": ((0.1, 0.3, 3, 0.5, 10, 4, 0.8),
                 (0.2, 0.3, 2, 0.5, 12, 4, 0.7),
                 (0.55, 0.3, 4, 0.9, 12, 8, 0.7),
                 (0.55, 0.3, 4.5, 0.85, 12, 8, 0.65),
                 (0.55, 0.3, 2.5, 0.85, 12, 12, 0.55)),
        "frost": ((1, 0.4), (0.8, 0.6), (0.7, 0.7), (0.65, 0.7), (0.6, 0.75)),
        "fog": ((1.5, 2), (2, 2), (2.5, 1.7), (2.5, 1.5), (3, 1.4)),
        "brightness": (0.1, 0.2, 0.3, 0.4, 0.5),
        "contrast": (0.4, 0.3, 0.2, 0.1, 0.05),
        # 244 * (2, 0.7, 0.1), 244 * (2, 0.08, 0.2), 244 * (0.05, 0.01, 0.02), 244 * (0.07, 0.01, 0.02),
        # 244 * (0.12, 0.01, 0.02): the generator multiplies by 244, not 224
        "elastic_transform": ((488.0, 170.8, 24.4), (488.0, 19.52, 48.8), (12.2, 2.44, 4.88),
                              (17.08, 2.44, 4.88), (29.28, 2.44, 4.88)),
        "pixelate": (0.6, 0.5, 0.4, 0.3, 0.25),
        "jpeg_compression": (25, 18, 15, 10, 7),
        "speckle_noise": (0.15, 0.2, 0.35, 0.45, 0.6),
        "gaussian_blur": (1, 2, 3, 4, 6),
        "spatter": ((0.65, 0.3, 4, 0.69, 0.6, 0),
                    (0.65, 0.3, 3, 0.68, 0.6, 0),
                    (0.65, 0.3, 2, 0.68, 0.5, 0),
                    (0.65, 0.3, 1, 0.65, 1.5, 1),
                    (0.67, 0.4, 1, 0.65, 1.5, 1)),
        "saturate": ((0.3, 0), (0.1, 0), (2, 0), (5, 0.1), (20, 0.2)),
    })

TABLES = {table.name: table for table in (CIFAR, TINYIMAGENET, IMAGENET)}


def table_for(image_size: int) -> CorruptionTable:
    """The table whose image size is nearest to `image_size` (in log scale)."""
    return min(TABLES.values(), key=lambda t: abs(math.log(image_size / t.image_size)))


def parse_corruptions(spec: str) -> tuple[str, ...]:
    """'all' | 'benchmark' | 'extra' | comma-separated names, in the canonical order."""
    groups = {"all": ALL, "benchmark": BENCHMARK, "extra": EXTRA}
    if spec in groups:
        return groups[spec]
    names = [n.strip() for n in spec.split(",") if n.strip()]
    unknown = [n for n in names if n not in ALL]
    if unknown or not names:
        raise UserError(f"unknown corruption(s) {', '.join(unknown) or repr(spec)}; use all, benchmark, "
                        f"extra or names from: {', '.join(ALL)}")
    return tuple(n for n in ALL if n in names)


def image_seed(seed: int, corruption: str, severity: int, index: int) -> int:
    """The seed of one corrupted image: a function of (seed, corruption, severity, image index) only."""
    return derive_seed(seed, f"corruption/{corruption}/{severity}/{index}")


Backend = Callable[[np.ndarray, str, int, CorruptionTable, Sequence[int]], np.ndarray]
"""corrupt(images uint8 (N, H, W, 3), corruption, severity, table, per-image seeds) -> same shape."""

BACKENDS: Mapping[str, str] = {
    "reference": "robustbench_lite.bench.corruptions.reference",
    "engine": "robustbench_lite.bench.corruptions.engine",
}
"""Backend name -> module exposing `corrupt_batch` (a `Backend`), `VERSION` (an int, bumped
whenever its output changes; it keys the cache of generated sets), and optionally `require()`
(raises a UserError naming what to install when a library it needs is missing) and `PARALLEL`
(True when large sets should be spread over one process per CPU)."""


def load_backend(name: str, check: bool = True) -> ModuleType:
    """The module of backend `name` (see `BACKENDS`); with `check`, its libraries must be present."""
    if name not in BACKENDS:
        raise UserError(f"unknown corruption backend {name!r}; known: {', '.join(BACKENDS)}")
    module = importlib.import_module(BACKENDS[name])
    if check and hasattr(module, "require"):
        module.require()
    return module
