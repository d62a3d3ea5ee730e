"""The protocol contract: a protocol declares its cell keys (a plugin can add an axis), whether it
trains its own models, and hands its figures to the runner."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from robustbench_lite.bench import leaderboard
from robustbench_lite.bench.cli import main
from robustbench_lite.bench.protocol import PROTOCOLS, Column, Measurement, Protocol, RunContext
from robustbench_lite.bench.results import load_runs
from robustbench_lite.bench.sweep import Grid, plan


class NoiseLevels(Protocol):
    """A plugin protocol with an axis of its own: accuracy under additive noise of a few levels."""

    @dataclass(frozen=True)
    class Config:
        levels: tuple[float, ...] = (0.1, 0.3)

    cell_keys = ("noise_level",)
    columns = (Column("noise 0.1", "accuracy", {"noise_level": "0.1"}),
               Column("noise 0.3", "accuracy", {"noise_level": "0.3"}))

    def run(self, ctx: RunContext) -> list[Measurement]:
        import torch

        from robustbench_lite.bench.evaluate import accuracy

        model = ctx.train()
        test = ctx.dataset.test
        out = []
        for level in self.config.levels:
            noisy = (test.x.float() / 255 + level * torch.randn(test.x.shape,
                     generator=torch.Generator().manual_seed(0))).clamp(0, 1)
            out.append(Measurement("accuracy", accuracy(model, noisy, test.y), len(test),
                                   {"noise_level": level}))
        return out


@pytest.fixture
def noise_protocol(monkeypatch):
    monkeypatch.setitem(PROTOCOLS._entries, "noise_levels", NoiseLevels)
    monkeypatch.setitem(PROTOCOLS._sources, "noise_levels", "test plugin")
    return NoiseLevels


def test_a_plugin_protocol_with_its_own_cell_key_writes_and_reads_results(noise_protocol,
                                                                         tmp_path):
    common = ["--preset", "smoke", "--set", "recipe.epochs=1", "--results-dir",
              str(tmp_path / "results"), "--cache-dir", str(tmp_path / "cache"), "--no-progress"]
    assert main(["run", "--method", "erm", "--protocol", "noise_levels", *common]) == 0
    assert main(["run", "--method", "erm", "--protocol", "clean", *common]) == 0
    rows = load_runs(tmp_path / "results")
    noisy = rows[rows["protocol"] == "noise_levels"]
    assert sorted(noisy["noise_level"]) == ["0.1", "0.3"] and (noisy["n"] == 450).all()
    clean = rows[rows["protocol"] == "clean"]
    assert (clean["noise_level"] == "").all()  # another protocol's axis: not part of its cells
    (path,) = (tmp_path / "results" / "runs" / "noise_levels").glob("*.csv")
    header = path.read_text().splitlines()[0].split(",")
    assert header[header.index("metric") + 1] == "noise_level"  # the declared keys only
    board = (tmp_path / "results" / "leaderboards" / "noise_levels-digits-smoke.md").read_text()
    low, high = noisy.sort_values("noise_level")["value"]
    assert f"{100 * low:.2f}" in board and f"{100 * high:.2f}" in board
    assert leaderboard.stale(tmp_path / "results") == []


def test_undeclared_cell_keys_are_refused(tmp_path):
    from robustbench_lite.bench.results import RunInfo, run_frame

    info = RunInfo("erm", "clean", "digits", "tiny", "smoke", 0, "0", "{}")
    with pytest.raises(ValueError, match="does not declare"):
        run_frame(info, [Measurement("accuracy", 0.5, 10, {"severity": 3})], ())


def test_a_low_data_only_sweep_trains_no_default_model(tmp_path: Path):
    grid = Grid(("erm", "mixup"), ("lowdata",), preset="smoke")
    todo = plan(grid, tmp_path / "results", tmp_path / "cache")
    assert [g.train for g in todo.groups] == [None, None]
    assert len(todo.jobs) == 2 and all(j.kind == "evaluate" for j in todo.jobs)
    with_clean = plan(Grid(("erm",), ("lowdata", "clean"), preset="smoke"), tmp_path / "results",
                      tmp_path / "cache")
    assert with_clean.groups[0].train is not None  # clean needs the default model


class ShapeRecorder(__import__("torch").nn.Module):
    """A 10-class model that records the image sizes it is shown."""

    def __init__(self):
        import torch

        super().__init__()
        self.sizes = set()
        self.linear = torch.nn.Linear(3, 10)

    def forward(self, x):
        self.sizes.add(tuple(x.shape[-2:]))
        return self.linear(x.mean((2, 3)))


@pytest.mark.parametrize("protocol,config", [
    ("clean", {}), ("adversarial", {"epsilons": (8 / 255,), "n_examples": 4, "pgd_steps": 1}),
    ("corruption", {"corruptions": "fog,pixelate", "severities": (1,), "n_examples": 4,
                    "reference": "erm", "figure": False})])
def test_a_recipe_that_trains_on_crops_is_evaluated_on_the_central_crop(run_context, protocol,
                                                                       config):
    """CUB stores 256 px and trains on 224 crops: every protocol evaluates the central 224 (here 12 of 16)."""
    from dataclasses import replace

    from robustbench_lite.bench.recipes import Recipe

    ctx = run_context("erm", recipe=Recipe(backbone="tiny", crop_size=12, crop_padding=0))
    ctx.given = ShapeRecorder()
    side = ctx.dataset.test.x.shape[-1]
    assert side > 12
    assert ctx.test_split().x.equal(ctx.dataset.test.x[..., (side - 12) // 2:(side - 12) // 2 + 12,
                                                        (side - 12) // 2:(side - 12) // 2 + 12])
    cls = PROTOCOLS.get(protocol)
    cls(replace(cls.Config(), **config)).run(ctx)
    assert ctx.given.sizes == {(12, 12)}
