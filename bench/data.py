"""Datasets as in-memory uint8 tensors, and the dataset registry.

Images are (N, 3, H, W) uint8; the trainer moves them to the device once and converts batches to
[0, 1] floats there. `digits` (scikit-learn's bundled handwritten digits) needs no download.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .errors import UserError
from .registry import Registry


@dataclass
class Split:
    """Images (N, 3, H, W) uint8 and labels (N,) int64."""

    x: Tensor
    y: Tensor

    def __post_init__(self) -> None:
        if self.x.dtype != torch.uint8 or self.x.ndim != 4 or self.x.shape[1] != 3:
            raise ValueError(f"images must be (N, 3, H, W) uint8, got {tuple(self.x.shape)} {self.x.dtype}")
        if self.y.shape != (self.x.shape[0],):
            raise ValueError(f"{self.x.shape[0]} images but labels of shape {tuple(self.y.shape)}")
        self.y = self.y.long()

    def __len__(self) -> int:
        return self.x.shape[0]

    def subset(self, index: Tensor) -> Split:
        return Split(self.x[index], self.y[index])


@dataclass
class ImageDataset:
    """A classification dataset: train and test splits plus what models need to know about it."""

    name: str
    train: Split
    test: Split
    num_classes: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    class_names: list[str] = field(default_factory=list)
    extra: dict = field(default_factory=dict)

    @property
    def image_size(self) -> int:
        return self.train.x.shape[-1]


DatasetLoader = Callable[[Path], ImageDataset]


def _check_loader(obj: object) -> None:
    if not callable(obj) or not (obj.__doc__ or "").strip():
        raise TypeError("a dataset loader must be a documented callable taking the data root")


DATASETS: Registry[DatasetLoader] = Registry("dataset", check=_check_loader)


def load_dataset(name: str, data_root: str | Path) -> ImageDataset:
    return DATASETS.get(name)(Path(data_root).expanduser())


@DATASETS.register("digits")
def digits(data_root: Path) -> ImageDataset:
    """scikit-learn's bundled 8x8 handwritten digits, upsampled to 32x32 RGB; fixed 75/25 split."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    images = torch.from_numpy(bunch.images).float().unsqueeze(1) / 16.0
    images = F.interpolate(images, size=32, mode="bilinear", align_corners=False)
    images = (images.clamp(0, 1) * 255).round().to(torch.uint8).expand(-1, 3, -1, -1).contiguous()
    labels = torch.from_numpy(bunch.target)
    train_idx, test_idx = train_test_split(np.arange(len(labels)), test_size=0.25,
                                           stratify=bunch.target, random_state=0)
    train_idx, test_idx = torch.from_numpy(train_idx), torch.from_numpy(test_idx)
    return ImageDataset("digits", Split(images[train_idx], labels[train_idx]),
                        Split(images[test_idx], labels[test_idx]), 10,
                        mean=(0.21, 0.21, 0.21), std=(0.33, 0.33, 0.33),
                        class_names=[str(i) for i in range(10)])


def _torchvision_cifar(cls_name: str, folder: str, data_root: Path) -> tuple[Split, Split, list[str]]:
    import torchvision.datasets as tvd

    cls = getattr(tvd, cls_name)
    splits = []
    for train in (True, False):
        try:
            ds = cls(str(data_root), train=train, download=False)
        except RuntimeError:
            ds = _download(cls, data_root, train, folder)
        x = torch.from_numpy(np.asarray(ds.data)).permute(0, 3, 1, 2).contiguous()
        splits.append(Split(x, torch.as_tensor(ds.targets)))
    return splits[0], splits[1], list(ds.classes)


def _download(cls, data_root: Path, train: bool, folder: str):
    try:
        return cls(str(data_root), train=train, download=True)
    except Exception as err:  # network errors come in many types
        raise UserError(f"{folder} was not found under {data_root} and could not be downloaded "
                        f"({type(err).__name__}); put the python-pickle release there "
                        f"(<root>/{folder}/) or pass --data-root DIR") from None


@DATASETS.register("cifar10")
def cifar10(data_root: Path) -> ImageDataset:
    """CIFAR-10 (torchvision, md5-checked python pickles under --data-root/cifar-10-batches-py)."""
    train, test, names = _torchvision_cifar("CIFAR10", "cifar-10-batches-py", data_root)
    return ImageDataset("cifar10", train, test, 10, mean=(0.4914, 0.4822, 0.4465),
                        std=(0.2470, 0.2435, 0.2616), class_names=names)


@DATASETS.register("cifar100")
def cifar100(data_root: Path) -> ImageDataset:
    """CIFAR-100 (torchvision, md5-checked python pickles under --data-root/cifar-100-python)."""
    train, test, names = _torchvision_cifar("CIFAR100", "cifar-100-python", data_root)
    return ImageDataset("cifar100", train, test, 100, mean=(0.5071, 0.4865, 0.4409),
                        std=(0.2673, 0.2564, 0.2762), class_names=names)


from . import cub  # noqa: E402,F401  registers "cub200"
