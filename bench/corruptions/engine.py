"""Batched torch implementation of the 19 common corruptions (the "engine" backend), CPU or CUDA.

The same math as the per-image reference backend (`reference.py`, after Hendrycks &
Dietterich, ICLR 2019), driven by the same parameter tables (`corruptions.CIFAR`, `IMAGENET`), but
every operation runs on a whole batch: noise by element-wise ops, linear filters (Gaussian, disk,
zoom) as small matrix products (`filter_matrices`), motion and glass blur by gathers, elastic
warps by `grid_sample`, fog by a batched plasma fractal, JPEG by a batched libjpeg (`jpeg_codec`).

Seeding rule. Random numbers come from counter-based per-image streams (`random_streams`): an
image's corruption depends only on (image, corruption, severity, table, its seed), never on the
batch it is in nor on the device (up to float rounding).

Deviations from the reference backend (random streams differ, so only the distributions match):
- shot noise draws Poisson counts by inversion at 4,096 quantile levels of each of the 256 pixel
  values' Poisson laws (the sampled CDF is within 1/8,192 of Poisson's at every count);
- normal values come from Box-Muller on 16-bit uniforms, so their tails stop near 4.7 sigma;
- glass blur: the reference's sequential local pixel moves are resolved for all positions at
  once (a position whose move reads an already-moved pixel follows it by pointer jumping), the
  exact algorithm with the engine's random moves;
- elastic transform: OpenCV's `warpAffine` (reflect-101 border) and scipy's `map_coordinates`
  (reflect) are both done by `grid_sample` with reflection padding;
- spatter (water): Canny edges are approximated by a thresholded Sobel gradient and the L2
  distance transform by a chessboard distance (iterated 3x3 minima, truncated at 20 px as in
  the generator); water spatter at severities 2-3 changes pixels about half as much as the
  reference (mean absolute change), for a model error within half a point on digits;
- frost pictures are resized by bilinear interpolation (OpenCV's linear resize without
  antialiasing);
- pixelate reproduces Pillow's BOX resampling as two weight matrices (rounding to 8 bits between the
  horizontal and vertical passes, like Pillow);
- JPEG equals libjpeg's output (Pillow's, torchvision's) for sides that are multiples of 16.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from . import filter_matrices as fm
from .tables import CorruptionTable
from ..errors import UserError
from .jpeg_codec import round_trip
from .pictures import frost_pictures
from .random_streams import Streams, shr

VERSION = 2  # bump when an output changes: it is part of the fingerprint of cached generated sets
PARALLEL = False  # batched already: one process beats a pool of processes


def corrupt(images: Tensor, corruption: str, severity: int, table: CorruptionTable,
            seeds: Sequence[int]) -> Tensor:
    """(N, 3, H, W) uint8 `images` (any device) corrupted at `severity`, image i with `seeds[i]`."""
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"expected (N, 3, H, W) uint8 images, got {tuple(images.shape)} {images.dtype}")
    if len(seeds) != len(images):
        raise ValueError(f"{len(images)} images but {len(seeds)} seeds")
    if corruption not in CORRUPTIONS:
        raise UserError(f"unknown corruption {corruption!r}; known: {', '.join(CORRUPTIONS)}")
    if len(images) == 0:
        return images.clone()
    noise = Streams(seeds, images.device)
    out = CORRUPTIONS[corruption](images, table.params(corruption, severity), noise, table)
    return out if out.dtype == torch.uint8 else out.clamp_(0, 255).to(torch.uint8)


def corrupt_batch(images: np.ndarray, corruption: str, severity: int, table: CorruptionTable,
                  seeds: Sequence[int]) -> np.ndarray:
    """The backend interface of `corruptions.load_backend`: (N, H, W, 3) uint8 numpy in and out."""
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2)
    return corrupt(x.contiguous(), corruption, severity, table, seeds).permute(0, 2, 3, 1).numpy()


# ---------------------------------------------------------------- helpers


def _gray(x: Tensor) -> Tensor:
    weights = torch.tensor([0.299, 0.587, 0.114], device=x.device, dtype=x.dtype)
    return (x * weights.view(1, 3, 1, 1)).sum(1, keepdim=True)


@functools.cache
def _disk_kernel(radius: float, alias_blur: float) -> tuple[tuple[float, ...], ...]:
    """The reference's disk kernel: a normalised disk antialiased by a small Gaussian (OpenCV
    `GaussianBlur`, reflect-101 border)."""
    extent, ksize = (8, 3) if radius <= 8 else (int(radius), 5)
    grid = torch.arange(-extent, extent + 1, dtype=torch.float64)
    disk = ((grid[None] ** 2 + grid[:, None] ** 2) <= radius ** 2).double()
    disk = disk / disk.sum()
    g = torch.tensor(fm.gaussian_kernel(alias_blur, ksize // 2), dtype=torch.float64)
    padded = F.pad(disk[None, None], (ksize // 2,) * 4, mode="reflect")
    out = F.conv2d(padded, (g[:, None] * g[None])[None, None])
    return tuple(map(tuple, out[0, 0].tolist()))


def _motion_blur(x: Tensor, radius: int, sigma: float, angles: Tensor) -> Tensor:
    """ImageMagick-style motion blur of (N, C, H, W) `x`, image i along `angles[i]` (degrees):
    out(y, x) = sum_t k_t x(y + round(t sin a), x + round(t cos a)), border clamped. Each tap picks
    one shifted window per image from a view of all windows of the edge-padded batch."""
    n, c, h, w = x.shape
    taps = torch.arange(2 * int(radius) + 1, device=x.device, dtype=torch.float64)
    weights = torch.exp(-(taps ** 2) / (2.0 * sigma ** 2))
    theta = torch.deg2rad(angles.double())[:, None]
    pad = len(taps) - 1
    dy = torch.ceil(taps * torch.sin(theta) - 0.5).long() + pad  # (N, T), into the padded image
    dx = torch.ceil(taps * torch.cos(theta) - 0.5).long() + pad
    windows = F.pad(x, (pad,) * 4, mode="replicate").unfold(2, h, 1).unfold(3, w, 1)
    images, out = torch.arange(n, device=x.device), torch.zeros_like(x)
    for t, weight in enumerate((weights / weights.sum()).tolist()):
        out.add_(windows[images, :, dy[:, t], dx[:, t]], alpha=weight)
    return out


@functools.cache
def _poisson_levels(photons: float, levels: int = 4096) -> Tensor:
    """(256 * levels,) uint8: row v holds the pixels of Poisson(v / 255 * photons) / photons at
    the quantile levels (j + 0.5) / levels, i.e. its inverse CDF (clipped and truncated to 8 bits
    as the reference does)."""
    rates = torch.arange(256, dtype=torch.float64)[:, None] / 255 * photons
    top = int(photons + 12 * math.sqrt(photons) + 12)
    counts = torch.arange(top + 1, dtype=torch.float64)[None]
    cdf = torch.exp(torch.xlogy(counts, rates) - rates - torch.lgamma(counts + 1)).cumsum(1)
    quantiles = ((torch.arange(levels, dtype=torch.float64) + 0.5) / levels).expand(256, -1)
    drawn = torch.searchsorted(cdf, quantiles.contiguous()).clamp_(max=top)
    return torch.floor((drawn / photons).clamp(0, 1) * 255).to(torch.uint8).flatten()


def _glass_sources(noise: Streams, h: int, w: int, delta: int, iterations: int) -> Tensor:
    """(N, H*W) int64: which pixel each position shows after the generator's local moves. Each
    iteration visits positions (r, c), r from h - delta down to delta + 1 and c likewise, and copies
    the pixel now at (r + dy, c + dx) onto (r, c). A visit reading a position visited earlier in
    the same iteration reads its new pixel: such chains are followed by pointer jumping, so every
    position is resolved at once."""
    n, dev = len(noise), noise.device
    rows = torch.arange(h - delta, delta, -1, device=dev)
    cols = torch.arange(w - delta, delta, -1, device=dev)
    visited = (rows[:, None] * w + cols[None]).flatten()  # in visiting order
    rank = torch.full((h * w,), len(visited), device=dev)
    rank[visited] = torch.arange(len(visited), device=dev)
    moves = noise.integers(0, (iterations, len(visited), 2), -delta, delta)  # (dx, dy)
    everywhere = torch.arange(h * w, device=dev).expand(n, -1)
    sources = everywhere
    for it in range(iterations):
        targets = visited + moves[:, it, :, 1] * w + moves[:, it, :, 0]  # (N, P)
        follows = rank[targets] < rank[visited]
        parent = everywhere.clone()
        parent[:, visited] = torch.where(follows, targets, visited)
        for _ in range(max(len(visited), 1).bit_length()):
            jumped = torch.gather(parent, 1, parent)
            if torch.equal(jumped, parent):
                break
            parent = jumped
        base = everywhere.clone()
        base[:, visited] = targets
        sources = torch.gather(sources, 1, torch.gather(base, 1, parent))
    return sources


@functools.cache
def _box_matrix(size_in: int, size_out: int) -> Tensor:
    """Pillow's BOX resampling weights (size_out, size_in)."""
    scale = size_in / size_out
    filterscale = max(scale, 1.0)
    support = 0.5 * filterscale
    weights = np.zeros((size_out, size_in))
    for i in range(size_out):
        centre = (i + 0.5) * scale
        lo = max(int(centre - support + 0.5), 0)
        hi = min(int(centre + support + 0.5), size_in)
        for j in range(lo, hi):
            u = (j - centre + 0.5) / filterscale
            weights[i, j] = 1.0 if -0.5 < u <= 0.5 else 0.0
        weights[i] /= weights[i].sum()
    return torch.from_numpy(weights).float()


