"""CIFAR loader: the official python-version layout, CHW pixels, validation, safe unpickling."""

from __future__ import annotations

import os
import pickle
import struct
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from robustbench_lite.bench.datasets import cifar
from robustbench_lite.bench.datasets import load_dataset
from robustbench_lite.bench.errors import UserError

ROWS = 3  # images per batch file


class Py2Pickler(pickle._Pickler):
    """Writes like the release's Python 2 pickler: str and bytes as `str`, numpy.core names."""

    dispatch = dict(pickle._Pickler.dispatch)

    def save_py2_str(self, obj: str | bytes) -> None:
        raw = obj.encode("latin1") if isinstance(obj, str) else obj
        if len(raw) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(raw)]) + raw)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(raw)) + raw)
        self.memoize(obj)

    dispatch[str] = save_py2_str
    dispatch[bytes] = save_py2_str

    def save_global(self, obj: object, name: str | None = None) -> None:
        if getattr(obj, "__module__", None) == "numpy._core.multiarray":
            self.write(pickle.GLOBAL + f"numpy.core.multiarray\n{obj.__name__}\n".encode())
            self.memoize(obj)
        else:
            super().save_global(obj, name)


def dump(path: Path, obj: object) -> None:
    with path.open("wb") as file:
        Py2Pickler(file, protocol=2).dump(obj)


def pixels(seed: int, rows: int = ROWS) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (rows, 3072), dtype=np.uint8)


def batch(seed: int, labels: list[int], label_key: str = "labels") -> dict:
    return {"batch_label": f"batch {seed}", label_key: labels, "data": pixels(seed, len(labels)),
            "filenames": [f"img_{seed}_{i}.png" for i in range(len(labels))]}


def write_cifar10(root: Path) -> Path:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for i in range(1, 6):
        dump(folder / f"data_batch_{i}", batch(i, [(i + j) % 10 for j in range(ROWS)]))
    dump(folder / "test_batch", batch(0, [9, 0, 4]))
    dump(folder / "batches.meta", {"label_names": [f"class{i}" for i in range(10)],
                                   "num_cases_per_batch": ROWS, "num_vis": 3072})
    return folder


def write_cifar100(root: Path) -> Path:
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    for name, seed, fine in (("train", 7, [0, 99, 42, 5]), ("test", 8, [17, 3])):
        entry = batch(seed, fine, "fine_labels") | {"coarse_labels": [f % 20 for f in fine]}
        dump(folder / name, entry)
    dump(folder / "meta", {"fine_label_names": [f"fine{i}" for i in range(100)],
                           "coarse_label_names": [f"coarse{i}" for i in range(20)]})
    return folder


def test_fixture_is_a_python2_style_pickle(tmp_path):
    folder = write_cifar10(tmp_path)
    raw = (folder / "data_batch_1").read_bytes()
    assert raw[:2] == b"\x80\x02" and b"cnumpy.core.multiarray\n_reconstruct\n" in raw
    assert b"_codecs" not in raw and b"U\x04data" in raw


