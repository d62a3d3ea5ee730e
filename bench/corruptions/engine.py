"""Batched torch implementation of the 19 common corruptions (the "engine" backend), CPU or CUDA.

The same math as the per-image reference backend (`reference.py`, after Hendrycks &
Dietterich, ICLR 2019), driven by the same parameter tables (`corruptions.CIFAR`, `TINYIMAGENET`,
`IMAGENET`), but every operation runs on a whole batch: noise by element-wise ops, linear filters
on small images (up to `_SMALL` pixels, the CIFAR sizes) as small matrix products
(`filter_matrices`), on larger ones the disk and motion kernels by FFTs and the zooms by row
selections and banded products; glass blur by gathers, elastic warps by `grid_sample` and
gathers, fog by a batched plasma fractal, pixelate by integer box sums, JPEG by a batched libjpeg
(`jpeg_codec`), spatter's edge and distance maps by OpenCV's algorithms run on the whole batch.
On a CPU with numba, the random streams, the four noises, pixelate, spatter's water mask and JPEG
run as fused loops instead (`cpu_kernels`: the same arithmetic in one pass, bit for bit); on a CPU
without numba, large JPEG images go through Pillow's libjpeg and spatter's maps through OpenCV.

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
- elastic transform: OpenCV's `warpAffine` (reflect-101 border) is done by `grid_sample` with
  reflection padding at exact coordinates (OpenCV rounds them to 1/32 pixel), scipy's
  `map_coordinates` (reflect) by gathers in the half-sample symmetric extension;
- spatter (water): OpenCV's Canny, 5x5 chamfer distance transform, box blurs and emboss are
  re-implemented for the batch (equal to OpenCV's on the maps tested; see `_canny`,
  `_chamfer_distance`, `_box3`);
- frost pictures grown to fit a large image use torch's bicubic interpolation (OpenCV's INTER_CUBIC
  kernel, float arithmetic); shrunk ones (the tables' scales 0.2 and 0.3) equal `cv2.resize`'s;
- pixelate reproduces Pillow's BOX resampling exactly: integer window sums times its 22-bit
  weights, rounded half up to 8 bits after the horizontal and the vertical pass, like Pillow;
- JPEG equals libjpeg's output (Pillow's, torchvision's);
- above `_SMALL` pixels, the disk, motion and zoom filters sum in float32 in another order than
  the matrix products (FFTs: within 1e-4 of a grey level), which a truncation to 8 bits reads
  differently where the exact value is an integer: a few pixels in 10,000, up to 1 % for the
  smallest disk (equal weights, so many integer means), as the reference's own rounding does.
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from . import cpu_kernels
from . import filter_matrices as fm
from .tables import CorruptionTable
from ..errors import UserError
from .jpeg_codec import fastest_round_trip
from .pictures import frost_pictures
from .random_streams import Streams, box_muller_tables

VERSION = 4  # bump when an output changes: it is part of the fingerprint of cached generated sets
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

_SMALL = 48 * 48
"""Image area up to which the linear filters run as matrix products (the CIFAR sizes); larger
images take FFTs and sparse taps, which round differently (within 1e-4 of a grey level)."""


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


def _line_taps(radius: int, sigma: float, angles: Tensor) -> tuple[list[float], Tensor, Tensor]:
    """ImageMagick's motion blur kernel along `angles[i]` (degrees): the 2*radius+1 normalised
    weights k_t ~ exp(-t^2 / 2 sigma^2) and the (N, T) offsets round(t sin a), round(t cos a)."""
    taps = torch.arange(2 * int(radius) + 1, device=angles.device, dtype=torch.float64)
    weights = torch.exp(-(taps ** 2) / (2.0 * sigma ** 2))
    theta = torch.deg2rad(angles.double())[:, None]
    dy = torch.ceil(taps * torch.sin(theta) - 0.5).long()
    dx = torch.ceil(taps * torch.cos(theta) - 0.5).long()
    return (weights / weights.sum()).tolist(), dy, dx


def _motion_blur(x: Tensor, radius: int, sigma: float, angles: Tensor, span: tuple[float, float]
                 ) -> Tensor:
    """ImageMagick-style motion blur of (N, C, H, W) `x`, image i along `angles[i]` (degrees, in
    `span`): out(y, x) = sum_t k_t x(y + round(t sin a), x + round(t cos a)), border clamped. Small
    images: each tap picks one shifted window per image from a view of all windows of the
    edge-padded batch; large ones: one FFT correlation with each image's line kernel."""
    n, c, h, w = x.shape
    weights, dy, dx = _line_taps(radius, sigma, angles)
    if h * w > _SMALL:
        return _motion_blur_fft(x, weights, dy, dx, _line_reach(radius, span))
    pad = len(weights) - 1
    windows = F.pad(x, (pad,) * 4, mode="replicate").unfold(2, h, 1).unfold(3, w, 1)
    images, out = torch.arange(n, device=x.device), torch.zeros_like(x)
    for t, weight in enumerate(weights):
        out.add_(windows[images, :, dy[:, t] + pad, dx[:, t] + pad], alpha=weight)
    return out


