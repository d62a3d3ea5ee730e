"""The per-image reference backend: output contract, seeding, severity ordering, and agreement with
an independent implementation (`imagecorruptions`) run with the same constants."""

from __future__ import annotations

import types

import numpy as np
import pytest
import scipy.ndimage
from PIL import Image

from robustbench_lite.bench.corruptions import reference as ref
from robustbench_lite.bench.corruptions.tables import (
    ALL, BENCHMARK, CIFAR, EXTRA, IMAGENET, PARAMETERS, TABLES, TINYIMAGENET, CorruptionTable,
    image_seed, parse_corruptions, table_for)
from robustbench_lite.bench.errors import UserError

from corruption_helpers import colour_images, photographs

ic = pytest.importorskip("imagecorruptions.corruptions")

RANDOM = {"gaussian_noise", "shot_noise", "impulse_noise", "glass_blur", "motion_blur", "snow",
          "frost", "fog", "elastic_transform", "speckle_noise", "spatter"}
NOT_MONOTONE = {"glass_blur", "frost", "elastic_transform", "spatter", "saturate"}  # by their constants


def test_names_families_and_tables_cover_the_19_corruptions():
    assert len(BENCHMARK) == 15 and len(EXTRA) == 4 and len(set(ALL)) == 19
    assert BENCHMARK[0] == "gaussian_noise" and BENCHMARK[-1] == "jpeg_compression"
    assert set(TABLES.values()) == {CIFAR, TINYIMAGENET, IMAGENET}
    for table in (CIFAR, TINYIMAGENET, IMAGENET):
        assert set(table.severities) == set(ALL) == set(PARAMETERS) == set(ref.CORRUPTIONS)
        for name, values in table.severities.items():
            assert len(values) == 5, name
            width = len(PARAMETERS[name])
            if width > 1:
                assert all(len(v) == width for v in values), name
    # float np.arange quirk of the generator: arange(1, 1.06, 0.01) has 7 factors
    assert len(CIFAR.params("zoom_blur", 1)) == 7 and CIFAR.params("zoom_blur", 1)[-1] == 1.06
    assert table_for(32) is CIFAR and table_for(64) is TINYIMAGENET and table_for(224) is IMAGENET
    assert table_for(16) is CIFAR and table_for(45) is CIFAR and table_for(46) is TINYIMAGENET
    assert table_for(119) is TINYIMAGENET and table_for(120) is IMAGENET


