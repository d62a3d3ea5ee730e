"""Per-image reference implementation of the 19 common corruptions (numpy, scipy, scikit-image, OpenCV).

Follows the math of Hendrycks & Dietterich, "Benchmarking Neural Network Robustness to Common
Corruptions and Perturbations" (ICLR 2019), generators `make_cifar_c.py` / `make_imagenet_c.py` of
hendrycks/robustness, driven by a parameter table (`corruptions.CIFAR`, `corruptions.IMAGENET`).
uint8 HWC in, uint8 HWC out (float results are clipped and truncated, as the generators'
`np.uint8(...)` does). Every random draw comes from a `numpy.random.Generator` seeded per image.

Deviations from the generators:
- motion blur (and the snow streaks) re-implement ImageMagick's `MotionBlurImage` (a one-sided
  Gaussian line kernel of 2*radius+1 taps, edge pixels repeated) instead of calling ImageMagick;
- image sizes are read from the image (the generators hard-code 32 or 224; the fog map is the next
  power of two of the larger side; frost pictures too small for the image are enlarged to fit).

Quirks of the generators kept on purpose: glass blur's tuple "swap" of numpy views copies the
displaced pixel onto the current one and leaves the displaced pixel unchanged; spatter's uint8 cast
of liquid values above 1.0 wraps modulo 256 (what the cast does on x86, made explicit here); the
zoom factors come from float `np.arange` (e.g. 7 factors for CIFAR zoom blur severity 1).

Needs the `corruptions` extra (`pip install robustbench-lite[corruptions]`): OpenCV, scikit-image,
and the frost pictures shipped by `imagecorruptions`.
"""

from __future__ import annotations

import functools
import io
import math
from collections.abc import Callable, Sequence

import numpy as np
from PIL import Image

from .corruptions import CorruptionTable
from .errors import UserError

VERSION = 1  # bump when an output changes: it is part of the fingerprint of cached generated sets

_INSTALL = "pip install 'robustbench-lite[corruptions]'"


@functools.cache
def _libraries():
    """(cv2, skimage, scipy.ndimage), or a UserError naming the extra to install."""
    try:
        import cv2
        import scipy.ndimage
        import skimage.color
        import skimage.filters
        import skimage.util
    except ImportError as err:
        raise UserError(f"corruption generation needs {err.name}: {_INSTALL}") from None
    return cv2, skimage, scipy.ndimage


def corrupt(image: np.ndarray, corruption: str, severity: int, table: CorruptionTable,
            seed: int) -> np.ndarray:
    """`image` (H, W, 3) uint8 corrupted at `severity` (1..5) with the parameters of `table`."""
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) uint8 image, got {image.shape} {image.dtype}")
    _libraries()
    rng = np.random.default_rng(seed)
    out = CORRUPTIONS[corruption](image, table.params(corruption, severity), rng, table)
    return np.clip(out, 0, 255).astype(np.uint8)


def corrupt_batch(images: np.ndarray, corruption: str, severity: int, table: CorruptionTable,
                  seeds: Sequence[int]) -> np.ndarray:
    """Every image of (N, H, W, 3) uint8 `images` corrupted, image i with `seeds[i]`."""
    if len(seeds) != len(images):
        raise ValueError(f"{len(images)} images but {len(seeds)} seeds")
    out = np.empty_like(images)
    for i, (image, seed) in enumerate(zip(images, seeds)):
        out[i] = corrupt(image, corruption, severity, table, seed)
    return out


# ---------------------------------------------------------------- helpers


def _unit(image: np.ndarray, dtype=np.float64) -> np.ndarray:
    return image.astype(dtype) / 255.0


def _gaussian(x: np.ndarray, sigma: float, **kwargs) -> np.ndarray:
    _, skimage, _ = _libraries()
    axis = {"channel_axis": -1} if x.ndim == 3 else {}
    return skimage.filters.gaussian(x, sigma=sigma, **axis, **kwargs)


def _disk_kernel(radius: float, alias_blur: float) -> np.ndarray:
    """A normalised disk of `radius`, antialiased by a small Gaussian (3x3, or 5x5 above radius 8)."""
    cv2, _, _ = _libraries()
    extent, ksize = (8, 3) if radius <= 8 else (int(radius), 5)
    grid = np.arange(-extent, extent + 1)
    xx, yy = np.meshgrid(grid, grid)
    disk = (xx ** 2 + yy ** 2 <= radius ** 2).astype(np.float32)
    disk /= disk.sum()
    return cv2.GaussianBlur(disk, ksize=(ksize, ksize), sigmaX=alias_blur)


