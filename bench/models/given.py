"""A model the suite did not train: its preprocessing, its identity and the checks it must pass.

Every protocol feeds images in [0, 1] at the dataset's size and keeps attack budgets in that pixel
space. A model that expects normalised inputs (or another input size) is wrapped in `Preprocessed`,
which does inside the forward pass, differentiably, what its published transform does: resize the
shorter side and take the centre crop (only when the images are not already at the crop size, so
images a dataset has already centre-cropped are not zoomed twice), then subtract the mean and
divide by the std.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ..config import setting
from ..errors import UserError


@dataclass(frozen=True)
class ModelConfig:
    """Preprocessing of a given model (`--set model.k=v`); unset fields take the source's values
    (a torchvision weights' or timm's pretrained config), else none."""

    mean: tuple[float, ...] = ()  # per-channel mean the model subtracts (its inputs are normalised)
    std: tuple[float, ...] = setting((), low=0, low_open=True)  # per-channel std, with mean
    resize: int = setting(0, low=0)  # shorter side before the crop; 0: none
    crop: int = setting(0, low=0)  # centre crop fed to the model; 0: the dataset's size
    interpolation: str = ""  # bilinear or bicubic (default: the source's, else bilinear)

    def __post_init__(self) -> None:
        if bool(self.mean) != bool(self.std) or len(self.mean) != len(self.std):
            raise ValueError("model.mean and model.std go together, one value per channel each")
        if self.interpolation not in ("", "bilinear", "bicubic", "nearest"):
            raise ValueError("model.interpolation must be bilinear, bicubic or nearest")


@dataclass(frozen=True)
class Preprocessing:
    """What is done to [0, 1] images before the model sees them."""

    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    resize: int = 0
    crop: int = 0
    interpolation: str = "bilinear"

    def overridden(self, config: ModelConfig) -> Preprocessing:
        """These values with the ones the user set."""
        return Preprocessing(config.mean or self.mean, config.std or self.std,
                             config.resize or self.resize, config.crop or self.crop,
                             config.interpolation or self.interpolation)


class Preprocessed(nn.Module):
    """`model(normalise(centre_crop(resize(x))))` for images `x` in [0, 1] (see the module text)."""

    def __init__(self, model: nn.Module, preprocessing: Preprocessing) -> None:
        super().__init__()
        self.model = model
        self.preprocessing = preprocessing
        mean, std = preprocessing.mean or (0.0,), preprocessing.std or (1.0,)
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        p = self.preprocessing
        if p.crop and tuple(x.shape[-2:]) != (p.crop, p.crop):
            x = resize_and_crop(x, p.resize or p.crop, p.crop, p.interpolation)
        if p.mean:
            x = (x - self.mean) / self.std
        return self.model(x)


def resize_and_crop(x: Tensor, resize: int, crop: int, interpolation: str) -> Tensor:
    """torchvision's `resize(shorter side)` then `center_crop`, on a float batch (differentiable;
    antialiased, as torchvision's tensor resize is by default)."""
    height, width = x.shape[-2:]
    short, long = (height, width) if height <= width else (width, height)
    new_long = int(resize * long / short)
    size = (resize, new_long) if height <= width else (new_long, resize)
    if size != (height, width):
        x = F.interpolate(x, size=size, mode=interpolation,
                          align_corners=False if interpolation != "nearest" else None,
                          antialias=interpolation != "nearest")
    top = int(round((size[0] - crop) / 2.0))
    left = int(round((size[1] - crop) / 2.0))
    return x[..., top:top + crop, left:left + crop]


@dataclass
class GivenModel:
    """A loaded model with what identifies it and what it needs."""

    module: nn.Module  # the model as published (raw inputs)
    spec: str  # the source spec it was loaded from, e.g. torchvision:resnet18:IMAGENET1K_V1
    name: str  # its default name in the leaderboards
    backbone: str  # its architecture's name
    preprocessing: Preprocessing = field(default_factory=Preprocessing)
    details: dict = field(default_factory=dict)  # source facts for the provenance (file, weights)

    def weights_digest(self) -> str:
        return weights_digest(self.module)


def weights_digest(model: nn.Module) -> str:
    """sha256 (16 hex digits) of every parameter and buffer: name, dtype, shape and bytes. Two
    models with equal weights have equal digests wherever their files came from."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        if not isinstance(tensor, Tensor):
            continue
        digest.update(json.dumps([name, str(tensor.dtype), list(tensor.shape)]).encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8)
                      .numpy().tobytes())
    return digest.hexdigest()[:16]


def check_fits(model: nn.Module, images: Tensor, num_classes: int, what: str, dataset: str) -> None:
    """One forward pass on two [0, 1] images: the model must take them and give one logit per
    class of the dataset."""
    shape = "x".join(map(str, images.shape[1:]))
    try:
        with torch.no_grad():
            out = model.eval()(images)
    except (RuntimeError, ValueError, TypeError) as err:
        first = str(err).strip().splitlines()[0][:160] if str(err).strip() else type(err).__name__
        raise UserError(f"{what} cannot take the {shape} images of {dataset} ({first}); evaluate "
                        f"it on a dataset of its input size, or set --set model.resize=N "
                        f"--set model.crop=N") from None
    if not isinstance(out, Tensor) or out.ndim != 2 or out.shape[0] != images.shape[0]:
        raise UserError(f"{what} does not return a (batch, classes) tensor of logits; wrap it so "
                        f"that it does")
    if out.shape[1] != num_classes:
        raise UserError(f"{what} gives {out.shape[1]} outputs but {dataset} has {num_classes} "
                        f"classes; evaluate it on a dataset with {out.shape[1]} classes, or give "
                        f"it a head of {num_classes}")


def state_dict_of(loaded: object, where: str) -> dict[str, Tensor]:
    """The state dict inside a loaded checkpoint: itself, or under 'model' (this suite's
    checkpoints), 'state_dict' or 'model_state_dict'."""
    if isinstance(loaded, dict):
        for key in ("model", "state_dict", "model_state_dict"):
            if isinstance(loaded.get(key), dict):
                return state_dict_of(loaded[key], where)
        if loaded and all(isinstance(v, Tensor) for v in loaded.values()):
            return {k.removeprefix("module."): v for k, v in loaded.items()}
    raise UserError(f"{where} holds no state dict (a mapping of names to tensors, or one under "
                    f"'model' or 'state_dict'); save it with torch.save(model.state_dict(), path)")


def load_into(model: nn.Module, state: dict[str, Tensor], where: str, hint: str) -> None:
    """Load `state` strictly; a mismatch is one line naming the first differences and `hint`."""
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        own = model.state_dict()
        missing = sorted(set(own) - set(state))
        unexpected = sorted(set(state) - set(own))
        resized = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
        parts = [f"{label} {', '.join(keys[:3])}{' …' if len(keys) > 3 else ''}"
                 for label, keys in (("missing", missing), ("unexpected", unexpected),
                                     ("other shapes for", resized)) if keys]
        raise UserError(f"{where} does not fit this architecture ({'; '.join(parts) or err}); "
                        f"{hint}") from None


def as_tuple(values: Sequence[float]) -> tuple[float, ...]:
    return tuple(float(v) for v in values)
