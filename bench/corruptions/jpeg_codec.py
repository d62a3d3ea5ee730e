"""A batched JPEG round trip in torch: libjpeg's baseline pipeline with the IJG defaults that
Pillow and torchvision use (ITU-T T.81), on whole batches, on any device, bit for bit.

Encoder: RGB to YCbCr in libjpeg's 16-bit fixed point (jccolor.c); 4:2:0 chroma by its biased 2x2
averages (jcsample.c); its integer "islow" forward DCT (jfdctint.c); quantisation by the Annex K
tables scaled as `jpeg_set_quality(quality, force_baseline=TRUE)`, rounding half away from zero.
Decoder: dequantisation and the islow inverse DCT (jidctint.c); "fancy" triangle chroma
upsampling (jdsample.c); YCbCr to RGB with its fixed-point tables (jdcolor.c). Entropy coding is
lossless and skipped. The output equals libjpeg's, bit for bit (tested against torchvision's).

`libjpeg_round_trip` is the same round trip through Pillow's libjpeg itself, image by image, and
`fused_round_trip` the same integer steps as one compiled loop per image (`cpu_kernels`, numba);
`fastest_round_trip` picks among the three by device and image size.
"""

from __future__ import annotations

import functools
import io

import numpy as np
import torch
from torch import Tensor

from . import cpu_kernels
from .filter_matrices import separable

LUMA = (16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55,
        14, 13, 16, 24, 40, 57, 69, 56, 14, 17, 22, 29, 51, 87, 80, 62,
        18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
        49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99)
CHROMA = (17, 18, 24, 47, 99, 99, 99, 99, 18, 21, 26, 66, 99, 99, 99, 99,
          24, 26, 56, 99, 99, 99, 99, 99, 47, 66, 99, 99, 99, 99, 99, 99) + (99,) * 32
"""The quantisation tables of ITU-T T.81 Annex K (row-major 8x8)."""