@functools.cache
def _line_reach(radius: int, span: tuple[float, float]) -> tuple[int, int, int, int]:
    """(up, down, left, right): how far the taps of `_line_taps` reach for any angle in `span`
    (degrees; the extremes of sin and cos are at its ends or at multiples of 90 inside)."""
    low, high = span
    angles = [low, high] + [90.0 * k for k in range(-4, 5) if low < 90 * k < high]
    _, dy, dx = _line_taps(radius, 1.0, torch.tensor(angles))
    return -int(dy.min()), int(dy.max()), -int(dx.min()), int(dx.max())


def _motion_blur_fft(x: Tensor, weights: list[float], dy: Tensor, dx: Tensor,
                     reach: tuple[int, int, int, int]) -> Tensor:
    """`_motion_blur` by FFTs: each image's taps scattered into a kernel covering `reach`,
    correlated with the edge-padded image."""
    n, _, h, w = x.shape
    up, down, left, right = reach
    rows, cols = up + down + 1, left + right + 1
    taps = torch.tensor(weights, dtype=torch.float64, device=x.device).expand(n, -1)
    kernel = torch.zeros(n, rows * cols, dtype=torch.float64, device=x.device)
    kernel.scatter_add_(1, (dy + up) * cols + dx + left, taps)
    padded = F.pad(x, (left, right, up, down), mode="replicate")
    return fm.fft_correlation(padded, kernel.view(n, 1, rows, cols), h, w)


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
    the same iteration (one inside the visited block, below, or on the same row to the right)
    reads its new pixel: such chains are followed by pointer jumping, so every position is
    resolved at once. The moves are drawn in visiting order and laid out on the block here."""
    n, dev = len(noise), noise.device
    rows, cols = h - 2 * delta, w - 2 * delta  # the visited block: [delta + 1, h - delta] x ...
    everywhere = torch.arange(h * w, device=dev)
    if rows <= 0 or cols <= 0:
        return everywhere.expand(n, -1)
    moves = noise.integers(0, (iterations, rows * cols, 2), -delta, delta, torch.int32)
    moves = moves.view(n, iterations, rows, cols, 2).flip(2, 3)  # (dx, dy), block order
    dx, dy = moves[..., 0], moves[..., 1]
    r = torch.arange(rows, device=dev, dtype=torch.int32)[:, None] + dy
    c = torch.arange(cols, device=dev, dtype=torch.int32) + dx
    inside = (r >= 0) & (r < rows) & (c >= 0) & (c < cols)
    follows = inside & ((dy > 0) | ((dy == 0) & (dx > 0)))
    offsets = dy * w + dx
    block = (slice(None), slice(delta + 1, h - delta + 1), slice(delta + 1, w - delta + 1))
    sources = everywhere.expand(n, -1)
    for it in range(iterations):
        parent = everywhere.repeat(n, 1)
        parent.view(n, h, w)[block] += offsets[:, it] * follows[:, it]
        for _ in range(max(rows * cols, 1).bit_length()):
            jumped = torch.gather(parent, 1, parent)
            if torch.equal(jumped, parent):
                break
            parent = jumped
        base = everywhere.repeat(n, 1)
        base.view(n, h, w)[block] += offsets[:, it]
        sources = torch.gather(sources, 1, torch.gather(base, 1, parent))
    return sources


_BOX_BITS = 22  # Pillow's PRECISION_BITS for 8-bit images (32 - 8 - 2)


@functools.cache
def _box_matrix(size_in: int, size_out: int) -> Tensor:
    """Pillow's BOX resampling weights (size_out, size_in) in its 8-bit fixed point: each normalised
    weight k becomes the integer (int)(k * 2**22 + 0.5) (Resample.c, `normalize_coeffs_8bpc`)."""
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
    return torch.from_numpy(np.floor(weights * (1 << _BOX_BITS) + 0.5))


@functools.cache
def _box_taps(size_in: int, size_out: int, device: torch.device) -> list[tuple[Tensor, Tensor]]:
    """`_box_matrix` as taps: (input index, int32 weight) per output position, one pair of
    (size_out,) tensors per tap (zero weights pad the rows with fewer taps; the taps of a row
    weigh the same)."""
    matrix = _box_matrix(size_in, size_out)
    assert bool((matrix.amax(1) == torch.where(matrix > 0, matrix, math.inf).amin(1)).all())
    count = int((matrix > 0).sum(1).max())
    first = (matrix > 0).int().argmax(1)
    taps = []
    for k in range(count):
        index = (first + k).clamp_(max=size_in - 1)
        weight = matrix.gather(1, index[:, None])[:, 0] * (first + k < size_in)
        taps.append((index.to(device), weight.int().to(device)))
    return taps


@functools.cache
def _box_windows(size_in: int, size_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`_box_matrix` as windows: int32 (first input, input count, weight) per output position."""
    matrix = _box_matrix(size_in, size_out)
    inside = matrix > 0
    return (inside.int().argmax(1).int().numpy(), inside.sum(1).int().numpy(),
            matrix.amax(1).int().numpy())


