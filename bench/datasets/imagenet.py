"""ImageNet (ILSVRC2012, Russakovsky et al., IJCV 2015) and Tiny-ImageNet, streamed from disk.

`imagenet`, under `--data-root/imagenet/` (torchvision's ImageNet root):
- `val/<wnid>/*.JPEG`: the class-folder layout that torchvision's ImageFolder reads, or
- `val/ILSVRC2012_val_*.JPEG` (flat, as in the release tarball) with the devkit's labels:
  `ILSVRC2012_devkit_t12/data/meta.mat` (synsets: ILSVRC2012_ID -> WNID) and
  `ILSVRC2012_devkit_t12/data/ILSVRC2012_validation_ground_truth.txt` (one ILSVRC2012_ID per
  validation image, in file-name order);
- `train/<wnid>/*.JPEG` optionally (without it the training split is empty: evaluate given models).
Evaluation transform: resize the shorter side to 256 (bilinear, antialiased), centre crop 224,
torchvision's `Resize(256)` + `CenterCrop(224)` themselves. The class index is the position of the
WNID among the 1,000 sorted WNIDs, the order torchvision's pretrained models use.

`tinyimagenet`, under `--data-root/tiny-imagenet-200/`: `wnids.txt` (200 WNIDs), `words.txt`
(`<wnid>\\t<names>`), `train/<wnid>/images/*.JPEG` (500 per class), `val/images/*.JPEG` with
`val/val_annotations.txt` (`<file>\\t<wnid>\\t<box>`), all 64x64, read at their native size. Class
index: the sorted WNIDs (ImageFolder's order, and Tiny-ImageNet-C's folders').

Both are streamed (`files.ImageFiles`): nothing is decoded until a batch is read. The test split
is ordered class by class in turn (the first image of every class, then the second, ...), so the
first N images that `protocol.n_examples` takes are spread evenly over the classes: N = 5,000 on
ImageNet gives 5 per class, the size of RobustBench's ImageNet evaluation set (RobustBench ships
its own fixed list of 5,000 file names, which cannot be fetched here; this rule is the closest
reproducible choice and is recorded with the data fingerprint).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image

from ..errors import UserError
from .core import DATASETS, ImageDataset, Split
from .files import ImageFiles

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGENET_FOLDER, TINY_FOLDER = "imagenet", "tiny-imagenet-200"
DEVKIT = Path("ILSVRC2012_devkit_t12") / "data"
IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png")
_IMAGENET_FIX = ("restore the ILSVRC2012 validation set (ILSVRC2012_img_val.tar, and the devkit "
                 "for the flat layout) under --data-root/imagenet/")
_TINY_FIX = "re-extract tiny-imagenet-200.zip under --data-root"


def imagenet_transform(image: Image.Image) -> Image.Image:
    """torchvision's Resize(256) then CenterCrop(224) (ImageNet's standard evaluation view)."""
    from torchvision.transforms import CenterCrop, Resize

    return CenterCrop(224)(Resize(256)(image))


def _native(image: Image.Image) -> Image.Image:
    return image


def interleaved(files: Sequence[tuple[Path, int]]) -> list[tuple[Path, int]]:
    """Class by class in turn: each class's first file (by name), then each class's second, ..."""
    by_class: dict[int, list[Path]] = {}
    for path, label in sorted(files):
        by_class.setdefault(label, []).append(path)
    longest = max((len(v) for v in by_class.values()), default=0)
    return [(paths[i], label) for i in range(longest)
            for label, paths in sorted(by_class.items()) if i < len(paths)]


def _split(files: Sequence[tuple[Path, int]], side: int, transform, fix: str) -> Split:
    paths = [p for p, _ in files]
    labels = torch.tensor([label for _, label in files], dtype=torch.long)
    return Split(ImageFiles(paths, side, transform, fix), labels)


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def class_folders(folder: Path, wnids: list[str], fix: str, nested: str = "") -> list[tuple[Path, int]]:
    """(file, class index) of `folder/<wnid>/<nested>/*` for every WNID (each must exist)."""
    files = []
    for label, wnid in enumerate(wnids):
        where = folder / wnid / nested
        if not where.is_dir():
            raise UserError(f"{where} is missing; {fix}")
        files += [(path, label) for path in _images(where)]
    return files


# ---------------------------------------------------------------- ImageNet


@DATASETS.register("imagenet")
def imagenet(data_root: Path) -> ImageDataset:
    """ImageNet ILSVRC2012 (1,000 classes) from --data-root/imagenet, 224x224, streamed."""
    root = data_root / IMAGENET_FOLDER
    val = root / "val"
    if not val.is_dir():
        raise UserError(f"{val} not found; {_IMAGENET_FIX}, or pass --data-root DIR (the folder "
                        f"that contains {IMAGENET_FOLDER}/)")
    wnids = sorted(p.name for p in val.iterdir() if p.is_dir())
    if wnids:
        if len(wnids) != 1000:
            raise UserError(f"{val} has {len(wnids)} class folders, expected 1000; {_IMAGENET_FIX}")
        test = class_folders(val, wnids, _IMAGENET_FIX)
    else:
        wnids, test = _flat_validation(root, val)
    train = class_folders(root / "train", wnids, _IMAGENET_FIX) if (root / "train").is_dir() else []
    return ImageDataset("imagenet", _split(train, 224, imagenet_transform, _IMAGENET_FIX),
                        _split(interleaved(test), 224, imagenet_transform, _IMAGENET_FIX), 1000,
                        IMAGENET_MEAN, IMAGENET_STD, class_names=wnids)


def _flat_validation(root: Path, val: Path) -> tuple[list[str], list[tuple[Path, int]]]:
    """The flat release: labels from the devkit's ground truth and synset table."""
    meta, truth = root / DEVKIT / "meta.mat", root / DEVKIT / "ILSVRC2012_validation_ground_truth.txt"
    for path in (meta, truth):
        if not path.is_file():
            raise UserError(f"{val} holds no class folders and {path} is missing; {_IMAGENET_FIX} "
                            f"(ILSVRC2012_devkit_t12.tar.gz for the flat layout)")
    id_to_wnid = devkit_synsets(meta)
    wnids = sorted(id_to_wnid.values())
    index = {wnid: i for i, wnid in enumerate(wnids)}
    lines = [line.strip() for line in truth.read_text().splitlines() if line.strip()]
    images = _images(val)
    if len(lines) != len(images):
        raise UserError(f"{truth} lists {len(lines)} labels but {val} holds {len(images)} images; "
                        f"{_IMAGENET_FIX}")
    files = []
    for number, (path, line) in enumerate(zip(images, lines), start=1):
        if not line.isdigit() or int(line) not in id_to_wnid:
            raise UserError(f"{truth}, line {number}: {line!r} is not an ILSVRC2012_ID of "
                            f"meta.mat; {_IMAGENET_FIX}")
        files.append((path, index[id_to_wnid[int(line)]]))
    return wnids, files


