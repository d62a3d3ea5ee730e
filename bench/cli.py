"""Command line of robustbench-lite: train methods and measure them under standard protocols.

Commands import what they use when they run, so `--help` and `list` answer without loading torch.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from .errors import UserError
from .executors import EXECUTORS

LISTS = ("methods", "protocols", "datasets", "backbones", "presets")

EXAMPLES = {
    "run": """examples:
  robustbench-lite run --method catchup --protocol corruption
  robustbench-lite run --method mixup --protocol clean --set alpha=0.4 --set recipe.epochs=30
  robustbench-lite run --method pgd_at --protocol adversarial --set protocol.n_examples=200 --seed 1
  robustbench-lite run --method cifs --protocol adversarial --dataset cifar10 --data-root ~/data \\
      --preset paper""",
    "eval": """examples:
  robustbench-lite eval --model file:erm.pt --backbone tiny --protocol corruption --name my_erm
  robustbench-lite eval --model torchvision:resnet18:IMAGENET1K_V1 --dataset imagenet \\
      --protocol clean --data-root ~/data
  robustbench-lite eval --model timm:resnet50.a1_in1k --dataset mydata --protocol corruption
  robustbench-lite eval --model robustbench:Carmon2019Unlabeled --model-dir ~/models \\
      --protocol adversarial --data-root ~/data
  robustbench-lite eval --model python:mymodels:build --checkpoint my.pt --protocol adversarial \\
      --set model.mean=0.49,0.48,0.45 --set model.std=0.25,0.24,0.26""",
    "list": """examples:
  robustbench-lite list              every method, protocol, dataset, backbone and preset
  robustbench-lite list methods      one section
  robustbench-lite list mixup        one entry with its settings, defaults and comments""",
    "leaderboard": """examples:
  robustbench-lite leaderboard                       regenerate from results/runs
  robustbench-lite leaderboard --check               exit 1 if a committed table is stale""",
    "check": """examples:
  robustbench-lite check                             measure the ci suite on the golden models
  robustbench-lite check --workers 1 --threads 2
  robustbench-lite check --update                    make a new golden set deliberately""",
    "sweep": """examples:
  robustbench-lite sweep --methods erm,mixup --protocols clean,corruption --seeds 0,1,2 \\
      --workers 2
  robustbench-lite sweep --methods erm,catchup --protocols corruption --executor slurm \\
      --slurm-partition gpu --gpus-per-node 1""",
    "perf": """examples:
  robustbench-lite perf                              every section
  robustbench-lite perf --sections engine,cli        some of them""",
}


def _add_run_options(p: argparse.ArgumentParser, set_help: str, given: bool = False) -> None:
    """Options shared by `run`, `sweep` and (`given`) `eval`: where the data, results and cache
    are, and settings."""
    p.add_argument("--dataset", default=None if given else "digits",
                   help="registered dataset (default: digits, embedded" +
                        ("; for robustbench: the zoo entry's" if given else "") +
                        "; see `list datasets`)")
    p.add_argument("--preset", default="default",
                   help="the board an evaluated model joins; its recipe's evaluation batch size "
                        "applies (default: default)" if given else
                        "training recipe: smoke, default, shared, paper (default: default; "
                        "see `list presets`)")
    p.add_argument("--backbone", default=None,
                   help="file: the registered architecture the weights are for" if given else
                        "override the recipe's backbone (see `list backbones`)")
    p.add_argument("--data-root", type=Path, default=Path(os.environ.get("RBL_DATA", "data")),
                   help="folder holding the datasets' files (default: $RBL_DATA or ./data)")
    p.add_argument("--results-dir", type=Path, default=Path("results"),
                   help="where run files, figures and leaderboards go (default: ./results)")
    p.add_argument("--cache-dir", type=Path, default=None,
                   help="trained-model and corruption cache (default: $RBL_CACHE or "
                        "~/.cache/robustbench-lite)")
    p.add_argument("--device", default=None,
                   help="cpu, cuda, cuda:1, mps (default: CUDA when present, else CPU)")
    p.add_argument("--set", dest="overrides", action="append", metavar="KEY=VALUE", help=set_help)
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="robustbench-lite", description=__doc__.splitlines()[0],
        epilog="quickstart: robustbench-lite run --method erm --protocol corruption && "
               "robustbench-lite run --method catchup --protocol corruption")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, text: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=text, description=text, epilog=EXAMPLES[name],
                              formatter_class=argparse.RawDescriptionHelpFormatter)

    p = command("run", "train a method (or reuse its cached model) and measure it under a protocol")
    p.add_argument("--method", required=True, help="registered method (see `list methods`)")
    p.add_argument("--protocol", required=True,
                   help="clean, adversarial, corruption, lowdata (see `list protocols`)")
    p.add_argument("--seed", type=int, default=0,
                   help="drives initialisation, data order, augmentation and the method (default 0)")
    _add_run_options(p, "a setting: k (the method's), protocol.k, recipe.k, or <name>.k; "
                        "repeatable (see `list NAME`)")

    p = command("eval", "measure a model the suite did not train (file, torchvision, timm, "
                        "RobustBench zoo, your function) under a protocol")
    p.add_argument("--model", required=True, metavar="SPEC",
                   help="file:PATH, torchvision:NAME[:WEIGHTS], timm:NAME, robustbench:NAME or "
                        "python:MODULE:FUNCTION")
    p.add_argument("--protocol", required=True, help="clean, adversarial or corruption")
    p.add_argument("--seed", type=int, default=0,
                   help="drives the attacks' random starts and the generated corruptions "
                        "(default 0)")
    p.add_argument("--name", default=None,
                   help="the model's leaderboard name (default: from the spec; never a method's)")
    p.add_argument("--method", default="erm",
                   help="file: the method whose architecture the weights are for (default erm)")
    p.add_argument("--checkpoint", type=Path, default=None,
                   help="timm, python: a state dict (.pt, .pth, .bin or .safetensors) to load")
    p.add_argument("--model-dir", type=Path, default=Path("models"),
                   help="robustbench: where RobustBench keeps its models (default ./models)")
    _add_run_options(p, "protocol.k, model.k (mean, std, resize, crop, interpolation), recipe.k "
                        "or, with file: and --method, the method's k (repeatable)", given=True)

    p = command("list", "methods, protocols, datasets, backbones and presets, with their settings")
    p.add_argument("what", nargs="?", metavar="SECTION|NAME",
                   help=f"one of {', '.join(LISTS)}, or a method, protocol, dataset or backbone")

    p = command("leaderboard", "regenerate leaderboard CSV, markdown and figures from run files")
    p.add_argument("--results-dir", type=Path, default=Path("results"),
                   help="results folder (default: ./results)")
    p.add_argument("--readme", type=Path, default=None,
                   help="README whose tables between the leaderboard markers are regenerated "
                        "(default: the README.md beside the results folder, if it has them)")
    p.add_argument("--check", action="store_true",
                   help="write nothing; exit 1 if a committed leaderboard differs from a regeneration")

    p = command("check", "measure the ci suite on the golden models; compare numbers and training")
    p.add_argument("--results-dir", type=Path, default=Path("results"),
                   help="folder holding the golden set (<results-dir>/golden)")
    p.add_argument("--update", action="store_true",
                   help="make a new golden set (trains only models the old one lacks)")
    p.add_argument("--retrain", action="store_true", help="with --update: train every model anew")
    p.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1),
                   help="suite jobs at once (default: min(2, cores))")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads per job (default: cores / workers)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")

    p = command("sweep", "run methods x protocols x seeds on a process pool, Slurm or Ray")
    p.add_argument("--methods", required=True, help="comma-separated method names")
    p.add_argument("--protocols", required=True, help="comma-separated protocol names")
    p.add_argument("--seeds", default="0", help="comma-separated seeds (default 0)")
    _add_run_options(p, "k (methods having k), protocol.k (protocols having k), recipe.k, or "
                        "<method or protocol name>.k (repeatable)")
    p.add_argument("--executor", choices=EXECUTORS, default="local",
                   help="local pool (default), submitit, submitit-local, slurm or ray")
    p.add_argument("--workers", type=int, default=1, help="concurrent jobs of local executors")
    p.add_argument("--cpus-per-job", type=int, default=None,
                   help="threads (and Slurm/Ray CPUs) per job; default cores / workers locally, "
                        "else 1")
    p.add_argument("--retries", type=int, default=0, help="re-submissions of a failed job")
    p.add_argument("--ray-address", default=None,
                   help="Ray cluster to use (default: start one here)")
    p.add_argument("--slurm-partition", default=None, help="Slurm partition of the jobs")
    p.add_argument("--gpus-per-node", type=int, default=0, help="GPUs per Slurm job")
    p.add_argument("--timeout-min", type=int, default=24 * 60, help="Slurm time limit per job")

    p = command("perf", "speed figures, each a ratio to a baseline measured in the same run")
    p.add_argument("--sections", default="", help="comma-separated subset (default: all)")
    return parser


def _run(args: argparse.Namespace) -> None:
    from . import distributed, settings
    from .cache import default_cache_dir
    from .runner import RunRequest, run
    from .train import pick_device

    distributed.init_from_env(use_cuda=pick_device(args.device).type == "cuda")  # under torchrun
    req = RunRequest(args.method, args.protocol, args.dataset, args.preset, args.seed,
                     args.data_root, args.results_dir, args.cache_dir or default_cache_dir(),
                     settings.for_run(settings.parse(args.overrides), args.method, args.protocol),
                     args.backbone, args.device,
                     progress=not args.no_progress and distributed.is_main())
    outcome = run(req, lock=_results_lock(args.results_dir))
    if distributed.is_main():
        _report(outcome, args.results_dir)


def _report(outcome, results_dir: Path) -> None:
    """Print a run's numbers, then re-derive the leaderboards."""
    from . import leaderboard

    print(leaderboard.measurements_table(outcome.measurements, outcome.hidden))
    with _results_lock(results_dir):
        written = leaderboard.write(results_dir)
    print(f"results: {outcome.csv_path}")
    print(f"leaderboards: {len(written)} files under {results_dir / 'leaderboards'}")


