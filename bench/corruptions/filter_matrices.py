"""Linear image filters as small matrices: a separable filter of an (N, C, H, W) batch is
`rows @ x @ cols.T`, with the border rule folded into the (H, H) and (W, W) matrices.

The same sums as a padded convolution, in another order. On a CPU, two 32x32 matrix products beat a
depthwise convolution several times over, and one code path serves every border rule and radius.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

BORDERS = ("nearest", "symmetric", "reflect101")
"""nearest: edge repeated (scipy "nearest"); symmetric: d c b a | a b c d (scipy "reflect");
reflect101: d c b | a b c d (OpenCV's default border, torch's "reflect" padding)."""


def fold(index: Tensor, n: int, border: str) -> Tensor:
    """Map positions outside [0, n) into it by the `border` rule."""
    if border == "nearest":
        return index.clamp(0, n - 1)
    if border == "symmetric":
        index = index % (2 * n)
        return torch.where(index >= n, 2 * n - 1 - index, index)
    if border == "reflect101":
        period = max(2 * n - 2, 1)
        index = index % period
        return torch.where(index >= n, period - index, index)
    raise ValueError(f"unknown border {border!r}; known: {', '.join(BORDERS)}")


@functools.cache
def correlation(n: int, taps: tuple[float, ...], border: str) -> Tensor:
    """(n, n) float32 M with (M @ v)[i] = sum_t taps[t] * v[fold(i + t - r)], r = len(taps) // 2."""
    radius = len(taps) // 2
    index = fold(torch.arange(n)[:, None] + torch.arange(-radius, radius + 1)[None], n, border)
    weights = torch.tensor(taps, dtype=torch.float64).expand(n, -1)
    return torch.zeros(n, n, dtype=torch.float64).scatter_add_(1, index, weights).float()


def separable(x: Tensor, rows: Tensor, cols: Tensor) -> Tensor:
    """`rows @ x @ cols.T` over the last two dimensions of `x`."""
    return rows.to(x) @ (x @ cols.to(x).T)


@functools.cache
def gaussian_kernel(sigma: float, radius: int) -> tuple[float, ...]:
    """Normalised exp(-t^2 / 2 sigma^2) for t in [-radius, radius]."""
    if radius == 0:
        return (1.0,)
    taps = torch.arange(-radius, radius + 1, dtype=torch.float64)
    weights = torch.exp(-0.5 * taps ** 2 / sigma ** 2)
    return tuple((weights / weights.sum()).tolist())


def gaussian_taps(sigma: float, truncate: float) -> tuple[float, ...]:
    """scipy's Gaussian kernel: radius int(truncate * sigma + 0.5)."""
    return gaussian_kernel(sigma, int(truncate * sigma + 0.5))


def gaussian(x: Tensor, sigma: float, border: str = "nearest", truncate: float = 4.0) -> Tensor:
    """scipy's `gaussian_filter` (scikit-image's `gaussian`) of every (H, W) plane of `x`."""
    taps = gaussian_taps(sigma, truncate)
    if len(taps) == 1:
        return x
    h, w = x.shape[-2:]
    return separable(x, correlation(h, taps, border), correlation(w, taps, border))


class SeparableSum:
    """x -> sum of rows @ x @ cols.T over (rows, cols) terms, for images of one size. Many terms on
    a small image run as one (H*W, H*W) matrix product (row-major flattening), built once."""

    def __init__(self, terms: list[tuple[Tensor, Tensor]]) -> None:
        self.terms = terms
        h, w = len(terms[0][0]), len(terms[0][1])
        self.dense = None
        if len(terms) > 2 and h * w <= 64 * 64:
            self.dense = sum(torch.kron(r.double(), c.double()) for r, c in terms).float()

    def __call__(self, x: Tensor) -> Tensor:
        if self.dense is not None:
            h, w = x.shape[-2:]
            return (x.reshape(-1, h * w) @ self.dense.to(x).T).view(x.shape)
        (rows, cols), *rest = self.terms
        out = separable(x, rows, cols)
        for rows, cols in rest:
            out += separable(x, rows, cols)
        return out


def fft_length(n: int) -> int:
    """The smallest 2**a * 3**b * 5**c >= n: a length the FFT takes quickly."""
    best = 1 << max(n - 1, 0).bit_length()
    five = 1
    while five < best:
        three = five
        while three < best:
            two = three
            while two < n:
                two *= 2
            best, three = min(best, two), three * 3
        five *= 5
    return best


