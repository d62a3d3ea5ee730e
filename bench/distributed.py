"""Data-parallel training of one run over several processes, launched with `torchrun`.

    torchrun --nproc_per_node=2 -m robustbench_lite.bench.cli run --method erm --protocol clean

Every rank runs the whole command. Training is split: each global batch (same seeded order and
augmentation on every rank) is cut into one contiguous shard per rank, and DistributedDataParallel
averages the gradients, so the effective batch size, the number of steps and the schedule are those
of single-process training. Evaluation is not split: every rank evaluates the trained model, and
only rank 0 writes checkpoints, run files and leaderboards; the other ranks exit 0.

Differences from single-process training, by design:
- BatchNorm stays per rank: batch statistics come from the rank's shard (global batch / world size),
  as in plain DDP. Running statistics are not broadcast; rank 0's are the ones saved. SyncBatchNorm
  is not used: it needs CUDA, and the CPU (gloo) path would then train a different model.
- Methods draw from `ctx.rng` seeded identically on every rank, so mixing partners, λ and layer
  choices agree across ranks; partners are drawn within the rank's shard.
- A trained model is cached under a key that includes the world size (single-process checkpoints
  stay bit-reproducible).

Methods must call the model itself (`model(x, edits=...)`): a method that calls a submodule or a
helper of the model (CIFS's `forward_with_probes`) would skip DDP's gradient synchronisation, and a
method that makes a rank-dependent number of optimizer updates (TENET skips its inhibition update
when fewer than two shard images are classified correctly) would deadlock. Both are detected at the
first such step and stop training with an error naming the method.
"""

from __future__ import annotations

import contextlib
import inspect
import os
from collections.abc import Iterator

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from .errors import UserError


def init_from_env(use_cuda: bool) -> bool:
    """Join the process group described by torchrun's variables (RANK, WORLD_SIZE, LOCAL_RANK);
    False when not launched by torchrun. Backend nccl on CUDA (a GPU per local rank), else gloo."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or is_distributed():
        return is_distributed()
    if use_cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group("nccl" if use_cuda else "gloo")
    return True


def shutdown() -> None:
    if is_distributed():
        dist.destroy_process_group()


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    """True on the process that writes files: rank 0, or the only process."""
    return rank() == 0


def main_only(context: contextlib.AbstractContextManager) -> contextlib.AbstractContextManager:
    """`context` on rank 0, a no-op elsewhere (e.g. a file lock that only the writer takes)."""
    return context if is_main() else contextlib.nullcontext()


def shard(*tensors: Tensor) -> tuple[Tensor, ...]:
    """This rank's contiguous slice of each global-batch tensor (all of it without torchrun)."""
    if not is_distributed():
        return tensors
    return tuple(t.tensor_split(world_size())[rank()] for t in tensors)


def rank0_value(value: object) -> object:
    """Rank 0's `value`, on every rank (decisions such as "the checkpoint exists" must agree)."""
    if not is_distributed():
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _agree(count: int) -> bool:
    """Whether every rank passed the same `count`."""
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" \
        else torch.device("cpu")
    bounds = torch.tensor([count, -count], device=device)
    dist.all_reduce(bounds, op=dist.ReduceOp.MIN)
    return int(bounds[0]) == -int(bounds[1])


# Buffers (BatchNorm running statistics) stay per rank: no collective in the forward pass, so ranks
# only meet in the backward pass and in `checked_updates` (newer torch: `forward_sync_buffers`).
_DDP_OPTIONS = inspect.signature(DistributedDataParallel).parameters
_NO_BUFFER_SYNC = ({"forward_sync_buffers": False} if "forward_sync_buffers" in _DDP_OPTIONS
                   else {"broadcast_buffers": False})


class DistributedModel(DistributedDataParallel):
    """DDP whose wrapped model's attributes (`stages`, `taps`, ...) stay reachable, so methods see
    the same interface as without torchrun; counts forward calls to catch bypassed forwards."""

    def __init__(self, module: nn.Module, device: torch.device) -> None:
        ids = [device.index if device.index is not None else torch.cuda.current_device()] \
            if device.type == "cuda" else None
        super().__init__(module, device_ids=ids, **_NO_BUFFER_SYNC)
        self.forward_calls = 0

    def forward(self, *args, **kwargs):
        self.forward_calls += 1
        return super().forward(*args, **kwargs)

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name == "module":
                raise
            return getattr(self.module, name)


def wrap(model: nn.Module, device: torch.device) -> nn.Module:
    """The model to train with: a `DistributedModel` under torchrun, else `model` itself."""
    return DistributedModel(model, device) if is_distributed() else model


def checked_updates(updates: Iterator[dict], model: nn.Module, method: str) -> Iterator[dict]:
    """The method's loss dicts, checking under torchrun that each one came through the DDP forward
    and that all ranks make the same number of updates (before any backward could deadlock)."""
    if not isinstance(model, DistributedModel):
        yield from updates
        return
    made = 0  # forward_calls counts from the end of the previous update (the loss of a
    for losses in updates:  # non-generator method is computed before this function runs)
        if model.forward_calls == 0:
            raise UserError(f"method {method!r} computes its loss without calling the model "
                            f"(e.g. a helper or submodule of it), which skips gradient "
                            f"synchronisation; train it without torchrun")
        made += 1
        if not _agree(made):
            break
        yield losses
        model.forward_calls = 0
    else:
        if _agree(-1):
            return
    raise UserError(f"method {method!r} made a different number of optimizer updates on different "
                    f"ranks at one step (a rank-dependent branch); train it without torchrun")
