"""Batched prediction, shared by every protocol."""

from __future__ import annotations

import contextlib

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm


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
    """Top-1 predictions (CPU int64) of `model` in eval mode for uint8 or [0, 1] float images."""
    device = device or next(model.parameters()).device
    model.eval()
    out = []
    starts = range(0, len(images), batch_size)
    for start in tqdm(starts, desc=desc, disable=desc is None, leave=False):
        x = to_input(images[start:start + batch_size], device)
        with inference_mode(model):
            out.append(model(x).argmax(1).cpu())
    return torch.cat(out) if out else torch.empty(0, dtype=torch.long)


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
