"""CIFAR-10 and CIFAR-100 (Krizhevsky, 2009) from the official "python version" releases.

Layout under `--data-root`: `cifar-10-batches-py/` with `data_batch_1` .. `data_batch_5`,
`test_batch` and `batches.meta` (`label_names`), or `cifar-100-python/` with `train`, `test` and
`meta` (`fine_label_names`). Each batch is a Python-2 pickle of a dict whose `data` is a uint8
(N, 3072) array, one image per row as 3 x 32 x 32 (channel, row, column), and whose labels are a
list of ints (`labels`; `fine_labels` for CIFAR-100). Keys may also be bytes (b'data').

The files are read with a restricted unpickler that can only rebuild numpy arrays; any other
global in a file is refused before anything runs. A missing folder is fetched once with
torchvision's download of the md5-checked tarball, which is then read the same way.
"""

from __future__ import annotations

import importlib
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .core import DATASETS, ImageDataset, Split
from ..errors import UserError

ROW_SIZE = 3 * 32 * 32


@dataclass(frozen=True)
class Release:
    """Where a python-version release keeps its batches, labels and class names."""

    folder: str
    archive: str
    train_files: tuple[str, ...]
    test_file: str
    meta_file: str
    label_key: str
    names_key: str
    num_classes: int
    torchvision_class: str  # carries the tarball's url and md5

    @property
    def fix(self) -> str:
        return f"re-extract {self.archive} under --data-root"


CIFAR10 = Release("cifar-10-batches-py", "cifar-10-python.tar.gz",
                  tuple(f"data_batch_{i}" for i in range(1, 6)), "test_batch", "batches.meta",
                  "labels", "label_names", 10, "CIFAR10")
CIFAR100 = Release("cifar-100-python", "cifar-100-python.tar.gz", ("train",), "test", "meta",
                   "fine_labels", "fine_label_names", 100, "CIFAR100")


def _multiarray():
    """numpy's multiarray module under its numpy 2 name where it exists (no deprecation warning)."""
    try:
        return importlib.import_module("numpy._core.multiarray")
    except ImportError:  # numpy 1.x
        return importlib.import_module("numpy.core.multiarray")


def _allowed_globals() -> dict[tuple[str, str], object]:
    """The only globals a CIFAR batch needs: what rebuilds a numpy array (numpy 1 and 2 names)."""
    multiarray = _multiarray()
    allowed: dict[tuple[str, str], object] = {("numpy", "ndarray"): np.ndarray,
                                              ("numpy", "dtype"): np.dtype}
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed[module, "_reconstruct"] = multiarray._reconstruct
        allowed[module, "scalar"] = multiarray.scalar
    return allowed


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickles plain containers and numpy arrays; refuses every other global."""

    def __init__(self, file, path: Path, fix: str) -> None:
        super().__init__(file, encoding="latin1")
        self.path, self.fix = path, fix
        self.allowed = _allowed_globals()

    def find_class(self, module: str, name: str) -> object:
        try:
            return self.allowed[module, name]
        except KeyError:
            raise UserError(f"{self.path} is not a CIFAR python batch (it refers to "
                            f"{module}.{name}); {self.fix}") from None

    def persistent_load(self, pid: object) -> object:
        raise UserError(f"{self.path} is not a CIFAR python batch (persistent id); {self.fix}")


def load_batch(path: Path, fix: str) -> dict[str, object]:
    """One release file as a dict with str keys, read without running any code from it."""
    if not path.is_file():
        raise UserError(f"{path} is missing; {fix}")
    try:
        with path.open("rb") as file:
            obj = RestrictedUnpickler(file, path, fix).load()
    except UserError:
        raise
    except Exception as err:  # damaged pickles fail in many ways
        raise UserError(f"{path} is damaged or not a CIFAR python batch ({type(err).__name__}); "
                        f"{fix}") from None
    if not isinstance(obj, dict):
        raise UserError(f"{path} holds a {type(obj).__name__}, not a CIFAR batch dict; {fix}")
    return {key.decode("latin1") if isinstance(key, bytes) else key: value
            for key, value in obj.items()}


def _entry(batch: dict[str, object], key: str, path: Path, fix: str) -> object:
    if key not in batch:
        raise UserError(f"{path} has no '{key}' entry; {fix}")
    return batch[key]


def read_class_names(release: Release, folder: Path) -> list[str]:
    """The class names from the release's meta file, checked against the class count."""
    path = folder / release.meta_file
    raw = _entry(load_batch(path, release.fix), release.names_key, path, release.fix)
    names = list(raw) if isinstance(raw, (list, tuple)) else [None]
    names = [n.decode("latin1") if isinstance(n, bytes) else n for n in names]
    if not all(isinstance(n, str) for n in names):
        raise UserError(f"{path}: '{release.names_key}' must be a list of names; {release.fix}")
    if len(names) != release.num_classes:
        raise UserError(f"{path} lists {len(names)} class names, expected "
                        f"{release.num_classes}; {release.fix}")
    return names


