"""One small sweep on the local process pool, shared by the sweep and distributed tests."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from robustbench_lite.bench.sweep import Grid, Options, Summary, run_sweep

# erm and mixup x clean and adversarial on the embedded digits, smoke preset; the adversarial
# protocol measures 50 test images (clean has no such setting, so it is left as is).
GRID = Grid(methods=("erm", "mixup"), protocols=("clean", "adversarial"), seeds=(0,),
            dataset="digits", preset="smoke", overrides={"protocol": {"n_examples": "50"}})


@dataclass
class SweepRun:
    results: Path
    cache: Path
    summary: Summary


def sweep_into(root: Path, executor: str, grid: Grid = GRID) -> SweepRun:
    """Run `grid` on `executor` (2 workers, one thread per job) into root/results, root/cache."""
    options = Options(executor=executor, workers=2, cpus_per_job=1)
    summary = run_sweep(grid, options, root / "results", root / "cache", progress=False)
    return SweepRun(root / "results", root / "cache", summary)


@pytest.fixture
def grid() -> Grid:
    return GRID


@pytest.fixture
def sweep_on():
    return sweep_into


@pytest.fixture(scope="session")
def local_sweep(tmp_path_factory) -> SweepRun:
    return sweep_into(tmp_path_factory.mktemp("local"), "local")
