"""What a person reads and shares: files readable as the umask allows, one figure per run setting,
a printed table without internal rows, provenance with the commit and the machine, `perf` figures."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from robustbench_lite.bench import perf
from robustbench_lite.bench.cli import main
from robustbench_lite.bench.leaderboard import measurements_table
from robustbench_lite.bench.protocol import Measurement

FAST = ["--preset", "smoke", "--set", "recipe.epochs=1", "--set", "recipe.train_limit=64",
        "--no-progress"]


def _corruption_run(tmp_path: Path, *sets: str) -> int:
    args = ["run", "--method", "erm", "--protocol", "corruption", *FAST, "--set",
            "protocol.n_examples=20", "--set", "protocol.corruptions=fog", "--results-dir",
            str(tmp_path / "results"), "--cache-dir", str(tmp_path / "cache")]
    return main([*args, *(item for s in sets for item in ("--set", s))])


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_every_file_a_run_writes_is_readable_by_group_and_others(tmp_path, umask_022):
    assert _corruption_run(tmp_path) == 0
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    kinds = {p.suffix for p in files}
    assert {".csv", ".json", ".md", ".png", ".pt", ".npy"} <= kinds
    unreadable = [p for p in files if stat.S_IMODE(p.stat().st_mode) & 0o044 != 0o044]
    assert unreadable == []
    assert all(stat.S_IMODE(p.stat().st_mode) & 0o022 == 0 for p in files)  # the mask holds


def test_two_runs_differing_in_a_setting_leave_two_figures(tmp_path):
    assert _corruption_run(tmp_path) == 0
    assert _corruption_run(tmp_path, "protocol.seed=1") == 0
    figures = sorted((tmp_path / "results" / "figures").glob("*.png"))
    runs = sorted((tmp_path / "results" / "runs" / "corruption").glob("*.csv"))
    assert len(figures) == 2 and [f"{r.stem}-severity.png" for r in runs] == [f.name for f in figures]
    assert (tmp_path / "results" / "leaderboards" / "corruption-digits-smoke.png").is_file()


def test_the_printed_table_leads_with_aggregates_and_hides_internal_rows():
    measurements = [Measurement("robust_accuracy", 0.5, 100, {"attack": "pgd", "epsilon": 8 / 255}),
                    Measurement("canonical_files", 0.0), Measurement("accuracy", 0.9, 100)]
    lines = measurements_table(measurements, hidden=("canonical_files",)).splitlines()
    assert lines[2].split()[:2] == ["accuracy", "0.9000"]
    assert "attack=pgd epsilon=8/255" in lines[3] and "canonical_files" not in "".join(lines)


def test_provenance_names_the_commit_the_machine_and_optional_libraries(tmp_path):
    import pyautoattack  # noqa: F401  an optional library this process has loaded

    assert _corruption_run(tmp_path) == 0
    (sidecar,) = (tmp_path / "results" / "runs" / "corruption").glob("*.json")
    meta = json.loads(sidecar.read_text())
    assert meta["cpu"] and "torch" in meta["versions"] and "pyautoattack" in meta["versions"]
    assert "gpu" in meta and meta["reference"] == "erm" and meta["models"]
    if meta["git"] is not None:  # run from a checkout
        assert len(meta["git"]["commit"]) == 40 and isinstance(meta["git"]["dirty"], bool)


def test_perf_reports_the_command_line_latencies():
    lines = perf.run_sections(["cli"])
    figures = dict(line.split("=") for line in lines if "=" in line and " " not in line)
    assert float(figures["cli_help_s"]) > 0 and float(figures["cli_list_s"]) > 0
