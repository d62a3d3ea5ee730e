"""The golden set of the ci suite, and `robustbench-lite check` against it.

Re-training the suite and comparing its numbers cannot work across machines: float32 rounding
differs between torch releases, CPU instruction sets and thread counts, SGD amplifies it, and a
model's corruption and attack numbers then move as much as between two seeds (up to 46 points per
cell for a converged default-preset ERM model with AVX2 instead of AVX-512 kernels). The numbers of
a *fixed* model are another matter: they were identical across every variant measured. So the
golden set keeps the suite's trained models with the numbers measured on them, and a check tests
three things separately:

1. what is trained: every model the suite asks for must be in the golden set. A model is named by a
   hash of its method settings, recipe, training data and seed, so a missing one means the code now
   trains something else (a deliberate change: `check --update`);
2. what is measured: the suite's protocols run on the golden models (nothing trains) and every number
   must equal the golden one within `suite.tolerance` (one example of its cell; counts exactly);
3. how it trains: one training step of every method, from its golden model, must move the weights as
   the golden step did, within the method's `PROBE_SPREAD`-derived tolerance (`probe.py`).

Layout of `<results>/golden/` (itself a results folder):
    runs/<protocol>/<run_id>.csv|json   the suite's run files, measured on the models below
    leaderboards/                       derived from them
    models/<cache file name>.pt         every model the suite's protocols used
    training.csv                        the training probes
    manifest.json                       how the set was made (versions, machine), file digests

`check --update` re-measures the suite on the golden models whose names still match (training only
the new ones; `--retrain` trains all), writes the new set beside the old one and swaps it in, so an
interruption leaves one complete set, old or new.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from . import environment, leaderboard
from .errors import UserError
from .probe import STEPS, Probe, probe, probes_csv, read_probes
from .results import atomic_write, load_provenance, load_runs
from .suite import CI, Mismatch, Suite, Workers, compare, run_suite
from .train import cached_model_path, load_weights

FOLDER = "golden"
MANIFEST = "manifest.json"
TRAINING = "training.csv"

# Largest relative distance of a method's probe from the golden probe, measured over AVX-512, AVX2
# and SSE kernels (ATEN_CPU_CAPABILITY, ONEDNN_MAX_CPU_ISA, MKL_ENABLE_INSTRUCTIONS), 1 and 2
# threads, and torch 2.14.1 / 2.15.0 (identical to each other). TENET's k-means assigns a few
# channels differently on near ties; AugMix's image operations and CIFS's probes round differently.
PROBE_SPREAD = {"erm": 6.2e-4, "mixup": 1.2e-3, "cutmix": 3.4e-5, "manifold_mixup": 1.3e-5,
                "catchup": 3.2e-5, "augmix": 2.8e-3, "pushpull": 6.0e-6, "tenet": 4.5e-2,
                "cifs": 8.1e-4, "pgd_at": 5.0e-6}


def probe_tolerance(method: str) -> float:
    """Five times the measured spread, at least 1e-3 (a broken method moves its probe by > 0.1)."""
    return max(1e-3, 5 * PROBE_SPREAD.get(method, 2e-4))


def golden_dir(results_dir: Path) -> Path:
    """`<results>/golden`, first completing a swap that `update` left half done."""
    current, new, old = (results_dir / name for name in (FOLDER, f"{FOLDER}.new", f"{FOLDER}.old"))
    if not current.exists():
        if (new / MANIFEST).is_file():
            os.replace(new, current)
        elif old.exists():
            os.replace(old, current)
    return current


@dataclass(frozen=True)
class ProbeDrift:
    job: str
    distance: float | None  # None: the probe is missing on one side
    tolerance: float
    losses: str = ""

    def line(self) -> str:
        if self.distance is None:
            return f"{self.job}: no golden training probe (run `robustbench-lite check --update`)"
        return (f"{self.job}: first training step moved {self.distance:.3g} from the golden one "
                f"(tolerance {self.tolerance:.3g}); losses {self.losses}")


@dataclass
class Report:
    """What `check` found: versions, missing models, drifted numbers and training probes."""

    made: dict
    installed: dict[str, str]
    numbers_compared: int = 0
    numbers: list[Mismatch] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    probes_compared: int = 0
    training: list[ProbeDrift] = field(default_factory=list)
    distances: dict[str, float] = field(default_factory=dict)  # every probe's, by job

    @property
    def ok(self) -> bool:
        return not (self.numbers or self.missing or self.training)

    @property
    def version_changes(self) -> list[str]:
        made = self.made.get("versions", {})
        return [f"{name} {made.get(name, 'none')} -> {version}"
                for name, version in self.installed.items() if made.get(name) != version]

    def lines(self) -> list[str]:
        machine, made = self.made.get("machine", {}), self.made.get("versions", {})
        out = [f"golden set made {self.made.get('made', '?')} on {machine.get('cpu', '?')} "
               f"({machine.get('processes', '?')} x {machine.get('threads', '?')} threads) with "
               + ", ".join(f"{k} {made.get(k, 'none')}" for k in self.installed),
               "installed here: " + ", ".join(f"{k} {v}" for k, v in self.installed.items())]
        if self.version_changes:
            out.append("version mismatch (not drift): " + "; ".join(self.version_changes) + ". "
                       "The tolerances hold across torch releases, CPU kinds and thread counts; "
                       "if numbers drift below, compare on the golden versions before calling it "
                       "a regression")
        out += [f"missing golden model: {m}" for m in self.missing]
        if self.missing:
            out.append(f"{len(self.missing)} models the suite now trains are not in the golden "
                       f"set (method settings, recipe or data changed); if intended, run "
                       f"`robustbench-lite check --update`")
        out += [m.line() for m in self.numbers]
        out.append(f"numbers: {self.numbers_compared} compared, " + (
            f"{len(self.numbers)} drifted (method / protocol / metric / cell / expected / got / "
            f"tolerance)" if self.numbers else "all within tolerance"))
        out += [d.line() for d in self.training]
        closest = max(self.distances, default=None,
                      key=lambda job: self.distances[job] / probe_tolerance(_method(job)))
        margin = (f" (closest to its tolerance: {closest} at {self.distances[closest]:.2g} of "
                  f"{probe_tolerance(_method(closest)):.2g})" if closest else "")
        out.append(f"training: {self.probes_compared} probes compared, " + (
            f"{len(self.training)} drifted" if self.training else "all within tolerance" + margin))
        return out


def check(results_dir: Path, suite: Suite = CI, workers: Workers = Workers(),
          progress: bool = True) -> Report:
    """Measure the suite on the golden models and compare; probe every method's first step."""
    golden = golden_dir(results_dir)
    made = read_manifest(golden)
    report = Report(made, environment.versions())
    with tempfile.TemporaryDirectory() as scratch:
        cache = Path(scratch) / "cache"
        install_models(golden, made, cache)
        summary = run_suite(suite, Path(scratch) / "results", cache, workers, train_missing=False,
                            progress=progress)
        report.missing = sorted({f.error.split(": ", 1)[-1] for f in summary.failed})
        skipped = set(summary.blocked) | {f.job for f in summary.failed}
        expected = suite_rows(load_runs(golden), suite)
        expected = expected[~expected["run_id"].isin(skipped)]
        report.numbers = compare(expected, load_runs(Path(scratch) / "results"))
        report.numbers_compared = len(expected)
        measured = probes(suite, cache)
    expected = read_probes(golden / TRAINING)
    report.training = compare_probes(expected, measured)
    report.distances = {job: found.distance(expected[job]) for job, found in measured.items()
                        if job in expected}
    report.probes_compared = len(measured)
    return report