def test_cifar10_reads_pixels_in_chw_order_labels_and_names(tmp_path):
    write_cifar10(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no numpy.core deprecation warning
        ds = load_dataset("cifar10", tmp_path)
    assert (len(ds.train), len(ds.test), ds.num_classes) == (5 * ROWS, ROWS, 10)
    assert ds.class_names == [f"class{i}" for i in range(10)]
    assert ds.train.x.dtype == torch.uint8 and ds.train.x.is_contiguous()
    assert ds.train.x.shape == (5 * ROWS, 3, 32, 32) and ds.train.y.dtype == torch.int64
    row = pixels(2)[1]  # data_batch_2, second image: train index ROWS + 1
    image = ds.train.x[ROWS + 1]
    for c, y, x in ((0, 0, 0), (0, 0, 31), (1, 5, 7), (2, 31, 30)):
        assert image[c, y, x].item() == row[c * 1024 + y * 32 + x]
    assert torch.equal(ds.test.x.reshape(ROWS, -1), torch.from_numpy(pixels(0)))
    assert ds.train.y[ROWS:2 * ROWS].tolist() == [2, 3, 4]
    assert ds.test.y.tolist() == [9, 0, 4]


def test_cifar100_uses_fine_labels_and_names(tmp_path):
    write_cifar100(tmp_path)
    ds = load_dataset("cifar100", tmp_path)
    assert (len(ds.train), len(ds.test), ds.num_classes) == (4, 2, 100)
    assert ds.train.y.tolist() == [0, 99, 42, 5] and ds.test.y.tolist() == [17, 3]
    assert ds.class_names[:2] == ["fine0", "fine1"] and len(ds.class_names) == 100
    assert torch.equal(ds.train.x.reshape(4, -1), torch.from_numpy(pixels(7, 4)))


def test_bytes_keys_and_python3_pickles_are_accepted(tmp_path):
    folder = write_cifar10(tmp_path)
    entry = {b"data": pixels(11, 2), b"labels": [1, 2], b"batch_label": b"testing batch"}
    (folder / "test_batch").write_bytes(pickle.dumps(entry, protocol=4))
    ds = load_dataset("cifar10", tmp_path)
    assert ds.test.y.tolist() == [1, 2]
    assert torch.equal(ds.test.x.reshape(2, -1), torch.from_numpy(pixels(11, 2)))


class Exploit:
    def __init__(self, sentinel: Path) -> None:
        self.sentinel = sentinel

    def __reduce__(self):
        return os.system, (f"echo hi > {self.sentinel}",)


def test_forbidden_global_is_refused_and_never_run(tmp_path):
    folder = write_cifar10(tmp_path)
    sentinel = tmp_path / "sentinel"
    target = folder / "data_batch_3"
    target.write_bytes(pickle.dumps({"data": Exploit(sentinel), "labels": []}, protocol=2))
    with pytest.raises(UserError, match="not a CIFAR python batch") as err:
        load_dataset("cifar10", tmp_path)
    message = str(err.value)
    assert str(target) in message and "system" in message and "\n" not in message
    assert not sentinel.exists()


@pytest.mark.parametrize("entry, fragment", [
    ({"data": np.zeros((3, 3071), np.uint8), "labels": [0, 1, 2]}, "3072 columns"),
    ({"data": np.zeros((3, 3072), np.float32), "labels": [0, 1, 2]}, "must be uint8"),
    ({"data": pixels(1), "labels": [0, 1]}, "3 images but 2 labels"),
    ({"data": pixels(1), "labels": [0, 1, 10]}, "labels must lie in 0..9"),
    ({"labels": [0, 1, 2]}, "no 'data' entry"),
    ([1, 2, 3], "not a CIFAR batch dict"),
])
def test_malformed_batches_are_one_line_errors(tmp_path, entry, fragment):
    folder = write_cifar10(tmp_path)
    dump(folder / "data_batch_4", entry)
    with pytest.raises(UserError, match=fragment) as err:
        load_dataset("cifar10", tmp_path)
    message = str(err.value)
    assert str(folder / "data_batch_4") in message
    assert "re-extract cifar-10-python.tar.gz under --data-root" in message
    assert "\n" not in message


def test_missing_and_truncated_files_are_clear_errors(tmp_path):
    folder = write_cifar10(tmp_path)
    (folder / "data_batch_5").unlink()
    with pytest.raises(UserError, match="data_batch_5 is missing; re-extract"):
        load_dataset("cifar10", tmp_path)
    write_cifar100(tmp_path)
    meta = tmp_path / "cifar-100-python" / "meta"
    meta.write_bytes(meta.read_bytes()[:40])
    with pytest.raises(UserError, match="is damaged or not a CIFAR python batch"):
        load_dataset("cifar100", tmp_path)


def test_missing_folder_that_cannot_be_downloaded_is_a_user_error(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise OSError("offline")

    monkeypatch.setattr("torchvision.datasets.utils.download_and_extract_archive", offline)
    with pytest.raises(UserError, match="cifar-100-python was not found under .* \\(OSError\\)"):
        load_dataset("cifar100", tmp_path)


def test_missing_folder_is_downloaded_then_read(tmp_path, monkeypatch):
    calls = []

    def fake_download(url, root, filename, md5):
        calls.append(filename)
        write_cifar10(Path(root))

    monkeypatch.setattr("torchvision.datasets.utils.download_and_extract_archive", fake_download)
    ds = load_dataset("cifar10", tmp_path)
    assert calls == ["cifar-10-python.tar.gz"] and len(ds.train) == 5 * ROWS
    assert cifar.CIFAR10.folder == "cifar-10-batches-py"
