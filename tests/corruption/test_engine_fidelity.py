"""Fidelity of the engine: a trained model errs as much on the engine's corruptions as on the
reference backend's (same parameter table and per-image seeds), corruption by corruption."""

from __future__ import annotations

import pytest
import torch

from robustbench_lite.bench.method import METHODS
from robustbench_lite.bench.perf import corruption_errors
from robustbench_lite.bench.recipes import Recipe
from robustbench_lite.bench.train import TrainJob, trained_model

pytest.importorskip("imagecorruptions")

N_IMAGES = 200  # the first 200 of the 450 digits test images, to keep the test short
SEVERITIES = (1, 3, 5)


@pytest.mark.slow
def test_engine_errors_match_the_reference_within_two_points(digits, tmp_path):
    recipe = Recipe(backbone="tiny", epochs=3, batch_size=64, lr=0.05, crop_padding=2, flip=False)
    job = TrainJob(METHODS.get("erm")(), "erm", digits, recipe, seed=0)
    model = trained_model(job, torch.device("cpu"), tmp_path, progress=False)
    test = digits.test.subset(torch.arange(N_IMAGES))
    engine = corruption_errors(model, test, "engine", severities=SEVERITIES)
    reference = corruption_errors(model, test, "reference", severities=SEVERITIES)
    assert set(engine) == set(reference) and len(engine) == 19
    assert 0.05 < sum(reference.values()) / 19 < 0.9  # a model that is neither perfect nor random
    gaps = {name: abs(engine[name] - reference[name]) for name in engine}
    assert max(gaps.values()) <= 0.02, {k: round(v * 100, 1) for k, v in gaps.items() if v > 0.02}
