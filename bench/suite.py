"""The `ci` suite: every built-in method x every built-in protocol on the embedded dataset with the
smoke preset and fixed seeds, and how two measurements of it are compared. The golden set that
`robustbench-lite check` compares against is kept by `golden.py`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from .datasets import load_dataset
from .errors import UserError
from .method import METHODS
from .protocol import PROTOCOLS
from .results import cell_columns
from .train import TrainJob

RUN_KEY = ("method", "protocol", "dataset", "backbone", "preset", "seed", "metric")

# Numbers that count or flag something: equal or drifted, whatever the machine.
EXACT = ("flag_", "epoch_factor", "train_images", "classes_below_shots", "pretrained",
         "canonical_files", "parameters", "macs")
# Numbers about the machine, not the code (speed): recorded, never compared.
MACHINE = ("images_per_second",)


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
        scoped = {name: dict(pairs) for name, pairs in {**self.method_settings,
                                                         **self.protocol_settings}.items()
                  if name in methods + protocols}
        return Grid(methods, protocols, self.seeds, self.dataset, self.preset, scoped)

    def training_jobs(self) -> dict[str, TrainJob]:
        """The default model of every (method, seed), as the protocols train it, by name."""
        from .runner import resolve
        from .sweep import requests

        grid = self.grid()
        dataset = load_dataset(self.dataset, Path("data"))
        jobs = {}
        for req in requests(grid, Path("results"), Path(".cache")):
            name = f"{req.method}-s{req.seed}"
            if name not in jobs:
                resolved = resolve(req)
                jobs[name] = TrainJob(resolved.method, req.method, dataset, resolved.recipe,
                                      req.seed)
        return jobs


CI = Suite(
    # The smoke preset trains on 512 images (about 51 per class): the low-data epoch factor counts
    # from that, not from the full split, so k-shot cells cost about as much as the smoke training.
    # CIFS declares a gradient-masking risk, so AutoAttack runs on it; the suite keeps its first
    # attack, APGD-CE (a full AutoAttack would take most of the suite's time on two cores).
    protocol_settings={"adversarial": {"n_examples": "50", "autoattack_version": "custom",
                                       "autoattack_attacks": "apgd-ce"},
                       "corruption": {"n_examples": "100"},
                       "lowdata": {"shots": "5,20", "subset_seeds": "0", "full_shots": "51"}},
    # TENET's 500-step warm-up exceeds the smoke preset's 64 steps; start at once so it is exercised.
    method_settings={"tenet": {"warmup_steps": "0"}},
)


def _builtins(registry) -> list[str]:
    return [n for n in registry.names() if registry.is_loaded(n) and registry.source(n) == "builtin"]


@dataclass(frozen=True)
class Workers:
    """How the suite runs here: `processes` jobs at once with `threads` torch threads each."""

    processes: int = 2
    threads: int = 1


def run_suite(suite: Suite, results_dir: Path, cache_dir: Path, workers: Workers = Workers(),
              train_missing: bool = True, progress: bool = True):
    """Run every cell of the suite on CPU, writing run files under `results_dir`; with
    `train_missing=False` only models already in `cache_dir` are measured. Returns the sweep's
    summary; a failure other than a missing model is a UserError."""
    from . import sweep

    options = sweep.Options(workers=workers.processes, cpus_per_job=workers.threads,
                            train_missing=train_missing)
    summary = sweep.run_sweep(suite.grid(), options, results_dir, cache_dir, device="cpu",
                              progress=progress)
    other = [f for f in summary.failed if "MissingModelError" not in f.error]
    if other:
        raise UserError("the suite did not complete:\n" + "\n".join(summary.report()))
    return summary


@dataclass(frozen=True)
class Mismatch:
    method: str
    protocol: str
    metric: str
    cell: str
    expected: float | None
    got: float | None
    tolerance: float

    def line(self) -> str:
        def show(v: float | None) -> str:
            return "missing" if v is None else f"{v:.6g}"
        return (f"{self.method} / {self.protocol} / {self.metric} / {self.cell or '-'} / "
                f"expected {show(self.expected)} / got {show(self.got)} / "
                f"tolerance {self.tolerance:.3g}")


def tolerance(metric: str, n: int, run_resolution: float) -> float:
    """How far a number of the suite may move between machines when the models are the same:
    counts and flags not at all; a fraction of n examples by one example; an aggregate by one
    example of its run's smallest cell. Measured: the numbers of fixed models are identical across
    torch 2.14/2.15, AVX-512/AVX2/SSE kernels and 1/2 threads; one example is the margin."""
    if metric.startswith(EXACT):
        return 0.0
    if metric.startswith(MACHINE):
        return math.inf
    return 1.0 / n if n > 0 else run_resolution


def compare(golden: pd.DataFrame, measured: pd.DataFrame) -> list[Mismatch]:
    """Every golden number that the new measurement misses or moves beyond its tolerance, and
    every new number the golden set lacks."""
    smallest = golden[golden["n"].astype(int) > 0].groupby("run_id")["n"].min().to_dict()
    resolution = {run: 1.0 / smallest.get(run, 100) for run in golden["run_id"].unique()}
    cells = sorted(set(cell_columns(golden)) | set(cell_columns(measured)))
    key = [*RUN_KEY, *cells]
    expected = _keyed(golden, key)
    expected["tolerance"] = [tolerance(m, int(n), resolution[r]) for m, n, r in
                             zip(golden["metric"], golden["n"], golden["run_id"])]
    merged = expected.merge(_keyed(measured, key), on=key, how="outer",
                            suffixes=("_golden", "_new"))
    out = []
    for row in merged.to_dict("records"):
        want, got = _number(row.get("value_golden")), _number(row.get("value_new"))
        allowed = _number(row.get("tolerance")) or 0.0
        if want is None or got is None or abs(want - got) > allowed + 1e-9:
            cell = " ".join(f"{k}={row[k]}" for k in cells if str(row[k]) != "")
            out.append(Mismatch(row["method"], row["protocol"], row["metric"], cell, want, got,
                                allowed))
    return out


def _keyed(rows: pd.DataFrame, key: list[str]) -> pd.DataFrame:
    rows = rows.reindex(columns=[*key, "value"], fill_value="").copy()
    for column in key:
        rows[column] = rows[column].astype(str)
    return rows


def _number(value) -> float | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)
