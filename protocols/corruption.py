"""Common corruptions: accuracy per (corruption, severity), mean corruption error, mCE, relative mCE.

Hendrycks & Dietterich, "Benchmarking Neural Network Robustness to Common Corruptions and
Perturbations" (ICLR 2019) <https://arxiv.org/abs/1903.12261>.

Data: the canonical release under --data-root when present (cifar10 -> CIFAR-10-C, cifar100 ->
CIFAR-100-C, tinyimagenet -> Tiny-ImageNet-C, imagenet -> ImageNet-C), otherwise the test split
corrupted on the fly by a named backend (the batched engine by default, or the per-image reference)
with the parameter table of the nearest image size (`bench/corruptions.py`), cached under
--cache-dir in the CIFAR-C layout. Generated sets use a fixed seed (`seed`), so every method and run
seed sees the same corrupted images.

Headline numbers use the 15 benchmark corruptions; the 4 extra ones are reported apart. mCE and
relative mCE are normalised by a named reference (`reference`): a published AlexNet table, or the
run of a baseline method (ERM by default for non-ImageNet sizes) found in the results folder with
the same dataset, recipe, seed and protocol settings. When that run is absent, mCE is skipped (a
warning, and a leaderboard note); run the baseline first. A method that is its own reference has
mCE = relative mCE = 100 %.

Deviation: the protocol writes its severity-curve figure to `<results>/figures/` itself.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from robustbench_lite.bench.config import config_dict
from robustbench_lite.bench.corruption_data import (
    CANONICAL_FOLDERS, CorruptionArrays, CorruptionFolders, generated_arrays)
from robustbench_lite.bench.corruptions import (
    ALL, BENCHMARK, EXTRA, SEVERITIES, load_backend, parse_corruptions, table_for)
from robustbench_lite.bench.errors import UserError
from robustbench_lite.bench.evaluate import predict
from robustbench_lite.bench.method import METHODS
from robustbench_lite.bench.protocol import PROTOCOLS, Column, Measurement, Protocol, RunContext

from . import corruption_metrics as metrics
from .corruption_figures import severity_figure

log = logging.getLogger(__name__)

AUTO = "auto"


@dataclass(frozen=True)
class CorruptionConfig:
    """Settings of the corruption protocol."""

    corruptions: str = "all"  # all | benchmark | extra | comma-separated names
    severities: tuple[int, ...] = SEVERITIES  # severities evaluated (mCE needs all five)
    n_examples: int = 0  # test images per cell (first N; evenly spaced for folders); 0 = all
    backend: str = "engine"  # generator of on-the-fly sets: engine (batched) | reference (per image)
    reference: str = AUTO  # alexnet_imagenet | alexnet_cifar10_pushpull | a method name | auto
    seed: int = 0  # seed of generated sets (independent of the run seed)
    figure: bool = True  # write the severity-curve PNG under <results>/figures/


_NOT_COMPARED = ("reference", "figure")  # settings that do not change the measured errors


@PROTOCOLS.register("corruption")
class Corruption(Protocol):
    """Common corruptions (15 + 4 extra, 5 severities): mean corruption error, mCE, relative mCE."""

    Config = CorruptionConfig
    columns = (Column("mean corr. error", "mean_corruption_error", higher_is_better=False),
               Column("clean acc", "accuracy", {"corruption": "", "severity": ""}),
               Column("corr. acc", "corruption_accuracy"))

    def run(self, ctx: RunContext) -> list[Measurement]:
        cfg = self.config
        corruptions, severities = parse_corruptions(cfg.corruptions), self._severities()
        load_backend(cfg.backend, check=False)  # its libraries are needed only to generate
        self._check_reference(self.resolved_reference(ctx))
        clock = [time.time()]
        source, canonical, clean_split = self._source(ctx, corruptions)  # before training: fail early
        clock.append(time.time())
        model = ctx.train()
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
        out += self._summary(ctx, acc, 1.0 - clean[0])
        if cfg.figure:
            severity_figure(acc, clean[0], f"{ctx.method_name} · {ctx.dataset.name} · "
                            f"{ctx.recipe.backbone} · seed {ctx.seed}", figure_path(ctx))
        return out

    def _severities(self) -> tuple[int, ...]:
        chosen = tuple(sorted(set(self.config.severities)))
        if not chosen or not set(chosen) <= set(SEVERITIES):
            raise UserError(f"severities {self.config.severities} must be a non-empty subset of "
                            f"1..5; write e.g. --set protocol.severities=1,3,5")
        return chosen

    def _source(self, ctx: RunContext, corruptions: tuple[str, ...]):
        """(source of corrupted batches, canonical?, the clean images it corrupts)."""
        cfg, test = self.config, ctx.dataset.test
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
            spaced = np.linspace(0, len(test) - 1, limit).round().astype(np.int64)
            return (CorruptionFolders(root, ctx.dataset.num_classes, crop, limit), True,
                    test.subset(torch.from_numpy(spaced)))
        table = table_for(ctx.dataset.image_size)
        source = generated_arrays(test, ctx.dataset.name, corruptions, table, cfg.backend,
                                  cfg.seed, ctx.cache_dir, limit, ctx.progress)
        return source, False, test.subset(torch.arange(limit))

    def _summary(self, ctx: RunContext, acc: dict, clean_error: float) -> list[Measurement]:
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
        reference = self._reference(ctx, errors, clean_error)
        if reference is None or not benchmark:
            return out
        cell = {"reference": reference.name}
        shared = [c for c in benchmark if c in reference.errors]
        names = {"mce": shared, "relative_mce": shared}
        if reference.name == "alexnet_cifar10_pushpull" and all(c in errors for c in ALL):
            names.update(mce_19=ALL, relative_mce_19=ALL)  # the push-pull paper's convention
        for metric, picked in names.items():
            value = self._normalised(metric, errors, clean_error, reference, picked,
                                     own=reference.name == ctx.method_name)
            if value is not None:
                out.append(Measurement(metric, value, 0, cell))
        return out

    @staticmethod
    def _normalised(metric, errors, clean_error, reference, corruptions, own: bool):
        """mCE or relative mCE; 1 against oneself; None (and a warning) when undefined."""
        if own:
            return 1.0
        try:
            if metric.startswith("relative"):
                return metrics.relative_mce(errors, clean_error, reference, corruptions)
            return metrics.mce(errors, reference, corruptions)
        except ValueError as err:
            log.warning("%s skipped: %s", metric, err)
            return None

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

    def _reference(self, ctx: RunContext, errors: dict, clean_error: float):
        name = self.resolved_reference(ctx)
        if name in metrics.PUBLISHED:
            if tuple(sorted(set(self.config.severities))) != SEVERITIES:
                log.warning("mCE against %s skipped: its table averages severities 1..5", name)
                return None
            return metrics.published_reference(name)
        if name == ctx.method_name:
            return metrics.ReferenceErrors(name, clean_error, dict(errors))
        found = baseline_reference(ctx, name, self.config)
        if found is None:
            log.warning("mCE against %s skipped: no %s corruption run with the same dataset, "
                        "recipe, seed and protocol settings in %s; run it first", name, name,
                        ctx.results_dir)
        return found

    def leaderboard_columns(self, rows: pd.DataFrame) -> list[Column]:
        columns = list(self.columns)
        for metric, label in (("mce", "mCE"), ("relative_mce", "rel. mCE"), ("mce_19", "mCE-19"),
                              ("relative_mce_19", "rel. mCE-19")):
            for ref in sorted(rows.loc[rows["metric"] == metric, "reference"].unique()):
                columns.append(Column(f"{label} vs {ref}", metric, {"reference": ref},
                                      higher_is_better=False))
        if (rows["metric"] == "mean_corruption_error_extra").any():
            columns.append(Column("extra corr. error", "mean_corruption_error_extra",
                                  higher_is_better=False))
        present = set(rows.loc[rows["metric"] == "error", "corruption"])
        columns += [Column(f"{c} err", "error", {"corruption": c}, higher_is_better=False)
                    for c in ALL if c in present]
        return columns

    def notes(self, rows: pd.DataFrame) -> list[str]:
        notes = []
        with_mce = set(rows.loc[rows["metric"] == "mce", "run_id"])
        missing = sorted(set(rows.loc[~rows["run_id"].isin(with_mce), "method"]))
        if missing:
            notes.append(f"mCE not computed for {', '.join(missing)}: the reference run was not in "
                         f"the results folder when they ran (run the reference method first, "
                         f"then re-run them)")
        flags = rows.loc[rows["metric"] == "canonical_files", "value"].astype(float)
        if (flags == 0).any():
            notes.append("corruptions generated on the fly (parameter table of the nearest image "
                         "size: CIFAR-10-C constants up to 84 px), not the canonical -C files")
        return notes


def figure_path(ctx: RunContext) -> Path:
    return (ctx.results_dir / "figures" /
            f"corruption-{ctx.dataset.name}-{ctx.method_name}-{ctx.recipe.backbone}-s{ctx.seed}.png")


def _accuracy(model, batches, batch_size: int) -> tuple[float, int]:
    correct = total = 0
    for images, labels in batches:
        correct += int((predict(model, images, batch_size) == labels).sum())
        total += len(labels)
    return correct / max(total, 1), total


def baseline_reference(ctx: RunContext, method: str, config: CorruptionConfig):
    """Per-corruption errors of `method`'s corruption run with this run's dataset, backbone, recipe,
    seed and protocol settings (the latest such run), or None."""
    folder = ctx.results_dir / "runs" / "corruption"
    wanted_recipe = _plain(asdict(ctx.recipe))
    wanted_settings = _comparable(config_dict(config))
    candidates = []
    for path in sorted(folder.glob(f"{method}-corruption-{ctx.dataset.name}-*.csv")):
        sidecar = path.with_suffix(".json")
        if not sidecar.is_file():
            continue
        meta = json.loads(sidecar.read_text())
        if (meta.get("seed") != ctx.seed or _plain(meta.get("recipe")) != wanted_recipe
                or _comparable(meta.get("protocol_config", {})) != wanted_settings):
            continue
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
        frame = frame[(frame["method"] == method) & (frame["dataset"] == ctx.dataset.name)]
        if not frame.empty:
            candidates.append(frame)
    if not candidates:
        return None
    frame = max(candidates, key=lambda f: f["timestamp"].max())
    errors = frame[frame["metric"] == "error"]
    clean = frame[(frame["metric"] == "accuracy") & (frame["corruption"] == "")]
    if errors.empty or clean.empty:
        return None
    return metrics.ReferenceErrors(method, 1.0 - float(clean["value"].iloc[0]),
                                   {c: float(v) for c, v in zip(errors["corruption"], errors["value"])})


def _plain(value):
    """JSON round trip, so tuples compare equal to the lists read back from a sidecar."""
    return json.loads(json.dumps(value, sort_keys=True, default=str))


def _comparable(settings: dict) -> dict:
    return _plain({k: v for k, v in settings.items() if k not in _NOT_COMPARED})