def _eval(args: argparse.Namespace) -> None:
    from . import settings
    from .cache import default_cache_dir
    from .models.evaluation import EvalRequest, evaluate

    scoped = settings.parse(args.overrides)
    unknown = set(scoped) - {"method", args.method, "protocol", args.protocol, "model", "recipe"}
    if unknown:
        raise UserError(f"--set {sorted(unknown)[0]}.…: use protocol.k, model.k, recipe.k or, "
                        f"with file: and --method, the method's k")
    req = EvalRequest(args.model, args.protocol, args.dataset, args.preset, args.seed,
                      args.data_root, args.results_dir, args.cache_dir or default_cache_dir(),
                      {**scoped.get("protocol", {}), **scoped.get(args.protocol, {})},
                      scoped.get("model", {}), scoped.get("recipe", {}),
                      {**scoped.get("method", {}), **scoped.get(args.method, {})}, args.name,
                      args.backbone, args.method, args.checkpoint, args.model_dir, args.device,
                      progress=not args.no_progress)
    _report(evaluate(req, lock=_results_lock(args.results_dir)), args.results_dir)


def _list(args: argparse.Namespace) -> None:
    from . import catalog
    from .recipes import PAPER, PRESET_DESCRIPTIONS, describe

    sections = {name: catalog.entries(name) for name in LISTS if name != "presets"}
    if args.what and args.what not in LISTS:
        found = [e for entries in sections.values() for e in entries if e.name == args.what]
        if not found:
            known = sorted(e.name for entries in sections.values() for e in entries)
            raise UserError(f"nothing is called {args.what!r}; list sections: {', '.join(LISTS)}; "
                            f"names: {', '.join(known)}")
        for entry in found:
            _print_entry(entry, detailed=True)
        return
    for name in LISTS:
        if args.what not in (None, name):
            continue
        print(f"{name}:")
        if name == "presets":
            for key, text in PRESET_DESCRIPTIONS.items():
                print(f"  {key:<16} {text}")
            for method, entry in PAPER.items():
                print(f"    paper {method:<16} {describe(entry.recipe)}")
            continue
        for entry in sections[name]:
            _print_entry(entry, detailed=False)


