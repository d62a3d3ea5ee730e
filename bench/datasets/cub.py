"""CUB-200-2011 (Wah et al., Caltech-UCSD Birds, 2011) from its canonical folder.

Layout under `--data-root`: `CUB_200_2011/` with `images.txt` (`<id> <relative path>`),
`image_class_labels.txt` (`<id> <class id>`), `train_test_split.txt` (`<id> <1 train | 0 test>`),
`classes.txt` (`<class id> <name>`) and `images/<class name>/<file>.jpg`. Ids are 1-based; class
ids 1..200 become labels 0..199. Official split: 5,994 train / 5,794 test images.

Images are stored at 256x256 for the 224-px protocol of GLICO (Azuri & Weinshall, ICPR 2020):
the shorter side is resized to 256 (bilinear, antialiased) and the central 256x256 square kept.
Training crops 224 at random (`Recipe.crop_size`), evaluation takes the central 224 crop, which is
exactly GLICO's Resize(256) + CenterCrop(224). Deviation: GLICO's RandomCrop(224) after Resize(256)
can reach the ends of the longer side; here training crops stay inside the central square.

Decoding takes minutes, so the decoded images are cached as one `.npy` file under `datasets/` of
the cache folder (`--cache-dir`, else `$RBL_CACHE`, default `~/.cache/robustbench-lite`), keyed by a fingerprint of
the index files and of every image file's size and modification time.
"""

from __future__ import annotations

import hashlib
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from tqdm.auto import tqdm

from ..atomic import ensure_folder, write_atomic
from ..cache import default_cache_dir
from .core import DATASETS, ImageDataset, Split
from ..errors import UserError

log = logging.getLogger(__name__)

FOLDER = "CUB_200_2011"
STORED_SIZE = 256
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_CACHE_FORMAT = 1
_FIX = f"restore it from the {FOLDER} archive (CUB_200_2011.tgz)"


@dataclass(frozen=True)
class CubIndex:
    """The parsed index files: one entry per image, in image-id order."""

    paths: list[str]  # relative to images/
    labels: np.ndarray  # int64, 0-based
    is_train: np.ndarray  # bool
    class_names: list[str]


def read_index(root: Path) -> CubIndex:
    """Parse and cross-check the four index files of a CUB_200_2011 folder."""
    classes = _id_table(root / "classes.txt")
    names = [classes[i] for i in range(1, len(classes) + 1) if i in classes]
    if len(names) != len(classes):
        raise UserError(f"{root / 'classes.txt'}: class ids must be 1..{len(classes)}; {_FIX}")
    images = _id_table(root / "images.txt")
    labels = _id_table(root / "image_class_labels.txt")
    split = _id_table(root / "train_test_split.txt")
    ids = sorted(images)
    for path, table in (("image_class_labels.txt", labels), ("train_test_split.txt", split)):
        if set(table) != set(ids):
            missing = sorted(set(ids) ^ set(table))[:3]
            raise UserError(f"{root / path} and images.txt list different image ids (e.g. "
                            f"{missing}); {_FIX}")
    class_ids = np.array([_int(labels[i], root / "image_class_labels.txt", i) for i in ids])
    if ids and (class_ids.min() < 1 or class_ids.max() > len(names)):
        raise UserError(f"{root / 'image_class_labels.txt'}: class ids must lie in 1..{len(names)} "
                        f"(classes.txt); {_FIX}")
    flags = [split[i] for i in ids]
    if set(flags) - {"0", "1"}:
        raise UserError(f"{root / 'train_test_split.txt'}: the second column must be 1 (train) or "
                        f"0 (test); {_FIX}")
    index = CubIndex([images[i] for i in ids], class_ids - 1, np.array(flags) == "1", names)
    if index.is_train.all() or not index.is_train.any():
        raise UserError(f"{root / 'train_test_split.txt'} must mark both training (1) and test (0) "
                        f"images; {_FIX}")
    _check_folders(root, index)
    return index


