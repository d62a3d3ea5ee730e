"""The one training loop, with a checkpoint cache and resumable epochs.

A trained model is cached under a hash of (method and config, training data, recipe, seed), so every
protocol reuses it. During training an epoch checkpoint (model, optimizer, generator states) is
written atomically; a killed run resumes from it and ends with the same numbers.
"""

from __future__ import annotations

import contextlib
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from filelock import FileLock
from torch import Tensor, nn
from tqdm.auto import tqdm

from . import distributed
from .backbones import build_backbone, initialise
from .atomic import ensure_folder
from .checkpoint import load_checkpoint, save_checkpoint
from .config import config_dict, stable_hash
from .datasets import ImageDataset, Split
from .errors import DivergedError, MissingModelError, UserError
from .method import Batch, Method, StepContext, as_updates
from .recipes import Recipe
from .recipes import training_identity
from .seeding import generator, seed_everything

log = logging.getLogger(__name__)
CACHE_FORMAT = 1


@dataclass
class TrainJob:
    """What to train: a method on a training split, with a recipe and a seed."""

    method: Method
    method_name: str
    dataset: ImageDataset
    recipe: Recipe
    seed: int
    train: Split | None = None  # defaults to dataset.train
    backbone_kwargs: dict | None = None

    @property
    def train_split(self) -> Split:
        return self.train if self.train is not None else self.dataset.train

    def key(self) -> str:
        split = self.train_split
        return stable_hash({
            "format": CACHE_FORMAT, "method": self.method_name,
            "config": config_dict(self.method.config), "dataset": self.dataset.name,
            "data": split.fingerprint(), "recipe": training_identity(self.recipe), "seed": self.seed,
            "backbone_kwargs": self.backbone_kwargs or {},
            **({"revision": self.method.revision} if self.method.revision else {}),
            **({"world_size": distributed.world_size()} if distributed.world_size() > 1 else {})})

    def build_model(self) -> nn.Module:
        seed_everything(self.seed)
        ds = self.dataset
        backbone = build_backbone(self.recipe.backbone, ds.num_classes, ds.mean, ds.std,
                                  **(self.backbone_kwargs or {}))
        if not (self.backbone_kwargs or {}).get("pretrained"):
            initialise(backbone, self.recipe.init)
        return self.method.build_model(backbone)


def pick_device(name: str | None = None) -> torch.device:
    """The requested device (checked to exist here), else CUDA when present, else CPU."""
    if not name:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        device = None
    if device is None or device.type not in ("cpu", "cuda", "mps"):
        raise UserError(f"--device {name!r} is not a device; use cpu, cuda, cuda:N or mps (or "
                        f"leave it out to choose automatically)")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {name}: no CUDA GPU is visible here; use --device cpu or leave "
                        f"it out")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise UserError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA "
                        f"devices (cuda:0 ..)")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise UserError(f"--device {name}: MPS is not available here; use --device cpu")
    return device


def trained_model(job: TrainJob, device: torch.device, cache_dir: Path,
                  progress: bool = True, train_missing: bool = True) -> nn.Module:
    """The trained model for `job`, from the cache when present, else trained (resuming) and cached;
    with `train_missing=False` a model missing from the cache is a `MissingModelError`."""
    final = cached_model_path(job, cache_dir)
    partial = final.with_suffix(".partial.pt")
    model = job.build_model().to(device)
    # A cached model was written atomically: it is read without the lock, so a read-only shared
    # cache serves too.
    if distributed.rank0_value(final.exists()):
        return _reuse(model, final, device)
    if not train_missing:
        raise MissingModelError(f"no cached model {final.name} for {job.method_name} "
                                f"({job.recipe.epochs} epochs on {len(job.train_split)} images)")
    ensure_folder(cache_dir, "the model cache", "pass a writable --cache-dir")
    # One process trains, the others wait and reuse. Under torchrun only rank 0 locks and writes;
    # all ranks train together and follow rank 0's view of the cache.
    with distributed.main_only(_cache_lock(final)):
        if distributed.rank0_value(final.exists()):
            return _reuse(model, final, device)
        Trainer(job, model, device, progress).fit(partial)
        if distributed.is_main():
            save_checkpoint(final, {"model": model.state_dict()})
            partial.unlink(missing_ok=True)
    return model.eval()


def _reuse(model: nn.Module, path: Path, device: torch.device) -> nn.Module:
    load_weights(model, path, device)
    log.info("reusing trained model %s", path)
    return model.eval()


