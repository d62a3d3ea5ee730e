"""`robustbench-lite perf`: speed figures measured in one run, each as a ratio to a named baseline.

Timings are never asserted in tests; this command prints them so they can be compared on the same
machine. Every section ends with `name=value` lines.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch

from .data import load_dataset
from .method import METHODS, Batch, StepContext, as_updates
from .recipes import Recipe
from .train import TrainJob, augment, pick_device


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
            ctx = StepContext(state["step"], 0, 100, 10_000, dataset.num_classes, rng, device)
            model.train()
            batch = method.train_transform(Batch(x, y_all[index]), ctx)
            for losses in as_updates(method.training_step(model, batch, ctx)):
                optimizer.zero_grad(set_to_none=True)
                sum(losses.values()).backward()
                optimizer.step()
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
    out = []
    for name in names or list(SECTIONS):
        out += [f"== {name}", *SECTIONS[name]()]
    return out