def fft_correlation(padded: Tensor, kernel: Tensor, h: int, w: int) -> Tensor:
    """out[..., y, x] = sum_{a, b} kernel[..., a, b] * padded[..., y + a, x + b] for y < h, x < w:
    the correlation of (..., h + kh - 1, w + kw - 1) planes with (..., kh, kw) kernels (a shared
    kernel or one per plane, broadcast), by real FFTs of lengths past the padded sides (no wrap
    reaches the kept outputs), in the precision of `padded` (float32: within ~1e-4 of the sum)."""
    size = (fft_length(padded.shape[-2]), fft_length(padded.shape[-1]))
    spectrum = torch.fft.rfft2(padded, s=size)
    spectrum *= torch.fft.rfft2(kernel.to(padded), s=size).conj()
    return torch.fft.irfft2(spectrum, s=size)[..., :h, :w]


@functools.cache
def kernel_filter(kernel: tuple[tuple[float, ...], ...], h: int, w: int, border: str) -> SeparableSum:
    """Correlation of (H, W) planes with a 2-D `kernel` (odd sides) as separable terms: its singular
    value decomposition after trimming zero borders, terms below 1e-7 of the largest dropped (exact
    for the kernels used here: a small disk has rank 1 or 2)."""
    k = np.asarray(kernel, dtype=np.float64)
    centre_r, centre_c = k.shape[0] // 2, k.shape[1] // 2
    half_r = int(abs(np.flatnonzero(k.any(1)) - centre_r).max())
    half_c = int(abs(np.flatnonzero(k.any(0)) - centre_c).max())
    k = k[centre_r - half_r:centre_r + half_r + 1, centre_c - half_c:centre_c + half_c + 1]
    u, s, vt = np.linalg.svd(k)
    return SeparableSum([(correlation(h, tuple(u[:, i] * s[i]), border),
                          correlation(w, tuple(vt[i]), border))
                         for i in np.flatnonzero(s > 1e-7 * s[0])])


def linear_zoom(n: int, factor: float) -> np.ndarray:
    """(round(n * factor), n) matrix of `scipy.ndimage.zoom(order=1)` along one axis: corner pixels
    aligned, 0 past the last input pixel (its default constant mode)."""
    out = int(round(n * factor))
    coord = np.arange(out) * ((n - 1) / (out - 1)) if out > 1 else np.zeros(1)
    low = np.minimum(np.floor(coord).astype(int), n - 1)
    high = np.minimum(low + 1, n - 1)
    frac = np.where(coord <= n - 1, coord - low, 0.0)
    inside = (coord <= n - 1).astype(float)
    matrix = np.zeros((out, n))
    np.add.at(matrix, (np.arange(out), low), (1 - frac) * inside)
    np.add.at(matrix, (np.arange(out), high), frac * inside)
    return matrix


@functools.cache
def clipped_zoom(n: int, factor: float) -> Tensor:
    """(n, n) float32 matrix of the generators' `clipped_zoom` along one axis: zoom the central
    ceil(n / factor) pixels by `factor` (scipy, order 1), keep the central n."""
    crop = math.ceil(n / factor)
    top = (n - crop) // 2
    zoomed = linear_zoom(crop, factor)
    trim = (zoomed.shape[0] - n) // 2
    matrix = np.zeros((n, n))
    matrix[:, top:top + crop] = zoomed[trim:trim + n]
    return torch.from_numpy(matrix).float()


@functools.cache
def clipped_zoom_taps(n: int, factor: float, device: torch.device) -> tuple[Tensor, Tensor]:
    """`clipped_zoom(n, factor)` as two taps per output: (index, weight), (2, n) each (an output
    reads pixels low and low + 1; at the last pixel both weights fall on one)."""
    matrix = clipped_zoom(n, factor)
    low = (matrix != 0).int().argmax(1)
    high = (low + 1).clamp(max=n - 1)
    weights = torch.stack([matrix.gather(1, low[:, None])[:, 0],
                           torch.where(high > low, matrix.gather(1, high[:, None])[:, 0], 0.0)])
    return torch.stack([low, high]).to(device), weights.to(device)


@functools.cache
def clipped_zoom_blocks(n: int, factor: float, device: torch.device, size: int = 32) -> list[tuple]:
    """`clipped_zoom(n, factor)` cut into blocks of `size` outputs, each reading a short run of
    inputs: (first output, last + 1, first input, last + 1, (inputs, outputs) block of M.T)."""
    matrix = clipped_zoom(n, factor)
    blocks = []
    for start in range(0, n, size):
        rows = matrix[start:start + size]
        used = torch.nonzero(rows.any(0)).flatten()
        first, last = (int(used[0]), int(used[-1]) + 1) if len(used) else (0, 1)
        blocks.append((start, start + len(rows), first, last,
                       rows[:, first:last].T.contiguous().to(device)))
    return blocks