def _box_pass(x: Tensor, size_out: int, dim: int) -> Tensor:
    """One Pillow BOX pass of (N, C, H, W) uint8 pixels along `dim` (-1 or -2), as uint8. A box
    weighs the inputs of a window alike (22-bit weight w, Resample.c `normalize_coeffs_8bpc`), so
    an output is (w * window sum + 2**21) >> 22, clipped (rounding half up): the window sums are
    integers (int16), their products int32, exact, so any order of summation gives Pillow's. An
    enlargement (one input of weight 1 per output) is a plain selection."""
    taps = _box_taps(x.shape[dim], size_out, x.device)
    n, c, h, w = x.shape

    def pick(index: Tensor) -> Tensor:  # rows: whole-row copies; columns: a gather
        if dim == -2:
            return x.reshape(n * c, h, w).index_select(1, index).view(n, c, size_out, w)
        return torch.gather(x, -1, index.expand(n, c, h, -1))

    if len(taps) == 1 and bool((taps[0][1] == 1 << _BOX_BITS).all()):
        return pick(taps[0][0])
    sums, dtype = None, torch.int16 if len(taps) * 255 < 2**15 else torch.int32
    for k, (index, weight) in enumerate(taps):
        term = pick(index)
        if k and bool((weight == 0).any()):  # shorter windows: their padding taps add nothing
            term = term * (weight > 0).to(torch.uint8).view(-1, *(1,) * (-1 - dim))
        sums = term.to(dtype) if sums is None else sums.add_(term)
    weight = taps[0][1].view(-1, *(1,) * (-1 - dim))
    out = sums.int().mul_(weight).add_(1 << (_BOX_BITS - 1)).bitwise_right_shift_(_BOX_BITS)
    return out.clamp_(0, 255).to(torch.uint8)


def _box_resize(x: Tensor, h_out: int, w_out: int) -> Tensor:
    """Pillow `resize(..., BOX)` of (N, C, H, W) uint8 pixels: horizontal pass, then vertical."""
    h, w = x.shape[-2:]
    if w_out != w:
        x = _box_pass(x, w_out, -1)
    if h_out != h:
        x = _box_pass(x, h_out, -2)
    return x


