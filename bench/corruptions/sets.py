"""Corrupted test sets: the canonical -C releases, and sets generated on the fly (cached on disk).

Two on-disk layouts (landscape.md §3.1-3.2):

- CIFAR-C (`CorruptionArrays`): `<folder>/<corruption>.npy`, uint8 (5N, H, W, 3), severity-major
  (rows [(s-1)N, sN) hold severity s, row order = the clean test split), plus `labels.npy` (5N,).
  CIFAR-10-C / CIFAR-100-C use it, and so does the cache of generated sets,
  `<cache>/corruptions/<dataset>-<fingerprint>/`. Files are memory-mapped and read in batches.
- ImageNet-C (`CorruptionFolders`): `<root>/<corruption>/<severity>/<wnid>/*.JPEG`, optionally
  grouped by family (`<root>/noise/gaussian_noise/...`); class index = position of the WNID in the
  sorted WNID folders. Tiny-ImageNet-C uses the same layout with 64x64 images.

Every source yields, per (corruption, severity), batches of (images uint8 (B, 3, H, W), labels).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch
from filelock import FileLock
from torch import Tensor
from tqdm.auto import tqdm

from ..atomic import ensure_folder, write_atomic
from ..config import stable_hash
from ..datasets import Split
from ..datasets.imagenet import interleaved
from ..errors import UserError
from .tables import SEVERITIES, CorruptionTable, image_seed, load_backend

CANONICAL_FOLDERS = {"cifar10": "CIFAR-10-C", "cifar100": "CIFAR-100-C",
                     "tinyimagenet": "Tiny-ImageNet-C", "imagenet": "ImageNet-C"}
"""Dataset name -> folder of its canonical corrupted release under --data-root."""

Batch = tuple[Tensor, Tensor]
_PARALLEL_FROM = 10_000  # corrupted images from which generation is spread over processes
GENERATION_CHUNK = 256  # images corrupted at once while generating a set (bounds its memory)
FINAL_JPEG_QUALITY = {"imagenet": 85, "tinyimagenet": 85}
"""Parameter table -> the JPEG quality its release was saved at after corrupting: hendrycks'
make_imagenet_c.py and make_tinyimagenet_c.py save every corrupted image with `quality=85`
(make_cifar_c.py keeps arrays)."""


class CorruptionArrays:
    """A folder in the CIFAR-C layout, checked against the clean test split it corrupts.

    Args:
        folder: the folder holding `<corruption>.npy` and `labels.npy`.
        test: the clean test split; files must hold 5 x len(test) rows of its image shape, and
            `labels.npy` its labels repeated per severity.
        limit: evaluate the first `limit` images of each severity block (0: all).
    """

    def __init__(self, folder: Path, test: Split, limit: int = 0) -> None:
        self.folder = Path(folder)
        self.rows_per_severity = len(test)
        self.image_shape = (test.x.shape[2], test.x.shape[3], 3)
        self.limit = min(limit or len(test), len(test))
        self.labels = self._checked_labels(test.y.numpy())

    def _checked_labels(self, test_labels: np.ndarray) -> Tensor:
        path = self.folder / "labels.npy"
        labels = self._load(path)
        if not np.issubdtype(labels.dtype, np.integer):
            raise UserError(f"{path} holds {labels.dtype} labels, expected integer class ids; "
                            f"use the labels.npy of the release")
        expected = np.tile(test_labels, len(SEVERITIES))
        if labels.shape != expected.shape:
            raise UserError(f"{path} holds {labels.shape} labels, expected ({len(expected)},): 5 "
                            f"severities x {len(test_labels)} test images; use the labels.npy of "
                            f"this release (or pick the matching --dataset)")
        if not np.array_equal(np.asarray(labels, dtype=np.int64), expected):
            wrong = int((np.asarray(labels, dtype=np.int64) != expected).sum())
            raise UserError(f"{path}: {wrong} labels differ from the test split of this dataset "
                            f"repeated per severity; the files belong to another dataset or order "
                            f"(check --dataset and --data-root)")
        return torch.from_numpy(test_labels[:self.limit].astype(np.int64))

    def _load(self, path: Path) -> np.ndarray:
        if not path.is_file():
            raise UserError(f"{path} is missing; the folder needs one <corruption>.npy per "
                            f"corruption and labels.npy (or remove {self.folder} to generate "
                            f"the corruptions on the fly)")
        try:
            return np.load(path, mmap_mode="r")
        except (ValueError, OSError) as err:
            raise UserError(f"{path} is not a readable .npy file ({err}); re-download or "
                            f"re-generate it") from None

    def array(self, corruption: str) -> np.ndarray:
        """The memory-mapped (5N, H, W, 3) uint8 array of `corruption`, checked."""
        path = self.folder / f"{corruption}.npy"
        data = self._load(path)
        if data.dtype != np.uint8:
            raise UserError(f"{path} has dtype {data.dtype}, expected uint8 pixels in 0..255; "
                            f"re-save it with array.astype(np.uint8)")
        if data.ndim != 4 or data.shape[1:] != self.image_shape:
            raise UserError(f"{path} has shape {data.shape}, expected (rows, "
                            f"{', '.join(map(str, self.image_shape))}) uint8 NHWC images; "
                            f"transpose NCHW arrays to NHWC and use this dataset's image size")
        if data.shape[0] % len(SEVERITIES):
            raise UserError(f"{path} has {data.shape[0]} rows, not divisible by 5 severities; "
                            f"the file is truncated or not severity-major, re-download it")
        if data.shape[0] != len(SEVERITIES) * self.rows_per_severity:
            raise UserError(f"{path} has {data.shape[0]} rows, expected 5 x "
                            f"{self.rows_per_severity} (the test split of this dataset); "
                            f"the files belong to another dataset (check --dataset)")
        return data

    def batches(self, corruption: str, severity: int, batch_size: int) -> Iterator[Batch]:
        """(images (B, 3, H, W) uint8, labels) for the first `limit` images of one severity."""
        data = self.array(corruption)
        start = (severity - 1) * self.rows_per_severity
        for lo in range(0, self.limit, batch_size):
            hi = min(lo + batch_size, self.limit)
            chunk = np.array(data[start + lo:start + hi])  # a writable copy of the mapped rows
            yield torch.from_numpy(chunk).permute(0, 3, 1, 2).contiguous(), self.labels[lo:hi]


class CorruptionFolders:
    """An ImageNet-C style tree: `<root>[/<family>]/<corruption>/<severity>/<wnid>/<image>`.

    Args:
        root: the release folder (e.g. `<data-root>/ImageNet-C`).
        num_classes: the number of WNID folders expected.
        crop: centre crop side applied to every image (ImageNet-C: 224, no resize); None keeps them.
        limit: evaluate this many images per (corruption, severity): the first of the files taken
            class by class in turn, the rule the imagenet and tinyimagenet test splits are ordered
            by, so the clean images measured beside them are the same files (0: all).
    """

    def __init__(self, root: Path, num_classes: int, crop: int | None = None, limit: int = 0) -> None:
        self.root, self.num_classes, self.crop, self.limit = Path(root), num_classes, crop, limit

    def corruption_dir(self, corruption: str) -> Path:
        candidates = [self.root / corruption, *sorted(self.root.glob(f"*/{corruption}"))]
        for path in candidates:
            if path.is_dir():
                return path
        raise UserError(f"{self.root} has no folder {corruption}/ (flat) or <family>/{corruption}/ "
                        f"(grouped); extract every archive of the release there")

    def files(self, corruption: str, severity: int) -> list[tuple[Path, int]]:
        folder = self.corruption_dir(corruption) / str(severity)
        if not folder.is_dir():
            raise UserError(f"{folder} is missing; each corruption needs severity folders 1..5")
        wnids = sorted(p.name for p in folder.iterdir() if p.is_dir())
        if len(wnids) != self.num_classes:
            raise UserError(f"{folder} has {len(wnids)} class folders, expected "
                            f"{self.num_classes}; the release is incomplete or for another dataset")
        files = [(path, label) for label, wnid in enumerate(wnids)
                 for path in sorted((folder / wnid).iterdir()) if path.is_file()]
        if self.limit and self.limit < len(files):
            files = interleaved(files)[:self.limit]
        return files

    def batches(self, corruption: str, severity: int, batch_size: int) -> Iterator[Batch]:
        files = self.files(corruption, severity)
        for lo in range(0, len(files), batch_size):
            chunk = files[lo:lo + batch_size]
            images = np.stack([self._read(path) for path, _ in chunk])
            labels = torch.tensor([label for _, label in chunk], dtype=torch.long)
            yield torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(), labels

    def _read(self, path: Path) -> np.ndarray:
        from PIL import Image

        try:
            with Image.open(path) as image:
                image = image.convert("RGB")
                if self.crop:
                    image = _centre_crop(image, self.crop, path)
                return np.asarray(image)
        except OSError as err:
            raise UserError(f"cannot read image {path} ({err}); re-extract the release") from None


def _centre_crop(image, side: int, path: Path):
    w, h = image.size
    if w < side or h < side:
        raise UserError(f"{path} is {w}x{h}, smaller than the {side}x{side} evaluation crop; "
                        f"use the {side}px release")
    left, top = (w - side) // 2, (h - side) // 2
    return image.crop((left, top, left + side, top + side))


# ---------------------------------------------------------------- generated sets


def generated_arrays(test: Split, dataset: str, corruptions: Sequence[str], table: CorruptionTable,
                     backend: str, seed: int, cache_dir: Path, limit: int = 0,
                     progress: bool = False) -> CorruptionArrays:
    """The first `limit` test images corrupted with `backend` and `table`, in the CIFAR-C layout
    under `<cache_dir>/corruptions/<dataset>-<fingerprint>/`, generated once and reused."""
    clean = test.subset(torch.arange(min(limit or len(test), len(test))))
    module = load_backend(backend)
    key = _set_key(clean, table, backend, module.VERSION, seed)
    folder = Path(cache_dir) / "corruptions" / f"{dataset}-{key}"
    ensure_folder(folder, "the corruption cache", "pass a writable --cache-dir")
    with FileLock(str(folder / ".lock")):  # one process generates, the others wait and reuse
        if not (folder / "labels.npy").exists():
            _save_atomic(folder / "labels.npy", np.tile(clean.y.numpy(), len(SEVERITIES)))
        missing = [c for c in corruptions if not (folder / f"{c}.npy").exists()]
        jobs = [(backend, clean.x, c, table, seed, folder) for c in missing]
        parallel = (getattr(module, "PARALLEL", False)
                    and len(clean) * len(jobs) * len(SEVERITIES) >= _PARALLEL_FROM)
        with _pool(len(jobs) if parallel else 1) as pool:
            done = pool.map(_write_severity_major, jobs) if pool else map(_write_severity_major,
                                                                          jobs)
            with tqdm(total=len(missing), desc="corrupting", unit="corruption", leave=False,
                      disable=not progress or not missing) as bar:  # silent when all are cached
                for i, _ in enumerate(done):
                    bar.set_postfix_str(missing[i + 1] if i + 1 < len(missing) else "", False)
                    bar.update(1)
    return CorruptionArrays(folder, clean)


def _write_severity_major(job: tuple) -> None:
    """Write `<corruption>.npy`, (5N, H, W, 3): the N images at severity 1, then at severity 2, ...
    Corrupted `GENERATION_CHUNK` images at a time and appended to the file, so memory does not
    grow with N; each image has its own seed, so the chunking does not change a pixel."""
    backend, images, corruption, table, seed, folder = job
    corrupt = load_backend(backend).corrupt_batch
    n, (h, w) = len(images), images.shape[-2:]

    def write(handle) -> None:
        np.lib.format.write_array_header_1_0(handle, {
            "descr": np.lib.format.dtype_to_descr(np.dtype(np.uint8)), "fortran_order": False,
            "shape": (len(SEVERITIES) * n, h, w, 3)})
        for s in SEVERITIES:
            for lo in range(0, n, GENERATION_CHUNK):
                hi = min(n, lo + GENERATION_CHUNK)
                chunk = images[lo:hi].permute(0, 2, 3, 1).contiguous().numpy()
                block = corrupt(chunk, corruption, s, table,
                                [image_seed(seed, corruption, s, i) for i in range(lo, hi)])
                block = saved_as_released(block, table)
                handle.write(np.ascontiguousarray(block, dtype=np.uint8).tobytes())

    write_atomic(folder / f"{corruption}.npy", write, hint="pass a writable --cache-dir")


@contextlib.contextmanager
def _pool(jobs: int):
    """A pool of forked processes over the usable CPUs (Linux), or None when one process is enough.

    Forked, not spawned: a spawned worker re-imports the caller's main module, which re-runs an
    unguarded script (and here would wait forever on the cache lock its parent holds)."""
    workers = min(jobs, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1)
    if workers < 2 or not sys.platform.startswith("linux"):
        yield None
        return
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as pool:
        yield pool


def saved_as_released(block: np.ndarray, table: CorruptionTable) -> np.ndarray:
    """Corrupted (N, H, W, 3) images as the release stores them: through its final JPEG round
    trip where it has one (ImageNet-C: quality 85), by the libjpeg-exact codecs, so a generated
    set is the same on CPU and GPU and equals Pillow's round trip bit for bit."""
    quality = FINAL_JPEG_QUALITY.get(table.name)
    if quality is None:
        return block
    from .jpeg_codec import fastest_round_trip

    images = torch.from_numpy(np.ascontiguousarray(block)).permute(0, 3, 1, 2).contiguous()
    return fastest_round_trip(images, quality).permute(0, 2, 3, 1).numpy()