def _box_resize(x: Tensor, h_out: int, w_out: int) -> Tensor:
    """Pillow `resize(..., BOX)` of (N, C, H, W) pixel values, horizontal pass then vertical, each
    rounded to 8 bits (averages of pixels: no clamping needed)."""
    h, w = x.shape[-2:]
    if w_out != w:
        x = (x @ _box_matrix(w, w_out).to(x).T).round_()
    if h_out != h:
        x = (_box_matrix(h, h_out).to(x) @ x).round_()
    return x


@functools.cache
def _frost_pictures(scale: float) -> tuple[Tensor, ...]:
    """The frost pictures (`pictures.py`) as float (3, H, W) pixel tensors, resized."""
    pictures = []
    for array in frost_pictures():
        picture = torch.from_numpy(array.copy()).permute(2, 0, 1).float()
        if scale != 1:
            size = (round(picture.shape[1] * scale), round(picture.shape[2] * scale))
            picture = F.interpolate(picture[None], size=size, mode="bilinear", align_corners=False)[0]
        pictures.append(picture.round().clamp(0, 255))
    return tuple(pictures)



# ---------------------------------------------------------------- corruptions
# Each maps (images uint8 (N, 3, H, W), parameters of one severity, noise, table) to pixel values
# (float, clamped and truncated to 8 bits by `corrupt`, as the generators' uint8 cast does) or to
# finished uint8 images.


