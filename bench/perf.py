"""`robustbench-lite perf`: speed figures measured in one run, each as a ratio to a named baseline.

Timings are never asserted in tests; this command prints them so they can be compared on the same
machine. Every section ends with `name=value` lines.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable

import torch

from .datasets import load_dataset
from .method import METHODS, Batch, StepContext, as_updates
from .recipes import Recipe
from .train import TrainJob, apply_update, augment, pick_device


def _step_timer(name: str, dataset, recipe: Recipe, device: torch.device) -> Callable[[int], None]:
    """A function running `n` training steps of method `name` (optimizer updates included)."""
    method = METHODS.get(name)()
    job = TrainJob(method, name, dataset, recipe, seed=0)
    model = job.build_model().to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=recipe.lr, momentum=0.9, nesterov=True)
    rng, data_rng = torch.Generator().manual_seed(0), torch.Generator().manual_seed(1)
    x_all, y_all = dataset.train.x.to(device), dataset.train.y.to(device)
    state = {"step": 0}

    def run(n: int) -> None:
        for _ in range(n):
            index = torch.randint(len(x_all), (recipe.batch_size,), generator=data_rng).to(device)
            x = augment(x_all[index], recipe, data_rng).float() / 255
            # mid-run (step 10,000 of 20,000): past any warm-up, so a method's steady-state cost
            ctx = StepContext(10_000 + state["step"], 100, 100, 20_000, dataset.num_classes, rng,
                              device)
            model.train()
            batch = method.train_transform(Batch(x, y_all[index]), ctx)
            for losses in as_updates(method.training_step(model, batch, ctx)):
                apply_update(optimizer, losses, name, ctx)
            state["step"] += 1
        if device.type == "cuda":
            torch.cuda.synchronize()

    return run


def method_costs(steps: int = 30, warmup: int = 5, dataset: str = "digits",
                 backbone: str = "tiny", batch_size: int = 64) -> dict[str, float]:
    """Seconds per training step of every built-in method, divided by ERM's (same data and model)."""
    data = load_dataset(dataset, "data")
    recipe = Recipe(backbone=backbone, batch_size=batch_size, crop_padding=2, flip=False)
    device = pick_device()
    seconds = {}
    for name in METHODS.names():
        run = _step_timer(name, data, recipe, device)
        run(warmup)
        start = time.perf_counter()
        run(steps)
        seconds[name] = (time.perf_counter() - start) / steps
    return {name: s / seconds["erm"] for name, s in seconds.items()} | {"erm_seconds": seconds["erm"]}


SECTIONS: dict[str, Callable[[], list[str]]] = {}


def section(name: str):
    def add(fn: Callable[[], list[str]]):
        SECTIONS[name] = fn
        return fn
    return add


@section("methods")
def _methods() -> list[str]:
    costs = method_costs()
    lines = [f"erm: {costs.pop('erm_seconds') * 1000:.1f} ms/step (tiny ResNet, batch 64, digits, "
             f"{pick_device().type})"]
    lines += [f"method_cost_{name}={ratio:.2f}" for name, ratio in sorted(costs.items())]
    return lines


def run_sections(names: list[str] | None = None) -> list[str]:
    """Every section's lines, then all their `name=value` figures again, one per line."""
    out = []
    for name in names or list(SECTIONS):
        out += [f"== {name}", *SECTIONS[name]()]
    figures = [line for line in out if re.fullmatch(r"\w+=\S+", line)]
    return out + ["== figures", *figures]


# ---------------------------------------------------------------- corruption engine


def corruption_errors(model, test, backend: str, severities=(1, 2, 3, 4, 5),
                      corruptions=None, seed: int = 0) -> dict[str, float]:
    """Error of `model` per corruption (mean over `severities`) on `test` corrupted by `backend`
    with the parameter table of the image size and the protocol's per-image seeds."""
    from .corruptions.tables import ALL, image_seed, load_backend, table_for
    from .evaluate import accuracy

    corrupt = load_backend(backend).corrupt_batch
    table = table_for(test.x.shape[-1])
    images = test.x.permute(0, 2, 3, 1).contiguous().numpy()
    errors = {}
    for name in corruptions or ALL:
        accs = []
        for s in severities:
            seeds = [image_seed(seed, name, s, i) for i in range(len(images))]
            corrupted = torch.from_numpy(corrupt(images, name, s, table, seeds)).permute(0, 3, 1, 2)
            accs.append(accuracy(model, corrupted.contiguous(), test.y))
        errors[name] = 1.0 - sum(accs) / len(accs)
    return errors


