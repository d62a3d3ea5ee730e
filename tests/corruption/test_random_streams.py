"""Counter-based per-image random streams: the int32 hash equals lowbias32 computed in Python's
unbounded integers, and the derived values have the stated distributions."""

from __future__ import annotations

import math

import pytest
import torch

from robustbench_lite.bench.corruptions import cpu_kernels
from robustbench_lite.bench.corruptions.random_streams import Streams, mix

SEEDS = [0, 5, 2**31 - 1, 2**31, 2**32 + 5, 2**62 + 7, 2**63 - 1]


def _lowbias32(x: int) -> int:
    x ^= x >> 16
    x = (x * 0x7FEB352D) & 0xFFFFFFFF
    x ^= x >> 15
    x = (x * 0x846CA68B) & 0xFFFFFFFF
    return x ^ (x >> 16)


def _bits(seed: int, stream: int, k: int) -> int:
    key = _lowbias32(_lowbias32((seed & 0xFFFFFFFF) ^ (stream * 0x9E3779B9 & 0xFFFFFFFF)) ^ (seed >> 32))
    return _lowbias32((key + k * 0x9E3779B9) & 0xFFFFFFFF)


def test_hash_wraps_like_unsigned_32_bit_arithmetic():
    values = [0, 1, 2**31 - 1, 2**31, 2**32 - 1, 123456789]
    signed = torch.tensor([v - 2**32 if v >= 2**31 else v for v in values], dtype=torch.int32)
    assert [v & 0xFFFFFFFF for v in mix(signed).tolist()] == [_lowbias32(v) for v in values]
    streams = Streams(SEEDS)
    got = streams.bits(7, 13).long() & 0xFFFFFFFF  # 13: a length off the vector width
    assert got.tolist() == [[_bits(s, 7, k) for k in range(13)] for s in SEEDS]


def test_values_depend_on_the_seed_only():
    batch = Streams(SEEDS).normal(0, (3, 5, 5))
    alone = Streams(SEEDS[3:4]).normal(0, (3, 5, 5))
    assert torch.equal(batch[3], alone[0])


def test_distributions():
    streams = Streams([5, 2**62 + 7])
    u = streams.uniform(0, (50_000,))
    z = streams.normal(0, (50_001,))
    k = streams.integers(2, (50_000,), -3, 4)
    f = streams.fields(3, 50_001, 12)
    assert 0 <= u.min() and u.max() < 1 and abs(u.mean() - 0.5) < 0.01
    assert abs(z.mean()) < 0.02 and abs(z.std() - 1) < 0.02 and z.shape == (2, 50_001)
    assert k.min() == -3 and k.max() == 3 and abs(k.float().mean()) < 0.05
    assert f.min() == 0 and f.max() == 4095 and abs(f.float().mean() - 2047.5) < 30
    assert not torch.equal(u[0], u[1]) and not torch.equal(u[0], streams.uniform(1, (50_000,))[0])
    assert torch.corrcoef(torch.stack([u[0], u[1]]))[0, 1].abs() < 0.02
    halves = z[0, :25_000], z[0, 25_000:50_000]  # the cosine and sine values of the same hashes
    assert torch.corrcoef(torch.stack(halves))[0, 1].abs() < 0.02


def test_integers_are_the_floor_of_the_uniform_values():
    """Ranges of 2**k values take the top k bits of each hash: the integers of floor(uniform)."""
    streams = Streams(SEEDS)
    for low, high in ((-1, 1), (-2, 2), (-4, 4), (0, 1), (3, 4), (0, 2**20), (-3, 3), (0, 5)):
        got = streams.integers(4, (3, 1001), low, high)
        expected = streams.uniform(4, (3, 1001), 0, high - low).floor_().long().add_(low)
        assert got.dtype == torch.int64 and torch.equal(got, expected), (low, high)
        assert torch.equal(streams.integers(4, (3, 1001), low, high, torch.int32), expected.int())


def test_the_fused_cpu_loops_draw_the_same_values(monkeypatch):
    """On a CPU with numba the streams come from `cpu_kernels`: the same bits, uniforms and
    normals as the torch code, bit for bit, for odd and even lengths."""
    pytest.importorskip("numba")
    fused = Streams(SEEDS)
    with monkeypatch.context() as patch:
        patch.setattr(cpu_kernels, "enabled", lambda device: False)
        plain = Streams(SEEDS)
    assert fused.fused and not plain.fused
    for stream in (0, 3, 1001):
        for shape in ((1,), (13,), (3, 7, 5), (2, 32, 32)):
            count = math.prod(shape)
            assert torch.equal(fused.bits(stream, count), plain.bits(stream, count))
            for low, high in ((0, 1), (-1, 1), (-135, -45), (0, 5)):
                assert torch.equal(fused.uniform(stream, shape, low, high),
                                   plain.uniform(stream, shape, low, high)), (shape, low)
            assert torch.equal(fused.normal(stream, shape), plain.normal(stream, shape)), shape
            assert torch.equal(fused.integers(stream, shape, -3, 4), plain.integers(stream, shape, -3, 4))
