"""Fidelity of the engine: a trained model errs as much on the engine's corruptions as on the
reference backend's (same parameter table and per-image seeds), corruption by corruption; and on
natural photographs at 32, 64 and 224 px (the CIFAR, Tiny-ImageNet and ImageNet tables), where the
embedded 8x8 digits hide rounding and border gaps, the engine's pixels equal the reference's to
within a grey level at every severity (the random corruptions given the engine's own random
draws)."""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest
import torch
from PIL import Image

from robustbench_lite.bench.corruptions import engine as eng
from robustbench_lite.bench.corruptions import reference as ref
from robustbench_lite.bench.corruptions.random_streams import Streams
from robustbench_lite.bench.corruptions.tables import ALL, SEVERITIES, image_seed, table_for
from robustbench_lite.bench.method import METHODS
from robustbench_lite.bench.recipes import Recipe
from robustbench_lite.bench.train import TrainJob, trained_model

from corruption_helpers import photographs

pytest.importorskip("imagecorruptions")

N_IMAGES = 200  # the first 200 of the 450 digits test images, to keep the test short
SEVERITIES_TRAINED = (1, 3, 5)
SIZES = [32, 64, pytest.param(224, marks=pytest.mark.slow)]
SEEDS = [101, 202, 303, 404, 505, 606]

DETERMINISTIC = ("gaussian_blur", "defocus_blur", "zoom_blur", "contrast", "brightness", "saturate",
                 "pixelate", "jpeg_compression")
ALIGNED = ("gaussian_noise", "speckle_noise", "glass_blur", "motion_blur", "snow", "frost", "fog",
           "elastic_transform", "spatter")
# shot and impulse noise stay out: the engine draws Poisson counts by inversion and salt or pepper
# from raw bits, which no reference draw can be handed (test_engine compares their distributions)
assert set(DETERMINISTIC) | set(ALIGNED) | {"shot_noise", "impulse_noise"} == set(ALL)


@pytest.mark.slow
def test_engine_errors_match_the_reference_within_two_points(digits, tmp_path):
    """A trained model's error per corruption (severities 1, 3, 5) on the engine's images and on
    the reference's, both from the protocol's per-image seeds. The reference is handed the engine's
    draws where it can be (`_EngineDraws`), so a gap measures the pixels, not two random streams;
    shot and impulse noise cannot be aligned, so theirs may also differ by sampling: at most three
    standard deviations of the difference of two error rates over the images."""
    recipe = Recipe(backbone="tiny", epochs=3, batch_size=64, lr=0.05, crop_padding=2, flip=False)
    job = TrainJob(METHODS.get("erm")(), "erm", digits, recipe, seed=0)
    model = trained_model(job, torch.device("cpu"), tmp_path, progress=False).eval()
    test = digits.test.subset(torch.arange(N_IMAGES))
    images, table = test.x.permute(0, 2, 3, 1).contiguous().numpy(), table_for(32)
    engine, reference = {}, {}
    for name in ALL:
        ours, theirs = [], []
        for severity in SEVERITIES_TRAINED:
            seeds = [image_seed(0, name, severity, i) for i in range(len(images))]
            ours.append(_error(model, _engine(name, images, severity, table, seeds), test.y))
            theirs.append(_error(model, _reference(name, images, severity, table,
                                                   name in ALIGNED, seeds), test.y))
        engine[name], reference[name] = np.mean(ours), np.mean(theirs)
    assert 0.05 < sum(reference.values()) / 19 < 0.9  # a model that is neither perfect nor random
    _assert_within_bounds(engine, reference, len(images) * len(SEVERITIES_TRAINED))


def _photograph_crops(per_class: int, seed: int) -> tuple[np.ndarray, torch.Tensor]:
    """(6 * per_class, 224, 224, 3) uint8 crops of the full photographs of `PHOTOGRAPHS`, each
    rescaled to a random short side in [240, 420) and cropped at random; label = the photograph."""
    import skimage.data

    from corruption_helpers import PHOTOGRAPHS

    rng, crops, labels = np.random.default_rng(seed), [], []
    for label, name in enumerate(PHOTOGRAPHS):
        photo = Image.fromarray(getattr(skimage.data, name)())
        for _ in range(per_class):
            scale = int(rng.integers(240, 420)) / min(photo.size)
            size = tuple(max(224, round(side * scale)) for side in photo.size)
            pixels = np.asarray(photo.resize(size, Image.BICUBIC))
            top, left = (int(rng.integers(0, n - 223)) for n in pixels.shape[:2])
            crops.append(pixels[top:top + 224, left:left + 224])
            labels.append(label)
    return np.stack(crops), torch.tensor(labels)


