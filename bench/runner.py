"""Run one (method, protocol, dataset, preset, seed): build, train through the cache, measure,
record; or evaluate a given model (`eval`) through the same protocols and the same recording."""

from __future__ import annotations

import contextlib
import json
import logging
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from . import distributed, environment
from .atomic import check_writable
from .cache import default_cache_dir
from .config import apply_overrides, config_dict, default_config, identity, stable_hash
from .datasets import load_dataset
from .errors import UserError
from .figures import write_png
from .method import METHODS, Method
from .protocol import PROTOCOLS, Measurement, Protocol, RunContext
from .recipes import Recipe, recipe_for
from .recipes import identity as recipe_identity
from .results import RunInfo, write_run
from .settings import Settings
from .train import pick_device

log = logging.getLogger(__name__)


@dataclass
class RunRequest:
    """A run as asked for on the command line."""

    method: str
    protocol: str
    dataset: str = "digits"
    preset: str = "default"
    seed: int = 0
    data_root: Path = Path("data")
    results_dir: Path = Path("results")
    cache_dir: Path = field(default_factory=default_cache_dir)
    settings: Settings = field(default_factory=Settings)
    backbone: str | None = None
    device: str | None = None
    progress: bool = True
    train_missing: bool = True  # False: measure cached models only (the golden check)


@dataclass
class RunOutcome:
    info: RunInfo
    measurements: list[Measurement]
    csv_path: Path | None  # None on the ranks > 0 of a torchrun launch, which write nothing
    hidden: tuple[str, ...] = ()  # the protocol's internal metrics, not printed


@dataclass
class ResolvedRun:
    """A request made concrete: configured method, protocol and recipe, and the run's identity."""

    method: Method
    protocol: Protocol
    recipe: Recipe
    info: RunInfo


def configured_method(name: str, settings: dict[str, str]) -> Method:
    method_cls, owner = METHODS.get(name), f"method {name}"
    return method_cls(apply_overrides(default_config(method_cls.Config, owner), settings, owner))


def configured_protocol(name: str, settings: dict[str, str], method: Method) -> Protocol:
    """The protocol with its settings applied, made concrete for the method it measures."""
    protocol_cls, owner = PROTOCOLS.get(name), f"protocol {name}"
    return protocol_cls(apply_overrides(default_config(protocol_cls.Config, owner), settings,
                                        owner, "protocol.")).for_method(method)


def resolve(req: RunRequest) -> ResolvedRun:
    """Build the method, protocol and recipe of a request, and its run id, without running it."""
    method = configured_method(req.method, req.settings.method)
    protocol = configured_protocol(req.protocol, req.settings.protocol, method)
    recipe = recipe_for(req.preset, req.dataset, req.method)
    if req.backbone:
        recipe = replace(recipe, backbone=req.backbone)
    recipe = apply_overrides(recipe, req.settings.recipe, "the recipe", "recipe.")
    from .backbones import BACKBONES
    BACKBONES.get(recipe.backbone)
    method_config = json.dumps(config_dict(method.config), sort_keys=True)
    config_hash = stable_hash({"method": config_dict(method.config),
                               "protocol": identity(protocol.config),
                               "recipe": recipe_identity(recipe)},
                              length=8)
    info = RunInfo(req.method, req.protocol, req.dataset, recipe.backbone, req.preset, req.seed,
                   config_hash, method_config)
    return ResolvedRun(method, protocol, recipe, info)


def run_context(req: RunRequest, resolved: ResolvedRun) -> RunContext:
    """The context a protocol runs in (loads the dataset)."""
    dataset = load_dataset(req.dataset, req.data_root, req.cache_dir)
    return RunContext(resolved.method, req.method, dataset, resolved.recipe, req.seed,
                      pick_device(req.device), Path(req.cache_dir), Path(req.data_root),
                      Path(req.results_dir), req.progress, req.train_missing)


def run(req: RunRequest, lock: contextlib.AbstractContextManager | None = None,
        resolved: ResolvedRun | None = None) -> RunOutcome:
    """Train (or reuse) the method, run the protocol, write the run's results (under `lock`);
    `resolved` is the request already made concrete. Under torchrun every rank trains and
    measures; only rank 0 writes."""
    resolved = resolved or resolve(req)
    ctx = run_context(req, resolved)
    facts = {"method_config": config_dict(resolved.method.config),
             "method_source": METHODS.source(req.method)}
    return measure_and_record(ctx, resolved.protocol, resolved.info, Path(req.results_dir), facts,
                              lock)


def measure_and_record(ctx: RunContext, protocol: Protocol, info: RunInfo, results_dir: Path,
                       facts: dict, lock: contextlib.AbstractContextManager | None = None
                       ) -> RunOutcome:
    """Run the protocol in `ctx`; write its run file (with `facts` and the provenance in the
    sidecar) and figures. Under torchrun every rank measures; only rank 0 writes."""
    if distributed.is_main():  # fail now, not after training and measuring
        check_writable(info.csv_path(results_dir).parent, "the results folder",
                       "pass a writable --results-dir")
    started = time.time()
    measurements = protocol.run(ctx)
    provenance = {**facts, "protocol_config": config_dict(protocol.config),
                  "recipe": asdict(ctx.recipe), "seed": ctx.seed, "origin": info.origin,
                  "device": str(ctx.device), "seconds": round(time.time() - started, 1),
                  "command": sys.argv, "world_size": distributed.world_size(),
                  **environment.provenance(), **ctx.provenance}
    if not distributed.is_main():
        return RunOutcome(info, measurements, None, protocol.hidden_metrics)
    with lock or contextlib.nullcontext():
        csv_path = write_run(results_dir, info, measurements, provenance, protocol.cell_keys)
    title = f"{info.method} · {info.dataset} · {info.backbone} · {info.preset} · seed {info.seed}"
    for name, figure in protocol.figures(measurements, title).items():  # after the run file
        try:
            write_png(figure, figure_path(results_dir, info, name))
        except UserError as err:
            log.warning("figure %s not written (the run file is): %s", name, err)
    return RunOutcome(info, measurements, csv_path, protocol.hidden_metrics)


def figure_path(results_dir: Path, info: RunInfo, name: str) -> Path:
    """Where a run's figure is written: named by the run id, so settings never share a file."""
    return results_dir / "figures" / f"{info.run_id}-{name}.png"