def _motion_blur(layer: np.ndarray, radius: int, sigma: float, angle: float) -> np.ndarray:
    """ImageMagick's motion blur of an (H, W, C) float layer: output(y, x) = sum_i k_i *
    layer(y + round(i sin a), x + round(i cos a)) over 2*radius+1 taps, k_i ~ exp(-i^2 / 2 sigma^2),
    coordinates clamped to the border."""
    taps = np.arange(2 * int(radius) + 1)
    weights = np.exp(-(taps ** 2) / (2.0 * sigma ** 2))
    weights /= weights.sum()
    theta = math.radians(angle)
    dy = np.ceil(taps * math.sin(theta) - 0.5).astype(int)
    dx = np.ceil(taps * math.cos(theta) - 0.5).astype(int)
    h, w = layer.shape[:2]
    rows = np.clip(np.arange(h)[None, :] + dy[:, None], 0, h - 1)  # (taps, H)
    cols = np.clip(np.arange(w)[None, :] + dx[:, None], 0, w - 1)  # (taps, W)
    shifted = layer[rows[:, :, None], cols[:, None, :]]  # (taps, H, W, C)
    return np.tensordot(weights, shifted, axes=1)


def _clipped_zoom(x: np.ndarray, factor: float) -> np.ndarray:
    """Zoom the centre of (H, W, C) `x` by `factor` and crop back to (H, W): the generators'
    `scipy.ndimage.zoom(order=1)` of the central crop, as separable linear interpolation."""
    h, w = x.shape[:2]
    ch, cw = math.ceil(h / factor), math.ceil(w / factor)
    top, left = (h - ch) // 2, (w - cw) // 2
    zoomed = _linear_zoom(x[top:top + ch, left:left + cw], factor)
    trim_top, trim_left = (zoomed.shape[0] - h) // 2, (zoomed.shape[1] - w) // 2
    return zoomed[trim_top:trim_top + h, trim_left:trim_left + w]


def _linear_zoom(x: np.ndarray, factor: float) -> np.ndarray:
    """`scipy.ndimage.zoom(x, (factor, factor, 1), order=1)` (its default mode="constant"): output
    size round(n * factor), corner pixels aligned (output i samples input i * (n - 1) / (out - 1))."""
    for axis in (0, 1):
        n = x.shape[axis]
        out = int(round(n * factor))
        if out == n:
            continue
        coord = np.arange(out) * ((n - 1) / (out - 1)) if out > 1 else np.zeros(1)
        low = np.minimum(np.floor(coord).astype(int), n - 1)
        high = np.minimum(low + 1, n - 1)
        frac = coord - low
        inside = coord <= n - 1  # scipy's mode="constant" gives 0 past the last pixel (float rounding)
        shape = [1] * x.ndim
        shape[axis] = out
        w_high = (frac * inside).astype(x.dtype).reshape(shape)
        w_low = ((1 - frac) * inside).astype(x.dtype).reshape(shape)
        x = np.take(x, low, axis=axis) * w_low + np.take(x, high, axis=axis) * w_high
    return x


def _plasma_fractal(size: int, wibble_decay: float, rng: np.random.Generator) -> np.ndarray:
    """A (size, size) diamond-square height map in [0, 1]; `size` is a power of two."""
    grid = np.zeros((size, size))
    step, wibble = size, 100.0

    def jitter(total: np.ndarray) -> np.ndarray:
        return total / 4 + wibble * rng.uniform(-wibble, wibble, total.shape)

    while step >= 2:
        half = step // 2
        corners = grid[0::step, 0::step]
        square = corners + np.roll(corners, -1, axis=0)
        square = square + np.roll(square, -1, axis=1)
        grid[half::step, half::step] = jitter(square)
        centres, corners = grid[half::step, half::step], grid[0::step, 0::step]
        grid[0::step, half::step] = jitter(centres + np.roll(centres, 1, axis=0)
                                           + corners + np.roll(corners, -1, axis=1))
        grid[half::step, 0::step] = jitter(centres + np.roll(centres, 1, axis=1)
                                           + corners + np.roll(corners, -1, axis=0))
        step, wibble = half, wibble / wibble_decay
    grid -= grid.min()
    return grid / grid.max()


def _gray(x: np.ndarray) -> np.ndarray:
    """ITU-R 601 luma of an RGB image (OpenCV's RGB2GRAY weights)."""
    return x @ np.array([0.299, 0.587, 0.114], dtype=x.dtype)


