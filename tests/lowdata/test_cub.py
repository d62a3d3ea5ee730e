"""CUB-200-2011 loader: ids, split, class mapping, RGB conversion, centre square, cache, errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from robustbench_lite.bench.datasets import cub
from robustbench_lite.bench.datasets import load_dataset
from robustbench_lite.bench.errors import UserError

CLASSES = ["001.Black_footed_Albatross", "002.Laysan_Albatross", "003.Sooty_Albatross"]
PER_CLASS = 6  # images 1-4 of a class are training images, 5-6 test images
GRAY_ID = 8  # a grayscale JPEG (class 2)
BANDS_ID = 17  # a 96x32 test image of class 3 with red | green | blue thirds


def colour(image_id: int) -> tuple[int, int, int]:
    """A distinct flat colour per image, so decoded pixels identify their source file."""
    return (40 + 11 * image_id, 200 - 9 * image_id, 60 + 5 * (image_id % 7))


def write_cub(root: Path) -> Path:
    """A 3-class CUB_200_2011 folder in the canonical layout; listed in shuffled line order."""
    folder = root / cub.FOLDER
    images, labels, split = [], [], []
    for c, name in enumerate(CLASSES, start=1):
        (folder / "images" / name).mkdir(parents=True)
        for j in range(PER_CLASS):
            image_id = (c - 1) * PER_CLASS + j + 1
            relative = f"{name}/{name.split('.')[1]}_{image_id:04d}.jpg"
            _image(image_id).save(folder / "images" / relative, quality=95)
            images.append(f"{image_id} {relative}")
            labels.append(f"{image_id} {c}")
            split.append(f"{image_id} {int(j < 4)}")
    order = np.random.default_rng(0).permutation(len(images))  # ids, not line order, count
    _write(folder / "images.txt", [images[i] for i in order])
    _write(folder / "image_class_labels.txt", labels)
    _write(folder / "train_test_split.txt", split[::-1])
    _write(folder / "classes.txt", [f"{c} {n}" for c, n in enumerate(CLASSES, start=1)])
    return folder


def _image(image_id: int) -> Image.Image:
    if image_id == GRAY_ID:
        return Image.new("L", (30, 40), 90)
    if image_id == BANDS_ID:
        bands = np.zeros((32, 96, 3), np.uint8)
        bands[:, :32, 0] = bands[:, 32:64, 1] = bands[:, 64:, 2] = 255
        return Image.fromarray(bands)
    return Image.new("RGB", (24 + image_id, 20 + 2 * image_id), colour(image_id))


def _write(path: Path, lines: list[str]) -> None:
    path.write_text("\n".join(lines) + "\n")


@pytest.fixture
def cub_root(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("RBL_CACHE", str(tmp_path / "cache"))
    write_cub(tmp_path / "data")
    return tmp_path / "data"


def test_ids_split_and_labels_follow_the_index_files(cub_root):
    ds = load_dataset("cub200", cub_root)
    assert ds.num_classes == 3 and ds.class_names == CLASSES
    assert (len(ds.train), len(ds.test)) == (12, 6)
    assert ds.train.y.tolist() == [0] * 4 + [1] * 4 + [2] * 4  # class ids 1..3 -> 0..2, id order
    assert ds.test.y.tolist() == [0, 0, 1, 1, 2, 2]
    assert ds.train.x.shape == (12, 3, 256, 256) and ds.train.x.dtype == torch.uint8
    assert ds.mean == cub.IMAGENET_MEAN and ds.std == cub.IMAGENET_STD
    train_ids = [i for i in range(1, 19) if (i - 1) % PER_CLASS < 4]
    test_ids = [i for i in range(1, 19) if (i - 1) % PER_CLASS >= 4]
    for split, ids in ((ds.train, train_ids), (ds.test, test_ids)):
        for x, image_id in zip(split.x, ids):
            if image_id not in (GRAY_ID, BANDS_ID):
                got = x.float().mean((1, 2))
                assert torch.allclose(got, torch.tensor(colour(image_id)).float(), atol=3), image_id


def test_grayscale_becomes_three_equal_channels(cub_root):
    ds = load_dataset("cub200", cub_root)
    gray = ds.train.x[5]  # image 8 is the 2nd training image of class 2
    assert torch.equal(gray[0], gray[1]) and torch.equal(gray[1], gray[2])
    assert abs(gray.float().mean().item() - 90) < 2


def test_shorter_side_resize_keeps_the_centre_square(cub_root):
    ds = load_dataset("cub200", cub_root)
    bands = ds.test.x[4].float()  # image 17: 96x32 -> 768x256 -> central 256 = the green third
    centre = bands[:, 16:-16, 16:-16].mean((1, 2))
    assert centre[1] > 250 and centre[0] < 5 and centre[2] < 5


def test_palette_and_rgba_images_decode_to_rgb(tmp_path):
    palette = Image.new("RGB", (20, 30), (10, 200, 30)).convert("P")
    palette.save(tmp_path / "p.png")
    Image.new("RGBA", (30, 20), (200, 10, 30, 128)).save(tmp_path / "a.png")
    for name, expected in (("p.png", (10, 200, 30)), ("a.png", (200, 10, 30))):
        out = cub.decode(tmp_path / name, 16)
        assert out.shape == (3, 16, 16)
        assert np.abs(out.reshape(3, -1).mean(1) - np.array(expected)).max() < 3


def test_second_load_comes_from_the_cache_and_edits_invalidate_it(cub_root, monkeypatch):
    first = load_dataset("cub200", cub_root)
    monkeypatch.setattr(cub, "decode", lambda *a: pytest.fail("decoded again despite the cache"))
    second = load_dataset("cub200", cub_root)
    assert torch.equal(first.train.x, second.train.x) and torch.equal(first.test.x, second.test.x)
    image = next((cub_root / cub.FOLDER / "images" / CLASSES[0]).iterdir())
    Image.new("RGB", (50, 50), (1, 2, 3)).save(image)
    with pytest.raises(pytest.fail.Exception):
        load_dataset("cub200", cub_root)


def test_the_decoded_images_are_kept_under_the_cache_folder_asked_for(cub_root, tmp_path):
    """--cache-dir holds the decoded CUB images too, not only $RBL_CACHE."""
    load_dataset("cub200", cub_root, cache_dir=tmp_path / "asked")
    assert len(list((tmp_path / "asked" / "datasets").glob("cub200-*.npy"))) == 1
    assert not (cub_root.parent / "cache").exists()


def test_a_truncated_image_cache_is_decoded_again(cub_root, caplog):
    first = load_dataset("cub200", cub_root)
    (cached,) = (cub_root.parent / "cache" / "datasets").glob("cub200-*.npy")
    cached.write_bytes(cached.read_bytes()[:1000])
    again = load_dataset("cub200", cub_root)
    assert torch.equal(first.train.x, again.train.x) and "decoding again" in caplog.text
    assert np.load(cached).shape[0] == len(first.train) + len(first.test)  # rewritten whole


def _break(folder: Path, name: str, edit) -> None:
    path = folder / name
    path.write_text(edit(path.read_text()))


@pytest.mark.parametrize("name, edit, message", [
    ("classes.txt", lambda t: t.replace("2 002", "x 002"), "classes.txt, line 2"),
    ("images.txt", lambda t: t + "garbage\n", "images.txt, line 19"),
    ("image_class_labels.txt", lambda t: t.replace("7 2\n", "7 9\n"), "class ids must lie in 1..3"),
    ("image_class_labels.txt", lambda t: t.replace("7 2\n", "7 1\n"), "lies in folder"),
    ("image_class_labels.txt", lambda t: t.replace("7 2\n", ""), "list different image ids"),
    ("train_test_split.txt", lambda t: t.replace("3 1\n", "3 yes\n"), "1 (train) or 0 (test)"),
])
def test_malformed_index_files_are_user_errors_naming_the_file(cub_root, name, edit, message):
    _break(cub_root / cub.FOLDER, name, edit)
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_dataset("cub200", cub_root)


def test_missing_pieces_are_user_errors(cub_root, tmp_path):
    with pytest.raises(UserError, match="CUB_200_2011 not found"):
        load_dataset("cub200", tmp_path / "elsewhere")
    folder = cub_root / cub.FOLDER
    image = folder / "images" / CLASSES[1] / "Laysan_Albatross_0010.jpg"
    image.write_bytes(b"not a jpeg")
    with pytest.raises(UserError, match="Laysan_Albatross_0010.jpg cannot be decoded"):
        load_dataset("cub200", cub_root)
    image.unlink()
    with pytest.raises(UserError, match="Laysan_Albatross_0010.jpg .*is missing"):
        load_dataset("cub200", cub_root)
    (folder / "classes.txt").unlink()
    with pytest.raises(UserError, match="classes.txt is missing"):
        load_dataset("cub200", cub_root)
