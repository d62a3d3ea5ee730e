"""The `ci` suite: every built-in method x every built-in protocol on the embedded dataset with the
smoke preset and fixed seeds. Its run files under `results/runs/` are the golden numbers that
`robustbench-lite check` re-measures and compares under per-metric tolerances.
"""

from __future__ import annotations

import math
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from .errors import UserError
from .method import METHODS
from .protocol import PROTOCOLS
from .results import CELL_KEYS, load_runs

KEY = ("method", "protocol", "dataset", "backbone", "preset", "seed", "metric", *CELL_KEYS)

# Absolute tolerance per metric (fractions); flags must match exactly. Re-training on another CPU
# can move a smoke-preset accuracy by a few test images; a real regression moves it far more.
TOLERANCE = {"flag": 0.0}
DEFAULT_TOLERANCE = 0.02
SUITE_WORKERS = 2


@dataclass(frozen=True)
class Suite:
    """A grid of runs: methods x protocols on one dataset and preset, with per-protocol settings."""

    dataset: str = "digits"
    preset: str = "smoke"
    seeds: tuple[int, ...] = (0,)
    methods: tuple[str, ...] = ()  # empty: every built-in method
    protocols: tuple[str, ...] = ()  # empty: every built-in protocol
    protocol_settings: dict[str, dict[str, str]] = field(default_factory=dict)
    method_settings: dict[str, dict[str, str]] = field(default_factory=dict)

    def grid(self):
        """The suite as a sweep grid, each setting scoped to its method or protocol."""
        from .sweep import Grid

        methods = tuple(self.methods or _builtins(METHODS))
        protocols = tuple(self.protocols or _builtins(PROTOCOLS))
        overrides = {f"{name}.{k}": v
                     for settings in (self.method_settings, self.protocol_settings)
                     for name, pairs in settings.items() if name in methods + protocols
                     for k, v in pairs.items()}
        return Grid(methods, protocols, self.seeds, self.dataset, self.preset, overrides)


CI = Suite(
    # The smoke preset trains on 512 images (about 51 per class): the low-data epoch factor counts
    # from that, not from the full split, so k-shot cells cost about as much as the smoke training.
    protocol_settings={"adversarial": {"n_examples": "100"}, "corruption": {"n_examples": "100"},
                       "lowdata": {"shots": "5,20", "subset_seeds": "0", "full_shots": "51"}},
    # TENET's 500-step warm-up exceeds the smoke preset's 64 steps; start at once so it is exercised.
    method_settings={"tenet": {"warmup_steps": "0"}},
)


def _builtins(registry) -> list[str]:
    return [n for n in registry.names() if registry.is_loaded(n) and registry.source(n) == "builtin"]


def run_suite(suite: Suite, results_dir: Path, cache_dir: Path, progress: bool = True) -> None:
    """Run every request of the suite, writing run files under `results_dir`: a local sweep of
    single-threaded jobs, one per core (two at most), so the numbers do not depend on the core
    count of the machine that checks them."""
    from . import sweep

    summary = sweep.run_sweep(suite.grid(), sweep.Options(workers=SUITE_WORKERS, cpus_per_job=1),
                              results_dir, cache_dir, progress=progress)
    if not summary.ok:
        raise UserError("the suite did not complete:\n" + "\n".join(summary.report()))


@dataclass(frozen=True)
class Mismatch:
    method: str
    protocol: str
    metric: str
    cell: str
    expected: float | None
    got: float | None

    def line(self) -> str:
        def show(v: float | None) -> str:
            return "missing" if v is None else f"{v:.6g}"
        return (f"{self.method} / {self.protocol} / {self.metric} / {self.cell or '-'} / "
                f"expected {show(self.expected)} / got {show(self.got)}")


def compare(golden: pd.DataFrame, measured: pd.DataFrame) -> list[Mismatch]:
    """Every golden number that the new measurement misses or moves beyond its tolerance."""
    merged = _keyed(golden).merge(_keyed(measured), on=list(KEY), how="outer",
                                  suffixes=("_golden", "_new"), indicator=True)
    out = []
    for row in merged.to_dict("records"):
        expected, got = _number(row.get("value_golden")), _number(row.get("value_new"))
        tolerance = TOLERANCE.get(row["metric"].split("_")[0], DEFAULT_TOLERANCE)
        if expected is None or got is None or abs(expected - got) > tolerance + 1e-12:
            cell = " ".join(f"{k}={row[k]}" for k in CELL_KEYS if str(row[k]) != "")
            out.append(Mismatch(row["method"], row["protocol"], row["metric"], cell, expected, got))
    return out


def _keyed(rows: pd.DataFrame) -> pd.DataFrame:
    rows = rows[list(KEY) + ["value"]].copy()
    for key in KEY:
        rows[key] = rows[key].astype(str)
    return rows


def _number(value) -> float | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)


def golden_rows(results_dir: Path, suite: Suite = CI) -> pd.DataFrame:
    """The committed run rows that belong to the suite's grid."""
    rows = load_runs(results_dir)
    mask = (rows.preset == suite.preset) & (rows.dataset == suite.dataset)
    mask &= rows.seed.astype(str).isin([str(s) for s in suite.seeds])
    if suite.methods:
        mask &= rows.method.isin(suite.methods)
    if suite.protocols:
        mask &= rows.protocol.isin(suite.protocols)
    return rows[mask]


def check(results_dir: Path, suite: Suite = CI, progress: bool = True) -> list[Mismatch]:
    """Re-train and re-run the suite from scratch and compare with the golden run files."""
    with tempfile.TemporaryDirectory() as scratch:
        run_suite(suite, Path(scratch) / "results", Path(scratch) / "cache", progress)
        measured = load_runs(Path(scratch) / "results")
    return compare(golden_rows(results_dir, suite), measured)


def update(results_dir: Path, suite: Suite = CI, progress: bool = True) -> int:
    """Re-run the suite from scratch and make its run files the new golden numbers."""
    with tempfile.TemporaryDirectory() as scratch:
        fresh = Path(scratch) / "results"
        run_suite(suite, fresh, Path(scratch) / "cache", progress)
        for old in golden_rows(results_dir, suite)["run_id"].unique():
            for path in (results_dir / "runs").glob(f"*/{old}.*"):
                path.unlink()
        new = sorted((fresh / "runs").glob("*/*"))
        for path in new:
            target = results_dir / "runs" / path.parent.name / path.name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)
    return len(new) // 2