@functools.cache
def _frost_pictures(scale: float) -> tuple[Tensor, ...]:
    """The frost pictures (`pictures.py`) as float (3, H, W) pixel tensors, resized by `scale` as
    the reference's `cv2.resize(fx=scale, fy=scale)` (bilinear, OpenCV's fixed point; see
    `opencv_linear_resize_8u`)."""
    pictures = []
    for array in frost_pictures():
        picture = torch.from_numpy(array.copy()).permute(2, 0, 1).double()
        if scale != 1:
            picture = fm.opencv_linear_resize_8u(picture, scale)
        pictures.append(picture.clamp(0, 255).float())
    return tuple(pictures)



# ---------------------------------------------------------------- corruptions
# Each maps (images uint8 (N, 3, H, W), parameters of one severity, noise, table) to pixel values
# (float, clamped and truncated to 8 bits by `corrupt`, as the generators' uint8 cast does) or to
# finished uint8 images.


def _flat(images: Tensor) -> np.ndarray:
    """(N, 3, H, W) CPU `images` as a contiguous (N, 3 * H * W) array (for `cpu_kernels`)."""
    return images.reshape(len(images), -1).contiguous().numpy()


def _fused_normal_noise(images: Tensor, noise: Streams, gain: float, multiply: bool) -> Tensor:
    flat = _flat(images)
    out = cpu_kernels.normal_noise(flat, *noise.fused_args(0, normal=True), box_muller_tables(),
                                   gain, multiply)
    return torch.from_numpy(out).view(images.shape)


def gaussian_noise(images, sigma, noise, table):
    if noise.fused:
        return _fused_normal_noise(images, noise, sigma * 255, multiply=False)
    return noise.normal(0, images.shape[1:]).mul_(sigma * 255).add_(images)


def speckle_noise(images, sigma, noise, table):
    if noise.fused:
        return _fused_normal_noise(images, noise, sigma, multiply=True)
    return noise.normal(0, images.shape[1:]).mul_(sigma).add_(1).mul_(images)


def shot_noise(images, photons, noise, table):
    if noise.fused:
        out = cpu_kernels.shot_noise(_flat(images), *noise.fused_args(0),
                                     _poisson_levels(float(photons)).numpy())
        return torch.from_numpy(out).view(images.shape)
    levels = noise.fields(0, images[0].numel(), 12)
    index = images.view(len(images), -1).long().mul_(4096).add_(levels)
    return _poisson_levels(float(photons)).to(images.device).take(index).view(images.shape)


def impulse_noise(images, amount, noise, table):
    """A value flips when the top 24 bits of its hash, a uniform, are below `amount` (compared as
    unsigned 32-bit numbers: sign bit flipped, signed compare), to salt or pepper by its low bit."""
    bound = (int(amount * 2**24) + 1) << 8  # top 24 bits <= amount * 2**24
    if noise.fused and bound < 2**32:
        out = cpu_kernels.impulse_noise(_flat(images), *noise.fused_args(0), bound)
        return torch.from_numpy(out).view(images.shape)
    bits = noise.bits(0, images[0].numel()).view(images.shape)
    if bound >= 2**32:
        flipped = torch.ones_like(bits, dtype=torch.bool)
    else:
        flipped = bits.bitwise_xor_(-2**31) < bound - 2**31
    low = bits.view(torch.uint8)[..., ::4]  # the low byte of each (little-endian) hash
    salt = low.bitwise_and(1).mul_(255)  # then salt or pepper, even odds
    return torch.where(flipped, salt, images)


def gaussian_blur(images, sigma, noise, table):
    return fm.gaussian(images.float(), sigma)


def defocus_blur(images, params, noise, table):
    """Small images: the disk's separable terms as matrices; large ones: one FFT correlation."""
    h, w = images.shape[-2:]
    kernel = _disk_kernel(*params)
    radius = len(kernel) // 2
    if h * w <= _SMALL or radius >= min(h, w):
        return fm.kernel_filter(kernel, h, w, "reflect101")(images.float())
    padded = F.pad(images.float(), (radius,) * 4, mode="reflect")  # reflect-101
    return fm.fft_correlation(padded, torch.tensor(kernel, device=images.device), h, w)


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
    return torch.round(_motion_blur(images.float(), radius, sigma, angles, (-45, 45)))


