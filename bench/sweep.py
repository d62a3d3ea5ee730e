"""Sweeps: a grid of runs (methods x protocols x seeds) on a process pool, Slurm or Ray.

    robustbench-lite sweep --methods erm,mixup --protocols clean,adversarial --seeds 0,1,2 \\
        --executor local|submitit|submitit-local|slurm|ray

The grid becomes two kinds of jobs:
- one training job per (method, seed): trains the method's default model (what `RunContext.train()`
  returns, reused by the clean, adversarial and corruption protocols) into the shared model cache;
- one evaluation job per (method, protocol, seed), started once its training job has succeeded: it
  runs the protocol, finding the model in the cache (models a protocol trains for itself, such as
  low-data subsets, are trained here), and writes its run file.

A cell whose run file exists is skipped, and so is a training job whose model is cached or whose
evaluations are all done, so re-running a sweep does only what is missing. Every job logs to
`<results>/sweeps/<sweep id>/logs/<job>.log` (with the traceback when it fails); a failed job is
re-submitted up to `retries` times, then reported, and the evaluations waiting on a failed training
job are reported as blocked. Leaderboards are regenerated once, at the end.

Executors: `local` is a pool of `workers` processes (spawned); `submitit` runs each job through
submitit's AutoExecutor (Slurm when the machine has it, else local subprocesses), `submitit-local`
forces the local one and `slurm` forces Slurm (`--slurm-partition`, `--gpus-per-node`,
`--timeout-min`; jobs and logs under `<results>/sweeps/<id>/submitit/`); `ray` runs each job as a
Ray task on the cluster at `--ray-address` or on a local instance of `workers` x `cpus_per_job`
CPUs, with one GPU per task when the cluster has GPUs. Slurm and Ray nodes need this package
installed and the results and cache folders shared. The process driving the sweep stays up until
the last job ends (it submits evaluation jobs as training jobs finish).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import importlib
import logging
import multiprocessing
import os
import shutil
import socket
import time
import traceback
from collections import deque
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from . import leaderboard, settings
from .atomic import ensure_folder
from .executors import EXECUTORS, INSTALL_HINT
from .config import stable_hash
from .datasets import load_dataset
from .errors import UserError
from .method import METHODS
from .protocol import PROTOCOLS
from .runner import ResolvedRun, RunRequest, resolve, run, run_context
from .train import TrainJob, cached_model_path

log = logging.getLogger(__name__)



@dataclass(frozen=True)
class Grid:
    """What to run: every method x protocol x seed on one dataset and preset.

    `overrides` are `--set` settings by scope (`settings.parse`): `recipe.k` applies to every run;
    `protocol.k` to the swept protocols that have setting k, and `k` to the swept methods that have
    it; `<name>.k` (e.g. `mixup.alpha`, `adversarial.n_examples`) to that method or protocol."""

    methods: tuple[str, ...]
    protocols: tuple[str, ...]
    seeds: tuple[int, ...] = (0,)
    dataset: str = "digits"
    preset: str = "default"
    overrides: settings.Scoped = field(default_factory=dict)
    backbone: str | None = None

    @property
    def sweep_id(self) -> str:
        return "sweep-" + stable_hash(dataclasses.asdict(self), length=8)


@dataclass(frozen=True)
class Options:
    """How to run it."""

    executor: str = "local"
    workers: int = 1  # concurrent jobs of the local executors (and CPUs of a local Ray instance)
    cpus_per_job: int | None = None  # torch threads per job; default: local cores / workers, else 1
    retries: int = 0  # re-submissions of a failed job
    ray_address: str | None = None  # an existing Ray cluster; None starts a local instance
    slurm_partition: str | None = None
    gpus_per_node: int = 0  # GPUs per Slurm job
    timeout_min: int = 24 * 60  # Slurm time limit per job
    train_missing: bool = True  # False: only measure models already in the cache (golden check)


@dataclass(frozen=True)
class Job:
    """One unit of work: `kind` is "train" or "evaluate"; picklable, sent to the executor."""

    name: str
    kind: str
    request: RunRequest
    resolved: ResolvedRun  # the request made concrete, once, when the sweep was planned
    log: Path
    cpus: int


@dataclass
class Group:
    """A training job (None when its model is already cached) and the evaluations waiting on it."""

    train: Job | None
    evaluations: list[Job]


@dataclass
class Plan:
    sweep_id: str
    folder: Path
    groups: list[Group]
    done: list[str]  # run ids whose run files already exist

    @property
    def jobs(self) -> list[Job]:
        return [job for g in self.groups for job in ([g.train] if g.train else []) + g.evaluations]


@dataclass(frozen=True)
class Failure:
    job: str
    error: str
    logs: tuple[Path, ...]  # the job's log, then the executor's own (submitit stderr) if any


@dataclass
class Summary:
    sweep_id: str
    skipped: list[str]  # cells whose run file existed
    submitted: list[str]  # every job sent to the executor (once, however many attempts)
    attempts: int = 0
    succeeded: list[str] = field(default_factory=list)
    failed: list[Failure] = field(default_factory=list)
    blocked: list[str] = field(default_factory=list)  # evaluations whose training job failed

    @property
    def ok(self) -> bool:
        return not self.failed and not self.blocked

    def report(self, tail: int = 15) -> list[str]:
        """Human-readable lines: counts, then every failure with the end of its log."""
        lines = [f"{self.sweep_id}: {len(self.skipped)} cells already done, {len(self.submitted)} "
                 f"jobs run ({self.attempts} attempts): {len(self.succeeded)} succeeded, "
                 f"{len(self.failed)} failed, {len(self.blocked)} blocked"]
        for failure in self.failed:
            lines.append(f"failed: {failure.job}: {failure.error}")
            for path in failure.logs:
                lines.append(f"  log: {path}")
            lines += [f"  | {line}" for line in _tail(failure.logs[0], tail)]
        lines += [f"blocked (its training job failed): {name}" for name in self.blocked]
        return lines


def parse_list(text: str, what: str, kind: type = str) -> tuple:
    """'a,b' -> ('a', 'b'), converted to `kind`; an empty or malformed list, or one naming a value
    twice, is a UserError."""
    items = [s.strip() for s in text.split(",") if s.strip()]
    try:
        values = tuple(kind(s) for s in items)
    except ValueError:
        raise UserError(f"--{what} {text!r}: expected comma-separated {kind.__name__} "
                        f"values") from None
    if not values:
        raise UserError(f"--{what} is empty; give at least one, e.g. --{what} "
                        f"{'0,1,2' if kind is int else 'erm'}")
    twice = sorted({v for v in values if values.count(v) > 1})
    if twice:
        raise UserError(f"--{what} {text!r} names {twice[0]} twice; list each once")
    return values


# ---------------------------------------------------------------------------------------- jobs

def train_job(req: RunRequest, resolved: ResolvedRun) -> str:
    """Train the request's default model into the cache; returns the checkpoint path."""
    ctx = run_context(req, resolved)
    ctx.train()
    return str(Path(req.cache_dir) / ctx.provenance["models"][0])