MAKE_TINYIMAGENET_C = {
    # hendrycks/robustness ImageNet-C/create_c/make_tinyimagenet_c.py, function by function: its
    # list c (severity 1..5), or what the function does with the image size (IMSIZE = 64)
    "gaussian_noise": [0.04, 0.08, .12, .15, .18],
    "shot_noise": [250, 100, 50, 30, 15],
    "impulse_noise": [.01, .02, .05, .08, .14],
    "speckle_noise": [.15, .2, 0.25, 0.3, 0.35],
    "gaussian_blur": [.5, .75, 1, 1.25, 1.5],
    "glass_blur": [(0.1, 1, 1), (0.5, 1, 1), (0.6, 1, 2), (0.7, 2, 1), (0.9, 2, 2)],
    "defocus_blur": [(0.5, 0.6), (1, 0.1), (1.5, 0.1), (2.5, 0.01), (3, 0.1)],
    "motion_blur": [(10, 1), (10, 1.5), (10, 2), (10, 2.5), (12, 3)],
    "zoom_blur": [np.arange(1, 1.06, 0.01), np.arange(1, 1.11, 0.01), np.arange(1, 1.16, 0.01),
                  np.arange(1, 1.21, 0.01), np.arange(1, 1.26, 0.01)],
    "fog": [(.4, 3), (.7, 3), (1, 2.5), (1.5, 2), (2, 1.75)],
    "frost": [(1, 0.3), (0.9, 0.4), (0.8, 0.45), (0.75, 0.5), (0.7, 0.55)],
    "snow": [(0.1, 0.2, 1, 0.6, 8, 3, 0.8),
             (0.1, 0.2, 1, 0.5, 10, 4, 0.8),
             (0.15, 0.3, 1.75, 0.55, 10, 4, 0.7),
             (0.25, 0.3, 2.25, 0.6, 12, 6, 0.65),
             (0.3, 0.3, 1.25, 0.65, 14, 12, 0.6)],
    "spatter": [(0.62, 0.1, 0.7, 0.7, 0.6, 0),
                (0.65, 0.1, 0.8, 0.7, 0.6, 0),
                (0.65, 0.3, 1, 0.69, 0.6, 0),
                (0.65, 0.1, 0.7, 0.68, 0.6, 1),
                (0.65, 0.1, 0.5, 0.67, 0.6, 1)],
    "contrast": [.4, .3, .2, .1, 0.05],
    "brightness": [.1, .2, .3, .4, .5],
    "saturate": [(0.3, 0), (0.1, 0), (2, 0), (5, 0.1), (30, 0.2)],
    "jpeg_compression": [65, 58, 50, 40, 25],
    "pixelate": [0.9, 0.8, 0.7, 0.6, 0.5],
    "elastic_transform": [(64 * 0, 64 * 0, 64 * 0.08),
                          (64 * 0.05, 64 * 0.3, 64 * 0.06),
                          (64 * 0.1, 64 * 0.08, 64 * 0.06),
                          (64 * 0.1, 64 * 0.03, 64 * 0.03),
                          (64 * 0.16, 64 * 0.03, 64 * 0.02)],
}


def test_tinyimagenet_table_holds_the_constants_of_make_tinyimagenet_c():
    """Every field of TINYIMAGENET against the generator of Tiny-ImageNet-C, written out above."""
    table = TINYIMAGENET
    assert (table.name, table.image_size) == ("tinyimagenet", 64)
    assert table.source == "hendrycks/robustness ImageNet-C/create_c/make_tinyimagenet_c.py"
    assert table.frost_scale == 0.3  # cv2.resize(frost, (0, 0), fx=0.3, fy=0.3)
    assert table.frost_pictures == 5  # np.random.randint(5)
    assert set(MAKE_TINYIMAGENET_C) == set(table.severities) == set(ALL)
    for name, values in MAKE_TINYIMAGENET_C.items():
        expected = [tuple(v.tolist()) if isinstance(v, np.ndarray) else v for v in values]
        assert list(table.severities[name]) == expected, name
    # the rest follows the image size, as in the generator: the fog map of plasma_fractal's
    # default mapsize 64, cropped [:64, :64]; glass blur's range(64 - c[1], c[1], -1); pixelate's
    # int(64 * c); a 64x64 frost crop
    assert 1 << (64 - 1).bit_length() == 64
    assert [int(64 * c) for c in table.severities["pixelate"]] == [57, 51, 44, 38, 32]
    pictures = ref._frost_pictures(table.frost_scale)[:table.frost_pictures]
    assert min(min(p.shape[:2]) for p in pictures) == 94  # every crop of 64 fits, none enlarged
    image = colour_images(1, 64)[0]
    assert ref.corrupt(image, "frost", 3, table, seed=0).shape == (64, 64, 3)


def test_corruption_lists_parse_and_unknown_names_are_user_errors():
    assert parse_corruptions("all") == ALL and parse_corruptions("extra") == EXTRA
    assert parse_corruptions("fog,gaussian_noise") == ("gaussian_noise", "fog")
    with pytest.raises(UserError, match="gausian_noise"):
        parse_corruptions("gausian_noise")


