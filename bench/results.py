"""Results: one long-format CSV (plus a JSON provenance sidecar) per run, written atomically.

Run files are append-only facts under `<results>/runs/<protocol>/<run_id>.csv`; the run id is
derived from what was run, so re-running the same thing replaces its own file and nothing else.
Leaderboards are derived from these files (see `leaderboard.py`).
"""

from __future__ import annotations

import io
import json
import logging
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from . import environment
from .atomic import write_atomic
from .errors import UserError
from .protocol import Measurement

log = logging.getLogger(__name__)

CELL_KEYS = ("corruption", "severity", "attack", "epsilon", "shots", "subset_seed", "reference")
COLUMNS = ("run_id", "method", "protocol", "dataset", "backbone", "preset", "metric", *CELL_KEYS,
           "value", "n", "seed", "config_hash", "method_config", "versions", "timestamp")


@dataclass(frozen=True)
class RunInfo:
    """What identifies a run; every row of its CSV carries these fields."""

    method: str
    protocol: str
    dataset: str
    backbone: str
    preset: str
    seed: int
    config_hash: str
    method_config: str  # JSON of the method's config

    @property
    def run_id(self) -> str:
        return (f"{self.method}-{self.protocol}-{self.dataset}-{self.backbone}-{self.preset}"
                f"-s{self.seed}-{self.config_hash}")


def library_versions() -> str:
    """'robustbench-lite=0.2.0;torch=...;...;python=3.11.7'."""
    return ";".join(f"{name}={version}" for name, version in environment.versions().items())


def run_frame(info: RunInfo, measurements: list[Measurement], timestamp: str | None = None
              ) -> pd.DataFrame:
    """The rows of one run in the fixed column order."""
    timestamp = timestamp or datetime.now(timezone.utc).isoformat(timespec="seconds")
    versions = library_versions()
    rows = []
    for m in measurements:
        unknown = set(m.cell) - set(CELL_KEYS)
        if unknown:
            raise ValueError(f"measurement {m.metric} has unknown cell keys {sorted(unknown)}")
        row = {"run_id": info.run_id, "method": info.method, "protocol": info.protocol,
               "dataset": info.dataset, "backbone": info.backbone, "preset": info.preset,
               "metric": m.metric, **{k: m.cell.get(k, "") for k in CELL_KEYS},
               "value": float(m.value), "n": int(m.n), "seed": info.seed,
               "config_hash": info.config_hash, "method_config": info.method_config,
               "versions": versions, "timestamp": timestamp}
        rows.append(row)
    return pd.DataFrame(rows, columns=list(COLUMNS))


def write_run(results_dir: Path, info: RunInfo, measurements: list[Measurement],
              provenance: dict, timestamp: str | None = None) -> Path:
    """Write the run's CSV and JSON sidecar atomically; returns the CSV path."""
    folder = results_dir / "runs" / info.protocol
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"cannot create results folder {folder} ({err.strerror}); "
                        f"pass a writable --results-dir") from None
    frame = run_frame(info, measurements, timestamp)
    csv_path = folder / f"{info.run_id}.csv"
    buffer = io.StringIO()
    frame.to_csv(buffer, index=False, lineterminator="\n")
    sidecar = {**provenance, "run_id": info.run_id, "versions": frame["versions"].iloc[0]
               if len(frame) else library_versions()}
    atomic_write(csv_path.with_suffix(".json"), json.dumps(sidecar, indent=2, sort_keys=True) + "\n")
    atomic_write(csv_path, buffer.getvalue())
    return csv_path


def atomic_write(path: Path, text: str) -> None:
    """Write `text` to `path` atomically (a results or leaderboard file)."""
    write_atomic(path, lambda handle: handle.write(text), "w", hint="pass a writable --results-dir",
                 encoding="utf-8", newline="")


def load_provenance(results_dir: Path) -> dict[str, dict]:
    """Every run's JSON sidecar under `results_dir/runs`, by run id."""
    out = {}
    for path in sorted((results_dir / "runs").glob("*/*.json")):
        try:
            meta = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            log.warning("skipping the unreadable sidecar %s (%s)", path, err)
            continue
        if isinstance(meta, dict):
            out[meta.get("run_id", path.stem)] = meta
    return out


def load_runs(results_dir: Path) -> pd.DataFrame:
    """All run rows under `results_dir/runs`, in a stable order."""
    files = sorted((results_dir / "runs").glob("*/*.csv"))
    if not files:
        return pd.DataFrame(columns=list(COLUMNS))
    frames = [pd.read_csv(f, dtype={k: str for k in CELL_KEYS}, keep_default_na=False) for f in files]
    return pd.concat(frames, ignore_index=True)
