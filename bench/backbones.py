"""Backbones: stem -> named stages -> head, taking images in [0, 1] and normalising inside.

Every backbone is a `Backbone`, so a method can read or replace the activation at a named stage
boundary ("tap") through `model(x, edits={"stage2": fn})` without knowing the architecture.
Taps, in depth order: "input" (the [0, 1] image), "stem", then each stage name.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import torch
from torch import Tensor, nn

from .errors import UserError
from .registry import Registry

Edit = Callable[[Tensor], Tensor]


class Normalize(nn.Module):
    """Per-channel (x - mean) / std with the dataset's statistics stored as buffers."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.mean) / self.std


class Backbone(nn.Module):
    """A classifier split into stem, named stages and head.

    Args:
        stem: first layers; `first_conv` names its first convolution (dotted path from the model).
        stages: (name, module) pairs in depth order.
        head: maps the last stage's output to logits.
        mean, std: normalisation applied to [0, 1] inputs.
    """

    def __init__(self, stem: nn.Module, stages: Sequence[tuple[str, nn.Module]], head: nn.Module,
                 mean: Sequence[float], std: Sequence[float], first_conv: str = "stem.0") -> None:
        super().__init__()
        self.normalize = Normalize(mean, std)
        self.stem = stem
        self.stages = nn.ModuleDict(stages)
        self.head = head
        self.first_conv = first_conv

    @property
    def taps(self) -> tuple[str, ...]:
        return ("input", "stem", *self.stages.keys())

    def forward(self, x: Tensor, edits: Mapping[str, Edit] | None = None) -> Tensor:
        edits = edits or {}
        unknown = set(edits) - set(self.taps)
        if unknown:
            raise ValueError(f"unknown taps {sorted(unknown)}; this backbone has {self.taps}")
        h = _apply(edits, "input", x)
        h = _apply(edits, "stem", self.stem(self.normalize(h)))
        for name, stage in self.stages.items():
            h = _apply(edits, name, stage(h))
        return self.head(h)

    def tap_channels(self) -> dict[str, int]:
        """Channels at every tap, measured with one small forward pass."""
        sizes: dict[str, int] = {}

        def record(name: str) -> Edit:
            def edit(h: Tensor) -> Tensor:
                sizes[name] = h.shape[1]
                return h
            return edit

        probe = torch.zeros(2, 3, 32, 32, device=self.normalize.mean.device)
        was_training = self.training
        self.eval()
        with torch.no_grad():
            self(probe, {t: record(t) for t in self.taps})
        self.train(was_training)
        return sizes


def _apply(edits: Mapping[str, Edit], tap: str, h: Tensor) -> Tensor:
    fn = edits.get(tap)
    return h if fn is None else fn(h)


