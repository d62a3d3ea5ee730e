"""`eval`: a model the suite did not train, measured by the same protocols, recorded the same way.

The protocol asks its context for the model (`RunContext.model`); here that is the given model,
wrapped to take [0, 1] images. Its run is identified by the source spec and a digest of its weights
(not a path), so a changed file at the same path is a new run. It joins the leaderboard of its
dataset, protocol and `--preset` (whose recipe sets the evaluation batch size), with origin
`evaluated`.
"""

from __future__ import annotations

import contextlib
import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..cache import default_cache_dir
from ..config import apply_overrides, default_config, identity, stable_hash
from ..datasets import load_dataset
from ..errors import UserError
from ..evaluate import to_input
from ..method import METHODS
from ..protocol import RunContext
from ..recipes import identity as recipe_identity
from ..recipes import recipe_for
from ..registry import is_valid_name
from ..results import RunInfo, run_files
from ..runner import RunOutcome, configured_method, configured_protocol, measure_and_record
from ..train import pick_device
from .given import GivenModel, ModelConfig, Preprocessed, Preprocessing, check_fits
from .sources import SourceOptions, parse_spec

log = logging.getLogger(__name__)


@dataclass
class EvalRequest:
    """An evaluation as asked for on the command line."""

    model: str  # the source spec, e.g. file:erm.pt, torchvision:resnet18:IMAGENET1K_V1
    protocol: str
    dataset: str | None = None  # None: the one the source implies (RobustBench), else digits
    preset: str = "default"
    seed: int = 0
    data_root: Path = Path("data")
    results_dir: Path = Path("results")
    cache_dir: Path = field(default_factory=default_cache_dir)
    protocol_settings: dict[str, str] = field(default_factory=dict)
    model_settings: dict[str, str] = field(default_factory=dict)  # ModelConfig fields
    recipe_settings: dict[str, str] = field(default_factory=dict)
    method_settings: dict[str, str] = field(default_factory=dict)  # with file: and --method
    name: str | None = None
    backbone: str | None = None
    method: str = "erm"  # file: the method whose architecture the weights are for
    checkpoint: Path | None = None
    model_dir: Path = Path("models")
    device: str | None = None
    progress: bool = True


def evaluate(req: EvalRequest, lock: contextlib.AbstractContextManager | None = None
             ) -> RunOutcome:
    """Load the model, check it fits the dataset, run the protocol, record the run."""
    if (req.method != "erm" or req.method_settings) and not req.model.startswith("file:"):
        raise UserError("--method and method settings apply to file: models only (the method "
                        "whose architecture the weights are for)")
    method = configured_method(req.method, req.method_settings)
    protocol = configured_protocol(req.protocol, req.protocol_settings, method)
    if protocol.trains_own_models:
        raise UserError(f"protocol {req.protocol} trains models of its own; `eval` measures a "
                        f"given model under clean, corruption or adversarial")
    model_config = apply_overrides(default_config(ModelConfig, "the model"), req.model_settings,
                                   "the model", "model.")
    source, rest = parse_spec(req.model)
    dataset = load_dataset(req.dataset or source.dataset(rest) or "digits", req.data_root,
                           req.cache_dir)
    given = source.load(rest, SourceOptions(dataset.num_classes, tuple(dataset.mean),
                                            tuple(dataset.std), req.backbone, method, req.method,
                                            req.checkpoint, req.model_dir))
    name = _name(req.name, given)
    preprocessing = given.preprocessing.overridden(model_config)
    device = pick_device(req.device)
    # The suite's own backbones normalise inside: those are measured as they are.
    model = given.module if preprocessing == Preprocessing() else Preprocessed(given.module,
                                                                               preprocessing)
    model = model.to(device).eval()
    check_fits(model, to_input(dataset.test.x[:2], device), dataset.num_classes, given.spec,
               dataset.name)
    # The preset's recipe, as the board's trained rows had it; only its evaluation batch applies.
    recipe = apply_overrides(recipe_for(req.preset, dataset.name), req.recipe_settings,
                             "the recipe", "recipe.")
    model_identity = {"model": given.spec, "weights_sha256": given.weights_digest(),
                "preprocessing": asdict(preprocessing)}
    config_hash = stable_hash({"model": model_identity, "protocol": identity(protocol.config),
                               "recipe": recipe_identity(recipe)}, length=8)
    info = RunInfo(name, req.protocol, dataset.name, given.backbone, req.preset, req.seed,
                   config_hash, json.dumps(model_identity, sort_keys=True), origin="evaluated")
    _warn_if_replaced(Path(req.results_dir), info)
    ctx = RunContext(method, name, dataset, recipe, req.seed, device, Path(req.cache_dir),
                     Path(req.data_root), Path(req.results_dir), req.progress, given=model)
    facts = {"model": {**model_identity, **given.details}, "method_config": {}}
    return measure_and_record(ctx, protocol, info, Path(req.results_dir), facts, lock)


def _name(asked: str | None, given: GivenModel) -> str:
    """The row's name: `--name`, else the source's; never a method's (rows would merge)."""
    name = asked or given.name
    if not is_valid_name(name):
        raise UserError(f"--name {name!r} must be lower case letters, digits and _ (it names "
                        f"the run files and the leaderboard row)")
    if name in METHODS:
        raise UserError(f"{name!r} is a method's name and its leaderboard row is the trained "
                        f"one; pass --name to name this evaluated model (e.g. --name {name}_given)")
    return name


def _warn_if_replaced(results_dir: Path, info: RunInfo) -> None:
    """Earlier evaluations under the same name with other weights stay in the row's mean."""
    prefix = info.run_id.rsplit("-", 1)[0] + "-"
    others = [p for p in run_files(results_dir) if p.stem.startswith(prefix)
              and p.stem != info.run_id and p.parent.name == info.protocol]
    if others:
        log.warning(
            "%s also has run files with other weights or settings (%s); the leaderboard row "
            "averages them: delete those or pass another --name", info.method, others[0].name)
