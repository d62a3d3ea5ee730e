"""Low-data protocol: k-shot subsets, GLICO's epoch factor, evaluation crop, results and the CLI."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
from torch import nn

from robustbench_lite.bench.cli import main
from robustbench_lite.bench.errors import UserError
from robustbench_lite.bench.recipes import Recipe, recipe_for
from robustbench_lite.bench.train import augment, learning_rate
from robustbench_lite.protocols import lowdata
from robustbench_lite.bench.evaluate import centre_crop
from robustbench_lite.protocols.lowdata import (LowData, epoch_factor, scaled_recipe,
                                                 shot_indices)


def test_subsets_have_k_per_class_are_nested_and_differ_across_seeds(digits):
    labels = digits.train.y
    previous = set()
    for k in (1, 2, 5, 10, 20):
        index = shot_indices(labels, 10, k, subset_seed=0)
        assert torch.bincount(labels[index], minlength=10).tolist() == [k] * 10
        assert len(set(index.tolist())) == 10 * k
        assert previous <= set(index.tolist())  # the smaller subset lies inside the larger one
        previous = set(index.tolist())
    assert torch.equal(shot_indices(labels, 10, 5, 0), shot_indices(labels, 10, 5, 0))
    assert not torch.equal(shot_indices(labels, 10, 5, 0), shot_indices(labels, 10, 5, 1))


def test_a_class_with_fewer_than_k_images_gives_all_it_has():
    labels = torch.tensor([0] * 7 + [1] * 3 + [2] * 5)
    index = shot_indices(labels, 3, 5, subset_seed=4)
    assert torch.bincount(labels[index]).tolist() == [5, 3, 5]


def test_glico_epoch_factor_and_recipe_scaling():
    assert [epoch_factor(k, 30) for k in (5, 10, 20, 30)] == [6, 3, 1, 1]
    assert epoch_factor(2, 136) == 68 and epoch_factor(200, 136) == 1
    paper = recipe_for("paper", "cub200")
    five_shot = scaled_recipe(paper, epoch_factor(5, 30))
    assert (five_shot.epochs, five_shot.step_every) == (1200, 12)
    assert scaled_recipe(Recipe(epochs=10, milestones=(4, 8)), 3).milestones == (12, 24)
    # StepLR: x0.9 every 2·factor epochs (GLICO), here with 5 steps per epoch
    lrs = [learning_rate(five_shot, epoch * 5, 5) for epoch in (0, 11, 12, 24)]
    assert lrs == pytest.approx([0.001, 0.001, 0.0009, 0.00081])
    with pytest.raises(ValueError, match="step_every >= 1"):
        Recipe(schedule="step")


def test_training_crop_of_a_smaller_size_and_central_evaluation_crop():
    x = torch.arange(4 * 3 * 8 * 8).view(4, 3, 8, 8).to(torch.uint8)
    out = augment(x, Recipe(crop_padding=0, crop_size=5, flip=False), torch.Generator().manual_seed(1))
    assert out.shape == (4, 3, 5, 5)
    for i in range(4):
        windows = [x[i, :, dy:dy + 5, dx:dx + 5] for dy in range(4) for dx in range(4)]
        assert any(torch.equal(out[i], w) for w in windows)
    assert torch.equal(centre_crop(x, 4), x[..., 2:6, 2:6])
    assert centre_crop(x, 0) is x
    with pytest.raises(UserError, match="crop_size"):
        augment(x, Recipe(crop_size=9), torch.Generator())


class Constant(nn.Module):
    """Predicts class 0 whatever the input."""

    def __init__(self) -> None:
        super().__init__()
        self.logits = nn.Parameter(torch.tensor([1.0, 0.0, 0.0, 0.0]))

    def forward(self, x):
        return self.logits.expand(len(x), -1)


def _recorded_training(ctx):
    """Replace ctx.train by a recorder of (training images, labels, recipe, kwargs)."""
    calls = []

    def train(split=None, recipe=None, **kwargs):
        calls.append((split.x.clone(), split.y.clone(), recipe, kwargs))
        return Constant()

    ctx.train = train
    return calls


def test_subsets_and_recipes_do_not_depend_on_the_method(run_context):
    protocol = LowData(lowdata.LowData.Config(shots=(2, 4), subset_seeds=(0, 1)))
    recorded = []
    for method in ("erm", "mixup"):
        ctx = run_context(method)
        recorded.append(_recorded_training(ctx))
        protocol.run(ctx)
    erm, mixup = recorded
    assert len(erm) == len(mixup) == 4
    for (xa, ya, ra, ka), (xb, yb, rb, kb) in zip(erm, mixup):
        assert torch.equal(xa, xb) and torch.equal(ya, yb) and ra == rb and ka == kb == {}
    assert not torch.equal(erm[0][0], erm[1][0])  # subset seeds 0 and 1 differ
    full = 16  # tiny_dataset: 64 training images, 4 classes
    assert [r.epochs for _, _, r, _ in erm] == [1 * full // 2] * 2 + [1 * full // 4] * 2


def test_measurements_encode_seeds_means_std_and_pretraining(run_context):
    ctx = run_context("erm")
    _recorded_training(ctx)
    rows = LowData(lowdata.LowData.Config(shots=(3, 20), subset_seeds=(0, 1, 2))).run(ctx)
    by = {(m.metric, tuple(sorted(m.cell.items()))): m for m in rows}
    chance = (ctx.dataset.test.y == 0).float().mean().item()  # the constant model's accuracy
    for k in (3, 20):
        seeds = [by["accuracy", (("shots", k), ("subset_seed", s))] for s in (0, 1, 2)]
        assert all(m.value == pytest.approx(chance) and m.n == 32 for m in seeds)
        assert by["accuracy", (("shots", k),)].value == pytest.approx(chance)
        assert by["accuracy_std", (("shots", k),)].value == pytest.approx(0.0)
    assert by["train_images", (("shots", 20),)].value == 64  # 16 per class: all of them
    assert by["classes_below_shots", (("shots", 20),)].value == 4
    assert by["epoch_factor", (("shots", 3),)].value == 5
    assert by["mean_accuracy", ()].value == pytest.approx(chance)
    assert by["pretrained", ()].value == 0.0


def test_imagenet_weights_are_used_only_when_in_the_local_torch_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    path = lowdata.weights_file("resnet50")
    assert path == tmp_path / "checkpoints" / "resnet50-0676ba61.pth"
    assert lowdata.backbone_init("resnet50", wanted=True) == {}
    path.parent.mkdir()
    path.write_bytes(b"")
    assert lowdata.backbone_init("resnet50", wanted=True) == {"pretrained": True}
    assert lowdata.backbone_init("resnet50", wanted=False) == {}
    assert lowdata.backbone_init("tiny", wanted=True) == {}


def test_leaderboard_notes_flag_runs_trained_from_scratch():
    rows = pd.DataFrame({"metric": ["pretrained", "pretrained", "pretrained"],
                         "value": [0.0, 1.0, 0.0], "method": ["erm", "tenet", "erm"],
                         "backbone": ["resnet50", "resnet50", "tiny"], "shots": ["", "", ""]})
    notes = LowData().notes(rows)
    assert notes == ["trained from scratch (no ImageNet weights in the local torch cache): "
                     "erm (resnet50)", "trained from ImageNet weights: tenet (resnet50)"]


def test_invalid_settings_are_user_errors(run_context):
    ctx = run_context("erm")
    _recorded_training(ctx)
    with pytest.raises(UserError, match="needs shots >= 1"):
        LowData(lowdata.LowData.Config(shots=(0, 5))).run(ctx)
    with pytest.raises(UserError, match="at least one value for subset_seeds"):
        LowData(lowdata.LowData.Config(shots=(5,), subset_seeds=())).run(ctx)


def test_default_shots_are_looked_up_by_dataset_name():
    assert lowdata.shots_for(lowdata.LowData.Config(), "cub200") == (5, 10, 20, 30)
    assert lowdata.shots_for(lowdata.LowData.Config(), "digits") == (5, 20)
    assert lowdata.shots_for(lowdata.LowData.Config(), "cifar10") == lowdata.GENERIC_SHOTS
    assert lowdata.shots_for(lowdata.LowData.Config(shots=(10, 5)), "cub200") == (5, 10)


def test_cli_runs_the_protocol_and_builds_the_leaderboard(tmp_path, capsys):
    results = tmp_path / "results"
    argv = ["run", "--method", "erm", "--protocol", "lowdata", "--preset", "smoke", "--no-progress",
            "--set", "protocol.shots=2,5", "--set", "protocol.subset_seeds=0,1",
            "--set", "protocol.full_shots=6", "--results-dir", str(results),
            "--cache-dir", str(tmp_path / "cache")]
    assert main(argv) == 0
    (csv,) = results.glob("runs/lowdata/*.csv")
    rows = pd.read_csv(csv, keep_default_na=False, dtype={"shots": str, "subset_seed": str})
    per_seed = rows[(rows.metric == "accuracy") & (rows.subset_seed != "")]
    assert len(per_seed) == 4 and (per_seed.n == 450).all()
    means = rows[(rows.metric == "accuracy") & (rows.subset_seed == "")].set_index("shots").value
    for k in ("2", "5"):
        assert means[k] == pytest.approx(per_seed[per_seed.shots == k].value.mean())
    assert rows[rows.metric == "mean_accuracy"].value.item() == pytest.approx(means.mean())
    assert rows[rows.metric == "epoch_factor"].value.tolist() == [3, 1]
    board = pd.read_csv(results / "leaderboards" / "lowdata-digits-smoke.csv")
    assert board["2-shot"].item() == pytest.approx(means["2"], abs=1e-5)  # CSV keeps 6 digits
    assert board["mean over shots"].item() == pytest.approx(means.mean(), abs=1e-5)
    std = per_seed[per_seed.shots == "5"].value.std()
    assert board["5-shot sd"].item() == pytest.approx(std, abs=1e-5)
    assert main(argv[:-4] + ["--set", "protocol.shots=0", *argv[-4:]]) == 2
    assert "needs shots >= 1" in capsys.readouterr().err


def test_cub_fixture_trains_on_224_crops_and_tests_on_the_centre_crop(tmp_path, monkeypatch,
                                                                      run_context):
    from test_cub import write_cub

    from robustbench_lite.bench.datasets import load_dataset

    monkeypatch.setenv("RBL_CACHE", str(tmp_path / "cache"))
    write_cub(tmp_path / "data")
    dataset = load_dataset("cub200", tmp_path / "data")
    recipe = Recipe(backbone="tiny", epochs=1, batch_size=4, crop_padding=0, crop_size=224)
    ctx = run_context("erm", dataset=dataset, recipe=recipe)
    seen = []
    monkeypatch.setattr(lowdata, "accuracy", lambda model, x, y, bs: seen.append(x.shape) or 0.5)
    rows = LowData(lowdata.LowData.Config(shots=(2,), subset_seeds=(0,))).run(ctx)
    assert seen == [(6, 3, 224, 224)]
    assert {m.metric: m.value for m in rows if m.cell == {"shots": 2}}["epoch_factor"] == 2
    assert list(ctx.cache_dir.glob("erm-cub200-*.pt"))  # a real training run went through the cache
