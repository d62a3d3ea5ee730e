"""The command line end to end: results, errors without tracebacks, determinism, resume, plugins."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest

pytestmark = pytest.mark.slow  # every test here runs the command line in a subprocess

SMOKE = ["--preset", "smoke", "--no-progress"]


def cli(*args: str, env: dict | None = None, cwd: Path | None = None, check: bool = True
        ) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "robustbench_lite.bench.cli", *args],
                          capture_output=True, text=True, env={**os.environ, **(env or {})}, cwd=cwd)
    if check and proc.returncode != 0:
        raise AssertionError(proc.stderr)
    return proc


def folders(tmp: Path, name: str) -> list[str]:
    return ["--results-dir", str(tmp / name / "results"), "--cache-dir", str(tmp / name / "cache")]


def value(results: Path, metric: str = "accuracy") -> float:
    rows = pd.concat(pd.read_csv(f) for f in sorted(results.glob("runs/*/*.csv")))
    return rows[rows.metric == metric]["value"].tolist()


def test_run_writes_results_and_leaderboard(tmp_path):
    out = cli("run", "--method", "erm", "--protocol", "clean", *SMOKE, *folders(tmp_path, "a"))
    results = tmp_path / "a" / "results"
    (csv,) = results.glob("runs/clean/*.csv")
    rows = pd.read_csv(csv)
    assert set(rows.metric) == {"accuracy", "parameters", "macs", "images_per_second"}
    assert 0.5 < rows.set_index("metric").value["accuracy"] <= 1.0
    assert rows.seed.iloc[0] == 0 and "torch=" in rows.versions.iloc[0]
    assert csv.with_suffix(".json").exists()
    board = (results / "leaderboards" / "clean-digits-smoke.md").read_text()
    assert "| erm" in board and "results:" in out.stdout


def test_same_seed_is_bit_identical_and_other_seed_differs(tmp_path):
    for name, seed in (("a", "0"), ("b", "0"), ("c", "1")):
        cli("run", "--method", "erm", "--protocol", "clean", "--seed", seed, *SMOKE,
            "--set", "recipe.train_limit=256", *folders(tmp_path, name))
    a, b, c = (value(tmp_path / n / "results") for n in "abc")
    assert a == b
    assert a != c


@pytest.mark.parametrize("args, fragment", [
    (["--method", "nonexistent", "--protocol", "clean"], "unknown method 'nonexistent'; known methods: "),
    (["--method", "erm", "--protocol", "nope"], "unknown protocol 'nope'"),
    (["--method", "erm", "--protocol", "clean", "--dataset", "mnist"], "unknown dataset 'mnist'"),
    (["--method", "erm", "--protocol", "clean", "--backbone", "vgg"], "unknown backbone 'vgg'"),
    (["--method", "erm", "--protocol", "clean", "--preset", "huge"], "unknown preset 'huge'"),
    (["--method", "erm", "--protocol", "clean", "--set", "alpha=1"], "has no setting 'alpha'"),
    (["--method", "erm", "--protocol", "clean", "--set", "recipe.epochs=x"], "expected an integer"),
    (["--method", "erm", "--protocol", "clean", "--dataset", "cifar10", "--data-root", "/nonexistent/x"],
     "cifar-10-batches-py was not found under /nonexistent/x"),
])
def test_user_mistakes_are_one_line_errors(tmp_path, args, fragment):
    proc = cli("run", *SMOKE, *args, *folders(tmp_path, "x"), check=False)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr


def test_unwritable_results_folder_is_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    proc = cli("run", "--method", "erm", "--protocol", "clean", *SMOKE, "--results-dir",
               str(blocker / "results"), "--cache-dir", str(tmp_path / "cache"), check=False)
    assert proc.returncode == 2 and "pass a writable --results-dir" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_damaged_cached_checkpoint_is_a_clear_error(tmp_path):
    args = ["run", "--method", "erm", "--protocol", "clean", *SMOKE, *folders(tmp_path, "a")]
    cli(*args)
    (checkpoint,) = (tmp_path / "a" / "cache").glob("*.pt")
    checkpoint.write_bytes(checkpoint.read_bytes()[:500])
    proc = cli(*args, check=False)
    assert proc.returncode == 2 and "truncated" in proc.stderr and "Traceback" not in proc.stderr


def test_sigkilled_training_resumes_to_the_same_numbers(tmp_path):
    args = ["run", "--method", "erm", "--protocol", "clean", *SMOKE, "--set", "recipe.epochs=4",
            "--set", "recipe.train_limit=0"]
    cli(*args, *folders(tmp_path, "straight"))
    killed = folders(tmp_path, "killed")
    proc = subprocess.Popen([sys.executable, "-m", "robustbench_lite.bench.cli", *args, *killed],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    cache = tmp_path / "killed" / "cache"
    deadline = time.time() + 120
    while not list(cache.glob("*.partial.pt")) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert proc.poll() is None, "training finished before it could be interrupted"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not list((tmp_path / "killed" / "results").glob("runs/*/*.csv"))
    cli(*args, *killed)
    assert value(tmp_path / "killed" / "results") == value(tmp_path / "straight" / "results")


def test_concurrent_runs_both_land(tmp_path):
    shared = ["--results-dir", str(tmp_path / "results")]
    procs = [subprocess.Popen([sys.executable, "-m", "robustbench_lite.bench.cli", "run", "--method",
                               "erm", "--protocol", "clean", *SMOKE, "--seed", seed, *shared,
                               "--cache-dir", str(tmp_path / f"cache{seed}")],
                              stderr=subprocess.PIPE, text=True) for seed in ("0", "1")]
    for proc in procs:
        assert proc.wait() == 0, proc.stderr.read()
    runs = sorted((tmp_path / "results").glob("runs/clean/*.csv"))
    assert len(runs) == 2 and all(len(pd.read_csv(r)) == 4 for r in runs)
    board = pd.read_csv(tmp_path / "results" / "leaderboards" / "clean-digits-smoke.csv")
    assert board.seeds.tolist() == [2]


PLUGIN = """
import torch.nn.functional as F
from robustbench_lite.bench.method import Method


