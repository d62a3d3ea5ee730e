"""Corruption metrics (pure functions on error rates) and the published reference tables.

Definitions (Hendrycks & Dietterich, ICLR 2019, §3.2 and App. C), for a model f with top-1 error
E_{c,s} on corruption c at severity s and clean error E_clean, and a reference model R:

- error_c = mean_s E_{c,s}; mean corruption error = mean of error_c over the 15 benchmark
  corruptions, un-normalised (the AugMix convention for CIFAR);
- CE_c = sum_s E_{c,s} / sum_s E^R_{c,s} = error_c / error^R_c  (same severities on both sides);
  mCE = mean of CE_c;
- relative CE_c = (error_c - E_clean) / (error^R_c - E^R_clean); relative mCE = mean of those.

All values are fractions (1.0 = 100 %). Reference tables hold error_c (mean over severities 1..5)
and the clean error, in `reference/<name>.csv`:

- `alexnet_imagenet`: AlexNet on ImageNet-C, hendrycks/robustness README (commit 76d9393); clean
  error 0.4348, the unrounded value of the paper's 43.5 % as used by google-research
  robustness_metrics `imagenet_variants.py`.
- `alexnet_cifar10_pushpull`: the CIFAR AlexNet of Strisciuglio et al., "Enhanced robustness of
  convolutional networks with a push-pull inhibition layer" (NCAA 2020), App. 2, 19 corruptions,
  clean error 13.87 %. The paper normalises over all 19 corruptions (`NINETEEN`).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from importlib import resources

from robustbench_lite.bench.corruptions.tables import ALL, BENCHMARK
from robustbench_lite.bench.errors import UserError

NINETEEN = ALL
PUBLISHED = ("alexnet_imagenet", "alexnet_cifar10_pushpull")


@dataclass(frozen=True)
class ReferenceErrors:
    """A reference model's clean error and per-corruption errors (mean over severities)."""

    name: str
    clean: float
    errors: Mapping[str, float]


def published_reference(name: str) -> ReferenceErrors:
    """One of the `PUBLISHED` tables, read from the package data."""
    if name not in PUBLISHED:
        raise UserError(f"unknown published reference {name!r}; known: {', '.join(PUBLISHED)}")
    text = (resources.files("robustbench_lite.protocols") / "reference" / f"{name}.csv").read_text()
    table = {row["corruption"]: float(row["error"]) for row in csv.DictReader(io.StringIO(text))}
    clean = table.pop("clean")
    return ReferenceErrors(name, clean, table)


def corruption_errors(accuracies: Mapping[tuple[str, int], float]) -> dict[str, float]:
    """error_c = mean over the severities present of (1 - accuracy), from {(c, s): accuracy}."""
    by_corruption: dict[str, list[float]] = {}
    for (corruption, _), acc in accuracies.items():
        by_corruption.setdefault(corruption, []).append(1.0 - acc)
    return {c: sum(e) / len(e) for c, e in by_corruption.items()}


def mean_corruption_error(errors: Mapping[str, float],
                          corruptions: Iterable[str] = BENCHMARK) -> float:
    """Un-normalised mean of error_c over `corruptions`."""
    return _mean(errors[c] for c in _present(errors, corruptions))


def corruption_error(errors: Mapping[str, float], reference: ReferenceErrors) -> dict[str, float]:
    """CE_c = error_c / error^R_c for every corruption in `errors`."""
    return {c: e / _reference_error(reference, c) for c, e in errors.items()}


def relative_corruption_error(errors: Mapping[str, float], clean_error: float,
                              reference: ReferenceErrors) -> dict[str, float]:
    """Relative CE_c = (error_c - E_clean) / (error^R_c - E^R_clean) for every corruption in `errors`."""
    return {c: (e - clean_error) / _reference_error(reference, c, reference.clean)
            for c, e in errors.items()}


def mce(errors: Mapping[str, float], reference: ReferenceErrors,
        corruptions: Iterable[str] = BENCHMARK) -> float:
    """Mean CE over `corruptions` (those present in `errors`)."""
    picked = {c: errors[c] for c in _present(errors, corruptions)}
    return _mean(corruption_error(picked, reference).values())


def relative_mce(errors: Mapping[str, float], clean_error: float, reference: ReferenceErrors,
                 corruptions: Iterable[str] = BENCHMARK) -> float:
    """Mean relative CE over `corruptions` (those present in `errors`)."""
    picked = {c: errors[c] for c in _present(errors, corruptions)}
    return _mean(relative_corruption_error(picked, clean_error, reference).values())


def _reference_error(reference: ReferenceErrors, corruption: str, clean: float = 0.0) -> float:
    """error^R_c - clean; a zero (the ratio is undefined) or a missing entry is a ValueError."""
    if corruption not in reference.errors:
        raise ValueError(f"reference {reference.name} has no error for {corruption}")
    denominator = reference.errors[corruption] - clean
    if denominator == 0:
        raise ValueError(f"{reference.name}'s error on {corruption} equals its clean error, so "
                         f"the ratio for {corruption} divides by zero")
    return denominator


def _present(errors: Mapping[str, float], corruptions: Iterable[str]) -> list[str]:
    picked = [c for c in corruptions if c in errors]
    if not picked:
        raise ValueError("none of the requested corruptions has an error")
    return picked


def _mean(values: Iterable[float]) -> float:
    values = list(values)
    return sum(values) / len(values)
