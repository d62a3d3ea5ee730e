"""Push-pull inhibition: a convolution that answers to a pattern and is inhibited by its opposite.

Strisciuglio, Lopez-Antequera, Petkov, "Enhanced robustness of convolutional networks with a
push-pull inhibition layer", Neural Computing and Applications 32 (2020).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.utils import _pair

from robustbench_lite.bench.config import setting
from robustbench_lite.bench.backbones import Backbone
from robustbench_lite.bench.errors import UserError
from robustbench_lite.bench.method import METHODS, Method


def pull_size(kernel: int, scale: float) -> int:
    """Side of the pull kernel: the push side times `scale`, rounded down, then up to odd."""
    size = math.floor(kernel * scale)
    return size + 1 - size % 2


class PushPullConv2d(nn.Module):
    """ReLU(k * I + b) - alpha * ReLU(-k_up * I - b): a convolution inhibited by its own pull.

    The push kernel k is the only learned filter; the pull kernel k_up is k bilinearly resized by
    `scale` (sides rounded to odd, see `pull_size`), rebuilt at every forward so that gradients
    reach k through both branches. The pull convolution is padded so that both outputs have the
    push convolution's size. `alpha` is fixed, or with `learn_alpha` one value per output channel,
    initialised U(0.5 - r, 0.5 + r) with r = 1 / sqrt(in * out) and passed through a ReLU.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0,
                 dilation=1, groups: int = 1, bias: bool = False, scale: float = 2.0,
                 alpha: float = 1.0, learn_alpha: bool = False) -> None:
        super().__init__()
        if isinstance(padding, str) or any(k % 2 == 0 for k in _pair(kernel_size)):
            raise UserError("push-pull needs odd kernel sizes and integer padding; "
                            f"got kernel {kernel_size}, padding {padding!r}")
        if scale < 1:
            raise UserError(f"push-pull scale must be >= 1 (the pull kernel is the push kernel "
                            f"upsampled), got {scale}")
        self.push = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, dilation,
                              groups, bias)
        self.scale = scale
        self.pull_shape = tuple(pull_size(k, scale) for k in self.push.kernel_size)
        self.pull_padding = tuple(p + d * (s // 2 - k // 2) for p, d, s, k in zip(
            self.push.padding, self.push.dilation, self.pull_shape, self.push.kernel_size))
        if learn_alpha:
            r = 1 / math.sqrt(in_channels * out_channels)
            self.alpha = nn.Parameter(torch.empty(out_channels).uniform_(0.5 - r, 0.5 + r))
        else:
            self.register_buffer("alpha", torch.tensor(float(alpha)))

    @classmethod
    def from_conv(cls, conv: nn.Conv2d, **options) -> PushPullConv2d:
        """A push-pull layer with `conv`'s geometry whose push kernel starts as `conv`'s weights."""
        if conv.padding_mode != "zeros":
            raise UserError(f"push-pull supports zero padding only, not {conv.padding_mode!r}")
        layer = cls(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride,
                    conv.padding, conv.dilation, conv.groups, conv.bias is not None, **options)
        layer.push.load_state_dict(conv.state_dict())
        return layer.to(conv.weight.device)

    def pull_weight(self) -> Tensor:
        """The pull kernel: the negated, resized push kernel (differentiable in the push kernel)."""
        weight = self.push.weight
        if self.pull_shape != tuple(weight.shape[-2:]):
            weight = F.interpolate(weight, size=self.pull_shape, mode="bilinear",
                                   align_corners=True)
        return -weight

    def forward(self, x: Tensor) -> Tensor:
        push = self.push
        excitation = torch.relu(push(x))
        bias = None if push.bias is None else -push.bias
        inhibition = torch.relu(F.conv2d(x, self.pull_weight(), bias, push.stride,
                                         self.pull_padding, push.dilation, push.groups))
        alpha = torch.relu(self.alpha).view(-1, 1, 1) if self.alpha.dim() else self.alpha
        return excitation - alpha * inhibition


@METHODS.register("pushpull")
class PushPull(Method):
    """Push-pull inhibition: the first convolution is replaced by a push-pull layer (h=2, alpha=1).

    The layer keeps the replaced convolution's geometry and initial weights; the rest of the
    backbone (BN and ReLU after the first convolution included) is unchanged, as in the paper's
    ResNet/DenseNet placement. Training is plain cross-entropy.

    Deviations from the reference code: the `--alpha-pp` / `--scale-pp` options of the reference
    never reach its models (they always train with h=2, alpha=1); here `scale` and `alpha` do take
    effect. The pull padding accounts for dilation (the reference assumes dilation 1). The paper's
    ablations with push-pull in the whole first block or in every layer are not included.
    """

    citation = ("Strisciuglio, Lopez-Antequera, Petkov, Enhanced robustness of convolutional "
                "networks with a push-pull inhibition layer (Neural Computing and Applications "
                "2020) <https://doi.org/10.1007/s00521-020-04751-8>")

    @dataclass(frozen=True)
    class Config:
        # h: pull kernel = push kernel upsampled by h (3x3 -> 7x7)
        scale: float = setting(2.0, low=1)
        alpha: float = setting(1.0, low=0)  # inhibition strength when fixed
        learn_alpha: bool = False  # learn one alpha per output channel (the paper's "PP-alpha")

    def build_model(self, backbone: Backbone) -> nn.Module:
        path = backbone.first_conv
        conv = backbone.get_submodule(path)
        if not isinstance(conv, nn.Conv2d):
            raise UserError(f"pushpull: {path!r} of this backbone is a {type(conv).__name__}, "
                            f"not a Conv2d; pick a backbone whose first layer is a convolution")
        cfg = self.config
        layer = PushPullConv2d.from_conv(conv, scale=cfg.scale, alpha=cfg.alpha,
                                         learn_alpha=cfg.learn_alpha)
        parent, _, name = path.rpartition(".")
        setattr(backbone.get_submodule(parent) if parent else backbone, name, layer)
        return backbone