def quant_table(base: tuple[int, ...], quality: int) -> Tensor:
    """libjpeg's `jpeg_set_quality(quality, TRUE)`: the base table scaled, clamped to [1, 255]."""
    quality = min(max(quality, 1), 100)
    scale = 5000 // quality if quality < 50 else 200 - 2 * quality
    return torch.tensor([min(max((q * scale + 50) // 100, 1), 255) for q in base], dtype=torch.float64)


# ---------------------------------------------------------------- colour and chroma sampling
# Integer arithmetic of libjpeg in float32: every product and partial sum is an integer below 2**24,
# so exact, and the shifts are floors of exact power-of-two scalings.


def _fix(x: float) -> int:
    """libjpeg's FIX: a coefficient in 16-bit fixed point."""
    return int(x * 65536 + 0.5)


_TO_YCC = ((_fix(0.299), _fix(0.587), _fix(0.114)),
           (-_fix(0.16874), -_fix(0.33126), _fix(0.5)),
           (_fix(0.5), -_fix(0.41869), -_fix(0.08131)))
_YCC_OFFSETS = (1 << 15, (128 << 16) + (1 << 15) - 1, (128 << 16) + (1 << 15) - 1)


def _mix_channels(matrix, offsets, x: Tensor) -> Tensor:
    """out[:, o] = (sum_c matrix[o][c] * x[:, c] + offsets[o]) >> 16, on (N, C, H, W)."""
    planes = x.unbind(1)
    outputs = []
    for row, offset in zip(matrix, offsets):
        out = torch.full_like(planes[0], float(offset))
        for weight, plane in zip(row, planes):
            if weight:
                out.add_(plane, alpha=weight)
        outputs.append(out)
    return torch.stack(outputs, 1).mul_(1 / 65536).floor_()


def _rgb_to_ycc(rgb: Tensor) -> Tensor:
    """jccolor.c `rgb_ycc_convert` of (N, 3, H, W) float32 pixels."""
    return _mix_channels(_TO_YCC, _YCC_OFFSETS, rgb)


def _ycc_to_rgb(ycc: Tensor) -> Tensor:
    """jdcolor.c `ycc_rgb_convert` (its fixed-point tables) of (N, 3, H, W) float32, in [0, 255]."""
    matrix = ((0, _fix(1.402)), (-_fix(0.34414), -_fix(0.71414)), (_fix(1.772), 0))
    shifts = _mix_channels(matrix, [(1 << 15) - 128 * sum(row) for row in matrix], ycc[:, 1:])
    return shifts.add_(ycc[:, :1]).clamp_(0, 255)


@functools.cache
def _sampling_matrices(n: int) -> tuple[Tensor, Tensor]:
    """(down (n/2, n), up (2n, n)): jcsample.c's 2:1 sums, and jdsample.c's triangle weights
    (3 on the nearer sample, 1 on the farther, edges repeated)."""
    down = torch.zeros(n // 2, n)
    down[torch.arange(n // 2), 2 * torch.arange(n // 2)] = 1
    down[torch.arange(n // 2), 2 * torch.arange(n // 2) + 1] = 1
    up = torch.zeros(2 * n, n)
    for r in range(n):
        up[2 * r, r] += 3
        up[2 * r, max(r - 1, 0)] += 1
        up[2 * r + 1, r] += 3
        up[2 * r + 1, min(r + 1, n - 1)] += 1
    return down, up


def _downsample(planes: Tensor) -> Tensor:
    """jcsample.c `h2v2_downsample` of (..., H, W): (2x2 sum + bias) >> 2, bias 1, 2, 1, 2... along
    a row."""
    (rows, _), (cols, _) = _sampling_matrices(planes.shape[-2]), _sampling_matrices(planes.shape[-1])
    bias = 1 + torch.arange(cols.shape[0], device=planes.device, dtype=planes.dtype) % 2
    return separable(planes, rows, cols).add_(bias).mul_(1 / 4).floor_()


def _upsample(planes: Tensor) -> Tensor:
    """jdsample.c `h2v2_fancy_upsample` of (..., H, W): (3 nearer + 1 farther) vertically, then
    horizontally, + bias 8 (even columns) or 7 (odd), >> 4."""
    (_, rows), (_, cols) = _sampling_matrices(planes.shape[-2]), _sampling_matrices(planes.shape[-1])
    bias = 8 - torch.arange(cols.shape[0], device=planes.device, dtype=planes.dtype) % 2
    return separable(planes, rows, cols).add_(bias).mul_(1 / 16).floor_()


# ---------------------------------------------------------------- the islow DCT pair
# jfdctint.c and jidctint.c: the Loeffler-Ligtenberg-Moschytz butterflies in 13-bit fixed point,
# 2 extra bits kept between the two passes. Each pass is an exact integer linear map followed by
# one rounding shift, so it runs as a float64 matrix product (the sums stay far below 2**53).

_CONST_BITS, _PASS1_BITS = 13, 2


def _c(x: float) -> int:
    return int(x * (1 << _CONST_BITS) + 0.5)


def _odd_part(t4, t5, t6, t7) -> tuple:
    """The rotations of the odd outputs, shared by both transforms."""
    z5 = (t4 + t5 + t6 + t7) * _c(1.175875602)
    z1, z2 = (t4 + t7) * -_c(0.899976223), (t5 + t6) * -_c(2.562915447)
    z3, z4 = (t4 + t6) * -_c(1.961570560) + z5, (t5 + t7) * -_c(0.390180644) + z5
    return (t4 * _c(0.298631336) + z1 + z3, t5 * _c(2.053119869) + z2 + z4,
            t6 * _c(3.072711026) + z2 + z3, t7 * _c(1.501321110) + z1 + z4)


def _forward_sums(d: list[int]) -> list[int]:
    """jfdctint.c on 8 samples before descaling (DC-type outputs scaled by 2**CONST_BITS, so all
    eight descale by one shift)."""
    t0, t7, t1, t6 = d[0] + d[7], d[0] - d[7], d[1] + d[6], d[1] - d[6]
    t2, t5, t3, t4 = d[2] + d[5], d[2] - d[5], d[3] + d[4], d[3] - d[4]
    t10, t13, t11, t12 = t0 + t3, t0 - t3, t1 + t2, t1 - t2
    z1 = (t12 + t13) * _c(0.541196100)
    o7, o5, o3, o1 = _odd_part(t4, t5, t6, t7)
    return [(t10 + t11) << _CONST_BITS, o1, z1 + t13 * _c(0.765366865), o3,
            (t10 - t11) << _CONST_BITS, o5, z1 - t12 * _c(1.847759065), o7]


def _inverse_sums(d: list[int]) -> list[int]:
    """jidctint.c on 8 coefficients before descaling."""
    z1 = (d[2] + d[6]) * _c(0.541196100)
    t2, t3 = z1 - d[6] * _c(1.847759065), z1 + d[2] * _c(0.765366865)
    t0, t1 = (d[0] + d[4]) << _CONST_BITS, (d[0] - d[4]) << _CONST_BITS
    t10, t13, t11, t12 = t0 + t3, t0 - t3, t1 + t2, t1 - t2
    o0, o1, o2, o3 = _odd_part(d[7], d[5], d[3], d[1])
    return [t10 + o3, t11 + o2, t12 + o1, t13 + o0, t13 - o0, t12 - o1, t11 - o2, t10 - o3]


@functools.cache
def _passes(transform: str) -> tuple[Tensor, Tensor]:
    """(first, second) pass of a transform on row-major flattened 8x8 blocks, (64, 64) float64:
    the forward DCT works along rows then columns, the inverse along columns then rows."""
    sums = _forward_sums if transform == "forward" else _inverse_sums
    one_d = torch.tensor([sums([int(i == k) for i in range(8)]) for k in range(8)]).T.contiguous()
    eye = torch.eye(8, dtype=torch.int64)
    along_rows, along_columns = torch.kron(eye, one_d), torch.kron(one_d, eye)
    if transform == "forward":
        return along_rows.double(), along_columns.double()
    return along_columns.double(), along_rows.double()


def _descale(x: Tensor, bits: int) -> Tensor:
    """libjpeg's DESCALE, (x + 2**(bits - 1)) >> bits, on float64 integers, in place."""
    return x.add_(1 << (bits - 1)).mul_(1 / (1 << bits)).floor_()


def _lossy(blocks: Tensor, table: Tensor) -> Tensor:
    """(B, 64) float64 samples through the forward DCT, quantisation by `table` (64,) (half away from
    zero, as libjpeg), dequantisation (folded into the inverse's first pass) and the inverse DCT."""
    forward, inverse = _passes("forward"), _passes("inverse")
    device = blocks.device
    x = _descale(blocks.sub_(128) @ forward[0].to(device).T, _CONST_BITS - _PASS1_BITS)
    x = _descale(x @ forward[1].to(device).T, _CONST_BITS + _PASS1_BITS)  # 8x the DCT
    table = table.to(device)
    levels = (x.abs() + 4 * table).div_(8 * table).floor_().mul_(x.sign_())
    x = _descale(levels @ (inverse[0].to(device) * table).T, _CONST_BITS - _PASS1_BITS)
    x = _descale(x @ inverse[1].to(device).T, _CONST_BITS + _PASS1_BITS + 3)
    return x.add_(128).clamp_(0, 255)


def _to_blocks(planes: Tensor) -> Tensor:
    *lead, h, w = planes.shape
    return planes.view(*lead, h // 8, 8, w // 8, 8).transpose(-3, -2).reshape(-1, 64)


def _from_blocks(blocks: Tensor, shape: torch.Size) -> Tensor:
    *lead, h, w = shape
    return blocks.view(*lead, h // 8, w // 8, 8, 8).transpose(-3, -2).reshape(shape)


# ---------------------------------------------------------------- the round trip


def _extend(x: Tensor, rows: int, cols: int) -> Tensor:
    """`x` (..., H, W) grown to (..., rows, cols) by repeating its last row and column."""
    h, w = x.shape[-2:]
    if rows > h:
        x = x[..., torch.arange(rows, device=x.device).clamp_(max=h - 1), :]
    if cols > w:
        x = x[..., torch.arange(cols, device=x.device).clamp_(max=w - 1)]
    return x


def _blocks_up(n: int) -> int:
    return -(-n // 8) * 8


def round_trip(images: Tensor, quality: int) -> Tensor:
    """(N, 3, H, W) uint8 images encoded at `quality` (4:2:0 chroma) and decoded again. Partial
    blocks are padded as libjpeg pads them: luma by repeating the last pixel; chroma, across, by
    downsampling repeated pixels and, down, by repeating the last downsampled row."""
    h, w = images.shape[-2:]
    ch, cw = -(-h // 2), -(-w // 2)
    rgb = _extend(images.float(), max(_blocks_up(h), 2 * ch), max(_blocks_up(w), 2 * _blocks_up(cw)))
    ycc = _rgb_to_ycc(rgb)
    y = ycc[:, :1, :_blocks_up(h), :_blocks_up(w)]
    chroma = _downsample(ycc[:, 1:, :2 * ch, :2 * _blocks_up(cw)])
    chroma = _extend(chroma, _blocks_up(ch), chroma.shape[-1])
    y = _from_blocks(_lossy(_to_blocks(y.double()), quant_table(LUMA, quality)), y.shape)
    chroma = _from_blocks(_lossy(_to_blocks(chroma.double()), quant_table(CHROMA, quality)),
                          chroma.shape)[..., :ch, :cw]
    if cw > 2:
        chroma = _upsample(chroma.float())
    else:  # libjpeg upsamples chroma two samples wide or less by plain repetition
        chroma = chroma.float().repeat_interleave(2, -2).repeat_interleave(2, -1)
    ycc = torch.cat([y[..., :h, :w].float(), chroma[..., :h, :w]], 1)
    return _ycc_to_rgb(ycc).to(torch.uint8)


def libjpeg_round_trip(images: Tensor, quality: int) -> Tensor:
    """`round_trip` of (N, 3, H, W) uint8 CPU images by Pillow (`Image.save(..., "JPEG",
    quality=quality)` and decoding, as the generators do), image by image. The channel planes go
    in and come out through `Image.merge` and `split`, never transposed to pixel order; one
    thread, since Pillow holds the GIL while it encodes (threads ran slower on two cores)."""
    from PIL import Image

    planes = images.contiguous().numpy()
    out = np.empty_like(planes)
    for image, target in zip(planes, out):
        buffer = io.BytesIO()
        Image.merge("RGB", [Image.fromarray(plane) for plane in image]).save(buffer, "JPEG",
                                                                               quality=quality)
        with Image.open(buffer) as decoded:
            rgb = decoded if decoded.mode == "RGB" else decoded.convert("RGB")
            for channel, band in enumerate(rgb.split()):
                target[channel] = np.asarray(band)
    return torch.from_numpy(out)


def fused_round_trip(images: Tensor, quality: int) -> Tensor:
    """`round_trip` of (N, 3, H, W) uint8 CPU images by `cpu_kernels` (numba installed)."""
    tables = (quant_table(base, quality).long().numpy() for base in (LUMA, CHROMA))
    return torch.from_numpy(cpu_kernels.jpeg_round_trip(images.contiguous().numpy(), *tables))


LIBJPEG_PIXELS = 96 * 96
"""The image area from which, on a CPU without numba, Pillow's libjpeg beats the batched codec."""


def fastest_round_trip(images: Tensor, quality: int) -> Tensor:
    """`round_trip` by the fastest of the three equal implementations for the images' device and
    size: on a CPU the fused loop (3x the batched codec at 32 px, 1.5x Pillow at 224 px) or,
    without numba, Pillow for large images; the batched codec elsewhere."""
    if cpu_kernels.enabled(images.device):
        return fused_round_trip(images, quality)
    if images.device.type == "cpu" and images.shape[-2] * images.shape[-1] >= LIBJPEG_PIXELS:
        return libjpeg_round_trip(images, quality)
    return round_trip(images, quality)