@contextlib.contextmanager
def _cache_lock(final: Path):
    """Hold the training lock of one cached model; an unwritable cache is a UserError."""
    lock = FileLock(str(final.with_suffix(".lock")))
    try:
        lock.acquire()
    except OSError as err:
        raise UserError(f"cannot lock {final.with_suffix('.lock')} ({err.strerror or err}); "
                        f"pass a writable --cache-dir") from None
    try:
        yield
    finally:
        lock.release()


def cached_model_path(job: TrainJob, cache_dir: Path) -> Path:
    """Where the trained model of `job` is cached."""
    return cache_dir / f"{job.method_name}-{job.dataset.name}-s{job.seed}-{job.key()}.pt"


def load_weights(model: nn.Module, path: Path, device: torch.device) -> None:
    """Load cached weights; weights of another architecture are a clear error."""
    try:
        model.load_state_dict(load_checkpoint(path, device)["model"])
    except (RuntimeError, KeyError, TypeError, AttributeError, ValueError):
        raise UserError(f"checkpoint {path} does not fit this model (foreign or stale file); "
                        f"delete it and re-run to retrain") from None


class Trainer:
    """SGD with a per-step schedule over the method's training steps."""

    def __init__(self, job: TrainJob, model: nn.Module, device: torch.device,
                 progress: bool = True) -> None:
        self.job, self.model, self.device, self.progress = job, model, device, progress
        recipe = job.recipe
        self.optimizer = torch.optim.SGD(model.parameters(), lr=recipe.lr, momentum=recipe.momentum,
                                         nesterov=recipe.nesterov and recipe.momentum > 0,
                                         weight_decay=recipe.weight_decay)
        self.data_rng = generator(job.seed, "data")
        self.method_rng = generator(job.seed, "method")
        split = self._training_split()
        self.x, self.y = split.x.to(device), split.y.to(device)
        self.batch_size = min(recipe.batch_size, len(split))
        self.steps_per_epoch = len(split) // self.batch_size
        self.total_steps = self.steps_per_epoch * recipe.epochs
        self.use_amp = recipe.amp and device.type == "cuda" and torch.cuda.is_bf16_supported()
        if device.type == "cuda":
            self.model.to(memory_format=torch.channels_last)
        self.net = distributed.wrap(model, device)  # what the method trains: DDP under torchrun

    def _training_split(self) -> Split:
        split = self.job.train_split
        limit = self.job.recipe.train_limit
        if limit and limit < len(split):
            order = torch.randperm(len(split), generator=generator(self.job.seed, "subset"))
            split = split.subset(order[:limit])
        return split

    def fit(self, checkpoint: Path) -> None:
        start = self._resume(checkpoint)
        epochs = range(start, self.job.recipe.epochs)
        bar = tqdm(total=self.total_steps, initial=start * self.steps_per_epoch, disable=not self.progress,
                   desc=f"train {self.job.method_name}", unit="step", leave=False)
        for epoch in epochs:
            self._epoch(epoch, bar)
            self._save(checkpoint, epoch + 1)
        bar.close()

    def first_steps(self, count: int) -> list[dict[str, Tensor]]:
        """Run only the first `count` steps of the first epoch, writing nothing; the losses of
        each step (the golden suite's training probe)."""
        with tqdm(disable=True) as bar:
            return self._epoch(0, bar, min(count, self.steps_per_epoch))

    def _epoch(self, epoch: int, bar, steps: int | None = None) -> list[dict[str, Tensor]]:
        order = torch.randperm(len(self.x), generator=self.data_rng).to(self.device)
        history = []
        for i in range(self.steps_per_epoch if steps is None else steps):
            step = epoch * self.steps_per_epoch + i
            index = order[i * self.batch_size:(i + 1) * self.batch_size]
            ctx = StepContext(step, epoch, self.steps_per_epoch, self.total_steps,
                              self.job.dataset.num_classes, self.method_rng, self.device)
            losses = self._step(self._batch(index), ctx)
            history.append(losses)
            bar.update(1)
            if self.progress and (i + 1 == self.steps_per_epoch or i % 50 == 0):  # .item() syncs
                bar.set_postfix({k: f"{v.item():.3f}" for k, v in losses.items()}, refresh=False)
        return history

    def _batch(self, index: Tensor) -> Batch:
        x = augment(self.x[index], self.job.recipe, self.data_rng)
        x = x.float().div_(255)
        if self.device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        return Batch(*distributed.shard(x, self.y[index]))  # this rank's part of the global batch

    def _step(self, batch: Batch, ctx: StepContext) -> dict[str, Tensor]:
        for group in self.optimizer.param_groups:
            group["lr"] = learning_rate(self.job.recipe, ctx.step, self.steps_per_epoch)
        method, logged = self.job.method, {}
        self.model.train()
        with self._autocast():
            batch = method.train_transform(batch, ctx)
            updates = as_updates(method.training_step(self.net, batch, ctx))
            for losses in distributed.checked_updates(updates, self.net, self.job.method_name):
                apply_update(self.optimizer, losses, self.job.method_name, ctx)
                logged.update({k: v.detach() for k, v in losses.items()})
        return logged

    def _autocast(self):
        if self.use_amp:
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _save(self, path: Path, epochs_done: int) -> None:
        if not distributed.is_main():
            return
        save_checkpoint(path, {
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "epochs_done": epochs_done, "data_rng": self.data_rng.get_state(),
            "method_rng": self.method_rng.get_state(), "key": self.job.key()})

    def _resume(self, path: Path) -> int:
        if not path.exists():
            return 0
        state = load_checkpoint(path, self.device)
        if state.get("key") != self.job.key():
            return 0
        try:
            self.model.load_state_dict(state["model"])
        except RuntimeError:
            raise UserError(f"checkpoint {path} does not fit this model; delete it and re-run") from None
        self.optimizer.load_state_dict(state["optimizer"])
        self.data_rng.set_state(state["data_rng"].cpu())
        self.method_rng.set_state(state["method_rng"].cpu())
        log.info("resuming %s after epoch %d", path.name, state["epochs_done"])
        return int(state["epochs_done"])


