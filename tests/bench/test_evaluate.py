"""Evaluation batches bounded by memory: the activation estimate, and predictions that do not
depend on the batch it picks."""

from __future__ import annotations

import torch
from torch import nn

from robustbench_lite.bench import evaluate
from robustbench_lite.bench.evaluate import activation_bytes, bounded_batch, predict

CPU = torch.device("cpu")


def _wide_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(),
                         nn.Sequential(nn.Conv2d(16, 8, 3, stride=2, padding=1), nn.ReLU()),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5))


def test_activation_bytes_sums_every_leaf_output_for_one_image():
    """conv 16x64x64, relu 16x64x64, conv 8x32x32, relu 8x32x32, pool 8, flatten 8, linear 5
    float32 values; containers are not counted twice."""
    expected = (2 * 16 * 64 * 64 + 2 * 8 * 32 * 32 + 8 + 8 + 5) * 4
    assert activation_bytes(_wide_model(), (3, 64, 64), CPU) == expected


def test_bounded_batch_fits_the_budget_and_keeps_small_batches():
    model, images = _wide_model(), torch.zeros(100, 3, 64, 64, dtype=torch.uint8)
    per_image = activation_bytes(model, (3, 64, 64), CPU)
    assert bounded_batch(model, images, 50, CPU, budget=10 * per_image) == 10
    assert bounded_batch(model, images, 50, CPU, budget=10 * per_image, factor=2) == 5
    assert bounded_batch(model, images, 8, CPU, budget=10 * per_image) == 8
    assert bounded_batch(model, images, 50, CPU, budget=per_image // 2) == 1
    assert bounded_batch(model, images, 50, CPU) == 50  # 0.4 MB per image: the 2 GiB budget


def test_predict_takes_bounded_batches_with_the_same_predictions(monkeypatch):
    model = _wide_model()
    images = torch.randint(0, 256, (23, 3, 64, 64), generator=torch.Generator().manual_seed(1),
                           dtype=torch.uint8)
    whole = predict(model, images, 500)
    seen = []
    model.register_forward_pre_hook(lambda module, inputs: seen.append(len(inputs[0])))
    per_image = activation_bytes(model, (3, 64, 64), CPU)
    monkeypatch.setattr(evaluate, "memory_budget", lambda device: 4 * per_image)
    assert torch.equal(predict(model, images, 500), whole)
    assert seen == [4, 4, 4, 4, 4, 3]
