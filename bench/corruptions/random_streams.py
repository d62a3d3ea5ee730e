"""Counter-based random streams, one per image: the k-th value of stream s for image i is a hash of
(seed_i, s, k), so a corrupted image depends on its own seed only, never on its batch or device.

The hash is lowbias32 (C. Wellons, "Prospecting for hash functions", 2018) computed on int32
tensors, whose products wrap modulo 2**32 on CPU and CUDA alike: one hash costs about ten
element-wise integer passes, and every pass is in place. On a CPU with numba, `cpu_kernels` computes
the same values in one fused pass.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from . import cpu_kernels

_MASK = 0xFFFFFFFF


def _signed(value: int) -> int:
    """The int32 with the bits of the unsigned 32-bit `value`."""
    value &= _MASK
    return value - 2**32 if value >= 2**31 else value


_GOLDEN, _M1, _M2 = _signed(0x9E3779B9), _signed(0x7FEB352D), _signed(0x846CA68B)


def shr(x: Tensor, bits: int) -> Tensor:
    """Logical right shift of int32 `x` read as unsigned (a new tensor)."""
    return (x >> bits).bitwise_and_((1 << (32 - bits)) - 1)


def mix(x: Tensor) -> Tensor:
    """lowbias32 of every value of contiguous int32 `x`, in place. x ^= x >> 16 (logical) is the
    low 16-bit half of each value xor-ed with its high half, on an int16 view (little-endian, as
    CPUs and CUDA GPUs are): one pass instead of three."""
    halves = x.view(torch.int16).view(*x.shape, 2)
    low, high = halves[..., 0], halves[..., 1]
    low ^= high
    x *= _M1
    x ^= shr(x, 15)
    x *= _M2
    low ^= high
    return x


def _halves(bits: Tensor) -> tuple[Tensor, Tensor]:
    """The high and low 16-bit halves of int32 `bits` as unsigned values in float32; on a CPU read
    through a uint16 view (little-endian) instead of shifted and masked copies."""
    if bits.device.type == "cpu":
        halves = bits.view(torch.uint16).view(*bits.shape, 2)
        return halves[..., 1].float(), halves[..., 0].float()
    return shr(bits, 16).float(), (bits & 0xFFFF).float()


@functools.cache
def box_muller_tables() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`Streams.normal`'s radius of each high half and cosine and sine of each low half, float32,
    by the same torch operations (for the fused CPU loop)."""
    levels = torch.arange(2**16, dtype=torch.float32)
    radius = levels.add(0.5).mul_(1 / 2**16).log_().mul_(-2).sqrt_()
    angle = levels.mul_(2 * math.pi / 2**16)
    return radius.numpy(), angle.cos().numpy(), angle.sin_().numpy()


def _stream_key(stream: int) -> int:
    return stream * 0x9E3779B9 & _MASK


class Streams:
    """Random values for a batch: `seeds[i]` keys image i; a stream number keys a use."""

    def __init__(self, seeds: Sequence[int], device: torch.device | str = "cpu") -> None:
        keys = [int(s) % 2**63 for s in seeds]
        self.seeds = keys
        self.device = torch.device(device)
        self._low = torch.tensor([_signed(k) for k in keys], dtype=torch.int32, device=self.device)
        self._high = torch.tensor([k >> 32 for k in keys], dtype=torch.int32, device=self.device)
        self._fused = cpu_kernels.enabled(self.device)
        if self._fused:
            self._keys = (self._low.numpy().view(np.uint32), self._high.numpy().view(np.uint32))

    def __len__(self) -> int:
        return len(self.seeds)

    @property
    def fused(self) -> bool:
        """Whether `cpu_kernels` draws these streams (a CPU with numba)."""
        return self._fused

    def fused_args(self, stream: int, normal: bool = False) -> tuple[np.ndarray, np.ndarray, int]:
        """(low, high, stream key): what a `cpu_kernels` loop needs to draw stream `stream` as
        `bits` does (as `normal` does, with `normal`)."""
        return (*self._keys, _stream_key(1000 + stream if normal else stream))

    def bits(self, stream: int, count: int) -> Tensor:
        """(N, count) int32 hashes, all 32 bits random."""
        if self._fused:
            bits = cpu_kernels.hash_bits(*self.fused_args(stream), count)
            return torch.from_numpy(bits.view(np.int32))
        key = mix(mix(self._low ^ _signed(_stream_key(stream))) ^ self._high)[:, None]
        counter = torch.arange(count, device=self.device, dtype=torch.int32).mul_(_GOLDEN)
        return mix(counter + key)

    def uniform(self, stream: int, shape: tuple[int, ...], low: float = 0.0, high: float = 1.0) -> Tensor:
        """(N, *shape) float32 uniform in [low, high), 24 random bits each."""
        if self._fused:
            unit = cpu_kernels.uniforms(*self.fused_args(stream), math.prod(shape),
                                        (high - low) / 2**24, low)
            return torch.from_numpy(unit).view(-1, *shape)
        unit = shr(self.bits(stream, math.prod(shape)), 8).float().mul_((high - low) / 2**24)
        return (unit.add_(low) if low else unit).view(-1, *shape)

    def normal(self, stream: int, shape: tuple[int, ...]) -> Tensor:
        """(N, *shape) float32 standard normal: Box-Muller on the two 16-bit halves of a hash gives
        two values (tails stop near 4.7 sigma)."""
        count = math.prod(shape)
        if self._fused:
            values = cpu_kernels.normals(*self.fused_args(stream, normal=True), (count + 1) // 2,
                                         box_muller_tables())
            return torch.from_numpy(values)[:, :count].reshape(-1, *shape)
        bits = self.bits(1000 + stream, (count + 1) // 2)
        high, low = _halves(bits)
        radius = high.add_(0.5).mul_(1 / 2**16).log_().mul_(-2).sqrt_()
        angle = low.mul_(2 * math.pi / 2**16)
        half = bits.shape[1]
        values = torch.empty(len(self), 2 * half, device=self.device)
        torch.mul(radius, angle.cos(), out=values[:, :half])
        torch.mul(radius, angle.sin_(), out=values[:, half:])
        return values[:, :count].reshape(-1, *shape)

    def fields(self, stream: int, count: int, width: int) -> Tensor:
        """(N, count) int64 uniform in [0, 2**width), width <= 16: two values per hash."""
        bits = self.bits(stream, (count + 1) // 2)
        high, low = shr(bits, 32 - width), shr(bits, 16 - width).bitwise_and_((1 << width) - 1)
        return torch.cat([high, low], 1)[:, :count].long()

    def integers(self, stream: int, shape: tuple[int, ...], low: int, high: int,
                 dtype: torch.dtype = torch.int64) -> Tensor:
        """(N, *shape) integers (int64, or `dtype`) uniform in [low, high) (for ranges far below
        2**24): the floor of `uniform(stream, shape, 0, high - low)`. A range of 2**k values takes
        the top k bits of each hash, the same numbers (a 24-bit uniform times 2**(k - 24) is
        exact)."""
        span = high - low
        if span & (span - 1) == 0 and span <= 2**24:
            k = span.bit_length() - 1
            top = shr(self.bits(stream, math.prod(shape)), 32 - k) if k else torch.zeros(
                len(self), math.prod(shape), dtype=torch.int32, device=self.device)
            return top.to(dtype).add_(low).view(-1, *shape)
        return self.uniform(stream, shape, 0, span).floor_().to(dtype).add_(low)