def _fixed_photograph_model(images: np.ndarray, labels: torch.Tensor) -> torch.nn.Module:
    """A fixed 224-px classifier: seeded random convolutional features, standardised, and a ridge
    regression head fitted in closed form to one-hot `labels`."""
    torch.manual_seed(0)
    nn = torch.nn
    features = nn.Sequential(nn.Conv2d(3, 32, 8, 4), nn.ReLU(), nn.Conv2d(32, 64, 5, 2), nn.ReLU(),
                             nn.Conv2d(64, 64, 3, 2), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten())
    with torch.no_grad():
        f = features(torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255)
    mean, std = f.mean(0), f.std(0) + 1e-6
    z = torch.cat([(f - mean) / std, torch.ones(len(f), 1)], 1)
    weights = torch.linalg.solve(z.T @ z + 10 * torch.eye(z.shape[1]),
                                 z.T @ nn.functional.one_hot(labels).float())
    head = nn.Linear(z.shape[1] - 1, weights.shape[1])
    head.weight.data, head.bias.data = (weights[:-1] / std[:, None]).T.contiguous(), (
        weights[-1] - (mean / std) @ weights[:-1])
    return nn.Sequential(features, head).eval()


@pytest.mark.slow
def test_engine_errors_match_the_reference_at_224_px():
    """The same comparison at ImageNet size: a fixed classifier of 224-px crops of the six
    photographs (clean accuracy 100 %), 18 held-out crops at severities 1, 3, 5, the ImageNet
    table; at most two points per corruption (shot and impulse noise: three standard deviations)."""
    model = _fixed_photograph_model(*_photograph_crops(40, seed=0))
    images, labels = _photograph_crops(3, seed=1)
    assert _error(model, images, labels) == 0
    table, engine, reference = table_for(224), {}, {}
    for name in ALL:
        ours, theirs = [], []
        for severity in SEVERITIES_TRAINED:
            seeds = [image_seed(0, name, severity, i) for i in range(len(images))]
            ours.append(_error(model, _engine(name, images, severity, table, seeds), labels))
            theirs.append(_error(model, _reference(name, images, severity, table,
                                                   name in ALIGNED, seeds), labels))
        engine[name], reference[name] = np.mean(ours), np.mean(theirs)
    print({name: (round(float(engine[name]) * 100, 1), round(float(reference[name]) * 100, 1)) for name in ALL})
    assert 0.05 < sum(reference.values()) / 19 < 0.9
    _assert_within_bounds(engine, reference, len(images) * len(SEVERITIES_TRAINED))


def _assert_within_bounds(engine: dict, reference: dict, n: int) -> None:
    """Every |error gap| at most 2 points; shot and impulse noise (draws that cannot be aligned) at
    most three standard deviations of the difference of two error rates over `n` images."""
    bound = {name: 0.02 if name in DETERMINISTIC + ALIGNED else 3 * math.sqrt(
        (engine[name] * (1 - engine[name]) + reference[name] * (1 - reference[name])) / n)
        for name in ALL}
    gaps = {name: abs(engine[name] - reference[name]) for name in ALL}
    assert all(gaps[k] <= bound[k] for k in ALL), {
        k: (round(v * 100, 2), round(bound[k] * 100, 2)) for k, v in gaps.items() if v > bound[k]}


def _error(model, images: np.ndarray, labels: torch.Tensor) -> float:
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    with torch.no_grad():
        return (model(x).argmax(1) != labels).float().mean().item()


class _EngineDraws:
    """A stand-in for the reference's `numpy.random.Generator` that returns, call after call, the
    values the engine draws for one image (same streams, same layout), so both backends corrupt
    with the same randomness. `values`: what each call returns, in the reference's call order; a
    ("pool", u) entry serves uniform draws in [-high, high) from u in [-1, 1) until exhausted
    (fog's level-by-level jitter); a ("fraction", f) entry serves an integer draw in [low, high)
    as the engine makes it, low + floor(f * (high - low)) (frost's crop offsets)."""

    def __init__(self, values: list) -> None:
        self.values, self.used = list(values), 0

    def _next(self, low=0, high=1, size=None):
        value = self.values[0]
        if isinstance(value, tuple) and value[0] == "pool":
            count = math.prod(size)
            self.used += count
            return value[1][self.used - count:self.used].reshape(size) * high
        self.values.pop(0)
        if isinstance(value, tuple) and value[0] == "fraction":
            return low + math.floor(value[1] * (high - low))
        assert size is None or np.shape(value) == tuple(np.atleast_1d(size)), (np.shape(value), size)
        return value

    def normal(self, loc=0.0, scale=1.0, size=None):
        return self._next(size=size)

    def uniform(self, low=0.0, high=1.0, size=None):
        return self._next(low, high, size)

    def integers(self, low, high=None, size=None):
        return self._next(*((0, low) if high is None else (low, high)), size)