class LabelSmoothing(Method):
    \"\"\"Cross-entropy with label smoothing (a third-party method).\"\"\"

    def training_step(self, model, batch, ctx):
        return {"ce": F.cross_entropy(model(batch.x), batch.y, label_smoothing=0.1)}
"""

PYPROJECT = """
[build-system]
requires = ["setuptools"]
build-backend = "setuptools.build_meta"

[project]
name = "rbl-plugin-demo"
version = "0.1.0"

[tool.setuptools]
py-modules = ["rbl_plugin_demo", "rbl_broken_plugin"]

[project.entry-points."robustbench_lite.methods"]
label_smoothing = "rbl_plugin_demo:LabelSmoothing"
broken = "rbl_broken_plugin:Broken"
"""


def test_third_party_method_installed_through_the_entry_point(tmp_path):
    src = tmp_path / "plugin"
    src.mkdir()
    (src / "pyproject.toml").write_text(textwrap.dedent(PYPROJECT))
    (src / "rbl_plugin_demo.py").write_text(textwrap.dedent(PLUGIN))
    (src / "rbl_broken_plugin.py").write_text("raise ImportError('this plugin is broken')\n")
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index",
                    "--no-build-isolation", "--target", str(site), str(src)], check=True)
    env = {"PYTHONPATH": str(site)}
    listing = cli("list", "methods", env=env).stdout
    assert re.search(r"label_smoothing .*\[plugin rbl-plugin-demo==0\.1\.0", listing)
    assert "broken" in listing  # listed by name, never imported
    cli("run", "--method", "label_smoothing", "--protocol", "clean", *SMOKE,
        *folders(tmp_path, "p"), env=env)
    rows = pd.read_csv(next((tmp_path / "p" / "results").glob("runs/clean/*.csv")))
    assert set(rows.method) == {"label_smoothing"}
    assert rows.set_index("metric").value["accuracy"] > 0.3
    sidecar = next((tmp_path / "p" / "results").glob("runs/clean/*.json")).read_text()
    assert "rbl-plugin-demo==0.1.0" in sidecar
