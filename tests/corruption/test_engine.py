"""The batched torch engine: output contract, per-image seeding, severity ordering, and agreement with
the per-image reference backend (exact for the deterministic corruptions, in distribution otherwise)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from robustbench_lite.bench.corruptions import cpu_kernels, engine
from robustbench_lite.bench.corruptions import filter_matrices as fm
from robustbench_lite.bench.corruptions import reference as ref
from robustbench_lite.bench.corruptions.tables import ALL, CIFAR, IMAGENET, load_backend, table_for
from robustbench_lite.bench.corruptions.random_streams import Streams

from corruption_helpers import colour_images, photographs

pytest.importorskip("imagecorruptions")

RANDOM = {"gaussian_noise", "shot_noise", "impulse_noise", "glass_blur", "motion_blur", "snow",
          "frost", "fog", "elastic_transform", "speckle_noise", "spatter"}
NOT_MONOTONE = {"glass_blur", "frost", "elastic_transform", "spatter", "saturate"}  # by their constants
DETERMINISTIC = ("contrast", "brightness", "saturate", "pixelate", "gaussian_blur", "defocus_blur",
                 "zoom_blur")
SEEDS = [11, 22, 33, 44, 55, 66]


@pytest.fixture(scope="module")
def batch(images) -> torch.Tensor:
    return torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()


def _change(corrupted: torch.Tensor, clean: torch.Tensor) -> float:
    return (corrupted.float() - clean.float()).abs().mean().item()


@pytest.mark.parametrize("name", ALL)
def test_contract_seeding_and_batch_independence(name, batch):
    a = engine.corrupt(batch, name, 3, CIFAR, SEEDS)
    assert a.dtype == torch.uint8 and a.shape == batch.shape
    assert torch.equal(a, engine.corrupt(batch, name, 3, CIFAR, SEEDS))
    other = engine.corrupt(batch, name, 3, CIFAR, [s + 1 for s in SEEDS])
    assert (not torch.equal(a, other)) == (name in RANDOM)
    # an image gets the same corruption whatever else is in its batch
    picked = [4, 1]
    alone = engine.corrupt(batch[picked], name, 3, CIFAR, [SEEDS[i] for i in picked])
    assert (alone.int() - a[picked].int()).abs().max() <= 1
    assert _change(a, batch) > 0.3


@pytest.mark.parametrize("name", sorted(set(ALL) - NOT_MONOTONE))
def test_higher_severity_changes_images_more(name, batch):
    changes = [_change(engine.corrupt(batch, name, s, CIFAR, SEEDS), batch) for s in (1, 3, 5)]
    assert changes[0] < changes[1] < changes[2], changes


@pytest.mark.parametrize("name", DETERMINISTIC)
def test_deterministic_corruptions_match_the_reference_per_pixel(name, images, batch):
    for severity in (1, 3, 5):
        ours = engine.corrupt(batch, name, severity, CIFAR, SEEDS).permute(0, 2, 3, 1).numpy()
        theirs = ref.corrupt_batch(images, name, severity, CIFAR, SEEDS)
        assert np.abs(ours.astype(int) - theirs.astype(int)).max() <= 1, severity


@pytest.mark.parametrize("name", sorted(RANDOM))
def test_random_corruptions_change_images_as_much_as_the_reference(name):
    """Same table, different random streams: the mean pixel change agrees within 15 % (+0.5); 25 %
    for frost, whose change depends mostly on which of five pictures each image draws."""
    images = colour_images(32, seed=3)
    seeds = list(range(32))
    tolerance = 0.25 if name == "frost" else 0.15
    x = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
    for severity in (2, 5):
        ours = _change(engine.corrupt(x, name, severity, CIFAR, seeds), x)
        theirs = np.abs(ref.corrupt_batch(images, name, severity, CIFAR, seeds).astype(float)
                        - images).mean()
        assert abs(ours - theirs) <= tolerance * theirs + 0.5, (severity, ours, theirs)


def test_backend_interface_matches_the_tensor_api(images, batch):
    module = load_backend("engine")
    assert module is engine and isinstance(module.VERSION, int)
    hwc = module.corrupt_batch(images, "fog", 2, CIFAR, SEEDS)
    assert hwc.shape == images.shape and hwc.dtype == np.uint8
    assert np.array_equal(hwc, engine.corrupt(batch, "fog", 2, CIFAR, SEEDS).permute(0, 2, 3, 1).numpy())
    with pytest.raises(ValueError, match="seeds"):
        engine.corrupt(batch, "fog", 2, CIFAR, SEEDS[:2])


@pytest.mark.parametrize("name", ["defocus_blur", "zoom_blur", "motion_blur", "snow", "pixelate"])
def test_large_image_paths_agree_with_the_small_image_paths(name, monkeypatch):
    """Above `_SMALL` pixels the engine filters by FFTs and banded products: float32 sums in
    another order (within 1e-3 before truncation; the rounded blurs a level apart on a few
    pixels); BOX resizing is exact integer arithmetic on every path."""
    x = torch.from_numpy(colour_images(4, 44, seed=9)[:, :, 3:]).permute(0, 3, 1, 2).contiguous()
    table = table_for(44)
    assert 40 * 44 <= engine._SMALL
    for severity in (1, 3, 5):
        params = table.params(name, severity)
        small = engine.CORRUPTIONS[name](x, params, Streams(SEEDS[:4]), table)
        with monkeypatch.context() as patch:
            patch.setattr(engine, "_SMALL", 0)
            large = engine.CORRUPTIONS[name](x, params, Streams(SEEDS[:4]), table)
        if name == "pixelate":
            assert large.dtype == torch.uint8 and torch.equal(large, small)
        elif name in ("defocus_blur", "zoom_blur"):
            assert (large - small).abs().max() < 1e-3, severity
        else:
            diff = (large - small).abs()
            assert diff.max() <= 1 and (diff > 0).float().mean() < 1e-3, severity


@pytest.mark.parametrize("name", ["defocus_blur", "zoom_blur", "motion_blur", "snow",
                                  "jpeg_compression", "glass_blur", "pixelate"])
def test_tinyimagenet_images_are_corrupted_alike_in_any_batch(name):
    """At 64 px (the Tiny-ImageNet table, FFT and banded paths): an image's corruption does not
    depend on the rest of its batch (within a level, float rounding)."""
    x = torch.from_numpy(colour_images(5, 64, seed=4)).permute(0, 3, 1, 2).contiguous()
    table = table_for(64)
    assert table.name == "tinyimagenet"
    seeds = SEEDS[:5]
    whole = engine.corrupt(x, name, 4, table, seeds)
    alone = engine.corrupt(x[3:4], name, 4, table, seeds[3:4])
    assert (alone.int() - whole[3:4].int()).abs().max() <= 1
    assert _change(whole, x) > 0.3


def test_glass_blur_moves_match_the_sequential_generator():
    """Pointer jumping resolves the generator's in-order moves exactly, also for ImageNet's larger
    moves (which read pixels moved earlier in the same sweep)."""
    for h, w, delta, iterations in ((12, 12, 1, 2), (14, 11, 3, 2), (16, 16, 4, 1)):
        noise = Streams([3, 99], "cpu")
        sources = engine._glass_sources(noise, h, w, delta, iterations)
        rows, cols = range(h - delta, delta, -1), range(w - delta, delta, -1)
        moves = noise.integers(0, (iterations, len(rows) * len(cols), 2), -delta, delta)
        for i in range(2):
            expected = list(range(h * w))
            for it in range(iterations):
                positions = [r * w + c for r in rows for c in cols]
                for p, (dx, dy) in zip(positions, moves[i, it].tolist()):
                    expected[p] = expected[p + dy * w + dx]
            assert sources[i].tolist() == expected, (h, w, delta)


def test_shot_noise_counts_follow_poisson():
    """The inverse-CDF table: for each pixel value, the CDF of the output levels is within 1/8192 of
    the Poisson CDF of the counts that map to them."""
    from scipy.stats import poisson

    photons = 60.0
    table = engine._poisson_levels(photons).view(256, -1).double()
    for value in (0, 1, 30, 128, 255):
        rate = value / 255 * photons
        counts = np.arange(0, int(rate + 12 * rate ** 0.5 + 13))
        pixels = np.floor(np.clip(counts / photons, 0, 1) * 255)
        for level in np.unique(pixels):
            expected = poisson.cdf(counts[pixels <= level].max(), rate)
            assert abs((table[value] <= level).double().mean().item() - expected) <= 1 / 8192 + 1e-9


def test_brightness_and_saturate_need_no_hsv_round_trip(batch):
    """The closed forms agree with scikit-image's HSV round trip to within a level."""
    from skimage.color import hsv2rgb, rgb2hsv

    x = batch.permute(0, 2, 3, 1).numpy() / 255.0
    hsv = rgb2hsv(x)
    hsv[..., 2] = np.clip(hsv[..., 2] + 0.3, 0, 1)
    lifted = np.uint8(np.clip(hsv2rgb(hsv), 0, 1) * 255)
    ours = engine.corrupt(batch, "brightness", 5, CIFAR, SEEDS).permute(0, 2, 3, 1).numpy()
    assert np.abs(ours.astype(int) - lifted).max() <= 1