@functools.cache
def _zoom_blur_filter(h: int, w: int, zooms: tuple[float, ...]) -> fm.SeparableSum:
    """The mean of the image and its clipped zooms, one linear filter."""
    scale = 1 / (len(zooms) + 1)
    return fm.SeparableSum([(torch.eye(h) * scale, torch.eye(w))] + [
        (fm.clipped_zoom(h, z) * scale, fm.clipped_zoom(w, z)) for z in zooms])


def zoom_blur(images, zooms, noise, table):
    h, w = images.shape[-2:]
    if h * w <= _SMALL:
        return _zoom_blur_filter(h, w, tuple(zooms))(images.float())
    return fm.clipped_zoom_sum(images, zooms).mul_(1 / (len(zooms) + 1))


def snow(images, params, noise, table):
    loc, scale, zoom, threshold, radius, sigma, blend = params
    _, _, h, w = images.shape
    flakes = noise.normal(0, (1, h, w)).mul_(scale).add_(loc)
    flakes = fm.separable(flakes, fm.clipped_zoom(h, zoom), fm.clipped_zoom(w, zoom))
    flakes = torch.floor(torch.where(flakes < threshold, 0.0, flakes).clamp_(0, 1) * 255)
    angles = noise.uniform(1, (), -135, -45)
    flakes = torch.round(_motion_blur(flakes, radius, sigma, angles, (-135, -45)))
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


def _sample_symmetric(x: Tensor, rows: Tensor, cols: Tensor) -> Tensor:
    """scipy's `map_coordinates(order=1, mode="reflect")` of every channel of (N, C, H, W) `x` at
    pixel coordinates (N, H', W'): bilinear between the neighbours of each coordinate, neighbours
    outside the image folded back by the half-sample symmetric rule (d c b a | a b c d)."""
    n, c, h, w = x.shape
    top, left = rows.floor(), cols.floor()
    down, right = (rows - top)[:, None], (cols - left)[:, None]
    top, left = top.long(), left.long()
    above, below = _fold_symmetric(top, h).mul_(w), _fold_symmetric(top + 1, h).mul_(w)
    before, after = _fold_symmetric(left, w), _fold_symmetric(left + 1, w)
    flat = x.flatten(2)

    def at(row: Tensor, col: Tensor) -> Tensor:
        index = (row + col).flatten(1)[:, None].expand(-1, c, -1)
        return torch.gather(flat, 2, index).view(n, c, *rows.shape[1:])

    upper = torch.lerp(at(above, before), at(above, after), right)
    lower = torch.lerp(at(below, before), at(below, after), right)
    return torch.lerp(upper, lower, down)


def _fold_symmetric(index: Tensor, n: int) -> Tensor:
    """`fm.fold(index, n, "symmetric")` of int64 positions; for positions in [-2n, 2n) (all but
    extreme displacements) by cheap passes: j = index, or -1 - index below 0 (index ^ its sign),
    then min(j, 2n - 1 - j)."""
    if not (-2 * n <= int(index.min()) and int(index.max()) < 2 * n):
        return fm.fold(index, n, "symmetric")
    mirrored = index ^ (index >> 63)
    return torch.minimum(mirrored, (2 * n - 1) - mirrored)


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
    return _sample_symmetric(x, ys.float() + shifts[:, 1], xs.float() + shifts[:, 0])


def pixelate(images, factor, noise, table):
    h, w = images.shape[-2:]
    small = int(h * factor), int(w * factor)
    if not cpu_kernels.enabled(images.device):
        return _box_resize(_box_resize(images, *small), h, w)
    planes = images.reshape(-1, h, w).contiguous().numpy()
    windows = _box_windows(h, small[0]), _box_windows(w, small[1])
    down = cpu_kernels.box_resize(planes, *windows, small)
    windows = _box_windows(small[0], h), _box_windows(small[1], w)
    up = cpu_kernels.box_resize(down, *windows, (h, w))
    return torch.from_numpy(up).view(images.shape)