def fidelity_gaps(model, test, **kwargs) -> dict[str, float]:
    """|error(engine) - error(reference)| per corruption (the same table and seeds)."""
    engine = corruption_errors(model, test, "engine", **kwargs)
    reference = corruption_errors(model, test, "reference", **kwargs)
    return {name: abs(engine[name] - reference[name]) for name in engine}


def _images_per_second(fn, images, min_seconds: float = 0.5) -> float:
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < min_seconds:
        fn(images)
        done += len(images)
    return done / (time.perf_counter() - start)


def engine_throughput(size: int = 32, batch: int = 256, severity: int = 3,
                      device: torch.device | None = None, baseline: bool = True, rounds: int = 3,
                      ) -> dict[str, tuple[float, float | None]]:
    """Images/s per corruption: the engine on batches of `batch` (on `device`), and
    `imagecorruptions` image by image (its own functions and constants, CPU), same images. The two
    are timed in turn, `rounds` times, and each keeps its best rate (as `timeit` keeps the least
    time): a burst of load on a shared machine then slows neither side of a ratio alone."""
    from .corruptions.engine import corrupt
    from .corruptions.tables import ALL, table_for

    device = device or pick_device()
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (batch, 3, size, size), generator=gen, dtype=torch.uint8)
    table, seeds = table_for(size), list(range(batch))
    on_device = images.to(device)
    for name in ALL:  # warm up every code path (caches of filter matrices and tables, allocator)
        corrupt(on_device, name, severity, table, seeds)
    out = {}
    for name in ALL:
        def engine(x, name=name):
            corrupt(x, name, severity, table, seeds)
            if device.type == "cuda":
                torch.cuda.synchronize()
        engine_rates, reference_rates = [], []
        for _ in range(rounds):
            engine_rates.append(_images_per_second(engine, on_device, 0.2))
            if baseline:
                reference_rates.append(_imagecorruptions_rate(name, severity, images, 0.2))
        out[name] = (max(engine_rates), max(reference_rates) if baseline else None)
    return out


def _imagecorruptions_rate(name: str, severity: int, images: torch.Tensor,
                           min_seconds: float = 0.5) -> float:
    from imagecorruptions import corrupt as ic_corrupt

    hwc = images.permute(0, 2, 3, 1).numpy()
    done, start = 0, time.perf_counter()
    while done < 2 or time.perf_counter() - start < min_seconds:  # at least 2: glass blur is slow
        ic_corrupt(hwc[done % len(hwc)], corruption_name=name, severity=severity)
        done += 1
    return done / (time.perf_counter() - start)


def _fidelity_model():
    """ERM on digits with the smoke recipe (from the model cache), and the digits test split."""
    import logging

    from .cache import default_cache_dir
    from .recipes import recipe_for
    from .train import trained_model

    logging.getLogger("robustbench_lite").setLevel(logging.WARNING)
    data = load_dataset("digits", "data")
    job = TrainJob(METHODS.get("erm")(), "erm", data, recipe_for("smoke", "digits"), seed=0)
    return trained_model(job, torch.device("cpu"), default_cache_dir(), progress=False), data.test


@section("engine")
def _engine() -> list[str]:
    rates = engine_throughput()
    lines = [f"{name}: engine {e:,.0f} img/s, imagecorruptions {b:,.1f} img/s, x{e / b:,.1f}"
             for name, (e, b) in rates.items()]
    speedups = [e / b for e, b in rates.values()]
    big = engine_throughput(size=224, batch=32)
    lines += [f"{name} 224x224: engine {e:,.1f} img/s, imagecorruptions {b:,.2f} img/s, "
              f"x{e / b:,.1f}" for name, (e, b) in big.items()]
    big_speedups = [e / b for e, b in big.values()]
    model, test = _fidelity_model()
    gaps = fidelity_gaps(model, test)
    lines += [f"{name}: |error gap| {gap * 100:.2f} points" for name, gap in gaps.items()]
    lines += [f"engine_speedup_geomean={_geomean(speedups):.1f}",
              f"engine_speedup_min={min(speedups):.2f}",
              f"engine224_speedup_geomean={_geomean(big_speedups):.2f}",
              f"engine224_speedup_min={min(big_speedups):.2f}",
              f"engine_fidelity_max_gap={max(gaps.values()) * 100:.2f}"]
    return lines


