"""Images streamed from their files: the `x` of a split too large to hold in memory (ImageNet).

`ImageFiles` stands where a split's uint8 tensor stands: it has a shape, a length and a device,
and indexing it (a slice, an int, or a tensor of indices) decodes just those images, in a pool of
threads (Pillow releases the GIL while it decodes and resizes, so threads scale without starting
worker processes per batch), into a (B, 3, S, S) uint8 tensor. Protocols, which read their test
split batch by batch, and the trainer, which gathers each batch by index, work on it unchanged.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor

from ..errors import UserError

Decode = Callable[[Image.Image], Image.Image]  # an opened RGB image -> the S x S image models see

_POOL: ThreadPoolExecutor | None = None


def _pool() -> ThreadPoolExecutor:
    global _POOL
    if _POOL is None:
        _POOL = ThreadPoolExecutor(max_workers=min(16, os.cpu_count() or 1))
    return _POOL


class ImageFiles:
    """N image files decoded on access to (3, side, side) uint8 by `transform`.

    Args:
        paths: the files, in split order.
        side: the size `transform` produces (the split's image size).
        transform: opened RGB image -> `side` x `side` RGB image (e.g. resize 256, centre crop 224).
        fix: how to repair the files, for the error raised when one cannot be read.
    """

    dtype = torch.uint8
    ndim = 4

    def __init__(self, paths: Sequence[Path], side: int, transform: Decode, fix: str,
                 device: torch.device | str = "cpu") -> None:
        self.paths, self.side, self.transform, self.fix = list(paths), side, transform, fix
        self.device = torch.device(device)

    @property
    def shape(self) -> torch.Size:
        return torch.Size((len(self.paths), 3, self.side, self.side))

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index) -> Tensor:
        if isinstance(index, int):
            return self[index:index + 1][0]
        if isinstance(index, slice):
            chosen = self.paths[index]
        else:
            rows = torch.as_tensor(index).cpu().reshape(-1).tolist()
            chosen = [self.paths[i] for i in rows]
        images = list(_pool().map(self.decode, chosen))
        batch = np.stack(images) if images else np.empty((0, 3, self.side, self.side), np.uint8)
        return torch.from_numpy(batch).to(self.device)

    def to(self, device: torch.device | str) -> ImageFiles:
        """The same files, decoded onto `device`."""
        return ImageFiles(self.paths, self.side, self.transform, self.fix, device)

    def subset(self, index: Tensor) -> ImageFiles:
        rows = torch.as_tensor(index).reshape(-1).tolist()
        return ImageFiles([self.paths[i] for i in rows], self.side, self.transform, self.fix,
                          self.device)

    def decode(self, path: Path) -> np.ndarray:
        """One file as (3, side, side) uint8; an unreadable or mis-sized one is a UserError."""
        try:
            with Image.open(path) as image:
                out = self.transform(image.convert("RGB"))
        except FileNotFoundError:
            raise UserError(f"image {path} is missing; {self.fix}") from None
        except (UnidentifiedImageError, OSError) as err:
            raise UserError(f"image {path} cannot be decoded ({err}); {self.fix}") from None
        if out.size != (self.side, self.side):
            raise UserError(f"image {path} is {out.size[0]}x{out.size[1]}, expected "
                            f"{self.side}x{self.side}; {self.fix}")
        return np.asarray(out, dtype=np.uint8).transpose(2, 0, 1)

    def fingerprint(self) -> str:
        """A digest of the file list and each file's size and modification time (not the bytes:
        reading 50,000 JPEGs to key a cache would cost what the cache saves)."""
        digest = hashlib.sha256(f"{self.side}".encode())
        for path in self.paths:
            try:
                stat = path.stat()
            except FileNotFoundError:
                raise UserError(f"image {path} is missing; {self.fix}") from None
            digest.update(f"{path}:{stat.st_size}:{stat.st_mtime_ns}".encode())
        return digest.hexdigest()