def _print_entry(entry, detailed: bool) -> None:
    import textwrap

    origin = "" if entry.source == "builtin" else f"  [plugin {entry.source}]"
    print(f"  {entry.name:<16} {entry.description}{origin}")
    if not entry.settings:
        return
    if not detailed:
        names = ", ".join(s.name for s in entry.settings)
        print(textwrap.fill(f"settings: {names}", 100, initial_indent=" " * 19,
                            subsequent_indent=" " * 29))
        return
    print("    settings (--set k=v for a method, --set protocol.k=v for a protocol):")
    for setting in entry.settings:
        print(f"      {setting.line()}")


def _results_lock(results_dir: Path):
    """Serialises writers of one results folder (run files and derived leaderboards)."""
    from filelock import FileLock

    from .atomic import check_writable

    check_writable(results_dir, "the results folder", "pass a writable --results-dir")
    return FileLock(str(results_dir / ".lock"))


def _leaderboard(args: argparse.Namespace) -> int:
    from . import golden, leaderboard

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
    from . import golden, suite

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
    from . import settings, sweep
    from .cache import default_cache_dir
    from .train import pick_device

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


COMMANDS = {"perf": _perf, "run": _run, "eval": _eval, "sweep": _sweep, "list": _list,
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
        if "robustbench_lite.bench.distributed" in sys.modules:
            sys.modules["robustbench_lite.bench.distributed"].shutdown()


if __name__ == "__main__":
    sys.exit(main())