def _id_table(path: Path) -> dict[int, str]:
    """`<positive int id> <value>` lines as {id: value}; a clear error for anything else."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise UserError(f"{path} is missing; {_FIX}") from None
    table: dict[int, str] = {}
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        parts = line.split(maxsplit=1)
        if len(parts) != 2 or not parts[0].isdigit() or int(parts[0]) < 1 or int(parts[0]) in table:
            raise UserError(f"{path}, line {number}: expected '<id> <value>' with a new positive "
                            f"id, got {line!r}; {_FIX}")
        table[int(parts[0])] = parts[1].strip()
    return table


def _int(text: str, path: Path, image_id: int) -> int:
    if not text.isdigit():
        raise UserError(f"{path}: image {image_id} has class {text!r}, not an integer id; {_FIX}")
    return int(text)


def _check_folders(root: Path, index: CubIndex) -> None:
    """Each image lies in the folder of its class name (images/<class name>/...)."""
    for image_id, (path, label) in enumerate(zip(index.paths, index.labels), start=1):
        folder = Path(path).parent.name
        if folder and folder != index.class_names[label]:
            raise UserError(f"{root / 'image_class_labels.txt'}: image {image_id} ({path}) is labelled "
                            f"{index.class_names[label]!r} but lies in folder {folder!r}; {_FIX}")


def decode(path: Path, size: int = STORED_SIZE) -> np.ndarray:
    """One image as (3, size, size) uint8 RGB: shorter side resized to `size`, centre square kept."""
    try:
        with Image.open(path) as image:
            image = image.convert("RGBA") if image.mode == "P" else image
            image = image.convert("RGB")
            scale = size / min(image.size)
            width, height = (max(size, round(side * scale)) for side in image.size)
            image = image.resize((width, height), Image.BILINEAR)
            left, top = (width - size) // 2, (height - size) // 2
            image = image.crop((left, top, left + size, top + size))
            return np.asarray(image, dtype=np.uint8).transpose(2, 0, 1).copy()
    except FileNotFoundError:
        raise UserError(f"image {path} is missing; {_FIX}") from None
    except (UnidentifiedImageError, OSError) as err:
        raise UserError(f"image {path} cannot be decoded ({err}); {_FIX}") from None


def fingerprint(root: Path, index: CubIndex, size: int) -> str:
    """Hash of the index files and of every image's size and mtime (not its bytes: fast)."""
    digest = hashlib.sha256(f"{_CACHE_FORMAT}:{size}".encode())
    for name in ("images.txt", "image_class_labels.txt", "train_test_split.txt", "classes.txt"):
        digest.update((root / name).read_bytes())
    for relative in index.paths:
        try:
            stat = (root / "images" / relative).stat()
        except FileNotFoundError:
            raise UserError(f"image {root / 'images' / relative} (listed in images.txt) is missing; "
                            f"{_FIX}") from None
        digest.update(f"{relative}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:16]


def dataset_cache_dir(cache_dir: Path | None = None) -> Path:
    """Where decoded datasets are kept: `datasets/` of the cache folder (--cache-dir, else
    $RBL_CACHE or ~/.cache/robustbench-lite)."""
    return (cache_dir if cache_dir is not None else default_cache_dir()) / "datasets"


def decoded_images(root: Path, index: CubIndex, size: int = STORED_SIZE,
                   cache_dir: Path | None = None) -> np.ndarray:
    """All images (N, 3, size, size) uint8 in image-id order, from the cache when present."""
    cached = dataset_cache_dir(cache_dir) / f"cub200-{fingerprint(root, index, size)}.npy"
    shape = (len(index.paths), 3, size, size)
    if cached.exists():
        try:
            array = np.load(cached, mmap_mode="r")
            if array.shape == shape and array.dtype == np.uint8:
                return array
            log.warning("the CUB image cache %s holds %s %s, not %s uint8; decoding again",
                        cached, array.shape, array.dtype, shape)
        except (OSError, ValueError) as err:
            log.warning("the CUB image cache %s is damaged (%s); decoding again", cached, err)
    out = np.empty(shape, dtype=np.uint8)
    paths = [root / "images" / p for p in index.paths]
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        decoded = pool.map(lambda p: decode(p, size), paths)
        for i, image in enumerate(tqdm(decoded, total=len(paths), desc="decode CUB-200-2011",
                                       unit="img", disable=None, leave=False)):
            out[i] = image
    _save_atomically(cached, out)
    return out


def _save_atomically(path: Path, array: np.ndarray) -> None:
    """Cache the decoded images; a cache folder that cannot be written is only a warning."""
    try:
        ensure_folder(path.parent, "the CUB image cache", "decoding again next time")
        write_atomic(path, lambda handle: np.save(handle, array), hint="decoding again next time")
    except (OSError, UserError) as err:
        log.warning("not caching decoded CUB images in %s (%s)", path.parent, err)


@DATASETS.register("cub200")
def cub200(data_root: Path, cache_dir: Path | None = None) -> ImageDataset:
    """CUB-200-2011 birds (200 classes, official split) from --data-root/CUB_200_2011, 256x256 RGB."""
    root = data_root / FOLDER
    if not root.is_dir():
        raise UserError(f"{root} not found; unpack CUB_200_2011.tgz under {data_root} or pass "
                        f"--data-root DIR (the folder that contains {FOLDER}/)")
    index = read_index(root)
    images = decoded_images(root, index, cache_dir=cache_dir)
    labels = torch.from_numpy(index.labels)

    def split(mask: np.ndarray) -> Split:
        rows = np.flatnonzero(mask)
        return Split(torch.from_numpy(np.ascontiguousarray(images[rows])), labels[rows])

    return ImageDataset("cub200", split(index.is_train), split(~index.is_train),
                        len(index.class_names), IMAGENET_MEAN, IMAGENET_STD,
                        class_names=index.class_names, extra={"stored_size": STORED_SIZE})
