"""Training probes: a method's first training step, as numbers that can be compared across machines.

Whole trainings cannot be compared number by number between machines: float32 rounding differs
between CPU instruction sets, thread counts and torch builds, SGD amplifies the difference (1e-7
becomes 1e-3 of the loss within about five steps), and two runs end as far apart as two seeds.
One step is not chaotic yet: from the same weights, its parameter update differs between
machines by 1e-6 to 5e-2 (relative), while a method whose code changed moves it by far more
(mixup that does not mix: 0.6). A probe records, for the first step of a job, the named losses and a sketch of the
parameter update: its projection on `SKETCH` seeded random sign vectors, scaled by 1/sqrt(SKETCH),
which keeps distances to about +-10 % (Johnson-Lindenstrauss), so two updates can be compared
through 256 numbers instead of the whole model.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .train import Trainer, TrainJob

SKETCH = 256
STEPS = 1
_SIGN_SEED = 20240101


@dataclass(frozen=True)
class Probe:
    """The losses of a job's first step(s) and a sketch of the parameter update they made."""

    losses: dict[str, float]
    sketch: np.ndarray  # (SKETCH,) float64

    def distance(self, other: Probe) -> float:
        """Relative distance ||u - u0|| / ||u0|| of this update u from `other`'s u0, estimated."""
        return float(np.linalg.norm(self.sketch - other.sketch) / np.linalg.norm(other.sketch))


def probe(job: TrainJob, model: nn.Module, steps: int = STEPS) -> Probe:
    """Train `model` (the job's model, e.g. its golden weights) for the first `steps` steps of the
    job's training on CPU, writing nothing; the losses and the sketch of the update."""
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    history = Trainer(job, model, torch.device("cpu"), progress=False).first_steps(steps)
    losses = {f"step{i}.{name}": float(value) for i, step in enumerate(history)
              for name, value in step.items()}
    sketch = np.zeros(SKETCH)
    for name, p in model.named_parameters():
        update = (p.detach().double() - before[name].double()).flatten().numpy()
        sketch += _signs(name, update.size) @ update
    return Probe(losses, sketch / np.sqrt(SKETCH))


def _signs(name: str, size: int) -> np.ndarray:
    """(SKETCH, size) random +-1, fixed by the parameter's name (platform-independent PCG64)."""
    rng = np.random.default_rng([_SIGN_SEED, zlib.crc32(name.encode())])
    return rng.integers(0, 2, size=(SKETCH, size), dtype=np.int8).astype(np.float64) * 2 - 1


def probes_csv(probes: dict[str, Probe]) -> str:
    """CSV text of probes by job name: one row per loss and per sketch component."""
    lines = ["job,kind,name,value"]
    for job, found in sorted(probes.items()):
        lines += [f"{job},loss,{name},{float(value)!r}" for name, value in found.losses.items()]
        lines += [f"{job},sketch,{i},{float(value)!r}" for i, value in enumerate(found.sketch)]
    return "\n".join(lines) + "\n"


def read_probes(path: Path) -> dict[str, Probe]:
    """The probes of a `probes_csv` file."""
    losses: dict[str, dict[str, float]] = {}
    sketches: dict[str, list[float]] = {}
    for line in path.read_text(encoding="utf-8").splitlines()[1:]:
        job, kind, name, value = line.split(",")
        if kind == "loss":
            losses.setdefault(job, {})[name] = float(value)
        else:
            sketches.setdefault(job, []).append(float(value))
    return {job: Probe(losses.get(job, {}), np.array(sketch)) for job, sketch in sketches.items()}
