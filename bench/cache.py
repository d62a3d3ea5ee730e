"""Where robustbench-lite caches trained models, generated corruption sets and decoded datasets."""

from __future__ import annotations

import os
from pathlib import Path


def default_cache_dir() -> Path:
    """$RBL_CACHE, or ~/.cache/robustbench-lite."""
    return Path(os.environ.get("RBL_CACHE", Path.home() / ".cache" / "robustbench-lite"))
