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
