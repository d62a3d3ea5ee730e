"""Filters as matrices equal scipy's and OpenCV's filters, border rules included."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from robustbench_lite.bench.corruptions import reference as ref
from robustbench_lite.bench.corruptions import filter_matrices as fm

cv2 = pytest.importorskip("cv2")
ndimage = pytest.importorskip("scipy.ndimage")


@pytest.mark.parametrize("border, mode", [("nearest", "nearest"), ("symmetric", "reflect"),
                                          ("reflect101", "mirror")])
def test_separable_gaussian_equals_scipy(border, mode):
    x = np.random.default_rng(0).random((2, 3, 11, 7))
    for sigma in (0.4, 1.0, 6.0):  # radius 24 > side: the border rule folds more than once
        ours = fm.gaussian(torch.from_numpy(x).float(), sigma, border).numpy()
        theirs = ndimage.gaussian_filter(x, (0, 0, sigma, sigma), mode=mode, truncate=4.0)
        assert np.abs(ours - theirs).max() < 1e-5, (border, sigma)


def test_kernel_filter_equals_opencv_filter2d():
    rng = np.random.default_rng(1)
    image = rng.random((13, 10)).astype(np.float32)
    for kernel in (ref._disk_kernel(1.5, 0.1), ref._disk_kernel(6, 0.5), rng.random((5, 5))):
        ours = fm.kernel_filter(tuple(map(tuple, kernel.tolist())), 13, 10, "reflect101")(
            torch.from_numpy(image)[None, None])
        theirs = cv2.filter2D(image, -1, kernel.astype(np.float32))
        assert np.abs(ours[0, 0].numpy() - theirs).max() < 1e-5


def test_clipped_zoom_matrix_equals_the_reference_zoom():
    x = np.random.default_rng(2).random((32, 32, 3))
    for factor in (1.01, 1.16, 1.75, 2.25, 1.25, float(np.arange(1, 1.26, 0.01)[-1])):  # 32 or 33 px
        zh = fm.clipped_zoom(32, factor).double().numpy()
        ours = np.einsum("ia,abc,jb->ijc", zh, x, zh)
        assert np.abs(ours - ref._clipped_zoom(x, factor)).max() < 1e-6, factor


def test_many_terms_run_as_one_dense_product():
    terms = [(fm.clipped_zoom(16, z), fm.clipped_zoom(16, z)) for z in (1.0, 1.1, 1.2, 1.3)]
    dense, loop = fm.SeparableSum(terms), fm.SeparableSum(terms[:2])
    assert dense.dense is not None and loop.dense is None
    x = torch.rand(2, 3, 16, 16)
    by_terms = sum(fm.separable(x, r, c) for r, c in terms)
    assert torch.allclose(dense(x), by_terms, atol=1e-5)


def test_opencv_linear_resize_8u_equals_cv2_resize():
    """Bit for bit, OpenCV's fixed point included: the tables' scales 0.2 and 0.3, and others that
    shrink and grow (not 0.5, which OpenCV resizes by area)."""
    from robustbench_lite.bench.corruptions.pictures import frost_pictures

    for picture in frost_pictures():
        x = torch.from_numpy(picture.astype(np.float64)).permute(2, 0, 1)
        for scale in (0.2, 0.3, 0.37, 0.75, 1.3):
            ours = fm.opencv_linear_resize_8u(x, scale).permute(1, 2, 0).numpy()
            assert np.array_equal(ours, cv2.resize(picture, (0, 0), fx=scale, fy=scale)), scale


def test_fft_lengths_are_the_next_5_smooth_numbers():
    smooth = [n for n in range(1, 700) if _is_5_smooth(n)]
    for n in range(1, 600):
        assert fm.fft_length(n) == min(m for m in smooth if m >= n), n


def _is_5_smooth(n: int) -> bool:
    for p in (2, 3, 5):
        while n % p == 0:
            n //= p
    return n == 1


def test_fft_correlation_equals_the_direct_sum():
    rng = np.random.default_rng(3)
    padded = torch.from_numpy(rng.random((2, 3, 27, 31)) * 255)
    kernels = torch.from_numpy(rng.random((2, 1, 5, 9)))  # one per image, broadcast over channels
    ours = fm.fft_correlation(padded.float(), kernels, 23, 23)
    direct = torch.zeros(2, 3, 23, 23, dtype=torch.float64)
    for a in range(5):
        for b in range(9):
            direct += kernels[:, :, a:a + 1, b:b + 1] * padded[:, :, a:a + 23, b:b + 23]
    assert (ours.double() - direct).abs().max() < 2e-3


def test_clipped_zoom_sum_equals_the_dense_products():
    factors = [float(f) for f in np.arange(1, 1.31, 0.03)]
    for h, w in ((70, 70), (64, 53)):
        x = torch.randint(0, 256, (2, 3, h, w), dtype=torch.uint8)
        dense = x.double() + sum(fm.separable(x.double(), fm.clipped_zoom(h, f).double(),
                                              fm.clipped_zoom(w, f).double()) for f in factors)
        assert (fm.clipped_zoom_sum(x, factors).double() - dense).abs().max() < 1e-3


def test_opencv_linear_resize_matrix_equals_cv2_resize():
    """Exact at the CIFAR frost scale 0.2 (whole-pixel samples), within a level at other scales
    (where OpenCV's 8-bit passes round in their own fixed point)."""
    from robustbench_lite.bench.corruptions.pictures import frost_pictures

    for picture in frost_pictures()[3:5]:  # 350 x 527 and 495 x 660: sides that scale to fractions
        h, w = picture.shape[:2]
        for scale in (0.2, 0.37, 1.3):
            x = torch.from_numpy(picture.astype(np.float64)).permute(2, 0, 1)
            ours = fm.separable(x, fm.opencv_linear_resize(h, scale), fm.opencv_linear_resize(w, scale))
            ours = ours.add_(0.5).floor_().clamp_(0, 255).permute(1, 2, 0).numpy()
            theirs = cv2.resize(picture, (0, 0), fx=scale, fy=scale)
            assert ours.shape == theirs.shape
            assert np.abs(ours - theirs).max() <= (0 if scale == 0.2 else 1), scale
