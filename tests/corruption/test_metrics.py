"""Corruption metrics on hand numbers and on published tables."""

from __future__ import annotations

import pytest

from robustbench_lite.bench.corruptions.tables import ALL, BENCHMARK
from robustbench_lite.protocols import corruption_metrics as m

# Strisciuglio et al. (NCAA 2020), Table 2: CIFAR-10-C error (%) per corruption, in the paper's row
# order (which differs from ours), for ResNet-20 and ResNet-56-PP.
PAPER_ORDER = ("gaussian_noise", "shot_noise", "impulse_noise", "speckle_noise", "defocus_blur",
               "glass_blur", "motion_blur", "zoom_blur", "gaussian_blur", "snow", "frost", "fog",
               "spatter", "brightness", "contrast", "elastic_transform", "pixelate",
               "jpeg_compression", "saturate")
RESNET20 = (57.41, 45.75, 41.88, 41.34, 21.43, 58.82, 30.62, 27.54, 31.32, 25.06, 31.39, 16.56,
            19.03, 9.73, 29.59, 20.37, 32.33, 23.81, 11.52)
RESNET56_PP = (44.92, 35.74, 33.14, 33.58, 20.88, 50.46, 27.67, 26.58, 31.22, 22.32, 27.28, 15.93,
               15.59, 8.68, 26.94, 18.57, 29.06, 19.82, 9.9)


def _fractions(values):
    return {c: v / 100 for c, v in zip(PAPER_ORDER, values)}


def test_hand_numbers():
    ref = m.ReferenceErrors("toy", clean=0.1, errors={"fog": 0.4, "snow": 0.5})
    errors = {"fog": 0.2, "snow": 0.4}
    assert m.corruption_error(errors, ref) == pytest.approx({"fog": 0.5, "snow": 0.8})
    assert m.mce(errors, ref, ["fog", "snow"]) == pytest.approx(0.65)
    assert m.relative_corruption_error(errors, 0.1, ref) == pytest.approx({"fog": 1 / 3, "snow": 0.75})
    assert m.relative_mce(errors, 0.1, ref, ["fog", "snow"]) == pytest.approx((1 / 3 + 0.75) / 2)
    assert m.mean_corruption_error(errors, ["fog", "snow", "frost"]) == pytest.approx(0.3)
    acc = {("fog", 1): 0.9, ("fog", 2): 0.7, ("snow", 1): 0.5}
    assert m.corruption_errors(acc) == pytest.approx({"fog": 0.2, "snow": 0.5})
    with pytest.raises(ValueError, match="no error for frost"):
        m.mce({"frost": 0.3}, ref, ["frost"])


def test_published_tables_are_complete_and_consistent():
    for name in m.PUBLISHED:
        table = m.published_reference(name)
        assert set(table.errors) == set(ALL) and 0 < table.clean < 1
    pushpull = m.published_reference("alexnet_cifar10_pushpull")
    assert pushpull.clean == pytest.approx(0.1387)
    # the paper's E_corr of AlexNet (Table 3) is the mean of its 19 errors: 29.08 %
    assert sum(pushpull.errors.values()) / 19 == pytest.approx(0.2908, abs=2e-4)
    imagenet = m.published_reference("alexnet_imagenet")
    assert imagenet.clean == pytest.approx(0.4348)
    assert imagenet.errors["jpeg_compression"] == pytest.approx(0.6065)


@pytest.mark.parametrize("name", m.PUBLISHED)
def test_alexnet_against_its_own_table_is_100(name):
    table = m.published_reference(name)
    errors = dict(table.errors)
    assert m.mce(errors, table) == pytest.approx(1.0)
    assert m.relative_mce(errors, table.clean, table) == pytest.approx(1.0)
    assert m.mce(errors, table, ALL) == pytest.approx(1.0)


@pytest.mark.parametrize("errors, clean, mce, rce", [
    (RESNET20, 7.56, 104, 169),
    (RESNET56_PP, 7.01, 91, 144),
])
def test_pushpull_table3_from_table2(errors, clean, mce, rce):
    """Table 3 of the push-pull paper normalises over its 19 corruptions by its CIFAR AlexNet."""
    ref = m.published_reference("alexnet_cifar10_pushpull")
    per_corruption = _fractions(errors)
    assert round(100 * m.mce(per_corruption, ref, ALL)) == mce
    assert round(100 * m.relative_mce(per_corruption, clean / 100, ref, ALL)) == rce
    # the 15-corruption headline differs from the paper's 19-corruption convention
    assert 100 * m.mce(per_corruption, ref, BENCHMARK) > mce + 1
