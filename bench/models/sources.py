"""Model sources: where a model the suite did not train comes from (`eval --model KIND:REST`).

- `file:PATH` (with `--backbone`): a state dict, or this suite's checkpoint, for a registered
  backbone (and `--method`, when the method changes the architecture), read `weights_only`.
- `torchvision:NAME[:WEIGHTS]`: a torchvision classifier with its weights enum (default DEFAULT);
  the file from the local torch hub cache, its digest checked; preprocessing from the weights.
- `timm:NAME` (extra `timm`): weights from the local Hugging Face cache or `--checkpoint FILE`;
  preprocessing from the model's pretrained config.
- `robustbench:NAME` (extra `robustbench`): a RobustBench model-zoo entry, weights from
  `--model-dir` (RobustBench's `<dir>/<dataset>/<threat model>/<NAME>.pt`); its dataset from the
  zoo's metadata. RobustBench models take [0, 1] images.
- `python:MODULE:FUNCTION`: any callable returning an `nn.Module` (the current folder is
  importable), with `--checkpoint FILE` for its weights and `--set model.mean=... model.std=...`
  when it expects normalised inputs.

A source is a `Source` registered by kind; plugins add kinds through the entry-point group
`robustbench_lite.model_sources`.
"""

from __future__ import annotations

import difflib
import importlib
import math
import os
import pickle
import re
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..errors import UserError
from ..method import Method
from ..registry import Registry
from .given import GivenModel, Preprocessing, as_tuple, load_into, state_dict_of


@dataclass(frozen=True)
class SourceOptions:
    """What `eval` passes to a source besides the spec."""

    num_classes: int  # the dataset's
    mean: tuple[float, ...]  # the dataset's statistics, for this suite's own backbones
    std: tuple[float, ...]
    backbone: str | None = None
    method: Method | None = None  # file: the method whose architecture the weights are for
    method_name: str = "erm"
    checkpoint: Path | None = None
    model_dir: Path = Path("models")


class Source:
    """Loads models of one kind; `dataset` names the dataset a spec implies (None: no opinion)."""

    def load(self, rest: str, options: SourceOptions) -> GivenModel:
        raise NotImplementedError

    def dataset(self, rest: str) -> str | None:
        return None


def _check_source(obj: object) -> None:
    if not (isinstance(obj, type) and issubclass(obj, Source) and (obj.__doc__ or "").strip()):
        raise TypeError(f"{obj!r} is not a documented subclass of Source")


SOURCES: Registry[type[Source]] = Registry("model source", group="robustbench_lite.model_sources",
                                           check=_check_source)
_NAME = re.compile(r"[^a-z0-9_]+")


def parse_spec(spec: str) -> tuple[Source, str]:
    """'torchvision:resnet18:V1' -> (the torchvision source, 'resnet18:V1')."""
    kind, sep, rest = spec.partition(":")
    if not sep or not rest:
        raise UserError(f"--model {spec!r} is not KIND:WHAT; write e.g. file:model.pt, "
                        f"torchvision:resnet18, timm:resnet50, robustbench:Standard or "
                        f"python:mymodule:build (kinds: {', '.join(SOURCES.names())})")
    return SOURCES.get(kind)(), rest


def plain_name(text: str) -> str:
    """A name fit for run ids and leaderboards: lower case, [a-z0-9_]."""
    name = _NAME.sub("_", text.lower()).strip("_")
    return name if name and name[0].isalpha() else f"m_{name}"


def read_state(path: Path, what: str) -> dict[str, torch.Tensor]:
    """The state dict in a checkpoint file (torch, read weights_only; or safetensors)."""
    path = path.expanduser()
    if not path.is_file():
        raise UserError(f"{what}: no file {path}; pass the path of a saved state dict")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file
        try:
            return load_file(str(path))
        except Exception as err:  # safetensors raises its own error types
            raise UserError(f"{what}: {path} is not a readable safetensors file ({err})") from None
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, zipfile.BadZipFile, pickle.UnpicklingError, ValueError,
            OSError) as err:
        raise UserError(f"{what}: {path} is not a torch checkpoint of tensors "
                        f"({type(err).__name__}); save one with torch.save(model.state_dict(), "
                        f"path)") from None
    return state_dict_of(loaded, f"{what}: {path}")


