"""Common corruptions: accuracy per (corruption, severity), mean corruption error, mCE, relative mCE.

Hendrycks & Dietterich, "Benchmarking Neural Network Robustness to Common Corruptions and
Perturbations" (ICLR 2019) <https://arxiv.org/abs/1903.12261>.

Data: the canonical release under --data-root when present (cifar10 -> CIFAR-10-C, cifar100 ->
CIFAR-100-C, tinyimagenet -> Tiny-ImageNet-C, imagenet -> ImageNet-C), otherwise the test split
corrupted on the fly by a named backend (the batched engine by default, or the per-image reference)
with the parameter table of the nearest image size (`bench/corruptions/tables.py`), cached under
--cache-dir in the CIFAR-C layout. Generated sets use a fixed seed (`seed`), so every method and run
seed sees the same corrupted images.

Headline numbers use the 15 benchmark corruptions; the 4 extra ones are reported apart. mCE and
relative mCE are normalised by a named reference (`reference`, recorded in the run's sidecar): a
published AlexNet table, or the run of a baseline method (ERM by default for non-ImageNet sizes)
with the same dataset, recipe, seed and protocol settings. They are derived when the leaderboards
are built, from the run files present then, so the order in which the runs were made does not
matter; a missing reference run leaves a footnote. A method that is its own reference has
mCE = relative mCE = 100 %.

"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from robustbench_lite.bench.corruptions.sets import (
    CANONICAL_FOLDERS, CorruptionArrays, CorruptionFolders, generated_arrays)
from robustbench_lite.bench.corruptions.tables import (
    ALL, BENCHMARK, EXTRA, SEVERITIES, load_backend, parse_corruptions, table_for)
from robustbench_lite.bench.config import setting
from robustbench_lite.bench.errors import UserError
from robustbench_lite.bench.evaluate import predict
from robustbench_lite.bench.method import METHODS
from robustbench_lite.bench.protocol import PROTOCOLS, Column, Measurement, Protocol, RunContext
from robustbench_lite.bench.recipes import comparable, identity, recipe_for
from robustbench_lite.bench.results import cell_columns

from . import corruption_metrics as metrics
from .corruption_figures import comparison_figure, severity_figure

log = logging.getLogger(__name__)

AUTO = "auto"


_NOT_COMPARED = ("reference", "figure")  # settings that do not change the measured errors


@PROTOCOLS.register("corruption")
class Corruption(Protocol):
    """Common corruptions (15 + 4 extra, 5 severities): mean corruption error, mCE, relative mCE."""

    @dataclass(frozen=True)
    class Config:
        """Settings of the corruption protocol."""

        corruptions: str = "all"  # all | benchmark | extra | comma-separated names
        # severities evaluated (mCE against a published table needs all five)
        severities: tuple[int, ...] = setting(SEVERITIES, low=1, high=5, nonempty=True)
        # test images per cell (first N; evenly spaced for folders); 0 = all
        n_examples: int = setting(0, low=0)
        backend: str = "engine"  # generator of on-the-fly sets: engine (batched) | reference (per image)
        reference: str = AUTO  # alexnet_imagenet | alexnet_cifar10_pushpull | a method name | auto
        seed: int = setting(0, low=0)  # seed of generated sets (independent of the run seed)
        figure: bool = True  # the runner writes the severity-curve PNG under <results>/figures/

        def __post_init__(self) -> None:
            parse_corruptions(self.corruptions)  # unknown names: a one-line error
            if len(set(self.severities)) != len(self.severities):
                raise ValueError(f"severities {self.severities} lists a severity twice")

    cell_keys = ("corruption", "severity", "reference")
    hidden_metrics = ("canonical_files",)
    columns = (Column("mean corr. error", "mean_corruption_error", higher_is_better=False),
               Column("clean acc", "accuracy", {"corruption": "", "severity": ""}),
               Column("corr. acc", "corruption_accuracy"))

    def run(self, ctx: RunContext) -> list[Measurement]:
        cfg = self.config
        corruptions, severities = parse_corruptions(cfg.corruptions), tuple(sorted(cfg.severities))
        load_backend(cfg.backend, check=False)  # its libraries are needed only to generate
        reference = self.resolved_reference(ctx)
        self._check_reference(reference)
        if reference in metrics.PUBLISHED and severities != SEVERITIES:
            raise UserError(f"protocol.severities={','.join(map(str, severities))}: mCE against "
                            f"{reference} averages severities 1..5; measure all five, or pass "
                            f"--set protocol.reference=<a method> to compare with a baseline run")
        ctx.provenance["reference"] = reference  # mCE is derived against it in the leaderboard
        clock = [time.time()]
        source, canonical, clean_split = self._source(ctx, corruptions)  # before training: fail early
        clock.append(time.time())
        model = ctx.model()
        clock.append(time.time())
        batch = ctx.recipe.eval_batch_size
        clean = _accuracy(model, [(clean_split.x, clean_split.y)], batch)
        accuracies = {(c, s): _accuracy(model, source.batches(c, s, batch), batch)
                      for c in corruptions for s in severities}
        clock.append(time.time())
        log.info("corrupted data (%s) %.1fs, training %.1fs, evaluation %.1fs",
                 "canonical" if canonical else "generated", *np.diff(clock))
        acc = {cell: value for cell, (value, _) in accuracies.items()}
        out = [Measurement("accuracy", clean[0], clean[1]),
               Measurement("canonical_files", float(canonical))]
        out += [Measurement("accuracy", value, n, {"corruption": c, "severity": s})
                for (c, s), (value, n) in accuracies.items()]
        return out + summary(acc)

    def comparison_figure(self, rows: pd.DataFrame, title: str):
        """Every method's severity curve on one axis, and its error per corruption."""
        return comparison_figure(rows, title)

    def figures(self, measurements: list[Measurement], title: str) -> dict:
        """The run's severity curves (unless `figure` is off)."""
        cells = {(m.cell["corruption"], m.cell["severity"]): m.value for m in measurements
                 if m.metric == "accuracy" and m.cell.get("corruption")}
        clean = [m.value for m in measurements if m.metric == "accuracy" and not m.cell]
        if not self.config.figure or not cells or not clean:
            return {}
        return {"severity": severity_figure(cells, clean[0], title)}

    def _source(self, ctx: RunContext, corruptions: tuple[str, ...]):
        """(source of corrupted batches, canonical?, the clean images it corrupts)."""
        cfg, test = self.config, ctx.test_split()
        limit = min(cfg.n_examples or len(test), len(test))
        folder = CANONICAL_FOLDERS.get(ctx.dataset.name)
        root = ctx.data_root / folder if folder else None
        if root is not None and root.is_dir():
            if ctx.dataset.name in ("cifar10", "cifar100"):
                source = CorruptionArrays(root, test, limit)
                for corruption in corruptions:
                    source.array(corruption)  # fail early on a malformed file
                return source, True, test.subset(torch.arange(limit))
            crop = 224 if ctx.dataset.name == "imagenet" else None
            return (CorruptionFolders(root, ctx.dataset.num_classes, crop, limit), True,
                    test.subset(torch.arange(limit)))
        table = table_for(ctx.dataset.image_size)
        source = generated_arrays(test, ctx.dataset.name, corruptions, table, cfg.backend,
                                  cfg.seed, ctx.cache_dir, limit, ctx.progress)
        return source, False, test.subset(torch.arange(limit))

    def resolved_reference(self, ctx: RunContext) -> str:
        """The configured reference; `auto` is AlexNet for ImageNet-sized data, else ERM."""
        if self.config.reference != AUTO:
            return self.config.reference
        return "alexnet_imagenet" if table_for(ctx.dataset.image_size).name == "imagenet" else "erm"

    @staticmethod
    def _check_reference(name: str) -> None:
        if name not in metrics.PUBLISHED and name not in METHODS:
            raise UserError(f"unknown reference {name!r}; use auto, {', '.join(metrics.PUBLISHED)} "
                            f"or a method name ({', '.join(METHODS.names())})")

    def derived(self, rows: pd.DataFrame, provenance: dict[str, dict]
                ) -> tuple[pd.DataFrame, list[str]]:
        """mCE and relative mCE of every run against the reference it names (NaN where a ratio is
        undefined), and footnotes for the runs whose reference is missing."""
        runs = dict(tuple(rows.groupby("run_id", sort=True)))
        out, missing, undefined = [], {}, {}
        for run_id, run in runs.items():
            name = provenance.get(run_id, {}).get("reference")
            errors, clean_error = run_errors(run)
            benchmark = [c for c in BENCHMARK if c in errors]
            if name is None or not benchmark:
                continue
            method = run["method"].iloc[0]
            reference, why = self._reference_errors(name, run_id, runs, provenance)
            if reference is None:
                missing.setdefault((name, why), set()).add(method)
                continue
            shared = [c for c in benchmark if c in reference.errors]
            picks = {"mce": shared, "relative_mce": shared}
            if name == "alexnet_cifar10_pushpull" and all(c in errors for c in ALL):
                picks.update(mce_19=ALL, relative_mce_19=ALL)  # the push-pull paper's convention
            for metric, picked in picks.items():
                try:
                    value = 1.0 if name == method else _normalised(metric, errors, clean_error,
                                                                   reference, picked)
                except ValueError as err:
                    value = float("nan")
                    label = "relative mCE" if metric.startswith("relative") else "mCE"
                    undefined.setdefault((label, name, str(err)), set()).add(method)
                out.append({**run.iloc[0].to_dict(), "metric": metric, "value": value, "n": 0,
                            **{k: "" for k in cell_columns(rows)}, "reference": name})
        notes = [f"mCE vs {name} not computed for {', '.join(sorted(methods))}: {why}"
                 for (name, why), methods in sorted(missing.items())]
        notes += [f"{label} vs {name} undefined (—) for {', '.join(sorted(methods))}: {why}"
                  for (label, name, why), methods in sorted(undefined.items())]
        return pd.DataFrame(out, columns=rows.columns), notes

    def _reference_errors(self, name: str, run_id: str, runs: dict, provenance: dict):
        """(the reference's errors, None) or (None, why they are missing)."""
        meta = provenance[run_id]
        if name in metrics.PUBLISHED:
            severities = tuple(sorted(set(meta.get("protocol_config", {}).get("severities", ()))))
            if severities != SEVERITIES:
                return None, "its table averages severities 1..5 and these runs measured fewer"
            return metrics.published_reference(name), ""
        wanted = _settings(meta, runs[run_id])
        found = [other for other, run in runs.items()
                 if run["method"].iloc[0] == name and other in provenance
                 and _settings(provenance[other], run) == wanted]
        unreadable = sorted(other for other, run in runs.items()
                            if run["method"].iloc[0] == name and other not in provenance)
        if not found and unreadable:
            return None, (f"the {name} run {unreadable[0]} has no readable sidecar "
                          f"({unreadable[0]}.json is missing or damaged); re-run it")
        if not found:
            return None, (f"no {name} corruption run with the same dataset, recipe, seed and "
                          f"protocol settings in the results folder (run it, in any order)")
        latest = max(found, key=lambda other: runs[other]["timestamp"].max())
        errors, clean_error = run_errors(runs[latest])
        return metrics.ReferenceErrors(name, clean_error, errors), ""

    def leaderboard_columns(self, rows: pd.DataFrame) -> list[Column]:
        columns = list(self.columns)
        for metric, label in (("mce", "mCE"), ("relative_mce", "rel. mCE"), ("mce_19", "mCE-19"),
                              ("relative_mce_19", "rel. mCE-19")):
            for ref in sorted(rows.loc[rows["metric"] == metric, "reference"].unique()):
                columns.append(Column(f"{label} vs {ref}", metric, {"reference": ref},
                                      higher_is_better=False,
                                      absent="not computed or undefined for that run (see above)"))
        if (rows["metric"] == "mean_corruption_error_extra").any():
            columns.append(Column("extra corr. error", "mean_corruption_error_extra",
                                  higher_is_better=False))
        present = set(rows.loc[rows["metric"] == "error", "corruption"])
        columns += [Column(f"{c} err", "error", {"corruption": c}, higher_is_better=False,
                           absent="that run did not measure this corruption")
                    for c in ALL if c in present]
        return columns

    def notes(self, rows: pd.DataFrame) -> list[str]:
        notes = []
        flags = rows.loc[rows["metric"] == "canonical_files", "value"].astype(float)
        if (flags == 0).any():
            notes.append("corruptions generated on the fly (parameter table of the nearest image "
                         "size: CIFAR-10-C constants up to 84 px), not the canonical -C files")
        return notes