def _label_array(raw: object, path: Path, key: str, fix: str) -> np.ndarray:
    try:
        labels = np.asarray(raw)
    except ValueError:  # ragged
        labels = None
    if labels is None or labels.ndim != 1 or (labels.size and labels.dtype.kind not in "iu"):
        raise UserError(f"{path}: '{key}' must be a list of integer labels; {fix}")
    return labels.astype(np.int64)


def read_batch(release: Release, path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Pixel rows (N, 3072) uint8 and labels (N,) int64 of one batch file, validated."""
    fix = release.fix
    batch = load_batch(path, fix)
    data = _entry(batch, "data", path, fix)
    if not (isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 2
            and data.shape[1] == ROW_SIZE):
        shape, dtype = getattr(data, "shape", None), getattr(data, "dtype", type(data).__name__)
        raise UserError(f"{path}: 'data' must be uint8 with {ROW_SIZE} columns (3x32x32), got "
                        f"shape {shape} of {dtype}; {fix}")
    labels = _label_array(_entry(batch, release.label_key, path, fix), path, release.label_key,
                          fix)
    if len(labels) != len(data):
        raise UserError(f"{path} has {len(data)} images but {len(labels)} labels; {fix}")
    if len(labels) and (labels.min() < 0 or labels.max() >= release.num_classes):
        raise UserError(f"{path}: labels must lie in 0..{release.num_classes - 1}, got "
                        f"{labels.min()}..{labels.max()}; {fix}")
    return data, labels


def read_split(release: Release, folder: Path, files: tuple[str, ...]) -> Split:
    """The batches `files` of a release folder, concatenated in order."""
    batches = [read_batch(release, folder / name) for name in files]
    rows = np.concatenate([data for data, _ in batches])  # a fresh, writable copy
    labels = np.concatenate([labels for _, labels in batches])
    return Split(torch.from_numpy(rows.reshape(-1, 3, 32, 32)), torch.from_numpy(labels))


def _download(release: Release, data_root: Path) -> None:
    """Fetch and extract the release tarball (md5-checked), as torchvision's download=True does."""
    try:
        import torchvision.datasets as tvd
        from torchvision.datasets.utils import download_and_extract_archive

        cls = getattr(tvd, release.torchvision_class)
        download_and_extract_archive(cls.url, str(data_root), filename=cls.filename,
                                     md5=cls.tgz_md5)
    except Exception as err:  # network errors come in many types
        raise UserError(f"{release.folder} was not found under {data_root} and could not be "
                        f"downloaded ({type(err).__name__}); put the python-pickle release there "
                        f"(<root>/{release.folder}/) or pass --data-root DIR") from None


def read_release(release: Release, data_root: Path) -> tuple[Split, Split, list[str]]:
    """Train split, test split and class names; downloads the release if its folder is missing."""
    folder = data_root / release.folder
    if not folder.is_dir():
        _download(release, data_root)
    names = read_class_names(release, folder)
    return (read_split(release, folder, release.train_files),
            read_split(release, folder, (release.test_file,)), names)


@DATASETS.register("cifar10")
def cifar10(data_root: Path) -> ImageDataset:
    """CIFAR-10, python-version release under --data-root/cifar-10-batches-py (50k/10k, 32x32)."""
    train, test, names = read_release(CIFAR10, data_root)
    return ImageDataset("cifar10", train, test, 10, mean=(0.4914, 0.4822, 0.4465),
                        std=(0.2470, 0.2435, 0.2616), class_names=names)


@DATASETS.register("cifar100")
def cifar100(data_root: Path) -> ImageDataset:
    """CIFAR-100 (fine labels), python-version release under --data-root/cifar-100-python."""
    train, test, names = read_release(CIFAR100, data_root)
    return ImageDataset("cifar100", train, test, 100, mean=(0.5071, 0.4865, 0.4409),
                        std=(0.2673, 0.2564, 0.2762), class_names=names)
