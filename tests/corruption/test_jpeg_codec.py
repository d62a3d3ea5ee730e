"""The batched JPEG round trip equals libjpeg's (torchvision's, the same as Pillow's) bit for bit."""

from __future__ import annotations

import pytest
import torch
from torchvision.io import decode_jpeg, encode_jpeg

from robustbench_lite.bench.corruptions.jpeg_codec import (fused_round_trip, libjpeg_round_trip,
                                                           round_trip)

from corruption_helpers import colour_images


def _libjpeg(images: torch.Tensor, quality: int) -> torch.Tensor:
    return torch.stack(decode_jpeg(encode_jpeg(list(images), quality=quality)))


@pytest.mark.parametrize("quality", [95, 80, 58, 40, 15, 7])
def test_equals_libjpeg(quality):
    natural = torch.from_numpy(colour_images(16, seed=quality)).permute(0, 3, 1, 2).contiguous()
    noise = torch.randint(0, 256, (16, 3, 48, 32), generator=torch.Generator().manual_seed(quality),
                          dtype=torch.uint8)
    for images in (natural, noise):
        assert torch.equal(round_trip(images, quality), _libjpeg(images, quality))


@pytest.mark.parametrize("h, w", [(30, 27), (17, 9), (31, 32), (2, 3), (1, 1)])
def test_partial_blocks_are_padded_as_libjpeg_pads_them(h, w):
    images = torch.from_numpy(colour_images(4, seed=h * w)).permute(0, 3, 1, 2)[..., :h, :w].contiguous()
    assert torch.equal(round_trip(images, 50), _libjpeg(images, 50))


@pytest.mark.parametrize("h, w", [(224, 224), (64, 64), (30, 27)])
def test_pillow_round_trip_equals_the_batched_codec(h, w):
    """The engine's CPU path for large images (Pillow's libjpeg, in threads): the same bytes."""
    images = torch.randint(0, 256, (3, 3, h, w), generator=torch.Generator().manual_seed(h),
                           dtype=torch.uint8)
    images[0] = torch.from_numpy(colour_images(1, max(h, w), seed=w)[0][:h, :w]).permute(2, 0, 1)
    for quality in (85, 25, 7):
        assert torch.equal(libjpeg_round_trip(images, quality), round_trip(images, quality))


@pytest.mark.parametrize("h, w", [(224, 224), (32, 32), (31, 33), (17, 9), (2, 3), (1, 1)])
def test_fused_round_trip_equals_the_batched_codec(h, w):
    """The CPU path with numba (`cpu_kernels`): the same bytes, partial blocks included."""
    pytest.importorskip("numba")
    images = torch.randint(0, 256, (3, 3, h, w), generator=torch.Generator().manual_seed(h * w),
                           dtype=torch.uint8)
    images[0] = torch.from_numpy(colour_images(1, max(h, w), seed=h)[0][:h, :w]).permute(2, 0, 1)
    for quality in (95, 85, 50, 25, 7, 1):
        assert torch.equal(fused_round_trip(images, quality), round_trip(images, quality)), quality
