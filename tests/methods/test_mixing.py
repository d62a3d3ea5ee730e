"""Mixing building blocks, and the mechanisms of mixup, CutMix and Manifold Mixup."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from robustbench_lite.bench.backbones import build_backbone
from robustbench_lite.bench.errors import UserError
from robustbench_lite.bench.method import METHODS, Batch, StepContext
from robustbench_lite.bench.mixing import (choose, cutmix, mixed_cross_entropy, partner_permutation,
                                           resolve_taps, sample_lambda)
from robustbench_lite.bench.recipes import Recipe
from robustbench_lite.bench.train import TrainJob, trained_model

CPU = torch.device("cpu")
ONE_EPOCH = Recipe(backbone="tiny", epochs=1, batch_size=16, lr=0.05, crop_padding=2, flip=False)

MIXING_METHODS = ["mixup", "cutmix", "manifold_mixup", "catchup"]


class Spy(nn.Module):
    """Wraps a backbone and records, per call: the input, the taps the caller edited, every tap's
    activation before and after the edit, and the logits."""

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.taps, self.stages = backbone.taps, backbone.stages
        self.calls: list[SimpleNamespace] = []

    def forward(self, x, edits=None):
        edits, seen = dict(edits or {}), {}

        def watch(tap):
            def edit(h):
                out = edits[tap](h) if tap in edits else h
                seen[tap] = (h.detach().clone(), out.detach().clone())
                return out
            return edit

        logits = self.backbone(x, {t: watch(t) for t in self.backbone.taps})
        self.calls.append(SimpleNamespace(x=x.detach().clone(), edited=tuple(edits), seen=seen,
                                          logits=logits.detach()))
        return logits


def tiny_net(classes: int = 4) -> nn.Module:
    torch.manual_seed(0)
    return build_backbone("tiny", classes, (0.5,) * 3, (0.25,) * 3)


def context(seed: int) -> StepContext:
    return StepContext(0, 0, 1, 1, 4, torch.Generator().manual_seed(seed), CPU)


def labels(n: int) -> torch.Tensor:
    return torch.arange(n) % 4


# ---- building blocks ---------------------------------------------------------------------------

def test_lambda_is_seeded_and_follows_beta():
    def draws(seed, alpha, n=2000):
        rng = torch.Generator().manual_seed(seed)
        return torch.tensor([sample_lambda(alpha, rng) for _ in range(n)])

    assert torch.equal(draws(1, 2.0, 50), draws(1, 2.0, 50))
    assert not torch.equal(draws(1, 2.0, 50), draws(2, 2.0, 50))
    for alpha in (0.4, 2.0):
        lam = draws(3, alpha)
        assert 0 <= lam.min() and lam.max() <= 1
        assert abs(lam.mean() - 0.5) < 0.03
        assert abs(lam.var() - 1 / (4 * (2 * alpha + 1))) < 0.015  # Var of Beta(a, a)


def test_mixed_cross_entropy_equals_cross_entropy_on_the_soft_target():
    logits = torch.randn(6, 5)
    y_a, y_b = torch.tensor([0, 1, 2, 3, 4, 0]), torch.tensor([4, 4, 1, 0, 2, 0])
    soft = 0.3 * F.one_hot(y_a, 5).float() + 0.7 * F.one_hot(y_b, 5).float()
    assert torch.allclose(mixed_cross_entropy(logits, y_a, y_b, 0.3), F.cross_entropy(logits, soft))


def pasted_box(original: torch.Tensor, mixed: torch.Tensor) -> tuple[int, int, int, int] | None:
    """(top, bottom, left, right) bounding where `mixed` differs from `original` (None: nowhere)."""
    diff = (mixed != original).any(dim=0)
    if not diff.any():
        return None
    rows, cols = diff.any(dim=1).nonzero().flatten(), diff.any(dim=0).nonzero().flatten()
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def check_cutmix(x: torch.Tensor, mixed: torch.Tensor, perm: torch.Tensor) -> int:
    """Asserts each mixed image is x[i] with one rectangle, the same for all, pasted from x[π(i)];
    returns the pasted area."""
    boxes = {pasted_box(x[i], mixed[i]) for i in range(len(x)) if perm[i] != i}
    assert len(boxes) == 1
    box = boxes.pop()
    if box is None:
        assert torch.equal(mixed, x)
        return 0
    top, bottom, left, right = box
    for i in range(len(x)):
        expected = x[i].clone()
        expected[:, top:bottom, left:right] = x[perm[i]][:, top:bottom, left:right]
        assert torch.equal(mixed[i], expected)  # a full rectangle, taken from the partner
    return (bottom - top) * (right - left)


def one_value_per_image(n: int, h: int, w: int) -> torch.Tensor:
    """Image i is the constant (i + 1) / n, so every pixel tells which image it came from."""
    return (torch.arange(1.0, n + 1) / n).view(n, 1, 1, 1).expand(n, 3, h, w).clone()


def partner_of_pasted_pixels(x: torch.Tensor, mixed: torch.Tensor) -> torch.Tensor:
    """π(i) read off the foreign pixels in mixed[i] (i itself when there are none)."""
    source = {float(v): j for j, v in enumerate(x[:, 0, 0, 0])}
    perm = []
    for i in range(len(x)):
        foreign = mixed[i][mixed[i] != x[i]]
        perm.append(source[float(foreign[0])] if len(foreign) else i)
    return torch.tensor(perm)


def test_cutmix_pastes_a_partner_rectangle_weighted_by_exact_area():
    x = one_value_per_image(6, 12, 10)
    perm = torch.tensor([1, 2, 3, 4, 5, 0])
    clipped = 0
    for seed in range(40):
        rng = torch.Generator().manual_seed(seed)
        lam = sample_lambda(1.0, rng)
        mixed, weight = cutmix(x, perm, lam, rng)
        area = check_cutmix(x, mixed, perm)
        assert weight == pytest.approx(1 - area / 120, abs=1e-12)  # the exact kept fraction
        cut_h, cut_w = int(12 * math.sqrt(1 - lam)), int(10 * math.sqrt(1 - lam))
        assert area <= (cut_h + 1) * (cut_w + 1)
        clipped += area < (cut_h - 1) * (cut_w - 1)
    assert clipped > 0  # the border case was exercised


def test_resolve_taps_expands_all_and_rejects_missing_taps():
    net = tiny_net()
    assert resolve_taps(("all",), net, "m") == ("input", "stage1", "stage2", "stage3")
    assert resolve_taps(("stage2", "input"), net, "m") == ("input", "stage2")
    with pytest.raises(UserError, match=r"stage4.*not in this backbone"):
        resolve_taps(("input", "stage4"), net, "m")
    with pytest.raises(UserError, match="no taps given"):
        resolve_taps((), net, "m")
    with pytest.raises(UserError, match="has none"):
        resolve_taps(("input",), nn.Linear(2, 2), "m")


# ---- mixup -------------------------------------------------------------------------------------

def test_mixup_mixes_inputs_and_labels_with_one_lambda():
    n, spy = 8, Spy(tiny_net())
    x = torch.zeros(n, 3, 4, 4)
    x.view(n, -1)[torch.arange(n), torch.arange(n)] = 1.0  # image i: a single 1 at pixel i
    y = labels(n)
    loss = METHODS.get("mixup")().training_step(spy, Batch(x, y), context(5))["ce"]
    # Read λ and π off the mixed images, mixed[i] = λ e_i + (1 − λ) e_π(i).
    mixed, diag = spy.calls[0].x.view(n, -1), torch.arange(n)
    own = mixed[diag, diag]
    others = mixed.clone()
    others[diag, diag] = 0
    fixed = torch.isclose(own, torch.ones(n))
    perm = torch.where(fixed, diag, others.argmax(dim=1))
    assert sorted(perm.tolist()) == list(range(n)) and not fixed.all()
    lam = float(own[~fixed][0])
    assert torch.allclose(spy.calls[0].x, lam * x + (1 - lam) * x[perm])
    logits = spy.calls[0].logits
    by_hand = lam * F.cross_entropy(logits, y) + (1 - lam) * F.cross_entropy(logits, y[perm])
    assert loss.item() == pytest.approx(by_hand.item(), rel=1e-6)


# ---- CutMix ------------------------------------------------------------------------------------

def test_cutmix_method_pastes_from_partner_and_weights_labels_by_area():
    n, spy = 8, Spy(tiny_net())
    x, y = one_value_per_image(n, 16, 16), labels(n)
    loss = METHODS.get("cutmix")().training_step(spy, Batch(x, y), context(3))["ce"]
    mixed = spy.calls[0].x
    perm = partner_of_pasted_pixels(x, mixed)
    area = check_cutmix(x, mixed, perm)
    assert 0 < area < 256
    weight = 1 - area / 256
    logits = spy.calls[0].logits
    by_hand = weight * F.cross_entropy(logits, y) + (1 - weight) * F.cross_entropy(logits, y[perm])
    assert loss.item() == pytest.approx(by_hand.item(), rel=1e-6)


def test_cutmix_with_zero_probability_is_plain_cross_entropy():
    spy, x, y = Spy(tiny_net()), torch.rand(8, 3, 16, 16), labels(8)
    method = METHODS.get("cutmix")(METHODS.get("cutmix").Config(prob=0.0))
    loss = method.training_step(spy, Batch(x, y), context(0))["ce"]
    assert torch.equal(spy.calls[0].x, x)
    assert loss.item() == pytest.approx(F.cross_entropy(spy.calls[0].logits, y).item(), rel=1e-6)


# ---- Manifold Mixup ----------------------------------------------------------------------------

def test_manifold_mixup_mixes_at_the_drawn_tap_only():
    cls = METHODS.get("manifold_mixup")
    method, n = cls(), 8
    x, y = torch.rand(n, 3, 16, 16), labels(n)
    drawn = set()
    for seed in range(8):
        spy, ctx = Spy(tiny_net()), context(seed)
        replay = ctx.rng.get_state()
        loss = method.training_step(spy, Batch(x, y), ctx)["ce"]
        (call,) = spy.calls
        (tap,) = call.edited
        drawn.add(tap)
        # Replay the draws in the method's order: permutation, tap, λ.
        rng = torch.Generator()
        rng.set_state(replay)
        perm = partner_permutation(n, rng, CPU)
        assert tap == choose(("input", "stage1", "stage2"), rng)
        lam = sample_lambda(2.0, rng)
        before, after = call.seen[tap]
        assert torch.allclose(after, lam * before + (1 - lam) * before[perm], atol=1e-6)
        untouched = [t for t in spy.taps if t != tap]
        assert all(torch.equal(*call.seen[t]) for t in untouched)
        with torch.no_grad():  # upstream of the mix, activations are the clean ones
            clean = Spy(tiny_net().train())
            clean(x)
        upstream = spy.taps[:spy.taps.index(tap) + 1]
        assert all(torch.allclose(call.seen[t][0], clean.calls[0].seen[t][0]) for t in upstream)
        logits = call.logits
        by_hand = lam * F.cross_entropy(logits, y) + (1 - lam) * F.cross_entropy(logits, y[perm])
        assert loss.item() == pytest.approx(by_hand.item(), rel=1e-6)
    assert drawn == {"input", "stage1", "stage2"}


def test_manifold_mixup_rejects_taps_the_backbone_lacks():
    cls = METHODS.get("manifold_mixup")
    with pytest.raises(UserError, match="stage4"):
        cls(cls.Config(taps=("stage1", "stage4"))).build_model(tiny_net())


# ---- one training run with the trainer -----------------------------------------------------------

@pytest.mark.parametrize("name", MIXING_METHODS)
def test_training_changes_parameters_with_finite_loss(name, tiny_dataset, tmp_path):
    job = TrainJob(METHODS.get(name)(), name, tiny_dataset, ONE_EPOCH, seed=0)
    before = {k: v.clone() for k, v in job.build_model().state_dict().items()}
    after = trained_model(job, CPU, tmp_path, progress=False).state_dict()
    weights = [k for k in before if k.endswith("weight")]
    assert all(torch.isfinite(after[k]).all() for k in weights)
    assert any(not torch.equal(before[k], after[k]) for k in weights)


@pytest.mark.parametrize("name", ["cutmix", "catchup"])
def test_never_mixing_trains_exactly_like_erm(name, tiny_dataset, tmp_path):
    cls = METHODS.get(name)
    never = TrainJob(cls(cls.Config(prob=0.0)), name, tiny_dataset, ONE_EPOCH, seed=0)
    erm = TrainJob(METHODS.get("erm")(), "erm", tiny_dataset, ONE_EPOCH, seed=0)
    a = trained_model(never, CPU, tmp_path, progress=False).state_dict()
    b = trained_model(erm, CPU, tmp_path, progress=False).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
