"""AugMix: seeded per-image views and the Jensen-Shannon consistency loss."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from robustbench_lite.bench.errors import UserError
from robustbench_lite.bench.method import Batch, StepContext
from robustbench_lite.methods.augmix import AugMix, augmix_views, jensen_shannon


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
        torch.testing.assert_close(view * 255, (view * 255).round())  # uint8 levels
        changed = (view != clean.x).flatten(1).any(1)
        assert changed.float().mean() >= 0.75  # level 0 can leave an image unchanged
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
    # torchvision shares one chain across a batched call, so the transform must see single images
    method, shapes = AugMix(), []
    augment = method.transform
    method.transform = lambda image: shapes.append(tuple(image.shape)) or augment(image)
    method.train_transform(batch(tiny_dataset, n=5), context())
    assert shapes == [(3, 16, 16)] * 10


def test_conversion_to_uint8_and_back_is_exact(tiny_dataset):
    clean = batch(tiny_dataset)
    view, = augmix_views(clean.x, torch.nn.Identity(), 1, seed=0)
    assert torch.equal(view, clean.x)


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
    method = AugMix()
    assert method.transform.all_ops is False and method.transform.severity == 3
    with pytest.raises(UserError, match="severity"):
        AugMix(AugMix.Config(severity=0))
