"""The golden set: tolerances, what `check` catches (a moved number, a broken method, a missing
model, a version change), the atomic swap of `check --update`, and the staleness check of derived
leaderboards."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from robustbench_lite.bench import golden, leaderboard, suite
from robustbench_lite.bench.errors import UserError
from robustbench_lite.bench.results import load_provenance, load_runs

REPO = Path(__file__).resolve().parents[1]
COMMITTED = REPO / "results"
SMALL = suite.Suite(methods=("erm",), protocols=("clean",))


def _row(metric="accuracy", value=0.9, n=100, run="r1", **cell):
    base = {"run_id": run, "method": "erm", "protocol": "clean", "dataset": "digits",
            "backbone": "tiny", "preset": "smoke", "seed": 0, "metric": metric, "value": value,
            "n": n}
    keys = ("corruption", "severity", "shots")
    return {**base, **{k: cell.get(k, "") for k in keys}}


def test_numbers_may_move_by_one_example_and_counts_not_at_all():
    golden_rows = pd.DataFrame([_row(value=0.90), _row("error", 0.3, 0, corruption="fog"),
                                _row("flag_pgd_weaker_than_fgsm", 0.0),
                                _row("epoch_factor", 10.0, 0, shots="5")])
    assert suite.compare(golden_rows, golden_rows) == []
    one_example = golden_rows.assign(value=[0.91, 0.31, 0.0, 10.0])
    assert suite.compare(golden_rows, one_example) == []  # 1/100 on the cell and the aggregate
    two_examples = golden_rows.assign(value=[0.88, 0.28, 1.0, 20.0])
    lines = [m.line() for m in suite.compare(golden_rows, two_examples)]
    assert lines == [
        "erm / clean / accuracy / - / expected 0.9 / got 0.88 / tolerance 0.01",
        "erm / clean / epoch_factor / shots=5 / expected 10 / got 20 / tolerance 0",
        "erm / clean / error / corruption=fog / expected 0.3 / got 0.28 / tolerance 0.01",
        "erm / clean / flag_pgd_weaker_than_fgsm / - / expected 0 / got 1 / tolerance 0"]
    missing = suite.compare(golden_rows, golden_rows.iloc[:1])
    assert {m.metric for m in missing} == {"error", "flag_pgd_weaker_than_fgsm", "epoch_factor"}
    assert all(m.got is None for m in missing)


@pytest.fixture(scope="module")
def small_set(tmp_path_factory):
    """A golden set of the ERM x clean suite, made once for the tests that alter copies of it."""
    results = tmp_path_factory.mktemp("small") / "results"
    golden.update(results, SMALL, progress=False)
    return results


def _copy(results: Path, tmp_path) -> Path:
    shutil.copytree(results / "golden", tmp_path / "results" / "golden")
    return tmp_path / "results"


@pytest.fixture
def committed_copy(tmp_path) -> Path:
    """A results folder holding a copy of the committed golden set."""
    return _copy(COMMITTED, tmp_path)


@pytest.mark.slow
def test_a_golden_set_passes_its_own_check_and_a_moved_number_fails(small_set, tmp_path):
    results = _copy(small_set, tmp_path)
    report = golden.check(results, SMALL, progress=False)
    assert report.ok and report.numbers_compared == 4 and report.probes_compared == 1
    assert report.version_changes == []
    (csv,) = (results / "golden" / "runs" / "clean").glob("*.csv")
    rows = pd.read_csv(csv)
    assert rows.loc[0, "metric"] == "accuracy"
    rows.loc[0, "value"] -= 0.05  # a regression's size: 22 of 450 test images
    rows.to_csv(csv, index=False)
    report = golden.check(results, SMALL, progress=False)
    assert not report.ok
    (mismatch,) = report.numbers
    assert mismatch.line().startswith("erm / clean / accuracy / - / expected ")
    assert "numbers: 4 compared, 1 drifted" in "\n".join(report.lines())


def test_a_missing_golden_model_is_reported_as_such(committed_copy):
    results = committed_copy
    manifest = json.loads((results / "golden" / "manifest.json").read_text())
    (model,) = [name for name in manifest["files"] if _is_default_model(results, name, "erm")]
    (results / "golden" / model).unlink()
    del manifest["files"][model]
    (results / "golden" / "manifest.json").write_text(json.dumps(manifest))
    report = golden.check(results, SMALL, progress=False)
    (missing,) = report.missing
    assert missing.startswith(f"no cached model {Path(model).name} for erm")
    assert report.numbers == [] and not report.ok  # its cells are skipped, not reported twice


def test_a_damaged_golden_model_is_refused(committed_copy):
    results = committed_copy
    model = next((results / "golden" / "models").glob("erm-*.pt"))
    model.write_bytes(model.read_bytes()[:-10])
    with pytest.raises(UserError, match="missing or damaged"):
        golden.check(results, SMALL, progress=False)


def test_a_version_change_is_reported_apart_from_drift(committed_copy):
    results = committed_copy
    path = results / "golden" / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["versions"]["torch"] = "2.15.0"
    path.write_text(json.dumps(manifest))
    report = golden.check(results, SMALL, progress=False)
    assert report.ok
    installed = report.installed["torch"]
    assert report.version_changes == [f"torch 2.15.0 -> {installed}"]
    text = "\n".join(report.lines())
    assert "golden set made" in text and "torch 2.15.0" in text and f"torch {installed}" in text
    assert f"version mismatch (not drift): torch 2.15.0 -> {installed}" in text


def test_an_interrupted_update_leaves_one_complete_set(committed_copy):
    results = committed_copy
    current, new, old = (results / n for n in ("golden", "golden.new", "golden.old"))
    # interrupted while the new set was written: the old set stays, the partial one is ignored
    shutil.copytree(current, new)
    (new / "manifest.json").unlink()
    assert golden.golden_dir(results) == current and golden.read_manifest(current)
    # interrupted between the two renames: the complete new set is moved into place
    (new / "manifest.json").write_text((current / "manifest.json").read_text())
    os.replace(current, old)
    assert golden.golden_dir(results) == current and not new.exists()
    assert golden.check(results, SMALL, progress=False).ok
    # the old set only: it is moved back
    shutil.rmtree(old)
    os.replace(current, old)
    assert golden.golden_dir(results) == current and (current / "manifest.json").is_file()


@pytest.mark.slow
def test_update_reuses_golden_models_and_trains_only_new_ones(small_set, tmp_path):
    results = _copy(small_set, tmp_path)
    before = json.loads((results / "golden" / "manifest.json").read_text())["files"]
    bigger = suite.Suite(methods=("erm", "cutmix"), protocols=("clean",))
    after = golden.update(results, bigger, progress=False)["files"]
    assert set(before) < set(after) and len(after) == 2
    for name, digest in before.items():
        assert after[name] == digest  # the ERM model was reused, not retrained
    assert not (results / "golden.new").exists() and not (results / "golden.old").exists()


def _is_default_model(results: Path, name: str, method: str) -> bool:
    """Whether golden model `name` is the default model of `method` (not a low-data one)."""
    runs = load_provenance(results / "golden")
    return any(Path(name).name in meta.get("models", []) for run_id, meta in runs.items()
               if run_id.startswith(f"{method}-clean-"))


def _committed_probe(method: str, cache: Path) -> tuple[float, float]:
    """(distance of this checkout's probe from the committed golden one, its tolerance)."""
    one = suite.Suite(methods=(method,), protocols=("clean",))
    if not cache.exists():
        golden.install_models(COMMITTED / "golden", golden.read_manifest(COMMITTED / "golden"), cache)
    measured = golden.probes(one, cache)
    expected = golden.read_probes(COMMITTED / "golden" / golden.TRAINING)
    job = f"{method}-s0"
    return measured[job].distance(expected[job]), golden.probe_tolerance(method)


def test_the_committed_training_probes_hold_and_catch_a_mixup_that_does_not_mix(monkeypatch,
                                                                               tmp_path):
    distance, tolerance = _committed_probe("mixup", tmp_path / "cache")
    assert distance <= tolerance
    import robustbench_lite.methods.mixup as mixup

    monkeypatch.setattr(mixup, "sample_lambda", lambda alpha, rng: 1.0)  # no mixing at all
    distance, tolerance = _committed_probe("mixup", tmp_path / "cache")
    assert distance > 20 * tolerance


def test_check_fails_on_a_broken_method(monkeypatch, tmp_path):
    """`check` itself, on the committed golden set, with CutMix pasting nothing."""
    import robustbench_lite.methods.cutmix as cutmix

    monkeypatch.setattr(cutmix, "sample_lambda", lambda alpha, rng: 1.0)  # an empty box
    one = suite.Suite(methods=("cutmix",), protocols=("clean",))
    report = golden.check(COMMITTED, one, progress=False)
    assert report.numbers == [] and report.missing == []  # measuring the golden model still holds
    (drift,) = report.training
    assert drift.job == "cutmix-s0" and drift.distance > drift.tolerance
    assert not report.ok


def test_leaderboard_regeneration_is_byte_identical_and_staleness_is_detected(committed_copy,
                                                                             tmp_path):
    results = committed_copy / "golden"
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


def test_the_committed_golden_set_covers_every_method_and_protocol():
    rows = golden.suite_rows(load_runs(COMMITTED / "golden"), suite.CI)
    grid = suite.CI.grid()
    assert {(m, p) for m in grid.methods for p in grid.protocols} == set(zip(rows.method,
                                                                            rows.protocol))
    probes = golden.read_probes(COMMITTED / "golden" / golden.TRAINING)
    assert set(probes) == {f"{m}-s0" for m in grid.methods}


@pytest.mark.slow
def test_ci_suite_reproduces_the_golden_set():
    """The regression gate: the whole ci suite measured on the golden models, and every probe."""
    proc = subprocess.run([sys.executable, "-m", "robustbench_lite.bench.cli", "check",
                           "--no-progress"], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "numbers: " in proc.stdout and "all within tolerance" in proc.stdout
