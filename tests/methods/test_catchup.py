"""Catch-up Mix: the relative-norm channel mask, its label weight, and the method's draws."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from robustbench_lite.bench.backbones import build_backbone
from robustbench_lite.bench.errors import UserError
from robustbench_lite.bench.method import METHODS, Batch, StepContext
from robustbench_lite.bench.mixing import (choose, cutmix, happens, mixed_cross_entropy,
                                           partner_permutation, sample_lambda)
from robustbench_lite.methods.catchup import catch_up_mask, catch_up_mix, relative_filter_influence

CPU = torch.device("cpu")
CatchUp = METHODS.get("catchup")


def maps_with_norms(norms: list[list[float]], size: int = 3) -> torch.Tensor:
    """(B, C, size, size) activations whose map (i, c) is a spatially varying pattern of ℓ2 norm
    norms[i][c]; every map differs, so each output map reveals its source."""
    torch.manual_seed(0)
    pattern = torch.rand(len(norms), len(norms[0]), size, size) + 0.1
    pattern = pattern / pattern.flatten(2).norm(dim=2)[..., None, None]
    return pattern * torch.tensor(norms)[..., None, None]


def source_of_each_map(h: torch.Tensor, mixed: torch.Tensor) -> torch.Tensor:
    """(B, C): which sample of h each whole map of `mixed` equals (-1 if none, e.g. a partial map)."""
    b, c = h.shape[:2]
    source = torch.full((b, c), -1)
    for i in range(b):
        for ch in range(c):
            for j in range(b):
                if torch.equal(mixed[i, ch], h[j, ch]):
                    source[i, ch] = j
    return source


def test_each_channel_keeps_the_pair_member_with_the_lower_relative_norm():
    # RFI of sample 0: .1 .2 .3 .4; of sample 1: .4 .3 .2 .1 (10x larger raw norms).
    h = maps_with_norms([[1, 2, 3, 4], [40, 30, 20, 10]])
    perm = torch.tensor([1, 0])
    rfi = relative_filter_influence(h)
    assert torch.allclose(rfi, torch.tensor([[.1, .2, .3, .4], [.4, .3, .2, .1]]))
    mixed, fraction = catch_up_mix(h, perm, lam=0.5)
    assert fraction == 0.5
    source = source_of_each_map(h, mixed)  # whole maps: the mask is constant over H x W
    assert source.tolist() == [[0, 0, 1, 1], [0, 0, 1, 1]]
    lower = rfi.argmin(dim=0)  # per channel, the member of the pair with the lower RFI
    assert torch.equal(source[0], lower) and torch.equal(source[1], lower)


def test_relative_and_raw_norms_rank_channels_differently():
    # Sample 1 has the same pattern of relative norms but raw norms 10-60x larger.
    h = maps_with_norms([[1, 2, 3, 4], [10, 60, 20, 10]])
    perm = torch.tensor([1, 0])
    # relative: d0 = (0, -.4, .1, .3) -> channels 0, 1; raw: d0 = (-9, -58, -17, -6) -> 1, 2
    assert catch_up_mask(h, perm, keep=2)[0].tolist() == [True, True, False, False]
    assert catch_up_mask(h, perm, keep=2, normalize=False)[0].tolist() == [False, True, True, False]


@pytest.mark.parametrize("lam", [0.0, 0.05, 0.37, 0.5, 0.99])
def test_exactly_floor_lambda_c_channels_come_from_the_sample(lam):
    torch.manual_seed(1)
    h = torch.rand(8, 10, 4, 4) * torch.rand(8, 10, 1, 1) * 5
    perm = torch.tensor([3, 0, 1, 2, 7, 4, 5, 6])  # no fixed points
    keep = math.floor(lam * 10)
    mask = catch_up_mask(h, perm, keep)
    assert mask.sum(dim=1).tolist() == [keep] * 8
    rfi = relative_filter_influence(h)
    d = rfi - rfi[perm]
    for i in range(8):  # the kept channels are those with the smallest d
        if 0 < keep < 10:
            assert d[i][mask[i]].max() <= d[i][~mask[i]].min()
    mixed, fraction = catch_up_mix(h, perm, lam)
    assert fraction == keep / 10
    expected = torch.where(mask[:, :, None, None], h, h[perm])
    assert torch.equal(mixed, expected)


def test_no_gradient_flows_through_the_mask():
    torch.manual_seed(2)
    h = (torch.rand(6, 8, 3, 3) * torch.rand(6, 8, 1, 1)).requires_grad_()
    perm = torch.tensor([1, 2, 0, 4, 5, 3])
    mask = catch_up_mask(h, perm, keep=3)
    assert not mask.requires_grad
    mixed, _ = catch_up_mix(h, perm, lam=0.4)  # ⌊0.4 · 8⌋ = 3 channels kept
    mixed.sum().backward()
    # h[j, c] reaches the output once as itself where kept, once more for the sample it lends to:
    # integer counts, nothing from the ranking.
    lent = torch.zeros_like(mask)
    lent[perm] = ~mask
    expected = mask.float() + lent.float()
    assert torch.equal(h.grad, expected[:, :, None, None].expand_as(h))


def tiny_net():
    torch.manual_seed(0)
    return build_backbone("tiny", 4, (0.5,) * 3, (0.25,) * 3)


def context(seed: int) -> StepContext:
    return StepContext(0, 0, 1, 1, 4, torch.Generator().manual_seed(seed), CPU)


def replay(state: torch.Tensor, n: int, taps: tuple[str, ...], alpha: float):
    """The method's draws in its order: mix?, π, tap, λ; returns (π, tap, λ, generator)."""
    rng = torch.Generator()
    rng.set_state(state)
    assert happens(1.0, rng)
    perm = partner_permutation(n, rng, CPU)
    tap = choose(taps, rng)
    return perm, tap, sample_lambda(alpha, rng), rng


