"""AugMix: seeded per-image views and the Jensen-Shannon consistency loss."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import numpy as np

from robustbench_lite.bench.errors import UserError
from robustbench_lite.bench.method import Batch, StepContext
from robustbench_lite.bench.runner import configured_method
from robustbench_lite.methods.augmix import (OPERATIONS, AugMix, augmix_views, jensen_shannon,
                                             operation_parameter)


def context(seed: int = 0) -> StepContext:
    return StepContext(0, 0, 1, 1, 4, torch.Generator().manual_seed(seed), torch.device("cpu"))


def batch(tiny_dataset, n: int = 8) -> Batch:
    split = tiny_dataset.train
    return Batch(split.x[:n].float() / 255, split.y[:n])


def test_views_keep_shape_dtype_and_range_but_change_the_images(tiny_dataset):
    clean = batch(tiny_dataset)
    out = AugMix().train_transform(clean, context())
    assert out.x is clean.x and out.y is clean.y
    assert len(out.views) == 2
    for view in out.views:
        assert view.shape == clean.x.shape and view.dtype == torch.float32
        assert view.min() >= 0 and view.max() <= 1
        changed = (view != clean.x).flatten(1).any(1)
        assert changed.float().mean() >= 0.75  # a weak chain can leave an image nearly unchanged
        # the mix is kept in float, as in the reference: not truncated back to 256 levels
        assert (view * 255 - (view * 255).round()).abs().max() > 0.01
    assert not torch.equal(out.views[0], out.views[1])


def test_views_are_a_function_of_the_seed_and_leave_global_state_alone(tiny_dataset):
    clean, method = batch(tiny_dataset), AugMix()
    state, threads = torch.get_rng_state(), torch.get_num_threads()
    first = method.train_transform(clean, context(seed=3)).views
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.get_num_threads() == threads
    torch.manual_seed(123)  # the global generator must not matter
    again = method.train_transform(clean, context(seed=3)).views
    other = method.train_transform(clean, context(seed=4)).views
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not torch.equal(first[0], other[0])


def test_each_image_gets_its_own_operation_chain(tiny_dataset):
    same = batch(tiny_dataset, n=1).x.repeat(6, 1, 1, 1)
    view, = augmix_views(same, AugMix.Config(), 1, seed=0)
    assert len({tuple(v.flatten()[:64].tolist()) for v in view}) == 6


def test_operation_strengths_follow_the_reference_sampling_rule():
    """Rotation: level ~ U(0.1, 3), degrees = int(level * 30 / 10) with a random sign, so |angle|
    takes every whole degree 0..8 with probability (1/3) / 2.9 (0: (1/3 - 0.1) / 2.9), where
    torchvision's levels give only 0, 3.33 and 6.67 degrees."""
    rng = np.random.default_rng(0)
    angles = np.array([operation_parameter("rotate", 3, 32, rng) for _ in range(40000)])
    magnitudes, counts = np.unique(np.abs(angles), return_counts=True)
    assert magnitudes.tolist() == list(range(9))
    expected = np.array([(1 / 3 - 0.1) / 2.9] + [(1 / 3) / 2.9] * 8)
    assert np.abs(counts / len(angles) - expected).max() < 0.01
    assert abs((angles > 0).sum() - (angles < 0).sum()) / len(angles) < 0.02
    shear = np.array([operation_parameter("shear_x", 3, 32, rng) for _ in range(20000)])
    assert np.unique(shear).size == shear.size  # continuous
    assert 0.003 <= np.abs(shear).min() and np.abs(shear).max() < 0.09
    assert np.abs(np.abs(shear).mean() - 0.3 * 1.55 / 10) < 0.002  # E[level] = 1.55
    bits = {operation_parameter("posterize", 3, 32, rng) for _ in range(2000)}
    assert bits == {4.0, 3.0}  # int(level * 4 / 10) is 0 or 1 below level 3
    translate = {abs(operation_parameter("translate_x", 3, 32, rng)) for _ in range(2000)}
    assert translate == {0.0, 1.0, 2.0, 3.0}  # int(level * 32/3 / 10) for level < 3


def test_jensen_shannon_is_zero_for_equal_logits_and_matches_hand_computation():
    z = torch.tensor([[1.0, -0.5, 0.2], [0.0, 0.3, 2.0]])
    torch.testing.assert_close(jensen_shannon(z, z, z), torch.tensor(0.0))
    logits = [z, z.flip(1), z * 2]
    probs = [[[math.exp(v) for v in row] for row in t.tolist()] for t in logits]
    probs = [[[v / sum(row) for v in row] for row in t] for t in probs]
    total = 0.0
    for i in range(2):
        mix = [sum(p[i][c] for p in probs) / 3 for c in range(3)]
        total += sum(p[i][c] * math.log(p[i][c] / mix[c]) for p in probs for c in range(3)) / 3
    value = jensen_shannon(*logits)
    assert value > 0
    torch.testing.assert_close(value, torch.tensor(total / 2))


def test_training_step_forwards_once_and_returns_ce_and_weighted_jsd(tiny_dataset):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 16 * 16, 4))
    calls = []
    model.register_forward_hook(lambda m, inp, out: calls.append(len(inp[0])))
    method = AugMix()
    views = method.train_transform(batch(tiny_dataset), context())
    losses = method.training_step(model, views, context())
    assert calls == [24]  # clean and both views in one concatenated batch
    assert set(losses) == {"ce", "jsd"}
    logits = [model(x) for x in (views.x, *views.views)]
    torch.testing.assert_close(losses["ce"], F.cross_entropy(logits[0], views.y))
    torch.testing.assert_close(losses["jsd"], 12 * jensen_shannon(*logits))
    assert losses["jsd"] > 0


def test_follows_the_paper_operation_set_and_rejects_bad_severity():
    config = AugMix().config
    assert (config.severity, config.mixture_width, config.chain_depth, config.all_ops) == \
        (3, 3, -1, False)
    assert OPERATIONS == ("autocontrast", "equalize", "posterize", "rotate", "solarize", "shear_x",
                          "shear_y", "translate_x", "translate_y")
    with pytest.raises(UserError, match="severity"):
        configured_method("augmix", {"severity": "0"})