@pytest.mark.parametrize("name", ALL)
def test_contract_uint8_shape_and_seeding(name, images):
    image = images[0]
    a = ref.corrupt(image, name, 3, CIFAR, seed=1)
    b = ref.corrupt(image, name, 3, CIFAR, seed=1)
    c = ref.corrupt(image, name, 3, CIFAR, seed=2)
    assert a.dtype == np.uint8 and a.shape == image.shape
    assert np.array_equal(a, b)
    assert (not np.array_equal(a, c)) == (name in RANDOM)
    odd = colour_images(1, 40)[0][:, 3:]  # 40x37: sizes come from the image
    assert ref.corrupt(odd, name, 5, CIFAR, seed=0).shape == odd.shape


@pytest.mark.parametrize("name", [n for n in ALL if n not in NOT_MONOTONE])
def test_mean_change_grows_with_severity(name, images):
    """Same seeds at every severity, so only the parameters change."""
    seeds = list(range(len(images)))
    change = [np.abs(ref.corrupt_batch(images, name, s, CIFAR, seeds).astype(float) - images).mean()
              for s in range(1, 6)]
    assert all(b >= a - 0.05 for a, b in zip(change, change[1:])), change
    assert change[-1] > change[0]


def test_image_seeds_differ_per_cell():
    seeds = {image_seed(0, c, s, i) for c in ("fog", "snow") for s in (1, 2) for i in (0, 1)}
    assert len(seeds) == 8 and image_seed(0, "fog", 1, 0) != image_seed(1, "fog", 1, 0)


def _with_constants(fn, values):
    """`fn` of imagecorruptions with its 5-entry severity list replaced by `values`."""
    consts = list(fn.__code__.co_consts)
    slots = [i for i, c in enumerate(consts) if isinstance(c, tuple) and len(c) == 5]
    assert len(slots) == 1, fn.__name__
    consts[slots[0]] = tuple(values)
    return types.FunctionType(fn.__code__.replace(co_consts=tuple(consts)), fn.__globals__,
                              fn.__name__, fn.__defaults__)


class _LegacyRng:
    """Routes our draws to NumPy's global generator, the one imagecorruptions draws from."""

    normal = staticmethod(np.random.normal)
    poisson = staticmethod(np.random.poisson)
    uniform = staticmethod(np.random.uniform)
    integers = staticmethod(np.random.randint)


def _ours(image, name, severity, table, rng):
    out = ref.CORRUPTIONS[name](image, table.params(name, severity), rng, table)
    return np.clip(out, 0, 255).astype(np.uint8)


DETERMINISTIC = ["contrast", "brightness", "saturate", "pixelate", "jpeg_compression",
                 "gaussian_blur", "defocus_blur"]


@pytest.mark.parametrize("name", DETERMINISTIC + ["gaussian_noise", "shot_noise", "speckle_noise",
                                                  "motion_blur", "fog", "spatter"])
def test_cifar_constants_match_imagecorruptions_with_cifar_constants(name, images):
    """Reference: `imagecorruptions`' own function for the corruption (an independent
    implementation of the ImageNet-C code; it uses scikit-image, OpenCV, PIL and its own helpers)
    with its severity list replaced by the CIFAR constants of hendrycks' make_cifar_c.py (a code
    copy with one constant substituted; the package itself is not modified). For the random
    corruptions both sides draw from NumPy's global generator reseeded identically, so the whole
    pipeline is compared, not only the deterministic part. Tolerance: one intensity level per pixel
    (motion blur rounds like ImageMagick where the reference truncates)."""
    original = getattr(ic, name)
    theirs = _with_constants(original, CIFAR.severities[name])
    np.random.seed(0)
    assert not np.array_equal(np.uint8(theirs(Image.fromarray(images[1]), 5)),
                              np.uint8(original(Image.fromarray(images[1]), 5)))  # substituted
    _assert_within_one_level(theirs, images[:3], name, CIFAR)


@pytest.mark.parametrize("name", DETERMINISTIC + ["gaussian_noise", "shot_noise", "speckle_noise",
                                                  "motion_blur", "fog", "spatter"])
