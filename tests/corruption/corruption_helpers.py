"""Helpers of the corruption tests: small smooth colour images, natural photographs, a canonical
CIFAR-C folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.ndimage

from robustbench_lite.bench.corruptions import sets
from robustbench_lite.bench.corruptions.tables import ALL


def colour_images(n: int = 6, size: int = 32, seed: int = 0) -> np.ndarray:
    """(n, size, size, 3) uint8 smooth colour noise stretched to the full 0..255 range per image."""
    rng = np.random.default_rng(seed)
    x = scipy.ndimage.gaussian_filter(rng.random((n, size, size, 3)), (0, 2, 2, 0))
    low, high = x.min(axis=(1, 2, 3), keepdims=True), x.max(axis=(1, 2, 3), keepdims=True)
    return ((x - low) / (high - low) * 255).astype(np.uint8)


PHOTOGRAPHS = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry")
"""scikit-image's bundled sample photographs (shipped inside the package, no download)."""


def photographs(size: int) -> np.ndarray:
    """(6, size, size, 3) uint8: the central square of each of `PHOTOGRAPHS`, resized by Pillow
    (bicubic)."""
    import skimage.data
    from PIL import Image

    out = []
    for name in PHOTOGRAPHS:
        image = getattr(skimage.data, name)()
        h, w = image.shape[:2]
        side = min(h, w)
        top, left = (h - side) // 2, (w - side) // 2
        square = Image.fromarray(image[top:top + side, left:left + side])
        out.append(np.asarray(square.resize((size, size), Image.BICUBIC)))
    return np.stack(out)


def write_cifar_c(folder: Path, clean: np.ndarray, labels: np.ndarray,
                  corruptions=ALL) -> dict[tuple[str, int], np.ndarray]:
    """Write a CIFAR-C folder for NHWC `clean` images: severity s of corruption number k is the clean
    block with a (k, s)-seeded noise of amplitude 12 * s. Returns {(corruption, severity): block}."""
    blocks = {}

    def block(name: str, severity: int) -> np.ndarray:
        k = list(corruptions).index(name)
        noise = np.random.default_rng(100 * k + severity).normal(0, 12 * severity, clean.shape)
        blocks[(name, severity)] = np.clip(clean + noise, 0, 255).astype(np.uint8)
        return blocks[(name, severity)]

    sets.write_cifar_c(folder, labels, block, corruptions)
    return blocks