def gaussian_noise(images, sigma, noise, table):
    return noise.normal(0, images.shape[1:]).mul_(sigma * 255).add_(images)


def speckle_noise(images, sigma, noise, table):
    return noise.normal(0, images.shape[1:]).mul_(sigma).add_(1).mul_(images)


def shot_noise(images, photons, noise, table):
    levels = noise.fields(0, images[0].numel(), 12)
    index = images.view(len(images), -1).long().mul_(4096).add_(levels)
    return _poisson_levels(float(photons)).to(images.device).take(index).view(images.shape)


def impulse_noise(images, amount, noise, table):
    bits = noise.bits(0, images[0].numel()).view(images.shape)
    flipped = shr(bits, 8) <= int(amount * 2**24)  # a 24-bit uniform below `amount`
    salt = (bits & 1).to(torch.uint8).mul_(255)  # then salt or pepper, even odds
    return torch.where(flipped, salt, images)


def gaussian_blur(images, sigma, noise, table):
    return fm.gaussian(images.float(), sigma)


def defocus_blur(images, params, noise, table):
    h, w = images.shape[-2:]
    return fm.kernel_filter(_disk_kernel(*params), h, w, "reflect101")(images.float())


def glass_blur(images, params, noise, table):
    sigma, delta, iterations = params
    n, c, h, w = images.shape
    blurred = torch.floor(fm.gaussian(images.float(), sigma)).clamp_(0, 255)
    sources = _glass_sources(noise, h, w, delta, iterations)
    shuffled = torch.gather(blurred.flatten(2), 2, sources[:, None].expand(-1, c, -1))
    return fm.gaussian(shuffled.view_as(blurred), sigma)