def _geomean(values: list[float]) -> float:
    import math

    return math.exp(sum(math.log(v) for v in values) / len(values))


# ---------------------------------------------------------------- generation memory


def _generation_peak_rss(folder: str, count: int) -> float:
    """Peak resident memory (GB) of this process generating one corruption at five severities
    for `count` 224-px images streamed from JPEG files (run in a fresh process)."""
    import resource
    from pathlib import Path

    from .corruptions.sets import generated_arrays
    from .corruptions.tables import IMAGENET
    from .datasets import Split
    from .datasets.files import ImageFiles

    paths = sorted(Path(folder, "images").iterdir())[:count]
    split = Split(ImageFiles(paths, 224, lambda image: image, "re-run perf"),
                  torch.zeros(len(paths), dtype=torch.long))
    torch.set_num_threads(1)
    generated_arrays(split, "perf", ("brightness",), IMAGENET, "engine", 0, Path(folder, str(count)))
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def generation_rss(sizes: tuple[int, int] = (1_000, 8_000)) -> tuple[float, float]:
    """Peak resident memory (GB) of generating sets of the two sizes, each in a fresh process,
    from the same 224-px JPEG (hard links: the input is streamed, the file count is real)."""
    import multiprocessing
    import os
    import tempfile
    from concurrent.futures import ProcessPoolExecutor
    from pathlib import Path

    from PIL import Image

    with tempfile.TemporaryDirectory() as folder:
        images = Path(folder, "images")
        images.mkdir()
        gen = torch.Generator().manual_seed(0)
        smooth = torch.nn.functional.interpolate(torch.rand(1, 3, 16, 16, generator=gen), 224,
                                                 mode="bicubic").clamp(0, 1)
        first = images / "000000.JPEG"
        Image.fromarray((smooth[0].permute(1, 2, 0).numpy() * 255).astype("uint8")).save(first)
        for i in range(1, max(sizes)):
            os.link(first, images / f"{i:06d}.JPEG")
        context = multiprocessing.get_context("spawn")
        peaks = []
        for count in sizes:
            with ProcessPoolExecutor(1, mp_context=context) as pool:
                peaks.append(pool.submit(_generation_peak_rss, folder, count).result())
        return peaks[0], peaks[1]


# ---------------------------------------------------------------- trainer overhead