def _set_key(clean: Split, table: CorruptionTable, backend: str, version: int, seed: int) -> str:
    final = FINAL_JPEG_QUALITY.get(table.name)
    return stable_hash({"data": clean.fingerprint(), "table": table.name,
                        "params": dict(table.severities), "frost": table.frost_scale,
                        "backend": backend, "backend_version": version, "seed": seed,
                        **({"final_jpeg": final} if final else {})}, length=12)


def _save_atomic(path: Path, array: np.ndarray) -> None:
    write_atomic(path, lambda handle: np.save(handle, array), hint="pass a writable --cache-dir")


def write_cifar_c(folder: Path, labels: np.ndarray, severity_block: Callable[[str, int], np.ndarray],
                  corruptions: Sequence[str]) -> None:
    """Write a folder in the CIFAR-10-C release layout: per corruption `<name>.npy` with severities
    1..5 stacked, (5 N, H, W, 3) uint8, and `labels.npy`, (5 N,) uint8. Each file is filled through
    a memory map one severity at a time (`severity_block(name, s)` gives its N images), so a
    full-size layout never sits in memory (tests and `perf` write fixtures with it)."""
    ensure_folder(folder, "the CIFAR-C folder", "pick a writable folder")
    n = len(labels)
    np.save(folder / "labels.npy", np.tile(labels, 5).astype(np.uint8))
    for name in corruptions:
        array = None
        for severity in SEVERITIES:
            block = severity_block(name, severity)
            if array is None:
                array = np.lib.format.open_memmap(folder / f"{name}.npy", mode="w+",
                                                  dtype=np.uint8, shape=(5 * n, *block.shape[1:]))
            array[(severity - 1) * n:severity * n] = block
        array.flush()
        del array