def _uint8_maps(rng: np.random.Generator, n: int, h: int, w: int) -> np.ndarray:
    """(n, h, w) uint8 maps of four kinds: uniform noise, blobs with sharp and soft borders, a few
    grey levels, and wrapped smooth noise (spatter's liquid layer wraps modulo 256)."""
    import scipy.ndimage

    maps = []
    for k in range(n):
        smooth = scipy.ndimage.gaussian_filter(rng.random((h, w)), 1.5)
        smooth = (smooth - smooth.min()) / max(np.ptp(smooth), 1e-9)
        maps.append([rng.integers(0, 256, (h, w)), np.clip(smooth * 765 - 255, 0, 255),
                     rng.integers(0, 4, (h, w)) * 60, smooth * 2000 % 256][k % 4])
    return np.stack(maps).astype(np.uint8)


@pytest.mark.parametrize("h, w", [(32, 32), (224, 224), (31, 45), (57, 13), (5, 7), (1, 9)])
def test_canny_equals_opencv(h, w):
    """The batched Canny equals cv2.Canny(image, 50, 150) pixel for pixel: random maps, natural
    photographs (grey) at 32 and 224 px, and spatter's liquid layers."""
    cv2 = pytest.importorskip("cv2")
    maps = [_uint8_maps(np.random.default_rng(h * w), 24 if h * w < 10_000 else 16, h, w)]
    if h == w and h in (32, 224):
        maps.append(np.stack([cv2.cvtColor(p, cv2.COLOR_RGB2GRAY) for p in photographs(h)]))
        table = CIFAR if h == 32 else IMAGENET
        for severity in (1, 2, 3):  # the liquid layers of water spatter
            loc, scale, sigma, threshold = table.params("spatter", severity)[:4]
            liquid = fm.gaussian(Streams(SEEDS).normal(0, (1, h, w)).mul_(scale).add_(loc), sigma)
            liquid = torch.where(liquid < threshold, 0.0, liquid)
            maps.append(torch.remainder(torch.floor(liquid * 255), 256)[:, 0].to(torch.uint8).numpy())
    for batch in maps:
        ours = engine._canny(torch.from_numpy(batch).float()[:, None], 50, 150)[:, 0].numpy()
        theirs = np.stack([cv2.Canny(m, 50, 150) for m in batch]) > 0
        assert np.array_equal(ours, theirs), (h, w, int((ours != theirs).sum()))


