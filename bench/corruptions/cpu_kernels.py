"""Fused CPU loops for the engine's element-wise hot spots, compiled by numba.

On a CPU, torch runs every element-wise operation as its own pass over memory: one hash of a
random stream is ten passes, one Box-Muller normal about twenty, and at CIFAR sizes the engine is
bound by that traffic. These loops do the same 32-bit integer and float32 arithmetic in one pass
per image, bit for bit what the torch code computes (the tests compare the two). They are used on
a CPU where numba is installed (it comes with the `corruptions` extra); the torch code serves every
other case. Compiled on first use and cached on disk (numba's `cache=True`).
"""

from __future__ import annotations

import functools
import os

import numpy as np
import torch


@functools.cache
def _numba():
    """The numba module, or None where it is not installed or RBL_FUSED=0 turns these loops off."""
    if os.environ.get("RBL_FUSED", "1") == "0":
        return None
    try:
        import numba
    except ImportError:
        return None
    return numba


def enabled(device) -> bool:
    """Whether the fused loops serve tensors on `device`."""
    return getattr(device, "type", device) == "cpu" and _numba() is not None


def _kernels():
    """The numba loops (`loops`), set to run on as many threads as torch uses (`--threads`)."""
    from . import loops

    numba = _numba()
    numba.set_num_threads(max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS)))
    return loops


def hash_bits(low: np.ndarray, high: np.ndarray, stream_key: int, count: int) -> np.ndarray:
    """(N, count) uint32: `Streams.bits` for the images keyed by uint32 `low` and `high` halves."""
    out = np.empty((len(low), count), np.uint32)
    _kernels().hash_bits(low, high, np.uint32(stream_key), out)
    return out


def uniforms(low: np.ndarray, high: np.ndarray, stream_key: int, count: int, scale: float,
             offset: float) -> np.ndarray:
    """(N, count) float32: float32(bits >> 8) * scale + offset, in float32 (`Streams.uniform`)."""
    out = np.empty((len(low), count), np.float32)
    _kernels().uniforms(low, high, np.uint32(stream_key), np.float32(scale), np.float32(offset),
                        out)
    return out


def normals(low: np.ndarray, high: np.ndarray, stream_key: int, pairs: int,
            tables: tuple[np.ndarray, np.ndarray, np.ndarray]) -> np.ndarray:
    """(N, 2 * pairs) float32: Box-Muller of each hash, radius[high 16 bits] times cosine (first
    half of a row) and sine (second half) of [low 16 bits], from float32 tables of 65,536 values."""
    out = np.empty((len(low), 2 * pairs), np.float32)
    _kernels().normals(low, high, np.uint32(stream_key), *tables, out)
    return out


def normal_noise(images: np.ndarray, low: np.ndarray, high: np.ndarray, stream_key: int,
                 tables: tuple[np.ndarray, np.ndarray, np.ndarray], gain: float,
                 multiply: bool) -> np.ndarray:
    """(N, count) uint8 `images` plus Gaussian noise, finished: z * gain + x (gaussian noise) or
    (z * gain + 1) * x (speckle noise) with z `normals`' values, clamped and truncated to 8 bits."""
    out = np.empty_like(images)
    _kernels().normal_noise(images, low, high, np.uint32(stream_key), *tables, np.float32(gain),
                            multiply, out)
    return out


def shot_noise(images: np.ndarray, low: np.ndarray, high: np.ndarray, stream_key: int,
               levels: np.ndarray) -> np.ndarray:
    """(N, count) uint8: levels[x * 4096 + f] with f the 12-bit `Streams.fields` of each pixel."""
    out = np.empty_like(images)
    _kernels().shot_noise(images, low, high, np.uint32(stream_key), levels, out)
    return out


def impulse_noise(images: np.ndarray, low: np.ndarray, high: np.ndarray, stream_key: int,
                  bound: int) -> np.ndarray:
    """(N, count) uint8: a pixel whose hash is below `bound` (unsigned) turns to 255 times the
    hash's low bit, the others are kept."""
    out = np.empty_like(images)
    _kernels().impulse_noise(images, low, high, np.uint32(stream_key), np.uint32(bound), out)
    return out


def box_resize(planes: np.ndarray, row_taps: tuple, col_taps: tuple, shape: tuple[int, int]
               ) -> np.ndarray:
    """(M, H, W) uint8 `planes` resized to `shape` by two box passes, along the rows, then the
    columns: an output is min(255, (window sum * weight + 2**21) >> 22) over its window `first[o]`
    to `first[o] + count[o]`; taps are `engine._box_windows`' (first, count, weight) arrays."""
    out = np.empty((len(planes), *shape), np.uint8)
    _kernels().box_resize(planes, row_taps, col_taps, out)
    return out


def water_mask(layers: np.ndarray) -> np.ndarray:
    """(N, H, W) uint8: spatter's OpenCV chain on each (N, H, W) uint8 liquid layer (H, W >= 2):
    Canny (50, 150), distance to the edges truncated at 20, 3x3 blur, histogram equalisation,
    emboss, 3x3 blur (the generator's calls, image by image)."""
    out = np.empty_like(layers)
    _kernels().water_mask(layers, out)
    return out


def jpeg_round_trip(images: np.ndarray, luma: np.ndarray, chroma: np.ndarray) -> np.ndarray:
    """(N, 3, H, W) uint8 `images` through `jpeg_codec.round_trip` with the int64 (64,)
    quantisation tables `luma` and `chroma` (row-major 8x8)."""
    out = np.empty_like(images)
    _kernels().jpeg_round_trip(images, luma, chroma, out)
    return out
