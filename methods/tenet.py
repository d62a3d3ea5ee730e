"""TENET: group-wise inhibition of the most salient feature regions, learned in a second update.

Liu, Wu, Xie, Liu, Shen, "Group-wise Inhibition based Feature Regularization for Robust
Classification", ICCV 2021 (arXiv 2103.02152).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from robustbench_lite.bench.config import setting
from robustbench_lite.bench.backbones import Backbone
from robustbench_lite.bench.errors import UserError
from robustbench_lite.bench.evaluate import eval_mode, full_precision
from robustbench_lite.bench.method import METHODS, Batch, Losses, Method, StepContext

from ._tenet_groups import initial_centres, inhibition_masks, kmeans_channels, orthogonality_loss


@METHODS.register("tenet")
class Tenet(Method):
    """TENET: a second update on correct samples with their salient channel groups inhibited.

    Every `every`-th step after `warmup_steps`, after the ordinary cross-entropy update:
    1. keep the samples that the step's (pre-update) logits classified correctly;
    2. in eval mode, take the features A at the tap and G = d sum_i sigmoid(target logit_i) / dA;
    3. per sample, cluster A's channels into `groups` groups (k-means with medoid centres);
    4. per group, weight w_c = spatial mean of G_c; a group with sum w_c > 0 gets the spatial mask
       sigmoid(-zscore(sum_c w_c A_c)) on all its channels, any other group is left alone;
    5. in train mode, forward again with A' * mask at the tap and update with
       lambda_tenet * CE + lambda_orth * orthogonality of the groups' mean maps of A'.

    Tap: the reference masks the output of the third of four feature blocks (ResNeXt-29 stage 2,
    ResNet-50 stage 3); `tap="auto"` takes the second-to-last stage (tiny, resnet20, resnext29,
    wrn28_10: stage2; resnet18, preact_resnet18, resnet50: stage3).

    Deviations from the reference code: k-means runs batched over the samples (same per-sample
    algorithm), and an empty cluster snaps from its previous centre (the reference's mean of an
    empty set is NaN); the TENET update is skipped when fewer than 2 samples are correct (train-mode
    BN on a single sample fails on 1x1 maps; the reference needs 1); the reference trains on an
    AugMix copy plus a clean copy of the data and keeps the best checkpoints by test accuracy, here
    the shared recipe's data, schedule and final model are used; the free adversarial training
    variant is not included.
    """

    citation = ("Liu, Wu, Xie, Liu, Shen, Group-wise Inhibition based Feature Regularization for "
                "Robust Classification (ICCV 2021) <https://arxiv.org/abs/2103.02152>")

    @dataclass(frozen=True)
    class Config:
        groups: int = setting(6, low=1)  # channel groups per sample (N_G)
        # weight of the cross-entropy on the inhibited forward
        lambda_tenet: float = setting(0.1, low=0)
        # weight of the group orthogonality loss (CIFAR value)
        lambda_orth: float = setting(1e-3, low=0)
        every: int = setting(3, low=1)  # TENET update every this many steps ("thinking_alpha")
        warmup_steps: int = setting(500, low=0)  # plain steps before the first TENET update
        # ... at most this fraction of the run's steps (short runs)
        warmup_cap: float = setting(0.1, low=0, high=1)
        kmeans_iters: int = setting(50, low=1)  # k-means iteration cap
        # k-means stops when (sum of centre shifts)^2 < tol
        kmeans_tol: float = setting(1e-4, low=0, low_open=True)
        tap: str = "auto"  # masked feature map; auto = the second-to-last stage

    def build_model(self, backbone: Backbone) -> Backbone:
        cfg = self.config
        if cfg.groups < 1 or cfg.every < 1 or cfg.warmup_steps < 0 or not 0 <= cfg.warmup_cap <= 1:
            raise UserError("tenet: groups and every must be >= 1, warmup_steps >= 0 and "
                            "warmup_cap in [0, 1]")
        tap = self.tap(backbone)
        channels = backbone.tap_channels()[tap]
        if channels < cfg.groups:
            raise UserError(f"tenet: tap {tap!r} has {channels} channels, fewer than groups="
                            f"{cfg.groups}; lower --set groups=... or pick another tap")
        return backbone

    def warmup(self, total_steps: int) -> int:
        """Plain steps before the first TENET update: `warmup_steps`, capped at `warmup_cap` of
        the run (the reference's 500 are 1.3% of its 39,200 CIFAR steps; uncapped, a run of a few
        hundred steps would never make a TENET update)."""
        return min(self.config.warmup_steps, int(self.config.warmup_cap * total_steps))

    def tap(self, backbone: Backbone) -> str:
        """The masked tap: the configured one, or the second-to-last stage for "auto"."""
        if self.config.tap == "auto":
            return list(backbone.stages)[-2]
        if self.config.tap not in backbone.taps:
            raise UserError(f"tenet: unknown tap {self.config.tap!r}; this backbone has "
                            f"{', '.join(backbone.taps)} (or auto)")
        return self.config.tap

    def training_step(self, model: Backbone, batch: Batch, ctx: StepContext) -> Iterator[Losses]:
        logits = model(batch.x)
        correct = logits.detach().argmax(dim=1) == batch.y
        yield {"ce": F.cross_entropy(logits, batch.y)}
        cfg = self.config
        if ctx.step < self.warmup(ctx.total_steps) or ctx.step % cfg.every or int(correct.sum()) < 2:
            return
        x, y, tap = batch.x[correct], batch.y[correct], self.tap(model)
        features, grads = self.saliency(model, x, y, tap)
        with full_precision(x.device):
            maps = features.flatten(2)
            start = initial_centres(len(x), maps.shape[1], cfg.groups, ctx.rng).to(x.device)
            ids = kmeans_channels(maps, start, cfg.kmeans_iters, cfg.kmeans_tol)
            mask = inhibition_masks(features, grads, ids, cfg.groups)
        yield self.inhibited_losses(model, x, y, tap, mask, ids)

    @staticmethod
    def saliency(model: Backbone, x: Tensor, y: Tensor, tap: str) -> tuple[Tensor, Tensor]:
        """Features A at `tap` and d(sum of sigmoid target logits)/dA, with BN in eval mode, in
        float32 as the reference computes them (also under mixed precision)."""
        captured = []

        def capture(a: Tensor) -> Tensor:
            a = a.detach().requires_grad_()
            captured.append(a)
            return a

        with eval_mode(model), torch.enable_grad(), full_precision(x.device):
            logits = model(x.float(), edits={tap: capture})
            score = torch.sigmoid(logits.float()).gather(1, y[:, None]).sum()
            (grads,) = torch.autograd.grad(score, captured[0])
        return captured[0].detach(), grads

    def inhibited_losses(self, model: Backbone, x: Tensor, y: Tensor, tap: str, mask: Tensor,
                         ids: Tensor) -> Losses:
        """The TENET update's losses: CE with A' * mask at the tap, and A's group orthogonality."""
        captured = []

        def inhibit(a: Tensor) -> Tensor:
            captured.append(a)
            return a * mask.to(a.dtype)

        logits = model(x, edits={tap: inhibit})
        with full_precision(x.device):
            orth = orthogonality_loss(captured[0], ids, self.config.groups)
        return {"tenet_ce": self.config.lambda_tenet * F.cross_entropy(logits, y),
                "orth": self.config.lambda_orth * orth}