@pytest.mark.parametrize("h, w", [(32, 32), (224, 224), (31, 45), (2, 2)])
def test_chamfer_distance_equals_opencv(h, w):
    """OpenCV's 5x5 L2 distance transform of the complement of an edge map, truncated at 20 (the
    generator's THRESH_TRUNC), bit for bit, from no edges to all edges."""
    cv2 = pytest.importorskip("cv2")
    rng = np.random.default_rng(h + w)
    edges = rng.random((6, 1, h, w)) < np.array([0, 0.002, 0.02, 0.1, 0.5, 1])[:, None, None, None]
    ours = engine._chamfer_distance(torch.from_numpy(edges))[:, 0].numpy()
    for got, edge in zip(ours, edges[:, 0]):
        dist = cv2.distanceTransform(np.where(edge, 0, 255).astype(np.uint8), cv2.DIST_L2, 5)
        assert np.array_equal(got, cv2.threshold(dist, 20, 20, cv2.THRESH_TRUNC)[1])


@pytest.mark.parametrize("size, count", [(32, 6), (31, 4), (64, 3), (224, 2)])
def test_the_fused_cpu_loops_give_the_torch_paths_images(size, count, monkeypatch):
    """On a CPU with numba, the random streams, the noises, pixelate, spatter's water mask and JPEG
    run as `cpu_kernels` loops: every corruption gives the same images as without them, bit for bit."""
    pytest.importorskip("numba")
    images = torch.from_numpy(photographs(max(size, 32))[:count, :size, :size]).permute(0, 3, 1, 2)
    images = images.contiguous()
    table, seeds = table_for(size), [7 * s + 1 for s in range(count)]
    names = ALL if size == 32 else ("gaussian_noise", "shot_noise", "impulse_noise", "speckle_noise",
                                    "pixelate", "jpeg_compression", "spatter", "elastic_transform")
    for name in names:
        for severity in (1, 3, 5):
            fused = engine.corrupt(images, name, severity, table, seeds)
            with monkeypatch.context() as patch:
                patch.setattr(cpu_kernels, "enabled", lambda device: False)
                plain = engine.corrupt(images, name, severity, table, seeds)
            assert torch.equal(fused, plain), (name, severity)


