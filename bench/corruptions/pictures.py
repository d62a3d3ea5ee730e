"""The frost pictures of ImageNet-C (shipped in `frost/`, see `frost/NOTICE`), decoded with Pillow.

The same bytes as OpenCV's and torchvision's decoders give for these files (checked by the tests),
so both backends overlay exactly the pictures of the reference generator.
"""

from __future__ import annotations

import functools
from importlib import resources

import numpy as np

from ..errors import UserError

FROST = ("frost1.png", "frost2.png", "frost3.png", "frost4.jpg", "frost5.jpg", "frost6.jpg")


@functools.cache
def frost_pictures() -> tuple[np.ndarray, ...]:
    """The six pictures as (H, W, 3) uint8 RGB arrays, in the reference generator's order."""
    from PIL import Image

    folder = resources.files("robustbench_lite.bench.corruptions") / "frost"
    pictures = []
    for name in FROST:
        try:
            with resources.as_file(folder / name) as path, Image.open(path) as image:
                pictures.append(np.asarray(image.convert("RGB")))
        except OSError as err:
            raise UserError(f"cannot read the frost picture {name} shipped with robustbench-lite "
                            f"({err}); reinstall the package") from None
    return tuple(pictures)