def motion_blur(images, params, noise, table):
    radius, sigma = params
    angles = noise.uniform(0, (), -45, 45)
    return torch.round(_motion_blur(images.float(), radius, sigma, angles))


@functools.cache
def _zoom_blur_filter(h: int, w: int, zooms: tuple[float, ...]) -> fm.SeparableSum:
    """The mean of the image and its clipped zooms, one linear filter."""
    scale = 1 / (len(zooms) + 1)
    return fm.SeparableSum([(torch.eye(h) * scale, torch.eye(w))] + [
        (fm.clipped_zoom(h, z) * scale, fm.clipped_zoom(w, z)) for z in zooms])


def zoom_blur(images, zooms, noise, table):
    h, w = images.shape[-2:]
    return _zoom_blur_filter(h, w, tuple(zooms))(images.float())


def snow(images, params, noise, table):
    loc, scale, zoom, threshold, radius, sigma, blend = params
    _, _, h, w = images.shape
    flakes = noise.normal(0, (1, h, w)).mul_(scale).add_(loc)
    flakes = fm.separable(flakes, fm.clipped_zoom(h, zoom), fm.clipped_zoom(w, zoom))
    flakes = torch.floor(torch.where(flakes < threshold, 0.0, flakes).clamp_(0, 1) * 255)
    angles = noise.uniform(1, (), -135, -45)
    flakes = torch.round(_motion_blur(flakes, radius, sigma, angles))
    x = images.float()
    x = blend * x + (1 - blend) * torch.maximum(x, _gray(x) * 1.5 + 127.5)
    return x.add_(flakes).add_(flakes.flip(-1, -2))


def frost(images, params, noise, table):
    image_weight, frost_weight = params
    n, _, h, w = images.shape
    pictures = _frost_pictures(table.frost_scale)[:table.frost_pictures]
    choice = noise.integers(0, (), 0, len(pictures))
    fractions = noise.uniform(1, (2,))
    overlay = torch.empty(images.shape, device=images.device)
    for k, picture in enumerate(pictures):
        picked = (choice == k).nonzero().flatten()
        if len(picked) == 0:
            continue
        picture = picture.to(images.device)
        ph, pw = picture.shape[1:]
        if ph <= h or pw <= w:
            grow = 1.1 * max(h / ph, w / pw)
            picture = F.interpolate(picture[None], size=(int(ph * grow), int(pw * grow)),
                                    mode="bicubic", align_corners=False)[0].clamp(0, 255)
            ph, pw = picture.shape[1:]
        top = (fractions[picked, 0] * (ph - h)).long()
        left = (fractions[picked, 1] * (pw - w)).long()
        rows = (top[:, None] + torch.arange(h, device=images.device))[:, :, None]
        cols = (left[:, None] + torch.arange(w, device=images.device))[:, None, :]
        overlay[picked] = picture[:, rows, cols].permute(1, 0, 2, 3)
    return image_weight * images.float() + frost_weight * overlay


def _plasma_fractal(noise: Streams, size: int, wibble_decay: float) -> Tensor:
    """(N, size, size) diamond-square height maps in [0, 1], one per image: the generators' jitter
    wibble * U(-wibble, wibble), its size**2 - 1 values drawn at once and used level by level."""
    n = len(noise)
    grid = torch.zeros(n, size, size, device=noise.device)
    draws = noise.uniform(1, (size * size,), -1, 1)
    step, wibble, used = size, 100.0, 0

    def jitter(total: Tensor) -> Tensor:
        nonlocal used
        count = total[0].numel()
        values = draws[:, used:used + count].view_as(total)
        used += count
        return (total / 4).add_(values, alpha=wibble * wibble)

    while step >= 2:
        half = step // 2
        corners = grid[:, 0::step, 0::step]
        square = corners + corners.roll(-1, 1)
        square = square + square.roll(-1, 2)
        grid[:, half::step, half::step] = jitter(square)
        centres, corners = grid[:, half::step, half::step], grid[:, 0::step, 0::step]
        grid[:, 0::step, half::step] = jitter(centres + centres.roll(1, 1) + corners + corners.roll(-1, 2))
        grid[:, half::step, 0::step] = jitter(centres + centres.roll(1, 2) + corners + corners.roll(-1, 1))
        step, wibble = half, wibble / wibble_decay
    grid -= grid.amin((1, 2), keepdim=True)
    return grid / grid.amax((1, 2), keepdim=True)


