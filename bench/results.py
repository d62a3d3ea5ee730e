"""Results: one long-format CSV (plus a JSON provenance sidecar) per run, written atomically.

Run files are append-only facts under `<results>/runs/<protocol>/<run_id>.csv`; the run id is
derived from what was run, so re-running the same thing replaces its own file and nothing else.
Leaderboards are derived from these files (see `leaderboard.py`).
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from . import environment
from .atomic import ensure_folder, write_atomic
from .protocol import Measurement

log = logging.getLogger(__name__)

IDENTITY = ("run_id", "method", "protocol", "dataset", "backbone", "preset", "metric")
FACTS = ("value", "n", "seed", "config_hash", "method_config", "versions", "timestamp", "origin")
ORIGINS = ("trained", "evaluated")  # by the suite (`run`), or a given model (`eval`)
# Between the two: the cell keys that the run's protocol declares (`Protocol.cell_keys`).


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
    method_config: str  # JSON of the method's config (of a given model: its spec and weights)
    origin: str = "trained"  # one of ORIGINS; not part of the run id

    @property
    def run_id(self) -> str:
        return (f"{self.method}-{self.protocol}-{self.dataset}-{self.backbone}-{self.preset}"
                f"-s{self.seed}-{self.config_hash}")

    def csv_path(self, results_dir: Path) -> Path:
        """Where the run's CSV lives under `results_dir` (its JSON sidecar beside it)."""
        return results_dir / "runs" / self.protocol / f"{self.run_id}.csv"


def run_files(results_dir: Path) -> list[Path]:
    """Every run CSV under `results_dir`, in a stable order."""
    return sorted((results_dir / "runs").glob("*/*.csv"))


def library_versions() -> str:
    """'robustbench-lite=0.2.0;torch=...;...;python=3.11.7'."""
    return ";".join(f"{name}={version}" for name, version in environment.versions().items())


def run_frame(info: RunInfo, measurements: list[Measurement], cell_keys: Sequence[str],
              timestamp: str | None = None) -> pd.DataFrame:
    """The rows of one run: identity, the protocol's cell keys, then the facts."""
    timestamp = timestamp or datetime.now(timezone.utc).isoformat(timespec="seconds")
    versions = library_versions()
    rows = []
    for m in measurements:
        unknown = set(m.cell) - set(cell_keys)
        if unknown:
            raise ValueError(f"measurement {m.metric} has cell keys {sorted(unknown)} that its "
                             f"protocol does not declare (cell_keys = {tuple(cell_keys)})")
        row = {"run_id": info.run_id, "method": info.method, "protocol": info.protocol,
               "dataset": info.dataset, "backbone": info.backbone, "preset": info.preset,
               "metric": m.metric, **{k: m.cell.get(k, "") for k in cell_keys},
               "value": float(m.value), "n": int(m.n), "seed": info.seed,
               "config_hash": info.config_hash, "method_config": info.method_config,
               "versions": versions, "timestamp": timestamp, "origin": info.origin}
        rows.append(row)
    return pd.DataFrame(rows, columns=[*IDENTITY, *cell_keys, *FACTS])


def cell_columns(rows: pd.DataFrame) -> list[str]:
    """The cell-key columns of run rows (every protocol's that is present)."""
    return [c for c in rows.columns if c not in IDENTITY and c not in FACTS]


def write_run(results_dir: Path, info: RunInfo, measurements: list[Measurement],
              provenance: dict, cell_keys: Sequence[str], timestamp: str | None = None) -> Path:
    """Write the run's CSV and JSON sidecar atomically; returns the CSV path."""
    csv_path = info.csv_path(results_dir)
    ensure_folder(csv_path.parent, "results folder", "pass a writable --results-dir")
    frame = run_frame(info, measurements, cell_keys, timestamp)
    buffer = io.StringIO()
    frame.to_csv(buffer, index=False, lineterminator="\n")
    sidecar = {"versions": library_versions(), **provenance, "run_id": info.run_id}
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
    for path in (csv.with_suffix(".json") for csv in run_files(results_dir)):
        try:
            meta = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            log.warning("skipping the unreadable sidecar %s (%s)", path, err)
            continue
        if isinstance(meta, dict):
            out[meta.get("run_id", path.stem)] = meta
    return out


def load_runs(results_dir: Path) -> pd.DataFrame:
    """All run rows under `results_dir/runs`, in a stable order; a damaged run file is skipped
    with a warning naming it."""
    frames = [frame for frame in map(_read_run, run_files(results_dir)) if frame is not None]
    if not frames:
        return pd.DataFrame(columns=[*IDENTITY, *FACTS])
    rows = pd.concat(frames, ignore_index=True)
    cells = cell_columns(rows)
    rows[cells] = rows[cells].fillna("")  # a key of another protocol: not part of this cell
    return rows[[*IDENTITY, *cells, *FACTS]]


def _read_run(path: Path) -> pd.DataFrame | None:
    """One run file, or None (and a warning) when it is empty, unreadable or malformed."""
    try:
        header = pd.read_csv(path, nrows=0).columns
        text = {c: str for c in header if c not in ("value", "n", "seed")}
        frame = pd.read_csv(path, dtype=text, keep_default_na=False)
    except (OSError, UnicodeDecodeError, ValueError, pd.errors.ParserError,
            pd.errors.EmptyDataError) as err:
        return _skip(path, f"is unreadable ({type(err).__name__})")
    if "origin" not in frame.columns:  # written before given models could be evaluated
        frame["origin"] = "trained"
    missing = [c for c in (*IDENTITY, *FACTS) if c not in frame.columns]
    if missing:
        return _skip(path, f"has no column {missing[0]!r}")
    if frame.empty:
        return _skip(path, "has no rows")
    for column, kind in (("value", float), ("n", int), ("seed", int)):
        numbers = pd.to_numeric(frame[column], errors="coerce")
        if numbers.isna().any():
            return _skip(path, f"has a non-numeric {column}")
        frame[column] = numbers.astype(kind) if kind is int else numbers
    return frame


def _skip(path: Path, why: str) -> None:
    log.warning("skipping the damaged run file %s: it %s; delete it or re-run that run", path, why)
    return None


def board_stems(results_dir: Path) -> set[str]:
    """`<protocol>-<dataset>-<preset>` of every run file, readable or not (by its run id)."""
    stems = set()
    for path in run_files(results_dir):
        parts = path.stem.split("-")
        if len(parts) >= 7:
            stems.add(f"{parts[1]}-{parts[2]}-{parts[4]}")
    return stems
