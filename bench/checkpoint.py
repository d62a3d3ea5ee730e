"""Checkpoints: written atomically, loaded with `weights_only=True` (no arbitrary unpickling)."""

from __future__ import annotations

import os
import pickle
import tempfile
import zipfile
from pathlib import Path

import torch

from .errors import UserError


def save_checkpoint(path: Path, state: dict) -> None:
    """Write `state` to `path` through a temporary file and an atomic rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(state, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


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
