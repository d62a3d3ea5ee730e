"""Command line: `robustbench-lite run | list | leaderboard | check | sweep | perf`."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from filelock import FileLock
from tabulate import tabulate

from . import distributed, golden, leaderboard, settings, suite, sweep
from .atomic import check_writable
from .backbones import BACKBONES
from .cache import default_cache_dir
from .datasets import DATASETS
from .errors import UserError
from .method import METHODS
from .protocol import PROTOCOLS
from .recipes import PRESET_DESCRIPTIONS
from .runner import RunRequest, run
from .train import pick_device


def _add_run_options(p: argparse.ArgumentParser, set_help: str) -> None:
    """Options shared by `run` and `sweep`: where the data, results and cache are, and settings."""
    p.add_argument("--dataset", default="digits")
    p.add_argument("--preset", default="default")
    p.add_argument("--backbone", default=None, help="override the recipe's backbone")
    p.add_argument("--data-root", type=Path, default=Path(os.environ.get("RBL_DATA", "data")))
    p.add_argument("--results-dir", type=Path, default=Path("results"))
    p.add_argument("--cache-dir", type=Path, default=None,
                   help="trained-model cache (default $RBL_CACHE or ~/.cache/robustbench-lite)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: automatic)")
    p.add_argument("--set", dest="overrides", action="append", metavar="KEY=VALUE", help=set_help)
    p.add_argument("--no-progress", action="store_true")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="robustbench-lite", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="train a method (or reuse it) and run a protocol")
    p.add_argument("--method", required=True)
    p.add_argument("--protocol", required=True)
    p.add_argument("--seed", type=int, default=0)
    _add_run_options(p, "method setting; prefix protocol. or recipe. for those (repeatable)")

    p = sub.add_parser("list", help="methods, protocols, datasets, backbones and presets")
    p.add_argument("what", nargs="?", choices=["methods", "protocols", "datasets", "backbones",
                                              "presets"])

    p = sub.add_parser("leaderboard", help="regenerate leaderboard CSV and markdown from run files")
    p.add_argument("--results-dir", type=Path, default=Path("results"))
    p.add_argument("--readme", type=Path, default=None,
                   help="README whose tables between the leaderboard markers are regenerated "
                        "(default: the README.md beside the results folder, if it has them)")
    p.add_argument("--check", action="store_true",
                   help="write nothing; exit 1 if a committed leaderboard differs from a regeneration")

    p = sub.add_parser("perf", help="speed figures as ratios to baselines measured in the same run")
    p.add_argument("--sections", default="", help="comma-separated subset (default: all)")

    p = sub.add_parser("sweep", help="run methods x protocols x seeds on a pool, Slurm or Ray")
    p.add_argument("--methods", required=True, help="comma-separated method names")
    p.add_argument("--protocols", required=True, help="comma-separated protocol names")
    p.add_argument("--seeds", default="0", help="comma-separated seeds (default 0)")
    _add_run_options(p, "k (methods having k), protocol.k (protocols having k), recipe.k, or "
                        "<method or protocol name>.k (repeatable)")
    p.add_argument("--executor", choices=sweep.EXECUTORS, default="local")
    p.add_argument("--workers", type=int, default=1, help="concurrent jobs of local executors")
    p.add_argument("--cpus-per-job", type=int, default=None,
                   help="threads (and Slurm/Ray CPUs) per job; default cores / workers locally, "
                        "else 1")
    p.add_argument("--retries", type=int, default=0, help="re-submissions of a failed job")
    p.add_argument("--ray-address", default=None,
                   help="Ray cluster to use (default: start one here)")
    p.add_argument("--slurm-partition", default=None)
    p.add_argument("--gpus-per-node", type=int, default=0, help="GPUs per Slurm job")
    p.add_argument("--timeout-min", type=int, default=24 * 60, help="Slurm time limit per job")

    p = sub.add_parser("check", help="measure the ci suite on the golden models and compare "
                                     "with the golden numbers and training probes")
    p.add_argument("--results-dir", type=Path, default=Path("results"),
                   help="folder holding the golden set (<results-dir>/golden)")
    p.add_argument("--update", action="store_true",
                   help="make a new golden set (trains only models the old one lacks)")
    p.add_argument("--retrain", action="store_true", help="with --update: train every model anew")
    p.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1),
                   help="suite jobs at once (default: min(2, cores))")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads per job (default: cores / workers)")
    p.add_argument("--no-progress", action="store_true")
    return parser


def _run(args: argparse.Namespace) -> None:
    distributed.init_from_env(use_cuda=pick_device(args.device).type == "cuda")  # under torchrun
    req = RunRequest(args.method, args.protocol, args.dataset, args.preset, args.seed,
                     args.data_root, args.results_dir, args.cache_dir or default_cache_dir(),
                     settings.for_run(settings.parse(args.overrides), args.method, args.protocol),
                     args.backbone, args.device,
                     progress=not args.no_progress and distributed.is_main())
    outcome = run(req, lock=_results_lock(args.results_dir))
    if not distributed.is_main():
        return
    headline = sorted(outcome.measurements, key=lambda m: len(m.cell))  # aggregates first
    rows = [[m.metric, " ".join(f"{k}={v}" for k, v in m.cell.items()), f"{m.value:.4f}", m.n]
            for m in headline]
    print(tabulate(rows[:40], ["metric", "cell", "value", "n"], tablefmt="simple"))
    if len(rows) > 40:
        print(f"... {len(rows) - 40} more rows in the results file")
    with _results_lock(args.results_dir):
        written = leaderboard.write(args.results_dir)
    print(f"results: {outcome.csv_path}")
    print(f"leaderboards: {len(written)} files under {args.results_dir / 'leaderboards'}")


def _list(args: argparse.Namespace) -> None:
    sections = {
        "methods": {n: _describe(METHODS, n) for n in METHODS.names()},
        "protocols": {n: _describe(PROTOCOLS, n) for n in PROTOCOLS.names()},
        "datasets": {n: _first_line(DATASETS.get(n)) for n in DATASETS.names()},
        "backbones": {n: _first_line(BACKBONES.get(n)) for n in BACKBONES.names()},
        "presets": PRESET_DESCRIPTIONS,
    }
    for name, entries in sections.items():
        if args.what in (None, name):
            print(f"{name}:")
            for key, text in entries.items():
                print(f"  {key:<16} {text}")


def _describe(registry, name: str) -> str:
    """A built-in's description; a plugin's origin (plugins are imported only when run)."""
    if registry.is_loaded(name):
        return registry.get(name).description()
    return f"plugin from {registry.plugin_origin(name)}"


def _first_line(obj: object) -> str:
    return (obj.__doc__ or "").strip().splitlines()[0]


def _results_lock(results_dir: Path) -> FileLock:
    """Serialises writers of one results folder (run files and derived leaderboards)."""
    check_writable(results_dir, "the results folder", "pass a writable --results-dir")
    return FileLock(str(results_dir / ".lock"))


def _leaderboard(args: argparse.Namespace) -> int:
    golden_set = golden.golden_dir(args.results_dir)
    extra = [golden_set] if (golden_set / "runs").is_dir() else []  # its own leaderboards
    if args.check:
        changed = leaderboard.stale(args.results_dir, _readme(args))
        changed += [path for folder in extra for path in leaderboard.stale(folder)]
        for path in changed:
            print(f"stale: {path}")
        if changed:
            print("leaderboards are stale; run `robustbench-lite leaderboard` and commit the result")
            return 1
        print("leaderboards are up to date")
        return 0
    with _results_lock(args.results_dir):
        written = leaderboard.write(args.results_dir, _readme(args))
        written += [path for folder in extra for path in leaderboard.write(folder)]
    print(f"wrote {len(written)} leaderboard files under {args.results_dir}")
    return 0


def _readme(args: argparse.Namespace) -> Path:
    return args.readme or args.results_dir.resolve().parent / "README.md"


def _check(args: argparse.Namespace) -> int:
    if args.workers < 1 or (args.threads is not None and args.threads < 1):
        raise UserError("--workers and --threads must be >= 1")
    if args.retrain and not args.update:
        raise UserError("--retrain only makes sense with --update")
    threads = args.threads or max(1, (os.cpu_count() or 1) // args.workers)
    workers = suite.Workers(args.workers, threads)
    if args.update:
        made = golden.update(args.results_dir, workers=workers, retrain=args.retrain,
                             progress=not args.no_progress)
        print(f"golden set updated: {len(made['files'])} models, "
              f"{args.results_dir / golden.FOLDER}")
        return 0
    report = golden.check(args.results_dir, workers=workers, progress=not args.no_progress)
    for line in report.lines():
        print(line)
    return 0 if report.ok else 1


def _perf(args: argparse.Namespace) -> None:
    from . import perf

    names = [n for n in args.sections.split(",") if n]
    unknown = set(names) - set(perf.SECTIONS)
    if unknown:
        raise UserError(f"unknown perf sections {sorted(unknown)}; known: {', '.join(perf.SECTIONS)}")
    for line in perf.run_sections(names):
        print(line, flush=True)


def _sweep(args: argparse.Namespace) -> int:
    pick_device(args.device)  # a device that is not here fails now, not in every job
    grid = sweep.Grid(sweep.parse_list(args.methods, "methods"),
                      sweep.parse_list(args.protocols, "protocols"),
                      sweep.parse_list(args.seeds, "seeds", int), args.dataset, args.preset,
                      settings.parse(args.overrides), args.backbone)
    options = sweep.Options(args.executor, args.workers, args.cpus_per_job, args.retries,
                            args.ray_address, args.slurm_partition, args.gpus_per_node,
                            args.timeout_min)
    summary = sweep.run_sweep(grid, options, args.results_dir, args.cache_dir or default_cache_dir(),
                              args.data_root, args.device, progress=not args.no_progress,
                              lock=_results_lock(args.results_dir))
    for line in summary.report():
        print(line)
    print(f"leaderboards: {args.results_dir / 'leaderboards'}")
    return 0 if summary.ok else 1


COMMANDS = {"perf": _perf, "run": _run, "sweep": _sweep, "list": _list,
            "leaderboard": _leaderboard, "check": _check}


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = _parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args) or 0
    except UserError as err:
        print(f"robustbench-lite: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("robustbench-lite: interrupted; re-run the same command to resume", file=sys.stderr)
        return 130
    finally:
        distributed.shutdown()


if __name__ == "__main__":
    sys.exit(main())