def jpeg_compression(images, quality, noise, table):
    """libjpeg's round trip, by the fastest of its equal implementations (`jpeg_codec`)."""
    return fastest_round_trip(images, quality)


def _equalize(x: Tensor) -> Tensor:
    """OpenCV `equalizeHist` of (N, 1, H, W) integer-valued pixels, per image."""
    n = x.shape[0]
    flat = x.flatten(1).long()
    offsets = torch.arange(n, device=x.device)[:, None] * 256
    hist = torch.bincount((flat + offsets).flatten(), minlength=n * 256).view(n, 256).float()
    cdf = hist.cumsum(1)
    first = torch.gather(cdf, 1, (hist > 0).float().argmax(1, keepdim=True))
    total = cdf[:, -1:]
    scale = 255.0 / torch.where(total - first > 0, total - first, torch.ones_like(total))
    lut = torch.round((cdf - first) * scale).clamp(0, 255)
    constant = (total == first).expand_as(lut)  # one grey level: OpenCV keeps it
    lut = torch.where(constant, (hist > 0).float().argmax(1, keepdim=True).float().expand_as(lut), lut)
    return torch.gather(lut, 1, flat).view_as(x)



_EMBOSS = ((-2, -1, 0), (-1, 1, 1), (0, 1, 2))
_WATER = (175, 238, 238)
_MUD = (63, 42, 20)


def _pad101(x: Tensor) -> Tensor:
    """(N, C, H, W) `x` with one more pixel on every side, reflect-101 (OpenCV's default border)."""
    if min(x.shape[-2:]) > 1 and x.is_floating_point():
        return F.pad(x, (1, 1, 1, 1), mode="reflect")
    rows, cols = (fm.fold(torch.arange(-1, n + 1, device=x.device), n, "reflect101") for n in x.shape[-2:])
    return x.index_select(-2, rows).index_select(-1, cols)


def _correlate3(x: Tensor, kernel: tuple[tuple[float, ...], ...]) -> Tensor:
    """3x3 correlation of (N, C, H, W) `x` with `kernel`, reflect-101 border (OpenCV's `filter2D`),
    tap by tap in the dtype of `x`: exact for integer taps and values."""
    h, w = x.shape[-2:]
    padded, out = _pad101(x), torch.zeros_like(x)
    for i, row in enumerate(kernel):
        for j, tap in enumerate(row):
            if tap:
                out.add_(padded[..., i:i + h, j:j + w], alpha=tap)
    return out


def _box_sum3(x: Tensor) -> Tensor:
    """Sums of the 3x3 neighbourhoods of (..., H, W) `x`, reflect-101 border, in the dtype of `x`."""
    padded = _pad101(x)
    rows = padded[..., :, :-2] + padded[..., :, 1:-1] + padded[..., :, 2:]
    return rows[..., :-2, :] + rows[..., 1:-1, :] + rows[..., 2:, :]


def _box3(x: Tensor) -> Tensor:
    """`cv2.blur(x, (3, 3))` of float32 `x`: OpenCV sums in float64, exactly, and rounds the sum
    times 1/9 to float32 (which a truncation to 8 bits then reads)."""
    return _box_sum3(x.double()).mul_(1 / 9).float()


_TG22 = 13573  # OpenCV's tan(22.5 degrees) in fixed point: round(0.41421356 * 2**15)


def _sobel3(x: Tensor) -> tuple[Tensor, Tensor]:
    """OpenCV's 3x3 Sobel derivatives (d/dx, d/dy) of (N, 1, H, W) integer-valued float pixels, edge
    pixels repeated (the BORDER_REPLICATE of Canny), as int32."""
    padded = F.pad(x, (1, 1, 1, 1), mode="replicate")
    across = padded[..., :, 2:] - padded[..., :, :-2]
    down = padded[..., 2:, :] - padded[..., :-2, :]
    gx = across[..., :-2, :] + 2 * across[..., 1:-1, :] + across[..., 2:, :]
    gy = down[..., :, :-2] + 2 * down[..., :, 1:-1] + down[..., :, 2:]
    return gx.int(), gy.int()


