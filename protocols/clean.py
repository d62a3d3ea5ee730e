"""Clean accuracy: top-1 on the dataset's test split, with the model's size, cost and speed."""

import time

import torch

from robustbench_lite.bench.evaluate import accuracy, inference_mode, to_input
from robustbench_lite.bench.protocol import PROTOCOLS, Column, Measurement, Protocol, RunContext


@PROTOCOLS.register("clean")
class Clean(Protocol):
    """Top-1 accuracy on the clean test split; parameters, MACs per image and evaluation speed."""

    columns = (Column("clean acc", "accuracy"),
               Column("params (M)", "parameters", percent=False, scale=1e-6, digits=2,
                      higher_is_better=None),
               Column("MACs (M)", "macs", percent=False, scale=1e-6, digits=1,
                      higher_is_better=None, absent="torch's FLOP counter cannot follow a model "
                      "that differentiates inside its forward pass (CIFS)"),
               Column("eval img/s", "images_per_second", percent=False, digits=0,
                      thousands=True))

    def run(self, ctx: RunContext) -> list[Measurement]:
        model = ctx.model()
        test = ctx.test_split()
        start = time.perf_counter()
        acc = accuracy(model, test.x, test.y, ctx.recipe.eval_batch_size)
        speed = len(test) / max(time.perf_counter() - start, 1e-9)
        macs = multiply_adds(model, to_input(test.x[:1], ctx.device))
        return [Measurement("accuracy", acc, len(test)),
                Measurement("parameters", float(sum(p.numel() for p in model.parameters()))),
                *([Measurement("macs", macs)] if macs is not None else []),
                Measurement("images_per_second", speed, len(test))]


def multiply_adds(model: torch.nn.Module, x: torch.Tensor) -> float | None:
    """Multiply-accumulates of one forward pass on the single image `x` (torch's FLOP counter / 2),
    or None for a model the counter cannot follow (one that runs autograd inside its forward)."""
    from torch.utils.flop_counter import FlopCounterMode

    model.eval()
    try:
        with FlopCounterMode(display=False) as counter, inference_mode(model):
            model(x)
    except RuntimeError:
        return None
    return counter.get_total_flops() / 2