def clipped_zoom_sum(x: Tensor, factors: Sequence[float]) -> Tensor:
    """x + sum over `factors` of `clipped_zoom` x `clipped_zoom`.T of every (H, W) plane of `x`
    (uint8 or float), in float32, for large planes: the vertical zoom by two row selections (of
    `x` as it is: bytes copy fastest), the horizontal one by products with the blocks of its
    banded matrix, accumulated in place (float32 sums in another order than the dense products
    of `SeparableSum`)."""
    *lead, h, w = x.shape
    planes = x.reshape(-1, h, w)
    out = planes.float().view(-1, w)
    for factor in factors:
        (low, high), (w_low, w_high) = clipped_zoom_taps(h, factor, x.device)
        zoomed = planes.index_select(1, low).float().mul_(w_low[:, None])
        zoomed = zoomed.addcmul_(planes.index_select(1, high).float(), w_high[:, None]).view(-1, w)
        for start, stop, first, last, block in clipped_zoom_blocks(w, factor, x.device):
            out[:, start:stop].addmm_(zoomed[:, first:last], block)
    return out.view(*lead, h, w)


@functools.cache
def opencv_linear_resize(n: int, scale: float) -> Tensor:
    """(round(n * scale), n) float64 matrix of OpenCV's `resize(fx=scale, interpolation=INTER_LINEAR)`
    of 8-bit images along one axis: output i samples input (i + 0.5) / scale - 0.5 (clamped to the
    first and last pixel), weights rounded to OpenCV's 11-bit fixed point."""
    out = round(n * scale)
    matrix = np.zeros((out, n))
    for i in range(out):
        position = np.float32((i + 0.5) * (1 / scale) - 0.5)
        low = math.floor(position)
        frac = float(position - low)
        if low < 0:
            low, frac = 0, 0.0
        if low >= n - 1:
            low, frac = n - 1, 0.0
        matrix[i, low] += round((1 - frac) * 2048) / 2048
        matrix[i, min(low + 1, n - 1)] += round(frac * 2048) / 2048
    return torch.from_numpy(matrix)


@functools.cache
def _opencv_linear_rows(n: int, scale: float) -> tuple[Tensor, Tensor]:
    """(index, weights), (round(n * scale), 2) each: the two input rows of each output row of
    OpenCV's vertical linear pass and their 11-bit integer weights. Unlike along a row, the
    fraction is kept at the borders, where both rows are clipped to the image."""
    out = round(n * scale)
    index, weights = np.zeros((out, 2), dtype=np.int64), np.zeros((out, 2))
    for i in range(out):
        position = np.float32((i + 0.5) * (1 / scale) - 0.5)
        low = math.floor(position)
        frac = float(position - low)
        index[i] = (min(max(low, 0), n - 1), min(max(low + 1, 0), n - 1))
        weights[i] = (round((1 - frac) * 2048), round(frac * 2048))
    return torch.from_numpy(index), torch.from_numpy(weights)


def opencv_linear_resize_8u(x: Tensor, scale: float) -> Tensor:
    """OpenCV's `resize(fx=scale, fy=scale, interpolation=INTER_LINEAR)` of (C, H, W) float64 8-bit
    pixel values, bit for bit (imgproc/src/resize.cpp; not scale 0.5, which OpenCV resizes by area):
    the horizontal pass sums the 11-bit weights of `opencv_linear_resize` exactly; the vertical pass
    does what its vector code (`VResizeLinearVec_32s8u`) does, ((s0 >> 4) * b0 >> 16) +
    ((s1 >> 4) * b1 >> 16), rounded off by (+ 2) >> 2, where one product of the float weights
    misses by a level on ~11 % of the pixels at scale 0.3."""
    w = x.shape[-1]
    sums = (x @ (opencv_linear_resize(w, scale) * 2048).T).mul_(1 / 16).floor_()  # integers
    index, weights = _opencv_linear_rows(x.shape[-2], scale)
    terms = (sums[..., index, :] * weights[:, :, None]).mul_(1 / 65536).floor_()
    return terms.sum(-2).add_(2).mul_(1 / 4).floor_().clamp_(0, 255)