def fog(images, params, noise, table):
    strength, wibble_decay = params
    h, w = images.shape[-2:]
    size = 1 << (max(h, w) - 1).bit_length()
    x = images.float()
    peak = x.amax((1, 2, 3), keepdim=True)
    x += (strength * 255) * _plasma_fractal(noise, size, wibble_decay)[:, None, :h, :w]
    return x.mul_(peak / (peak + strength * 255))


def brightness(images, delta, noise, table):
    """HSV value + delta: hue and saturation kept, so every channel scales with the value."""
    x = images.float()
    value = x.amax(1, keepdim=True)
    lifted = (value + delta * 255).clamp_(0, 255)
    return torch.where(value > 0, x * (lifted / value.clamp(min=1)), lifted)


def saturate(images, params, noise, table):
    """HSV saturation * scale + shift, hue and value kept: channel c is v (1 - s g_c), where
    g_c = (v - x_c) / (v - min) depends on the hue only (g = (0, 1, 1) for greys, hue 0)."""
    scale, shift = params
    x = images.float()
    value = x.amax(1, keepdim=True)
    spread = value - x.amin(1, keepdim=True)
    saturation = (spread / value.clamp(min=1)).mul_(scale).add_(shift).clamp_(0, 1)
    grey = torch.tensor([0.0, 1.0, 1.0], device=x.device).view(1, 3, 1, 1)
    weights = torch.where(spread > 0, (value - x) / spread.clamp(min=1), grey)
    return value - value * saturation * weights


def contrast(images, factor, noise, table):
    x = images.float()
    means = x.mean((2, 3), keepdim=True)
    return x.mul_(factor).add_(means * (1 - factor))


def _sample(x: Tensor, rows: Tensor, cols: Tensor) -> Tensor:
    """Bilinear samples of (N, C, H, W) `x` at pixel coordinates (N, H', W'), reflected borders."""
    h, w = x.shape[-2:]
    grid = torch.stack([cols / max(w - 1, 1) * 2 - 1, rows / max(h - 1, 1) * 2 - 1], -1)
    return F.grid_sample(x, grid.to(x.dtype), mode="bilinear", padding_mode="reflection", align_corners=True)


