"""Sweeps: planning, identical numbers on every executor, resuming only what is missing, failures
reported with their logs."""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from robustbench_lite.bench import settings, sweep
from robustbench_lite.bench.errors import UserError
from robustbench_lite.bench.runner import resolve, run_context
from robustbench_lite.bench.settings import Settings
from robustbench_lite.bench.sweep import Grid, Options, plan, requests, run_sweep

TWO_WORKERS = Options(workers=2, cpus_per_job=1)


def run_files(results: Path) -> list[Path]:
    return sorted(results.glob("runs/*/*.csv"))


def test_plan_has_a_training_job_per_method_and_seed_and_an_evaluation_per_cell(grid, tmp_path):
    todo = plan(dataclasses.replace(grid, seeds=(0, 1)), tmp_path / "results", tmp_path / "cache")
    assert [g.train.name for g in todo.groups] == ["train-erm-digits-s0", "train-erm-digits-s1",
                                                   "train-mixup-digits-s0", "train-mixup-digits-s1"]
    for group in todo.groups:
        method, seed = group.train.request.method, group.train.request.seed
        assert [(j.request.method, j.request.protocol, j.request.seed) for j in group.evaluations] \
            == [(method, "clean", seed), (method, "adversarial", seed)]
        # evaluation jobs are named by the run id the runner will give them
        assert [j.name for j in group.evaluations] == \
            [resolve(j.request).info.run_id for j in group.evaluations]
    assert todo.done == [] and len(todo.jobs) == 12


def test_settings_reach_only_the_methods_and_protocols_that_have_them(tmp_path):
    grid = Grid(("erm", "mixup"), ("clean", "adversarial"), overrides=settings.parse(
        ["protocol.n_examples=7", "alpha=0.3", "recipe.epochs=2", "adversarial.pgd_steps=3"]))
    sets = {(r.method, r.protocol): r.settings for r in requests(grid, tmp_path, tmp_path)}
    assert sets["erm", "clean"] == Settings({}, {}, {"epochs": "2"})
    assert sets["mixup", "adversarial"] == Settings({"alpha": "0.3"},
                                                    {"n_examples": "7", "pgd_steps": "3"},
                                                    {"epochs": "2"})
    resolved = resolve(next(r for r in requests(grid, tmp_path, tmp_path) if r.method == "mixup"))
    assert resolved.method.config.alpha == 0.3 and resolved.recipe.epochs == 2
    for bad in (["protocol.nonexistent=1"], ["nonexistent=1"], ["nowhere.k=1"]):
        with pytest.raises(UserError, match="--set"):
            plan(dataclasses.replace(grid, overrides=settings.parse(bad)), tmp_path / "r",
                 tmp_path / "c")


@pytest.mark.slow
def test_local_sweep_writes_every_cell_with_logs_and_leaderboards(local_sweep):
    summary = local_sweep.summary
    assert summary.ok and summary.attempts == 6 and sorted(summary.succeeded) == \
        sorted(summary.submitted)
    trainings = [n for n in summary.submitted if n.startswith("train-")]
    assert trainings == ["train-erm-digits-s0", "train-mixup-digits-s0"]
    assert sorted(f.stem for f in run_files(local_sweep.results)) == \
        sorted(set(summary.submitted) - set(trainings))
    logs = local_sweep.results / "sweeps" / summary.sweep_id / "logs"
    assert sorted(p.stem for p in logs.glob("*.log")) == sorted(summary.submitted)
    assert (local_sweep.results / "leaderboards" / "adversarial-digits-smoke.csv").exists()
    board = pd.read_csv(local_sweep.results / "leaderboards" / "clean-digits-smoke.csv")
    assert sorted(board.method) == ["erm", "mixup"] and (board["clean acc"] > 0.3).all()


@pytest.mark.slow
@pytest.mark.parametrize("executor", ["submitit-local", "ray"])
def test_every_executor_gives_the_same_leaderboards(local_sweep, sweep_on, grid, executor, tmp_path):
    """ERM's training and evaluations on another executor: the local pool's numbers for ERM."""
    pytest.importorskip(executor.split("-")[0])
    other = sweep_on(tmp_path, executor, dataclasses.replace(grid, methods=("erm",)))
    assert other.summary.ok and len(other.summary.submitted) == 3
    boards = sorted(p.name for p in (local_sweep.results / "leaderboards").glob("*.csv"))
    assert boards == ["adversarial-digits-smoke.csv", "clean-digits-smoke.csv"]
    for name in boards:  # every number but the machine's speed
        mine, theirs = (pd.read_csv(r / "leaderboards" / name)
                        for r in (local_sweep.results, other.results))
        mine = mine[mine.method == "erm"].reset_index(drop=True)
        speed = [c for c in mine.columns if c.startswith("eval img/s")]
        assert speed == [] or name.startswith("clean")
        pd.testing.assert_frame_equal(theirs.drop(columns=speed), mine.drop(columns=speed),
                                      check_dtype=False)  # a column of whole numbers reads as int