def _engine_draws(name: str, params, table, seed: int, h: int, w: int) -> list:
    """The engine's random draws for one image (see each corruption in engine.py), as the values
    the reference's calls return: numpy HWC layout, loc and scale applied where the reference's
    call applies them."""
    noise = Streams([seed])
    if name in ("gaussian_noise", "speckle_noise"):
        return [noise.normal(0, (3, h, w))[0].permute(1, 2, 0).double().numpy() * params]
    if name == "glass_blur":
        _, delta, iterations = params
        rows, cols = len(range(h - delta, delta, -1)), len(range(w - delta, delta, -1))
        moves = noise.integers(0, (iterations, rows * cols, 2), -delta, delta)[0]
        return [moves.view(iterations, rows, cols, 2).numpy()]
    if name == "motion_blur":
        return [noise.uniform(0, (), -45, 45)[0].item()]
    if name in ("snow", "spatter"):
        loc, scale = params[:2]
        draws = [noise.normal(0, (1, h, w))[0, 0].double().numpy() * scale + loc]
        return draws + ([noise.uniform(1, (), -135, -45)[0].item()] if name == "snow" else [])
    if name == "elastic_transform":
        shifts = noise.uniform(1, (2, h, w), -1, 1)[0].double().numpy()
        return [noise.uniform(0, (3, 2), -params[2], params[2])[0].numpy(), shifts[0], shifts[1]]
    if name == "frost":
        fractions = noise.uniform(1, (2,))[0].tolist()
        choice = noise.integers(0, (), 0, table.frost_pictures)[0].item()
        return [choice, ("fraction", fractions[0]), ("fraction", fractions[1])]
    if name == "fog":
        size = 1 << (max(h, w) - 1).bit_length()
        return [("pool", noise.uniform(1, (size * size,), -1, 1)[0].double().numpy())]
    raise KeyError(name)


def _reference(name: str, images: np.ndarray, severity: int, table, aligned: bool,
               seeds: list[int] = SEEDS) -> np.ndarray:
    if not aligned:
        return ref.corrupt_batch(images, name, severity, table, seeds)
    params = table.params(name, severity)
    out = [ref.CORRUPTIONS[name](image, params, _EngineDraws(_engine_draws(name, params, table, seed,
                                                                           *image.shape[:2])), table)
           for image, seed in zip(images, seeds)]
    return np.clip(np.stack(out), 0, 255).astype(np.uint8)


def _engine(name: str, images: np.ndarray, severity: int, table,
            seeds: list[int] = SEEDS) -> np.ndarray:
    x = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
    return eng.corrupt(x, name, severity, table, seeds).permute(0, 2, 3, 1).numpy()


pictures = functools.cache(photographs)


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("name", DETERMINISTIC + ALIGNED)
def test_engine_equals_the_reference_on_photographs(name, size):
    """At least 99 % of the pixel values within one grey level, at every severity; the corruptions
    that draw random numbers get the engine's draws in the reference (`_EngineDraws`)."""
    images, table = pictures(size), table_for(size)
    shares = {}
    for severity in SEVERITIES:
        ours = _engine(name, images, severity, table).astype(int)
        theirs = _reference(name, images, severity, table, name in ALIGNED).astype(int)
        shares[severity] = float((np.abs(ours - theirs) <= 1).mean())
    assert min(shares.values()) >= 0.99, shares


def test_aligned_draws_reach_the_reference():
    """The stand-in generator is what the reference reads: a different seed changes its output."""
    image, table = pictures(32)[:1], table_for(32)
    for name in ALIGNED:
        params = table.params(name, 3)
        a, b = (ref.CORRUPTIONS[name](image[0], params, _EngineDraws(_engine_draws(
            name, params, table, seed, 32, 32)), table) for seed in (1, 2))
        assert not np.array_equal(a, b), name


@pytest.mark.parametrize("size", SIZES)
def test_pixelate_equals_pillow_box_resizing(size):
    """Pillow's BOX resize down then back up, the reference generator's pixelate, exactly (Pillow's
    fixed-point weights and its rounding half up, which a float resize rounding half to even misses
    by 0.1 to 0.5 grey levels on average)."""
    images, table = pictures(size), table_for(size)
    for severity in SEVERITIES:
        factor = table.params("pixelate", severity)
        small = (int(size * factor),) * 2
        expected = np.stack([np.asarray(Image.fromarray(image).resize(small, Image.BOX)
                                        .resize((size, size), Image.BOX)) for image in images])
        got = _engine("pixelate", images, severity, table)
        diff = got.astype(int) - expected
        assert np.array_equal(got, expected), (severity, (np.abs(diff) <= 1).mean(), diff.mean())