def _optional(module: str, extra: str):
    try:
        return importlib.import_module(module)
    except ImportError:
        raise UserError(f"this model source needs {module}: pip install "
                        f"'robustbench-lite[{extra}]'") from None


@SOURCES.register("file")
class FileSource(Source):
    """A state dict (or this suite's checkpoint) for a registered backbone (`--backbone`)."""

    def load(self, rest: str, options: SourceOptions) -> GivenModel:
        from ..backbones import build_backbone

        path = Path(rest).expanduser()
        if not options.backbone:
            raise UserError(f"file:{rest} needs --backbone NAME, the registered architecture its "
                            f"weights are for (see `robustbench-lite list backbones`)")
        state = read_state(path, f"file:{rest}")
        backbone = build_backbone(options.backbone, options.num_classes, options.mean, options.std)
        model = (options.method or Method()).build_model(backbone)
        load_into(model, state, f"file:{rest}",
                  "pass the --backbone (and --method) it was trained with, on a dataset with as "
                  "many classes")
        return GivenModel(model, f"file:{rest}", plain_name(path.stem), options.backbone,
                          details={"file": str(path.resolve()), "method": options.method_name})


@SOURCES.register("torchvision")
class TorchvisionSource(Source):
    """A torchvision classifier and its published weights, from the local torch hub cache."""

    def load(self, rest: str, options: SourceOptions) -> GivenModel:
        from torchvision import models

        from ..weights import local_state_dict

        name, _, weights_name = rest.partition(":")
        known = models.list_models(module=models)
        if name not in known:
            close = difflib.get_close_matches(name, known, n=1)
            raise UserError(f"torchvision has no classifier {name!r}"
                            f"{f'; did you mean {close[0]!r}?' if close else ''} "
                            f"(torchvision.models.list_models() lists them)")
        enum = models.get_model_weights(name)
        try:
            weights = enum[weights_name or "DEFAULT"]
        except KeyError:
            raise UserError(f"torchvision:{name} has no weights {weights_name!r}; its weights: "
                            f"{', '.join(w.name for w in enum)} (or DEFAULT)") from None
        spec = f"torchvision:{name}:{weights.name}"
        local_state_dict(weights.url, spec)  # present, the published file, tensors only
        model = models.get_model(name, weights=weights)  # reads that cached file
        t = weights.transforms()
        preprocessing = Preprocessing(as_tuple(t.mean), as_tuple(t.std), int(t.resize_size[0]),
                                      int(t.crop_size[0]), t.interpolation.value)
        return GivenModel(model, spec, plain_name(name), plain_name(name), preprocessing,
                          {"weights": weights.name, "url": weights.url})


@SOURCES.register("timm")
class TimmSource(Source):
    """A timm model: weights from the local Hugging Face cache or `--checkpoint FILE`."""

    def load(self, rest: str, options: SourceOptions) -> GivenModel:
        timm = _optional("timm", "timm")
        if not timm.is_model(rest):
            close = difflib.get_close_matches(rest, timm.list_models(), n=1)
            raise UserError(f"timm has no model {rest!r}"
                            f"{f'; did you mean {close[0]!r}?' if close else ''}")
        model = timm.create_model(rest, pretrained=False)
        weights = options.checkpoint or self._cached_file(model, rest)
        load_into(model, read_state(Path(weights), f"timm:{rest}"), f"timm:{rest} ({weights})",
                  "pass the weights of this model")
        cfg = timm.data.resolve_data_config({}, model=model)
        crop = int(cfg["input_size"][-1])
        preprocessing = Preprocessing(as_tuple(cfg["mean"]), as_tuple(cfg["std"]),
                                      math.floor(crop / cfg["crop_pct"]), crop,
                                      cfg["interpolation"])
        return GivenModel(model, f"timm:{rest}", plain_name(rest), plain_name(rest.split(".")[0]),
                          preprocessing, {"weights": str(weights)})

    @staticmethod
    def _cached_file(model: nn.Module, name: str) -> Path:
        from huggingface_hub import try_to_load_from_cache

        repo = (getattr(model, "pretrained_cfg", None) or {}).get("hf_hub_id")
        for filename in ("model.safetensors", "pytorch_model.bin"):
            found = try_to_load_from_cache(repo, filename) if repo else None
            if isinstance(found, str):
                return Path(found)
        raise UserError(f"timm:{name}: no weights in the local Hugging Face cache (repository "
                        f"{repo or 'unknown'}); pass --checkpoint FILE, or fetch them once online "
                        f"with timm.create_model({name!r}, pretrained=True)")


