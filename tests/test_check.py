"""The golden-number regression check and the staleness check of derived leaderboards."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd

from robustbench_lite.bench import leaderboard, suite
from robustbench_lite.bench.results import CELL_KEYS

REPO = Path(__file__).resolve().parents[1]
SMALL = suite.Suite(methods=("erm",), protocols=("clean",))


def _row(metric="accuracy", value=0.9, **cell):
    base = {"method": "erm", "protocol": "clean", "dataset": "digits", "backbone": "tiny",
            "preset": "smoke", "seed": 0, "metric": metric, "value": value}
    return {**base, **{k: cell.get(k, "") for k in CELL_KEYS}}


def test_compare_reports_moved_and_missing_numbers():
    golden = pd.DataFrame([_row(value=0.90), _row("error", 0.3, corruption="fog", severity="3")])
    same = suite.compare(golden, golden)
    assert same == []
    within = pd.DataFrame([_row(value=0.905), _row("error", 0.3, corruption="fog", severity="3")])
    assert suite.compare(golden, within) == []
    moved = pd.DataFrame([_row(value=0.80)])
    lines = [m.line() for m in suite.compare(golden, moved)]
    assert "erm / clean / accuracy / - / expected 0.9 / got 0.8" in lines
    assert "erm / clean / error / corruption=fog severity=3 / expected 0.3 / got missing" in lines


def test_flags_must_match_exactly():
    golden = pd.DataFrame([_row("flag_pgd_weaker_than_fgsm", 0.0)])
    assert len(suite.compare(golden, pd.DataFrame([_row("flag_pgd_weaker_than_fgsm", 1.0)]))) == 1


def test_changing_one_golden_number_fails_and_restoring_passes(tmp_path):
    results = tmp_path / "results"
    suite.update(results, SMALL, progress=False)
    assert suite.check(results, SMALL, progress=False) == []
    (csv,) = results.glob("runs/clean/*.csv")
    original = csv.read_text()
    rows = pd.read_csv(csv)
    rows.loc[0, "value"] = rows.loc[0, "value"] - 0.1
    rows.to_csv(csv, index=False)
    (mismatch,) = suite.check(results, SMALL, progress=False)
    assert mismatch.line().startswith("erm / clean / accuracy / - / expected ")
    csv.write_text(original)
    assert suite.check(results, SMALL, progress=False) == []


def test_leaderboard_regeneration_is_byte_identical_and_staleness_is_detected(tmp_path):
    results = tmp_path / "results"
    suite.update(results, SMALL, progress=False)
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{leaderboard.BEGIN}\nold\n{leaderboard.END}\noutro\n")
    leaderboard.write(results, readme)
    first = {p: p.read_bytes() for p in sorted(results.rglob("leaderboards/*"))}
    assert leaderboard.stale(results, readme) == []
    leaderboard.write(results, readme)
    assert first == {p: p.read_bytes() for p in sorted(results.rglob("leaderboards/*"))}
    board = results / "leaderboards" / "clean-digits-smoke.md"
    board.write_text(board.read_text() + "edited\n")
    assert leaderboard.stale(results, readme) == [board]


def test_committed_leaderboards_and_readme_are_up_to_date():
    proc = subprocess.run([sys.executable, "-m", "robustbench_lite.bench.cli", "leaderboard",
                           "--check"], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_committed_golden_numbers_cover_every_method_and_protocol():
    rows = suite.golden_rows(REPO / "results")
    ci = suite.CI.grid()
    grid = {(m, p) for m in ci.methods for p in ci.protocols}
    assert grid and grid <= set(zip(rows.method, rows.protocol))


def test_ci_suite_reproduces_the_golden_numbers():
    """The regression gate: re-train and re-measure the whole ci suite from scratch."""
    proc = subprocess.run([sys.executable, "-m", "robustbench_lite.bench.cli", "check",
                           "--no-progress"], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