@functools.cache
def _frost_pictures(scale: float) -> tuple[np.ndarray, ...]:
    """The six frost pictures shipped by `imagecorruptions`, RGB, resized by `scale`."""
    from importlib import resources

    cv2, _, _ = _libraries()
    try:
        folder = resources.files("imagecorruptions") / "frost"
    except ModuleNotFoundError:
        raise UserError(f"the frost corruption needs the frost pictures of imagecorruptions: "
                        f"{_INSTALL}") from None
    pictures = []
    for name in ("frost1.png", "frost2.png", "frost3.png", "frost4.jpg", "frost5.jpg", "frost6.jpg"):
        with resources.as_file(folder / name) as path:
            picture = cv2.imread(str(path))
        if picture is None:
            raise UserError(f"cannot read frost picture {name} of imagecorruptions; reinstall it: "
                            f"{_INSTALL}")
        if scale != 1:
            picture = cv2.resize(picture, (0, 0), fx=scale, fy=scale)
        pictures.append(np.ascontiguousarray(picture[..., ::-1]))
    return tuple(pictures)


# ---------------------------------------------------------------- corruptions
# Each maps (image uint8 HWC, parameters of one severity, rng, table) to an image in [0, 255].


def gaussian_noise(image, sigma, rng, table):
    x = _unit(image)
    return np.clip(x + rng.normal(scale=sigma, size=x.shape), 0, 1) * 255


def shot_noise(image, photons, rng, table):
    x = _unit(image)
    return np.clip(rng.poisson(x * photons) / photons, 0, 1) * 255


def impulse_noise(image, amount, rng, table):
    _, skimage, _ = _libraries()
    x = skimage.util.random_noise(_unit(image), mode="s&p", amount=amount, rng=rng)
    return np.clip(x, 0, 1) * 255


def speckle_noise(image, sigma, rng, table):
    x = _unit(image)
    return np.clip(x + x * rng.normal(scale=sigma, size=x.shape), 0, 1) * 255


def gaussian_blur(image, sigma, rng, table):
    return np.clip(_gaussian(_unit(image), sigma), 0, 1) * 255


def glass_blur(image, params, rng, table):
    sigma, delta, iterations = params
    blurred = (_gaussian(_unit(image), sigma) * 255).astype(np.uint8)
    h, w = image.shape[:2]
    rows, cols = range(h - delta, delta, -1), range(w - delta, delta, -1)
    moves = rng.integers(-delta, delta, size=(iterations, len(rows), len(cols), 2)).tolist()
    source = list(range(h * w))  # source[p]: the pixel of `blurred` now shown at position p
    for it_moves in moves:
        for r, row_moves in zip(rows, it_moves):
            for c, (dx, dy) in zip(cols, row_moves):
                source[r * w + c] = source[(r + dy) * w + c + dx]
    shuffled = blurred.reshape(h * w, 3)[source].reshape(h, w, 3)
    return np.clip(_gaussian(_unit(shuffled), sigma), 0, 1) * 255


def defocus_blur(image, params, rng, table):
    cv2, _, _ = _libraries()
    radius, alias_blur = params
    blurred = cv2.filter2D(_unit(image), -1, _disk_kernel(radius, alias_blur))
    return np.clip(blurred, 0, 1) * 255


def motion_blur(image, params, rng, table):
    radius, sigma = params
    blurred = _motion_blur(image.astype(np.float64), radius, sigma, rng.uniform(-45, 45))
    return np.rint(blurred)  # ImageMagick writes 8-bit pixels


def zoom_blur(image, zooms, rng, table):
    x = _unit(image, np.float32)
    total = np.zeros_like(x)
    for factor in zooms:
        total += _clipped_zoom(x, factor)
    return np.clip((x + total) / (len(zooms) + 1), 0, 1) * 255


def snow(image, params, rng, table):
    loc, scale, zoom, threshold, radius, sigma, blend = params
    x = _unit(image, np.float32)
    flakes = rng.normal(loc=loc, scale=scale, size=x.shape[:2])[..., None]
    flakes = _clipped_zoom(flakes, zoom)
    flakes[flakes < threshold] = 0
    flakes = (np.clip(flakes, 0, 1) * 255).astype(np.uint8).astype(np.float64)
    flakes = np.rint(_motion_blur(flakes, radius, sigma, rng.uniform(-135, -45))) / 255
    x = blend * x + (1 - blend) * np.maximum(x, _gray(x)[..., None] * 1.5 + 0.5)
    return np.clip(x + flakes + np.rot90(flakes, k=2), 0, 1) * 255


def frost(image, params, rng, table):
    cv2, _, _ = _libraries()
    image_weight, frost_weight = params
    picture = _frost_pictures(table.frost_scale)[rng.integers(table.frost_pictures)]
    h, w = image.shape[:2]
    if picture.shape[0] <= h or picture.shape[1] <= w:
        grow = 1.1 * max(h / picture.shape[0], w / picture.shape[1])
        picture = cv2.resize(picture, (0, 0), fx=grow, fy=grow, interpolation=cv2.INTER_CUBIC)
    top = rng.integers(0, picture.shape[0] - h)
    left = rng.integers(0, picture.shape[1] - w)
    return image_weight * image.astype(np.float64) + frost_weight * picture[top:top + h, left:left + w]


