"""ImageNet and Tiny-ImageNet: fixtures written in the releases' exact layouts (class folders, the
flat validation set with the devkit's meta.mat and ground truth, tiny-imagenet-200 with
val_annotations.txt, ImageNet-C and Tiny-ImageNet-C trees), read streamed, measured by the
corruption protocol; malformed folders are one-line errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from robustbench_lite.bench.datasets import load_dataset
from robustbench_lite.bench.datasets.files import ImageFiles
from robustbench_lite.bench.datasets.imagenet import interleaved
from robustbench_lite.bench.errors import UserError
from robustbench_lite.bench.protocol import RunContext
from robustbench_lite.bench.recipes import Recipe
from robustbench_lite.methods.erm import Erm
from robustbench_lite.protocols.corruption import Corruption

WNIDS_1000 = [f"n{10_000_000 + 7919 * i:08d}" for i in range(1000)]
WNIDS_200 = WNIDS_1000[::5]


def photo(label: int, size: tuple[int, int]) -> Image.Image:
    """A grey picture that names its class: the top half's level is 8 x (label // 32) + 4, the
    bottom half's 8 x (label % 32) + 4 (grey survives JPEG within a level or two)."""
    width, height = size
    image = Image.new("RGB", size, (8 * (label % 32) + 4,) * 3)
    image.paste((8 * (label // 32) + 4,) * 3, (0, 0, width, height // 2))
    return image


class ColourOracle(torch.nn.Module):
    """Reads the class back from the grey levels of the picture's two halves."""

    def __init__(self, classes: int):
        super().__init__()
        self.classes, self.dummy = classes, torch.nn.Parameter(torch.zeros(1))

    def forward(self, x):
        h, w = x.shape[-2:]

        def level(row: int) -> torch.Tensor:
            patch = x[..., row - 2:row + 2, w // 2 - 4:w // 2 + 4].mean((1, 2, 3)) * 255
            return ((patch - 4) / 8).round().clamp(0, 31)

        label = (level(h // 4) * 32 + level(3 * h // 4)).long().clamp(0, self.classes - 1)
        return torch.nn.functional.one_hot(label, self.classes).float() + 0 * self.dummy


def write_tiny_imagenet(root: Path, train_per_class: int = 1, val_per_class: int = 2) -> Path:
    """tiny-imagenet-200 as released: wnids.txt in the release's (unsorted) order, words.txt,
    train/<wnid>/images/<wnid>_<i>.JPEG, val/images/val_<i>.JPEG and val_annotations.txt."""
    base = root / "tiny-imagenet-200"
    shuffled = list(reversed(WNIDS_200))
    (base / "val" / "images").mkdir(parents=True)
    (base / "wnids.txt").write_text("\n".join(shuffled) + "\n")
    (base / "words.txt").write_text("".join(f"{w}\tbird {i}, fowl\n" for i, w in
                                            enumerate(WNIDS_1000)))
    for label, wnid in enumerate(WNIDS_200):
        folder = base / "train" / wnid / "images"
        folder.mkdir(parents=True)
        for i in range(train_per_class):
            photo(label, (64, 64)).save(folder / f"{wnid}_{i}.JPEG", quality=95)
        (base / "train" / wnid / f"{wnid}_boxes.txt").write_text("")
    lines, number = [], 0
    for i in range(val_per_class):
        for label, wnid in reversed(list(enumerate(WNIDS_200))):
            photo(label, (64, 64)).save(base / "val" / "images" / f"val_{number}.JPEG", quality=95)
            lines.append(f"val_{number}.JPEG\t{wnid}\t0\t0\t63\t63")
            number += 1
    (base / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    return root


def write_imagenet_folders(root: Path, per_class: int = 1) -> Path:
    """imagenet/val/<wnid>/ILSVRC2012_val_<n>.JPEG, photographs of ImageNet's typical 500x375."""
    number = 0
    for label, wnid in enumerate(WNIDS_1000):
        folder = root / "imagenet" / "val" / wnid
        folder.mkdir(parents=True)
        for _ in range(per_class):
            number += 1
            photo(label, (500, 375)).save(folder / f"ILSVRC2012_val_{number:08d}.JPEG", quality=90)
    return root


def write_imagenet_flat(root: Path) -> Path:
    """imagenet/val/ILSVRC2012_val_<n>.JPEG (flat) with the devkit's meta.mat and ground truth:
    ILSVRC2012_IDs in an order that is not the WNIDs' sorted order, and non-leaf synsets."""
    from scipy.io import savemat

    val, devkit = root / "imagenet" / "val", root / "imagenet" / "ILSVRC2012_devkit_t12" / "data"
    val.mkdir(parents=True)
    devkit.mkdir(parents=True)
    ids = {wnid: 1000 - i for i, wnid in enumerate(WNIDS_1000)}  # ILSVRC2012_ID of each leaf
    dtype = [("ILSVRC2012_ID", "O"), ("WNID", "O"), ("words", "O"), ("gloss", "O"),
             ("num_children", "O"), ("children", "O"), ("wordnet_height", "O"),
             ("num_train_images", "O")]
    rows = [(ids[w], w, f"class {w}", "", 0, np.zeros(0), 0, 1300) for w in WNIDS_1000]
    rows += [(1000 + k, f"n0000000{k}", "a parent", "", 3, np.array([1, 2, 3]), 1, 0)
             for k in range(1, 4)]
    savemat(str(devkit / "meta.mat"), {"synsets": np.array(rows, dtype=dtype)})
    truth = []
    for number in range(1, 1001):
        label = (number * 37) % 1000
        photo(label, (375, 500)).save(val / f"ILSVRC2012_val_{number:08d}.JPEG", quality=90)
        truth.append(str(ids[WNIDS_1000[label]]))
    (devkit / "ILSVRC2012_validation_ground_truth.txt").write_text("\n".join(truth) + "\n")
    return root


def write_c_tree(root: Path, folder: str, wnids: list[str], side: int, corruption: str,
                 severities: tuple[int, ...]) -> None:
    """<folder>/<corruption>/<severity>/<wnid>/*.JPEG, one image per class (the releases' layout)."""
    for severity in severities:
        for label, wnid in enumerate(wnids):
            where = root / folder / corruption / str(severity) / wnid
            where.mkdir(parents=True)
            photo(label, (side, side)).save(where / f"img_{label}.JPEG", quality=95)


def accuracy(model, split) -> float:
    x = split.x[:]
    return (model(x.float() / 255).argmax(1) == split.y).float().mean().item()


def context(dataset, data_root: Path, tmp_path: Path, classes: int) -> RunContext:
    return RunContext(Erm(), "oracle", dataset, Recipe(eval_batch_size=64), 0, torch.device("cpu"),
                      tmp_path / "cache", data_root, tmp_path / "results", progress=False,
                      given=ColourOracle(classes))


def test_tiny_imagenet_is_read_streamed_with_sorted_wnid_labels(tmp_path):
    data = write_tiny_imagenet(tmp_path / "data")
    ds = load_dataset("tinyimagenet", data)
    assert isinstance(ds.test.x, ImageFiles) and ds.num_classes == 200 and ds.image_size == 64
    assert (len(ds.train), len(ds.test)) == (200, 400)
    assert ds.class_names[0] == "bird 0"  # words.txt's first name of the first sorted WNID
    assert ds.test.y[:200].tolist() == list(range(200))  # classes in turn: any prefix is balanced
    batch = ds.test.x[10:20]
    assert batch.shape == (10, 3, 64, 64) and batch.dtype == torch.uint8
    assert accuracy(ColourOracle(200), ds.test) == 1.0  # labels follow val_annotations.txt
    assert accuracy(ColourOracle(200), ds.train) == 1.0
    picked = ds.test.x[torch.tensor([5, 205])]
    assert torch.equal(picked, torch.stack([ds.test.x[5], ds.test.x[205]]))


@pytest.fixture(scope="module")
def imagenet_data(tmp_path_factory) -> Path:
    """One ImageNet validation folder (1,000 classes, one photograph each) for the reading tests."""
    return write_imagenet_folders(tmp_path_factory.mktemp("imagenet") / "data")


def test_imagenet_class_folders_give_the_standard_224_view(imagenet_data):
    data = imagenet_data
    ds = load_dataset("imagenet", data)
    assert ds.image_size == 224 and len(ds.test) == 1000 and len(ds.train) == 0
    from torchvision.transforms import CenterCrop, Resize

    path = ds.test.x.paths[3]
    with Image.open(path) as image:
        expected = np.asarray(CenterCrop(224)(Resize(256)(image.convert("RGB"))))
    assert np.array_equal(ds.test.x[3].permute(1, 2, 0).numpy(), expected)
    assert accuracy(ColourOracle(1000), ds.test) == 1.0
    assert ds.test.fingerprint() == load_dataset("imagenet", data).test.fingerprint()


def test_the_flat_validation_set_takes_its_labels_from_the_devkit(tmp_path):
    data = write_imagenet_flat(tmp_path / "data")
    ds = load_dataset("imagenet", data)
    assert len(ds.test) == 1000 and ds.class_names == sorted(WNIDS_1000)
    assert accuracy(ColourOracle(1000), ds.test) == 1.0
    assert ds.test.y.tolist() == list(range(1000))  # one per class, in class order


def test_interleaving_takes_every_class_in_turn():
    files = [(Path(f"{c}_{i}"), c) for c in (2, 0, 1) for i in range(3 if c else 1)]
    assert [label for _, label in interleaved(files)] == [0, 1, 2, 1, 2, 1, 2]


@pytest.mark.slow
def test_imagenet_c_and_tiny_imagenet_c_trees_are_measured_by_the_corruption_protocol(tmp_path):
    data = write_imagenet_folders(tmp_path / "data")
    write_c_tree(data, "ImageNet-C", WNIDS_1000, 224, "fog", (1, 2))
    write_tiny_imagenet(data)
    write_c_tree(data, "Tiny-ImageNet-C", WNIDS_200, 64, "fog", (1, 2))
    config = Corruption.Config(corruptions="fog", severities=(1, 2), reference="erm",
                               figure=False)
    for name, classes in (("imagenet", 1000), ("tinyimagenet", 200)):
        ctx = context(load_dataset(name, data), data, tmp_path / name, classes)
        rows = {(m.metric, m.cell.get("severity")): m for m in Corruption(config).run(ctx)}
        assert rows["canonical_files", None].value == 1.0
        assert rows["accuracy", 1].value == 1.0 and rows["accuracy", 1].n == classes
    assert not (tmp_path / "imagenet" / "cache").exists()  # read, never generated


def test_a_generated_imagenet_size_set_streams_from_the_files(imagenet_data, tmp_path):
    """No ImageNet-C folder: the corruption protocol generates from the streamed split."""
    data = imagenet_data
    ds = load_dataset("imagenet", data)
    ctx = context(ds, data, tmp_path, 1000)
    config = Corruption.Config(corruptions="brightness", severities=(1, 2, 3, 4, 5),
                               n_examples=12, reference="erm", figure=False)
    rows = {(m.metric, m.cell.get("severity")): m for m in Corruption(config).run(ctx)}
    assert rows["canonical_files", None].value == 0.0 and rows["accuracy", 1].n == 12
    (folder,) = (tmp_path / "cache" / "corruptions").iterdir()
    assert np.load(folder / "brightness.npy", mmap_mode="r").shape == (60, 224, 224, 3)


@pytest.mark.parametrize("breakage,message", [
    (lambda base: (base / "val" / "val_annotations.txt").write_text("val_0.JPEG\tn99999999\t0\n"),
     "val_annotations.txt, line 1"),
    (lambda base: (base / "wnids.txt").write_text("n00000001\n"), "expected 200"),
    (lambda base: (base / "val" / "images" / "val_3.JPEG").unlink(), "val_3.JPEG .* is missing"),
])
def test_a_malformed_tiny_imagenet_is_a_one_line_error(tmp_path, breakage, message):
    data = write_tiny_imagenet(tmp_path / "data", val_per_class=1)
    breakage(data / "tiny-imagenet-200")
    with pytest.raises(UserError, match=message) as err:
        load_dataset("tinyimagenet", data)
    assert "\n" not in str(err.value)


def test_malformed_imagenet_folders_are_one_line_errors(tmp_path):
    with pytest.raises(UserError, match="imagenet/val not found"):
        load_dataset("imagenet", tmp_path)
    for wnid in WNIDS_1000[:999]:
        (tmp_path / "imagenet" / "val" / wnid).mkdir(parents=True)
    with pytest.raises(UserError, match="has 999 class folders, expected 1000"):
        load_dataset("imagenet", tmp_path)
    flat = tmp_path / "flat"
    (flat / "imagenet" / "val").mkdir(parents=True)
    photo(0, (300, 300)).save(flat / "imagenet" / "val" / "ILSVRC2012_val_00000001.JPEG")
    with pytest.raises(UserError, match="meta.mat is missing"):
        load_dataset("imagenet", flat)
    broken = write_imagenet_folders(tmp_path / "broken")
    victim = next((broken / "imagenet" / "val" / WNIDS_1000[0]).iterdir())
    victim.write_bytes(b"not a jpeg")
    ds = load_dataset("imagenet", broken)
    with pytest.raises(UserError, match="cannot be decoded") as err:
        ds.test.x[:1]
    assert "\n" not in str(err.value)


def test_training_reads_a_streamed_split_batch_by_batch(tmp_path):
    from robustbench_lite.bench.train import Trainer, TrainJob

    ds = load_dataset("tinyimagenet", write_tiny_imagenet(tmp_path / "data"))
    job = TrainJob(Erm(), "erm", ds, Recipe(backbone="tiny", epochs=1, batch_size=50), seed=0)
    trainer = Trainer(job, job.build_model(), torch.device("cpu"), progress=False)
    losses = trainer.first_steps(2)
    assert len(losses) == 2 and all(torch.isfinite(v["ce"]) for v in losses)