def _trainer_seconds(data, recipe: Recipe, device: torch.device, folder) -> float:
    from .train import Trainer

    job = TrainJob(METHODS.get("erm")(), "erm", data, recipe, seed=0)
    trainer = Trainer(job, job.build_model().to(device), device, progress=False)
    start = time.perf_counter()
    trainer.fit(folder / "partial.pt")
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def _minimal_loop_seconds(data, recipe: Recipe, device: torch.device) -> float:
    """The same model, optimizer and number of steps as the trainer, in a plain PyTorch loop."""
    job = TrainJob(METHODS.get("erm")(), "erm", data, recipe, seed=0)
    model = job.build_model().to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=recipe.lr, momentum=recipe.momentum,
                                nesterov=recipe.nesterov, weight_decay=recipe.weight_decay)
    x_all, y_all = data.train.x.to(device), data.train.y.to(device)
    steps_per_epoch = len(x_all) // recipe.batch_size
    start = time.perf_counter()
    model.train()
    for _ in range(recipe.epochs):
        order = torch.randperm(len(x_all)).to(device)
        for i in range(steps_per_epoch):
            index = order[i * recipe.batch_size:(i + 1) * recipe.batch_size]
            loss = torch.nn.functional.cross_entropy(model(x_all[index].float() / 255), y_all[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def trainer_overhead(epochs: int = 5, repeats: int = 3) -> tuple[float, float]:
    """(trainer seconds, minimal loop seconds), the best of `repeats` interleaved runs: ERM, tiny
    ResNet, digits, batch 64, no augmentation (the minimal loop has none)."""
    import tempfile
    from pathlib import Path

    data = load_dataset("digits", "data")
    recipe = Recipe(backbone="tiny", epochs=epochs, batch_size=64, lr=0.05, crop_padding=0, flip=False)
    device = pick_device()
    trainer, loop = [], []
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as folder:
            trainer.append(_trainer_seconds(data, recipe, device, Path(folder)))
        loop.append(_minimal_loop_seconds(data, recipe, device))
    return min(trainer), min(loop)


@section("trainer")
def _trainer() -> list[str]:
    trainer, loop = trainer_overhead()
    return [f"trainer {trainer:.2f} s, minimal loop {loop:.2f} s (ERM, tiny ResNet, digits, 5 epochs, "
            f"{pick_device().type})", f"trainer_overhead_ratio={trainer / loop:.3f}"]


# ---------------------------------------------------------------- memory


def write_cifar_c_fixture(folder, rows_per_severity: int = 10_000, corruptions=None) -> None:
    """A full-size CIFAR-10-C layout of random pixels (19 x 50,000 x 32 x 32 x 3 uint8, ~2.9 GB)."""
    import numpy as np

    from .corruptions.sets import write_cifar_c
    from .corruptions.tables import ALL

    rng = np.random.default_rng(0)
    labels = (np.arange(rows_per_severity) % 10).astype(np.uint8)
    write_cifar_c(folder, labels, lambda name, severity: rng.integers(
        0, 256, (rows_per_severity, 32, 32, 3), dtype=np.uint8), corruptions or ALL)


def _evaluate_fixture(folder: str, rows_per_severity: int) -> float:
    """Evaluate a tiny model on every (corruption, severity) of a CIFAR-C folder through the
    protocol's loader; returns the peak resident memory of this process in GB."""
    import resource
    from pathlib import Path

    from torch import nn

    from .corruptions.sets import CorruptionArrays
    from .corruptions.tables import ALL, SEVERITIES
    from .datasets import Split
    from .evaluate import predict

    labels = torch.arange(rows_per_severity) % 10
    test = Split(torch.zeros(rows_per_severity, 3, 32, 32, dtype=torch.uint8), labels)
    source = CorruptionArrays(Path(folder), test)
    model = nn.Sequential(nn.AvgPool2d(4), nn.Flatten(), nn.Linear(192, 10))
    for name in ALL:
        for severity in SEVERITIES:
            for images, _ in source.batches(name, severity, 1000):
                predict(model, images, 1000)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GB


def evaluation_peak_rss(rows_per_severity: int = 10_000) -> float:
    """Peak resident memory (GB) of a fresh process evaluating a full-size CIFAR-10-C layout."""
    import multiprocessing
    import tempfile
    from concurrent.futures import ProcessPoolExecutor
    from pathlib import Path

    with tempfile.TemporaryDirectory() as folder:
        write_cifar_c_fixture(Path(folder), rows_per_severity)
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(1, mp_context=context) as pool:
            return pool.submit(_evaluate_fixture, folder, rows_per_severity).result()


@section("memory")
def _memory() -> list[str]:
    peak = evaluation_peak_rss()
    small, large = generation_rss()
    return ["evaluating 19 x 50,000 CIFAR-10-C images (memory-mapped .npy) in a fresh process",
            "generating brightness x 5 severities for 1,000 and for 8,000 streamed 224-px images "
            f"(fresh processes): peak {small:.2f} GB and {large:.2f} GB",
            f"peak_rss_gb={peak:.2f}", f"generation_rss_growth={large / small:.3f}"]


# ---------------------------------------------------------------- command line


def cli_seconds(args: list[str], repeats: int = 3) -> float:
    """Median wall time of `robustbench-lite ARGS` in a fresh interpreter."""
    import statistics
    import subprocess
    import sys

    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "robustbench_lite.bench.cli", *args],
                       capture_output=True, check=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


@section("cli")
def _cli() -> list[str]:
    """`--help` and `list` answer without importing torch; the baseline is a bare interpreter."""
    import subprocess
    import sys

    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "pass"], check=True)
    bare = time.perf_counter() - start
    help_s, list_s = cli_seconds(["--help"]), cli_seconds(["list"])
    return [f"a bare python start: {bare:.2f} s; --help x{help_s / bare:.1f}, "
            f"list x{list_s / bare:.1f} of it", f"cli_help_s={help_s:.2f}", f"cli_list_s={list_s:.2f}"]