@pytest.mark.slow
def test_rerunning_a_finished_sweep_submits_nothing(local_sweep, grid):
    again = run_sweep(grid, TWO_WORKERS, local_sweep.results, local_sweep.cache, progress=False)
    assert again.submitted == [] and again.attempts == 0 and len(again.skipped) == 4


@pytest.mark.slow
def test_a_lost_run_file_is_redone_alone(local_sweep, grid, tmp_path):
    results = tmp_path / "results"
    shutil.copytree(local_sweep.results, results)
    lost = next(f for f in run_files(results) if f.stem.startswith("mixup-clean"))
    def numbers() -> dict:  # every number but the machine's speed
        frame = pd.read_csv(lost)
        return dict(zip(frame.metric, frame.value)) | {"images_per_second": None}

    expected = numbers()
    lost.unlink()
    again = run_sweep(grid, TWO_WORKERS, results, local_sweep.cache, progress=False)
    # the model is cached, so no training job: only the lost evaluation runs
    assert again.submitted == [lost.stem] and again.ok
    assert numbers() == expected and "parameters" in expected


@pytest.mark.slow
def test_a_failing_job_is_reported_with_its_log_and_the_rerun_redoes_only_it(local_sweep, grid,
                                                                              tmp_path):
    grid = dataclasses.replace(grid, protocols=("clean",), overrides={})
    results = tmp_path / "results"
    (failing, succeeding) = sorted(plan(grid, results, local_sweep.cache).jobs,
                                   key=lambda j: j.request.method != "mixup")
    # a folder where the run's provenance file must go: writing the run fails
    blocker = results / "runs" / "clean" / f"{failing.name}.json"
    blocker.mkdir(parents=True)
    proc = subprocess.run(
        [sys.executable, "-m", "robustbench_lite.bench.cli", "sweep", "--methods", "erm,mixup",
         "--protocols", "clean", "--preset", "smoke", "--results-dir", str(results),
         "--cache-dir", str(local_sweep.cache), "--executor", "local", "--workers", "2",
         "--cpus-per-job", "1", "--retries", "1", "--no-progress"],
        capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 1, proc.stderr
    assert "2 jobs run (3 attempts): 1 succeeded, 1 failed" in proc.stdout
    assert f"failed: {failing.name}: IsADirectoryError" in proc.stdout
    assert f"log: {failing.log}" in proc.stdout and "Traceback" in failing.log.read_text()
    assert [f.stem for f in run_files(results)] == [succeeding.name]

    blocker.rmdir()
    again = run_sweep(grid, TWO_WORKERS, results, local_sweep.cache, progress=False)
    assert again.submitted == [failing.name] and again.ok
    assert sorted(f.stem for f in run_files(results)) == sorted([failing.name, succeeding.name])


@pytest.mark.slow
def test_a_failed_training_job_blocks_its_evaluations(grid, tmp_path):
    grid = dataclasses.replace(grid, methods=("erm",), overrides={"recipe": {"crop_size": "40"}})
    summary = run_sweep(grid, Options(workers=1, cpus_per_job=1), tmp_path / "results",
                        tmp_path / "cache", progress=False)
    assert not summary.ok and summary.attempts == 1
    assert [f.job for f in summary.failed] == ["train-erm-digits-s0"]
    assert "crop_size 40 exceeds" in summary.failed[0].error
    assert len(summary.blocked) == 2 and run_files(tmp_path / "results") == []


def test_training_job_fills_the_cache_that_evaluations_reuse(grid, tmp_path, monkeypatch):
    small = dataclasses.replace(grid, methods=("erm",), protocols=("clean",), overrides={})
    req = requests(small, tmp_path / "results", tmp_path / "cache")[0]
    req = dataclasses.replace(req, settings=Settings(recipe={"train_limit": "64", "epochs": "1"}))
    checkpoint = Path(sweep.train_job(req, resolve(req)))
    assert checkpoint.exists() and checkpoint.parent == tmp_path / "cache"
    trained = checkpoint.stat().st_mtime_ns
    ctx = run_context(req, resolve(req))
    monkeypatch.setattr("robustbench_lite.bench.train.Trainer.fit", _must_not_train)
    ctx.train()  # what the evaluation job does: a cache hit
    assert checkpoint.stat().st_mtime_ns == trained


def _must_not_train(*args, **kwargs):
    raise AssertionError("the evaluation retrained a cached model")


def test_missing_executor_package_and_slurm_are_clear_errors(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray now fails
    with pytest.raises(UserError, match=r"pip install 'robustbench-lite\[sweep\]'"):
        sweep._backend(Options(executor="ray"), tmp_path, 1)
    pytest.importorskip("submitit")
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(UserError, match="sbatch"):
        sweep._backend(Options(executor="slurm"), tmp_path, 1)