def fog(image, params, rng, table):
    strength, wibble_decay = params
    h, w = image.shape[:2]
    size = 1 << (max(h, w) - 1).bit_length()
    x = _unit(image)
    peak = x.max()
    x = x + strength * _plasma_fractal(size, wibble_decay, rng)[:h, :w, None]
    return np.clip(x * peak / (peak + strength), 0, 1) * 255


def brightness(image, delta, rng, table):
    _, skimage, _ = _libraries()
    hsv = skimage.color.rgb2hsv(_unit(image))
    hsv[..., 2] = np.clip(hsv[..., 2] + delta, 0, 1)
    return np.clip(skimage.color.hsv2rgb(hsv), 0, 1) * 255


def contrast(image, factor, rng, table):
    x = _unit(image)
    means = x.mean(axis=(0, 1), keepdims=True)
    return np.clip((x - means) * factor + means, 0, 1) * 255


def elastic_transform(image, params, rng, table):
    cv2, _, ndimage = _libraries()
    alpha, sigma, affine = params
    x = _unit(image, np.float32)
    h, w = x.shape[:2]
    centre = np.float32((h, w)) // 2
    side = min(h, w) // 3
    anchors = np.float32([centre + side, [centre[0] + side, centre[1] - side], centre - side])
    moved = anchors + rng.uniform(-affine, affine, size=anchors.shape).astype(np.float32)
    x = cv2.warpAffine(x, cv2.getAffineTransform(anchors, moved), (w, h),
                       borderMode=cv2.BORDER_REFLECT_101)
    dx, dy = ((_gaussian(rng.uniform(-1, 1, size=(h, w)), sigma, mode="reflect", truncate=3)
               * alpha).astype(np.float32) for _ in range(2))
    rows, cols = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    coords = np.stack([rows + dy, cols + dx])
    warped = np.stack([ndimage.map_coordinates(x[..., c], coords, order=1, mode="reflect")
                       for c in range(3)], axis=-1)
    return np.clip(warped, 0, 1) * 255


def pixelate(image, factor, rng, table):
    h, w = image.shape[:2]
    small = Image.fromarray(image).resize((int(w * factor), int(h * factor)), Image.BOX)
    return np.asarray(small.resize((w, h), Image.BOX))


def jpeg_compression(image, quality, rng, table):
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, "JPEG", quality=quality)
    return np.asarray(Image.open(buffer).convert("RGB"))


_EMBOSS = np.array([[-2, -1, 0], [-1, 1, 1], [0, 1, 2]], dtype=np.float32)
_WATER = np.array([175, 238, 238]) / 255.0  # pale turquoise
_MUD = np.array([63, 42, 20]) / 255.0


def spatter(image, params, rng, table):
    cv2, _, _ = _libraries()
    loc, scale, sigma, threshold, intensity, mud = params
    x = _unit(image, np.float32)
    liquid = _gaussian(rng.normal(loc=loc, scale=scale, size=x.shape[:2]), sigma)
    liquid[liquid < threshold] = 0
    if not mud:
        liquid8 = ((liquid * 255).astype(np.int64) % 256).astype(np.uint8)  # x86 uint8 cast: wraps
        dist = cv2.distanceTransform(255 - cv2.Canny(liquid8, 50, 150), cv2.DIST_L2, 5)
        _, dist = cv2.threshold(dist, 20, 20, cv2.THRESH_TRUNC)
        dist = cv2.equalizeHist(cv2.blur(dist, (3, 3)).astype(np.uint8))
        dist = cv2.blur(cv2.filter2D(dist, cv2.CV_8U, _EMBOSS), (3, 3)).astype(np.float32)
        mask = liquid8 * dist
        peak = mask.max()
        mask = mask / peak * intensity if peak > 0 else mask
        return np.clip(x + mask[..., None] * _WATER, 0, 1) * 255
    mask = _gaussian((liquid > threshold).astype(np.float32), intensity)
    mask[mask < 0.8] = 0
    mask = mask[..., None]
    return np.clip(x * (1 - mask) + _MUD * mask, 0, 1) * 255


def saturate(image, params, rng, table):
    _, skimage, _ = _libraries()
    scale, shift = params
    hsv = skimage.color.rgb2hsv(_unit(image))
    hsv[..., 1] = np.clip(hsv[..., 1] * scale + shift, 0, 1)
    return np.clip(skimage.color.hsv2rgb(hsv), 0, 1) * 255


CORRUPTIONS: dict[str, Callable] = {fn.__name__: fn for fn in (
    gaussian_noise, shot_noise, impulse_noise, defocus_blur, glass_blur, motion_blur, zoom_blur,
    snow, frost, fog, brightness, contrast, elastic_transform, pixelate, jpeg_compression,
    speckle_noise, gaussian_blur, spatter, saturate)}
