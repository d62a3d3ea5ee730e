"""The embedded default dataset: scikit-learn's bundled handwritten digits (no download)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .core import DATASETS, ImageDataset, Split


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