def evaluate_job(req: RunRequest, resolved: ResolvedRun) -> str:
    """Run the request's protocol (the model comes from the cache); returns its run file."""
    return str(run(req, resolved=resolved).csv_path)


JOB_KINDS = {"train": train_job, "evaluate": evaluate_job}


def execute(job: Job) -> str:
    """Run one job in this process, logging to its log file (the traceback when it fails)."""
    torch.set_num_threads(job.cpus)
    ensure_folder(job.log.parent, "the sweep's log folder", "pass a writable --results-dir")
    handler = logging.FileHandler(job.log, mode="w", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    ours = logging.getLogger("robustbench_lite")
    level = ours.level
    logging.getLogger().addHandler(handler)
    ours.setLevel(logging.INFO)
    log.info("job %s on %s, pid %d, %d threads", job.name, socket.gethostname(), os.getpid(),
             job.cpus)
    try:
        return JOB_KINDS[job.kind](job.request, job.resolved)
    except BaseException:
        log.error("job %s failed:\n%s", job.name, traceback.format_exc())
        raise
    finally:
        logging.getLogger().removeHandler(handler)
        ours.setLevel(level)
        handler.close()


# -------------------------------------------------------------------------------------- planning

def requests(grid: Grid, results_dir: Path, cache_dir: Path, data_root: Path = Path("data"),
             device: str | None = None, train_missing: bool = True) -> list[RunRequest]:
    """One request per (method, protocol, seed), each with the settings that apply to it."""
    method_configs = {m: METHODS.get(m).Config for m in grid.methods}
    protocol_configs = {p: PROTOCOLS.get(p).Config for p in grid.protocols}
    settings.check_fits(grid.overrides, method_configs.values(), protocol_configs.values())
    return [RunRequest(m, p, grid.dataset, grid.preset, seed, Path(data_root), Path(results_dir),
                       Path(cache_dir),
                       settings.for_cell(grid.overrides, m, method_configs[m], p,
                                         protocol_configs[p], grid.methods, grid.protocols),
                       grid.backbone, device, progress=False, train_missing=train_missing)
            for m in grid.methods for seed in grid.seeds for p in grid.protocols]


def plan(grid: Grid, results_dir: Path, cache_dir: Path, data_root: Path = Path("data"),
         device: str | None = None, cpus: int = 1, train_missing: bool = True) -> Plan:
    """The jobs still to run: evaluations whose run file is missing, grouped under the training
    job of their (method, seed) unless that model is cached. Bad settings fail here, before any
    job is submitted."""
    folder = Path(results_dir) / "sweeps" / grid.sweep_id
    groups: dict[tuple[str, int], Group] = {}
    done: list[str] = []
    dataset = None
    # A protocol that trains only models of its own (declares `trains_own_models = True`, e.g.
    # low-data subsets) needs no pre-trained default model.
    uses_default_model = not all(PROTOCOLS.get(p).trains_own_models for p in grid.protocols)
    for req in requests(grid, results_dir, cache_dir, data_root, device, train_missing):
        resolved = resolve(req)
        info = resolved.info
        if info.csv_path(Path(results_dir)).exists():
            done.append(info.run_id)
            continue
        key = (req.method, req.seed)
        if key not in groups:
            if dataset is None:
                dataset = load_dataset(grid.dataset, Path(data_root), req.cache_dir)
            default_model = cached_model_path(
                TrainJob(resolved.method, req.method, dataset, resolved.recipe, req.seed),
                Path(req.cache_dir))
            needs_training = uses_default_model and not default_model.exists()
            name = f"train-{req.method}-{req.dataset}-s{req.seed}"
            train = Job(name, "train", req, resolved, folder / "logs" / f"{name}.log", cpus)
            groups[key] = Group(train if needs_training else None, [])
        groups[key].evaluations.append(Job(info.run_id, "evaluate", req, resolved,
                                           folder / "logs" / f"{info.run_id}.log", cpus))
    return Plan(grid.sweep_id, folder, list(groups.values()), done)


# ------------------------------------------------------------------------------------ executors

class Backend:
    """Submits jobs and reports which have ended; `max_in_flight` caps concurrent submissions."""

    max_in_flight: float = float("inf")

    def submit(self, job: Job) -> Any:
        raise NotImplementedError

    def wait(self, handles: list) -> list:
        """The handles that have ended (at least one; blocks until then)."""
        raise NotImplementedError

    def result(self, handle: Any) -> str:
        """The job's return value; raises the job's error."""
        raise NotImplementedError

    def extra_logs(self, handle: Any) -> tuple[Path, ...]:
        return ()

    def close(self) -> None:
        pass


class PoolBackend(Backend):
    """A local pool of spawned worker processes."""

    def __init__(self, workers: int) -> None:
        self.workers = self.max_in_flight = workers
        self.pool = self._new_pool()

    def _new_pool(self) -> concurrent.futures.ProcessPoolExecutor:
        return concurrent.futures.ProcessPoolExecutor(
            self.workers, mp_context=multiprocessing.get_context("spawn"))

    def submit(self, job: Job) -> Any:
        try:
            return self.pool.submit(execute, job)
        except concurrent.futures.BrokenExecutor:  # a worker died (killed, out of memory)
            self.pool.shutdown(wait=False, cancel_futures=True)
            self.pool = self._new_pool()
            return self.pool.submit(execute, job)

    def wait(self, handles: list) -> list:
        return list(concurrent.futures.wait(handles,
                                            return_when=concurrent.futures.FIRST_COMPLETED).done)

    def result(self, handle: Any) -> str:
        return handle.result()

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


class SubmititBackend(Backend):
    """submitit's AutoExecutor: Slurm jobs, or local subprocesses (`cluster="local"`)."""

    def __init__(self, folder: Path, cluster: str | None, options: Options, cpus: int) -> None:
        submitit = _require("submitit")
        if cluster == "slurm" and shutil.which("sbatch") is None:
            raise UserError("--executor slurm needs Slurm's sbatch on PATH (run the sweep on a "
                            "login node), or use --executor submitit-local to run jobs here")
        self.executor = submitit.AutoExecutor(folder=folder / "submitit" / "%j", cluster=cluster)
        self.executor.update_parameters(timeout_min=options.timeout_min, cpus_per_task=cpus,
                                        gpus_per_node=options.gpus_per_node)
        if options.slurm_partition:
            self.executor.update_parameters(slurm_partition=options.slurm_partition)
        if self.executor.cluster in ("local", "debug"):
            self.max_in_flight = options.workers

    def submit(self, job: Job) -> Any:
        self.executor.update_parameters(name=job.name)
        return self.executor.submit(execute, job)

    def wait(self, handles: list) -> list:
        while True:
            ended = [h for h in handles if h.done()]
            if ended:
                return ended
            time.sleep(0.5)

    def result(self, handle: Any) -> str:
        return handle.result()

    def extra_logs(self, handle: Any) -> tuple[Path, ...]:
        return (Path(handle.paths.stderr),)


class RayBackend(Backend):
    """Ray tasks, one per job, on the cluster at `address` or on a local instance."""

    def __init__(self, address: str | None, workers: int, cpus: int) -> None:
        self.ray = _require("ray")
        self.started = not self.ray.is_initialized()
        try:
            if self.started and address:
                self.ray.init(address=address, log_to_driver=False)
            elif self.started:
                self.ray.init(num_cpus=workers * cpus, include_dashboard=False, log_to_driver=False)
        except Exception as err:  # Ray raises plain exceptions when it cannot start or connect
            where = f"the Ray cluster at {address}" if address else "a local Ray instance"
            raise UserError(f"could not start or reach {where} ({str(err).splitlines()[0]}); "
                            f"check --ray-address, or Ray's logs in /tmp/ray/session_latest/logs"
                            ) from None
        gpus = 1 if self.ray.cluster_resources().get("GPU", 0) >= 1 else 0
        self.task = self.ray.remote(num_cpus=cpus, num_gpus=gpus, max_retries=0)(execute)

    def submit(self, job: Job) -> Any:
        return self.task.remote(job)

    def wait(self, handles: list) -> list:
        ready, _ = self.ray.wait(handles, num_returns=1)
        return ready

    def result(self, handle: Any) -> str:
        return self.ray.get(handle)

    def close(self) -> None:
        if self.started:
            self.ray.shutdown()


def _require(module: str):
    try:
        return importlib.import_module(module)
    except ImportError:
        raise UserError(f"this executor needs the {module} package; {INSTALL_HINT}") from None


def _backend(options: Options, folder: Path, cpus: int) -> Backend:
    if options.executor == "local":
        return PoolBackend(options.workers)
    if options.executor == "ray":
        return RayBackend(options.ray_address, options.workers, cpus)
    cluster = {"submitit": None, "submitit-local": "local", "slurm": "slurm"}[options.executor]
    return SubmititBackend(folder, cluster, options, cpus)


def default_cpus(options: Options) -> int:
    if options.cpus_per_job:
        return options.cpus_per_job
    if options.executor in ("local", "submitit-local", "submitit"):
        return max(1, (os.cpu_count() or 1) // options.workers)
    return 1


# ------------------------------------------------------------------------------------- running

def run_sweep(grid: Grid, options: Options, results_dir: Path, cache_dir: Path,
              data_root: Path = Path("data"), device: str | None = None, progress: bool = True,
              lock: AbstractContextManager | None = None) -> Summary:
    """Plan the grid, run what is missing on the chosen executor, regenerate the leaderboards."""
    if options.executor not in EXECUTORS:
        raise UserError(f"unknown executor {options.executor!r}; "
                        f"choose one of {', '.join(EXECUTORS)}")
    if options.workers < 1 or options.retries < 0:
        raise UserError("--workers must be >= 1 and --retries >= 0")
    cpus = default_cpus(options)
    todo = plan(grid, Path(results_dir), Path(cache_dir), Path(data_root), device, cpus,
                options.train_missing)
    summary = Summary(todo.sweep_id, todo.done, [job.name for job in todo.jobs])
    if todo.groups:
        backend = _backend(options, todo.folder, cpus)
        try:
            _schedule(todo, backend, options.retries, summary, progress)
        finally:
            backend.close()
    with lock or nullcontext():
        leaderboard.write(Path(results_dir))
    return summary


def _schedule(todo: Plan, backend: Backend, retries: int, summary: Summary, progress: bool) -> None:
    """Submit ready jobs (training jobs, and evaluations whose model is ready), retry failures."""
    ready: deque[Job] = deque()
    for group in todo.groups:
        ready.extend([group.train] if group.train else group.evaluations)
    waiting = {g.train.name: g.evaluations for g in todo.groups if g.train}
    tries: dict[str, int] = {}
    running: dict[Any, Job] = {}
    bar = tqdm(total=len(todo.jobs), desc=todo.sweep_id, unit="job", disable=not progress)
    while ready or running:
        while ready and len(running) < backend.max_in_flight:
            job = ready.popleft()
            tries[job.name] = tries.get(job.name, 0) + 1
            summary.attempts += 1
            running[backend.submit(job)] = job
        for handle in backend.wait(list(running)):
            job = running.pop(handle)
            try:
                backend.result(handle)
            except Exception as err:  # the job's own error, or the executor's (worker died)
                if tries[job.name] <= retries:
                    log.warning("job %s failed (attempt %d); retrying", job.name, tries[job.name])
                    ready.append(job)
                    continue
                blocked = waiting.pop(job.name, [])
                summary.failed.append(Failure(job.name, _error_line(job.log, err),
                                              (job.log, *backend.extra_logs(handle))))
                summary.blocked += [e.name for e in blocked]
                bar.update(1 + len(blocked))
                continue
            summary.succeeded.append(job.name)
            ready.extend(waiting.pop(job.name, []))
            bar.update(1)
    bar.close()


def _error_line(log_path: Path, err: BaseException) -> str:
    """The last line of the traceback in the job's log, else the executor's error."""
    lines = _tail(log_path, 1)
    if lines and "Error" in lines[0]:
        return lines[0].strip()
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[-1] if text else ''}"


def _tail(path: Path, count: int) -> list[str]:
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return []
    return [line for line in lines if line.strip()][-count:]