def test_tinyimagenet_constants_match_imagecorruptions_at_64(name):
    """As for CIFAR: `imagecorruptions`' function with the Tiny-ImageNet constants substituted,
    on 64-px images, the same draws from NumPy's global generator."""
    original = getattr(ic, name)
    theirs = _with_constants(original, TINYIMAGENET.severities[name])
    _assert_within_one_level(theirs, photographs(64)[:3], name, TINYIMAGENET)


@pytest.mark.parametrize("name", ["contrast", "pixelate", "jpeg_compression", "gaussian_blur",
                                  "defocus_blur", "gaussian_noise", "spatter", "fog"])
def test_imagenet_table_matches_imagecorruptions_at_224(name):
    """imagecorruptions' defaults are the ImageNet-C constants: no substitution needed."""
    image = colour_images(1, 224, seed=3)[0]
    for severity in (1, 3, 5):
        np.random.seed(severity)
        expected = np.uint8(getattr(ic, name)(Image.fromarray(image), severity))
        np.random.seed(severity)
        got = _ours(image, name, severity, IMAGENET, _LegacyRng)
        assert np.abs(expected.astype(int) - got).max() <= 1, (name, severity)


def _generator_zoom_blur(image: np.ndarray, factors: np.ndarray) -> np.ndarray:
    """hendrycks' make_cifar_c.py (and make_imagenet_c.py) zoom_blur, restated from the published
    code: every factor's clipped_zoom (scipy's zoom, order 1, of the central ceil(h / factor)
    square, its extra pixels trimmed), summed in float32, averaged with the image, cast to uint8."""
    x = (np.array(image) / 255.).astype(np.float32)
    out = np.zeros_like(x)
    h = x.shape[0]
    for factor in factors:
        crop = int(np.ceil(h / factor))
        top = (h - crop) // 2
        layer = scipy.ndimage.zoom(x[top:top + crop, top:top + crop], (factor, factor, 1), order=1)
        trim = (layer.shape[0] - h) // 2
        out += layer[trim:trim + h, trim:trim + h]
    return np.uint8(np.clip((x + out) / (len(factors) + 1), 0, 1) * 255)


GENERATOR_ZOOMS = {  # the factor lists of make_cifar_c.py and make_imagenet_c.py
    32: [np.arange(1, stop, 0.01) for stop in (1.06, 1.11, 1.16, 1.21, 1.26)],
    224: [np.arange(1, 1.11, 0.01), np.arange(1, 1.16, 0.01), np.arange(1, 1.21, 0.02),
          np.arange(1, 1.26, 0.02), np.arange(1, 1.31, 0.03)],
}


@pytest.mark.parametrize("size", [32, pytest.param(224, marks=pytest.mark.slow)])
def test_zoom_blur_equals_the_generators_on_photographs(size):
    """Pixel for pixel at every severity: the tables hold np.arange's exact factors, so the layer of
    1.2500000000000002 (CIFAR severity 5) is zoomed from 26 to 33 pixels as the generator zooms it
    (rounded to 1.25 it became 32 pixels and changed a quarter of the values of these photographs)."""
    table = table_for(size)
    for severity, factors in enumerate(GENERATOR_ZOOMS[size], start=1):
        assert table.params("zoom_blur", severity) == tuple(factors.tolist())
        for image in photographs(size):
            expected = _generator_zoom_blur(image, factors)
            assert np.array_equal(ref.corrupt(image, "zoom_blur", severity, table, 0), expected), severity
    if size == 32:  # the test tells the rounded factors apart
        image = photographs(32)[0]
        rounded = _generator_zoom_blur(image, np.round(GENERATOR_ZOOMS[32][4], 6))
        assert (rounded != _generator_zoom_blur(image, GENERATOR_ZOOMS[32][4])).mean() > 0.1