@pytest.mark.parametrize("rule", ["channels", "lambda"])
def test_feature_tap_loss_uses_the_documented_label_weight(rule):
    n, x, y = 8, torch.rand(8, 3, 16, 16), torch.arange(8) % 4
    method = CatchUp(CatchUp.Config(taps=("stage2",), label_weight=rule, alpha=0.7))
    ctx = context(4)
    perm, tap, lam, _ = replay(ctx.rng.get_state(), n, ("stage2",), 0.7)
    loss = method.training_step(tiny_net(), Batch(x, y), ctx)["ce"]
    fractions = []

    def mix(h):
        mixed, fraction = catch_up_mix(h, perm, lam)
        fractions.append(fraction)
        return mixed

    logits = tiny_net()(x, edits={tap: mix})
    weight = math.floor(lam * 32) / 32 if rule == "channels" else lam  # stage2 has 32 channels
    assert fractions == [math.floor(lam * 32) / 32]
    by_hand = weight * F.cross_entropy(logits, y) + (1 - weight) * F.cross_entropy(logits, y[perm])
    assert loss.item() == pytest.approx(by_hand.item(), rel=1e-6)


@pytest.mark.parametrize("input_mix", ["cutmix", "mixup"])
def test_input_tap_uses_the_configured_input_mix(input_mix):
    n, x, y = 8, torch.rand(8, 3, 16, 16), torch.arange(8) % 4
    method = CatchUp(CatchUp.Config(taps=("input",), input_mix=input_mix, input_alpha=0.5))
    ctx = context(6)
    perm, _, lam, rng = replay(ctx.rng.get_state(), n, ("input",), 0.5)
    loss = method.training_step(tiny_net(), Batch(x, y), ctx)["ce"]
    if input_mix == "cutmix":
        mixed, weight = cutmix(x, perm, lam, rng)
    else:
        mixed, weight = lam * x + (1 - lam) * x[perm], lam
    logits = tiny_net()(mixed)
    assert loss.item() == pytest.approx(mixed_cross_entropy(logits, y, y[perm], weight).item(),
                                        rel=1e-6)


class TapRecorder(nn.Module):
    """A backbone that records the tap each call mixes at ("input" when called without edits)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net, self.taps, self.stages, self.mixed_at = net, net.taps, net.stages, []

    def forward(self, x, edits=None):
        self.mixed_at.append(next(iter(edits)) if edits else "input")
        return self.net(x, edits)


def test_seeds_drive_the_taps_and_lambdas():
    x, y = torch.rand(8, 3, 16, 16), torch.arange(8) % 4
    method, net = CatchUp(), TapRecorder(tiny_net())

    def run(seed):
        ctx, losses = context(seed), []
        net.mixed_at = []
        for _ in range(12):
            losses.append(method.training_step(net, Batch(x, y), ctx)["ce"].item())
        return net.mixed_at, losses

    assert run(0) == run(0)
    taps0, losses0 = run(0)
    taps1, losses1 = run(1)
    assert taps0 != taps1 and losses0 != losses1
    # the public re-implementation's candidates: input, stem and every stage
    assert set(taps0) | set(taps1) == {"input", "stem", "stage1", "stage2", "stage3"}


def test_configuration_mistakes_are_user_errors():
    with pytest.raises(UserError, match="stage5"):
        CatchUp(CatchUp.Config(taps=("all", "stage5"))).build_model(tiny_net())
    with pytest.raises(UserError, match="alpha"):
        CatchUp.Config(alpha=0.0)
    with pytest.raises(UserError, match="prob"):
        CatchUp.Config(prob=1.5)
    with pytest.raises(UserError, match="label_weight"):
        CatchUp.Config(label_weight="area")