def apply_update(optimizer: torch.optim.Optimizer, losses: dict[str, Tensor], method: str,
                 ctx: StepContext) -> None:
    """One optimizer update on the sum of `losses`; a non-finite sum is a `DivergedError`."""
    total = sum(losses.values())
    if not torch.isfinite(total):
        raise DivergedError(f"method {method!r} diverged at epoch {ctx.epoch + 1}, step "
                            f"{ctx.step + 1} (loss {total.item()}); lower the learning rate "
                            f"(--set recipe.lr=...) or check the method's settings")
    optimizer.zero_grad(set_to_none=True)
    total.backward()
    optimizer.step()


def learning_rate(recipe: Recipe, step: int, steps_per_epoch: int) -> float:
    """The learning rate at a global step: cosine to zero, multistep or step decay, or constant."""
    if recipe.schedule == "cosine":
        total = max(1, recipe.epochs * steps_per_epoch)
        return recipe.lr * 0.5 * (1 + math.cos(math.pi * step / total))
    if recipe.schedule == "multistep":
        epoch = step // max(1, steps_per_epoch)
        return recipe.lr * recipe.gamma ** sum(epoch >= m for m in recipe.milestones)
    if recipe.schedule == "step":  # step_every >= 1 (checked by the recipe)
        return recipe.lr * recipe.gamma ** (step // max(1, steps_per_epoch) // recipe.step_every)
    return recipe.lr


def augment(x: Tensor, recipe: Recipe, rng: torch.Generator) -> Tensor:
    """Random crop (after zero padding; of `crop_size` when set) and random horizontal flip,
    batched, drawn from `rng`."""
    n, _, h, w = x.shape
    pad = recipe.crop_padding
    out_h, out_w = (recipe.crop_size, recipe.crop_size) if recipe.crop_size else (h, w)
    if out_h > h or out_w > w:
        raise UserError(f"recipe.crop_size {out_h} exceeds the {h}x{w} training images; pass "
                        f"--set recipe.crop_size=N with N <= {min(h, w)} (0 = the image size)")
    if pad or (out_h, out_w) != (h, w):
        dy = torch.randint(0, h + 2 * pad - out_h + 1, (n,), generator=rng).to(x.device)
        dx = torch.randint(0, w + 2 * pad - out_w + 1, (n,), generator=rng).to(x.device)
        padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
        rows = (dy[:, None] + torch.arange(out_h, device=x.device))[:, None, :, None]
        cols = (dx[:, None] + torch.arange(out_w, device=x.device))[:, None, None, :]
        batch = torch.arange(n, device=x.device)[:, None, None, None]
        chan = torch.arange(x.shape[1], device=x.device)[None, :, None, None]
        x = padded[batch, chan, rows, cols]
    if recipe.flip:
        flip = (torch.rand(n, generator=rng) < 0.5).to(x.device)[:, None, None, None]
        x = torch.where(flip, x.flip(3), x)
    return x