def _conv_bn_relu(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


def _pool_fc(features: int, num_classes: int, pre: Sequence[nn.Module] = ()) -> nn.Sequential:
    return nn.Sequential(*pre, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(features, num_classes))


class BasicBlock(nn.Module):
    """Post-activation residual block (He et al. 2016) with a 1x1 projection shortcut when needed."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                          nn.BatchNorm2d(cout))

    def forward(self, x: Tensor) -> Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class PreActBlock(nn.Module):
    """Pre-activation residual block (He et al. 2016b); `dropout` gives the wide-ResNet block."""

    def __init__(self, cin: int, cout: int, stride: int = 1, dropout: float = 0.0) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.dropout = nn.Dropout(dropout) if dropout else nn.Identity()
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.shortcut = None
        if stride != 1 or cin != cout:
            self.shortcut = nn.Conv2d(cin, cout, 1, stride, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        out = torch.relu(self.bn1(x))
        skip = x if self.shortcut is None else self.shortcut(out)
        out = self.conv1(out)
        out = self.conv2(self.dropout(torch.relu(self.bn2(out))))
        return out + skip


class ResNeXtBottleneck(nn.Module):
    """ResNeXt bottleneck (Xie et al. 2017) in the CIFAR form used by AugMix and TENET."""

    def __init__(self, cin: int, planes: int, stride: int, cardinality: int, base_width: int) -> None:
        super().__init__()
        width = int(math.floor(planes * base_width / 64)) * cardinality
        self.reduce = nn.Sequential(nn.Conv2d(cin, width, 1, bias=False), nn.BatchNorm2d(width),
                                    nn.ReLU(inplace=True))
        self.grouped = nn.Sequential(
            nn.Conv2d(width, width, 3, stride, 1, groups=cardinality, bias=False),
            nn.BatchNorm2d(width), nn.ReLU(inplace=True))
        self.expand = nn.Sequential(nn.Conv2d(width, planes * 4, 1, bias=False),
                                    nn.BatchNorm2d(planes * 4))
        self.shortcut = nn.Identity()
        if stride != 1 or cin != planes * 4:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, planes * 4, 1, stride, bias=False),
                                          nn.BatchNorm2d(planes * 4))

    def forward(self, x: Tensor) -> Tensor:
        return torch.relu(self.shortcut(x) + self.expand(self.grouped(self.reduce(x))))


def _stages(make_block: Callable[[int, int, int], nn.Module], cin: int, widths: Sequence[int],
            blocks: Sequence[int], strides: Sequence[int], out_of: Callable[[int], int] = lambda w: w
            ) -> list[tuple[str, nn.Module]]:
    stages = []
    for i, (width, count, stride) in enumerate(zip(widths, blocks, strides), start=1):
        layers = []
        for j in range(count):
            layers.append(make_block(cin, width, stride if j == 0 else 1))
            cin = out_of(width)
        stages.append((f"stage{i}", nn.Sequential(*layers)))
    return stages


BackboneFactory = Callable[..., Backbone]


def _check_factory(obj: object) -> None:
    if not callable(obj) or not (obj.__doc__ or "").strip():
        raise TypeError("a backbone factory must be a documented callable")


# Third-party backbones come in through the entry-point group `robustbench_lite.backbones`: a
# documented factory (num_classes, mean, std) -> Backbone, imported only when named.
BACKBONES: Registry[BackboneFactory] = Registry("backbone", group="robustbench_lite.backbones",
                                                check=_check_factory)


def _cifar_resnet(depth: int, num_classes: int, mean, std) -> Backbone:
    n = (depth - 2) // 6
    stages = _stages(BasicBlock, 16, (16, 32, 64), (n, n, n), (1, 2, 2))
    return Backbone(_conv_bn_relu(3, 16), stages, _pool_fc(64, num_classes), mean, std)


@BACKBONES.register("tiny")
def tiny(num_classes: int, mean, std) -> Backbone:
    """ResNet-8 (16/32/64 channels, one block per stage): seconds per epoch on CPU, for smoke runs."""
    return _cifar_resnet(8, num_classes, mean, std)


@BACKBONES.register("resnet20")
def resnet20(num_classes: int, mean, std) -> Backbone:
    """CIFAR ResNet-20 (He et al. 2016), the push-pull paper's base model."""
    return _cifar_resnet(20, num_classes, mean, std)


@BACKBONES.register("resnet18")
def resnet18(num_classes: int, mean, std) -> Backbone:
    """ResNet-18 with the CIFAR stem (3x3 conv, no max-pool), as in the CIFS paper."""
    stages = _stages(BasicBlock, 64, (64, 128, 256, 512), (2, 2, 2, 2), (1, 2, 2, 2))
    return Backbone(_conv_bn_relu(3, 64), stages, _pool_fc(512, num_classes), mean, std)


@BACKBONES.register("preact_resnet18")
def preact_resnet18(num_classes: int, mean, std) -> Backbone:
    """PreActResNet-18, the mixup literature's CIFAR backbone (Catch-up Mix, Manifold Mixup)."""
    stages = _stages(PreActBlock, 64, (64, 128, 256, 512), (2, 2, 2, 2), (1, 2, 2, 2))
    head = _pool_fc(512, num_classes, pre=(nn.BatchNorm2d(512), nn.ReLU(inplace=True)))
    stem = nn.Sequential(nn.Conv2d(3, 64, 3, 1, 1, bias=False))
    return Backbone(stem, stages, head, mean, std)


def _wide_resnet(depth: int, widen: int, num_classes: int, mean, std) -> Backbone:
    """WRN-depth-widen (Zagoruyko & Komodakis 2016): (depth - 4) / 6 pre-activation blocks per
    stage, widths 16k/32k/64k, no dropout."""
    n, widths = (depth - 4) // 6, (16 * widen, 32 * widen, 64 * widen)
    stages = _stages(PreActBlock, 16, widths, (n, n, n), (1, 2, 2))
    head = _pool_fc(widths[-1], num_classes,
                    pre=(nn.BatchNorm2d(widths[-1]), nn.ReLU(inplace=True)))
    return Backbone(nn.Sequential(nn.Conv2d(3, 16, 3, 1, 1, bias=False)), stages, head, mean, std)


@BACKBONES.register("wrn28_10")
def wrn28_10(num_classes: int, mean, std) -> Backbone:
    """Wide ResNet-28-10 (Zagoruyko & Komodakis 2016), pre-activation blocks, no dropout."""
    return _wide_resnet(28, 10, num_classes, mean, std)


@BACKBONES.register("wrn34_10")
def wrn34_10(num_classes: int, mean, std) -> Backbone:
    """Wide ResNet-34-10: five blocks per stage at 160/320/640, Madry et al.'s CIFAR model."""
    return _wide_resnet(34, 10, num_classes, mean, std)


@BACKBONES.register("wrn40_2")
def wrn40_2(num_classes: int, mean, std) -> Backbone:
    """Wide ResNet-40-2: six blocks per stage at 32/64/128, AugMix's default CIFAR model."""
    return _wide_resnet(40, 2, num_classes, mean, std)


@BACKBONES.register("resnext29")
def resnext29(num_classes: int, mean, std) -> Backbone:
    """ResNeXt-29 4x32d, widen 4 (stages 256/512/1024), the AugMix and TENET CIFAR model."""
    def block(cin: int, planes: int, stride: int) -> nn.Module:
        return ResNeXtBottleneck(cin, planes, stride, cardinality=4, base_width=32)

    stages = _stages(block, 64, (64, 128, 256), (3, 3, 3), (1, 2, 2), out_of=lambda w: 4 * w)
    return Backbone(_conv_bn_relu(3, 64), stages, _pool_fc(1024, num_classes), mean, std)


@BACKBONES.register("resnet50")
def resnet50(num_classes: int, mean, std, pretrained: bool = False) -> Backbone:
    """torchvision ResNet-50 for 224-px data; ImageNet weights only from the local torch cache
    (checked against their published digest, `weights.py`)."""
    from torchvision.models import ResNet50_Weights
    from torchvision.models import resnet50 as tv_resnet50

    from .weights import local_state_dict

    net = tv_resnet50(weights=None)
    if pretrained:
        weights = ResNet50_Weights.IMAGENET1K_V1
        net.load_state_dict(local_state_dict(weights.url, f"ImageNet weights of resnet50 ({weights})"))
    net.fc = nn.Linear(net.fc.in_features, num_classes)
    stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
    stages = [(f"stage{i}", getattr(net, f"layer{i}")) for i in range(1, 5)]
    return Backbone(stem, stages, nn.Sequential(net.avgpool, nn.Flatten(), net.fc), mean, std)


def initialise(model: nn.Module, scheme: str) -> None:
    """Re-initialise in place: "kaiming_fan_out" draws every convolution from He et al.'s normal
    with fan-out scaling and sets BatchNorm to (1, 0), as torchvision's ResNet does; "pytorch"
    keeps the layers' own defaults."""
    if scheme == "pytorch":
        return
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)


def build_backbone(name: str, num_classes: int, mean, std, **kwargs) -> Backbone:
    factory = BACKBONES.get(name)
    try:
        return factory(num_classes, mean, std, **kwargs)
    except TypeError as err:
        raise UserError(f"backbone {name!r} does not accept {sorted(kwargs)}: {err}") from err