def _dilate3(x: Tensor) -> Tensor:
    """3x3 dilation of (..., H, W) boolean `x` (nothing outside the image)."""
    padded = F.pad(x, (1, 1, 1, 1))
    rows = padded[..., :, :-2] | padded[..., :, 1:-1] | padded[..., :, 2:]
    return rows[..., :-2, :] | rows[..., 1:-1, :] | rows[..., 2:, :]


def _hysteresis(strong: Tensor, candidates: Tensor) -> Tensor:
    """The candidates 8-connected to a strong pixel through candidates: 3x3 dilations restricted to
    the candidates, until nothing changes (the result of OpenCV's stack-based edge tracking)."""
    edges = strong
    while True:
        grown = _dilate3(edges).logical_and_(candidates)
        if torch.equal(grown, edges):
            return edges
        edges = grown


def _canny(x: Tensor, low: int, high: int) -> Tensor:
    """`cv2.Canny(x, low, high)` (3x3 aperture, L1 gradient) of (N, 1, H, W) integer-valued float
    pixels, as a boolean edge map. Magnitude |gx| + |gy| (0 outside the image); a pixel above `low`
    survives non-maximum suppression when it beats its two neighbours across the gradient: left and
    right when |gy| < |gx| tan 22.5, above and below when |gy| > |gx| tan 67.5 (strictly the first,
    at least the second), else the diagonal the gradient signs pick (strictly both), in OpenCV's
    fixed-point arithmetic; survivors above `high` are strong, the rest follow by hysteresis."""
    gx, gy = _sobel3(x)
    mag = gx.abs() + gy.abs()
    h, w = mag.shape[-2:]
    padded = F.pad(mag, (1, 1, 1, 1))

    def beats(dy: int, dx: int, strict: bool = True) -> Tensor:
        other = padded[..., 1 + dy:1 + dy + h, 1 + dx:1 + dx + w]
        return mag > other if strict else mag >= other

    ax, ay = gx.abs(), gy.abs() << 15
    tg22x = ax * _TG22
    horizontal = ay < tg22x
    vertical = ay > tg22x.add_(ax << 16)
    falling = (gx ^ gy) >= 0  # the gradient's signs agree: the diagonal from top left
    oblique = ~(horizontal | vertical)
    peak = (horizontal & beats(0, -1) & beats(0, 1, False)) | (vertical & beats(-1, 0) & beats(1, 0, False))
    peak |= oblique & falling & beats(-1, -1) & beats(1, 1)
    peak |= oblique & ~falling & beats(-1, 1) & beats(1, -1)
    candidates = peak.logical_and_(mag > low)
    return _hysteresis(candidates & (mag > high), candidates)


_STEP, _DIAGONAL, _KNIGHT = 1.0, 1.4, 2.1969  # OpenCV's 5x5 chamfer mask for DIST_L2


def _chamfer_rows(p: Tensor, r: int, ahead: int) -> Tensor:
    """The best float32 distance to (padded) row r of `p` through the mask's moves from the two
    rows already swept, `ahead` = -1 (rows above, forward pass) or 1 (rows below, backward pass)."""
    w = p.shape[-1] - 4
    near, far = p[:, r + ahead], p[:, r + 2 * ahead]
    knights = torch.minimum(torch.minimum(far[:, 1:w + 1], far[:, 3:w + 3]),
                            torch.minimum(near[:, :w], near[:, 4:])).add_(_KNIGHT)
    corners = torch.minimum(near[:, 1:w + 1], near[:, 3:w + 3]).add_(_DIAGONAL)
    return torch.minimum(torch.minimum(knights, corners), near[:, 2:w + 2] + _STEP)


