"""The method contract, checked for every registered method (built-ins and installed plugins)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from robustbench_lite.bench.evaluate import accuracy
from robustbench_lite.bench.method import METHODS, Batch, StepContext, as_updates
from robustbench_lite.bench.recipes import Recipe
from robustbench_lite.bench.train import TrainJob, apply_update

ALL = METHODS.names()
RECIPE = Recipe(backbone="tiny", epochs=1, batch_size=16, lr=0.05, crop_padding=2, flip=False)


def _one_step(name: str, dataset, seed: int = 0):
    """Build the method's model and apply one training step; returns (model, before, losses)."""
    method = METHODS.get(name)()
    job = TrainJob(method, name, dataset, RECIPE, seed)
    model = job.build_model()
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    ctx = StepContext(step=0, epoch=0, steps_per_epoch=4, total_steps=4,
                      num_classes=dataset.num_classes, rng=torch.Generator().manual_seed(seed),
                      device=torch.device("cpu"))
    batch = Batch(dataset.train.x[:16].float() / 255, dataset.train.y[:16])
    model.train()
    losses = []
    for update in as_updates(method.training_step(model, method.train_transform(batch, ctx), ctx)):
        apply_update(optimizer, update, name, ctx)
        losses.append({k: v.item() for k, v in update.items()})
    return model, before, losses


@pytest.mark.parametrize("name", ALL)
def test_one_step_gives_finite_losses_and_changes_parameters(name, tiny_dataset):
    model, before, losses = _one_step(name, tiny_dataset)
    assert losses and all(torch.isfinite(torch.tensor(v)) for u in losses for v in u.values())
    after = model.state_dict()
    changed = [k for k, v in before.items() if v.is_floating_point() and not torch.equal(v, after[k])]
    assert changed, "no parameter changed"


@pytest.mark.parametrize("name", ALL)
def test_same_seed_gives_identical_losses(name, tiny_dataset):
    assert _one_step(name, tiny_dataset, seed=3)[2] == _one_step(name, tiny_dataset, seed=3)[2]


@pytest.mark.parametrize("name", ALL)
def test_trained_model_evaluates_to_logits(name, tiny_dataset):
    model, _, _ = _one_step(name, tiny_dataset)
    model.eval()
    x = tiny_dataset.test.x[:8].float() / 255
    with torch.enable_grad():
        logits = model(x)
    assert logits.shape == (8, tiny_dataset.num_classes) and torch.isfinite(logits).all()
    acc = accuracy(model, tiny_dataset.test.x, tiny_dataset.test.y, batch_size=16)
    assert 0.0 <= acc <= 1.0


@pytest.mark.parametrize("name", ALL)
def test_config_is_a_frozen_documented_dataclass(name):
    cls = METHODS.get(name)
    assert dataclasses.is_dataclass(cls.Config)
    config = cls.Config()
    for field in dataclasses.fields(config):
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(config, field.name, getattr(config, field.name))
    assert cls.description() and cls.citation
    module_doc = __import__(cls.__module__, fromlist=["_"]).__doc__ or ""
    assert len(module_doc.strip()) > 40, "module docstring should cite the paper and list deviations"


def test_core_never_names_a_method():
    """Generic seams only: no file of the core mentions a specific method's module."""
    import pathlib

    core = pathlib.Path(__file__).resolve().parents[2] / "bench"
    names = [n for n in ALL if n != "erm" and len(n) > 4]
    for path in core.glob("*.py"):
        text = path.read_text()
        offenders = [n for n in names if f"methods.{n}" in text or f"methods import {n}" in text]
        assert not offenders, f"{path.name} imports {offenders}"
