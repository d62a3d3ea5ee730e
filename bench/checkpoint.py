"""Checkpoints: written atomically, loaded with `weights_only=True` (no arbitrary unpickling)."""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import torch

from .atomic import ensure_folder, write_atomic
from .errors import UserError


def save_checkpoint(path: Path, state: dict) -> None:
    """Write `state` to `path` atomically."""
    ensure_folder(path.parent, "the model cache", "pass a writable --cache-dir")
    write_atomic(path, lambda handle: torch.save(state, handle), hint="pass a writable --cache-dir")


def load_checkpoint(path: Path, device: torch.device | str = "cpu") -> dict:
    """Load a checkpoint of tensors and plain values; a damaged or foreign file is a clear error."""
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except (RuntimeError, EOFError, zipfile.BadZipFile, pickle.UnpicklingError, ValueError) as err:
        raise UserError(f"checkpoint {path} is truncated or not a robustbench-lite checkpoint "
                        f"({type(err).__name__}); delete it and re-run to retrain") from None
    if not isinstance(state, dict) or "model" not in state:
        raise UserError(f"checkpoint {path} has no model weights; delete it and re-run to retrain")
    return state