def devkit_synsets(meta: Path) -> dict[int, str]:
    """ILSVRC2012_ID -> WNID of the 1,000 leaf synsets (num_children 0) of the devkit's meta.mat,
    read as torchvision's `parse_meta_mat` reads it."""
    from scipy.io import loadmat

    try:
        synsets = loadmat(str(meta), squeeze_me=True)["synsets"]
        rows = [(int(s[0]), str(s[1]), int(s[4])) for s in synsets]
    except (ValueError, KeyError, IndexError, TypeError, OSError) as err:
        raise UserError(f"{meta} is not the devkit's synset table ({err}); {_IMAGENET_FIX}") from None
    leaves = {ilsvrc_id: wnid for ilsvrc_id, wnid, children in rows if children == 0}
    if len(leaves) != 1000:
        raise UserError(f"{meta} lists {len(leaves)} leaf synsets, expected 1000; {_IMAGENET_FIX}")
    return leaves


# ---------------------------------------------------------------- Tiny-ImageNet


@DATASETS.register("tinyimagenet")
def tinyimagenet(data_root: Path) -> ImageDataset:
    """Tiny-ImageNet (200 classes, 64x64) from --data-root/tiny-imagenet-200, streamed."""
    root = data_root / TINY_FOLDER
    if not root.is_dir():
        raise UserError(f"{root} not found; {_TINY_FIX}, or pass --data-root DIR (the folder "
                        f"that contains {TINY_FOLDER}/)")
    wnids = sorted(_lines(root / "wnids.txt"))
    if len(wnids) != 200 or len(set(wnids)) != 200:
        raise UserError(f"{root / 'wnids.txt'} lists {len(set(wnids))} distinct WNIDs, expected "
                        f"200; {_TINY_FIX}")
    train = class_folders(root / "train", wnids, _TINY_FIX, nested="images")
    test = _tiny_validation(root, {wnid: i for i, wnid in enumerate(wnids)})
    return ImageDataset("tinyimagenet", _split(train, 64, _native, _TINY_FIX),
                        _split(interleaved(test), 64, _native, _TINY_FIX), 200, IMAGENET_MEAN,
                        IMAGENET_STD, class_names=_names(root / "words.txt", wnids))


def _tiny_validation(root: Path, index: dict[str, int]) -> list[tuple[Path, int]]:
    """`val/images/*` labelled by `val/val_annotations.txt` (file, WNID, box)."""
    annotations, images = root / "val" / "val_annotations.txt", root / "val" / "images"
    files = []
    for number, line in enumerate(_lines(annotations), start=1):
        parts = line.split("\t")
        if len(parts) < 2 or parts[1] not in index:
            raise UserError(f"{annotations}, line {number}: expected '<file>\\t<wnid of "
                            f"wnids.txt>\\t<box>', got {line!r}; {_TINY_FIX}")
        path = images / parts[0]
        if not path.is_file():
            raise UserError(f"{path} (listed in val_annotations.txt) is missing; {_TINY_FIX}")
        files.append((path, index[parts[1]]))
    if not files:
        raise UserError(f"{annotations} lists no validation image; {_TINY_FIX}")
    return files


def _lines(path: Path) -> list[str]:
    try:
        return [line.strip() for line in path.read_text(encoding="utf-8").splitlines()
                if line.strip()]
    except FileNotFoundError:
        raise UserError(f"{path} is missing; {_TINY_FIX}") from None


def _names(words: Path, wnids: list[str]) -> list[str]:
    """Each WNID's first name in words.txt (the WNID itself where words.txt lacks it)."""
    table = {}
    if words.is_file():
        for line in words.read_text(encoding="utf-8").splitlines():
            wnid, _, names = line.partition("\t")
            table[wnid.strip()] = names.split(",")[0].strip()
    return [table.get(wnid) or wnid for wnid in wnids]