def _accuracy(model, batches, batch_size: int) -> tuple[float, int]:
    correct = total = 0
    for images, labels in batches:
        correct += int((predict(model, images, batch_size) == labels).sum())
        total += len(labels)
    return correct / max(total, 1), total


def summary(acc: dict[tuple[str, int], float]) -> list[Measurement]:
    """Error per corruption, mean corruption error and corruption accuracy over the benchmark
    corruptions, mean corruption error over the extra ones, from {(corruption, severity): acc}."""
    errors = metrics.corruption_errors(acc)
    out = [Measurement("error", e, 0, {"corruption": c}) for c, e in errors.items()]
    benchmark = [c for c in BENCHMARK if c in errors]
    extra = [c for c in EXTRA if c in errors]
    if benchmark:
        cells = [v for (c, _), v in acc.items() if c in benchmark]
        out.append(Measurement("mean_corruption_error",
                               metrics.mean_corruption_error(errors, benchmark)))
        out.append(Measurement("corruption_accuracy", sum(cells) / len(cells)))
    if extra:
        out.append(Measurement("mean_corruption_error_extra",
                               metrics.mean_corruption_error(errors, extra)))
    return out


def run_errors(run: pd.DataFrame) -> tuple[dict[str, float], float]:
    """({corruption: error}, clean error) read from one run's rows."""
    errors = run[run["metric"] == "error"]
    clean = run[(run["metric"] == "accuracy") & (run["corruption"] == "")]
    if errors.empty or clean.empty:
        return {}, float("nan")
    return ({c: float(v) for c, v in zip(errors["corruption"], errors["value"])},
            1.0 - float(clean["value"].iloc[0]))