@SOURCES.register("robustbench")
class RobustBenchSource(Source):
    """A RobustBench model-zoo entry; weights from `--model-dir` as RobustBench lays them out."""

    DATASETS = {"cifar10": "cifar10", "cifar100": "cifar100", "imagenet": "imagenet"}

    def load(self, rest: str, options: SourceOptions) -> GivenModel:
        utils = _optional("robustbench.utils", "robustbench")
        dataset, threat = self._entry(rest)
        path = options.model_dir / dataset / threat / f"{rest}.pt"
        if not path.is_file():
            raise UserError(f"robustbench:{rest}: no weights at {path}; put the zoo's file there "
                            f"(RobustBench downloads it to that place when online), or pass "
                            f"--model-dir")
        model = utils.load_model(model_name=rest, model_dir=str(options.model_dir),
                                 dataset=dataset, threat_model=threat)
        return GivenModel(model, f"robustbench:{rest}", plain_name(rest),
                          plain_name(type(model).__name__),
                          details={"file": str(path.resolve()), "zoo_dataset": dataset,
                                   "threat_model": threat})

    def dataset(self, rest: str) -> str | None:
        return self.DATASETS.get(self._entry(rest)[0])

    @staticmethod
    def _entry(name: str) -> tuple[str, str]:
        """(dataset, threat model) of a zoo entry, from RobustBench's metadata; the first of
        Linf, L2, corruptions that lists it."""
        zoo = _optional("robustbench.model_zoo", "robustbench")
        for dataset, threats in zoo.model_dicts.items():
            for threat, entries in threats.items():
                if name in entries:
                    return _value(dataset), _value(threat)
        everything = [n for threats in zoo.model_dicts.values()
                      for entries in threats.values() for n in entries]
        close = difflib.get_close_matches(name, everything, n=1)
        raise UserError(f"the RobustBench zoo has no model {name!r}"
                        f"{f'; did you mean {close[0]!r}?' if close else ''}")


def _value(member: object) -> str:
    return str(getattr(member, "value", member))


@SOURCES.register("python")
class PythonSource(Source):
    """`MODULE:FUNCTION` returning an nn.Module; `--checkpoint FILE` loads its weights."""

    def load(self, rest: str, options: SourceOptions) -> GivenModel:
        module_name, sep, function = rest.rpartition(":")
        if not sep or not module_name or not function:
            raise UserError(f"python:{rest} is not python:MODULE:FUNCTION (e.g. "
                            f"python:mymodels:build)")
        if os.getcwd() not in sys.path:
            sys.path.insert(0, os.getcwd())
        try:
            module = importlib.import_module(module_name)
        except ImportError as err:
            raise UserError(f"python:{rest}: cannot import {module_name} ({err}); run from the "
                            f"folder that holds it or install it") from None
        factory = getattr(module, function, None)
        if not callable(factory):
            raise UserError(f"python:{rest}: {module_name} has no function {function!r}")
        model = factory()
        if not isinstance(model, nn.Module):
            raise UserError(f"python:{rest} returned a {type(model).__name__}, not a torch "
                            f"nn.Module")
        details = {"module": getattr(module, "__file__", module_name)}
        if options.checkpoint:
            load_into(model, read_state(options.checkpoint, f"python:{rest}"),
                      f"python:{rest} ({options.checkpoint})", "pass the weights of this model")
            details["checkpoint"] = str(options.checkpoint.resolve())
        return GivenModel(model, f"python:{rest}", plain_name(function),
                          plain_name(type(model).__name__), details=details)
