"""PGD adversarial training: the training batch is a PGD batch, crafted in the configured mode."""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F

from robustbench_lite.bench.backbones import build_backbone
from robustbench_lite.bench.method import METHODS, Batch, StepContext
from robustbench_lite.methods.pgd_at import PgdAt


def _setup(seed: int = 0):
    torch.manual_seed(seed)
    model = build_backbone("tiny", 4, (0.5,) * 3, (0.25,) * 3).train()
    x = torch.rand(8, 3, 16, 16)
    y = torch.arange(8) % 4
    return model, Batch(x, y)


def _ctx(seed: int) -> StepContext:
    return StepContext(0, 0, 1, 1, 4, torch.Generator().manual_seed(seed), torch.device("cpu"))


def _bn_means(model):
    return [m.running_mean.clone() for m in model.modules()
            if isinstance(m, torch.nn.BatchNorm2d)]


def test_paper_defaults_and_registration():
    assert METHODS.get("pgd_at") is PgdAt
    cfg = PgdAt.Config()
    assert (cfg.eps, cfg.variant, cfg.steps, cfg.step_size, cfg.random_start,
            cfg.attack_in_eval_mode) == (8 / 255, "madry_cifar", 0, 2 / 255, True, True)


def test_the_variant_sets_the_number_of_attack_steps(monkeypatch):
    """Madry's CIFAR attack takes 7 steps of 2/255; pgd10 takes 10; steps=N overrides both."""
    import robustbench_lite.methods.pgd_at as module

    seen = []
    monkeypatch.setattr(module, "pgd", lambda model, x, y, eps, steps, step, **kw: seen.append(
        (eps, steps, step)) or x)
    model, batch = _setup()
    for config in (PgdAt.Config(), PgdAt.Config(variant="pgd10"), PgdAt.Config(steps=3)):
        PgdAt(config).adversarial_batch(model, batch, _ctx(0))
    assert seen == [(8 / 255, 7, 2 / 255), (8 / 255, 10, 2 / 255), (8 / 255, 3, 2 / 255)]


def test_training_step_is_cross_entropy_on_a_seeded_pgd_batch():
    model, batch = _setup()
    method = PgdAt()
    adv = method.adversarial_batch(model, batch, _ctx(1))
    assert (adv - batch.x).abs().max().item() <= 8 / 255 + 1e-7
    assert (adv - batch.x).abs().max().item() > 4 / 255
    assert torch.equal(adv, method.adversarial_batch(model, batch, _ctx(1)))  # from ctx.rng only
    assert not torch.equal(adv, method.adversarial_batch(model, batch, _ctx(2)))
    model.eval()
    with torch.no_grad():
        ce_adv, ce_clean = F.cross_entropy(model(adv), batch.y), F.cross_entropy(model(batch.x), batch.y)
    assert ce_adv > ce_clean  # the batch is adversarial for the eval-mode model
    model.train()
    losses = method.training_step(model, batch, _ctx(1))
    assert set(losses) == {"ce_adv"} and losses["ce_adv"].requires_grad
    assert model.training  # the trainer's mode survives the attack


def test_eval_mode_crafting_leaves_batch_norm_statistics_alone_train_mode_moves_them():
    model, batch = _setup()
    before = _bn_means(model)
    PgdAt().adversarial_batch(model, batch, _ctx(0))
    assert all(torch.equal(a, b) for a, b in zip(before, _bn_means(model)))
    madry = PgdAt(dataclasses.replace(PgdAt.Config(), attack_in_eval_mode=False))
    madry.adversarial_batch(model, batch, _ctx(0))
    assert model.training
    assert not all(torch.equal(a, b) for a, b in zip(before, _bn_means(model)))


def test_short_training_run_is_reproducible(run_context):
    first = run_context("pgd_at").train()
    again = run_context("pgd_at", seed=0)
    again.cache_dir = again.cache_dir.parent / "cache2"  # train again instead of reusing the cache
    second = again.train()
    for a, b in zip(first.state_dict().values(), second.state_dict().values()):
        assert torch.equal(a, b)


def test_training_attacks_and_saliency_run_in_float32_under_autocast():
    """Inside a bfloat16 autocast region (the trainer's on CUDA; CPU autocast behaves alike), the
    training attack and TENET's saliency pass compute in float32, as the references do."""
    from robustbench_lite.bench.attacks.pgd import fgsm, pgd
    from robustbench_lite.methods.tenet import Tenet

    model, batch = _setup()
    dtypes = []
    model.head.register_forward_hook(lambda module, inputs, out: dtypes.append(out.dtype))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        model(batch.x)
        assert dtypes == [torch.bfloat16]  # autocast is on for the model itself
        pgd(model, batch.x, batch.y, 8 / 255, 2, 2 / 255, rng=torch.Generator().manual_seed(0))
        fgsm(model, batch.x, batch.y, 8 / 255)
        Tenet.saliency(model, batch.x, batch.y, "stage2")
    assert dtypes[1:] == [torch.float32] * len(dtypes[1:]) and len(dtypes) == 5
