"""Leaderboards: pure views derived from the run files (CSV with fractions, markdown in percent, one
comparison figure per board).

One leaderboard per (protocol, dataset, preset), one row per (method, backbone), each protocol column
aggregated over seeds as mean, std and n; `origin` says whether the suite trained the row's model or
evaluated a given one (`eval`, which joins the board of the preset it names). Numbers that need
several runs (mCE) are derived here, so the order in which runs were made does not matter.
Regenerating from the same run files gives the same CSV and markdown byte for byte (`stale` checks those; figures are checked to exist).
"""

from __future__ import annotations

import io
import logging
import math
import os
from collections.abc import Iterable
from pathlib import Path

import pandas as pd
from tabulate import tabulate

from .atomic import ensure_folder, write_atomic
from .errors import UserError
from .figures import png_bytes
from .protocol import PROTOCOLS, Column, Measurement, Protocol
from .results import atomic_write, board_stems, load_provenance, load_runs

log = logging.getLogger(__name__)

KEY = ("method", "backbone")
_ARROWS = {True: "↑", False: "↓", None: ""}
BEGIN, END = "<!-- leaderboards:begin -->", "<!-- leaderboards:end -->"


def format_epsilon(eps: float) -> str:
    """8/255 for multiples of 1/255 below 1, else the plain number (how people write radii)."""
    scaled = eps * 255
    if 0 < eps < 1 and abs(scaled - round(scaled)) < 1e-6:
        return f"{round(scaled)}/255"
    return f"{eps:g}"


def select(rows: pd.DataFrame, column: Column) -> pd.DataFrame:
    """Rows holding the column's metric in the column's cell."""
    mask = rows["metric"] == column.metric
    for key, value in column.where.items():
        mask &= rows[key].astype(str) == str(value)
    return rows[mask]


def aggregate(rows: pd.DataFrame, columns: list[Column]) -> pd.DataFrame:
    """Wide table: per (method, backbone), mean/std over seeds of every column, and the seed count."""
    table = rows[list(KEY)].drop_duplicates().sort_values(list(KEY)).reset_index(drop=True)
    own = [rows[(rows.method == m) & (rows.backbone == b)]
           for m, b in zip(table.method, table.backbone)]
    table["origin"] = [", ".join(sorted(set(r["origin"]))) for r in own]
    table["seeds"] = [r["seed"].nunique() for r in own]
    for column in columns:
        picked = select(rows, column).groupby(list(KEY) + ["seed"])["value"].mean().reset_index()
        stats = picked.groupby(list(KEY))["value"].agg(["mean", "std", "count"]).reset_index()
        stats = stats.rename(columns={"mean": column.label, "std": f"{column.label} std",
                                      "count": f"{column.label} n"})
        table = table.merge(stats, on=list(KEY), how="left")
    if columns:
        first = columns[0]
        table = table.sort_values([first.label, "method"], ascending=[not first.higher_is_better, True],
                                  na_position="last", kind="mergesort").reset_index(drop=True)
    return table


def render_markdown(title: str, table: pd.DataFrame, columns: list[Column],
                    notes: Iterable[str] = (), marks: dict | None = None,
                    figure: str | None = None) -> str:
    """A markdown table: rank, method (with its mark), backbone, every column as mean ± std, seeds;
    then the comparison figure, the footnotes, and one footnote per column showing a dash."""
    marks = marks or {}
    origin = bool(len(table)) and set(table["origin"]) != {"trained"}  # shown once a row is given
    headers = ["#", "method", "backbone", *(["origin"] if origin else []),
               *[f"{c.label} {_ARROWS[c.higher_is_better]}".rstrip() for c in columns], "seeds"]
    body, dashed = [], []
    for rank, record in enumerate(table.to_dict("records"), start=1):
        cells = [_cell(record, c) for c in columns]
        dashed += [c for c, text in zip(columns, cells) if text == "—" and c not in dashed]
        method = record["method"] + marks.get((record["method"], record["backbone"]), "")
        body.append([rank, method, record["backbone"], *([record["origin"]] if origin else []),
                     *cells, record["seeds"]])
    text = f"## {title}\n\n" + tabulate(body, headers, tablefmt="github", disable_numparse=True)
    if figure:
        text += f"\n\n![{title}]({figure})"
    reasons: dict[str, list[str]] = {}
    for column in dashed:
        reasons.setdefault(column.absent, []).append(f"*{column.label}*")
    notes = [*notes, *(f"— in {', '.join(labels)}: {why}" for why, labels in reasons.items())]
    if notes:
        text += "\n\n" + "\n".join(f"- {n}" for n in notes)
    return text + "\n"


def _cell(record: dict, column: Column) -> str:
    mean, std = record.get(column.label), record.get(f"{column.label} std")
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "—"
    scale, digits = column.scale_and_digits()
    text = f"{mean * scale:,.{digits}f}" if column.thousands else f"{mean * scale:.{digits}f}"
    if std is not None and not math.isnan(std):
        text += f" ± {std * scale:.{digits}f}"
    return text