@pytest.mark.parametrize("size", [32, 224])
def test_spatter_is_the_same_through_opencv_and_the_batched_maps(size, monkeypatch):
    """On a CPU with OpenCV (and without numba), spatter's water mask is OpenCV's own calls; the
    batched Canny and chamfer distance (every other device) give the same water spatter."""
    pytest.importorskip("cv2")
    monkeypatch.setattr(cpu_kernels, "enabled", lambda device: False)
    images = torch.from_numpy(photographs(size)).permute(0, 3, 1, 2).contiguous()
    table, seeds = (CIFAR if size == 32 else IMAGENET), list(range(len(images)))
    for severity in (1, 2, 3):
        through_opencv = engine.corrupt(images, "spatter", severity, table, seeds)
        with monkeypatch.context() as patch:
            patch.setattr(engine, "_opencv", lambda: None)
            batched = engine.corrupt(images, "spatter", severity, table, seeds)
        assert torch.equal(through_opencv, batched), severity


def test_box_blur_equals_opencv_blur_before_truncation():
    """cv2.blur of float32 maps (float64 sums times 1/9): the same float32, so truncation to 8 bits
    agrees even where the mean is an integer (a chamfer map averages to 20 far from edges)."""
    cv2 = pytest.importorskip("cv2")
    rng = np.random.default_rng(5)
    steps = np.float32([1.0, 1.4, 2.1969])
    maps = np.minimum(rng.integers(0, 5, (4, 40, 33, 3)) @ steps, 20).astype(np.float32)
    ours = engine._box3(torch.from_numpy(maps)[:, None])[:, 0].numpy()
    assert np.array_equal(ours, np.stack([cv2.blur(m, (3, 3)) for m in maps]))