def _normalised(metric: str, errors: dict, clean_error: float, reference, corruptions) -> float:
    if metric.startswith("relative"):
        return metrics.relative_mce(errors, clean_error, reference, corruptions)
    return metrics.mce(errors, reference, corruptions)


def _settings(meta: dict, run: pd.DataFrame) -> dict:
    """What must match between a run and its baseline reference: the seed, the recipe changes
    made to the preset (`--set recipe.*`, `--backbone`) and the protocol settings. A method's own
    recipe within the preset (CIFS's default epochs, every `paper` recipe) is not a change."""
    return {"seed": meta.get("seed"), "recipe": _recipe_changes(meta, run.iloc[0]),
            "protocol": _comparable(meta.get("protocol_config", {}))}


def _recipe_changes(meta: dict, row) -> dict:
    try:
        planned = recipe_for(row["preset"], row["dataset"], row["method"])
    except UserError:  # a preset this version no longer has: every field counts
        return _plain(comparable(meta.get("recipe") or {}))
    expected = _plain(identity(planned))
    return {k: v for k, v in _plain(comparable(meta.get("recipe") or {})).items()
            if expected.get(k) != v}


def _plain(value):
    """JSON round trip, so tuples compare equal to the lists read back from a sidecar."""
    return json.loads(json.dumps(value, sort_keys=True, default=str))


def _comparable(settings: dict) -> dict:
    return _plain({k: v for k, v in settings.items() if k not in _NOT_COMPARED})