def measurements_table(measurements: list[Measurement], hidden: Iterable[str] = (),
                       limit: int = 40) -> str:
    """One run's numbers for a person: aggregates first, internal numbers left out, ε as k/255."""
    shown = sorted((m for m in measurements if m.metric not in set(hidden)),
                   key=lambda m: len(m.cell))
    rows = [[m.metric, _cell_text(m.cell), f"{m.value:.4f}", m.n or ""] for m in shown]
    text = tabulate(rows[:limit], ["metric", "cell", "value", "n"], tablefmt="simple",
                    disable_numparse=True)
    if len(rows) > limit:
        text += f"\n... {len(rows) - limit} more rows in the results file"
    return text


def _cell_text(cell: dict) -> str:
    return " ".join(f"{k}={format_epsilon(float(v)) if k == 'epsilon' else v}"
                    for k, v in cell.items())


def build(results_dir: Path) -> dict[Path, str | bytes]:
    """Every leaderboard file (path -> text, or PNG bytes for figures) derived from the run files
    under `results_dir`."""
    rows, provenance = load_runs(results_dir), load_provenance(results_dir)
    files: dict[Path, str | bytes] = {}
    out = results_dir / "leaderboards"
    for (protocol, dataset, preset), group in rows.groupby(["protocol", "dataset", "preset"], sort=True):
        proto = _protocol(protocol)
        derived, derived_notes = proto.derived(group, provenance)
        group = pd.concat([group, derived], ignore_index=True) if len(derived) else group
        columns = proto.leaderboard_columns(group)
        table = aggregate(group, columns)
        stem = f"{protocol}-{dataset}-{preset}"
        buffer = io.StringIO()
        table.to_csv(buffer, index=False, lineterminator="\n", float_format="%.6g")
        files[out / f"{stem}.csv"] = buffer.getvalue()
        title = f"{protocol} · {dataset} · preset {preset}"
        figure = proto.comparison_figure(group, title)
        if figure is not None:
            files[out / f"{stem}.png"] = png_bytes(figure)
        files[out / f"{stem}.md"] = render_markdown(
            title, table, columns, derived_notes + proto.notes(group), proto.marks(group),
            f"{stem}.png" if figure is not None else None)
    if files:
        index = [files[p] for p in sorted(files) if p.suffix == ".md"]
        files[out / "README.md"] = "# Leaderboards\n\nGenerated by `robustbench-lite leaderboard` " \
            "from the run files in `../runs/`; do not edit.\n\n" + "\n".join(index)
    return files


def readme_section(files: dict[Path, str | bytes], readme: Path) -> str:
    """The README's leaderboard section: every table except the smoke-preset (CI) ones, their
    figures linked relative to the README."""
    tables = []
    for path, text in sorted(files.items()):
        if path.suffix == ".md" and path.name != "README.md" and "-smoke." not in path.name:
            where = Path(os.path.relpath(path.parent.resolve(), readme.parent.resolve())).as_posix()
            text = text.replace(f"]({path.stem}.png)", f"]({where}/{path.stem}.png)")
            tables.append(text.replace("\n## ", "\n### ").replace("## ", "### ", 1))
    body = "\n".join(tables) if tables else "No runs yet.\n"
    return f"{BEGIN}\n{body}{END}"


def with_readme(files: dict, readme: Path) -> dict:
    """`files` plus the README with its leaderboard section regenerated (when it has the markers)."""
    if not readme.exists():
        return files
    text = readme.read_text(encoding="utf-8")
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < start:
        return files
    return {**files, readme: text[:start] + readme_section(files, readme) + text[end + len(END):]}


def stale(results_dir: Path, readme: Path | None = None) -> list[Path]:
    """Derived files whose committed content differs from a regeneration, that are missing, or
    that no run file explains any more (figures: missing only)."""
    files = build(results_dir)
    if readme is not None:
        files = with_readme(files, readme)
    folder = results_dir / "leaderboards"
    existing = set(folder.glob("*")) if folder.exists() else set()
    changed = [p for p, text in files.items() if not p.exists()
               or (isinstance(text, str) and p.read_text(encoding="utf-8") != text)]
    return sorted(changed + [p for p in existing if p not in files])


def _protocol(name: str) -> Protocol:
    try:
        return PROTOCOLS.get(name)()
    except UserError:
        return _UnknownProtocol()


class _UnknownProtocol(Protocol):
    """Results of a protocol that is not installed: shown without columns."""


def write(results_dir: Path, readme: Path | None = None) -> list[Path]:
    """Regenerate every leaderboard file (and the README section); returns the paths written."""
    files = build(results_dir)
    if readme is not None:
        files = with_readme(files, readme)
    folder = results_dir / "leaderboards"
    existing = sorted(folder.glob("*"))
    if existing and not any(p.parent == folder for p in files):
        log.warning("no readable run files under %s: the leaderboards are left as they are",
                    results_dir / "runs")
        return []
    kept = board_stems(results_dir)  # a board whose runs are all damaged stays until repaired
    for old in existing:
        if old not in files and old.stem not in kept:
            old.unlink()
    for path, content in files.items():
        ensure_folder(path.parent, "leaderboard folder", "pass a writable --results-dir")
        if isinstance(content, bytes):
            write_atomic(path, lambda handle, data=content: handle.write(data),
                         hint="pass a writable --results-dir")
        else:
            atomic_write(path, content)
    return sorted(files)