def elastic_transform(images, params, noise, table):
    alpha, sigma, affine = params
    x = images.float()
    n, _, h, w = x.shape
    dev = x.device
    centre = torch.tensor([h // 2, w // 2], dtype=torch.float64, device=dev)
    side = min(h, w) // 3
    anchors = torch.stack([centre + side, centre + torch.tensor([side, -side], device=dev), centre - side])
    moved = anchors + noise.uniform(0, (3, 2), -affine, affine).double()
    # OpenCV reads the points as (x, y); M maps anchors to moved points, warpAffine samples M^-1
    ones = torch.ones(n, 3, 1, dtype=torch.float64, device=dev)
    source = torch.cat([anchors.expand(n, -1, -1), ones], 2)  # (N, 3, 3)
    matrix = torch.linalg.solve(source, moved).transpose(1, 2)  # (N, 2, 3): moved = M @ [p, 1]
    full = torch.cat([matrix, torch.tensor([0, 0, 1.0], dtype=torch.float64, device=dev).expand(n, 1, 3)], 1)
    inverse = torch.linalg.inv(full)[:, :2]
    ys, xs = torch.meshgrid(torch.arange(h, device=dev, dtype=torch.float64),
                            torch.arange(w, device=dev, dtype=torch.float64), indexing="ij")
    points = torch.stack([xs, ys, torch.ones_like(xs)], 0).view(3, -1)
    src = (inverse @ points).view(n, 2, h, w)
    x = _sample(x, src[:, 1].float(), src[:, 0].float())
    shifts = noise.uniform(1, (2, h, w), -1, 1)
    shifts = fm.gaussian(shifts, sigma, "symmetric", truncate=3) * alpha
    return _sample(x, ys.float() + shifts[:, 1], xs.float() + shifts[:, 0])


def pixelate(images, factor, noise, table):
    h, w = images.shape[-2:]
    small = _box_resize(images.float(), int(h * factor), int(w * factor))
    return _box_resize(small, h, w).to(torch.uint8)


def jpeg_compression(images, quality, noise, table):
    return round_trip(images, quality)


def _equalize(x: Tensor) -> Tensor:
    """OpenCV `equalizeHist` of (N, 1, H, W) integer-valued pixels, per image."""
    n = x.shape[0]
    flat = x.flatten(1).long()
    ones = torch.ones_like(flat, dtype=torch.float)
    hist = torch.zeros(n, 256, device=x.device).scatter_add_(1, flat, ones)
    cdf = hist.cumsum(1)
    first = torch.gather(cdf, 1, (hist > 0).float().argmax(1, keepdim=True))
    total = cdf[:, -1:]
    scale = 255.0 / torch.where(total - first > 0, total - first, torch.ones_like(total))
    lut = torch.round((cdf - first) * scale).clamp(0, 255)
    constant = (total == first).expand_as(lut)  # one grey level: OpenCV keeps it
    lut = torch.where(constant, (hist > 0).float().argmax(1, keepdim=True).float().expand_as(lut), lut)
    return torch.gather(lut, 1, flat).view_as(x)



_EMBOSS = ((-2, -1, 0), (-1, 1, 1), (0, 1, 2))
_SOBEL = ((-1, 0, 1), (-2, 0, 2), (-1, 0, 1))
_BOX3 = ((1 / 9,) * 3,) * 3
_WATER = (175, 238, 238)
_MUD = (63, 42, 20)


def _chessboard_distance(edges: Tensor, limit: int = 20) -> Tensor:
    """Chessboard distance of every pixel of (..., H, W) boolean `edges` to the nearest edge
    pixel, at most `limit`: 3x3 minima + 1, repeated until nothing changes (uint8 throughout)."""
    distance = torch.where(edges, 0, limit).to(torch.uint8)
    for _ in range(limit):
        padded = F.pad(distance, (1, 1, 1, 1), value=limit)
        rows = torch.minimum(torch.minimum(padded[..., :-2, :], padded[..., 1:-1, :]), padded[..., 2:, :])
        nearer = torch.minimum(torch.minimum(rows[..., :-2], rows[..., 1:-1]), rows[..., 2:]).add_(1)
        nearer = torch.minimum(nearer, distance)
        if torch.equal(nearer, distance):
            break
        distance = nearer
    return distance.float()


def spatter(images, params, noise, table):
    loc, scale, sigma, threshold, intensity, mud = params
    x = images.float()
    _, _, h, w = x.shape

    def filtered(y, kernel):
        return fm.kernel_filter(kernel, h, w, "reflect101")(y)

    liquid = fm.gaussian(noise.normal(0, (1, h, w)).mul_(scale).add_(loc), sigma)
    liquid = torch.where(liquid < threshold, 0.0, liquid)
    if not mud:
        liquid8 = torch.remainder(torch.floor(liquid * 255), 256)
        gx, gy = filtered(liquid8, _SOBEL), filtered(liquid8, tuple(zip(*_SOBEL)))
        dist = _chessboard_distance((gx.abs() + gy.abs()) > 150)
        dist = _equalize(torch.floor(filtered(dist, _BOX3)))
        dist = torch.round(filtered(torch.round(filtered(dist, _EMBOSS)).clamp(0, 255), _BOX3))
        mask = liquid8 * dist
        peak = mask.amax((1, 2, 3), keepdim=True)
        mask = torch.where(peak > 0, mask / torch.where(peak > 0, peak, 1.0) * intensity, mask)
        colour = torch.tensor(_WATER, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
        return torch.addcmul(x, mask, colour)
    mask = fm.gaussian((liquid > threshold).float(), intensity)
    mask = torch.where(mask < 0.8, 0.0, mask)
    colour = torch.tensor(_MUD, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return x * (1 - mask) + colour * mask


CORRUPTIONS = {fn.__name__: fn for fn in (
    gaussian_noise, shot_noise, impulse_noise, defocus_blur, glass_blur, motion_blur, zoom_blur,
    snow, frost, fog, brightness, contrast, elastic_transform, pixelate, jpeg_compression,
    speckle_noise, gaussian_blur, spatter, saturate)}
