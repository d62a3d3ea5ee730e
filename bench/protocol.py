"""The protocol runner interface: a protocol trains (through the cache) and measures.

A protocol turns a `RunContext` into `Measurement`s (metric, value, cell keys) and declares the
leaderboard `Column`s derived from them. It never writes files: the runner does.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import pandas as pd
import torch
from torch import nn

from .config import NoConfig, validate
from .errors import UserError
from .evaluate import centre_crop
from .datasets import ImageDataset, Split
from .method import Method
from .recipes import Recipe
from .registry import Registry
from .train import TrainJob, cached_model_path, trained_model


@dataclass(frozen=True)
class Measurement:
    """One number: `metric` of a cell (e.g. corruption=fog, severity=3), a fraction where applicable."""

    metric: str
    value: float
    n: int = 0  # examples behind the value; 0 for aggregates
    cell: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Column:
    """A leaderboard column: the value of `metric` in the rows matching `where`."""

    label: str
    metric: str
    where: dict[str, Any] = field(default_factory=dict)
    higher_is_better: bool | None = True  # None: neither (no arrow; e.g. a parameter count)
    percent: bool = True  # fractions shown as percent with 2 decimals; else the number itself
    scale: float | None = None  # e.g. 1e-6 to show a count in millions
    digits: int | None = None  # decimals shown (default: 2 for percent, 3 otherwise)
    thousands: bool = False  # 12,345
    absent: str = "not measured in these runs"  # the footnote when a row has no value

    def scale_and_digits(self) -> tuple[float, int]:
        default_scale, default_digits = (100.0, 2) if self.percent else (1.0, 3)
        return (self.scale if self.scale is not None else default_scale,
                self.digits if self.digits is not None else default_digits)


@dataclass
class RunContext:
    """Everything a protocol needs to train the method and evaluate it."""

    method: Method
    method_name: str
    dataset: ImageDataset
    recipe: Recipe
    seed: int
    device: torch.device
    cache_dir: Path
    data_root: Path
    results_dir: Path
    progress: bool = True
    train_missing: bool = True  # False: a model missing from the cache is an error (golden check)
    provenance: dict[str, Any] = field(default_factory=dict)  # facts the protocol adds to the sidecar
    given: nn.Module | None = None  # `eval`: the model under test, which the suite did not train

    def model(self) -> nn.Module:
        """The model under test: the given one (`eval`), else the method trained on the training
        split (through the cache)."""
        return self.given.to(self.device).eval() if self.given is not None else self.train()

    def test_split(self) -> Split:
        """The test split as models are evaluated on it: the central `recipe.crop_size` crop when
        the recipe trains on crops of stored images (CUB: 224 of 256, GLICO's Resize(256) +
        CenterCrop(224)), else as stored."""
        test = self.dataset.test
        return Split(centre_crop(test.x, self.recipe.crop_size), test.y)

    def train(self, split: Split | None = None, recipe: Recipe | None = None,
              **backbone_kwargs) -> nn.Module:
        """The method trained on `split` (default: the training split), from the cache if present."""
        if self.given is not None:
            raise UserError("this protocol trains models of its own; `eval` measures a given "
                            "model under clean, corruption or adversarial")
        job = TrainJob(self.method, self.method_name, self.dataset, recipe or self.recipe,
                       self.seed, split, backbone_kwargs or None)
        model = trained_model(job, self.device, self.cache_dir, self.progress, self.train_missing)
        self.provenance.setdefault("models", []).append(cached_model_path(job, self.cache_dir).name)
        return model


class Protocol:
    """Base class; subclasses set `Config`, `columns` and implement `run`."""

    Config: ClassVar[type] = NoConfig
    columns: ClassVar[tuple[Column, ...]] = ()
    trains_own_models: ClassVar[bool] = False  # True: never asks for `ctx.model()`
    cell_keys: ClassVar[tuple[str, ...]] = ()  # what a number's cell can name (run-file columns)
    hidden_metrics: ClassVar[tuple[str, ...]] = ()  # internal numbers a run does not print

    def __init__(self, config: Any = None) -> None:
        self.config = config if config is not None else self.Config()
        validate(self.config, f"protocol {type(self).__name__}", "protocol.")

    def run(self, ctx: RunContext) -> list[Measurement]:
        raise NotImplementedError

    def for_method(self, method: Any) -> Protocol:
        """This protocol with the settings that depend on the method measured made concrete (so
        the run id and the recorded configuration say what was run); unchanged by default."""
        return self

    def figures(self, measurements: list[Measurement], title: str) -> dict:
        """Figures of one run by name (matplotlib figures); the runner writes each, after the run
        file, as `<results>/figures/<run id>-<name>.png`. None by default."""
        return {}

    def comparison_figure(self, rows: pd.DataFrame, title: str):
        """One figure comparing the methods of a leaderboard (its run rows), or None."""
        return None

    def marks(self, rows: pd.DataFrame) -> dict[tuple[str, str], str]:
        """A mark after a (method, backbone)'s name in the leaderboard (e.g. a failed sanity check,
        explained by `notes`); none by default."""
        return {}

    def derived(self, rows: pd.DataFrame, provenance: dict[str, dict]
                ) -> tuple[pd.DataFrame, list[str]]:
        """Rows computed at leaderboard time from several runs (e.g. mCE against a baseline run, so
        the order in which runs were made does not matter), in the run-file columns, and footnotes
        on what could not be computed; `provenance` maps run ids to their sidecars. None by default."""
        return rows.iloc[:0], []

    def leaderboard_columns(self, rows: pd.DataFrame) -> list[Column]:
        """Columns of the leaderboard for these result rows (default: the static `columns`)."""
        return list(self.columns)

    def notes(self, rows: pd.DataFrame) -> list[str]:
        """Footnotes under the leaderboard (e.g. failed sanity checks); none by default."""
        return []

    @classmethod
    def description(cls) -> str:
        return (cls.__doc__ or "").strip().splitlines()[0]


def _check_protocol(obj: object) -> None:
    if not (isinstance(obj, type) and issubclass(obj, Protocol)):
        raise TypeError(f"{obj!r} is not a subclass of robustbench_lite.bench.protocol.Protocol")
    if not dataclasses.is_dataclass(obj.Config) or not (obj.__doc__ or "").strip():
        raise TypeError(f"{obj.__name__} needs a dataclass Config and a docstring")


PROTOCOLS: Registry[type[Protocol]] = Registry(
    "protocol", builtins="robustbench_lite.protocols", group="robustbench_lite.protocols",
    check=_check_protocol)