def _chamfer_distance(edges: Tensor, limit: int = 20) -> Tensor:
    """`cv2.distanceTransform(255 - edges, DIST_L2, 5)` of (N, 1, H, W) boolean `edges`, truncated
    at `limit` (the generator's THRESH_TRUNC): OpenCV's two passes over the 5x5 chamfer mask, row by
    row for the whole batch, float32 sums as OpenCV's. Within a row the pass along the row (one step
    from the previous pixel) is a running minimum, t[j] = min_k (base[k] + |j - k|), in float64
    rounded once to float32, where OpenCV rounds at every step (the same float32 on every map
    tested)."""
    n, _, h, w = edges.shape
    far = float(limit + 3)  # any value above the limit is truncated to it
    p = torch.full((n, h + 4, w + 4), far, dtype=torch.float32, device=edges.device)
    ramp = torch.arange(w, device=edges.device, dtype=torch.float64) * _STEP
    for r in range(2, h + 2):  # forward: top to bottom, left to right
        base = _chamfer_rows(p, r, -1).masked_fill_(edges[:, 0, r - 2], 0.0).double()
        p[:, r, 2:w + 2] = torch.cummin(base - ramp, 1).values.add_(ramp)
    for r in range(h + 1, 1, -1):  # backward: bottom to top, right to left
        base = torch.minimum(_chamfer_rows(p, r, 1), p[:, r, 2:w + 2]).double()
        p[:, r, 2:w + 2] = torch.cummin((base + ramp).flip(1), 1).values.flip(1).sub_(ramp)
    return p[:, None, 2:h + 2, 2:w + 2].clamp(max=limit)


@functools.cache
def _opencv():
    """The cv2 module, or None where OpenCV is not installed (the `corruptions` extra)."""
    try:
        import cv2
    except ImportError:
        return None
    return cv2


@contextlib.contextmanager
def _one_thread(cv2):
    """OpenCV on one thread: on small images its thread pool costs more than it saves (Canny of a
    32x32 layer: 44 us with the pool, 14 us without)."""
    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        yield
    finally:
        cv2.setNumThreads(threads)


def _water_mask(liquid8: Tensor) -> Tensor:
    """The generator's water mask of (N, 1, H, W) 8-bit liquid layers: Canny edges, their distance
    (truncated at 20), blurred, equalised, embossed and blurred again, times the liquid layer. Their
    sequential passes are many small steps for torch, so on a CPU the chain runs image by image: as
    the fused loop (numba), or as the generator's own OpenCV calls; elsewhere the batched
    re-implementations. All three are equal."""
    if cpu_kernels.enabled(liquid8.device) and min(liquid8.shape[-2:]) >= 2:
        layers = liquid8[:, 0].to(torch.uint8).numpy()
        return liquid8 * torch.from_numpy(cpu_kernels.water_mask(layers))[:, None]
    cv2 = _opencv() if liquid8.device.type == "cpu" else None
    if cv2 is None:
        dist = _equalize(torch.floor(_box3(_chamfer_distance(_canny(liquid8, 50, 150)))))
        embossed = _correlate3(dist, _EMBOSS).round_().clamp_(0, 255)
        dist = _box_sum3(embossed).div_(9).round_()  # cv2.blur of 8-bit pixels: never halfway
        return liquid8 * dist
    emboss = np.array(_EMBOSS, dtype=np.float32)
    masks = []
    with _one_thread(cv2):
        for layer in liquid8[:, 0].to(torch.uint8).numpy():
            edges = cv2.Canny(layer, 50, 150)
            dist = np.minimum(cv2.distanceTransform(255 - edges, cv2.DIST_L2, 5), 20)
            dist = cv2.equalizeHist(cv2.blur(dist, (3, 3)).astype(np.uint8))
            masks.append(cv2.blur(cv2.filter2D(dist, cv2.CV_8U, emboss), (3, 3)))
    return liquid8 * torch.from_numpy(np.stack(masks))[:, None]


def spatter(images, params, noise, table):
    loc, scale, sigma, threshold, intensity, mud = params
    x = images.float()
    _, _, h, w = x.shape
    liquid = fm.gaussian(noise.normal(0, (1, h, w)).mul_(scale).add_(loc), sigma)
    liquid = torch.where(liquid < threshold, 0.0, liquid)
    if not mud:
        mask = _water_mask(torch.remainder(torch.floor(liquid * 255), 256))
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
