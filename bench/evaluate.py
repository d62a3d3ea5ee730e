"""Batched prediction, shared by every protocol."""

from __future__ import annotations

import contextlib
import logging
import os
import weakref

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

log = logging.getLogger("robustbench_lite")

def inference_mode(model: nn.Module):
    """`torch.no_grad()`, unless the model differentiates inside its forward (e.g. CIFS).

    Such a model sets the attribute `needs_autograd_at_eval = True`.
    """
    if getattr(model, "needs_autograd_at_eval", False):
        return torch.enable_grad()
    return torch.no_grad()


def to_input(x: Tensor, device: torch.device) -> Tensor:
    """uint8 (or float) images to float [0, 1] on `device`."""
    x = x.to(device, non_blocking=True)
    return x.float().div_(255) if x.dtype == torch.uint8 else x.float()


def predict(model: nn.Module, images: Tensor, batch_size: int = 500,
            device: torch.device | None = None, desc: str | None = None) -> Tensor:
    """Top-1 predictions (CPU int64) of `model` in eval mode for uint8 or [0, 1] float images, in
    batches of at most `batch_size` and at most what `bounded_batch` lets fit in memory."""
    device = device or next(model.parameters()).device
    model.eval()
    out = []
    batch_size = bounded_batch(model, images, batch_size, device)
    starts = range(0, len(images), batch_size)
    for start in tqdm(starts, desc=desc, disable=desc is None, leave=False):
        x = to_input(images[start:start + batch_size], device)
        with inference_mode(model):
            out.append(model(x).argmax(1).cpu())
    return torch.cat(out) if out else torch.empty(0, dtype=torch.long)


CPU_BUDGET = 2 * 2**30
"""Bytes of activations one evaluation batch may take on a CPU (at most a quarter of the RAM):
beyond a few hundred megabytes a larger batch is no faster there."""


def memory_budget(device: torch.device) -> int:
    """Bytes one batch's activations may take: half the free memory of a GPU; on a CPU
    `CPU_BUDGET`, or a quarter of the RAM if less."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0] // 2
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return min(CPU_BUDGET, ram // 4)


_ACTIVATIONS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def activation_bytes(model: nn.Module, image_shape: tuple[int, ...], device: torch.device) -> int:
    """Bytes of every output of every leaf module of `model` for one float image of `image_shape`
    (C, H, W): what a backward pass would keep, and an upper bound on what an evaluation pass holds
    at once. Measured by one forward pass, then cached per model and shape."""
    cached = _ACTIVATIONS.setdefault(model, {})
    if image_shape not in cached:
        total = [0]

        def count(module, inputs, output):
            outputs = output if isinstance(output, (tuple, list)) else (output,)
            total[0] += sum(t.numel() * t.element_size() for t in outputs if isinstance(t, Tensor))

        leaves = [m for m in model.modules() if not any(True for _ in m.children())]
        hooks = [m.register_forward_hook(count) for m in leaves]
        try:
            with eval_mode(model), inference_mode(model):
                model(torch.zeros(1, *image_shape, device=device))
        finally:
            for hook in hooks:
                hook.remove()
        cached[image_shape] = total[0]
    return cached[image_shape]


def bounded_batch(model: nn.Module, images: Tensor, batch_size: int, device: torch.device,
                  budget: int | None = None, factor: float = 1.0) -> int:
    """`batch_size`, or fewer images where `factor` times their `activation_bytes` would pass
    `budget` (default `memory_budget(device)`); at least 1."""
    per_image = activation_bytes(model, tuple(images.shape[1:]), device) * factor
    budget = memory_budget(device) if budget is None else budget
    fitting = max(1, int(budget // max(per_image, 1)))
    if fitting < batch_size and len(images) > fitting:
        log.info("evaluation batch %d -> %d: %.0f MB of activations per image, %.0f MB budget",
                 batch_size, fitting, per_image / 2**20, budget / 2**20)
        return fitting
    return batch_size


def accuracy(model: nn.Module, images: Tensor, labels: Tensor, batch_size: int = 500,
             desc: str | None = None) -> float:
    """Top-1 accuracy as a fraction in [0, 1]."""
    preds = predict(model, images, batch_size, desc=desc)
    return (preds == labels.cpu()).sum().item() / max(1, len(labels))


def centre_crop(x: Tensor, size: int) -> Tensor:
    """The central `size` x `size` window of (..., H, W) images (a view); all of them when `size`
    is 0 or not smaller than the images."""
    if not size or size >= min(x.shape[-2:]):
        return x
    top, left = (x.shape[-2] - size) // 2, (x.shape[-1] - size) // 2
    return x[..., top:top + size, left:left + size]


def full_precision(device: torch.device):
    """float32 inside a mixed-precision region: attacks and saliency passes run as the reference
    code runs them (fp32), whatever autocast the training step is under."""
    return torch.autocast(device.type, enabled=False)


@contextlib.contextmanager
def eval_mode(model: nn.Module):
    """Put `model` in eval mode for the block and restore its previous mode afterwards."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)
