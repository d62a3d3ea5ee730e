"""Corrupted test sets on disk: the canonical CIFAR-C arrays, ImageNet-C folders, generated sets."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from robustbench_lite.bench.corruptions import sets as corruption_data
from robustbench_lite.bench.corruptions.sets import (
    CorruptionArrays, CorruptionFolders, generated_arrays)
from robustbench_lite.bench.corruptions.tables import CIFAR, image_seed
from robustbench_lite.bench.datasets import Split
from robustbench_lite.bench.errors import UserError

from corruption_helpers import colour_images, write_cifar_c


@pytest.fixture
def clean() -> Split:
    images = colour_images(20)
    return Split(torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(),
                 torch.arange(20) % 10)


def _nhwc(split: Split) -> np.ndarray:
    return split.x.permute(0, 2, 3, 1).numpy()


def test_cifar_c_blocks_are_read_severity_major_in_batches(tmp_path, clean):
    blocks = write_cifar_c(tmp_path / "CIFAR-10-C", _nhwc(clean), clean.y.numpy(), ("fog", "snow"))
    source = CorruptionArrays(tmp_path / "CIFAR-10-C", clean)
    assert isinstance(source.array("fog"), np.memmap)  # mapped, not loaded
    for severity in (1, 4):
        batches = list(source.batches("snow", severity, batch_size=8))
        assert [len(y) for _, y in batches] == [8, 8, 4]
        images = torch.cat([x for x, _ in batches]).permute(0, 2, 3, 1).numpy()
        assert np.array_equal(images, blocks[("snow", severity)])
        assert torch.equal(torch.cat([y for _, y in batches]), clean.y)
    limited = CorruptionArrays(tmp_path / "CIFAR-10-C", clean, limit=5)
    (x, y), = limited.batches("fog", 2, batch_size=100)
    assert np.array_equal(x.permute(0, 2, 3, 1).numpy(), blocks[("fog", 2)][:5])
    assert torch.equal(y, clean.y[:5])


@pytest.mark.parametrize("damage, message", [
    (lambda a: a.astype(np.float32), "dtype float32, expected uint8"),
    (lambda a: a.transpose(0, 3, 1, 2), r"shape \(100, 3, 32, 32\)"),
    (lambda a: a[:99], "99 rows, not divisible by 5"),
    (lambda a: a[:50], "50 rows, expected 5 x 20"),
])
def test_malformed_arrays_are_user_errors_naming_the_file(tmp_path, clean, damage, message):
    folder = tmp_path / "CIFAR-10-C"
    write_cifar_c(folder, _nhwc(clean), clean.y.numpy(), ("fog",))
    np.save(folder / "fog.npy", damage(np.load(folder / "fog.npy")))
    with pytest.raises(UserError, match=message) as err:
        CorruptionArrays(folder, clean).array("fog")
    assert "fog.npy" in str(err.value)


def test_label_mismatch_and_missing_files_are_user_errors(tmp_path, clean):
    folder = tmp_path / "CIFAR-10-C"
    write_cifar_c(folder, _nhwc(clean), clean.y.numpy(), ("fog",))
    with pytest.raises(UserError, match="snow.npy is missing"):
        CorruptionArrays(folder, clean).array("snow")
    labels = np.load(folder / "labels.npy")
    np.save(folder / "labels.npy", np.roll(labels, 1))
    with pytest.raises(UserError, match="labels.npy: .* labels differ"):
        CorruptionArrays(folder, clean)
    np.save(folder / "labels.npy", labels[:60])
    with pytest.raises(UserError, match=r"labels.npy holds \(60,\) labels"):
        CorruptionArrays(folder, clean)


def _write_folder_tree(root, wnids, sizes, family=None):
    base = root / family if family else root
    for severity in (1, 2, 3, 4, 5):
        for k, wnid in enumerate(wnids):
            folder = base / "gaussian_noise" / str(severity) / wnid
            folder.mkdir(parents=True)
            for j in range(2):
                value = 40 * k + 10 * j + severity
                Image.new("RGB", sizes, (value, 255 - value, 128)).save(folder / f"v{j}.JPEG",
                                                                        quality=95)


@pytest.mark.parametrize("family", [None, "noise"])
def test_imagenet_c_folders_flat_or_grouped_with_sorted_wnid_labels(tmp_path, family):
    wnids = ["n02", "n01", "n03"]  # folder creation order is not the class order
    _write_folder_tree(tmp_path / "ImageNet-C", wnids, (230, 228), family)
    source = CorruptionFolders(tmp_path / "ImageNet-C", num_classes=3, crop=224)
    (x, y), = source.batches("gaussian_noise", 3, batch_size=64)
    assert x.shape == (6, 3, 224, 224) and x.dtype == torch.uint8
    assert y.tolist() == [0, 0, 1, 1, 2, 2]  # n01, n01, n02, n02, n03, n03
    expected_red = [40 * 1 + 3, 40 * 1 + 13, 3, 13, 83, 93]  # n01 was written as class 1
    assert np.abs(x[:, 0, 100, 100].numpy().astype(int) - expected_red).max() <= 2
    limited = CorruptionFolders(tmp_path / "ImageNet-C", 3, limit=4).files("gaussian_noise", 1)
    assert [(path.parent.name, path.name, label) for path, label in limited] == [
        ("n01", "v0.JPEG", 0), ("n02", "v0.JPEG", 1), ("n03", "v0.JPEG", 2), ("n01", "v1.JPEG", 0)]
    with pytest.raises(UserError, match="has 3 class folders, expected 200"):
        CorruptionFolders(tmp_path / "ImageNet-C", 200).files("gaussian_noise", 1)
    with pytest.raises(UserError, match="no folder fog"):
        CorruptionFolders(tmp_path / "ImageNet-C", 3).files("fog", 1)


def test_generated_sets_use_the_canonical_layout_and_are_reused(tmp_path, clean, monkeypatch):
    first = generated_arrays(clean, "toy", ("fog", "contrast"), CIFAR, "reference", 0, tmp_path,
                             limit=12)
    folder = first.folder
    assert folder.parent == tmp_path / "corruptions" and folder.name.startswith("toy-")
    fog = np.load(folder / "fog.npy")
    assert fog.shape == (60, 32, 32, 3) and fog.dtype == np.uint8
    assert np.array_equal(np.load(folder / "labels.npy"), np.tile(clean.y.numpy()[:12], 5))
    from robustbench_lite.bench.corruptions.reference import corrupt
    image = _nhwc(clean)[7]
    assert np.array_equal(fog[2 * 12 + 7], corrupt(image, "fog", 3, CIFAR, image_seed(0, "fog", 3, 7)))

    def fail(*args, **kwargs):
        raise AssertionError("regenerated a cached set")

    monkeypatch.setattr(corruption_data, "_write_severity_major", fail)
    again = generated_arrays(clean, "toy", ("fog", "contrast"), CIFAR, "reference", 0, tmp_path,
                             limit=12)
    assert again.folder == folder
    other = generated_arrays  # another seed is another set
    monkeypatch.undo()
    assert other(clean, "toy", ("contrast",), CIFAR, "reference", 1, tmp_path, 12).folder != folder
    assert not list(folder.glob(".*.npy"))  # no temporary files left behind


def test_generation_corrupts_bounded_chunks_and_the_chunking_changes_no_pixel(tmp_path, clean,
                                                                             monkeypatch):
    """Memory of generation is bounded by the chunk, not the set; per-image seeds make the file
    independent of how it was chunked."""
    args = (clean, "toy", ("gaussian_noise", "glass_blur"), CIFAR, "engine", 0)
    whole = generated_arrays(*args, tmp_path / "whole", limit=12).folder
    from robustbench_lite.bench.corruptions import engine

    sizes, original = [], engine.corrupt_batch
    monkeypatch.setattr(engine, "corrupt_batch", lambda images, *a: (
        sizes.append(len(images)), original(images, *a))[1])
    monkeypatch.setattr(corruption_data, "GENERATION_CHUNK", 5)
    chunked = generated_arrays(*args, tmp_path / "chunked", limit=12).folder
    assert max(sizes) == 5 and sum(sizes) == 2 * 5 * 12
    for name in ("gaussian_noise", "glass_blur", "labels"):
        assert np.array_equal(np.load(whole / f"{name}.npy"), np.load(chunked / f"{name}.npy"))


def test_generation_spread_over_processes_gives_the_same_files(tmp_path, clean, monkeypatch):
    args = (clean, "toy", ("gaussian_noise", "snow"), CIFAR, "reference", 0)
    serial = generated_arrays(*args, tmp_path / "serial", limit=6).folder
    monkeypatch.setattr(corruption_data, "_PARALLEL_FROM", 1)
    monkeypatch.setattr(corruption_data.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    parallel = generated_arrays(*args, tmp_path / "parallel", limit=6).folder
    for name in ("gaussian_noise", "snow", "labels"):
        assert np.array_equal(np.load(serial / f"{name}.npy"), np.load(parallel / f"{name}.npy"))


def test_a_generated_imagenet_size_image_is_pillows_quality_85_round_trip_of_its_corruption(
        tmp_path):
    """ImageNet-C's last step (make_imagenet_c.py saves each corrupted image at quality 85)."""
    import io

    from PIL import Image

    from robustbench_lite.bench.corruptions import engine
    from robustbench_lite.bench.corruptions.tables import IMAGENET

    rng = np.random.default_rng(0)
    smooth = rng.integers(0, 256, (3, 3, 8, 8), dtype=np.uint8)
    x = torch.nn.functional.interpolate(torch.from_numpy(smooth).float(), size=224,
                                        mode="bicubic").clamp(0, 255).round().to(torch.uint8)
    split = Split(x, torch.tensor([0, 1, 2]))
    folder = generated_arrays(split, "photos", ("contrast", "gaussian_noise"), IMAGENET, "engine", 0,
                              tmp_path).folder
    for corruption in ("contrast", "gaussian_noise"):
        stored = np.load(folder / f"{corruption}.npy")
        for severity in (1, 5):
            before = engine.corrupt_batch(x.permute(0, 2, 3, 1).numpy(), corruption, severity,
                                          IMAGENET, [image_seed(0, corruption, severity, i)
                                                     for i in range(3)])
            for i in range(3):
                buffer = io.BytesIO()
                Image.fromarray(before[i]).save(buffer, "JPEG", quality=85)
                pillow = np.asarray(Image.open(buffer).convert("RGB"))
                assert np.array_equal(stored[(severity - 1) * 3 + i], pillow), (corruption, i)
                assert not np.array_equal(stored[(severity - 1) * 3 + i], before[i])