def update(results_dir: Path, suite: Suite = CI, workers: Workers = Workers(),
           retrain: bool = False, progress: bool = True) -> dict:
    """Make a new golden set (training only models the old one lacks, or all with `retrain`) and
    swap it in; returns its manifest."""
    golden = golden_dir(results_dir)
    staging = results_dir / f"{FOLDER}.new"
    shutil.rmtree(staging, ignore_errors=True)
    with tempfile.TemporaryDirectory() as scratch:
        cache = Path(scratch) / "cache"
        cache.mkdir()
        if not retrain and (golden / MANIFEST).is_file():
            install_models(golden, read_manifest(golden), cache)
        summary = run_suite(suite, staging, cache, workers, train_missing=True, progress=progress)
        if not summary.ok:
            raise UserError("the suite did not complete:\n" + "\n".join(summary.report()))
        used = sorted({name for meta in load_provenance(staging).values()
                       for name in meta.get("models", [])})
        (staging / "models").mkdir()
        for name in used:
            shutil.copyfile(cache / name, staging / "models" / name)
        atomic_write(staging / TRAINING, probes_csv(probes(suite, cache)))
    for scratch_output in ("sweeps", "figures"):  # logs with this machine's paths, pictures
        shutil.rmtree(staging / scratch_output, ignore_errors=True)
    leaderboard.write(staging)
    manifest = {"made": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "suite": _plain(asdict(suite)), "probe_steps": STEPS,
                "versions": environment.versions(),
                "machine": {"cpu": environment.cpu_model(), "processes": workers.processes,
                            "threads": workers.threads},
                "files": {str(p.relative_to(staging)): _digest(p)
                          for p in sorted((staging / "models").glob("*.pt"))}}
    atomic_write(staging / MANIFEST, json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    _swap(staging, golden)
    return manifest


def probes(suite: Suite, cache: Path) -> dict[str, Probe]:
    """Every method's first training step from its model in `cache` (those present), by job."""
    out = {}
    for name, job in suite.training_jobs().items():
        path = cached_model_path(job, cache)
        if path.is_file():
            model = job.build_model()
            load_weights(model, path, "cpu")
            out[name] = probe(job, model)
    return out


def compare_probes(golden: dict[str, Probe], measured: dict[str, Probe]) -> list[ProbeDrift]:
    """Measured probes that moved beyond their method's tolerance or have no golden probe."""
    drifts = []
    for job, found in sorted(measured.items()):
        tolerance = probe_tolerance(_method(job))
        if job not in golden:
            drifts.append(ProbeDrift(job, None, tolerance))
            continue
        distance = found.distance(golden[job])
        if not distance <= tolerance:
            losses = ", ".join(f"{k} {golden[job].losses.get(k, float('nan')):.4f} -> {v:.4f}"
                               for k, v in found.losses.items())
            drifts.append(ProbeDrift(job, distance, tolerance, losses))
    return drifts


def suite_rows(rows, suite: Suite):
    """The rows of `rows` that belong to the suite's grid."""
    grid = suite.grid()
    return rows[rows["method"].isin(grid.methods) & rows["protocol"].isin(grid.protocols)
                & rows["seed"].astype(str).isin([str(s) for s in grid.seeds])
                & (rows["dataset"] == grid.dataset) & (rows["preset"] == grid.preset)]


def read_manifest(golden: Path) -> dict:
    path = golden / MANIFEST
    if not path.is_file():
        raise UserError(f"no golden set under {golden}; create it with "
                        f"`robustbench-lite check --update`")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        raise UserError(f"{path} is damaged; restore it (git checkout) or run "
                        f"`robustbench-lite check --update`") from None


def install_models(golden: Path, made: dict, cache: Path) -> None:
    """Copy the golden models into `cache`, each checked against its digest in the manifest."""
    cache.mkdir(parents=True, exist_ok=True)
    for name, digest in made.get("files", {}).items():
        source = golden / name
        if not source.is_file() or _digest(source) != digest:
            raise UserError(f"golden model {source} is missing or damaged (digest differs from "
                            f"the manifest); restore it (git checkout) or run "
                            f"`robustbench-lite check --update --retrain`")
        shutil.copyfile(source, cache / source.name)


def _swap(new: Path, current: Path) -> None:
    """Put `new` where `current` is; `golden_dir` completes this if it is interrupted."""
    old = current.with_name(f"{FOLDER}.old")
    shutil.rmtree(old, ignore_errors=True)
    if current.exists():
        os.replace(current, old)
    os.replace(new, current)
    shutil.rmtree(old, ignore_errors=True)


def _method(job: str) -> str:
    return job.rsplit("-s", 1)[0]


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _plain(value):
    return json.loads(json.dumps(value, sort_keys=True, default=str))