@pytest.mark.parametrize("size", [32, 29, 57])
@pytest.mark.parametrize("factor", [1.01, 1.06, 1.25, 1.75, 2.25, 4.5])
def test_linear_zoom_equals_scipy_zoom(size, factor):
    """Zoom blur and snow use the generators' scipy.ndimage.zoom(order=1), re-implemented for speed."""
    x = np.random.default_rng(size).random((size, size, 3)).astype(np.float32)
    expected = scipy.ndimage.zoom(x, (factor, factor, 1), order=1)
    got = ref._linear_zoom(x, factor)
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_clipped_zoom_and_plasma_match_imagecorruptions_helpers():
    x = np.random.default_rng(0).random((32, 32, 3)).astype(np.float32)
    for factor in (1.0, 1.11, 1.26):  # at these factors imagecorruptions' crop equals the centred one
        np.testing.assert_allclose(ref._clipped_zoom(x, factor), ic.clipped_zoom(x, factor)[:32, :32],
                                   atol=1e-5)
    np.random.seed(7)
    expected = ic.plasma_fractal(mapsize=32, wibbledecay=2.5)
    np.random.seed(7)
    np.testing.assert_allclose(ref._plasma_fractal(32, 2.5, _LegacyRng), expected, atol=1e-5)


def test_glass_blur_copies_displaced_pixels_like_the_generator():
    """The generator's `x[h, w], x[h', w'] = x[h', w'], x[h, w]` on numpy views is a copy: the
    number of distinct pixel values can only shrink. With sigma ~ 0 the blur is the identity."""
    image = np.arange(32 * 32 * 3, dtype=np.int64).reshape(32, 32, 3) % 251
    image = image.astype(np.uint8)
    table = CorruptionTable("probe", 32, "test", {"glass_blur": ((1e-6, 1, 1),) * 5}, 0.2)
    out = ref.corrupt(image, "glass_blur", 1, table, seed=0)
    before = {tuple(p) for p in image.reshape(-1, 3)}
    after = [tuple(p) for p in out.reshape(-1, 3)]
    assert set(after) <= before
    assert len(set(after)) < len(before)  # copies, not swaps: some pixels were duplicated


def test_noise_statistics_follow_the_cifar_constants():
    flat = np.full((32, 32, 3), 128, np.uint8)
    for severity, sigma in enumerate(CIFAR.severities["gaussian_noise"], start=1):
        out = ref.corrupt(flat, "gaussian_noise", severity, CIFAR, seed=severity)
        assert abs((out.astype(float) - 128).std() / 255 - sigma) < 0.1 * sigma
    for severity, amount in enumerate(CIFAR.severities["impulse_noise"], start=1):
        out = ref.corrupt(flat, "impulse_noise", severity, CIFAR, seed=severity)
        assert abs(np.isin(out, (0, 255)).mean() - amount) < 0.35 * amount + 0.003


def test_missing_libraries_name_the_extra_to_install(monkeypatch):
    from robustbench_lite.bench.corruptions.tables import load_backend

    ref._libraries.cache_clear()
    monkeypatch.setitem(__import__("sys").modules, "cv2", None)  # import cv2 now fails
    try:
        with pytest.raises(UserError, match=r"pip install 'robustbench-lite\[corruptions\]'"):
            load_backend("reference")
        assert load_backend("reference", check=False) is ref  # not needed for canonical files
    finally:
        ref._libraries.cache_clear()


def _assert_within_one_level(theirs, images, name: str, table) -> None:
    """Ours within one grey level of `theirs` at every severity, both from NumPy's global
    generator seeded alike per image."""
    for severity in range(1, 6):
        for i, image in enumerate(images):
            np.random.seed(i)
            expected = np.uint8(theirs(Image.fromarray(image), severity))
            np.random.seed(i)
            got = _ours(image, name, severity, table, _LegacyRng)
            diff = np.abs(expected.astype(int) - got)
            assert diff.max() <= 1, (name, severity, i, diff.max())
